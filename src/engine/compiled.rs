//! The fast path for decisions: per-snapshot, per-path compiled plans.
//!
//! A decision path that names a rule is compiled once per snapshot, the first time it is asked
//! for, into the fastest form regorus can run with OPA's answers:
//!
//! 1. [`Tier::Rvm`]: an RVM program (`Compiler::compile_from_policy`) run on pooled, already
//!    loaded virtual machines, so a request only sets the input and executes;
//! 2. [`Tier::Rule`]: the rule evaluated directly (`Engine::eval_rule`) on a clone of the
//!    prepared engine, when the RVM compiler refuses the policy (e.g. `with`, some
//!    partial-object forms). This skips parsing and planning a query per request. regorus's
//!    `CompiledPolicy::eval_with_input` would be the other candidate, but it builds a new engine
//!    per call, measured no faster, and in 0.14.1 fails on `with`, the main reason the RVM
//!    refuses a policy;
//! 3. [`Tier::Interpreter`]: everything else (packages, base-data paths, paths into a rule's
//!    value, functions) goes to the prepared interpreter with a query, as before.
//!
//! Programs that could meet a rule conflict are not run on the RVM, which would not report it
//! (see `rvm_safety.rs`). A tier-1 or tier-2 run that fails for any reason (instruction limit, a conflict, a builtin
//! error) is not answered from that tier: the caller re-runs the decision on the interpreter, so
//! errors always carry the interpreter's wording and a fast tier can never turn an error into a
//! value. `tests/differential.rs` holds both paths to identical results.
//!
//! The cache is read without locks (an `ArcSwap` of an immutable map, replaced copy-on-write
//! when a path is added) and bounded: past [`MAX_PLANS`] paths, new paths are not planned and
//! go to the interpreter. A new snapshot starts with an empty cache, so nothing compiled against
//! old policies or data is ever used for a new one.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::{Engine, Value};

use super::rvm_safety::rvm_gives_opas_answers;

/// How many distinct decision paths one snapshot plans. Real deployments query a handful of
/// decision paths; the bound only stops a client enumerating base-data paths from growing the
/// cache without limit.
pub const MAX_PLANS: usize = 1024;

/// Which evaluator a planned path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Rvm,
    Rule,
    Interpreter,
}

/// A compiled decision path.
pub struct Plan {
    /// `data[...]` reference of the path, for the interpreter.
    pub query: String,
    kind: Kind,
}

enum Kind {
    Rvm(Box<RvmPlan>),
    Rule,
    Interpreter,
}

/// An RVM program plus idle machines that already have it and the data loaded.
struct RvmPlan {
    program: Arc<Program>,
    data: Value,
    idle: ArrayQueue<RegoVM>,
}

impl RvmPlan {
    fn machine(&self) -> anyhow::Result<RegoVM> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())?;
        Ok(vm)
    }

    fn eval(&self, input: Value) -> anyhow::Result<Value> {
        let mut vm = match self.idle.pop() {
            Some(vm) => vm,
            None => self.machine()?,
        };
        vm.set_input(input);
        let result = vm.execute();
        // Do not keep the request's input alive in an idle machine.
        vm.set_input(Value::Undefined);
        // A full pool means more concurrent evaluations than slots: drop the extra machine.
        let _ = self.idle.push(vm);
        Ok(result?)
    }
}

impl Plan {
    pub fn tier(&self) -> Tier {
        match self.kind {
            Kind::Rvm(_) => Tier::Rvm,
            Kind::Rule => Tier::Rule,
            Kind::Interpreter => Tier::Interpreter,
        }
    }

    /// Runs the decision on this plan's fast tier. `None` means "use the interpreter": the path
    /// has no fast tier, or the fast tier failed (the interpreter then decides what the answer,
    /// or the error, is). `Some(Value::Undefined)` is an undefined decision.
    pub fn eval_fast(&self, engine: &Engine, input: &Option<Value>) -> Option<Value> {
        let result = match &self.kind {
            Kind::Rvm(rvm) => rvm.eval(input.clone().unwrap_or(Value::Undefined)),
            Kind::Rule => {
                let mut engine = engine.clone();
                if let Some(input) = input {
                    engine.set_input(input.clone());
                }
                engine.eval_rule(self.query.clone())
            }
            Kind::Interpreter => return None,
        };
        result.ok()
    }

    /// Compiles `query` (a rule reference) against a prepared engine into the fastest tier
    /// that accepts it.
    fn build(engine: &Engine, query: String, vms: usize) -> Plan {
        let kind = Self::compile(engine, &query, vms);
        Plan { query, kind }
    }

    fn compile(engine: &Engine, query: &str, vms: usize) -> Kind {
        // compile_with_entrypoint mutates the engine it runs on; the snapshot's engine is shared,
        // so compile on a clone (cheap: the engine is prepared and shares its state).
        let mut scratch = engine.clone();
        let Ok(policy) = scratch.compile_with_entrypoint(&query.into()) else {
            return Kind::Interpreter;
        };
        let rvm = Compiler::compile_from_policy(&policy, &[query])
            .map_err(anyhow::Error::from)
            .and_then(|program| {
                if !rvm_gives_opas_answers(&policy, &program) {
                    anyhow::bail!("the program could conflict where OPA reports an error");
                }
                let plan = RvmPlan {
                    program,
                    data: engine.get_data(),
                    idle: ArrayQueue::new(vms),
                };
                // Loading checks rules against data for conflicts: do it once here, and keep
                // the machine for the first request.
                let vm = plan.machine()?;
                let _ = plan.idle.push(vm);
                Ok(plan)
            });
        match rvm {
            Ok(plan) => Kind::Rvm(Box::new(plan)),
            Err(_) => Kind::Rule,
        }
    }
}

/// The plans of one snapshot, keyed by decision path.
pub struct Plans {
    engine: Engine,
    map: ArcSwap<HashMap<Box<[String]>, Arc<Plan>>>,
    /// Idle machines kept per RVM plan: one per worker thread can be busy at a time.
    vms: usize,
}

impl Plans {
    /// `engine` must be prepared (it has evaluated once); plans clone it, never re-prepare it.
    pub fn new(engine: Engine) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Plans {
            engine,
            map: ArcSwap::from_pointee(HashMap::new()),
            vms: (workers * 2).clamp(2, 64),
        }
    }

    /// The plan for `path`, compiling it on first use. `None` when the cache is full and the
    /// path is not in it.
    pub fn get(&self, path: &[String], query: impl FnOnce() -> String) -> Option<Arc<Plan>> {
        if let Some(plan) = self.map.load().get(path) {
            return Some(plan.clone());
        }
        if self.map.load().len() >= MAX_PLANS {
            return None;
        }
        let query = query();
        let plan = Arc::new(if path.is_empty() {
            // `data` itself is never a rule.
            Plan {
                query,
                kind: Kind::Interpreter,
            }
        } else {
            Plan::build(&self.engine, query, self.vms)
        });
        // Two requests may plan the same path at once; the first one stored wins, so every
        // later request shares one plan (and its machine pool).
        let mut stored = plan.clone();
        self.map.rcu(|current| {
            let mut next = HashMap::clone(current);
            if let Some(existing) = current.get(path) {
                stored = existing.clone();
            } else if current.len() < MAX_PLANS {
                next.insert(path.into(), plan.clone());
            }
            next
        });
        Some(stored)
    }

    /// The prepared engine the plans were compiled from; fast tiers evaluate on clones of it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(rego: &str, data: &str) -> Engine {
        let mut engine = Engine::new();
        engine.add_policy("p.rego".into(), rego.into()).unwrap();
        engine
            .add_data(Value::from_json_str(data).unwrap())
            .unwrap();
        engine.set_strict_builtin_errors(false);
        engine.eval_query("true".into(), false).unwrap();
        engine
    }

    fn segs(p: &str) -> Vec<String> {
        p.split('/').map(String::from).collect()
    }

    fn query(p: &str) -> String {
        crate::engine::eval::path_ref(&segs(p))
    }

    #[test]
    fn rules_get_the_rvm_and_other_paths_the_interpreter() {
        let plans = Plans::new(engine(
            "package x\nimport rego.v1\nallow if input.u == \"a\"\nf(v) := v\n",
            r#"{"d": {"e": 1}}"#,
        ));
        let tier = |p: &str| plans.get(&segs(p), || query(p)).unwrap().tier();
        assert_eq!(tier("x/allow"), Tier::Rvm);
        assert_eq!(tier("x"), Tier::Interpreter);
        assert_eq!(tier("d/e"), Tier::Interpreter);
        assert_eq!(tier("x/allow/y"), Tier::Interpreter);
        assert_eq!(plans.len(), 4);
    }

    #[test]
    fn with_falls_back_from_the_rvm() {
        let plans = Plans::new(engine(
            "package x\nimport rego.v1\np if q with input as {\"u\": 1}\nq if input.u == 1\n",
            "{}",
        ));
        let plan = plans.get(&segs("x/p"), || query("x/p")).unwrap();
        assert_eq!(plan.tier(), Tier::Rule);
        assert_eq!(
            plan.eval_fast(plans.engine(), &None),
            Some(Value::from(true))
        );
    }

    #[test]
    fn pooled_machines_do_not_leak_inputs_between_requests() {
        let plans = Plans::new(engine(
            "package x\nimport rego.v1\nallow if input.u == \"a\"\n",
            "{}",
        ));
        let plan = plans.get(&segs("x/allow"), || query("x/allow")).unwrap();
        let input = |u: &str| Some(Value::from_json_str(&format!(r#"{{"u":"{u}"}}"#)).unwrap());
        assert_eq!(
            plan.eval_fast(plans.engine(), &input("a")),
            Some(Value::from(true))
        );
        assert_eq!(
            plan.eval_fast(plans.engine(), &input("b")),
            Some(Value::Undefined)
        );
        assert_eq!(
            plan.eval_fast(plans.engine(), &None),
            Some(Value::Undefined)
        );
        assert_eq!(
            plan.eval_fast(plans.engine(), &input("a")),
            Some(Value::from(true))
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let plans = Plans::new(engine("package x\n", r#"{}"#));
        for i in 0..MAX_PLANS {
            let p = format!("d/{i}");
            assert!(plans.get(&segs(&p), || query(&p)).is_some());
        }
        assert!(plans.get(&segs("d/extra"), || query("d/extra")).is_none());
        assert!(plans.get(&segs("d/0"), || query("d/0")).is_some());
        assert_eq!(plans.len(), MAX_PLANS);
    }
}

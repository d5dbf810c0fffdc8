//! Whether an RVM program gives OPA's answers for every input.
//!
//! regorus's RVM (0.14.1) evaluates conflicts differently from OPA and from its own interpreter:
//! where OPA fails with `eval_conflict_error` (a complete rule or function producing two
//! different values, two values for one key of a partial object), the RVM answers: undefined, or
//! the last value seen. It also ignores `default` functions. It does not report either, so the
//! answer cannot be checked afterwards; instead a program is only used when none of its rules
//! can conflict or needs a default function, judged from their definitions:
//!
//! - partial sets never conflict;
//! - partial objects may (two bodies, one key), so they are refused;
//! - a complete rule or function is accepted when its value is computed at most once (one
//!   definition without a body, or one body with no statements), or when every body produces a
//!   constant and they cannot disagree: all constants equal, or one definition whose other
//!   bodies are `else` branches (first success wins there, as in OPA);
//! - a program that calls any function is refused when the policies declare a default function.
//!
//! The test is conservative: a rule like `x := input.a if input.b` cannot conflict but is
//! refused because its value is computed in a body. Such paths still get the direct rule
//! evaluation tier.

use regorus::rvm::program::RuleType;
use regorus::rvm::Program;
use regorus::unstable::{Expr, Rule, RuleHead};
use regorus::{CompiledPolicy, Value};

/// True when every rule the program runs is free of conflicts and default functions.
pub fn rvm_gives_opas_answers(policy: &CompiledPolicy, program: &Program) -> bool {
    let rules = policy.get_rules();
    let calls_functions = program.rule_infos.iter().any(|r| r.function_info.is_some());
    if calls_functions && has_default_function(policy) {
        return false;
    }
    program.rule_infos.iter().all(|info| match info.rule_type {
        RuleType::PartialSet => true,
        RuleType::PartialObject => false,
        // Default-only rules have no definitions in the map: they have one value.
        RuleType::Complete => rules
            .get(&info.name)
            .is_none_or(|defs| single_valued(defs.iter().map(|d| &**d))),
    })
}

fn has_default_function(policy: &CompiledPolicy) -> bool {
    policy.get_modules().iter().any(|module| {
        module
            .policy
            .iter()
            .any(|rule| matches!(&**rule, Rule::Default { args, .. } if !args.is_empty()))
    })
}

/// The values one definition's bodies produce: `Some(constant)` per body, `None` for a computed
/// value; plus whether the definition computes its value at most once.
struct Definition {
    constants: Vec<(Option<Value>, bool)>,
    computed_once: bool,
}

fn definition(rule: &Rule) -> Option<Definition> {
    let Rule::Spec { head, bodies, .. } = rule else {
        return None;
    };
    let head_value = match head {
        RuleHead::Compr { assign, .. } | RuleHead::Func { assign, .. } => {
            assign.as_ref().map(|a| &*a.value)
        }
        RuleHead::Set { .. } => return None,
    };
    let computed_once = match bodies.as_slice() {
        [] => true,
        [only] => only.query.stmts.is_empty(),
        _ => false,
    };
    let constants = if bodies.is_empty() {
        vec![(constant(head_value), false)]
    } else {
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let value = match &body.assign {
                    Some(assign) => Some(&*assign.value),
                    None if i == 0 => head_value,
                    None => None,
                };
                (constant(value), body.is_else)
            })
            .collect()
    };
    Some(Definition {
        constants,
        computed_once,
    })
}

fn single_valued<'a>(defs: impl Iterator<Item = &'a Rule>) -> bool {
    let defs: Option<Vec<Definition>> = defs.map(definition).collect();
    let Some(defs) = defs else {
        return false;
    };
    if let [only] = defs.as_slice() {
        if only.computed_once {
            return true;
        }
        // An else chain of constants: each body, iterating or not, yields its one constant,
        // and only the first successful body counts.
        let all_constant = only.constants.iter().all(|(c, _)| c.is_some());
        let chain = only.constants.iter().skip(1).all(|(_, is_else)| *is_else);
        if all_constant && chain {
            return true;
        }
    }
    let mut values = defs.iter().flat_map(|d| d.constants.iter().map(|(c, _)| c));
    match values.next() {
        Some(Some(first)) => values.all(|v| v.as_ref() == Some(first)),
        _ => false,
    }
}

/// The value of a scalar literal; `None` (no value expression) means `true`, as in `p if ...`.
fn constant(expr: Option<&Expr>) -> Option<Value> {
    match expr {
        None => Some(Value::Bool(true)),
        Some(
            Expr::String { value, .. }
            | Expr::RawString { value, .. }
            | Expr::Number { value, .. }
            | Expr::Bool { value, .. }
            | Expr::Null { value, .. },
        ) => Some(value.clone()),
        Some(_) => None,
    }
}

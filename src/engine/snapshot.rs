//! An immutable, compiled view of everything a decision reads: policies, data, bundle metadata.
//!
//! A snapshot is built once per write and never changes afterwards. Its regorus engine has
//! already been prepared (analysed and scheduled) by the time the snapshot is published, so the
//! per-request clone is cheap: regorus prepares lazily, and a clone of an unprepared engine would
//! redo that work on every request.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, OnceLock};

use regorus::PolicyLengthConfig;
use serde_json::Value as Json;

use super::compiled::Plans;
use super::error::{RegoError, Stage};
use super::modules::ModuleInfo;
use super::{conflicts, nesting, EngineError};

/// regorus caps lines at 1024 columns and files at 1 MiB / 20 000 lines; OPA has no such caps
/// and generated policies exceed them. The request body limit (`server.decoding.max_length`)
/// already bounds what arrives; expression nesting stays capped by regorus's parser.
const POLICY_LIMITS: PolicyLengthConfig = PolicyLengthConfig {
    max_col: NonZeroU32::MAX,
    max_file_bytes: NonZeroUsize::new(1 << 30).unwrap(),
    max_lines: NonZeroUsize::new(1 << 30).unwrap(),
};

/// A regorus engine with the settings every regent engine shares.
pub fn new_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_policy_length_config(POLICY_LIMITS);
    // OPA's default: a builtin error makes its expression undefined rather than failing the
    // query (`?strict-builtin-errors` turns it back on per request).
    engine.set_strict_builtin_errors(false);
    engine
}

/// A Rego module as the Policy API and bundles hand it to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub raw: String,
    /// Parse with Rego v1 syntax (the default) or v0.
    pub rego_v1: bool,
}

/// What the bundle plugin records about an activated bundle; provenance and root checks read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleInfo {
    pub revision: String,
    /// Slash-separated roots this bundle owns (`""` means all of `data`).
    pub roots: Vec<String>,
    pub manifest: Json,
    pub etag: String,
}

/// The parts a writer edits before a new snapshot is compiled from them.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub data: Json,
    pub policies: BTreeMap<String, Policy>,
    pub bundles: BTreeMap<String, BundleInfo>,
}

pub struct Snapshot {
    data: Arc<Json>,
    policies: Arc<BTreeMap<String, Policy>>,
    bundles: Arc<BTreeMap<String, BundleInfo>>,
    modules: Arc<BTreeMap<String, ModuleInfo>>,
    engine: regorus::Engine,
    /// Compiled decision paths, filled on first use; dies with the snapshot.
    plans: Plans,
    /// The same engine with strict builtin errors, made on first use by `?strict-builtin-errors`.
    strict: OnceLock<regorus::Engine>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot::build(Draft {
            data: Json::Object(Default::default()),
            ..Draft::default()
        })
        .expect("an empty policy set always compiles")
    }

    /// Compiles a draft. Parse errors of all modules are reported together, as OPA does; base
    /// data on a rule's path is refused as OPA refuses it ([`EngineError::DataConflict`]).
    pub fn build(draft: Draft) -> Result<Self, EngineError> {
        let mut engine = new_engine();
        let mut errors = Vec::new();
        for (id, policy) in &draft.policies {
            if let Err(err) = nesting::check(id, &policy.raw) {
                errors.push(err);
                continue;
            }
            engine.set_rego_v0(!policy.rego_v1);
            if let Err(err) = engine.add_policy(id.clone(), policy.raw.clone()) {
                errors.push(RegoError::from_regorus(Stage::Parse, &err));
            }
        }
        if !errors.is_empty() {
            return Err(EngineError::Compile(errors));
        }
        let modules: BTreeMap<String, ModuleInfo> = engine
            .get_modules()
            .iter()
            .map(|m| {
                let id = m.package.span.source.get_path().clone();
                let info = ModuleInfo::from_module(&id, m);
                (id, info)
            })
            .collect();
        let data: regorus::Value = serde_json::from_value(draft.data.clone())
            .map_err(|e| EngineError::InvalidData(e.to_string()))?;
        engine
            .add_data(data)
            .map_err(|e| EngineError::InvalidData(e.to_string()))?;
        // Preparing happens on first evaluation; do it now so every clone starts prepared and
        // so that compile-stage errors (unsafe variables, unknown functions) surface at write time.
        engine
            .eval_query("true".to_string(), false)
            .map_err(|e| EngineError::Compile(vec![RegoError::from_regorus(Stage::Compile, &e)]))?;
        let conflicts = conflicts::check(&modules, &draft.data);
        if !conflicts.is_empty() {
            return Err(EngineError::DataConflict(conflicts));
        }
        Ok(Snapshot {
            data: Arc::new(draft.data),
            policies: Arc::new(draft.policies),
            bundles: Arc::new(draft.bundles),
            plans: Plans::new(engine.clone()),
            modules: Arc::new(modules),
            engine,
            strict: OnceLock::new(),
        })
    }

    /// A draft holding this snapshot's parts, for a writer to edit.
    pub fn to_draft(&self) -> Draft {
        Draft {
            data: (*self.data).clone(),
            policies: (*self.policies).clone(),
            bundles: (*self.bundles).clone(),
        }
    }

    pub fn data(&self) -> &Json {
        &self.data
    }

    pub fn policies(&self) -> &BTreeMap<String, Policy> {
        &self.policies
    }

    pub fn bundles(&self) -> &BTreeMap<String, BundleInfo> {
        &self.bundles
    }

    /// The per-path compiled plans of this snapshot.
    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// What each module declares (package, rule paths, `ast`), by policy id.
    pub fn modules(&self) -> &BTreeMap<String, ModuleInfo> {
        &self.modules
    }

    /// True when a rule defines `path` or one of its ancestors, i.e. OPA's compiler has rules
    /// for that virtual document (an undefined answer there is "undefined", not "missing").
    pub fn has_rules_for(&self, path: &[String]) -> bool {
        self.modules
            .values()
            .flat_map(|m| &m.rules)
            .any(|r| !r.path.is_empty() && path.starts_with(&r.path))
    }

    /// A prepared engine for one evaluation. Cheap: regorus shares its compiled state by `Arc`.
    pub fn engine(&self) -> regorus::Engine {
        self.engine.clone()
    }

    /// A prepared engine whose builtin errors fail the query (`?strict-builtin-errors`).
    pub fn strict_engine(&self) -> regorus::Engine {
        self.strict
            .get_or_init(|| {
                let mut engine = self.engine.clone();
                engine.set_strict_builtin_errors(true);
                engine
            })
            .clone()
    }
}

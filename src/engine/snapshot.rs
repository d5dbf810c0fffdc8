//! An immutable, compiled view of everything a decision reads: policies, data, bundle metadata.
//!
//! A snapshot is built once per write and never changes afterwards. Its regorus engine has
//! already been prepared (analysed and scheduled) by the time the snapshot is published, so the
//! per-request clone is cheap: regorus prepares lazily, and a clone of an unprepared engine would
//! redo that work on every request.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::compiled::Plans;
use super::error::{RegoError, Stage};
use super::EngineError;

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
    engine: regorus::Engine,
    /// Compiled decision paths, filled on first use; dies with the snapshot.
    plans: Plans,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot::build(Draft {
            data: Json::Object(Default::default()),
            ..Draft::default()
        })
        .expect("an empty policy set always compiles")
    }

    /// Compiles a draft. Parse errors of all modules are reported together, as OPA does.
    pub fn build(draft: Draft) -> Result<Self, EngineError> {
        let mut engine = regorus::Engine::new();
        // OPA's default: a builtin error makes the expression undefined instead of failing the
        // query (the RVM fast path behaves the same way, so both paths agree).
        engine.set_strict_builtin_errors(false);
        let mut errors = Vec::new();
        for (id, policy) in &draft.policies {
            engine.set_rego_v0(!policy.rego_v1);
            if let Err(err) = engine.add_policy(id.clone(), policy.raw.clone()) {
                errors.push(RegoError::from_regorus(Stage::Parse, &err));
            }
        }
        if !errors.is_empty() {
            return Err(EngineError::Compile(errors));
        }
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
        Ok(Snapshot {
            data: Arc::new(draft.data),
            policies: Arc::new(draft.policies),
            bundles: Arc::new(draft.bundles),
            plans: Plans::new(engine.clone()),
            engine,
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

    /// A prepared engine for one evaluation. Cheap: regorus shares its compiled state by `Arc`.
    pub fn engine(&self) -> regorus::Engine {
        self.engine.clone()
    }
}

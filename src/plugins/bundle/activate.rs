//! Activating a bundle: one store write that replaces everything under the bundle's roots.
//!
//! Inside a single [`Store::write_with`]: check the roots against the other active bundles,
//! erase the data and modules under the old and new roots, write the bundle's data and modules,
//! record its [`BundleInfo`] and `data.system.bundles.<name>` (manifest and etag), then compile
//! everything together. Any failure aborts the write, so the previous bundle keeps serving and
//! requests see either the old snapshot or the new one, never a mix.

use std::time::Instant;

use serde_json::{json, Map, Value as Json};
use thiserror::Error;

use super::archive::{package_of, Bundle, Payload};
use super::{roots, Timers, TIMER_REGO_MODULE_COMPILE};
use crate::engine::document::{self, DocumentError};
use crate::engine::loader::merge;
use crate::engine::{BundleInfo, Draft, EngineError, Policy, Store};

#[derive(Debug, Error)]
pub enum ActivateError {
    #[error("detected overlapping roots in bundle manifest with: {0}")]
    Overlap(String),
    #[error("delta bundle '{0}' has wasm resolvers or manifest roots that are different from those in the store")]
    DeltaRoots(String),
    #[error("delta bundle '{0}' cannot be applied: no snapshot of it is active")]
    DeltaWithoutSnapshot(String),
    #[error("bundle data conflicts with the data document: {0}")]
    Data(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<DocumentError> for ActivateError {
    fn from(e: DocumentError) -> Self {
        ActivateError::Data(e.to_string())
    }
}

/// Activates `bundle` as `name`, remembering `etag` with it.
pub fn activate(
    store: &Store,
    name: &str,
    bundle: &Bundle,
    etag: &str,
    timers: &mut Timers,
) -> Result<(), ActivateError> {
    let started = Instant::now();
    let mut edit_time = std::time::Duration::ZERO;
    store.write_with(|draft| {
        let edit_started = Instant::now();
        let out = edit(draft, name, bundle, etag);
        edit_time = edit_started.elapsed();
        out
    })?;
    // What the write spent beyond our edit is compiling the whole policy set.
    let compile = started.elapsed().saturating_sub(edit_time);
    let ns = u64::try_from(compile.as_nanos()).unwrap_or(u64::MAX);
    *timers
        .entry(TIMER_REGO_MODULE_COMPILE.to_string())
        .or_default() += ns;
    Ok(())
}

fn edit(draft: &mut Draft, name: &str, bundle: &Bundle, etag: &str) -> Result<(), ActivateError> {
    let new_roots = &bundle.manifest.roots;
    let mut collisions: Vec<&str> = draft
        .bundles
        .iter()
        .filter(|(other, info)| {
            other.as_str() != name
                && info
                    .roots
                    .iter()
                    .any(|o| new_roots.iter().any(|n| roots::overlap(o, n)))
        })
        .map(|(other, _)| other.as_str())
        .collect();
    if !collisions.is_empty() {
        collisions.sort();
        return Err(ActivateError::Overlap(format!(
            "[{}]",
            collisions.join(" ")
        )));
    }
    match &bundle.payload {
        Payload::Snapshot { data, modules } => {
            let mut erase: Vec<String> = draft
                .bundles
                .get(name)
                .map(|b| b.roots.clone())
                .unwrap_or_default();
            erase.extend(new_roots.iter().cloned());
            erase_data(&mut draft.data, &erase);
            erase_policies(draft, name, &erase);
            merge(&mut draft.data, data.clone()).map_err(ActivateError::Data)?;
            for m in modules {
                draft.policies.insert(
                    format!("{name}{}", m.path),
                    Policy {
                        raw: m.raw.clone(),
                        rego_v1: m.rego_v1,
                    },
                );
            }
        }
        Payload::Delta { patches } => {
            let active = draft
                .bundles
                .get(name)
                .ok_or_else(|| ActivateError::DeltaWithoutSnapshot(name.to_string()))?;
            if &active.roots != new_roots {
                return Err(ActivateError::DeltaRoots(name.to_string()));
            }
            for op in patches {
                if op.op == "upsert" {
                    let value = op.value.clone().unwrap_or(Json::Null);
                    document::put(&mut draft.data, &op.path, value)?;
                } else {
                    document::apply_patch(&mut draft.data, vec![op.clone()])?;
                }
            }
        }
    }
    draft.bundles.insert(
        name.to_string(),
        BundleInfo {
            revision: bundle.manifest.revision.clone(),
            roots: new_roots.clone(),
            manifest: bundle.manifest.json.clone(),
            etag: etag.to_string(),
        },
    );
    // Rewritten for every bundle: a root such as `system` may just have erased them.
    for (n, info) in &draft.bundles {
        let path: Vec<String> = ["system", "bundles", n.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        document::put(
            &mut draft.data,
            &path,
            json!({"manifest": info.manifest, "etag": info.etag}),
        )?;
    }
    Ok(())
}

fn erase_data(data: &mut Json, erase: &[String]) {
    for root in erase {
        let segs: Vec<String> = roots::segments(root)
            .into_iter()
            .map(String::from)
            .collect();
        if segs.is_empty() {
            *data = Json::Object(Map::new());
        } else {
            // Missing already: nothing to erase.
            let _ = document::remove(data, &segs);
        }
    }
}

/// Removes the modules under `erase` that are this bundle's (their id starts with `<name>/`)
/// or no bundle's (loaded from files or the Policy API). Other bundles' modules are never
/// touched: their packages lie under their own roots, which cannot overlap ours.
fn erase_policies(draft: &mut Draft, name: &str, erase: &[String]) {
    let owner = |id: &str| -> Option<String> {
        draft
            .bundles
            .keys()
            .map(String::as_str)
            .chain(std::iter::once(name))
            .filter(|b| id.starts_with(&format!("{b}/")))
            .max_by_key(|b| b.len())
            .map(str::to_string)
    };
    let doomed: Vec<String> = draft
        .policies
        .iter()
        .filter(|(id, _)| owner(id).is_none_or(|o| o == name))
        .filter(|(id, p)| {
            package_of(id, &p.raw, p.rego_v1).is_ok_and(|pkg| {
                let segs: Vec<&str> = pkg.iter().map(String::as_str).collect();
                roots::any_contains(erase, &segs)
            })
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in doomed {
        draft.policies.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::eval::eval_path;
    use crate::engine::Snapshot;
    use crate::plugins::bundle::archive::{self, tests::tarball, Limits};

    fn bundle(files: &[(&str, &[u8])]) -> Bundle {
        archive::read(
            &tarball(files),
            Limits {
                size_limit_bytes: 1 << 20,
                rego_v1: true,
            },
            &mut Timers::new(),
        )
        .unwrap()
    }

    fn store() -> Store {
        let mut draft = Draft {
            data: json!({"other": {"keep": true}}),
            ..Draft::default()
        };
        draft.policies.insert(
            "cli.rego".into(),
            Policy {
                raw: "package outside\nok := true\n".into(),
                rego_v1: true,
            },
        );
        Store::new(Snapshot::build(draft).unwrap())
    }

    fn eval(store: &Store, path: &str) -> Option<serde_json::Value> {
        let path: Vec<String> = path.split('/').map(str::to_string).collect();
        eval_path(&store.snapshot(), &path, None)
            .unwrap()
            .map(|v| serde_json::to_value(v).unwrap())
    }

    #[test]
    fn activation_replaces_roots_and_records_the_bundle() {
        let store = store();
        let v1 = bundle(&[
            (".manifest", br#"{"revision": "r1", "roots": ["authz"]}"#),
            ("authz/data.json", br#"{"users": ["a"], "old": 1}"#),
            (
                "authz/p.rego",
                b"package authz\nallow if input.user in data.authz.users\n",
            ),
        ]);
        let mut timers = Timers::new();
        activate(&store, "main", &v1, "\"e1\"", &mut timers).unwrap();
        assert!(timers.contains_key(TIMER_REGO_MODULE_COMPILE));
        assert_eq!(eval(&store, "authz/old"), Some(json!(1)));
        assert_eq!(eval(&store, "other/keep"), Some(json!(true)));
        assert_eq!(eval(&store, "outside/ok"), Some(json!(true)));
        assert_eq!(
            eval(&store, "system/bundles/main"),
            Some(json!({"manifest": {"revision": "r1", "roots": ["authz"]}, "etag": "\"e1\""}))
        );
        let snap = store.snapshot();
        assert_eq!(snap.bundles()["main"].revision, "r1");
        assert!(snap.policies().contains_key("main/authz/p.rego"));

        let v2 = bundle(&[
            (".manifest", br#"{"revision": "r2", "roots": ["authz"]}"#),
            ("authz/data.json", br#"{"users": ["b"]}"#),
        ]);
        activate(&store, "main", &v2, "", &mut Timers::new()).unwrap();
        assert_eq!(eval(&store, "authz/old"), None, "old data erased");
        assert!(!store
            .snapshot()
            .policies()
            .contains_key("main/authz/p.rego"));
        assert_eq!(store.snapshot().bundles()["main"].revision, "r2");
    }

    #[test]
    fn failures_keep_the_previous_bundle() {
        let store = store();
        let good = bundle(&[
            (".manifest", br#"{"revision": "good", "roots": ["a"]}"#),
            ("a/p.rego", b"package a\nx := 1\n"),
        ]);
        activate(&store, "one", &good, "", &mut Timers::new()).unwrap();
        // Parses, fails to compile: an unsafe variable.
        let bad = bundle(&[
            (".manifest", br#"{"revision": "bad", "roots": ["a"]}"#),
            ("a/p.rego", b"package a\nx := 2\nallow if { y > 1 }\n"),
        ]);
        let err = activate(&store, "one", &bad, "", &mut Timers::new()).unwrap_err();
        assert!(
            matches!(err, ActivateError::Engine(EngineError::Compile(_))),
            "{err}"
        );
        assert_eq!(store.snapshot().bundles()["one"].revision, "good");
        assert_eq!(eval(&store, "a/x"), Some(json!(1)));

        let overlapping = bundle(&[(".manifest", br#"{"revision": "o", "roots": ["a/b"]}"#)]);
        let err = activate(&store, "two", &overlapping, "", &mut Timers::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "detected overlapping roots in bundle manifest with: [one]"
        );
        assert!(!store.snapshot().bundles().contains_key("two"));
    }

    #[test]
    fn delta_patches_the_active_snapshot() {
        let store = store();
        let snap = bundle(&[
            (".manifest", br#"{"revision": "s", "roots": ["a"]}"#),
            ("a/data.json", br#"{"x": 1}"#),
        ]);
        let delta = bundle(&[
            (".manifest", br#"{"revision": "d", "roots": ["a"]}"#),
            ("patch.json", br#"{"data": [{"op": "upsert", "path": "/a/y/z", "value": 2}, {"op": "remove", "path": "/a/x"}]}"#),
        ]);
        let err = activate(&store, "b", &delta, "", &mut Timers::new()).unwrap_err();
        assert!(
            matches!(err, ActivateError::DeltaWithoutSnapshot(_)),
            "{err}"
        );
        activate(&store, "b", &snap, "", &mut Timers::new()).unwrap();
        activate(&store, "b", &delta, "", &mut Timers::new()).unwrap();
        assert_eq!(eval(&store, "a"), Some(json!({"y": {"z": 2}})));
        assert_eq!(store.snapshot().bundles()["b"].revision, "d");
    }
}

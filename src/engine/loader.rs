//! Loading policies and data from paths given on the command line, the way `opa run` does:
//! `.rego` files become modules (their id is the file path), `.json`/`.yaml`/`.yml` files are
//! merged into `data` at the path of their directory relative to the argument they came from.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use thiserror::Error;

use super::{Draft, Policy};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: merge error: {message}")]
    Merge { path: String, message: String },
}

/// Reads every path into a draft. `rego_v1` selects the syntax for modules.
pub fn load_paths(paths: &[PathBuf], rego_v1: bool) -> Result<Draft, LoadError> {
    let mut draft = Draft {
        data: Json::Object(Default::default()),
        ..Draft::default()
    };
    for root in paths {
        let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(root, &mut files)?;
            files.sort();
            for file in files {
                let rel = file.parent().and_then(|p| p.strip_prefix(root).ok());
                let prefix: Vec<String> = rel
                    .map(|r| {
                        r.components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                load_file(&file, &prefix, rego_v1, &mut draft)?;
            }
        } else {
            load_file(root, &[], rego_v1, &mut draft)?;
        }
    }
    Ok(draft)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn load_file(
    file: &Path,
    prefix: &[String],
    rego_v1: bool,
    draft: &mut Draft,
) -> Result<(), LoadError> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let name = file.to_string_lossy().into_owned();
    let read = || std::fs::read_to_string(file).map_err(|e| io_err(file, e));
    let value: Json = match ext {
        "rego" => {
            draft.policies.insert(
                name,
                Policy {
                    raw: read()?,
                    rego_v1,
                },
            );
            return Ok(());
        }
        "json" => serde_json::from_str(&read()?).map_err(|e| LoadError::Parse {
            path: name.clone(),
            message: e.to_string(),
        })?,
        "yaml" | "yml" => yaml_serde::from_str(&read()?).map_err(|e| LoadError::Parse {
            path: name.clone(),
            message: e.to_string(),
        })?,
        _ => return Ok(()),
    };
    let nested = prefix.iter().rev().fold(value, |acc, seg| {
        Json::Object([(seg.clone(), acc)].into_iter().collect())
    });
    merge(&mut draft.data, nested).map_err(|message| LoadError::Merge {
        path: name,
        message,
    })
}

/// Deep-merges objects; any other overlap is a conflict, as in OPA's loader.
pub fn merge(into: &mut Json, from: Json) -> Result<(), String> {
    match (into, from) {
        (Json::Object(a), Json::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v).map_err(|m| format!("{k}: {m}"))?,
                    None => {
                        a.insert(k, v);
                    }
                }
            }
            Ok(())
        }
        (slot, value) if slot.is_object() => Err(format!("cannot merge {value} into object")),
        _ => Err("conflicting values".to_string()),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lands_at_directory_path_and_rego_keeps_file_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/data.json"), r#"{"x": 1}"#).unwrap();
        std::fs::write(dir.path().join("a/more.yaml"), "y: [1, 2]\n").unwrap();
        std::fs::write(dir.path().join("p.rego"), "package p\n").unwrap();
        let draft = load_paths(&[dir.path().to_path_buf()], true).unwrap();
        assert_eq!(
            draft.data,
            serde_json::json!({"a": {"b": {"x": 1}, "y": [1, 2]}})
        );
        let id = dir.path().join("p.rego").to_string_lossy().into_owned();
        assert!(draft.policies.contains_key(&id));
    }

    #[test]
    fn conflicting_scalars_fail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), r#"{"x": 1}"#).unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{"x": 2}"#).unwrap();
        assert!(matches!(
            load_paths(&[dir.path().to_path_buf()], true),
            Err(LoadError::Merge { .. })
        ));
    }
}

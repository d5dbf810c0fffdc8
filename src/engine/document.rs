//! The base data document: reads and writes by path, as OPA's in-memory store does them.
//!
//! Paths are lists of unescaped segments. Objects create missing parents on write; arrays take
//! decimal indices (and `-` to append, as JSON Patch does). Errors carry OPA's wording so the
//! server can answer with the same messages.

use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("storage_not_found_error: {0}: document does not exist")]
    NotFound(String),
    #[error("storage_write_conflict_error: {0}")]
    Conflict(String),
    #[error("bad patch operation: {0}")]
    BadPatchOp(String),
    #[error("invalid patch: {0}")]
    InvalidPatch(String),
}

/// Renders a path the way OPA's storage errors do: `/a/b`.
pub fn display_path(path: &[String]) -> String {
    format!("/{}", path.join("/"))
}

pub fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |node, seg| match node {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Writes `value` at `path`, creating missing object parents. An empty path replaces the root,
/// which must then be an object.
pub fn put(doc: &mut Value, path: &[String], value: Value) -> Result<(), DocumentError> {
    let Some((last, parents)) = path.split_last() else {
        if !value.is_object() {
            return Err(DocumentError::Conflict(
                "root must be object: data must be an object".into(),
            ));
        }
        *doc = value;
        return Ok(());
    };
    let mut node = doc;
    for (depth, seg) in parents.iter().enumerate() {
        node = match node {
            Value::Object(map) => map
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                let idx = array_index(seg, items.len(), false)
                    .ok_or_else(|| DocumentError::NotFound(display_path(&path[..=depth])))?;
                &mut items[idx]
            }
            _ => return Err(DocumentError::Conflict(display_path(&path[..depth]))),
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let idx = array_index(last, items.len(), true)
                .ok_or_else(|| DocumentError::NotFound(display_path(path)))?;
            if idx == items.len() {
                items.push(value);
            } else {
                items[idx] = value;
            }
            Ok(())
        }
        _ => Err(DocumentError::Conflict(display_path(parents))),
    }
}

/// Inserts into arrays (JSON Patch `add` semantics) instead of replacing the element.
fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), DocumentError> {
    if let Some((last, parents)) = path.split_last() {
        if let Some(Value::Array(items)) = get_mut(doc, parents) {
            let idx = array_index(last, items.len(), true)
                .ok_or_else(|| DocumentError::NotFound(display_path(path)))?;
            items.insert(idx, value);
            return Ok(());
        }
    }
    put(doc, path, value)
}

pub fn remove(doc: &mut Value, path: &[String]) -> Result<Value, DocumentError> {
    let not_found = || DocumentError::NotFound(display_path(path));
    let Some((last, parents)) = path.split_last() else {
        return Ok(std::mem::replace(doc, Value::Object(Map::new())));
    };
    match get_mut(doc, parents).ok_or_else(not_found)? {
        Value::Object(map) => map.remove(last).ok_or_else(not_found),
        Value::Array(items) => {
            let idx = array_index(last, items.len(), false).ok_or_else(not_found)?;
            Ok(items.remove(idx))
        }
        _ => Err(not_found()),
    }
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |node, seg| match node {
        Value::Object(map) => map.get_mut(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

fn array_index(seg: &str, len: usize, allow_end: bool) -> Option<usize> {
    if allow_end && seg == "-" {
        return Some(len);
    }
    let idx: usize = seg.parse().ok()?;
    let limit = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    (idx <= limit && (allow_end || len > 0)).then_some(idx)
}

/// One JSON Patch operation, as accepted by `PATCH /v1/data`.
#[derive(Debug, Clone)]
pub struct PatchOp {
    pub op: String,
    pub path: Vec<String>,
    pub value: Option<Value>,
}

/// Parses a JSON Patch body whose paths are relative to `base`.
pub fn parse_patch(body: &Value, base: &[String]) -> Result<Vec<PatchOp>, DocumentError> {
    let ops = body
        .as_array()
        .ok_or_else(|| DocumentError::InvalidPatch("patch must be an array".into()))?;
    ops.iter()
        .map(|op| {
            let kind = op
                .get("op")
                .and_then(Value::as_str)
                .ok_or_else(|| DocumentError::BadPatchOp(String::new()))?;
            if !matches!(kind, "add" | "remove" | "replace") {
                return Err(DocumentError::BadPatchOp(kind.to_string()));
            }
            let rel = op.get("path").and_then(Value::as_str).unwrap_or("");
            let mut path = base.to_vec();
            path.extend(split_pointer(rel));
            Ok(PatchOp {
                op: kind.to_string(),
                path,
                value: op.get("value").cloned(),
            })
        })
        .collect()
}

/// Splits a JSON pointer (`/a/b~1c`) into unescaped segments.
pub fn split_pointer(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

pub fn apply_patch(doc: &mut Value, ops: Vec<PatchOp>) -> Result<(), DocumentError> {
    for op in ops {
        let value = || op.value.clone().unwrap_or(Value::Null);
        match op.op.as_str() {
            "add" => add(doc, &op.path, value())?,
            "remove" => {
                remove(doc, &op.path)?;
            }
            _ => {
                if get(doc, &op.path).is_none() {
                    return Err(DocumentError::NotFound(display_path(&op.path)));
                }
                put(doc, &op.path, value())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Vec<String> {
        split_pointer(s)
    }

    #[test]
    fn put_creates_parents_and_get_reads_back() {
        let mut doc = json!({});
        put(&mut doc, &p("/a/b/c"), json!(1)).unwrap();
        assert_eq!(doc, json!({"a": {"b": {"c": 1}}}));
        assert_eq!(get(&doc, &p("/a/b")), Some(&json!({"c": 1})));
    }

    #[test]
    fn put_through_scalar_is_a_conflict() {
        let mut doc = json!({"a": 1});
        assert!(matches!(
            put(&mut doc, &p("/a/b"), json!(2)),
            Err(DocumentError::Conflict(_))
        ));
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn arrays_take_indices_and_dash() {
        let mut doc = json!({"xs": [1, 2]});
        put(&mut doc, &p("/xs/-"), json!(3)).unwrap();
        put(&mut doc, &p("/xs/0"), json!(0)).unwrap();
        assert_eq!(doc, json!({"xs": [0, 2, 3]}));
        assert!(put(&mut doc, &p("/xs/9"), json!(0)).is_err());
    }

    #[test]
    fn remove_missing_is_not_found() {
        let mut doc = json!({"a": {}});
        assert_eq!(
            remove(&mut doc, &p("/a/b")),
            Err(DocumentError::NotFound("/a/b".into()))
        );
    }

    #[test]
    fn patch_add_remove_replace() {
        let mut doc = json!({"a": {"x": 1}, "l": [1, 3]});
        let ops = parse_patch(
            &json!([
                {"op": "add", "path": "/y", "value": 2},
                {"op": "remove", "path": "/x"},
            ]),
            &p("/a"),
        )
        .unwrap();
        apply_patch(&mut doc, ops).unwrap();
        let ops = parse_patch(
            &json!([{"op": "add", "path": "/l/1", "value": 2}, {"op": "replace", "path": "/a/y", "value": 5}]),
            &[],
        )
        .unwrap();
        apply_patch(&mut doc, ops).unwrap();
        assert_eq!(doc, json!({"a": {"y": 5}, "l": [1, 2, 3]}));
    }

    #[test]
    fn patch_rejects_unknown_op() {
        let err = parse_patch(&json!([{"op": "move", "path": "/a"}]), &[]).unwrap_err();
        assert_eq!(err.to_string(), "bad patch operation: move");
    }
}

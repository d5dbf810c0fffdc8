//! The base data document: reads and writes by path, as OPA's in-memory store does them.
//!
//! Paths are lists of unescaped segments; arrays take decimal indices (and `-` to append, as JSON
//! Patch does). `put` creates missing object parents like OPA's `storage.MakeDir` (a non-object
//! ancestor is a write conflict); `add` inserts into arrays and needs an existing parent. Errors
//! carry OPA's storage wording so the server can answer with the same messages.

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
    /// A write the store refuses outright (the root must stay an object).
    #[error("storage_invalid_patch_error: {0}")]
    InvalidPatch(String),
    /// A PATCH body that is not a list of operations.
    #[error("{0}")]
    MalformedPatch(String),
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

/// Writes `value` at `path` as OPA's `PUT /v1/data` does: missing parents become objects, an
/// existing non-object ancestor is a write conflict, and the write itself is an `add`.
pub fn put(doc: &mut Value, path: &[String], value: Value) -> Result<(), DocumentError> {
    if !path.is_empty() && get(doc, path).is_none() {
        make_dir(doc, &path[..path.len() - 1])?;
    }
    add(doc, path, value)
}

/// Creates the objects along `path` below its deepest existing ancestor, which must be an object.
fn make_dir(doc: &mut Value, path: &[String]) -> Result<(), DocumentError> {
    let existing = (0..=path.len())
        .rev()
        .find(|&i| get(doc, &path[..i]).is_some())
        .unwrap_or(0);
    let mut node = get_mut(doc, &path[..existing]).expect("prefix was found above");
    for (depth, seg) in path.iter().enumerate().skip(existing) {
        let Value::Object(map) = node else {
            return Err(DocumentError::Conflict(display_path(&path[..depth])));
        };
        node = map
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if node.is_object() {
        Ok(())
    } else {
        Err(DocumentError::Conflict(display_path(path)))
    }
}

/// JSON Patch `add`: the parent must exist; arrays get an insertion, objects a (re)placed key.
fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), DocumentError> {
    let Some((last, parents)) = path.split_last() else {
        if !value.is_object() {
            return Err(DocumentError::InvalidPatch("root must be object".into()));
        }
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parents) {
        Some(Value::Object(map)) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let idx = array_index(last, items.len(), true)
                .ok_or_else(|| DocumentError::NotFound(display_path(path)))?;
            items.insert(idx, value);
            Ok(())
        }
        Some(_) => Err(DocumentError::Conflict(display_path(parents))),
        None => Err(DocumentError::NotFound(display_path(parents))),
    }
}

pub fn remove(doc: &mut Value, path: &[String]) -> Result<Value, DocumentError> {
    let not_found = || DocumentError::NotFound(display_path(path));
    let Some((last, parents)) = path.split_last() else {
        return Err(DocumentError::InvalidPatch("root cannot be removed".into()));
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
    let ops = body.as_array().ok_or_else(|| {
        DocumentError::MalformedPatch("patch must be a JSON array of operations".into())
    })?;
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
                if op.path.is_empty() {
                    add(doc, &op.path, value())?;
                } else if let Some(slot) = get_mut(doc, &op.path) {
                    *slot = value();
                }
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
    fn put_below_an_array_is_a_conflict_at_the_array() {
        let mut doc = json!({"a": {"b": [1, 2, 3, 4]}});
        assert_eq!(
            put(&mut doc, &p("/a/b/c/d"), json!(0)),
            Err(DocumentError::Conflict("/a/b".into()))
        );
        assert_eq!(
            DocumentError::Conflict("/a/b".into()).to_string(),
            "storage_write_conflict_error: /a/b"
        );
    }

    #[test]
    fn root_stays_an_object() {
        let mut doc = json!({"a": 1});
        assert_eq!(
            put(&mut doc, &[], json!([1])).unwrap_err().to_string(),
            "storage_invalid_patch_error: root must be object"
        );
        assert_eq!(
            remove(&mut doc, &[]).unwrap_err().to_string(),
            "storage_invalid_patch_error: root cannot be removed"
        );
        put(&mut doc, &[], json!({"b": 2})).unwrap();
        assert_eq!(doc, json!({"b": 2}));
    }

    #[test]
    fn patch_add_appends_and_needs_a_parent() {
        let mut doc = json!({"x": []});
        let ops = parse_patch(
            &json!([{"op": "add", "path": "-", "value": {"a": 1}}, {"op": "add", "path": "-", "value": 2}]),
            &p("/x"),
        )
        .unwrap();
        apply_patch(&mut doc, ops).unwrap();
        assert_eq!(doc, json!({"x": [{"a": 1}, 2]}));
        let ops = parse_patch(&json!([{"op": "add", "path": "/y/z", "value": 1}]), &[]).unwrap();
        assert!(matches!(
            apply_patch(&mut doc, ops),
            Err(DocumentError::NotFound(_))
        ));
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

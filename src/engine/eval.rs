//! Evaluating a decision path or an ad-hoc query against a snapshot.

use regorus::Value;

use super::error::{RegoError, Stage};
use super::{EngineError, Snapshot};

/// The Rego reference for a data path: `["a", "0", "b-c"]` becomes `data.a[0]["b-c"]`.
/// Integer-looking segments index arrays, as OPA's URL path handling does.
pub fn path_ref(path: &[String]) -> String {
    let mut out = String::from("data");
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) && seg.len() < 18 {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            out.push('[');
            out.push_str(&serde_json::to_string(seg).expect("strings serialise"));
            out.push(']');
        }
    }
    out
}

/// Evaluates `data.<path>` with `input`. `Ok(None)` means undefined.
///
/// The snapshot's plan for the path answers when it has a fast tier that succeeds; otherwise
/// (no fast tier, a fast-tier failure, or a path past the plan cache's bound) the interpreter
/// does, so errors always come from the interpreter.
pub fn eval_path(
    snapshot: &Snapshot,
    path: &[String],
    input: Option<Value>,
) -> Result<Option<Value>, EngineError> {
    let plan = snapshot.plans().get(path, || path_ref(path));
    if let Some(value) = plan
        .as_ref()
        .and_then(|p| p.eval_fast(snapshot.plans().engine(), &input))
    {
        return Ok(defined(value));
    }
    let query = match &plan {
        Some(plan) => plan.query.clone(),
        None => path_ref(path),
    };
    interpret_path(snapshot, query, input)
}

/// Evaluates a `data[...]` reference on the interpreter: the reference path for every decision.
pub fn interpret_path(
    snapshot: &Snapshot,
    query: String,
    input: Option<Value>,
) -> Result<Option<Value>, EngineError> {
    let mut engine = snapshot.engine();
    if let Some(input) = input {
        engine.set_input(input);
    }
    let results = engine
        .eval_query(query, false)
        .map_err(|e| EngineError::Eval(vec![RegoError::from_regorus(Stage::Eval, &e)]))?;
    Ok(results
        .result
        .into_iter()
        .next()
        .and_then(|r| r.expressions.into_iter().next())
        .and_then(|e| defined(e.value)))
}

fn defined(value: Value) -> Option<Value> {
    (value != Value::Undefined).then_some(value)
}

/// Evaluates an ad-hoc query and returns one object of variable bindings per solution, as
/// `/v1/query` reports them.
pub fn eval_query(
    snapshot: &Snapshot,
    query: &str,
    input: Option<Value>,
) -> Result<Vec<Value>, EngineError> {
    let mut engine = snapshot.engine();
    if let Some(input) = input {
        engine.set_input(input);
    }
    let results = engine
        .eval_query(query.to_string(), false)
        .map_err(|e| EngineError::Eval(vec![RegoError::from_regorus(Stage::Eval, &e)]))?;
    Ok(results.result.into_iter().map(|r| r.bindings).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Draft, Policy};

    fn snapshot(rego: &str, data: serde_json::Value) -> Snapshot {
        let mut draft = Draft {
            data,
            ..Draft::default()
        };
        draft.policies.insert(
            "p.rego".into(),
            Policy {
                raw: rego.into(),
                rego_v1: true,
            },
        );
        Snapshot::build(draft).unwrap()
    }

    #[test]
    fn path_ref_quotes_and_indexes() {
        let p = |s: &[&str]| path_ref(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), "data");
        assert_eq!(p(&["a", "0", "b-c"]), r#"data["a"][0]["b-c"]"#);
    }

    #[test]
    fn rule_package_and_base_data_paths() {
        let s = snapshot(
            "package x\n\nallow if input.user == \"alice\"\n",
            serde_json::json!({"d": {"list": [1, 2]}}),
        );
        let input: Value = serde_json::from_str(r#"{"user":"alice"}"#).unwrap();
        let path = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            eval_path(&s, &path("x/allow"), Some(input.clone())).unwrap(),
            Some(Value::from(true))
        );
        assert_eq!(eval_path(&s, &path("x/allow"), None).unwrap(), None);
        assert_eq!(
            eval_path(&s, &path("d/list/1"), None).unwrap(),
            Some(Value::from(2u64))
        );
        let pkg = eval_path(&s, &path("x"), Some(input)).unwrap().unwrap();
        assert_eq!(
            pkg.to_json_str().unwrap().replace([' ', '\n'], ""),
            r#"{"allow":true}"#
        );
    }
}

//! Evaluating a decision path against a snapshot (ad-hoc queries are in `query.rs`).

use regorus::Value;

use super::error::{RegoError, Stage};
use super::{EngineError, Snapshot};

/// The Rego reference for a data path: `["a", "0", "b-c"]` becomes `data.a[0]["b-c"]`.
/// Integer-looking segments index arrays, as OPA's URL path handling does.
pub fn path_ref(path: &[String]) -> String {
    let mut out = String::from("data");
    for seg in path {
        if index(seg).is_some() {
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

/// Per-request evaluation switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions {
    /// `?strict-builtin-errors`: a failing builtin fails the query instead of being undefined.
    pub strict_builtin_errors: bool,
}

/// Rego's keywords, which OPA quotes in brackets rather than writing after a dot.
const KEYWORDS: [&str; 15] = [
    "as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null",
    "package", "some", "true", "with",
];

/// The reference OPA prints for a data path (messages, health checks): identifiers after dots,
/// array indexes and other strings in brackets, `data.a[0]["b-c"]["if"]`. The one printer.
pub fn display_ref(path: &[String]) -> String {
    let mut out = String::from("data");
    for seg in path {
        let ident = seg.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !KEYWORDS.contains(&seg.as_str());
        if ident {
            out.push('.');
            out.push_str(seg);
        } else if let Some(n) = index(seg) {
            out.push_str(&format!("[{n}]"));
        } else {
            out.push('[');
            out.push_str(&serde_json::to_string(seg).expect("strings serialise"));
            out.push(']');
        }
    }
    out
}

/// A path segment that indexes arrays, as OPA's URL path handling reads one: plain digits only
/// (not `+1` or `-1`), short enough to be an integer.
fn index(seg: &str) -> Option<u64> {
    (!seg.is_empty() && seg.len() < 18 && seg.bytes().all(|b| b.is_ascii_digit()))
        .then(|| seg.parse().ok())
        .flatten()
}

/// Evaluates `data.<path>` with `input`. `Ok(None)` means undefined.
pub fn eval_path(
    snapshot: &Snapshot,
    path: &[String],
    input: Option<Value>,
) -> Result<Option<Value>, EngineError> {
    eval_path_with(snapshot, path, input, EvalOptions::default())
}

/// [`eval_path`] with per-request options.
///
/// The snapshot's plan for the path answers when it has a fast tier that succeeds; otherwise
/// (no fast tier, a fast-tier failure, or a path past the plan cache's bound) the interpreter
/// does, so errors always come from the interpreter. The fast tiers run with OPA's default,
/// non-strict builtin errors; `?strict-builtin-errors` requests take the interpreter.
pub fn eval_path_with(
    snapshot: &Snapshot,
    path: &[String],
    input: Option<Value>,
    options: EvalOptions,
) -> Result<Option<Value>, EngineError> {
    if options.strict_builtin_errors {
        return interpret(snapshot.strict_engine(), path_ref(path), input);
    }
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
    interpret(snapshot.engine(), query, input)
}

/// Evaluates a `data[...]` reference on the interpreter: the reference path for every decision.
pub fn interpret_path(
    snapshot: &Snapshot,
    query: String,
    input: Option<Value>,
) -> Result<Option<Value>, EngineError> {
    interpret(snapshot.engine(), query, input)
}

fn interpret(
    mut engine: regorus::Engine,
    query: String,
    input: Option<Value>,
) -> Result<Option<Value>, EngineError> {
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
    fn builtin_errors_are_undefined_unless_strict() {
        let s = snapshot(
            "package t\n\ndefault p := false\n\np if 1 / 0\n",
            serde_json::json!({}),
        );
        let path = vec!["t".to_string(), "p".to_string()];
        assert_eq!(
            eval_path(&s, &path, None).unwrap(),
            Some(Value::from(false))
        );
        let strict = EvalOptions {
            strict_builtin_errors: true,
        };
        let err = eval_path_with(&s, &path, None, strict).unwrap_err();
        assert!(matches!(err, EngineError::Eval(_)));
        // The strict engine is separate: ordinary requests stay lenient.
        assert_eq!(
            eval_path(&s, &path, None).unwrap(),
            Some(Value::from(false))
        );
    }

    #[test]
    fn path_ref_quotes_and_indexes() {
        let p = |s: &[&str]| path_ref(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), "data");
        assert_eq!(p(&["a", "0", "b-c"]), r#"data["a"][0]["b-c"]"#);
        let d = |s: &[&str]| display_ref(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(d(&["system", "main"]), "data.system.main");
        assert_eq!(d(&["a", "0", "b-c"]), r#"data.a[0]["b-c"]"#);
        assert_eq!(d(&["x", "if"]), r#"data.x["if"]"#);
        assert_eq!(d(&["x", "+1", "-1"]), r#"data.x["+1"]["-1"]"#);
        assert_eq!(p(&["x", "+1"]), r#"data["x"]["+1"]"#);
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

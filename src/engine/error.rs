//! Rego errors in OPA's shape.
//!
//! regorus reports parse and compile problems as text holding `--> file:row:col` and a final
//! `error: <message>` line. OPA clients expect `{code, message, location{file,row,col}}` objects,
//! so this module turns one into the other. Nothing here knows about HTTP.

use serde::Serialize;

/// Where in a module a Rego error was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub row: u32,
    pub col: u32,
}

/// One Rego error as OPA serialises it (`ast.Error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegoError {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// The stage that produced an error; it picks OPA's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Parse,
    Compile,
    Eval,
}

impl Stage {
    fn code(self) -> &'static str {
        match self {
            Stage::Parse => "rego_parse_error",
            Stage::Compile => "rego_compile_error",
            Stage::Eval => "eval_error",
        }
    }
}

impl RegoError {
    /// Converts a regorus error into OPA's shape, recovering the location when the text has one
    /// and using OPA's code and wording for the errors clients are known to match on.
    pub fn from_regorus(stage: Stage, err: &anyhow::Error) -> Self {
        let text = format!("{err:#}");
        let mut location = parse_location(&text);
        if let Some(loc) = &mut location {
            // regorus names ad-hoc queries `<query.rego>`; OPA leaves the file empty.
            if loc.file == QUERY_FILE {
                loc.file.clear();
            }
        }
        let message = parse_message(&text);
        let (code, message) = match stage {
            Stage::Eval => eval_code(message),
            Stage::Compile => compile_code(message),
            Stage::Parse => (stage.code().to_string(), message),
        };
        RegoError {
            code,
            message,
            location,
        }
    }

    pub fn new(code: &str, message: impl Into<String>) -> Self {
        RegoError {
            code: code.to_string(),
            message: message.into(),
            location: None,
        }
    }

    /// Whether an error raised while running an ad-hoc query is a static (compile) problem of
    /// the query, which OPA reports as 400 before evaluating anything.
    pub fn is_static(&self) -> bool {
        self.code.starts_with("rego_")
    }
}

/// The file name regorus gives ad-hoc queries.
pub const QUERY_FILE: &str = "<query.rego>";

fn eval_code(message: String) -> (String, String) {
    if message.starts_with("rule conflicts with rule at")
        || message.contains("rules should not produce multiple outputs")
        || message.contains("rules must not produce multiple outputs")
    {
        return (
            "eval_conflict_error".into(),
            "complete rules must not produce multiple outputs".into(),
        );
    }
    if message.contains("functions must not produce multiple outputs") {
        return ("eval_conflict_error".into(), message);
    }
    // Static problems regorus only finds when it schedules a query (OPA finds them when
    // compiling it).
    if message.contains(" is unsafe") || message.contains("used before definition") {
        return compile_code(message);
    }
    if let Some(name) = message.strip_prefix("could not find function ") {
        return (
            "rego_type_error".into(),
            format!("undefined function {name}"),
        );
    }
    ("eval_error".into(), message)
}

fn compile_code(message: String) -> (String, String) {
    // regorus words it two ways: "use of undefined variable `x` is unsafe" and
    // "var x is unsafe (path [...], scopes [...])"; OPA says "var x is unsafe".
    let unsafe_var = message
        .strip_prefix("use of undefined variable `")
        .and_then(|m| m.strip_suffix("` is unsafe"))
        .or_else(|| {
            message
                .strip_prefix("var ")
                .and_then(|m| m.split_once(" is unsafe"))
                .map(|(var, _)| var)
        });
    if let Some(var) = unsafe_var {
        return (
            "rego_unsafe_var_error".into(),
            format!("var {var} is unsafe"),
        );
    }
    (Stage::Compile.code().to_string(), message)
}

/// Several errors as one line of text, the way OPA prints `ast.Errors` in messages:
/// `1 error occurred: file:row: code: message`.
pub fn errors_text(errors: &[RegoError]) -> String {
    let one = |e: &RegoError| {
        let text = format!("{}: {}", e.code, e.message);
        match &e.location {
            Some(l) if !l.file.is_empty() => format!("{}:{}: {text}", l.file, l.row),
            Some(l) => format!("{}:{}: {text}", l.row, l.col),
            None => text,
        }
    };
    match errors {
        [] => "no error(s)".to_string(),
        [e] => format!("1 error occurred: {}", one(e)),
        many => format!(
            "{} errors occurred:\n{}",
            many.len(),
            many.iter().map(one).collect::<Vec<_>>().join("\n")
        ),
    }
}

/// Finds the first `--> file:row:col` marker regorus puts in front of a source excerpt.
fn parse_location(text: &str) -> Option<Location> {
    let start = text.find("--> ")? + 4;
    let line = text[start..].lines().next()?.trim();
    let mut parts = line.rsplitn(3, ':');
    let col = parts.next()?.trim().parse().ok()?;
    let row = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_string();
    Some(Location { file, row, col })
}

/// The message is the text after the last `error: ` marker, or the whole text without the excerpt.
fn parse_message(text: &str) -> String {
    if let Some(idx) = text.rfind("error: ") {
        let msg = text[idx + "error: ".len()..].trim();
        if !msg.is_empty() {
            return msg.to_string();
        }
    }
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("-->") && !l.contains('|'))
        .unwrap_or(text.trim())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_keeps_file_row_col_and_message() {
        let mut engine = regorus::Engine::new();
        let err = engine
            .add_policy("p.rego".into(), "package p\n\nallow if {".into())
            .unwrap_err();
        let e = RegoError::from_regorus(Stage::Parse, &err);
        assert_eq!(e.code, "rego_parse_error");
        let loc = e.location.expect("location");
        assert_eq!(loc.file, "p.rego");
        assert_eq!(loc.row, 3);
        assert!(!e.message.is_empty());
        assert!(!e.message.contains("-->"));
    }

    #[test]
    fn conflicts_and_unsafe_vars_use_opa_codes() {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(
                "t.rego".into(),
                "package t\nx = 1 if true\nx = 2 if true\n".into(),
            )
            .unwrap();
        let err = engine.eval_query("data.t.x".into(), false).unwrap_err();
        let e = RegoError::from_regorus(Stage::Eval, &err);
        assert_eq!(e.code, "eval_conflict_error");
        assert_eq!(
            e.message,
            "complete rules must not produce multiple outputs"
        );
        assert_eq!(e.location.unwrap().row, 3);

        let err = regorus::Engine::new()
            .eval_query("x".into(), false)
            .unwrap_err();
        let e = RegoError::from_regorus(Stage::Eval, &err);
        assert!(e.is_static());
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("rego_unsafe_var_error", "var x is unsafe")
        );
        assert_eq!(e.location.unwrap().file, "");
    }

    #[test]
    fn errors_text_matches_opa() {
        let mut e = RegoError::new(
            "rego_compile_error",
            "conflicting rule for data path x/y/p found",
        );
        e.location = Some(Location {
            file: "testmod".into(),
            row: 2,
            col: 1,
        });
        assert_eq!(
            errors_text(&[e]),
            "1 error occurred: testmod:2: rego_compile_error: conflicting rule for data path x/y/p found"
        );
    }

    #[test]
    fn text_without_location_keeps_message() {
        let e = RegoError::from_regorus(Stage::Eval, &anyhow::anyhow!("division by zero"));
        assert_eq!(e.location, None);
        assert_eq!(e.message, "division by zero");
        assert_eq!(e.code, "eval_error");
    }
}

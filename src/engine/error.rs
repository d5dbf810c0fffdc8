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
    /// Converts a regorus error into OPA's shape, recovering the location when the text has one.
    pub fn from_regorus(stage: Stage, err: &anyhow::Error) -> Self {
        let text = format!("{err:#}");
        let location = parse_location(&text);
        let message = parse_message(&text);
        let code = match stage {
            Stage::Eval if message.contains("multiple outputs") || message.contains("conflict") => {
                "eval_conflict_error".to_string()
            }
            Stage::Eval if message.contains("builtin") => "eval_builtin_error".to_string(),
            other => other.code().to_string(),
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
    fn text_without_location_keeps_message() {
        let e = RegoError::from_regorus(Stage::Eval, &anyhow::anyhow!("division by zero"));
        assert_eq!(e.location, None);
        assert_eq!(e.message, "division by zero");
        assert_eq!(e.code, "eval_error");
    }
}

//! What the server needs to know about each parsed Rego module, read once from regorus's AST
//! when a snapshot is built: the package path, where each rule lives in `data`, and the
//! module skeleton the Policy API returns as `ast`.
//!
//! regorus keeps its AST behind `regorus::unstable`; this is the one place that reads it, so a
//! change there touches only this file.

use regorus::unstable::{Expr, Import, Module, Rule, RuleHead};
use serde_json::{json, Value as Json};

use super::error::{Location, RegoError, Stage};
use super::snapshot::new_engine;
use super::{nesting, EngineError, Policy};

/// One rule head: the `data` path it defines (its leading string components) and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    /// Package components followed by the head's string components, e.g. `["a", "b", "allow"]`.
    /// Stops at the first non-string key (`p[x]` defines `p`), as OPA's rule tree does.
    pub path: Vec<String>,
    pub location: Location,
}

/// The facts about one module that writes, v0 answers and the Policy API read.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleInfo {
    pub package: Vec<String>,
    pub rules: Vec<RuleEntry>,
    /// OPA-shaped module skeleton (`package`, `imports`, rule heads); see docs/compatibility.md.
    pub ast: Json,
}

/// One component of a reference as written in a rule head, package or import.
enum Component {
    Str(String),
    /// A non-string key (variable, number, ...) rendered as an OPA term.
    Term(Json),
}

fn term(kind: &str, value: impl Into<Json>) -> Json {
    json!({"type": kind, "value": value.into()})
}

fn components(expr: &Expr, out: &mut Vec<Component>) {
    match expr {
        Expr::Var { span, .. } => out.push(Component::Str(span.text().to_string())),
        Expr::RefDot { refr, field, .. } => {
            components(refr, out);
            out.push(Component::Str(field.0.text().to_string()));
        }
        Expr::RefBrack { refr, index, .. } => {
            components(refr, out);
            out.push(match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    match value.as_string() {
                        Ok(s) => Component::Str(s.to_string()),
                        Err(_) => Component::Term(term("string", value.to_string())),
                    }
                }
                Expr::Number { span, .. } => Component::Term(json!({
                    "type": "number",
                    "value": serde_json::from_str::<Json>(span.text()).unwrap_or(Json::Null),
                })),
                Expr::Var { span, .. } => Component::Term(term("var", span.text())),
                other => Component::Term(term("expr", other.span().text())),
            });
        }
        other => out.push(Component::Term(term("expr", other.span().text()))),
    }
}

/// The leading string components of a reference.
fn string_prefix(parts: &[Component]) -> Vec<String> {
    parts
        .iter()
        .map_while(|c| match c {
            Component::Str(s) => Some(s.clone()),
            Component::Term(_) => None,
        })
        .collect()
}

/// OPA renders a reference as terms: the head is a var, the rest are strings or other terms.
fn ref_terms(parts: &[Component]) -> Vec<Json> {
    parts
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Component::Str(s) if i == 0 => term("var", s.as_str()),
            Component::Str(s) => term("string", s.as_str()),
            Component::Term(t) => t.clone(),
        })
        .collect()
}

fn rule_head(rule: &Rule) -> (&Expr, bool) {
    match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. }
            | RuleHead::Set { refr, .. }
            | RuleHead::Func { refr, .. } => (refr.as_ref(), false),
        },
        Rule::Default { refr, .. } => (refr.as_ref(), true),
    }
}

fn import_json(import: &Import) -> Json {
    let mut parts = Vec::new();
    components(&import.refr, &mut parts);
    let path = if parts.len() == 1 {
        ref_terms(&parts).remove(0)
    } else {
        term("ref", ref_terms(&parts))
    };
    let mut out = json!({ "path": path });
    if let Some(alias) = &import.r#as {
        out["alias"] = Json::from(alias.text());
    }
    out
}

impl ModuleInfo {
    /// Reads a parsed module; `id` names the module in error locations.
    pub fn from_module(id: &str, module: &Module) -> Self {
        let mut pkg = Vec::new();
        components(&module.package.refr, &mut pkg);
        let package = string_prefix(&pkg);
        let mut package_terms = vec![term("var", "data")];
        package_terms.extend(package.iter().map(|s| term("string", s.as_str())));

        let mut rules = Vec::new();
        let mut rule_json = Vec::new();
        for rule in &module.policy {
            let (refr, is_default) = rule_head(rule);
            let mut parts = Vec::new();
            components(refr, &mut parts);
            let mut path = package.clone();
            path.extend(string_prefix(&parts));
            let span = rule.span();
            rules.push(RuleEntry {
                path,
                location: Location {
                    file: id.to_string(),
                    row: span.line,
                    col: span.col,
                },
            });
            let mut head = json!({ "ref": ref_terms(&parts) });
            if let [Component::Str(name)] = parts.as_slice() {
                head["name"] = Json::from(name.as_str());
            }
            let mut entry = json!({ "head": head });
            if is_default {
                entry["default"] = Json::Bool(true);
            }
            rule_json.push(entry);
        }
        let mut ast = json!({ "package": { "path": package_terms } });
        if !module.imports.is_empty() {
            ast["imports"] = module.imports.iter().map(import_json).collect();
        }
        if !rule_json.is_empty() {
            ast["rules"] = Json::Array(rule_json);
        }
        ModuleInfo {
            package,
            rules,
            ast,
        }
    }
}

/// Parses one module on its own (the Policy API does this before compiling the whole set), so
/// its package can be checked against bundle roots and its syntax errors reported.
pub fn parse_module(id: &str, policy: &Policy) -> Result<ModuleInfo, EngineError> {
    nesting::check(id, &policy.raw).map_err(|e| EngineError::Compile(vec![e]))?;
    let mut engine = new_engine();
    engine.set_rego_v0(!policy.rego_v1);
    engine
        .add_policy(id.to_string(), policy.raw.clone())
        .map_err(|e| EngineError::Compile(vec![RegoError::from_regorus(Stage::Parse, &e)]))?;
    Ok(ModuleInfo::from_module(id, &engine.get_modules()[0]))
}

/// True when the text holds nothing but whitespace and comments: OPA answers "empty module".
pub fn is_empty_module(raw: &str) -> bool {
    raw.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rego: &str) -> ModuleInfo {
        let mut engine = regorus::Engine::new();
        engine.add_policy("m.rego".into(), rego.into()).unwrap();
        ModuleInfo::from_module("m.rego", &engine.get_modules()[0])
    }

    #[test]
    fn package_and_rule_paths() {
        let m = info(
            "package a.b\n\nimport data.lib.x as y\n\ndefault allow := false\n\nallow if input.ok\n\
             s contains v if v := 1\nobj[k] := 1 if k := \"z\"\nq.r.t := 2\nf(x) := x\n",
        );
        assert_eq!(m.package, vec!["a", "b"]);
        let paths: Vec<String> = m.rules.iter().map(|r| r.path.join("/")).collect();
        assert_eq!(
            paths,
            vec![
                "a/b/allow",
                "a/b/allow",
                "a/b/s",
                "a/b/obj",
                "a/b/q/r/t",
                "a/b/f"
            ]
        );
        assert_eq!(m.rules[0].location.row, 5);
        assert_eq!(m.rules[0].location.file, "m.rego");
        assert_eq!(
            m.ast["package"]["path"],
            json!([
                {"type": "var", "value": "data"},
                {"type": "string", "value": "a"},
                {"type": "string", "value": "b"}
            ])
        );
        assert_eq!(m.ast["imports"][0]["alias"], "y");
        assert_eq!(m.ast["rules"][0]["default"], true);
        assert_eq!(m.ast["rules"][1]["head"]["name"], "allow");
    }

    #[test]
    fn comment_only_text_is_empty() {
        assert!(is_empty_module(""));
        assert!(is_empty_module("  # just a note\n\n"));
        assert!(!is_empty_module("package a"));
    }
}

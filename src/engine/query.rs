//! Ad-hoc queries (`/v1/query`): parse, evaluate, and report one binding object per solution.
//!
//! OPA answers with the value of every variable of the query for each solution, leaving out
//! wildcards (`_`) and generated variables. regorus only reports the variables of its innermost
//! scope (a loop index such as `i` in `data.servers[i].ports[_]` goes missing), so the query's
//! own variables are read from its AST and captured by one extra statement appended to it:
//! `__regent_bindings__ := {"i": i, ...}`. regorus schedules that statement after everything
//! that binds those variables, so it neither changes nor filters the solutions.

use std::collections::BTreeSet;

use regorus::unstable::{Expr, Literal, Parser, Query};
use regorus::Value;

use super::error::{RegoError, Stage, QUERY_FILE};
use super::{nesting, EngineError, Snapshot};

const CAPTURE: &str = "__regent_bindings__";

/// A query that parsed, with the variables whose values OPA would report.
#[derive(Debug, Clone)]
pub struct ParsedQuery {
    text: String,
    vars: Vec<String>,
}

impl ParsedQuery {
    pub fn vars(&self) -> &[String] {
        &self.vars
    }
}

/// Parses an ad-hoc query on its own, so syntax errors are told apart from compile and
/// evaluation errors (OPA: "error(s) occurred while parsing query").
pub fn parse_query(query: &str, rego_v1: bool) -> Result<ParsedQuery, EngineError> {
    nesting::check("", query).map_err(|e| EngineError::QueryParse(vec![e]))?;
    let parse = || -> anyhow::Result<Vec<String>> {
        let source = regorus::Source::from_contents(QUERY_FILE.to_string(), query.to_string())?;
        let mut parser = Parser::new(&source)?;
        if rego_v1 {
            parser.enable_rego_v1()?;
        }
        let parsed = parser.parse_user_query()?;
        let mut vars = BTreeSet::new();
        query_vars(&parsed, &mut vars);
        Ok(vars.into_iter().collect())
    };
    let vars = parse()
        .map_err(|e| EngineError::QueryParse(vec![RegoError::from_regorus(Stage::Parse, &e)]))?;
    Ok(ParsedQuery {
        text: query.to_string(),
        vars,
    })
}

/// The variables a query body binds at its top level. Comprehension and `every` bodies have
/// their own scope, and `data`/`input` are documents, not variables.
fn query_vars(query: &Query, out: &mut BTreeSet<String>) {
    for stmt in &query.stmts {
        match &stmt.literal {
            Literal::SomeVars { vars, .. } => {
                for v in vars {
                    add_var(v.text(), out);
                }
            }
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(key) = key {
                    expr_vars(key, out);
                }
                expr_vars(value, out);
                expr_vars(collection, out);
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => expr_vars(expr, out),
            Literal::Every { domain, .. } => expr_vars(domain, out),
        }
    }
}

fn add_var(name: &str, out: &mut BTreeSet<String>) {
    if !matches!(name, "_" | "data" | "input") && !name.starts_with("__") {
        out.insert(name.to_string());
    }
}

fn expr_vars(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Var { span, .. } => add_var(span.text(), out),
        // The function's name is not a variable; its arguments (and output argument) may be.
        Expr::Call { params, .. } => params.iter().for_each(|p| expr_vars(p, out)),
        Expr::RefDot { refr, .. } => expr_vars(refr, out),
        Expr::RefBrack { refr, index, .. } => {
            expr_vars(refr, out);
            expr_vars(index, out);
        }
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().for_each(|i| expr_vars(i, out))
        }
        Expr::Object { fields, .. } => {
            for (_, key, value) in fields {
                expr_vars(key, out);
                expr_vars(value, out);
            }
        }
        Expr::UnaryExpr { expr, .. } => expr_vars(expr, out),
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            expr_vars(lhs, out);
            expr_vars(rhs, out);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(key) = key {
                expr_vars(key, out);
            }
            expr_vars(value, out);
            expr_vars(collection, out);
        }
        // Scalars, and comprehensions whose variables are local to them.
        _ => {}
    }
}

/// Evaluates a parsed query and returns one object of variable bindings per solution (`{}` for
/// a satisfied query without variables; nothing at all when the query is not satisfied).
/// Static problems (unsafe variables, unknown functions) are [`EngineError::QueryCompile`].
pub fn eval_query(
    snapshot: &Snapshot,
    query: &ParsedQuery,
    input: Option<Value>,
    rego_v1: bool,
) -> Result<Vec<Value>, EngineError> {
    let mut engine = snapshot.engine();
    engine.set_rego_v0(!rego_v1);
    if let Some(input) = input {
        engine.set_input(input);
    }
    let text = if query.vars.is_empty() {
        query.text.clone()
    } else {
        let fields: Vec<String> = query.vars.iter().map(|v| format!("{v:?}: {v}")).collect();
        // A new line, not `;`: the query may end in a comment.
        format!("{}\n{CAPTURE} := {{{}}}", query.text, fields.join(", "))
    };
    let results = engine.eval_query(text, false).map_err(|e| {
        let err = RegoError::from_regorus(Stage::Eval, &e);
        if err.is_static() {
            EngineError::QueryCompile(vec![err])
        } else {
            EngineError::Eval(vec![err])
        }
    })?;
    let capture = Value::from(CAPTURE);
    Ok(results
        .result
        .into_iter()
        // regorus reports a solution whose expression is `false` (`1 == 2`); in Rego, as in
        // OPA, such a query is simply not satisfied.
        .filter(|r| {
            r.expressions
                .iter()
                .all(|e| e.value != Value::Bool(false) && e.value != Value::Undefined)
        })
        .map(|r| match &r.bindings {
            Value::Object(fields) => fields.get(&capture).cloned(),
            _ => None,
        })
        .map(|b| b.unwrap_or_else(Value::new_object))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Draft, Policy};

    fn snapshot(data: serde_json::Value) -> Snapshot {
        let mut draft = Draft {
            data,
            ..Draft::default()
        };
        draft.policies.insert(
            "lib.rego".into(),
            Policy {
                raw: "package lib\n\ndouble(n) := n * 2\n".into(),
                rego_v1: true,
            },
        );
        Snapshot::build(draft).unwrap()
    }

    fn rows(s: &Snapshot, q: &str) -> Vec<String> {
        let parsed = parse_query(q, true).unwrap();
        eval_query(s, &parsed, None, true)
            .unwrap()
            .iter()
            .map(|r| r.to_json_str().unwrap().replace([' ', '\n'], ""))
            .collect()
    }

    #[test]
    fn variables_are_read_from_the_query() {
        let vars = |q: &str| parse_query(q, true).unwrap().vars().to_vec();
        assert_eq!(
            vars(r#"data.s[i].ports[_] = "p2"; data.s[i].name = name"#),
            vec!["i", "name"]
        );
        assert_eq!(
            vars("x := [y | y := data.a[_]]; count(x, n)"),
            vec!["n", "x"]
        );
        assert_eq!(vars("some k; input.m[k] == 1"), vec!["k"]);
        assert!(vars("data.lib.double(2) == 4").is_empty());
        assert!(matches!(
            parse_query("x = 1 +", true),
            Err(EngineError::QueryParse(_))
        ));
    }

    #[test]
    fn bindings_per_solution() {
        let s = snapshot(serde_json::json!({"s": [
            {"name": "app", "ports": ["p1", "p2"]},
            {"name": "db", "ports": ["p3"]},
            {"name": "dev", "ports": ["p2"]},
        ]}));
        assert_eq!(
            rows(&s, r#"data.s[i].ports[_] = "p2"; data.s[i].name = name"#),
            vec![r#"{"i":0,"name":"app"}"#, r#"{"i":2,"name":"dev"}"#]
        );
        assert_eq!(
            rows(&s, "y := data.lib.double(21) # trailing comment"),
            vec![r#"{"y":42}"#]
        );
        assert_eq!(rows(&s, "1 == 1"), vec!["{}"]);
        assert!(rows(&s, "1 == 2").is_empty());
        assert!(rows(&s, "a = 1; b = 2; a = b").is_empty());
    }

    #[test]
    fn unsafe_variables_are_compile_errors() {
        let s = snapshot(serde_json::json!({}));
        let parsed = parse_query("x", true).unwrap();
        assert!(matches!(
            eval_query(&s, &parsed, None, true),
            Err(EngineError::QueryCompile(_))
        ));
    }
}

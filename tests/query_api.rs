//! End-to-end tests of the Query API (/v1/query) through the real binary.

use crate::common;

use common::{json, Regent};
use serde_json::json;

fn server() -> Regent {
    let dir = common::tree(&[
        (
            "data.json",
            r#"{"servers": [{"name": "app", "ports": ["p1", "p2"]}, {"name": "db", "ports": ["p3"]}, {"name": "dev", "ports": ["p2"]}], "x": [1, 2, 3, 4]}"#,
        ),
        ("lib.rego", "package lib\n\ndouble(n) := n * 2\n"),
    ]);
    let srv = Regent::start(&[dir.path().to_str().unwrap()]);
    // Keep the files for the server's lifetime: it read them at start.
    std::mem::forget(dir);
    srv
}

fn q(srv: &Regent, query: &str) -> (u16, serde_json::Value) {
    let url = reqwest::Url::parse_with_params(&srv.url("/v1/query"), &[("q", query)]).unwrap();
    json(srv.client.get(url).send().unwrap())
}

#[test]
fn bindings_per_solution_without_wildcards() {
    let srv = server();
    assert_eq!(
        q(&srv, "data.x[_] = x"),
        (
            200,
            json!({"result": [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]})
        )
    );
    assert_eq!(
        q(
            &srv,
            r#"data.servers[i].ports[_] = "p2"; data.servers[i].name = name"#
        ),
        (
            200,
            json!({"result": [{"i": 0, "name": "app"}, {"i": 2, "name": "dev"}]})
        )
    );
    assert_eq!(
        q(&srv, "y := data.lib.double(21)"),
        (200, json!({"result": [{"y": 42}]}))
    );
}

#[test]
fn satisfied_query_without_variables_and_undefined_query() {
    let srv = server();
    assert_eq!(q(&srv, "1 == 1"), (200, json!({"result": [{}]})));
    assert_eq!(q(&srv, "1 == 2"), (200, json!({})));
    assert_eq!(q(&srv, "a = 1; b = 2; a = b"), (200, json!({})));
    assert_eq!(q(&srv, "data.nothing.here"), (200, json!({})));
}

#[test]
fn missing_q_parse_and_compile_errors() {
    let srv = server();
    assert_eq!(
        json(srv.get("/v1/query")),
        (
            400,
            json!({"code": "invalid_parameter", "message": "missing parameter 'q'"})
        )
    );
    let (code, body) = q(&srv, "x = 1 +");
    assert_eq!(code, 400);
    assert_eq!(body["message"], "error(s) occurred while parsing query");
    assert_eq!(body["errors"][0]["code"], "rego_parse_error");
    let (code, body) = q(&srv, "x");
    assert_eq!(
        (code, body),
        (
            400,
            json!({
                "code": "invalid_parameter",
                "message": "error(s) occurred while compiling query",
                "errors": [{"code": "rego_unsafe_var_error", "message": "var x is unsafe", "location": {"file": "", "row": 1, "col": 1}}]
            })
        )
    );
    // A failed query leaves nothing behind.
    assert_eq!(q(&srv, "x = 1"), (200, json!({"result": [{"x": 1}]})));
}

#[test]
fn runtime_errors_are_500() {
    let srv = server();
    let module = "package t\n\np = 1 if input.a\n\np = 2 if input.b\n";
    let resp = srv
        .client
        .put(srv.url("/v1/policies/t"))
        .body(module)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = json!({"query": "x := data.t.p", "input": {"a": true}});
    assert_eq!(
        json(srv.post_json("/v1/query", &body)),
        (200, json!({"result": [{"x": 1}]}))
    );
    let body = json!({"query": "x := data.t.p", "input": {"a": true, "b": true}});
    let (code, body) = json(srv.post_json("/v1/query", &body));
    assert_eq!(code, 500);
    assert_eq!(body["code"], "internal_error");
    assert_eq!(body["message"], "error(s) occurred while evaluating query");
    assert_eq!(body["errors"][0]["code"], "eval_conflict_error");
    assert_eq!(body["errors"][0]["location"]["file"], "t");
}

#[test]
fn post_with_input_metrics_and_pretty() {
    let srv = server();
    let body = json!({
        "query": r#"input.servers[i].ports[_] = "p2"; input.servers[i].name = name"#,
        "input": {"servers": [{"name": "web", "ports": ["p2"]}]}
    });
    assert_eq!(
        json(srv.post_json("/v1/query", &body)),
        (200, json!({"result": [{"i": 0, "name": "web"}]}))
    );
    let (code, resp) = json(srv.post_json("/v1/query?metrics", &json!({"query": "x := 1"})));
    assert_eq!(code, 200);
    for key in [
        "timer_rego_query_parse_ns",
        "timer_rego_query_eval_ns",
        "timer_server_handler_ns",
    ] {
        assert!(resp["metrics"][key].is_u64(), "{key} in {resp}");
    }
    let text = srv
        .client
        .get(srv.url("/v1/query?q=x%20:=%201&pretty"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        text,
        "{\n  \"result\": [\n    {\n      \"x\": 1\n    }\n  ]\n}\n"
    );
    let resp = srv
        .client
        .post(srv.url("/v1/query"))
        .body("{nope")
        .send()
        .unwrap();
    let (code, body) = json(resp);
    assert_eq!(code, 400);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("error(s) occurred while decoding request: "));
}

#[test]
fn queries_see_policy_and_data_writes() {
    let srv = server();
    let resp = srv
        .client
        .put(srv.url("/v1/data/extra"))
        .body("[7]")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        q(&srv, "data.extra[_] = v"),
        (200, json!({"result": [{"v": 7}]}))
    );
}

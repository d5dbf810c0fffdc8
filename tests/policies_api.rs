//! End-to-end tests of the Policy API (/v1/policies) through the real binary.

use crate::common;

use common::{json, Regent};
use reqwest::blocking::Response;
use serde_json::json;

fn put_policy(srv: &Regent, path: &str, rego: &str) -> Response {
    srv.client
        .put(srv.url(path))
        .header("Content-Type", "text/plain")
        .body(rego.to_string())
        .send()
        .unwrap()
}

const MODULE: &str = "package opa.examples\n\nimport data.servers\n\ndefault allow := false\n\nallow if input.user == \"alice\"\n";

#[test]
fn put_list_get_delete() {
    let srv = Regent::start(&[]);
    assert_eq!(json(srv.get("/v1/policies")), (200, json!({"result": []})));
    assert_eq!(
        json(put_policy(&srv, "/v1/policies/example1", MODULE)),
        (200, json!({}))
    );

    let (code, body) = json(srv.get("/v1/policies"));
    assert_eq!(code, 200);
    let listed = &body["result"].as_array().unwrap()[0];
    assert_eq!(listed["id"], "example1");
    assert_eq!(listed["raw"], MODULE);
    assert_eq!(
        listed["ast"]["package"]["path"],
        json!([
            {"type": "var", "value": "data"},
            {"type": "string", "value": "opa"},
            {"type": "string", "value": "examples"}
        ])
    );
    assert_eq!(
        listed["ast"]["imports"][0]["path"],
        json!({"type": "ref", "value": [{"type": "var", "value": "data"}, {"type": "string", "value": "servers"}]})
    );
    assert_eq!(listed["ast"]["rules"][1]["head"]["name"], "allow");

    let (code, body) = json(srv.get("/v1/policies/example1"));
    assert_eq!(code, 200);
    assert_eq!(&body["result"], listed);

    // The module is live.
    let decide = |user: &str| {
        json(srv.post_json(
            "/v1/data/opa/examples/allow",
            &json!({"input": {"user": user}}),
        ))
    };
    assert_eq!(decide("alice"), (200, json!({"result": true})));
    assert_eq!(decide("bob"), (200, json!({"result": false})));

    let resp = srv
        .client
        .delete(srv.url("/v1/policies/example1"))
        .send()
        .unwrap();
    assert_eq!(json(resp), (200, json!({})));
    let (code, body) = json(srv.get("/v1/policies/example1"));
    assert_eq!(
        (code, body),
        (
            404,
            json!({"code": "resource_not_found", "message": "storage_not_found_error: policy id \"example1\""})
        )
    );
    assert_eq!(decide("alice"), (200, json!({})));
    let resp = srv
        .client
        .delete(srv.url("/v1/policies/example1"))
        .send()
        .unwrap();
    assert_eq!(json(resp).0, 404);
}

#[test]
fn ids_may_hold_slashes_and_escapes() {
    let srv = Regent::start(&[]);
    assert_eq!(
        put_policy(&srv, "/v1/policies/a/b/c.rego", "package abc\n").status(),
        200
    );
    let (code, body) = json(srv.get("/v1/policies/a/b/c.rego"));
    assert_eq!(
        (code, body["result"]["id"].as_str()),
        (200, Some("a/b/c.rego"))
    );
    assert_eq!(
        put_policy(
            &srv,
            "/v1/policies/%2Fa%20policy%2Fanother-component",
            "package other\n"
        )
        .status(),
        200
    );
    let (code, body) = json(srv.get("/v1/policies/%2Fa%20policy%2Fanother-component"));
    assert_eq!(
        (code, body["result"]["id"].as_str()),
        (200, Some("/a policy/another-component"))
    );
    let resp = srv
        .client
        .delete(srv.url("/v1/policies/%2Fa%20policy%2Fanother-component"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn parse_and_compile_errors_carry_locations() {
    let srv = Regent::start(&[]);
    let (code, body) = json(put_policy(
        &srv,
        "/v1/policies/test",
        "package a.b.c\n\np ;- true\n",
    ));
    assert_eq!(code, 400);
    assert_eq!(body["code"], "invalid_parameter");
    assert_eq!(
        body["message"],
        "error(s) occurred while compiling module(s)"
    );
    let err = &body["errors"][0];
    assert_eq!(err["code"], "rego_parse_error");
    assert_eq!(err["location"]["file"], "test");
    assert_eq!(err["location"]["row"], 3);
    assert!(err["location"]["col"].as_u64().unwrap() >= 1);

    let (code, body) = json(put_policy(
        &srv,
        "/v1/policies/test",
        "package a.b.c\n\np if x > 1\n",
    ));
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "error(s) occurred while compiling module(s)"
    );
    assert_eq!(
        body["errors"][0],
        json!({
            "code": "rego_unsafe_var_error",
            "message": "var x is unsafe",
            "location": {"file": "test", "row": 3, "col": 6}
        })
    );
    // Nothing was stored; a valid module then goes in.
    assert_eq!(json(srv.get("/v1/policies")), (200, json!({"result": []})));
    assert_eq!(
        put_policy(&srv, "/v1/policies/test", "package a.b.c\n\np = true\n").status(),
        200
    );
}

#[test]
fn empty_module_is_refused() {
    let srv = Regent::start(&[]);
    for body in ["", "# only a comment\n\n"] {
        let (code, resp) = json(put_policy(&srv, "/v1/policies/1", body));
        assert_eq!(
            (code, resp),
            (
                400,
                json!({"code": "invalid_parameter", "message": "empty module"})
            ),
            "{body:?}"
        );
    }
}

#[test]
fn identical_put_is_a_no_op_and_metrics_say_so() {
    let srv = Regent::start(&[]);
    let (code, body) = json(put_policy(
        &srv,
        "/v1/policies/test?metrics",
        "package foo\n",
    ));
    assert_eq!(code, 200);
    let keys: Vec<&String> = body["metrics"].as_object().unwrap().keys().collect();
    for key in [
        "timer_rego_module_compile_ns",
        "timer_rego_module_parse_ns",
        "timer_server_read_bytes_ns",
    ] {
        assert!(
            keys.iter().any(|k| *k == key),
            "{key} missing from {keys:?}"
        );
    }
    let (code, body) = json(put_policy(
        &srv,
        "/v1/policies/test?metrics",
        "package foo\n",
    ));
    assert_eq!(code, 200);
    assert_eq!(
        body["metrics"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["timer_server_read_bytes_ns"]
    );
    let (_, body) = json(put_policy(
        &srv,
        "/v1/policies/test?metrics",
        "package foo\np = 1\n",
    ));
    assert!(body["metrics"]["timer_rego_module_parse_ns"].is_u64());
}

#[test]
fn delete_that_breaks_other_modules_is_an_invalid_operation() {
    let srv = Regent::start(&[]);
    assert_eq!(
        put_policy(&srv, "/v1/policies/rules", "package a\n\nq := true\n").status(),
        200
    );
    assert_eq!(
        put_policy(&srv, "/v1/policies/user", "package a\n\np if q\n").status(),
        200
    );
    let resp = srv
        .client
        .delete(srv.url("/v1/policies/rules?pretty"))
        .send()
        .unwrap();
    let (code, body) = json(resp);
    assert_eq!(code, 400);
    assert_eq!(body["code"], "invalid_operation");
    assert_eq!(
        body["message"],
        "error(s) occurred while compiling module(s)"
    );
    assert_eq!(body["errors"][0]["code"], "rego_unsafe_var_error");
    assert_eq!(body["errors"][0]["location"]["file"], "user");
    // Still there, still working.
    assert_eq!(
        json(srv.get("/v1/data/a/p")),
        (200, json!({"result": true}))
    );
}

#[test]
fn pretty_and_v0_compatible_modules() {
    let srv = Regent::start(&["--v0-compatible"]);
    let resp = put_policy(
        &srv,
        "/v1/policies/old?pretty",
        "package old\n\nallow { input.x == 1 }\n",
    );
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().unwrap(), "{}\n");
    assert_eq!(
        json(srv.post_json("/v1/data/old/allow", &json!({"input": {"x": 1}}))),
        (200, json!({"result": true}))
    );
    let text = srv.get("/v1/policies/old?pretty=true").text().unwrap();
    assert!(text.starts_with("{\n  \"result\": {\n"), "{text}");
    // Without the flag the same module is a v1 parse error.
    let strict = Regent::start(&[]);
    let (code, body) = json(put_policy(
        &strict,
        "/v1/policies/old",
        "package old\n\nallow { input.x == 1 }\n",
    ));
    assert_eq!(
        (code, body["errors"][0]["code"].as_str()),
        (400, Some("rego_parse_error"))
    );
}

#[test]
fn files_given_on_the_command_line_are_listed_by_path() {
    let dir = common::tree(&[("policy.rego", "package cli\n\nx := 1\n")]);
    let path = dir.path().join("policy.rego");
    let srv = Regent::start(&[path.to_str().unwrap()]);
    let (_, body) = json(srv.get("/v1/policies"));
    assert_eq!(body["result"][0]["id"], path.to_str().unwrap());
}

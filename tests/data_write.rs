//! End-to-end tests of the Data API writes (PUT, PATCH, DELETE on /v1/data) through the binary.

use crate::common;

use common::{json, Regent};
use reqwest::blocking::Response;
use serde_json::json;

fn put(srv: &Regent, path: &str, body: &str) -> Response {
    srv.client
        .put(srv.url(path))
        .body(body.to_string())
        .send()
        .unwrap()
}

fn patch(srv: &Regent, path: &str, body: &str) -> Response {
    srv.client
        .patch(srv.url(path))
        .header("Content-Type", "application/json-patch+json")
        .body(body.to_string())
        .send()
        .unwrap()
}

fn delete(srv: &Regent, path: &str) -> Response {
    srv.client.delete(srv.url(path)).send().unwrap()
}

fn put_policy(srv: &Regent, id: &str, rego: &str) -> Response {
    srv.client
        .put(srv.url(&format!("/v1/policies/{id}")))
        .header("Content-Type", "text/plain")
        .body(rego.to_string())
        .send()
        .unwrap()
}

/// The status and the body text (which must be empty for 204/304).
fn status_text(resp: Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().unwrap())
}

#[test]
fn put_creates_parents_and_overwrites() {
    let srv = Regent::start(&[]);
    assert_eq!(
        status_text(put(&srv, "/v1/data/a/b/c/d", "1")),
        (204, String::new())
    );
    assert_eq!(
        json(srv.get("/v1/data/a/b/c")),
        (200, json!({"result": {"d": 1}}))
    );
    assert_eq!(status_text(put(&srv, "/v1/data/a/b", "\"goodbye\"")).0, 204);
    assert_eq!(
        json(srv.get("/v1/data/a")),
        (200, json!({"result": {"b": "goodbye"}}))
    );
    // The root can be replaced by an object, never by anything else.
    assert_eq!(
        status_text(put(&srv, "/v1/data", r#"{"foo": [1, 2, 3]}"#)).0,
        204
    );
    assert_eq!(
        json(srv.get("/v1/data")),
        (200, json!({"result": {"foo": [1, 2, 3]}}))
    );
    let (code, body) = json(put(&srv, "/v1/data", "[1, 2]"));
    assert_eq!(code, 400);
    assert_eq!(
        body,
        json!({"code": "invalid_parameter", "message": "storage_invalid_patch_error: root must be object"})
    );
}

#[test]
fn put_below_a_non_object_is_a_404_write_conflict() {
    let srv = Regent::start(&[]);
    assert_eq!(status_text(put(&srv, "/v1/data/a/b", "[1,2,3,4]")).0, 204);
    let (code, body) = json(put(&srv, "/v1/data/a/b/c/d", "0"));
    assert_eq!(
        (code, body),
        (
            404,
            json!({"code": "resource_conflict", "message": "storage_write_conflict_error: /a/b"})
        )
    );
    // The failed write changed nothing.
    assert_eq!(
        json(srv.get("/v1/data/a")),
        (200, json!({"result": {"b": [1, 2, 3, 4]}}))
    );
}

#[test]
fn if_none_match_star_keeps_an_existing_document() {
    let srv = Regent::start(&[]);
    assert_eq!(status_text(put(&srv, "/v1/data/a/b/c", "0")).0, 204);
    let resp = srv
        .client
        .put(srv.url("/v1/data/a/b/c"))
        .header("If-None-Match", "*")
        .body("1")
        .send()
        .unwrap();
    assert_eq!(status_text(resp), (304, String::new()));
    assert_eq!(json(srv.get("/v1/data/a/b/c")), (200, json!({"result": 0})));
    // A missing document is created as usual.
    let resp = srv
        .client
        .put(srv.url("/v1/data/a/b/new"))
        .header("If-None-Match", "*")
        .body("2")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        json(srv.get("/v1/data/a/b/new")),
        (200, json!({"result": 2}))
    );
}

#[test]
fn metrics_turn_204_into_200_with_timers() {
    let srv = Regent::start(&[]);
    for (resp, what) in [
        (put(&srv, "/v1/data/x?metrics", r#"{"a": 1}"#), "put"),
        (
            patch(
                &srv,
                "/v1/data/x?metrics",
                r#"[{"op": "add", "path": "/b", "value": 2}]"#,
            ),
            "patch",
        ),
        (
            srv.client
                .delete(srv.url("/v1/data/x/a?metrics"))
                .send()
                .unwrap(),
            "delete",
        ),
    ] {
        let (code, body) = json(resp);
        assert_eq!(code, 200, "{what}");
        let metrics = body["metrics"].as_object().expect("metrics object");
        assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
        assert!(
            metrics["timer_server_handler_ns"].as_u64().unwrap() > 0,
            "{what}"
        );
        if what != "delete" {
            assert!(metrics.contains_key("timer_rego_input_parse_ns"), "{what}");
        }
    }
    assert_eq!(
        json(srv.get("/v1/data/x")),
        (200, json!({"result": {"b": 2}}))
    );
}

#[test]
fn patch_add_remove_replace_and_array_append() {
    let srv = Regent::start(&[]);
    let ok = |resp: Response| assert_eq!(status_text(resp), (204, String::new()));
    ok(patch(
        &srv,
        "/v1/data/x",
        r#"[{"op": "add", "path": "/", "value": []}]"#,
    ));
    ok(patch(
        &srv,
        "/v1/data/x",
        r#"[{"op": "add", "path": "-", "value": {"a": 1}}, {"op": "add", "path": "-", "value": {"a": 2}}]"#,
    ));
    assert_eq!(json(srv.get("/v1/data/x/1/a")), (200, json!({"result": 2})));
    ok(patch(
        &srv,
        "/v1/data",
        r#"[{"op": "replace", "path": "/x/0", "value": "first"}, {"op": "remove", "path": "/x/1"}]"#,
    ));
    assert_eq!(
        json(srv.get("/v1/data/x")),
        (200, json!({"result": ["first"]}))
    );
    // Insert into an array in the middle.
    ok(patch(
        &srv,
        "/v1/data/y",
        r#"[{"op": "add", "path": "/", "value": {"z": [4, 5, 6]}}]"#,
    ));
    ok(patch(
        &srv,
        "/v1/data/y",
        r#"[{"op": "add", "path": "/z/1", "value": 100}]"#,
    ));
    assert_eq!(
        json(srv.get("/v1/data/y/z")),
        (200, json!({"result": [4, 100, 5, 6]}))
    );
}

#[test]
fn patch_errors_leave_the_document_unchanged() {
    let srv = Regent::start(&[]);
    let (code, body) = json(patch(&srv, "/v1/data", r#"[{"op": "move", "path": "/a"}]"#));
    assert_eq!(
        (code, body),
        (
            400,
            json!({"code": "invalid_parameter", "message": "bad patch operation: move"})
        )
    );
    // Two good operations followed by one that fails: the whole patch is refused.
    let (code, _) = json(patch(
        &srv,
        "/v1/data",
        r#"[{"op": "add", "path": "/foo", "value": "hello"},
            {"op": "add", "path": "/bar", "value": "world"},
            {"op": "add", "path": "/foo/bad", "value": "deadbeef"}]"#,
    ));
    assert_eq!(code, 404);
    assert_eq!(json(srv.get("/v1/data")), (200, json!({"result": {}})));
    let (code, body) = json(patch(
        &srv,
        "/v1/data",
        r#"[{"op": "remove", "path": "/"}]"#,
    ));
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "storage_invalid_patch_error: root cannot be removed"
    );
    let (code, body) = json(patch(
        &srv,
        "/v1/data",
        r#"[{"op": "replace", "path": "/nope", "value": 1}]"#,
    ));
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("resource_not_found"))
    );
    let (code, body) = json(patch(&srv, "/v1/data", "{not json"));
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
}

#[test]
fn delete_removes_and_missing_is_404() {
    let srv = Regent::start(&[]);
    let (code, body) = json(delete(&srv, "/v1/data/a/b"));
    assert_eq!(
        (code, body),
        (
            404,
            json!({"code": "resource_not_found", "message": "storage_not_found_error: /a/b: document does not exist"})
        )
    );
    assert_eq!(status_text(put(&srv, "/v1/data/a/b/c/d", "1")).0, 204);
    assert_eq!(
        status_text(delete(&srv, "/v1/data/a/b")),
        (204, String::new())
    );
    assert_eq!(json(srv.get("/v1/data/a/b/c/d")), (200, json!({})));
    assert_eq!(json(srv.get("/v1/data/a")), (200, json!({"result": {}})));
    // DELETE on the root is not a route: OPA's catch-all answers 405.
    assert_eq!(status_text(delete(&srv, "/v1/data")), (405, String::new()));
}

#[test]
fn escaped_path_segments_stay_single_keys() {
    let srv = Regent::start(&[]);
    assert_eq!(
        status_text(put(&srv, "/v1/data/a%2Fb", r#"{"c/d": 1}"#)).0,
        204
    );
    assert_eq!(
        json(srv.get("/v1/data")),
        (200, json!({"result": {"a/b": {"c/d": 1}}}))
    );
    assert_eq!(
        json(srv.get("/v1/data/a%2Fb/c%2Fd")),
        (200, json!({"result": 1}))
    );
    assert_eq!(json(srv.get("/v1/data/a/b")), (200, json!({})));
}

#[test]
fn data_on_a_rule_path_is_refused_both_ways() {
    let srv = Regent::start(&[]);
    assert_eq!(
        put_policy(&srv, "testmod", "package x.y\np = 1\nq = 2\n").status(),
        200
    );
    let (code, body) = json(put(&srv, "/v1/data/x", r#"{"y": {"p": "xxx"}}"#));
    assert_eq!(
        (code, body),
        (
            400,
            json!({
                "code": "invalid_parameter",
                "message": "1 error occurred: testmod:2: rego_compile_error: conflicting rule for data path x/y/p found"
            })
        )
    );
    for (path, body) in [
        ("/v1/data/x/y", r#"{"p": "xxx"}"#),
        ("/v1/data/x/y/p", "\"xxx\""),
        ("/v1/data/x/y/p/a", "1"),
    ] {
        assert_eq!(put(&srv, path, body).status().as_u16(), 400, "{path}");
    }
    let (code, _) = json(patch(
        &srv,
        "/v1/data",
        r#"[{"op": "add", "path": "/x", "value": {"y": {"q": 0}}}]"#,
    ));
    assert_eq!(code, 400);
    // Data beside the rules is fine, and the rules still answer.
    assert_eq!(put(&srv, "/v1/data/x/y/other", "3").status().as_u16(), 204);
    assert_eq!(json(srv.get("/v1/data/x/y/p")), (200, json!({"result": 1})));
    // Without the module the same data is accepted; then the module is refused.
    assert_eq!(delete(&srv, "/v1/policies/testmod").status().as_u16(), 200);
    assert_eq!(put(&srv, "/v1/data/x/y/p/a", "1").status().as_u16(), 204);
    let (code, body) = json(put_policy(&srv, "testmod", "package x.y\np = 1\nq = 2\n"));
    assert_eq!(code, 400);
    assert_eq!(
        body,
        json!({
            "code": "invalid_parameter",
            "message": "error(s) occurred while compiling module(s)",
            "errors": [{
                "code": "rego_compile_error",
                "message": "conflicting rule for data path x/y/p found",
                "location": {"file": "testmod", "row": 2, "col": 1}
            }]
        })
    );
}

#[test]
fn writes_are_visible_to_rules() {
    let srv = Regent::start(&[]);
    assert_eq!(
        put_policy(
            &srv,
            "p",
            "package t\n\nallow if data.users[input.user].admin\n"
        )
        .status(),
        200
    );
    let ask = || json(srv.post_json("/v1/data/t/allow", &json!({"input": {"user": "bob"}})));
    assert_eq!(ask(), (200, json!({})));
    assert_eq!(
        put(&srv, "/v1/data/users/bob", r#"{"admin": true}"#)
            .status()
            .as_u16(),
        204
    );
    assert_eq!(ask(), (200, json!({"result": true})));
    assert_eq!(
        patch(
            &srv,
            "/v1/data/users/bob",
            r#"[{"op": "replace", "path": "/admin", "value": false}]"#
        )
        .status()
        .as_u16(),
        204
    );
    assert_eq!(ask(), (200, json!({})));
}

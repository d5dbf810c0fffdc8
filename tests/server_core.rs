//! End-to-end tests of the behaviour every route shares: pretty printing, per-request metrics,
//! provenance, request bodies (gzip, YAML, limits, hostile nesting), method and path edge cases,
//! evaluation errors, v0 undefined answers, `regent version` and `--v0-compatible`.

use crate::common;

use std::io::Write;

use common::{json, Regent};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;

const POLICY: &str = "package test\n\nimport input.req1\n\ngt1 if req1 > 1\n\nconflict = 1 if input.a\n\nconflict = 2 if input.b\n\ndefault div := false\n\ndiv if 1 / input.zero\n\nnever if false\n\necho := input\n\nmarshal := json.marshal(input)\n\nwalked := [p | walk(input, [p, _])]\n";

fn server(extra: &[&str]) -> (Regent, tempfile::TempDir) {
    let dir = common::tree(&[
        ("policy.rego", POLICY),
        ("main.rego", "package system\n\nmain := data.test.gt1\n"),
        ("data.json", r#"{"users": {"bob": {"admin": true}}}"#),
    ]);
    let mut args = vec![dir.path().to_str().unwrap().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Regent::start(&args), dir)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn nested_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn pretty_metrics_and_provenance() {
    let (srv, _dir) = server(&[]);
    let text = srv.get("/v1/data/users?pretty").text().unwrap();
    assert_eq!(
        text,
        "{\n  \"result\": {\n    \"bob\": {\n      \"admin\": true\n    }\n  }\n}\n"
    );
    assert_eq!(
        srv.get("/v1/data/users").text().unwrap(),
        "{\"result\":{\"bob\":{\"admin\":true}}}\n"
    );

    let (code, body) = json(srv.get("/v1/data/test/gt1?metrics&input=%7B%22req1%22%3A2%7D"));
    assert_eq!(code, 200);
    assert_eq!(body["result"], true);
    for key in [
        "timer_server_handler_ns",
        "timer_rego_input_parse_ns",
        "timer_rego_query_eval_ns",
    ] {
        assert!(body["metrics"][key].is_u64(), "{key}: {body}");
    }
    let (_, body) = json(srv.post_json(
        "/v1/data/test/gt1?metrics=true",
        &json!({"input": {"req1": 2}}),
    ));
    assert!(
        body["metrics"]["timer_rego_input_parse_ns"].is_u64(),
        "{body}"
    );
    // Any other value of the flag is false, as in OPA.
    let (_, body) = json(srv.get("/v1/data/users?metrics=1"));
    assert!(body.get("metrics").is_none());

    let (_, body) = json(srv.get("/v1/data/users?provenance"));
    let prov = body["provenance"].as_object().unwrap();
    assert_eq!(prov["version"], env!("CARGO_PKG_VERSION"));
    for key in ["build_commit", "build_timestamp", "build_hostname"] {
        assert!(prov.contains_key(key), "{key}");
    }
    assert!(!prov.contains_key("bundles"));
}

#[test]
fn gzip_bodies_only_where_opa_accepts_them() {
    let (srv, _dir) = server(&[]);
    let body = gzip(br#"{"input": {"req1": 2}}"#);
    let resp = srv
        .client
        .post(srv.url("/v1/data/test/gt1"))
        .header("Content-Encoding", "gzip")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(json(resp), (200, json!({"result": true})));
    let resp = srv
        .client
        .post(srv.url("/v0/data/test/gt1"))
        .header("Content-Encoding", "gzip")
        .body(gzip(br#"{"req1": 2}"#))
        .send()
        .unwrap();
    assert_eq!(resp.text().unwrap(), "true\n");
    // PUT /v1/data reads its body raw: the gzip bytes are not JSON.
    let resp = srv
        .client
        .put(srv.url("/v1/data/x"))
        .header("Content-Encoding", "gzip")
        .body(gzip(b"1"))
        .send()
        .unwrap();
    let (code, body) = json(resp);
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
}

#[test]
fn yaml_bodies() {
    let (srv, _dir) = server(&[]);
    let post = |path: &str, body: &str| {
        srv.client
            .post(srv.url(path))
            .header("Content-Type", "application/x-yaml")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    assert_eq!(
        json(post("/v1/data/test/gt1", "---\ninput:\n  req1: 2\n")),
        (200, json!({"result": true}))
    );
    assert_eq!(
        post("/v0/data/test/gt1", "req1: 2\n").text().unwrap(),
        "true\n"
    );
    assert_eq!(post("/", "req1: 2\n").text().unwrap(), "true\n");
    let (code, body) = json(post("/v1/data/test/gt1", "input: [unclosed\n"));
    assert_eq!(code, 400);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("body contains malformed input document: "));
}

#[test]
fn decoding_limits_for_declared_chunked_and_gzip_bodies() {
    let (srv, _dir) = server(&[
        "--set",
        "server.decoding.max_length=64",
        "--set",
        "server.decoding.gzip.max_length=128",
    ]);
    let big = format!(r#"{{"input": {{"pad": "{}"}}}}"#, "x".repeat(100));
    let too_large = json!({"code": "invalid_parameter", "message": "request body too large"});
    let resp = srv
        .client
        .post(srv.url("/v1/data/test"))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(json(resp), (400, too_large.clone()));
    // Chunked: no Content-Length, the limit applies while reading.
    let reader = std::io::Cursor::new(big.clone().into_bytes());
    let resp = srv
        .client
        .post(srv.url("/v1/data/test"))
        .body(reqwest::blocking::Body::new(reader))
        .send()
        .unwrap();
    assert_eq!(json(resp), (400, too_large.clone()));
    let resp = srv
        .client
        .put(srv.url("/v1/data/x"))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(json(resp), (400, too_large));
    // Small compressed, large inflated.
    let inflated = format!(r#"{{"input": {{"pad": "{}"}}}}"#, "x".repeat(500));
    let resp = srv
        .client
        .post(srv.url("/v1/data/test"))
        .header("Content-Encoding", "gzip")
        .body(gzip(inflated.as_bytes()))
        .send()
        .unwrap();
    assert_eq!(
        json(resp),
        (
            400,
            json!({"code": "invalid_parameter", "message": "compressed request body too large"})
        )
    );
    // Within both limits all is well.
    let resp = srv
        .client
        .post(srv.url("/v1/data/test/gt1"))
        .body(r#"{"input": {"req1": 2}}"#)
        .send()
        .unwrap();
    assert_eq!(json(resp), (200, json!({"result": true})));
}

#[test]
fn hostile_nesting_is_a_400_never_a_crash() {
    let (srv, _dir) = server(&[]);
    let deep = nested_array(10_000);
    let cases = [
        srv.client
            .post(srv.url("/v1/data/test"))
            .body(format!(r#"{{"input": {deep}}}"#)),
        srv.client.post(srv.url("/v0/data/test")).body(deep.clone()),
        srv.client.post(srv.url("/")).body(deep.clone()),
        srv.client.put(srv.url("/v1/data/deep")).body(deep.clone()),
        srv.client
            .post(srv.url("/v1/query"))
            .body(format!(r#"{{"query": "x := 1", "input": {deep}}}"#)),
        srv.client
            .post(srv.url("/v1/data/test"))
            .header("Content-Type", "application/yaml")
            .body(format!("input: {deep}\n")),
        srv.client.patch(srv.url("/v1/data")).body(format!(
            r#"[{{"op": "add", "path": "/d", "value": {deep}}}]"#
        )),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let (code, body) = json(req.send().unwrap());
        assert_eq!(code, 400, "case {i}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "case {i}");
    }
    let url =
        reqwest::Url::parse_with_params(&srv.url("/v1/data/test"), &[("input", &deep)]).unwrap();
    let (code, _) = json(srv.client.get(url).send().unwrap());
    assert_eq!(code, 400);
    // Deep Rego: the parser's nesting limit answers, not the stack.
    let rego = format!("package deep\n\nx := {deep}\n");
    let (code, body) = json(
        srv.client
            .put(srv.url("/v1/policies/deep"))
            .body(rego)
            .send()
            .unwrap(),
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let url =
        reqwest::Url::parse_with_params(&srv.url("/v1/query"), &[("q", format!("x := {deep}"))])
            .unwrap();
    let (code, body) = json(srv.client.get(url).send().unwrap());
    assert_eq!(
        (code, body["message"].as_str()),
        (400, Some("error(s) occurred while parsing query"))
    );
    // Deep but within JSON decoding's limit (120 levels): evaluated and answered.
    let deepest = nested_array(120);
    for rule in ["echo", "marshal", "walked"] {
        let resp = srv
            .client
            .post(srv.url(&format!("/v1/data/test/{rule}")))
            .body(format!(r#"{{"input": {deepest}}}"#))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{rule}");
    }
    // Still serving.
    assert_eq!(
        json(srv.get("/v1/data/users/bob/admin")),
        (200, json!({"result": true}))
    );
}

#[test]
fn methods_paths_and_redirects() {
    let (srv, _dir) = server(&[]);
    let c = &srv.client;
    for (method, path) in [
        ("HEAD", "/v1/data"),
        ("HEAD", "/v1/policies"),
        ("HEAD", "/"),
        ("DELETE", "/v1/data"),
        ("PUT", "/v0/data/x"),
        ("GET", "/v0/data/x"),
        ("POST", "/v1/policies"),
        ("POST", "/v1/policies/x"),
        ("PUT", "/v1/query"),
        ("GET", "/v1/query/x"),
        ("PATCH", "/v1/policies/x"),
    ] {
        let resp = c
            .request(method.parse().unwrap(), srv.url(path))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_eq!(resp.text().unwrap(), "", "{method} {path}");
    }
    let resp = c
        .put(srv.url("/v1/data/a/b/c/?x=1"))
        .body("1")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 301);
    assert_eq!(resp.headers()["location"], "/v1/data/a/b/c?x=1");
    let resp = srv.get("/v1/nothing");
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.text().unwrap(), "404 page not found\n");
}

#[test]
fn evaluation_errors_are_500_with_errors() {
    let (srv, _dir) = server(&[]);
    let (code, body) = json(srv.post_json(
        "/v1/data/test/conflict",
        &json!({"input": {"a": true, "b": true}}),
    ));
    assert_eq!(code, 500);
    assert_eq!(
        body,
        json!({
            "code": "internal_error",
            "message": "error(s) occurred while evaluating query",
            "errors": [{
                "code": "eval_conflict_error",
                "message": "complete rules must not produce multiple outputs",
                "location": {"file": srv_file(&_dir, "policy.rego"), "row": 9, "col": 1}
            }]
        })
    );
    // A builtin error is undefined by default (the default rule answers) and fatal when strict.
    let input = json!({"input": {"zero": 0}});
    assert_eq!(
        json(srv.post_json("/v1/data/test/div", &input)),
        (200, json!({"result": false}))
    );
    let (code, body) = json(srv.post_json("/v1/data/test/div?strict-builtin-errors", &input));
    assert_eq!(code, 500);
    assert_eq!(body["code"], "internal_error");
    assert_eq!(body["errors"][0]["location"]["row"], 13);
    let (code, _) =
        json(srv.get("/v1/data/test/div?strict-builtin-errors&input=%7B%22zero%22%3A0%7D"));
    assert_eq!(code, 500);
}

fn srv_file(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}

#[test]
fn v0_missing_versus_undefined() {
    let (srv, _dir) = server(&[]);
    let post = |path: &str| json(srv.client.post(srv.url(path)).body("{}").send().unwrap());
    assert_eq!(
        post("/v0/data/test/never"),
        (
            404,
            json!({"code": "undefined_document", "message": "document undefined: data.test.never"})
        )
    );
    assert_eq!(
        post("/v0/data/test/nothing"),
        (
            404,
            json!({"code": "undefined_document", "message": "document missing: data.test.nothing"})
        )
    );
    assert_eq!(
        post("/v0/data/users/0/x-y"),
        (
            404,
            json!({"code": "undefined_document", "message": "document missing: data.users[0][\"x-y\"]"})
        )
    );
    let resp = srv
        .client
        .post(srv.url("/v0/data/test/gt1"))
        .body("{nope")
        .send()
        .unwrap();
    let (code, body) = json(resp);
    assert_eq!(code, 400);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("unexpected parse error for input: body contains malformed input document"));
    // POST / answers the default decision, undefined -> 404 "undefined".
    assert_eq!(
        srv.client
            .post(srv.url("/"))
            .body(r#"{"req1": 5}"#)
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "true\n"
    );
    let (code, body) = json(srv.client.post(srv.url("/")).body("{}").send().unwrap());
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("document undefined: data.system.main"))
    );
}

#[test]
fn version_command_prints_build_info() {
    let out = std::process::Command::new(common::binary())
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for line in [
        "Build Commit: ",
        "Build Timestamp: ",
        "Build Hostname: ",
        "Rego Engine: regorus",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[test]
fn v0_compatible_loads_v0_policy_files() {
    let dir = common::tree(&[(
        "old.rego",
        "package old\n\nallow { input.user == \"alice\" }\n\nnames[n] { n := input.names[_] }\n",
    )]);
    let path = dir.path().to_str().unwrap();
    let srv = Regent::start(&["--v0-compatible", path]);
    assert_eq!(
        json(srv.post_json("/v1/data/old/allow", &json!({"input": {"user": "alice"}}))),
        (200, json!({"result": true}))
    );
    assert_eq!(
        json(srv.post_json(
            "/v1/data/old/names",
            &json!({"input": {"names": ["a", "b"]}})
        )),
        (200, json!({"result": ["a", "b"]}))
    );
    // Queries follow the same syntax setting.
    let (code, _) = json(srv.get("/v1/query?q=x%20:=%201"));
    assert_eq!(code, 200);
    // Without the flag the v0 file does not load: the process exits with an error.
    let out = std::process::Command::new(common::binary())
        .args(["run", "--server", "--addr", "127.0.0.1:0", path])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rego_parse_error"));
}

//! End-to-end tests of the Data API read paths through the real binary.

use crate::common;

use common::{json, Regent};
use serde_json::json;

fn rbac() -> Regent {
    let dir = common::examples().join("rbac");
    Regent::start(&[dir.to_str().unwrap()])
}

#[test]
fn v1_post_decides_with_input() {
    let srv = rbac();
    let input = json!({"input": {"user": "bob", "action": "update", "object": "finance"}});
    let (code, body) = json(srv.post_json("/v1/data/rbac/allow", &input));
    assert_eq!((code, body), (200, json!({"result": true})));
    let input = json!({"input": {"user": "eve", "action": "update", "object": "finance"}});
    let (code, body) = json(srv.post_json("/v1/data/rbac/allow", &input));
    assert_eq!((code, body), (200, json!({"result": false})));
}

#[test]
fn undefined_is_200_without_result() {
    let srv = rbac();
    let (code, body) = json(srv.get("/v1/data/rbac/nothing_here"));
    assert_eq!((code, body), (200, json!({})));
}

#[test]
fn malformed_body_is_400_invalid_parameter() {
    let srv = rbac();
    let resp = srv
        .client
        .post(srv.url("/v1/data/rbac/allow"))
        .body("{not json")
        .send()
        .unwrap();
    let (code, body) = json(resp);
    assert_eq!(code, 400);
    assert_eq!(body["code"], "invalid_parameter");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("body contains malformed input document"));
}

#[test]
fn bench_cases_give_opas_answers() {
    let cases = common::bench_cases();
    assert!(
        cases.len() >= 4,
        "the project's own cases are in bench/cases"
    );
    for dir in cases {
        let case = dir.display().to_string();
        let mut args = vec![dir.join("policy.rego")];
        if dir.join("data.json").exists() {
            args.push(dir.join("data.json"));
        }
        let args: Vec<&str> = args.iter().map(|p| p.to_str().unwrap()).collect();
        let srv = Regent::start(&args);
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let inputs: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap())
                .unwrap();
        let path = spec["path"].as_str().unwrap();
        for (input, expected) in inputs.iter().zip(spec["expected"].as_array().unwrap()) {
            let (code, body) =
                json(srv.post_json(&format!("/v1/data/{path}"), &json!({"input": input})));
            assert_eq!(code, 200, "{case}");
            assert_eq!(&body["result"], expected, "{case}: input {input}");
        }
    }
}

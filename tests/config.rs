//! End-to-end tests of the configuration file: errors stop the process before it listens, and
//! `GET /v1/config` shows the active configuration without credentials.

use crate::common;

use std::process::Command;

use common::{json, Regent};
use serde_json::json;

/// Runs `regent run --server` expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(common::binary())
        .args(["run", "--server", "--addr", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run regent");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "regent started: {stderr}");
    assert!(
        !stderr.contains("Initializing server."),
        "listened before failing: {stderr}"
    );
    stderr
}

#[test]
fn config_errors_are_reported_together_with_key_paths() {
    let dir = common::tree(&[(
        "config.yaml",
        r#"
services:
  acme:
    url: https://acme.example
    credentials:
      bearer: {token: t}
      client_tls: {cert: c.pem, private_key: k.pem}
  plain:
    url: ftp://nope
bundles:
  authz:
    service: acme
    polling: {min_delay_seconds: 10}
  other:
    service: missing
server:
  decoding:
    max_length: lots
"#,
    )]);
    let cfg = dir.path().join("config.yaml");
    let stderr = refused(&["--config-file", cfg.to_str().unwrap()], &[]);
    for expected in [
        "services.acme.credentials: a maximum one credential method must be specified",
        "services.plain.url: expected an http(s) URL",
        "bundles.authz: invalid configuration for bundle \"authz\": polling configuration missing 'max_delay_seconds'",
        "bundles.other: invalid configuration for bundle \"other\": service name \"missing\" not found",
        "server.decoding.max_length: expected a non-negative integer",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn set_overrides_are_validated_too() {
    let stderr = refused(
        &[
            "--set",
            "services.s.url=http://s",
            "--set",
            "bundles.b.polling.max_delay_seconds=5",
            "--set",
            "bundles.b.polling.min_delay_seconds=9",
        ],
        &[],
    );
    assert!(
        stderr.contains("bundles.b: invalid configuration for bundle \"b\": max polling delay must be >= min polling delay"),
        "{stderr}"
    );
}

#[test]
fn unreadable_client_files_stop_the_process() {
    let stderr = refused(
        &[
            "--set",
            "services.s.url=https://s",
            "--set",
            "services.s.tls.ca_cert=/nonexistent/ca.pem",
        ],
        &[],
    );
    assert!(
        stderr.contains("services.s.tls.ca_cert: /nonexistent/ca.pem"),
        "{stderr}"
    );
}

#[test]
fn v1_config_strips_credentials_and_injects_labels() {
    let dir = common::tree(&[(
        "config.yaml",
        r#"
labels:
  region: ${REGENT_TEST_REGION}
services:
  - name: acme
    url: http://127.0.0.1:9/
    credentials:
      bearer:
        token: ${REGENT_TEST_SECRET}
  - name: other
    url: http://127.0.0.1:9
    credentials:
      oauth2: {token_url: "http://127.0.0.1:9/t", client_id: id, client_secret: hush}
keys:
  signer: {algorithm: RS256, key: public-part, private_key: private-part}
"#,
    )]);
    let cfg = dir.path().join("config.yaml");
    let srv = Regent::start_with(
        &[
            "--config-file",
            cfg.to_str().unwrap(),
            "--set",
            "default_decision=policy/allow",
        ],
        &[
            ("REGENT_TEST_REGION", "eu-west"),
            ("REGENT_TEST_SECRET", "s3cr3t-token"),
        ],
        0,
    );
    let resp = srv.get("/v1/config");
    let (code, body) = json(resp);
    assert_eq!(code, 200);
    let result = &body["result"];
    let text = result.to_string();
    assert!(!text.contains("s3cr3t-token"), "{text}");
    assert!(!text.contains("hush"), "{text}");
    assert!(!text.contains("private-part"), "{text}");
    assert!(!text.contains("public-part"), "{text}");
    assert_eq!(
        result["services"],
        json!([
            {"name": "acme", "url": "http://127.0.0.1:9/"},
            {"name": "other", "url": "http://127.0.0.1:9"},
        ])
    );
    assert_eq!(result["keys"], json!({"signer": {"algorithm": "RS256"}}));
    assert_eq!(result["labels"]["region"], "eu-west");
    assert_eq!(result["labels"]["version"], env!("CARGO_PKG_VERSION"));
    let id = result["labels"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(result["default_decision"], "policy/allow");
    assert_eq!(
        result["default_authorization_decision"],
        "/system/authz/allow"
    );

    // The instance id is fixed for the process and differs between processes.
    let (_, again) = json(srv.get("/v1/config?pretty"));
    assert_eq!(again["result"]["labels"]["id"], id.as_str());
    let other = Regent::start(&[]);
    let (_, theirs) = json(other.get("/v1/config"));
    assert_ne!(theirs["result"]["labels"]["id"], id.as_str());
    assert_eq!(
        theirs["result"]["default_decision"], "/system/main",
        "{theirs}"
    );
}

#[test]
fn unsupported_keys_are_named_at_start() {
    let srv = Regent::start(&["--set", "decision_logs.console=true"]);
    let logs = srv.log_lines().join("\n");
    assert!(
        logs.contains("configuration key \\\"decision_logs\\\" is not supported by regent yet"),
        "{logs}"
    );
    let stderr = refused(&["--set", "discovery.resource=x"], &[]);
    assert!(
        stderr.contains("discovery: discovery is not supported by regent yet"),
        "{stderr}"
    );
}

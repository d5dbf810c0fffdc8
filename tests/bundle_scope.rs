//! REST writes under a bundle's roots are refused with OPA's messages.
//!
//! Driven in-process through `server::router`: until the bundle plugin lands there is no way to
//! activate a bundle through the binary, so the store starts from a draft that carries bundles
//! the way an activation records them (`BundleInfo.roots`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value as Json};
use tower::ServiceExt;

use regent::config::Config;
use regent::engine::{BundleInfo, Draft, Policy, Snapshot, Store};
use regent::plugins::bundle::BundleStatusBoard;
use regent::plugins::PluginManager;
use regent::server::{self, AppState};
use regent::telemetry::Telemetry;

fn state(bundles: &[(&str, &[&str])]) -> Arc<AppState> {
    let mut draft = Draft {
        data: json!({}),
        ..Draft::default()
    };
    for (name, roots) in bundles {
        draft.bundles.insert(
            name.to_string(),
            BundleInfo {
                revision: "AAAAA".into(),
                roots: roots.iter().map(|r| r.to_string()).collect(),
                ..BundleInfo::default()
            },
        );
    }
    draft.policies.insert(
        "someid".into(),
        Policy {
            raw: "package x.y.z\n".into(),
            rego_v1: true,
        },
    );
    let config = Arc::new(Config::default());
    AppState::new(
        Arc::new(Store::new(Snapshot::build(draft).unwrap())),
        Arc::new(PluginManager::new()),
        Arc::new(BundleStatusBoard::default()),
        Arc::new(Telemetry::new(&config)),
        config,
    )
}

async fn call(state: &Arc<AppState>, method: Method, path: &str, body: &str) -> (u16, Json) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = server::router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Json::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

fn owned(path: &str, bundle: &str) -> (u16, Json) {
    (
        400,
        json!({"code": "invalid_parameter", "message": format!("path {path} is owned by bundle \"{bundle}\"")}),
    )
}

#[tokio::test]
async fn data_and_policy_writes_under_roots_are_refused() {
    let s = state(&[("test-bundle", &["a/b/c", "x/y", "foobar"])]);
    assert_eq!(
        call(&s, Method::PUT, "/v1/data/a/b", "1").await,
        owned("a/b", "test-bundle")
    );
    assert_eq!(
        call(&s, Method::PUT, "/v1/data/a/b/c", "1").await,
        owned("a/b/c", "test-bundle")
    );
    assert_eq!(
        call(&s, Method::PUT, "/v1/data/a/b/c/d", "1").await,
        owned("a/b/c/d", "test-bundle")
    );
    assert_eq!(call(&s, Method::PUT, "/v1/data/a/b/d", "1").await.0, 204);
    assert_eq!(
        call(
            &s,
            Method::PATCH,
            "/v1/data/a",
            r#"[{"path": "/b/c", "op": "add", "value": 1}]"#
        )
        .await,
        owned("a/b/c", "test-bundle")
    );
    assert_eq!(
        call(&s, Method::DELETE, "/v1/data/a", "").await,
        owned("a", "test-bundle")
    );
    assert_eq!(
        call(&s, Method::PUT, "/v1/policies/test1", "package a.b").await,
        owned("a/b", "test-bundle")
    );
    // The existing module's package is checked too, whatever the new text says.
    assert_eq!(
        call(&s, Method::PUT, "/v1/policies/someid", "package other.path").await,
        owned("x/y/z", "test-bundle")
    );
    assert_eq!(
        call(&s, Method::DELETE, "/v1/policies/someid", "").await,
        owned("x/y/z", "test-bundle")
    );
    assert_eq!(call(&s, Method::PUT, "/v1/data/foo/bar", "1").await.0, 204);
    assert_eq!(call(&s, Method::PUT, "/v1/data/foo", "1").await.0, 204);
    assert_eq!(
        call(&s, Method::PUT, "/v1/data", r#"{"a": "b"}"#).await,
        (
            400,
            json!({"code": "invalid_parameter", "message": "can't write to document root with bundle roots configured"})
        )
    );
    // Refused writes changed nothing; accepted ones are visible.
    assert_eq!(
        call(&s, Method::GET, "/v1/data", "").await,
        (
            200,
            json!({"result": {"a": {"b": {"d": 1}}, "foo": 1, "x": {"y": {"z": {}}}}})
        )
    );
}

#[tokio::test]
async fn several_bundles_and_bundles_without_roots() {
    let s = state(&[
        ("test-bundle1", &["a/b/c", "x/y"]),
        ("test-bundle2", &["a/b/d"]),
    ]);
    assert_eq!(
        call(&s, Method::PUT, "/v1/data/x/y", "1").await,
        owned("x/y", "test-bundle1")
    );
    assert_eq!(
        call(&s, Method::PUT, "/v1/data/a/b/d", "1").await,
        owned("a/b/d", "test-bundle2")
    );
    assert_eq!(call(&s, Method::PUT, "/v1/data/foo/bar", "1").await.0, 204);

    let all = json!({"code": "invalid_parameter", "message": "all paths owned by bundle \"test-bundle\""});
    for roots in [&[][..], &["", "does/not/matter"][..]] {
        let s = state(&[("test-bundle", roots)]);
        assert_eq!(
            call(&s, Method::PUT, "/v1/data/a/b", "1").await,
            (400, all.clone())
        );
    }
}

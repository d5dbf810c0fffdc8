//! End-to-end tests of the status plugin: pushes to an in-test receiver (path, headers, payload),
//! `GET /v1/status`, console logs, the status Prometheus series, retry after an outage, and the
//! skip_unchanged/heartbeat extras.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use common::{json, Regent};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    requests: Mutex<Vec<Received>>,
    /// Answer with this status instead of 200 when non-zero.
    fail_with: AtomicU16,
}

/// An HTTP receiver standing in for a control plane: records every request, can be told to fail,
/// and can be stopped and brought back on the same port.
struct Receiver {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    stop: Option<CancellationToken>,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut receiver = Receiver {
            runtime,
            addr,
            inbox: Arc::new(Inbox::default()),
            stop: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        async fn record(
            State(inbox): State<Arc<Inbox>>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let code = inbox.fail_with.load(Ordering::SeqCst);
            if code != 0 {
                return StatusCode::from_u16(code).unwrap();
            }
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            inbox.requests.lock().unwrap().push(Received {
                path: uri.path().to_string(),
                headers,
                body,
            });
            StatusCode::OK
        }
        let app = Router::new()
            .fallback(record)
            .with_state(self.inbox.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        self.runtime.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .unwrap();
        });
        self.stop = Some(stop);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener: connections are refused until [`Receiver::resume`].
    fn pause(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        // Wait until the port refuses connections.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(self.addr).is_ok() {
            assert!(Instant::now() < deadline, "receiver did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn resume(&mut self) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap();
        self.serve(listener);
    }

    fn fail_with(&self, code: u16) {
        self.inbox.fail_with.store(code, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Received> {
        self.inbox.requests.lock().unwrap().clone()
    }

    /// Waits until some request satisfies `check` and returns the newest such request.
    fn wait_for(&self, what: &str, check: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.requests().into_iter().rev().find(|r| check(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "receiver never got {what}; got {:#?}",
                self.requests().iter().map(|r| &r.body).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes `yaml` to a temporary config file and starts regent with it.
fn start_with_config(yaml: &str, extra: &[&str]) -> (Regent, tempfile::TempDir) {
    let dir = common::tree(&[("config.yaml", yaml)]);
    let path = dir.path().join("config.yaml");
    let mut args = vec!["--config-file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Regent::start(&args), dir)
}

fn plugin_state(body: &Value, plugin: &str) -> Option<String> {
    body["plugins"][plugin]["state"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn get_v1_status_disabled_is_500() {
    let srv = Regent::start(&[]);
    let (code, body) = json(srv.get("/v1/status"));
    assert_eq!(code, 500);
    assert_eq!(
        body,
        json!({"code": "internal_error", "message": "status plugin not enabled"})
    );
}

#[test]
fn get_v1_status_returns_the_latest_report() {
    let (srv, _dir) = start_with_config(
        "labels:\n  region: eu-west\nstatus:\n  console: true\n",
        &[],
    );
    let (code, body) = json(srv.get("/v1/status"));
    assert_eq!(code, 200, "{body}");
    let result = &body["result"];
    let labels = result["labels"].as_object().unwrap();
    assert_eq!(labels["region"], "eu-west");
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    let id = labels["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(plugin_state(result, "status").as_deref(), Some("OK"));
    assert!(result["metrics"]["prometheus"].is_object());
    assert!(
        result.get("bundles").is_none(),
        "no bundle plugin events yet"
    );
    assert!(result.get("decision_logs").is_none());

    // The id is fixed for the process.
    let (_, again) = json(srv.get("/v1/status?pretty"));
    assert_eq!(again["result"]["labels"]["id"], id);

    // console: true logs each update as OPA does.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = srv
            .log_lines()
            .into_iter()
            .find(|l| l.contains("\"Status Log\""))
        {
            break line;
        }
        assert!(Instant::now() < deadline, "no Status Log line");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(log["type"], "openpolicyagent.org/status");
    assert_eq!(log["level"], "INFO");
    let logged_labels: Value = serde_json::from_str(log["labels"].as_str().unwrap()).unwrap();
    assert_eq!(logged_labels["id"], id);
    let logged_plugins: Value = serde_json::from_str(log["plugins"].as_str().unwrap()).unwrap();
    assert_eq!(logged_plugins["status"]["state"], "OK");

    // Wrong methods are OPA's catch-all 405.
    let resp = srv.client.post(srv.url("/v1/status")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[test]
fn invalid_service_name_is_a_config_error() {
    let dir = common::tree(&[(
        "config.yaml",
        "services:\n  acme:\n    url: http://127.0.0.1:1\nstatus:\n  service: nope\n",
    )]);
    let out = std::process::Command::new(common::binary())
        .args(["run", "--server", "--addr", "127.0.0.1:0", "--config-file"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"invalid service name "nope" in status"#),
        "{stderr}"
    );
}

/// A config with one service pointing at `receiver` and the given `status:` block (indented).
fn service_config(receiver: &Receiver, status: &str) -> String {
    format!(
        "services:\n  acme:\n    url: {}/api/\n    headers:\n      X-Tenant: t1\n    \
         response_header_timeout_seconds: 2\n    credentials:\n      bearer:\n        token: s3cret\n\
         labels:\n  region: eu-west\nstatus:\n{status}",
        receiver.url()
    )
}

#[test]
fn pushes_opas_payload_to_the_status_path_with_service_headers_and_credentials() {
    let receiver = Receiver::start();
    let (srv, _dir) = start_with_config(&service_config(&receiver, "  service: acme\n"), &[]);
    let got = receiver.wait_for("the first update", |r| {
        plugin_state(&r.body, "status").as_deref() == Some("OK")
    });
    assert_eq!(got.path, "/api/status");
    let header = |name: &str| {
        got.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("authorization").as_deref(), Some("Bearer s3cret"));
    assert_eq!(header("x-tenant").as_deref(), Some("t1"));
    let agent = header("user-agent").unwrap();
    assert!(agent.contains(env!("CARGO_PKG_VERSION")), "{agent}");
    assert!(
        header("content-encoding").is_none(),
        "plain JSON, not gzipped"
    );

    let body = &got.body;
    let top: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["labels", "metrics", "plugins"], "{body}");
    assert_eq!(body["labels"]["region"], "eu-west");
    assert_eq!(body["labels"]["version"], env!("CARGO_PKG_VERSION"));
    let (_, status) = json(srv.get("/v1/status"));
    assert_eq!(body["labels"]["id"], status["result"]["labels"]["id"]);
    assert!(body["metrics"]["prometheus"].is_object());
}

#[test]
fn partition_name_is_appended_to_the_path() {
    let receiver = Receiver::start();
    let (_srv, _dir) = start_with_config(
        &service_config(&receiver, "  partition_name: team-a\n"),
        &[],
    );
    let got = receiver.wait_for("an update", |_| true);
    assert_eq!(got.path, "/api/status/team-a");
}

#[test]
fn prometheus_series_are_in_the_registry() {
    let (srv, _dir) = start_with_config("status:\n  prometheus: true\n", &[]);
    // The series change only when an update is built; the first one follows the plugin's OK.
    let deadline = Instant::now() + Duration::from_secs(10);
    let families = loop {
        let (_, body) = json(srv.get("/v1/status"));
        let families = body["result"]["metrics"]["prometheus"].clone();
        if families.get("plugin_status_gauge").is_some() {
            break families;
        }
        assert!(
            Instant::now() < deadline,
            "no plugin_status_gauge: {families}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        families["opa_info"],
        json!({
            "name": "opa_info",
            "help": "Information about the OPA environment.",
            "type": "GAUGE",
            "metric": [{"label": [{"name": "version", "value": env!("CARGO_PKG_VERSION")}], "gauge": {"value": 1.0}}],
        })
    );
    let gauge = &families["plugin_status_gauge"];
    assert_eq!(gauge["help"], "Gauge for the plugin by status.");
    assert!(gauge["metric"].as_array().unwrap().contains(&json!({
        "label": [{"name": "name", "value": "status"}, {"name": "status", "value": "OK"}],
        "gauge": {"value": 1.0},
    })));
}

#[test]
fn a_receiver_outage_is_retried_until_the_current_status_arrives() {
    let mut receiver = Receiver::start();
    receiver.pause();
    let (srv, _dir) = start_with_config(
        &service_config(
            &receiver,
            "  retry:\n    min_delay_seconds: 0.1\n    max_delay_seconds: 1\n",
        ),
        &[],
    );
    // Refused connections for a few seconds, then errors from a live receiver.
    std::thread::sleep(Duration::from_secs(3));
    receiver.resume();
    receiver.fail_with(503);
    std::thread::sleep(Duration::from_secs(2));
    assert!(receiver.requests().is_empty());
    let failures = srv
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("status update failed"))
        .collect::<Vec<_>>();
    assert!(
        failures
            .iter()
            .any(|l| l.contains("status update failed: ")),
        "refused connections are logged: {failures:#?}"
    );
    assert!(
        failures.iter().any(|l| l
            .contains("status update failed, server replied with HTTP 503 Service Unavailable")),
        "error statuses are logged as OPA does: {failures:#?}"
    );
    receiver.fail_with(0);
    let got = receiver.wait_for("the status after the outage", |r| {
        plugin_state(&r.body, "status").as_deref() == Some("OK")
    });
    let (_, current) = json(srv.get("/v1/status"));
    assert_eq!(got.body["plugins"], current["result"]["plugins"]);
    assert_eq!(got.body["labels"], current["result"]["labels"]);
    // Only the newest report is delivered once the receiver is back, not a backlog.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.requests().len(), 1, "{:#?}", receiver.requests());
}

#[test]
fn heartbeat_sends_unchanged_status_periodically() {
    let receiver = Receiver::start();
    let (_srv, _dir) = start_with_config(
        &service_config(
            &receiver,
            "  skip_unchanged: true\n  heartbeat_seconds: 0.5\n",
        ),
        &[],
    );
    receiver.wait_for("a first update", |_| true);
    std::thread::sleep(Duration::from_millis(2200));
    let got = receiver.requests();
    assert!(got.len() >= 3, "heartbeats: {}", got.len());
    assert!(got.len() <= 7, "heartbeats: {}", got.len());
    for r in &got {
        assert_eq!(plugin_state(&r.body, "status").as_deref(), Some("OK"));
    }
}

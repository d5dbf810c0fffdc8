//! End-to-end tests of the status plugin: pushes to an in-test receiver (path, headers, payload),
//! `GET /v1/status`, console logs, the status Prometheus series, retry after an outage, and the
//! skip_unchanged/heartbeat extras.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
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
    /// Hold each request this long before answering (a hung receiver).
    delay_ms: AtomicU64,
    /// Bundle files served to GET requests by path: status and body.
    files: Mutex<std::collections::HashMap<String, (u16, Vec<u8>)>>,
    /// Hold bundle downloads this long before answering.
    download_delay_ms: AtomicU64,
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
            method: axum::http::Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            if method == axum::http::Method::GET {
                let delay = inbox.download_delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let file = inbox.files.lock().unwrap().get(uri.path()).cloned();
                let (code, bytes) = file.unwrap_or((404, Vec::new()));
                return (StatusCode::from_u16(code).unwrap(), bytes).into_response();
            }
            record_push(inbox, uri, headers, body).await.into_response()
        }
        async fn record_push(
            inbox: Arc<Inbox>,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let delay = inbox.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                return StatusCode::OK;
            }
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

    /// Serves `body` with `code` to GET `path`.
    fn serve_file(&self, path: &str, code: u16, body: Vec<u8>) {
        self.inbox
            .files
            .lock()
            .unwrap()
            .insert(path.to_string(), (code, body));
    }

    fn hang_for(&self, delay: Duration) {
        self.inbox
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
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
    assert_eq!(log["level"], "info");
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

    // The same series on /metrics of the main and the diagnostic listener.
    let metrics = srv.get("/metrics").text().unwrap();
    assert!(metrics.contains(
        "# HELP opa_info Information about the OPA environment.\n# TYPE opa_info gauge\n"
    ));
    let opa_info = format!(r#"opa_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&metrics, &opa_info), Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"plugin_status_gauge{name="status",status="OK"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn status_series_are_absent_without_prometheus() {
    let (srv, _dir) = start_with_config("status:\n  console: true\n", &[]);
    let metrics = srv.get("/metrics").text().unwrap();
    assert!(metrics.contains("# HELP "), "{metrics}");
    assert!(!metrics.contains("opa_info"));
    assert!(!metrics.contains("plugin_status_gauge"));
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
    // Backoff from 0.1 s doubling to a 1 s cap over ~5 s: a handful of attempts, not a storm.
    assert!(
        (4..=20).contains(&failures.len()),
        "{} attempts: {failures:#?}",
        failures.len()
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
    std::thread::sleep(Duration::from_millis(2500));
    // About five heartbeats; bounds leave room for a loaded machine.
    let got = receiver.requests();
    assert!(got.len() >= 3, "heartbeats: {}", got.len());
    assert!(got.len() <= 8, "heartbeats: {}", got.len());
    for r in &got {
        assert_eq!(plugin_state(&r.body, "status").as_deref(), Some("OK"));
    }
}

/// regent's pieces wired in-process as `run` wires them, so a test can play the bundle plugin's
/// part on the status board and read `/metrics` from the real router. Beside the end-to-end test
/// with the real bundle plugin, this pins exact timestamps and exact series values, which real
/// downloads make unpredictable.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    state: Arc<regent::server::AppState>,
    plugin: Option<regent::plugins::status::StatusPlugin>,
    url: String,
}

impl InProcess {
    fn start(raw: Value) -> InProcess {
        use regent::plugins::status::{push::Sender, Deps, StatusPlugin};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = Arc::new(regent::config::Config::from_raw(raw).unwrap());
        let services = regent::rest::Services::build(&config).unwrap();
        let state = regent::server::AppState::new(
            Arc::new(regent::engine::Store::new(regent::engine::Snapshot::empty())),
            Arc::new(regent::plugins::PluginManager::new()),
            Arc::new(regent::plugins::bundle::BundleStatusBoard::default()),
            Arc::new(regent::telemetry::Telemetry::new(&config)),
            config.clone(),
        );
        let status = config.status.clone().unwrap();
        let sender = status
            .service
            .as_deref()
            .and_then(|s| services.get(s))
            .map(|c| c as Arc<dyn Sender>);
        let plugin = runtime.block_on(async {
            StatusPlugin::start(
                status,
                Deps {
                    manager: state.plugins.clone(),
                    bundles: state.bundles.clone(),
                    telemetry: state.telemetry.clone(),
                    labels: config.labels.clone(),
                    sender,
                },
            )
        });
        let _ = state.status.set(plugin.view());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = regent::server::router(state.clone());
        runtime.spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.unwrap();
        });
        InProcess {
            runtime,
            state,
            plugin: Some(plugin),
            url,
        }
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::get(format!("{}{}", self.url, path)).unwrap()
    }

    fn stop(&mut self) {
        let plugin = self.plugin.take().unwrap();
        self.runtime.block_on(plugin.stop(Duration::from_secs(5)));
    }
}

/// The value of one sample on `/metrics` (text format), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[test]
fn reports_a_bundles_life_in_opas_format() {
    use chrono::{DateTime, Utc};
    use regent::plugins::{PluginStatus, State};

    let receiver = Receiver::start();
    let mut regent = InProcess::start(json!({
        "services": {"acme": {"url": receiver.url()}},
        "labels": {"team": "payments"},
        "status": {"service": "acme", "prometheus": true},
    }));
    let id = regent.state.config.labels["id"].clone();
    let board = regent.state.bundles.clone();
    let manager = regent.state.plugins.clone();
    let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let expect = |what: &str, bundle: Value, bundle_state: &str| -> Received {
        let got = receiver.wait_for(what, |r| {
            r.body["bundles"]["authz"] == bundle
                && plugin_state(&r.body, "bundle").as_deref() == Some(bundle_state)
        });
        // The full payload, field by field, as OPA's UpdateRequestV1.
        let body = got.body.as_object().unwrap();
        let keys: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(keys, ["labels", "bundles", "metrics", "plugins"], "{what}");
        assert_eq!(
            body["labels"],
            json!({"id": id, "team": "payments", "version": env!("CARGO_PKG_VERSION")})
        );
        assert_eq!(
            body["plugins"],
            json!({"bundle": {"state": bundle_state}, "status": {"state": "OK"}})
        );
        assert_eq!(body["bundles"].as_object().unwrap().len(), 1);
        assert!(body["metrics"]["prometheus"]["opa_info"].is_object());
        got
    };

    // Not yet activated: registered, nothing downloaded.
    manager.register("bundle");
    board.update("authz", |_| {});
    expect(
        "a never-activated bundle",
        json!({
            "name": "authz",
            "last_request": ZERO_TIME,
            "last_successful_request": ZERO_TIME,
            "last_successful_download": ZERO_TIME,
            "last_successful_activation": ZERO_TIME,
        }),
        "NOT_READY",
    );

    // A failed download: the server answered 404.
    let t1 = Utc::now();
    board.update("authz", |s| {
        s.last_request = Some(t1);
        s.code = "bundle_error".into();
        s.message = "server replied with Not Found".into();
        s.http_code = Some(404);
    });
    expect(
        "a failed download",
        json!({
            "name": "authz",
            "last_request": rfc3339(t1),
            "last_successful_request": ZERO_TIME,
            "last_successful_download": ZERO_TIME,
            "last_successful_activation": ZERO_TIME,
            "code": "bundle_error",
            "message": "server replied with Not Found",
            "http_code": 404,
        }),
        "NOT_READY",
    );

    // Activated.
    let t2 = Utc::now();
    board.update("authz", |s| {
        s.clear_error();
        s.last_request = Some(t2);
        s.last_successful_request = Some(t2);
        s.last_successful_download = Some(t2);
        s.last_successful_activation = Some(t2);
        s.active_revision = "r1".into();
        s.kind = "snapshot".into();
        s.size = 321;
        s.metrics = [
            ("timer_bundle_request_ns".to_string(), 1_500u64),
            ("timer_rego_module_parse_ns".to_string(), 30_000),
        ]
        .into();
    });
    manager.update("bundle", PluginStatus::new(State::Ok));
    let activated = json!({
        "name": "authz",
        "active_revision": "r1",
        "last_request": rfc3339(t2),
        "last_successful_request": rfc3339(t2),
        "last_successful_download": rfc3339(t2),
        "last_successful_activation": rfc3339(t2),
        "metrics": {"timer_bundle_request_ns": 1500, "timer_rego_module_parse_ns": 30000},
        "type": "snapshot",
        "size": 321,
    });
    expect("an activated bundle", activated.clone(), "OK");

    // A new revision with bad Rego: downloaded, not activated, AST errors reported.
    let t3 = Utc::now();
    board.update("authz", |s| {
        s.last_request = Some(t3);
        s.last_successful_request = Some(t3);
        s.last_successful_download = Some(t3);
        s.code = "bundle_error".into();
        s.message = "error(s) occurred while compiling module(s)".into();
        s.errors = vec![regent::engine::RegoError {
            code: "rego_parse_error".into(),
            message: "unexpected eof token".into(),
            location: Some(regent::engine::error::Location {
                file: "authz/policy.rego".into(),
                row: 3,
                col: 1,
            }),
        }];
    });
    let mut broken = activated.clone();
    broken["last_request"] = json!(rfc3339(t3));
    broken["last_successful_request"] = json!(rfc3339(t3));
    broken["last_successful_download"] = json!(rfc3339(t3));
    broken["code"] = json!("bundle_error");
    broken["message"] = json!("error(s) occurred while compiling module(s)");
    broken["errors"] = json!([{
        "code": "rego_parse_error",
        "message": "unexpected eof token",
        "location": {"file": "authz/policy.rego", "row": 3, "col": 1},
    }]);
    expect("a bundle with bad Rego", broken, "OK");

    // Fixed: the next revision activates and the errors are gone.
    let t4 = Utc::now();
    board.update("authz", |s| {
        s.clear_error();
        s.last_request = Some(t4);
        s.last_successful_request = Some(t4);
        s.last_successful_download = Some(t4);
        s.last_successful_activation = Some(t4);
        s.active_revision = "r2".into();
    });
    let mut fixed = activated;
    for field in [
        "last_request",
        "last_successful_request",
        "last_successful_download",
        "last_successful_activation",
    ] {
        fixed[field] = json!(rfc3339(t4));
    }
    fixed["active_revision"] = json!("r2");
    let last = expect("the fixed bundle", fixed, "OK");
    assert_eq!(last.path, "/status");

    // GET /v1/status shows the same statuses.
    let (code, body) = json(regent.get("/v1/status"));
    assert_eq!(code, 200);
    assert_eq!(body["result"]["bundles"], last.body["bundles"]);
    assert_eq!(body["result"]["plugins"], last.body["plugins"]);

    // The status series on the real /metrics, with OPA's names (no _total) and quirks.
    let metrics = regent.get("/metrics").text().unwrap();
    for help in [
        "# HELP bundle_loaded_counter Counter for the bundle loaded.",
        "# TYPE bundle_loaded_counter counter",
        "# HELP bundle_failed_load_counter Counter for the failed bundle load.",
        "# TYPE bundle_failed_load_counter counter",
        "# HELP last_success_bundle_activation Gauge for the last success bundle activation.",
        "# HELP bundle_loading_duration_ns Histogram for the bundle loading duration by stage.",
        "# TYPE bundle_loading_duration_ns histogram",
        "# HELP plugin_status_gauge Gauge for the plugin by status.",
        "# HELP opa_info Information about the OPA environment.",
    ] {
        assert!(metrics.contains(help), "missing {help:?} in\n{metrics}");
    }
    assert!(!metrics.contains("bundle_loaded_counter_total"));
    let n = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(
        n(&format!(
            r#"opa_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(n(r#"plugin_status_gauge{name="bundle",status="OK"}"#), 1.0);
    assert!(sample(
        &metrics,
        r#"plugin_status_gauge{name="bundle",status="NOT_READY"}"#
    )
    .is_none());
    // Counters count updates: at least one per stage that was reported.
    assert!(n(r#"bundle_loaded_counter{name="authz"}"#) >= 2.0);
    assert!(n(r#"bundle_failed_load_counter{code="",message="",name="authz"}"#) >= 1.0);
    assert!(
        n(
            r#"bundle_failed_load_counter{code="bundle_error",message="server replied with Not Found",name="authz"}"#
        ) >= 1.0
    );
    assert!(
        n(
            r#"bundle_failed_load_counter{code="bundle_error",message="error(s) occurred while compiling module(s)",name="authz"}"#
        ) >= 1.0
    );
    let t4_ns = t4.timestamp_nanos_opt().unwrap() as f64;
    assert_eq!(
        n(r#"last_success_bundle_activation{active_revision="r2",name="authz"}"#),
        t4_ns
    );
    assert!(
        sample(
            &metrics,
            r#"last_success_bundle_activation{active_revision="r1",name="authz"}"#
        )
        .is_none(),
        "old revisions disappear"
    );
    assert_eq!(n(r#"last_bundle_request{name="authz"}"#), t4_ns);
    assert_eq!(n(r#"last_success_bundle_download{name="authz"}"#), t4_ns);
    assert_eq!(n(r#"last_success_bundle_request{name="authz"}"#), t4_ns);
    assert!(
        n(r#"bundle_loading_duration_ns_count{name="authz",stage="timer_bundle_request_ns"}"#)
            >= 3.0
    );
    assert!(
        n(
            r#"bundle_loading_duration_ns_bucket{name="authz",stage="timer_bundle_request_ns",le="1000"}"#
        ) == 0.0
    );
    assert!(
        n(
            r#"bundle_loading_duration_ns_bucket{name="authz",stage="timer_bundle_request_ns",le="2000"}"#
        ) >= 3.0
    );
    assert!(
        metrics.contains(r#"le="5.24288e+08""#),
        "OPA's default buckets"
    );

    regent.stop();
    assert_eq!(manager.status("status").unwrap().state, State::NotReady);
}

#[test]
fn skip_unchanged_skips_polls_that_change_only_timestamps() {
    use chrono::Utc;
    let receiver = Receiver::start();
    let regent = InProcess::start(json!({
        "services": {"acme": {"url": receiver.url()}},
        "status": {"skip_unchanged": true},
    }));
    let board = regent.state.bundles.clone();
    board.update("authz", |s| {
        s.active_revision = "r1".into();
        s.last_successful_activation = Some(Utc::now());
    });
    receiver.wait_for("the activation", |r| {
        r.body["bundles"]["authz"]["active_revision"] == "r1"
    });
    let before = receiver.requests().len();
    // Ten 304 polls: only timestamps and timers change.
    for i in 0..10 {
        board.update("authz", |s| {
            s.last_request = Some(Utc::now());
            s.last_successful_request = s.last_request;
            s.metrics = [("timer_bundle_request_ns".to_string(), 1000 + i)].into();
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        receiver.requests().len(),
        before,
        "unchanged polls are not sent"
    );
    // A real change is.
    board.update("authz", |s| s.active_revision = "r2".into());
    receiver.wait_for("the new revision", |r| {
        r.body["bundles"]["authz"]["active_revision"] == "r2"
    });
    assert_eq!(receiver.requests().len(), before + 1);
}

#[test]
fn a_hung_receiver_times_out_and_is_retried_without_blocking_requests() {
    let receiver = Receiver::start();
    receiver.hang_for(Duration::from_secs(5));
    let (srv, _dir) = start_with_config(
        &service_config(
            &receiver,
            "  retry:\n    min_delay_seconds: 0.1\n    max_delay_seconds: 0.5\n",
        ),
        &[],
    );
    // The push waits for the 2 s response header timeout; requests are served meanwhile.
    let started = Instant::now();
    let (code, _) = json(srv.get("/v1/status"));
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv
        .log_lines()
        .iter()
        .any(|l| l.contains("status update failed: request failed: timeout"))
    {
        assert!(Instant::now() < deadline, "{:#?}", srv.log_lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    receiver.hang_for(Duration::ZERO);
    receiver.wait_for("the status after the timeouts", |r| {
        plugin_state(&r.body, "status").as_deref() == Some("OK")
    });
}

#[test]
fn an_undelivered_report_is_flushed_on_shutdown() {
    let receiver = Receiver::start();
    receiver.fail_with(500);
    // After the first failure the next retry is 10-20 s away: only the shutdown flush can
    // deliver within the test.
    let (srv, _dir) = start_with_config(
        &service_config(
            &receiver,
            "  retry:\n    min_delay_seconds: 20\n    max_delay_seconds: 20\n",
        ),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv
        .log_lines()
        .iter()
        .any(|l| l.contains("server replied with HTTP 500 Internal Server Error"))
    {
        assert!(Instant::now() < deadline, "{:#?}", srv.log_lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    receiver.fail_with(0);
    let started = Instant::now();
    let logs = srv.logs.clone();
    let exit = srv.terminate();
    assert!(exit.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(plugin_state(&got[0].body, "status").as_deref(), Some("OK"));
    let logs = logs.lock().unwrap().join("\n");
    assert!(logs.contains("Stopping status reporter."), "{logs}");
}

/// A gzipped tar bundle with `files` (path, contents).
fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, text.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn authz_bundle(revision: &str, rego: &str) -> Vec<u8> {
    tarball(&[
        (
            ".manifest",
            &format!(r#"{{"revision": "{revision}", "roots": ["authz"]}}"#),
        ),
        ("authz/policy.rego", rego),
    ])
}

const GOOD_REGO: &str = "package authz\n\nallow if input.user == \"alice\"\n";
const BAD_REGO: &str = "package authz\n\nallow if {\n";

#[test]
fn reports_a_real_bundles_life_in_opas_format() {
    let receiver = Receiver::start();
    // The first download is held so the first report shows the bundle before any attempt.
    receiver
        .inbox
        .download_delay_ms
        .store(1500, Ordering::SeqCst);
    let config = format!(
        "services:\n  acme:\n    url: {}\n    response_header_timeout_seconds: 5\n\
         labels:\n  team: payments\n\
         bundles:\n  authz:\n    service: acme\n    resource: bundles/authz.tar.gz\n    \
         polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 1\n\
         status:\n  service: acme\n  prometheus: true\n",
        receiver.url()
    );
    let (srv, _dir) = start_with_config(&config, &[]);
    let (_, status) = json(srv.get("/v1/status"));
    let id = status["result"]["labels"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let expect = |what: &str, check: &dyn Fn(&Value) -> bool, bundle_state: &str| -> Value {
        let got = receiver.wait_for(what, |r| {
            r.path == "/status"
                && check(&r.body["bundles"]["authz"])
                && plugin_state(&r.body, "bundle").as_deref() == Some(bundle_state)
        });
        let body = got.body.as_object().unwrap();
        let keys: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(keys, ["labels", "bundles", "metrics", "plugins"], "{what}");
        assert_eq!(
            body["labels"],
            json!({"id": id, "team": "payments", "version": env!("CARGO_PKG_VERSION")})
        );
        assert_eq!(
            body["plugins"],
            json!({"bundle": {"state": bundle_state}, "status": {"state": "OK"}}),
            "{what}"
        );
        assert!(body["metrics"]["prometheus"]["opa_info"].is_object());
        body["bundles"]["authz"].clone()
    };
    let is_time = |v: &Value| {
        v.as_str()
            .is_some_and(|t| t != ZERO_TIME && chrono::DateTime::parse_from_rfc3339(t).is_ok())
    };

    let never = expect(
        "a never-activated bundle",
        &|b| b["last_request"] == ZERO_TIME,
        "NOT_READY",
    );
    assert_eq!(
        never,
        json!({
            "name": "authz",
            "last_request": ZERO_TIME,
            "last_successful_request": ZERO_TIME,
            "last_successful_download": ZERO_TIME,
            "last_successful_activation": ZERO_TIME,
        })
    );
    receiver.inbox.download_delay_ms.store(0, Ordering::SeqCst);

    let failed = expect("a failed download", &|b| b["http_code"] == 404, "NOT_READY");
    assert_eq!(failed["code"], "bundle_error");
    assert_eq!(failed["message"], "server replied with Not Found");
    assert!(is_time(&failed["last_request"]), "{failed}");
    assert_eq!(failed["last_successful_activation"], ZERO_TIME);
    assert!(failed.get("active_revision").is_none());

    let r1 = authz_bundle("r1", GOOD_REGO);
    let r1_size = r1.len();
    receiver.serve_file("/bundles/authz.tar.gz", 200, r1);
    let activated = expect(
        "an activated bundle",
        &|b| b["active_revision"] == "r1",
        "OK",
    );
    for field in [
        "last_request",
        "last_successful_request",
        "last_successful_download",
        "last_successful_activation",
    ] {
        assert!(is_time(&activated[field]), "{field}: {activated}");
    }
    assert_eq!(activated["type"], "snapshot");
    assert_eq!(activated["size"], r1_size);
    assert!(activated.get("code").is_none() && activated.get("errors").is_none());
    assert!(
        activated["metrics"]["timer_bundle_request_ns"]
            .as_u64()
            .is_some(),
        "{activated}"
    );

    receiver.serve_file("/bundles/authz.tar.gz", 200, authz_bundle("r2", BAD_REGO));
    let broken = expect(
        "a bundle with bad Rego",
        &|b| b["message"] == "error(s) occurred while compiling module(s)",
        "OK",
    );
    assert_eq!(broken["code"], "bundle_error");
    assert_eq!(
        broken["active_revision"], "r1",
        "the old revision stays active"
    );
    assert_eq!(
        broken["last_successful_activation"],
        activated["last_successful_activation"]
    );
    let errors = broken["errors"].as_array().unwrap();
    assert!(!errors.is_empty());
    assert!(
        errors[0]["code"].as_str().unwrap().starts_with("rego_"),
        "{broken}"
    );
    assert!(broken.get("http_code").is_none());

    receiver.serve_file("/bundles/authz.tar.gz", 200, authz_bundle("r3", GOOD_REGO));
    let fixed = expect("the fixed bundle", &|b| b["active_revision"] == "r3", "OK");
    assert!(
        fixed.get("code").is_none() && fixed.get("errors").is_none(),
        "{fixed}"
    );
    assert!(fixed.get("message").is_none());

    // The status series on /metrics, as OPA exposes them.
    let metrics = srv.get("/metrics").text().unwrap();
    let n = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(n(r#"bundle_loaded_counter{name="authz"}"#) >= 1.0);
    assert!(n(r#"bundle_failed_load_counter{code="",message="",name="authz"}"#) >= 1.0);
    assert!(
        n(
            r#"bundle_failed_load_counter{code="bundle_error",message="server replied with Not Found",name="authz"}"#
        ) >= 1.0
    );
    assert!(
        n(
            r#"bundle_failed_load_counter{code="bundle_error",message="error(s) occurred while compiling module(s)",name="authz"}"#
        ) >= 1.0
    );
    assert!(n(r#"last_success_bundle_activation{active_revision="r3",name="authz"}"#) > 0.0);
    assert_eq!(n(r#"plugin_status_gauge{name="bundle",status="OK"}"#), 1.0);
    assert!(
        n(r#"bundle_loading_duration_ns_count{name="authz",stage="timer_bundle_request_ns"}"#)
            >= 1.0
    );
}

#[test]
fn skip_unchanged_skips_real_polls_of_an_unchanged_bundle() {
    let receiver = Receiver::start();
    receiver.serve_file("/bundles/authz.tar.gz", 200, authz_bundle("r1", GOOD_REGO));
    let config = format!(
        "services:\n  acme:\n    url: {}\n\
         bundles:\n  authz:\n    service: acme\n    resource: bundles/authz.tar.gz\n    \
         polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 1\n\
         status:\n  service: acme\n  skip_unchanged: true\n",
        receiver.url()
    );
    let (srv, _dir) = start_with_config(&config, &[]);
    receiver.wait_for("the activation", |r| {
        r.body["bundles"]["authz"]["active_revision"] == "r1"
            && plugin_state(&r.body, "bundle").as_deref() == Some("OK")
    });
    let before = receiver.requests().len();
    let (_, first) = json(srv.get("/v1/status"));
    // Three more polls of the same bundle: only timestamps and timers change.
    std::thread::sleep(Duration::from_millis(3500));
    let (_, later) = json(srv.get("/v1/status"));
    assert_ne!(
        first["result"]["bundles"]["authz"]["last_request"],
        later["result"]["bundles"]["authz"]["last_request"],
        "the bundle was polled meanwhile"
    );
    assert_eq!(
        receiver.requests().len(),
        before,
        "unchanged polls are not pushed"
    );
    receiver.serve_file("/bundles/authz.tar.gz", 200, authz_bundle("r2", GOOD_REGO));
    receiver.wait_for("the new revision", |r| {
        r.body["bundles"]["authz"]["active_revision"] == "r2"
    });
}

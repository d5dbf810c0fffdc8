//! End-to-end tests of the Health API: `GET /health` (every parameter against every plugin and
//! bundle state), `GET /health/<path>` policies, regent's failure details and staleness options,
//! and /health on the diagnostic listener staying fast while the main listener is saturated.
//!
//! State combinations are driven in-process: `regent::server::router` served on a real loopback
//! listener, with the test holding the plugin manager and bundle status board as a plugin would.
//! Cases without plugins, the diagnostic listener, the load test and the real bundle plugin
//! (against an in-test bundle server) use the real binary.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{json, Client, Regent};
use serde_json::{json, Value as Json};

use regent::config::Config;
use regent::engine::{Draft, Policy, RegoError, Snapshot, Store};
use regent::plugins::bundle::BundleStatusBoard;
use regent::plugins::manager::PluginHandle;
use regent::plugins::{PluginManager, PluginStatus, State};
use regent::server::AppState;
use regent::telemetry::Telemetry;

/// A server running in this process, whose plugin and bundle states the test sets.
struct InProcess {
    url: String,
    plugins: Arc<PluginManager>,
    bundles: Arc<BundleStatusBoard>,
    client: Client,
    _runtime: tokio::runtime::Runtime,
}

impl InProcess {
    fn start(policies: &[&str], config: Json) -> InProcess {
        let mut draft = Draft {
            data: json!({}),
            ..Draft::default()
        };
        for (i, rego) in policies.iter().enumerate() {
            draft.policies.insert(
                format!("p{i}.rego"),
                Policy {
                    raw: rego.to_string(),
                    rego_v1: true,
                },
            );
        }
        let store = Arc::new(Store::new(Snapshot::build(draft).unwrap()));
        let config = Arc::new(Config::from_raw(config).unwrap());
        let plugins = Arc::new(PluginManager::new());
        let bundles = Arc::new(BundleStatusBoard::default());
        let telemetry = Arc::new(Telemetry::new(&config));
        let state = AppState::new(store, plugins.clone(), bundles.clone(), telemetry, config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let service =
                regent::server::router(state).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.unwrap();
        });
        InProcess {
            url,
            plugins,
            bundles,
            client: client(),
            _runtime: runtime,
        }
    }

    fn plain() -> InProcess {
        InProcess::start(&[], json!({}))
    }

    fn plugin(&self, name: &str) -> PluginHandle {
        self.plugins.register_plugin(name)
    }

    /// Status code, raw body text and content type.
    fn raw(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap();
        let code = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (code, resp.text().unwrap(), ctype)
    }

    fn get(&self, path: &str) -> (u16, Json) {
        let (code, text, _) = self.raw(path);
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (code, body)
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const BUNDLES_NOT_ACTIVATED: &str = "one or more bundles are not activated";
const PLUGINS_NOT_UP: &str = "one or more plugins are not up";

fn ok() -> (u16, Json) {
    (200, json!({}))
}

fn ago(secs: i64) -> Option<chrono::DateTime<Utc>> {
    Some(Utc::now() - chrono::Duration::seconds(secs))
}

// ---------------------------------------------------------------------------------------------
// GET /health: parameters and states

#[test]
fn plain_health_only_checks_evaluation() {
    let srv = InProcess::plain();
    assert_eq!(
        srv.raw("/health"),
        (200, "{}\n".into(), "application/json".into())
    );
    for state in [State::NotReady, State::Error, State::Warn] {
        srv.plugin("bundle").set_state(state);
        srv.plugin("custom").set_state(state);
        assert_eq!(srv.get("/health"), ok(), "{state:?}");
        // `exclude-plugin` alone enables nothing.
        assert_eq!(srv.get("/health?exclude-plugin=custom"), ok());
    }
}

#[test]
fn bundles_follows_the_bundle_plugin_state() {
    let srv = InProcess::plain();
    // No bundle plugin configured: passes.
    assert_eq!(srv.get("/health?bundles"), ok());
    let bundle = srv.plugin("bundle");
    for path in [
        "/health?bundles",
        "/health?bundle",
        "/health?bundles=true",
        "/health?bundle=TRUE",
        "/health?bundles=false&bundle",
    ] {
        let (code, body) = srv.get(path);
        assert_eq!(code, 500, "{path}");
        assert_eq!(body["error"], BUNDLES_NOT_ACTIVATED, "{path}");
        assert_eq!(body["plugins"], json!({"bundle": {"state": "NOT_READY"}}));
    }
    // Flags that are not true leave the check off, as in OPA.
    assert_eq!(srv.get("/health?bundles=false"), ok());
    assert_eq!(srv.get("/health?bundles=1"), ok());
    // Other plugins do not matter to ?bundles, nor does exclude-plugin.
    srv.plugin("custom").set_state(State::Error);
    bundle.set_state(State::Ok);
    assert_eq!(srv.get("/health?bundles"), ok());
    bundle.set_state(State::NotReady);
    assert_eq!(srv.get("/health?bundles&exclude-plugin=bundle").0, 500);
}

#[test]
fn bundles_also_requires_discovery() {
    let srv = InProcess::plain();
    let discovery = srv.plugin("discovery");
    let (code, body) = srv.get("/health?bundles");
    assert_eq!(code, 500);
    assert_eq!(
        body,
        json!({"error": BUNDLES_NOT_ACTIVATED, "plugins": {"discovery": {"state": "NOT_READY"}}})
    );
    discovery.set_state(State::Ok);
    assert_eq!(srv.get("/health?bundles"), ok());
}

#[test]
fn bundles_failure_names_the_bundles_and_why() {
    let srv = InProcess::plain();
    let bundle = srv.plugin("bundle");
    bundle.set_state_with_message(State::NotReady, "waiting for authz");
    srv.bundles.update("authz", |s| {
        s.last_request = ago(1);
        s.code = "bundle_error".into();
        s.message = "server replied with Not Found".into();
        s.http_code = Some(404);
    });
    srv.bundles.update("extra", |s| {
        s.last_request = ago(2);
        s.last_successful_request = s.last_request;
        s.last_successful_download = s.last_request;
        s.last_successful_activation = s.last_request;
        s.active_revision = "r7".into();
    });
    let (code, text, ctype) = srv.raw("/health?bundles");
    assert_eq!((code, ctype.as_str()), (500, "application/json"));
    assert!(
        text.ends_with("}\n") && !text.contains(": "),
        "compact: {text}"
    );
    let body: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], BUNDLES_NOT_ACTIVATED);
    assert_eq!(
        body["plugins"],
        json!({"bundle": {"state": "NOT_READY", "message": "waiting for authz"}})
    );
    // Only the bundle with a problem is named, with the status fields that explain it.
    let bundles = body["bundles"].as_object().unwrap();
    assert_eq!(bundles.keys().collect::<Vec<_>>(), ["authz"]);
    let authz = &bundles["authz"];
    assert_eq!(authz["reason"], "never activated; last download failed");
    assert_eq!(authz["code"], "bundle_error");
    assert_eq!(authz["message"], "server replied with Not Found");
    assert_eq!(authz["http_code"], 404);
    assert_eq!(authz["last_successful_activation"], "0001-01-01T00:00:00Z");
    assert_eq!(authz["last_successful_request"], "0001-01-01T00:00:00Z");
}

#[test]
fn bundle_failures_after_activation_keep_opas_answer_by_default() {
    // OPA's bundle plugin stays OK once every bundle activated, whatever happens later.
    let srv = InProcess::plain();
    srv.plugin("bundle").set_state(State::Ok);
    srv.bundles.update("authz", |s| {
        s.last_successful_activation = ago(86_400);
        s.last_successful_request = ago(86_400);
        s.last_request = ago(1);
        s.code = "bundle_error".into();
        s.message = "request failed: connection refused".into();
    });
    assert_eq!(srv.get("/health?bundles"), ok());
}

#[test]
fn plugins_requires_every_plugin_ok() {
    let srv = InProcess::plain();
    assert_eq!(srv.get("/health?plugins"), ok(), "no plugins");
    let a = srv.plugin("alpha");
    let b = srv.plugin("beta");
    a.set_state(State::Ok);
    b.set_state(State::Ok);
    assert_eq!(srv.get("/health?plugins"), ok());
    for (state, name) in [
        (State::NotReady, "NOT_READY"),
        (State::Error, "ERROR"),
        (State::Warn, "WARN"),
    ] {
        b.set_state_with_message(state, "trouble");
        let (code, text, ctype) = srv.raw("/health?plugins");
        assert_eq!((code, ctype.as_str()), (500, "application/json"));
        let expected = format!(
            "{{\"error\":\"{PLUGINS_NOT_UP}\",\"plugins\":{{\"beta\":{{\"state\":\"{name}\",\"message\":\"trouble\"}}}}}}\n"
        );
        assert_eq!(text, expected);
    }
    assert_eq!(srv.get("/health?plugins=false"), ok());
    assert_eq!(srv.get("/health?plugins=TRUE").0, 500);
}

#[test]
fn exclude_plugin_is_repeatable_and_only_affects_plugins() {
    let srv = InProcess::plain();
    srv.plugin("alpha").set_state(State::Ok);
    srv.plugin("beta").set_state(State::Error);
    srv.plugin("gamma")
        .set_state_with_message(State::Warn, "slow");
    let (code, body) = srv.get("/health?plugins&exclude-plugin=beta");
    assert_eq!(code, 500);
    assert_eq!(
        body,
        json!({"error": PLUGINS_NOT_UP, "plugins": {"gamma": {"state": "WARN", "message": "slow"}}})
    );
    assert_eq!(
        srv.get("/health?plugins&exclude-plugin=beta&exclude-plugin=gamma"),
        ok()
    );
    assert_eq!(
        srv.get("/health?exclude-plugin=gamma&plugins&exclude-plugin=beta&exclude-plugin=nope"),
        ok()
    );
    // Every failing plugin is named, not just the first.
    let (_, body) = srv.get("/health?plugins&exclude-plugin=alpha");
    assert_eq!(
        body["plugins"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["beta", "gamma"]
    );
}

#[test]
fn checks_run_in_opas_order() {
    let srv = InProcess::plain();
    let bundle = srv.plugin("bundle");
    let custom = srv.plugin("custom");
    custom.set_state(State::Error);
    // The bundles check comes before the plugins check.
    let (code, body) = srv.get("/health?plugins&bundles");
    assert_eq!((code, &body["error"]), (500, &json!(BUNDLES_NOT_ACTIVATED)));
    bundle.set_state(State::Ok);
    let (code, body) = srv.get("/health?plugins&bundles");
    assert_eq!((code, &body["error"]), (500, &json!(PLUGINS_NOT_UP)));
    assert_eq!(body["plugins"], json!({"custom": {"state": "ERROR"}}));
    assert_eq!(
        srv.get("/health?plugins&bundles&exclude-plugin=custom"),
        ok()
    );
    custom.set_state(State::Ok);
    assert_eq!(srv.get("/health?plugins&bundles"), ok());
}

#[test]
fn state_changes_show_up_on_the_next_probe() {
    let srv = InProcess::plain();
    let bundle = srv.plugin("bundle");
    let mut seen = Vec::new();
    for state in [
        State::NotReady,
        State::Ok,
        State::Error,
        State::Ok,
        State::Warn,
    ] {
        bundle.set_state(state);
        seen.push((srv.get("/health?plugins").0, srv.get("/health?bundles").0));
    }
    assert_eq!(
        seen,
        [(500, 500), (200, 200), (500, 500), (200, 200), (500, 500)]
    );
}

#[test]
fn health_answers_only_get() {
    let srv = InProcess::plain();
    let url = format!("{}/health", srv.url);
    assert_eq!(srv.client.head(&url).send().unwrap().status(), 405);
    assert_eq!(srv.client.post(&url).send().unwrap().status(), 405);
    let resp = srv.client.get(format!("{url}/?bundles")).send().unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "/health?bundles");
}

// ---------------------------------------------------------------------------------------------
// Regent's opt-in bundle staleness checks

fn strict(options: Json) -> InProcess {
    let srv = InProcess::start(&[], json!({"health": {"bundles": options}}));
    srv.plugin("bundle").set_state(State::Ok);
    srv
}

#[test]
fn max_activation_age_fails_stale_bundles() {
    let srv = strict(json!({"max_activation_age": "1m"}));
    srv.bundles.update("fresh", |s| {
        s.last_successful_activation = ago(10);
        s.last_request = ago(10);
        s.last_successful_request = ago(10);
    });
    assert_eq!(srv.get("/health?bundles"), ok());
    srv.bundles.update("old", |s| {
        s.last_successful_activation = ago(125);
        s.last_request = ago(5);
        s.last_successful_request = ago(5);
        s.active_revision = "r1".into();
    });
    let (code, body) = srv.get("/health?bundles");
    assert_eq!((code, &body["error"]), (500, &json!(BUNDLES_NOT_ACTIVATED)));
    assert!(body.get("plugins").is_none(), "{body}");
    let old = &body["bundles"]["old"];
    assert!(
        old["reason"]
            .as_str()
            .unwrap()
            .starts_with("last activation 2m5s ago, older than max_activation_age 1m0s"),
        "{old}"
    );
    assert_eq!(old["active_revision"], "r1");
    assert!(body["bundles"].get("fresh").is_none());
    // Only ?bundles is affected.
    assert_eq!(srv.get("/health"), ok());
    assert_eq!(srv.get("/health?plugins"), ok());
    // A new activation makes it healthy again.
    srv.bundles
        .update("old", |s| s.last_successful_activation = ago(0));
    assert_eq!(srv.get("/health?bundles"), ok());
}

#[test]
fn fail_on_download_error_fails_until_a_download_succeeds() {
    let srv = strict(json!({"fail_on_download_error": true}));
    srv.bundles.update("authz", |s| {
        s.last_request = ago(60);
        // The bundle plugin copies the attempt's time on success, as OPA's does.
        s.last_successful_request = s.last_request;
        s.last_successful_activation = s.last_request;
    });
    assert_eq!(srv.get("/health?bundles"), ok());
    // The bundle server goes away.
    srv.bundles.update("authz", |s| {
        s.last_request = ago(1);
        s.code = "bundle_error".into();
        s.message = "server replied with Service Unavailable".into();
        s.http_code = Some(503);
    });
    let (code, body) = srv.get("/health?bundle");
    assert_eq!(code, 500);
    assert_eq!(body["bundles"]["authz"]["reason"], "last download failed");
    assert_eq!(body["bundles"]["authz"]["http_code"], 503);
    // A 304 clears the error.
    srv.bundles.update("authz", |s| {
        s.last_request = ago(0);
        s.last_successful_request = s.last_request;
        s.clear_error();
    });
    assert_eq!(srv.get("/health?bundles"), ok());
    // A download whose bundle fails to activate leaves the old revision serving: also a failure.
    srv.bundles.update("authz", |s| {
        s.last_request = ago(0);
        s.last_successful_request = s.last_request;
        s.code = "bundle_error".into();
        s.message = "error(s) occurred while compiling module(s)".into();
        s.errors = vec![RegoError::new("rego_parse_error", "unexpected eof token")];
    });
    let (code, body) = srv.get("/health?bundles");
    assert_eq!(code, 500);
    let authz = &body["bundles"]["authz"];
    assert_eq!(authz["reason"], "last activation failed");
    assert_eq!(authz["errors"][0]["code"], "rego_parse_error");
}

#[test]
fn staleness_never_loosens_opas_check() {
    let srv = InProcess::start(
        &[],
        json!({"health": {"bundles": {"max_activation_age": "1h", "fail_on_download_error": true}}}),
    );
    srv.plugin("bundle");
    srv.bundles
        .update("authz", |s| s.last_successful_activation = ago(1));
    let (code, body) = srv.get("/health?bundles");
    assert_eq!(code, 500);
    assert_eq!(body["plugins"]["bundle"]["state"], "NOT_READY");
}

#[test]
fn bad_health_config_stops_the_binary() {
    let out = std::process::Command::new(common::binary())
        .args(["run", "--server", "--addr", "127.0.0.1:0"])
        .args(["--set", "health.bundles.max_activation_age=soon"])
        .args(["--set", "health.bundles.fail_on_download_errors=true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("health.bundles.max_activation_age"),
        "{stderr}"
    );
    assert!(
        stderr.contains("health.bundles.fail_on_download_errors: unknown key"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// GET /health/<path>

const HEALTH_POLICY: &str = r#"package system.health

default live := true

ready if input.plugins_ready

bundle_ok if input.plugin_state.bundle == "OK"

not_true := false

not_bool := "yes"

one := 1

nested.deep := true

keyed := {"a-b": true, "x": false}

echo := input
"#;

fn with_policy() -> InProcess {
    InProcess::start(&[HEALTH_POLICY], json!({}))
}

fn failed(error: &str) -> (u16, Json) {
    (500, json!({ "error": error }))
}

#[test]
fn policy_result_must_be_exactly_true() {
    let srv = with_policy();
    assert_eq!(
        srv.raw("/health/live"),
        (200, "{}\n".into(), "application/json".into())
    );
    assert_eq!(srv.get("/health/nested/deep"), ok());
    assert_eq!(srv.get("/health/keyed/a%2Db"), ok());
    assert_eq!(
        srv.get("/health/not_true"),
        failed("health check (data.system.health.not_true) returned unexpected value")
    );
    assert_eq!(
        srv.get("/health/not_bool"),
        failed("health check (data.system.health.not_bool) returned unexpected value")
    );
    assert_eq!(
        srv.get("/health/one"),
        failed("health check (data.system.health.one) returned unexpected value")
    );
    assert_eq!(
        srv.get("/health/nested"),
        failed("health check (data.system.health.nested) returned unexpected value")
    );
    assert_eq!(
        srv.get("/health/keyed/x"),
        failed("health check (data.system.health.keyed.x) returned unexpected value")
    );
    let (code, text, ctype) = srv.raw("/health/missing");
    assert_eq!((code, ctype.as_str()), (500, "application/json"));
    assert_eq!(
        text,
        "{\"error\":\"health check (data.system.health.missing) was undefined\"}\n"
    );
    assert_eq!(
        srv.get("/health/keyed/a-c"),
        failed(r#"health check (data.system.health.keyed["a-c"]) was undefined"#)
    );
    assert_eq!(
        srv.get("/health/7"),
        failed("health check (data.system.health[7]) was undefined")
    );
}

#[test]
fn undefined_without_any_health_policy() {
    let srv = InProcess::plain();
    assert_eq!(
        srv.get("/health/live"),
        failed("health check (data.system.health.live) was undefined")
    );
    assert_eq!(
        srv.get("/health/ready"),
        failed("health check (data.system.health.ready) was undefined")
    );
}

#[test]
fn evaluation_errors_are_reported() {
    let srv = InProcess::start(
        &[r#"package system.health

conflict := true if input.plugins_ready

conflict := false if input.plugins_ready
"#],
        json!({}),
    );
    let (code, body) = srv.get("/health/conflict");
    assert_eq!(code, 500);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("eval_conflict_error"), "{error}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[test]
fn quotes_in_the_path_are_invalid() {
    let srv = with_policy();
    let (code, body) = srv.get("/health/a%22b");
    assert_eq!(code, 400);
    assert_eq!(
        body,
        json!({"code": "invalid_parameter", "message": "invalid path: invalid ref term 'a\"b'"})
    );
}

#[test]
fn input_carries_plugin_states_and_the_ready_latch() {
    // With no plugins, all (none) are OK: ready.
    assert_eq!(with_policy().get("/health/ready"), ok());
    let echo = InProcess::start(&[HEALTH_POLICY], json!({}));
    let bundle = echo.plugin("bundle");
    let status = echo.plugin("status");
    let (code, body) = echo.get("/health/echo");
    assert_eq!(code, 500, "an object is not true");
    assert_eq!(
        body["error"],
        "health check (data.system.health.echo) returned unexpected value"
    );
    let ready = |srv: &InProcess| srv.get("/health/ready").0;
    let bundle_ok = |srv: &InProcess| srv.get("/health/bundle_ok").0;
    assert_eq!(
        echo.get("/health/ready"),
        failed("health check (data.system.health.ready) was undefined")
    );
    assert_eq!(bundle_ok(&echo), 500);
    bundle.set_state(State::Ok);
    assert_eq!(bundle_ok(&echo), 200, "plugin_state is live");
    assert_eq!(ready(&echo), 500, "status is still NOT_READY");
    status.set_state(State::Ok);
    assert_eq!(ready(&echo), 200);
    // The latch holds once set, while plugin_state keeps following the plugins.
    bundle.set_state(State::Error);
    status.set_state_with_message(State::Warn, "retrying");
    assert_eq!(ready(&echo), 200);
    assert_eq!(bundle_ok(&echo), 500);
    // A plugin registered later does not clear it either.
    echo.plugin("decision_logs");
    assert_eq!(ready(&echo), 200);
    // The plain endpoint still reports the plugins.
    assert_eq!(echo.get("/health?plugins").0, 500);
}

#[test]
fn ready_latch_is_only_computed_when_asked() {
    // All plugins pass through OK without a policy call in between: not latched.
    let srv = with_policy();
    let bundle = srv.plugin("bundle");
    bundle.set_state(State::Ok);
    bundle.set_state(State::NotReady);
    assert_eq!(srv.get("/health/ready").0, 500);
    // The plain /health endpoint does not latch it either.
    bundle.set_state(State::Ok);
    assert_eq!(srv.get("/health?plugins"), ok());
    bundle.set_state(State::NotReady);
    assert_eq!(srv.get("/health/ready").0, 500);
}

#[test]
fn plugin_state_maps_every_plugin_to_its_state() {
    let srv = InProcess::start(
        &[r#"package system.health
warn_only if every _, s in input.plugin_state { s in {"OK", "WARN"} }
"#],
        json!({}),
    );
    let p = srv.plugin("custom");
    p.set(PluginStatus::with_message(State::Warn, "degraded"));
    assert_eq!(srv.get("/health/warn_only"), ok());
    p.set_state(State::Error);
    assert_eq!(srv.get("/health/warn_only").0, 500);
}

// ---------------------------------------------------------------------------------------------
// Through the real binary

#[test]
fn binary_without_plugins_is_healthy_everywhere() {
    let dir = common::examples().join("rbac");
    let srv = Regent::start_with(&[dir.to_str().unwrap()], &[], 1);
    let diag = &srv.diagnostic_urls[0];
    for base in [&srv.url, diag] {
        for path in [
            "/health",
            "/health?bundles",
            "/health?bundle",
            "/health?plugins",
            "/health?plugins&exclude-plugin=bundle&bundles",
            "/health/live",
            "/health/ready",
        ] {
            let resp = srv.client.get(format!("{base}{path}")).send().unwrap();
            assert_eq!(
                resp.headers()["content-type"],
                "application/json",
                "{base}{path}"
            );
            assert_eq!(json(resp), ok(), "{base}{path}");
        }
        let (code, body) = json(
            srv.client
                .get(format!("{base}/health/unknown"))
                .send()
                .unwrap(),
        );
        assert_eq!(code, 500);
        assert_eq!(
            body["error"],
            "health check (data.system.health.unknown) was undefined"
        );
    }
    // The diagnostic listener serves only health and metrics.
    let resp = srv.client.get(format!("{diag}/v1/data")).send().unwrap();
    assert_eq!(resp.status(), 404);
}

/// A policy whose cost grows with `input.n`.
const SLOW_POLICY: &str = r#"package slow

burn := count([x | some x in numbers.range(1, input.n); x % 7 == 0])
"#;

fn timed(client: &Client, url: &str) -> (u16, Duration) {
    let started = Instant::now();
    let code = client.get(url).send().unwrap().status().as_u16();
    (code, started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Saturates the main listener with slow evaluations (more in flight than the runtime has
/// workers) and checks that /health on the diagnostic listener does not wait for them.
#[test]
fn diagnostic_health_stays_fast_while_main_listener_is_saturated() {
    let dir = common::tree(&[("slow.rego", SLOW_POLICY)]);
    let srv = Regent::start_with(&[dir.path().to_str().unwrap()], &[], 1);
    let decide = format!("{}/v1/data/slow/burn", srv.url);

    // Calibrate input.n so that one evaluation takes at least 150 ms on this machine.
    let mut n: u64 = 20_000;
    let eval_time = loop {
        let started = Instant::now();
        let resp = srv
            .client
            .post(&decide)
            .json(&json!({"input": {"n": n}}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let took = started.elapsed();
        if took >= Duration::from_millis(150) {
            break took;
        }
        let factor = (150.0 / took.as_secs_f64() / 1000.0).clamp(1.5, 20.0);
        n = (n as f64 * factor) as u64;
    };

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let clients = cores * 2 + 2;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, decide) = (stop.clone(), done.clone(), decide.clone());
            std::thread::spawn(move || {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let resp = client
                        .post(&decide)
                        .json(&json!({"input": {"n": n}}))
                        .send()
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the evaluations fill every worker.
    std::thread::sleep(eval_time * 2);

    let probe = client();
    let diag = format!("{}/health", srv.diagnostic_urls[0]);
    let main = format!("{}/health", srv.url);
    let mut diag_times = Vec::new();
    let mut main_times = Vec::new();
    for _ in 0..15 {
        let (code, took) = timed(&probe, &diag);
        assert_eq!(code, 200);
        diag_times.push(took);
        let (code, took) = timed(&probe, &main);
        assert_eq!(code, 200);
        main_times.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let diag_median = median(diag_times.clone());
    let diag_max = *diag_times.iter().max().unwrap();
    let main_median = median(main_times.clone());
    let main_max = *main_times.iter().max().unwrap();
    eprintln!(
        "eval {eval_time:?} (n={n}), {clients} clients on {cores} cores, {} decisions; \
         diagnostic /health median {diag_median:?} max {diag_max:?}; \
         main /health median {main_median:?} max {main_max:?}",
        done.load(Ordering::Relaxed)
    );
    // Queuing behind the evaluations would cost at least one evaluation time per probe (the
    // main listener's figures show it). The bounds leave room for a busy shared machine.
    assert!(
        diag_median < eval_time / 5,
        "diagnostic /health median {diag_median:?} vs evaluation {eval_time:?}"
    );
    assert!(
        diag_max < eval_time,
        "diagnostic /health max {diag_max:?} vs evaluation {eval_time:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// With the real bundle plugin

/// What the in-test bundle server answers.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    NotFound,
    Bundle,
    Broken,
}

/// A bundle server on a loopback port whose answers the test switches.
struct BundleServer {
    url: String,
    mode: Arc<std::sync::Mutex<Serve>>,
}

impl BundleServer {
    fn start(bundle: Vec<u8>) -> BundleServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(std::sync::Mutex::new(Serve::NotFound));
        let current = mode.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let (head, body): (&str, &[u8]) = match *current.lock().unwrap() {
                    Serve::NotFound => ("404 Not Found", b"not found"),
                    Serve::Bundle => ("200 OK", &bundle),
                    Serve::Broken => ("500 Internal Server Error", b"broken"),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(body);
            }
        });
        BundleServer { url, mode }
    }

    fn serve(&self, mode: Serve) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// A bundle holding the `live`/`ready` health rules under the `system` root.
fn health_bundle() -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, text) in [
        (".manifest", r#"{"revision": "r1", "roots": ["system"]}"#),
        (
            "system/health/health.rego",
            include_str!("../examples/rbac/health.rego"),
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, text.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Polls `path` until its answer satisfies `done`, returning the body.
fn wait_until(srv: &Regent, path: &str, done: impl Fn(u16, &Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = json(srv.get(path));
        if done(code, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: still {code} {body}; logs:\n{}",
            srv.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(srv: &Regent, path: &str, code: u16) -> Json {
    wait_until(srv, path, |got, _| got == code)
}

/// The real bundle plugin drives readiness: 404 -> bundle -> 500 -> bundle.
#[test]
fn real_bundle_plugin_drives_health() {
    let server = BundleServer::start(health_bundle());
    let config = |extra: &str| {
        format!(
            "services:\n  cp:\n    url: {}\nbundles:\n  authz:\n    service: cp\n    resource: bundle.tar.gz\n    polling: {{min_delay_seconds: 0.2, max_delay_seconds: 0.3}}\n{extra}",
            server.url
        )
    };
    let dir = common::tree(&[
        ("opa.yaml", &config("")),
        (
            "strict.yaml",
            &config("health:\n  bundles:\n    fail_on_download_error: true\n"),
        ),
    ]);
    let start = |file: &str| {
        let path = dir.path().join(file);
        Regent::start(&["--config-file", path.to_str().unwrap()])
    };
    let opa = start("opa.yaml");
    let strict = start("strict.yaml");

    // Before the first activation: alive, not ready, and the failed download is named.
    for srv in [&opa, &strict] {
        assert_eq!(json(srv.get("/health")), ok());
        let body = wait_until(srv, "/health?bundles", |code, body| {
            // The plugin lists the bundle at start; wait for its first attempt to be recorded.
            code == 500 && body["bundles"]["authz"]["http_code"] == 404
        });
        assert_eq!(body["error"], BUNDLES_NOT_ACTIVATED);
        assert_eq!(body["plugins"]["bundle"]["state"], "NOT_READY");
        let authz = &body["bundles"]["authz"];
        assert_eq!(authz["reason"], "never activated; last download failed");
        assert_eq!(authz["http_code"], 404);
        assert_eq!(authz["message"], "server replied with Not Found");
        let (code, body) = json(srv.get("/health?plugins"));
        assert_eq!((code, &body["error"]), (500, &json!(PLUGINS_NOT_UP)));
        assert_eq!(
            json(srv.get("/health/ready")).1["error"],
            "health check (data.system.health.ready) was undefined"
        );
    }

    // The bundle arrives: ready, and the policy from the bundle answers the probes.
    server.serve(Serve::Bundle);
    for srv in [&opa, &strict] {
        wait_for(srv, "/health?bundles", 200);
        assert_eq!(json(srv.get("/health?plugins")), ok());
        assert_eq!(json(srv.get("/health/live")), ok());
        assert_eq!(json(srv.get("/health/ready")), ok());
    }

    // The bundle server breaks: OPA's answer stays healthy, the opt-in one fails and says why.
    server.serve(Serve::Broken);
    let body = wait_for(&strict, "/health?bundles", 500);
    let authz = &body["bundles"]["authz"];
    assert_eq!(authz["reason"], "last download failed");
    assert_eq!(authz["http_code"], 500);
    assert_eq!(authz["active_revision"], "r1");
    assert!(body.get("plugins").is_none(), "{body}");
    assert_eq!(json(opa.get("/health?bundles")), ok());
    assert_eq!(json(opa.get("/health?plugins")), ok());
    assert_eq!(json(strict.get("/health/ready")), ok(), "latched");

    // It recovers: the next successful download clears the failure.
    server.serve(Serve::Bundle);
    wait_for(&strict, "/health?bundles", 200);
}

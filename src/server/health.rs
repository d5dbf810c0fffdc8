//! `GET /health` and `GET /health/<path>`: OPA's Health API, served on main and diagnostic
//! listeners alike.
//!
//! `/health` runs OPA's checks in OPA's order (a trivial evaluation, then `?bundles`, then
//! `?plugins`) and answers with OPA's status codes and `error` strings. Beyond OPA, a failing
//! body also names what failed (`plugins`, `bundles` next to `error`), and the opt-in `health:`
//! configuration makes `?bundles` fail on stale or failing bundles. `/health/<path>` evaluates
//! `data.system.health.<path>` against the plugin states.
//!
//! A failed check is the endpoint's normal answer in OPA's `HealthResponseV1` shape
//! (`{"error": ...}`), not an API error, so it is rendered here; only a malformed path is an
//! [`ApiError`]. The success path allocates little: one engine clone for the trivial evaluation
//! and lock-free reads of the plugin and bundle maps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use regorus::Value;
use serde::Serialize;

use super::error::ApiError;
use super::params::{path_segments, Params};
use super::{reply, AppState};
use crate::config::health::BundleHealth;
use crate::engine::eval::{display_ref, eval_path};
use crate::engine::{EngineError, RegoError, Snapshot};
use crate::plugins::bundle::status::{format_time, BundleStatus, BundleStatuses};
use crate::plugins::{PluginStatus, PluginStatuses, State as PluginState};

/// OPA's error strings, which probes and clients may match on.
pub const UNABLE_TO_EVALUATE: &str = "unable to perform evaluation";
pub const BUNDLES_NOT_ACTIVATED: &str = "one or more bundles are not activated";
pub const PLUGINS_NOT_UP: &str = "one or more plugins are not up";

/// The plugins whose state `?bundles` reads, as OPA's `bundlesReady` does.
const BUNDLE_PLUGINS: [&str; 2] = ["discovery", "bundle"];

/// A health answer: `{}` when healthy; otherwise OPA's `error` plus regent's explanation.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct HealthReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plugins that made the check fail, with their state and message.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, PluginStatus>,
    /// The bundles with a problem, and why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bundles: BTreeMap<String, BundleProblem>,
}

impl HealthReport {
    fn failed(error: &str) -> Self {
        HealthReport {
            error: Some(error.to_string()),
            ..Default::default()
        }
    }

    fn into_response(self) -> Response {
        let status = if self.error.is_some() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        reply::json(status, &self, false)
    }
}

/// Why one bundle is reported, with the status fields an operator needs to act on it.
#[derive(Debug, Serialize, PartialEq)]
pub struct BundleProblem {
    /// Human-readable causes, `; `-separated (e.g. `never activated; last download failed`).
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub active_revision: String,
    pub last_successful_activation: String,
    pub last_request: String,
    pub last_successful_request: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RegoError>,
}

/// One thing wrong with a bundle.
#[derive(Debug, Clone, PartialEq)]
enum Finding {
    NeverActivated,
    DownloadFailed,
    ActivationFailed,
    Stale { age: Duration, max: Duration },
}

impl Finding {
    /// Whether this finding fails `?bundles` under regent's opt-in options. (OPA's own check,
    /// the bundle plugin's state, is applied separately and always.)
    fn fails(&self, options: &BundleHealth) -> bool {
        match self {
            Finding::NeverActivated => options.max_activation_age.is_some(),
            Finding::Stale { .. } => true,
            Finding::DownloadFailed | Finding::ActivationFailed => options.fail_on_download_error,
        }
    }

    fn describe(&self) -> String {
        match self {
            Finding::NeverActivated => "never activated".into(),
            Finding::DownloadFailed => "last download failed".into(),
            Finding::ActivationFailed => "last activation failed".into(),
            Finding::Stale { age, max } => format!(
                "last activation {} ago, older than max_activation_age {}",
                human(*age),
                human(*max)
            ),
        }
    }
}

/// What is wrong with one bundle now. Staleness is only judged when a maximum age is set.
fn findings(status: &BundleStatus, options: &BundleHealth, now: DateTime<Utc>) -> Vec<Finding> {
    let mut out = Vec::new();
    match status.last_successful_activation {
        None => out.push(Finding::NeverActivated),
        Some(at) => {
            if let Some(max) = options.max_activation_age {
                let age = (now - at).to_std().unwrap_or_default();
                if age > max {
                    out.push(Finding::Stale { age, max });
                }
            }
        }
    }
    // The bundle plugin stamps `last_request` after every attempt and copies it into
    // `last_successful_request` only when the server answered 200 or 304; `code` stays set
    // until an attempt succeeds, including when a downloaded bundle failed to activate.
    let request_failed = status
        .last_request
        .is_some_and(|at| status.last_successful_request.is_none_or(|ok| ok < at));
    if request_failed {
        out.push(Finding::DownloadFailed);
    } else if !status.code.is_empty() {
        out.push(Finding::ActivationFailed);
    }
    out
}

fn problem(status: &BundleStatus, findings: &[Finding]) -> BundleProblem {
    BundleProblem {
        reason: findings
            .iter()
            .map(Finding::describe)
            .collect::<Vec<_>>()
            .join("; "),
        active_revision: status.active_revision.clone(),
        last_successful_activation: format_time(status.last_successful_activation),
        last_request: format_time(status.last_request),
        last_successful_request: format_time(status.last_successful_request),
        code: status.code.clone(),
        message: status.message.clone(),
        http_code: status.http_code,
        errors: status.errors.clone(),
    }
}

/// Formats a duration the way Go prints one, to whole seconds: `1h2m5s`, `45s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// What `GET /health` was asked to check.
#[derive(Debug, Default)]
pub struct HealthQuery {
    pub bundles: bool,
    pub plugins: bool,
    pub exclude_plugins: Vec<String>,
}

impl HealthQuery {
    pub fn from_params(params: &Params) -> Self {
        HealthQuery {
            // `bundle` is OPA's deprecated spelling; either enables the check.
            bundles: params.flag("bundles") || params.flag("bundle"),
            plugins: params.flag("plugins"),
            exclude_plugins: params.all("exclude-plugin").map(str::to_string).collect(),
        }
    }
}

/// OPA's liveness check: the engine answers a trivial query (`x = 1`).
fn can_eval(snapshot: &Snapshot) -> bool {
    snapshot
        .engine()
        .eval_query("x = 1".to_string(), false)
        .is_ok_and(|r| !r.result.is_empty())
}

/// The `?bundles` check: OPA's plugin-state check, then regent's opt-in bundle checks.
fn check_bundles(
    plugins: &PluginStatuses,
    bundles: &BundleStatuses,
    options: &BundleHealth,
    now: DateTime<Utc>,
) -> Option<HealthReport> {
    let mut report = HealthReport::failed(BUNDLES_NOT_ACTIVATED);
    for name in BUNDLE_PLUGINS {
        if let Some(status) = plugins.get(name).filter(|s| s.state != PluginState::Ok) {
            report.plugins.insert(name.to_string(), status.clone());
        }
    }
    let mut failing = !report.plugins.is_empty();
    // Only read the bundles when they can change the answer or explain a failure.
    if failing || options.enabled() {
        for (name, status) in bundles {
            let found = findings(status, options, now);
            if found.is_empty() {
                continue;
            }
            failing |= found.iter().any(|f| f.fails(options));
            report.bundles.insert(name.clone(), problem(status, &found));
        }
    }
    failing.then_some(report)
}

/// The `?plugins` check: every plugin not excluded must be OK.
fn check_plugins(plugins: &PluginStatuses, exclude: &[String]) -> Option<HealthReport> {
    let mut report = HealthReport::failed(PLUGINS_NOT_UP);
    for (name, status) in plugins {
        if status.state != PluginState::Ok && !exclude.iter().any(|e| e == name) {
            report.plugins.insert(name.clone(), status.clone());
        }
    }
    (!report.plugins.is_empty()).then_some(report)
}

/// Runs OPA's checks in OPA's order; the first failure is the answer.
pub fn check(state: &AppState, query: &HealthQuery) -> HealthReport {
    if !can_eval(&state.store.snapshot()) {
        return HealthReport::failed(UNABLE_TO_EVALUATE);
    }
    let plugins = state.plugins.statuses();
    if query.bundles {
        let bundles = state.bundles.snapshot();
        let options = &state.config.health.bundles;
        if let Some(report) = check_bundles(&plugins, &bundles, options, Utc::now()) {
            return report;
        }
    }
    if query.plugins {
        if let Some(report) = check_plugins(&plugins, &query.exclude_plugins) {
            return report;
        }
    }
    HealthReport::default()
}

/// `GET /health`.
pub async fn get(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let query = HealthQuery::from_params(&Params::parse(uri.query()));
    check(&state, &query).into_response()
}

/// `GET /health/<path>`: 200 only when `data.system.health.<path>` is exactly `true`.
pub async fn get_path(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let segments = path_segments(uri.path(), "/health");
    if let Some(bad) = segments.iter().find(|s| s.contains('"')) {
        return Err(ApiError::InvalidParameter(format!(
            "invalid path: invalid ref term '{bad}'"
        )));
    }
    let input = policy_input(&state.plugins.statuses(), state.plugins.plugins_ready());
    let mut path = Vec::with_capacity(segments.len() + 2);
    path.extend(["system".to_string(), "health".to_string()]);
    path.extend(segments);
    let report = match eval_path(&state.store.snapshot(), &path, Some(input)) {
        Ok(Some(Value::Bool(true))) => HealthReport::default(),
        Ok(None) => HealthReport::failed(&format!(
            "health check ({}) was undefined",
            display_ref(&path)
        )),
        Ok(Some(_)) => HealthReport::failed(&format!(
            "health check ({}) returned unexpected value",
            display_ref(&path)
        )),
        Err(err) => HealthReport::failed(&eval_error_text(&err)),
    };
    Ok(report.into_response())
}

/// The input of health policies: `{"plugin_state": {name: STATE}, "plugins_ready": bool}`.
fn policy_input(plugins: &PluginStatuses, plugins_ready: bool) -> Value {
    let states: BTreeMap<Value, Value> = plugins
        .iter()
        .map(|(name, s)| (Value::from(name.as_str()), Value::from(s.state.as_str())))
        .collect();
    let mut input = BTreeMap::new();
    input.insert(Value::from("plugin_state"), Value::from(states));
    input.insert(Value::from("plugins_ready"), Value::from(plugins_ready));
    Value::from(input)
}

/// An evaluation error as OPA's health endpoint prints it: `file:row: code: message`.
fn eval_error_text(err: &EngineError) -> String {
    let errors = match err {
        EngineError::Eval(errors) => errors,
        other => return other.to_string(),
    };
    errors
        .iter()
        .map(|e| match &e.location {
            Some(l) => format!("{}:{}: {}: {}", l.file, l.row, e.code, e.message),
            None => format!("{}: {}", e.code, e.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs_ago: i64) -> Option<DateTime<Utc>> {
        Some(Utc::now() - chrono::Duration::seconds(secs_ago))
    }

    fn statuses(entries: &[(&str, PluginState)]) -> PluginStatuses {
        entries
            .iter()
            .map(|(n, s)| (n.to_string(), PluginStatus::new(*s)))
            .collect()
    }

    #[test]
    fn findings_name_every_problem() {
        let none = BundleHealth::default();
        let mut s = BundleStatus::new("b");
        assert_eq!(
            findings(&s, &none, Utc::now()),
            vec![Finding::NeverActivated]
        );

        s.last_successful_activation = at(600);
        s.last_request = at(5);
        s.last_successful_request = at(70);
        assert_eq!(
            findings(&s, &none, Utc::now()),
            vec![Finding::DownloadFailed]
        );

        s.last_successful_request = s.last_request;
        s.code = "bundle_error".into();
        assert_eq!(
            findings(&s, &none, Utc::now()),
            vec![Finding::ActivationFailed]
        );

        s.code.clear();
        assert!(findings(&s, &none, Utc::now()).is_empty());
        let strict = BundleHealth {
            max_activation_age: Some(Duration::from_secs(300)),
            fail_on_download_error: false,
        };
        let found = findings(&s, &strict, Utc::now());
        assert!(matches!(found[..], [Finding::Stale { .. }]), "{found:?}");
        assert_eq!(
            found[0].describe(),
            "last activation 10m0s ago, older than max_activation_age 5m0s"
        );
    }

    #[test]
    fn opa_bundle_check_reads_only_plugin_states() {
        let opts = BundleHealth::default();
        let no_bundles = BundleStatuses::new();
        let now = Utc::now();
        assert!(check_bundles(&statuses(&[]), &no_bundles, &opts, now).is_none());
        let ok = statuses(&[("bundle", PluginState::Ok), ("x", PluginState::Error)]);
        assert!(check_bundles(&ok, &no_bundles, &opts, now).is_none());
        // A failed download after activation does not fail OPA's check.
        let mut failing = BundleStatuses::new();
        let mut b = BundleStatus::new("b");
        b.last_successful_activation = at(10);
        b.last_request = at(1);
        failing.insert("b".into(), b);
        assert!(check_bundles(&ok, &failing, &opts, now).is_none());
        let strict = BundleHealth {
            fail_on_download_error: true,
            ..Default::default()
        };
        let report = check_bundles(&ok, &failing, &strict, now).unwrap();
        assert_eq!(report.bundles["b"].reason, "last download failed");

        for name in BUNDLE_PLUGINS {
            let bad = statuses(&[(name, PluginState::NotReady)]);
            let report = check_bundles(&bad, &no_bundles, &opts, now).unwrap();
            assert_eq!(report.error.as_deref(), Some(BUNDLES_NOT_ACTIVATED));
            assert_eq!(report.plugins[name].state, PluginState::NotReady);
        }
    }

    #[test]
    fn plugin_check_honours_exclusions() {
        let s = statuses(&[
            ("a", PluginState::Ok),
            ("b", PluginState::Warn),
            ("c", PluginState::Error),
        ]);
        let report = check_plugins(&s, &[]).unwrap();
        assert_eq!(report.plugins.keys().collect::<Vec<_>>(), ["b", "c"]);
        let report = check_plugins(&s, &["c".into()]).unwrap();
        assert_eq!(report.plugins.keys().collect::<Vec<_>>(), ["b"]);
        assert!(check_plugins(&s, &["b".into(), "c".into()]).is_none());
    }

    #[test]
    fn reports_serialise_compactly() {
        assert_eq!(
            serde_json::to_string(&HealthReport::default()).unwrap(),
            "{}"
        );
        let mut r = HealthReport::failed(PLUGINS_NOT_UP);
        r.plugins.insert(
            "bundle".into(),
            PluginStatus::with_message(PluginState::NotReady, "waiting"),
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"error":"one or more plugins are not up","plugins":{"bundle":{"state":"NOT_READY","message":"waiting"}}}"#
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(125)), "2m5s");
        assert_eq!(human(Duration::from_secs(3725)), "1h2m5s");
    }
}

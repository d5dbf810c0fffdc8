//! Decision metrics (regent only; OPA never shipped them): per decision path and API, how often
//! it was asked, how it answered and how long evaluation took, plus the evaluation stages that
//! OPA reports per request with `?metrics`, aggregated.
//!
//! - `regent_decisions_total{api, outcome, path}`: counter; `outcome` is `allow` (true), `deny`
//!   (false), `undefined`, `error` or `value` (anything else).
//! - `regent_decision_duration_seconds{api, path}`: evaluation time, with an exemplar per bucket
//!   (`decision_id`, and `trace_id` when the request carried a W3C `traceparent`).
//! - `regent_decision_stage_duration_seconds{stage}`: `input_parse`, `query_compile`,
//!   `query_eval`, `result_serialize`.
//!
//! Cardinality is bounded: a path gets its own series when it is on the configured allow-list,
//! or (without a list) when it is one of the first `max_paths` distinct paths to produce a defined
//! result or an error; every other decision is counted under `path="other"`. Undefined answers
//! never claim a slot, so probes for paths that do not exist cannot use the slots up.
//!
//! The hot path takes no lock and allocates nothing once a path's series exists: the series is
//! found in an immutable map read through `ArcSwap`, and an observation is relaxed atomic
//! additions. Only claiming a new path's slot takes a lock (at most `max_paths` times), and only
//! the observation that wins a bucket's exemplar slot (at most once a second per bucket) builds
//! a decision id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::HeaderMap;

use super::family::{Collector, Metric, MetricFamily, MetricType, MetricValue};
use super::histogram::{Histogram, Shape};
use crate::config::decisions::{DecisionMetricsConfig, PathLimit};

pub const DECISIONS_NAME: &str = "regent_decisions_total";
pub const DURATION_NAME: &str = "regent_decision_duration_seconds";
pub const STAGE_NAME: &str = "regent_decision_stage_duration_seconds";
/// The `path` label shared by every decision without a series of its own.
pub const OTHER_PATH: &str = "other";

/// Stage histogram bounds in seconds: the stages are short, so fine steps from 1 µs.
const STAGE_BUCKETS: [f64; 14] = [
    1e-06, 2.5e-06, 5e-06, 1e-05, 2.5e-05, 5e-05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01,
    0.1, 1.0,
];

/// The API a decision was asked through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GET`/`POST /v1/data/...`
    V1,
    /// `POST /v0/data/...`
    V0,
    /// `POST /`, the default decision.
    Default,
}

impl Api {
    const ALL: [Api; 3] = [Api::V1, Api::V0, Api::Default];

    pub fn label(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V0 => "v0",
            Api::Default => "default",
        }
    }
}

/// How a decision answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    Undefined,
    Error,
    Value,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Allow,
        Outcome::Deny,
        Outcome::Undefined,
        Outcome::Error,
        Outcome::Value,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Undefined => "undefined",
            Outcome::Error => "error",
            Outcome::Value => "value",
        }
    }

    /// The outcome of an evaluation's result (`Ok(None)` is undefined).
    pub fn of<E>(result: &Result<Option<regorus::Value>, E>) -> Outcome {
        match result {
            Ok(Some(regorus::Value::Bool(true))) => Outcome::Allow,
            Ok(Some(regorus::Value::Bool(false))) => Outcome::Deny,
            Ok(Some(_)) => Outcome::Value,
            Ok(None) => Outcome::Undefined,
            Err(_) => Outcome::Error,
        }
    }
}

/// A stage of answering a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    InputParse,
    QueryCompile,
    QueryEval,
    ResultSerialize,
}

impl Stage {
    const ALL: [Stage; 4] = [
        Stage::InputParse,
        Stage::QueryCompile,
        Stage::QueryEval,
        Stage::ResultSerialize,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::InputParse => "input_parse",
            Stage::QueryCompile => "query_compile",
            Stage::QueryEval => "query_eval",
            Stage::ResultSerialize => "result_serialize",
        }
    }

    /// The stage an OPA `?metrics` timer measures, if it is one of these.
    pub fn of_timer(name: &str) -> Option<Stage> {
        match name {
            "timer_rego_input_parse_ns" => Some(Stage::InputParse),
            "timer_rego_query_compile_ns" => Some(Stage::QueryCompile),
            "timer_rego_query_eval_ns" => Some(Stage::QueryEval),
            _ => None,
        }
    }
}

/// One decision's stage durations, measured only when decision metrics are on.
#[derive(Debug, Clone, Default)]
pub struct Stages {
    on: bool,
    times: [Option<Duration>; 4],
}

impl Stages {
    pub fn new(on: bool) -> Self {
        Stages {
            on,
            times: [None; 4],
        }
    }

    pub fn on(&self) -> bool {
        self.on
    }

    pub fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        if !self.on {
            return f();
        }
        let start = Instant::now();
        let out = f();
        self.record(stage, start.elapsed());
        out
    }

    pub fn record(&mut self, stage: Stage, elapsed: Duration) {
        if self.on {
            let slot = &mut self.times[stage as usize];
            *slot = Some(slot.unwrap_or_default() + elapsed);
        }
    }

    pub fn get(&self, stage: Stage) -> Option<Duration> {
        self.times[stage as usize]
    }
}

/// One `{api, path}`: the latency histogram and a counter per outcome.
struct ApiSeries {
    latency: Histogram,
    outcomes: [AtomicU64; 5],
}

/// Every API's series for one `path` label value.
struct PathSeries {
    label: String,
    apis: [ApiSeries; 3],
}

impl PathSeries {
    fn new(label: String, shape: &Shape) -> Self {
        let api = || ApiSeries {
            latency: Histogram::new(shape),
            outcomes: Default::default(),
        };
        PathSeries {
            label,
            apis: [api(), api(), api()],
        }
    }
}

/// The `path` label of a decision path: segments joined by `/`, the root as `/`.
fn path_label(path: &[String]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        path.join("/")
    }
}

type PathMap = HashMap<Box<[String]>, Arc<PathSeries>>;

pub struct DecisionMetrics {
    enabled: bool,
    latency_shape: Shape,
    stage_shape: Shape,
    /// `Some(n)`: the first `n` paths seen get series; `None`: only the allow-listed ones.
    first_seen: Option<usize>,
    paths: ArcSwap<PathMap>,
    /// Serialises claiming a path's slot; never taken once the slots are full.
    claim: Mutex<()>,
    full: AtomicBool,
    other: PathSeries,
    stages: [Histogram; 4],
}

impl DecisionMetrics {
    pub fn new(config: &DecisionMetricsConfig) -> Self {
        let latency_shape = Shape::new(&config.buckets, true, config.native_histograms);
        let stage_shape = Shape::new(&STAGE_BUCKETS, false, config.native_histograms);
        let mut paths = PathMap::new();
        let first_seen = match &config.paths {
            PathLimit::Listed(listed) => {
                for path in listed.iter().filter(|p| !is_other(p)) {
                    let series = PathSeries::new(path_label(path), &latency_shape);
                    paths.insert(path.clone().into_boxed_slice(), Arc::new(series));
                }
                None
            }
            PathLimit::FirstSeen(n) => Some(*n),
        };
        DecisionMetrics {
            enabled: config.enabled,
            other: PathSeries::new(OTHER_PATH.into(), &latency_shape),
            stages: std::array::from_fn(|_| Histogram::new(&stage_shape)),
            latency_shape,
            stage_shape,
            first_seen,
            paths: ArcSwap::from_pointee(paths),
            claim: Mutex::new(()),
            full: AtomicBool::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Stage timers for one decision: running when decision metrics are on.
    pub fn stages(&self) -> Stages {
        Stages::new(self.enabled)
    }

    /// Records one decision: its outcome, its evaluation time (the `query_eval` stage) and every
    /// stage measured. `headers` are the request's, read only to give a new exemplar its trace id.
    pub fn observe(
        &self,
        api: Api,
        path: &[String],
        outcome: Outcome,
        stages: &Stages,
        headers: &HeaderMap,
    ) {
        if !self.enabled {
            return;
        }
        let record = |series: &PathSeries| {
            let api_series = &series.apis[api as usize];
            api_series.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
            if let Some(eval) = stages.get(Stage::QueryEval) {
                api_series.latency.observe(&self.latency_shape, eval, || {
                    exemplar_labels(api, path, outcome, eval, headers)
                });
            }
        };
        let map = self.paths.load();
        match map.get(path) {
            Some(series) => record(series),
            None if is_other(path) => record(&self.other),
            None => match self.claim(path, outcome) {
                Some(series) => record(&series),
                None => record(&self.other),
            },
        }
        for stage in Stage::ALL {
            if let Some(elapsed) = stages.get(stage) {
                self.stages[stage as usize].observe(&self.stage_shape, elapsed, Vec::new);
            }
        }
    }

    /// A series for a path not in the map yet, if it may have one.
    fn claim(&self, path: &[String], outcome: Outcome) -> Option<Arc<PathSeries>> {
        let limit = self.first_seen?;
        if outcome == Outcome::Undefined || self.full.load(Ordering::Relaxed) {
            return None;
        }
        let _claiming = self.claim.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.paths.load_full();
        if let Some(series) = current.get(path) {
            return Some(series.clone());
        }
        if current.len() >= limit {
            self.full.store(true, Ordering::Relaxed);
            return None;
        }
        let series = Arc::new(PathSeries::new(path_label(path), &self.latency_shape));
        let mut next = (*current).clone();
        next.insert(path.to_vec().into_boxed_slice(), series.clone());
        self.paths.store(Arc::new(next));
        Some(series)
    }
}

/// A real path whose label would be `other` shares the overflow series rather than duplicate it.
fn is_other(path: &[String]) -> bool {
    matches!(path, [only] if only == OTHER_PATH)
}

/// A fresh decision id, and the request's trace id when it carried a valid `traceparent`. The
/// decision is logged at debug level under the same id so an exemplar leads to it.
fn exemplar_labels(
    api: Api,
    path: &[String],
    outcome: Outcome,
    eval: Duration,
    headers: &HeaderMap,
) -> Vec<(String, String)> {
    let decision_id = uuid::Uuid::new_v4().to_string();
    let trace_id = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id);
    tracing::debug!(
        decision_id,
        trace_id,
        api = api.label(),
        path = path_label(path),
        outcome = outcome.label(),
        eval_ns = u64::try_from(eval.as_nanos()).unwrap_or(u64::MAX),
        "Decision kept as a metrics exemplar."
    );
    let mut labels = vec![("decision_id".to_string(), decision_id)];
    if let Some(trace_id) = trace_id {
        labels.push(("trace_id".to_string(), trace_id.to_string()));
    }
    labels
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    // Version 00 has exactly four fields; later versions may append more.
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2);
    valid.then_some(trace)
}

impl Collector for DecisionMetrics {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        let mut decisions = Vec::new();
        let mut latencies = Vec::new();
        let map = self.paths.load();
        for series in map.values().map(Arc::as_ref).chain([&self.other]) {
            for api in Api::ALL {
                let api_series = &series.apis[api as usize];
                let counts: Vec<u64> = api_series
                    .outcomes
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect();
                if counts.iter().all(|c| *c == 0) {
                    continue;
                }
                for (outcome, count) in Outcome::ALL.iter().zip(counts) {
                    decisions.push(Metric {
                        labels: vec![
                            ("api".into(), api.label().into()),
                            ("outcome".into(), outcome.label().into()),
                            ("path".into(), series.label.clone()),
                        ],
                        value: MetricValue::Counter(count as f64),
                    });
                }
                if api_series.latency.count() > 0 {
                    latencies.push(Metric {
                        labels: vec![
                            ("api".into(), api.label().into()),
                            ("path".into(), series.label.clone()),
                        ],
                        value: api_series.latency.value(&self.latency_shape),
                    });
                }
            }
        }
        let stages = Stage::ALL
            .iter()
            .filter(|stage| self.stages[**stage as usize].count() > 0)
            .map(|stage| Metric {
                labels: vec![("stage".into(), stage.label().into())],
                value: self.stages[*stage as usize].value(&self.stage_shape),
            })
            .collect();
        out.push(MetricFamily {
            name: DECISIONS_NAME.into(),
            help: "Decisions made, by API, decision path and outcome (allow: true, deny: false, \
                   undefined, error, value: any other result)."
                .into(),
            kind: MetricType::Counter,
            metrics: decisions,
        });
        out.push(MetricFamily {
            name: DURATION_NAME.into(),
            help: "Time spent evaluating decisions, by API and decision path.".into(),
            kind: MetricType::Histogram,
            metrics: latencies,
        });
        out.push(MetricFamily {
            name: STAGE_NAME.into(),
            help: "Time spent in each stage of answering a decision (input_parse, query_compile, \
                   query_eval, result_serialize)."
                .into(),
            kind: MetricType::Histogram,
            metrics: stages,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::decisions::DecisionMetricsConfig;

    fn segments(path: &str) -> Vec<String> {
        crate::config::decisions::path_segments(path)
    }

    fn gather(m: &DecisionMetrics) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        m.collect(&mut out);
        out
    }

    fn counter(families: &[MetricFamily], api: &str, path: &str, outcome: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name == DECISIONS_NAME)?
            .metrics
            .iter()
            .find(|m| {
                m.labels
                    == [
                        ("api".to_string(), api.to_string()),
                        ("outcome".to_string(), outcome.to_string()),
                        ("path".to_string(), path.to_string()),
                    ]
            })
            .map(|m| match m.value {
                MetricValue::Counter(v) => v,
                _ => panic!("not a counter"),
            })
    }

    fn timed(eval_micros: u64) -> Stages {
        let mut stages = Stages::new(true);
        stages.record(Stage::QueryEval, Duration::from_micros(eval_micros));
        stages.record(Stage::InputParse, Duration::from_micros(1));
        stages
    }

    #[test]
    fn outcomes_of_results() {
        let ok = |v| Ok::<_, ()>(Some(v));
        assert_eq!(Outcome::of(&ok(regorus::Value::Bool(true))), Outcome::Allow);
        assert_eq!(Outcome::of(&ok(regorus::Value::Bool(false))), Outcome::Deny);
        assert_eq!(Outcome::of(&ok(regorus::Value::from(3u64))), Outcome::Value);
        assert_eq!(Outcome::of(&Ok::<_, ()>(None)), Outcome::Undefined);
        assert_eq!(
            Outcome::of(&Err::<Option<regorus::Value>, _>(())),
            Outcome::Error
        );
    }

    #[test]
    fn first_seen_paths_then_other() {
        let m = DecisionMetrics::new(&DecisionMetricsConfig {
            paths: PathLimit::FirstSeen(2),
            ..DecisionMetricsConfig::default()
        });
        let h = HeaderMap::new();
        m.observe(Api::V1, &segments("a/x"), Outcome::Undefined, &timed(5), &h);
        m.observe(Api::V1, &segments("a/allow"), Outcome::Allow, &timed(5), &h);
        m.observe(Api::V1, &segments("a/allow"), Outcome::Deny, &timed(5), &h);
        m.observe(Api::V0, &segments("b"), Outcome::Error, &timed(5), &h);
        m.observe(Api::Default, &segments("c"), Outcome::Value, &timed(5), &h);
        m.observe(Api::V1, &segments("other"), Outcome::Allow, &timed(5), &h);
        m.observe(Api::V1, &[], Outcome::Value, &timed(5), &h);
        let f = gather(&m);
        assert_eq!(counter(&f, "v1", "a/allow", "allow"), Some(1.0));
        assert_eq!(counter(&f, "v1", "a/allow", "deny"), Some(1.0));
        assert_eq!(counter(&f, "v1", "a/allow", "undefined"), Some(0.0));
        assert_eq!(counter(&f, "v0", "b", "error"), Some(1.0));
        // Undefined never claims a slot; the third distinct path overflows; a real `other` shares.
        assert_eq!(counter(&f, "v1", "a/x", "undefined"), None);
        assert_eq!(counter(&f, "v1", "other", "undefined"), Some(1.0));
        assert_eq!(counter(&f, "v1", "other", "allow"), Some(1.0));
        assert_eq!(counter(&f, "v1", "other", "value"), Some(1.0));
        assert_eq!(counter(&f, "default", "other", "value"), Some(1.0));
        assert_eq!(counter(&f, "default", "c", "value"), None);
        let stages = f.iter().find(|f| f.name == STAGE_NAME).unwrap();
        let labels: Vec<&str> = stages
            .metrics
            .iter()
            .map(|m| m.labels[0].1.as_str())
            .collect();
        assert_eq!(labels, ["input_parse", "query_eval"]);
    }

    #[test]
    fn allow_list_only() {
        let m = DecisionMetrics::new(&DecisionMetricsConfig {
            paths: PathLimit::Listed(vec![segments("rbac/allow"), vec![]]),
            ..DecisionMetricsConfig::default()
        });
        let h = HeaderMap::new();
        m.observe(
            Api::V1,
            &segments("rbac/allow"),
            Outcome::Allow,
            &timed(5),
            &h,
        );
        m.observe(
            Api::V1,
            &segments("rbac/other"),
            Outcome::Allow,
            &timed(5),
            &h,
        );
        m.observe(Api::V1, &[], Outcome::Value, &timed(5), &h);
        let f = gather(&m);
        assert_eq!(counter(&f, "v1", "rbac/allow", "allow"), Some(1.0));
        assert_eq!(counter(&f, "v1", "/", "value"), Some(1.0));
        assert_eq!(counter(&f, "v1", "other", "allow"), Some(1.0));
    }

    #[test]
    fn exemplars_carry_decision_and_trace_ids() {
        let m = DecisionMetrics::new(&DecisionMetricsConfig::default());
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        m.observe(Api::V1, &segments("p"), Outcome::Allow, &timed(7), &h);
        let f = gather(&m);
        let family = f.iter().find(|f| f.name == DURATION_NAME).unwrap();
        let MetricValue::RichHistogram(h) = &family.metrics[0].value else {
            panic!("no exemplars kept");
        };
        let exemplar = h.exemplars.iter().flatten().next().expect("one exemplar");
        assert_eq!(exemplar.labels[0].0, "decision_id");
        assert!(uuid::Uuid::parse_str(&exemplar.labels[0].1).is_ok());
        assert_eq!(
            exemplar.labels[1],
            (
                "trace_id".to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736".to_string()
            )
        );
        assert!((exemplar.value - 7e-6).abs() < 1e-12);
    }

    #[test]
    fn traceparent_validation() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(&format!("00-{id}-00f067aa0ba902b7-01")), Some(id));
        assert_eq!(
            trace_id(&format!("01-{id}-00f067aa0ba902b7-01-x")),
            Some(id)
        );
        assert_eq!(trace_id(&format!("00-{id}-00f067aa0ba902b7-01-x")), None);
        assert_eq!(trace_id(&format!("ff-{id}-00f067aa0ba902b7-01")), None);
        assert_eq!(
            trace_id(&format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))),
            None
        );
        assert_eq!(trace_id(&format!("00-{id}-0000000000000000-01")), None);
        assert_eq!(
            trace_id(&format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase())),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }

    #[test]
    fn disabled_records_nothing() {
        let m = DecisionMetrics::new(&DecisionMetricsConfig {
            enabled: false,
            ..DecisionMetricsConfig::default()
        });
        assert!(!m.stages().on());
        m.observe(
            Api::V1,
            &segments("p"),
            Outcome::Allow,
            &timed(7),
            &HeaderMap::new(),
        );
        assert!(gather(&m).iter().all(|f| f.metrics.is_empty()));
    }
}

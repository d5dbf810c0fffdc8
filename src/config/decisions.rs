//! `server.metrics.decisions` (regent only): the per-decision-path metrics OPA never had.
//!
//! ```yaml
//! server:
//!   metrics:
//!     decisions:
//!       enabled: true            # default true
//!       paths: [rbac/allow]      # an allow-list; or
//!       max_paths: 32            # the first N distinct paths get their own series (default 32)
//!       buckets: [0.0001, 0.001] # decision latency bounds in seconds (default below)
//!       native_histograms: false # also keep native (exponential) buckets (default false)
//! ```
//!
//! Everything else is `other`, so request URLs can never create unbounded series.

use super::Validator;

/// The default number of distinct decision paths that get their own series.
pub const DEFAULT_MAX_PATHS: usize = 32;

/// Default decision latency bounds in seconds: fine steps where evaluations usually land (a few
/// microseconds to a few milliseconds), coarse ones up to a second.
pub const DEFAULT_DECISION_BUCKETS: [f64; 16] = [
    5e-06, 1e-05, 2.5e-05, 5e-05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

#[derive(Debug, Clone, PartialEq)]
pub struct DecisionMetricsConfig {
    pub enabled: bool,
    pub paths: PathLimit,
    pub buckets: Vec<f64>,
    pub native_histograms: bool,
}

/// Which decision paths get a series of their own.
#[derive(Debug, Clone, PartialEq)]
pub enum PathLimit {
    /// Exactly these paths (segments, e.g. `["rbac", "allow"]`).
    Listed(Vec<Vec<String>>),
    /// The first `n` distinct paths that produce a defined result or an error.
    FirstSeen(usize),
}

impl Default for DecisionMetricsConfig {
    fn default() -> Self {
        DecisionMetricsConfig {
            enabled: true,
            paths: PathLimit::FirstSeen(DEFAULT_MAX_PATHS),
            buckets: DEFAULT_DECISION_BUCKETS.to_vec(),
            native_histograms: false,
        }
    }
}

/// Splits a configured path (`rbac/allow`, `/rbac/allow/`) into segments; `/` is the root.
pub fn path_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn parse(v: &mut Validator) -> DecisionMetricsConfig {
    const PREFIX: &str = "server.metrics.decisions";
    let mut out = DecisionMetricsConfig::default();
    if let Some(node) = v.get(PREFIX) {
        if !node.is_object() {
            v.errors
                .push(format!("{PREFIX}: expected a mapping, got {node}"));
            return out;
        }
    }
    if let Some(enabled) = v.bool(&format!("{PREFIX}.enabled")) {
        out.enabled = enabled;
    }
    let listed = v.string_list(&format!("{PREFIX}.paths"));
    let max = v.u64(&format!("{PREFIX}.max_paths"));
    match (listed, max) {
        (Some(_), Some(_)) => v.errors.push(format!(
            "{PREFIX}: set either paths (an allow-list) or max_paths (the first N seen), not both"
        )),
        (Some(paths), None) => {
            let mut segments: Vec<Vec<String>> = paths.iter().map(|p| path_segments(p)).collect();
            segments.sort();
            segments.dedup();
            out.paths = PathLimit::Listed(segments);
        }
        (None, Some(n)) => {
            out.paths = PathLimit::FirstSeen(usize::try_from(n).unwrap_or(usize::MAX))
        }
        (None, None) => {}
    }
    if let Some(buckets) = v.floats(&format!("{PREFIX}.buckets")) {
        if buckets.iter().all(|b| *b > 0.0 && b.is_finite()) {
            out.buckets = buckets;
        } else {
            v.errors.push(format!(
                "{PREFIX}.buckets: expected positive finite numbers of seconds, got {buckets:?}"
            ));
        }
    }
    if let Some(native) = v.bool(&format!("{PREFIX}.native_histograms")) {
        out.native_histograms = native;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(raw: serde_json::Value) -> (DecisionMetricsConfig, Vec<String>) {
        let mut errors = Vec::new();
        let out = parse(&mut Validator {
            raw: &raw,
            errors: &mut errors,
        });
        (out, errors)
    }

    #[test]
    fn defaults() {
        let (c, errors) = parse_json(json!({}));
        assert!(errors.is_empty());
        assert_eq!(c, DecisionMetricsConfig::default());
        assert!(c.enabled);
        assert_eq!(c.paths, PathLimit::FirstSeen(32));
    }

    #[test]
    fn allow_list_and_switches() {
        let (c, errors) = parse_json(json!({"server": {"metrics": {"decisions": {
            "enabled": false,
            "paths": ["/rbac/allow/", "rbac/allow", "httpapi/authz/allow", "/"],
            "buckets": [0.001, 0.01],
            "native_histograms": true,
        }}}}));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!c.enabled);
        assert!(c.native_histograms);
        assert_eq!(c.buckets, [0.001, 0.01]);
        assert_eq!(
            c.paths,
            PathLimit::Listed(vec![
                vec![],
                vec!["httpapi".into(), "authz".into(), "allow".into()],
                vec!["rbac".into(), "allow".into()],
            ])
        );
        let (c, errors) =
            parse_json(json!({"server": {"metrics": {"decisions": {"max_paths": 0}}}}));
        assert!(errors.is_empty());
        assert_eq!(c.paths, PathLimit::FirstSeen(0));
    }

    #[test]
    fn errors_name_their_keys() {
        let (_, errors) = parse_json(json!({"server": {"metrics": {"decisions": {
            "paths": ["a"], "max_paths": 3, "buckets": [0, 1], "enabled": "yes",
        }}}}));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("not both")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("server.metrics.decisions.buckets")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("server.metrics.decisions.enabled")));
        let (_, errors) = parse_json(json!({"server": {"metrics": {"decisions": 3}}}));
        assert_eq!(errors.len(), 1);
    }
}

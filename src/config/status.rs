//! The `status:` section: OPA's status plugin keys with OPA's defaulting and validation, plus
//! regent's delivery extras (retry backoff, skipping unchanged pushes, heartbeat).
//!
//! OPA enables the plugin only when the `status` key exists and at least one of `service`,
//! `plugin`, `console`, `prometheus` is set or services are configured; [`parse`] returns `None`
//! otherwise, so "disabled" has one representation.

use std::time::Duration;

use super::Validator;

/// OPA's `bundle_loading_duration_ns` buckets: exponential, start 1000 ns, factor 2, 20 buckets.
pub fn default_bundle_loading_buckets() -> Vec<f64> {
    (0..20).map(|i| 1000.0 * f64::powi(2.0, i)).collect()
}

/// First retry delay after a failed push, before jitter.
pub const DEFAULT_RETRY_MIN_DELAY: Duration = Duration::from_millis(500);
/// Cap of the exponential retry delay.
pub const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Push on every plugin or bundle event (OPA's default).
    Periodic,
    /// No event-driven pushes; OPA leaves sending to an embedder's API call, regent to the
    /// optional heartbeat.
    Manual,
}

/// How a failed push is retried: delay `min * 2^n` capped at `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusConfig {
    /// The service to POST to; `None` when only console logging or Prometheus is wanted.
    pub service: Option<String>,
    /// Appended to the POST path: `/status/<partition_name>`.
    pub partition_name: String,
    /// Log every update at info level ("Status Log").
    pub console: bool,
    /// Register OPA's status series on the metrics registry.
    pub prometheus: bool,
    pub bundle_loading_duration_buckets: Vec<f64>,
    pub trigger: Trigger,
    /// regent: `retry.min_delay_seconds`, `retry.max_delay_seconds`.
    pub retry: RetryPolicy,
    /// regent: `skip_unchanged`: do not push a payload equal to the last delivered one except
    /// for timestamps and metrics.
    pub skip_unchanged: bool,
    /// regent: `heartbeat_seconds`: push a fresh update when nothing was delivered for this long.
    pub heartbeat: Option<Duration>,
}

/// Reads `status` from the raw tree. `services` are the configured service names in config
/// order (OPA defaults to the first one).
pub fn parse(v: &mut Validator, services: &[String]) -> Option<StatusConfig> {
    let section = v.get("status")?;
    if !section.is_object() {
        v.errors
            .push(format!("status: expected a mapping, got {section}"));
        return None;
    }
    let service = v.string("status.service").filter(|s| !s.is_empty());
    let plugin = v.string("status.plugin");
    let console = v.bool("status.console").unwrap_or(false);
    let prometheus = v.bool("status.prometheus").unwrap_or(false);
    if plugin.is_none() && service.is_none() && services.is_empty() && !console && !prometheus {
        return None;
    }
    // regent has no custom plugins, so no plugin name can be valid.
    if let Some(name) = plugin {
        v.errors
            .push(format!("invalid plugin name {name:?} in status"));
    }
    let service = match service {
        Some(name) if !services.contains(&name) => {
            v.errors
                .push(format!("invalid service name {name:?} in status"));
            None
        }
        Some(name) => Some(name),
        // With console or prometheus on, OPA cannot tell whether an upload was wanted too, so
        // it picks no default service.
        None if !console && !prometheus => services.first().cloned(),
        None => None,
    };
    let partition_name = v.string("status.partition_name").unwrap_or_default();
    let trigger = match v.string("status.trigger").as_deref() {
        None | Some("periodic") => Trigger::Periodic,
        Some("manual") => Trigger::Manual,
        Some(other) => {
            v.errors.push(format!(
                "invalid status config: invalid trigger mode {other:?} (want \"periodic\" or \"manual\")"
            ));
            Trigger::Periodic
        }
    };
    let buckets = v
        .floats("status.prometheus_config.collectors.bundle_loading_duration_ns.buckets")
        .unwrap_or_else(default_bundle_loading_buckets);
    let min_delay = v
        .seconds("status.retry.min_delay_seconds")
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_RETRY_MIN_DELAY);
    let max_delay = v
        .seconds("status.retry.max_delay_seconds")
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_RETRY_MAX_DELAY);
    if min_delay.is_zero() || min_delay > max_delay {
        v.errors.push(format!(
            "status.retry: min_delay_seconds ({}) must be positive and at most max_delay_seconds ({})",
            min_delay.as_secs_f64(),
            max_delay.as_secs_f64()
        ));
    }
    let skip_unchanged = v.bool("status.skip_unchanged").unwrap_or(false);
    let heartbeat = v
        .seconds("status.heartbeat_seconds")
        .map(Duration::from_secs_f64)
        .filter(|d| !d.is_zero());
    Some(StatusConfig {
        service,
        partition_name,
        console,
        prometheus,
        bundle_loading_duration_buckets: buckets,
        trigger,
        retry: RetryPolicy {
            min_delay,
            max_delay,
        },
        skip_unchanged,
        heartbeat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value as Json};

    fn run(raw: Json, services: &[&str]) -> (Option<StatusConfig>, Vec<String>) {
        let mut errors = Vec::new();
        let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        let mut v = Validator {
            raw: &raw,
            errors: &mut errors,
        };
        let c = parse(&mut v, &services);
        (c, errors)
    }

    #[test]
    fn absent_or_empty_without_services_is_disabled() {
        assert_eq!(run(json!({}), &["a"]).0, None);
        assert_eq!(run(json!({"status": {}}), &[]).0, None);
        assert_eq!(run(json!({"status": {"partition_name": "x"}}), &[]).0, None);
    }

    #[test]
    fn service_defaults_to_the_first_service() {
        let (c, errors) = run(json!({"status": {}}), &["acme", "other"]);
        assert!(errors.is_empty(), "{errors:?}");
        let c = c.unwrap();
        assert_eq!(c.service.as_deref(), Some("acme"));
        assert_eq!(c.trigger, Trigger::Periodic);
        assert_eq!(c.bundle_loading_duration_buckets.len(), 20);
        assert_eq!(c.bundle_loading_duration_buckets[0], 1000.0);
        assert_eq!(c.bundle_loading_duration_buckets[19], 524_288_000.0);
        assert_eq!(c.retry.min_delay, DEFAULT_RETRY_MIN_DELAY);
        assert!(!c.skip_unchanged);
        assert_eq!(c.heartbeat, None);
    }

    #[test]
    fn console_or_prometheus_suppress_the_default_service() {
        let (c, _) = run(json!({"status": {"console": true}}), &["acme"]);
        assert_eq!(c.unwrap().service, None);
        let (c, _) = run(json!({"status": {"prometheus": true}}), &[]);
        let c = c.unwrap();
        assert!(c.prometheus);
        assert_eq!(c.service, None);
        let (c, _) = run(
            json!({"status": {"prometheus": true, "service": "acme"}}),
            &["acme"],
        );
        assert_eq!(c.unwrap().service.as_deref(), Some("acme"));
    }

    #[test]
    fn validation_errors_match_opa() {
        let (_, errors) = run(json!({"status": {"service": "nope"}}), &["acme"]);
        assert_eq!(errors, vec![r#"invalid service name "nope" in status"#]);
        let (_, errors) = run(json!({"status": {"plugin": "custom"}}), &[]);
        assert_eq!(errors, vec![r#"invalid plugin name "custom" in status"#]);
        let (_, errors) = run(
            json!({"status": {"console": "yes", "trigger": "sometimes"}}),
            &["a"],
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[1].contains("invalid trigger mode \"sometimes\""));
    }

    #[test]
    fn regent_extras_and_buckets_parse() {
        let (c, errors) = run(
            json!({"status": {
                "trigger": "manual",
                "partition_name": "p1",
                "skip_unchanged": true,
                "heartbeat_seconds": 2.5,
                "retry": {"min_delay_seconds": 0.1, "max_delay_seconds": 2},
                "prometheus_config": {"collectors": {"bundle_loading_duration_ns": {"buckets": [1, 10, 100]}}},
            }}),
            &["acme"],
        );
        assert!(errors.is_empty(), "{errors:?}");
        let c = c.unwrap();
        assert_eq!(c.trigger, Trigger::Manual);
        assert_eq!(c.partition_name, "p1");
        assert!(c.skip_unchanged);
        assert_eq!(c.heartbeat, Some(Duration::from_millis(2500)));
        assert_eq!(c.retry.min_delay, Duration::from_millis(100));
        assert_eq!(c.retry.max_delay, Duration::from_secs(2));
        assert_eq!(c.bundle_loading_duration_buckets, vec![1.0, 10.0, 100.0]);

        let (_, errors) = run(
            json!({"status": {"retry": {"min_delay_seconds": 5, "max_delay_seconds": 1}}}),
            &["acme"],
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

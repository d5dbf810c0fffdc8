//! `bundles`: which bundles to load, from where, how often, and whether to keep a copy on disk.
//!
//! Validation follows OPA's rules and wording (`invalid configuration for bundle "x": ...`);
//! the key path is prefixed as for every other config error.

use std::path::PathBuf;
use std::time::Duration;

use super::{scoped, Validator};

/// OPA's default `polling.min_delay_seconds`.
pub const DEFAULT_MIN_DELAY_SECONDS: f64 = 60.0;
/// OPA's default `polling.max_delay_seconds`.
pub const DEFAULT_MAX_DELAY_SECONDS: f64 = 120.0;
/// OPA's default `size_limit_bytes` (1 GiB).
pub const DEFAULT_SIZE_LIMIT_BYTES: u64 = 1_073_741_824;
/// A bundle without `resource` is fetched from `bundles/<name>`.
pub const DEFAULT_RESOURCE_PREFIX: &str = "bundles";

#[derive(Debug, Clone, PartialEq)]
pub struct BundleConfig {
    pub name: String,
    pub source: BundleSource,
    pub polling: PollingConfig,
    pub persist: bool,
    /// Cap on each file in the bundle, and (beyond OPA) on the bundle's whole inflated size.
    pub size_limit_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BundleSource {
    /// Downloaded from `<service url>/<resource>`.
    Service { service: String, resource: String },
    /// A `file://` resource: a tarball read once at start.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PollingConfig {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Ask the server to hold the request open this long (`Prefer: wait=N`).
    pub long_polling_timeout: Option<Duration>,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            min_delay: Duration::from_secs_f64(DEFAULT_MIN_DELAY_SECONDS),
            max_delay: Duration::from_secs_f64(DEFAULT_MAX_DELAY_SECONDS),
            long_polling_timeout: None,
        }
    }
}

/// Reads `bundles` from the raw tree; `services` (declared names, in order) resolves each
/// bundle's service and its default, the first one.
pub fn parse(v: &mut Validator, services: &[String]) -> Vec<BundleConfig> {
    let Some(node) = v.get("bundles").cloned() else {
        return Vec::new();
    };
    let Some(map) = node.as_object() else {
        v.errors
            .push(format!("bundles: expected a mapping, got {node}"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, node) in map {
        if node.is_null() {
            continue;
        }
        let prefix = format!("bundles.{name}");
        if let Some(b) = scoped(v.errors, node, &prefix, |bv| bundle(bv, name, services)) {
            out.push(b);
        }
    }
    out
}

fn invalid(v: &mut Validator, name: &str, message: impl std::fmt::Display) {
    v.errors.push(format!(
        ": invalid configuration for bundle {name:?}: {message}"
    ));
}

fn bundle(v: &mut Validator, name: &str, services: &[String]) -> Option<BundleConfig> {
    if !v.raw.is_object() {
        v.errors
            .push(format!(": expected a mapping, got {}", v.raw));
        return None;
    }
    // The name becomes a directory under the persistence directory: keep it inside.
    if name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|seg| seg == ".." || seg == "." || seg.is_empty())
        || name.contains('\\')
    {
        invalid(
            v,
            name,
            "bundle names must be relative slash-separated paths without '.' or '..' segments",
        );
        return None;
    }
    let resource = v.string("resource").unwrap_or_default();
    let service = v.string("service").unwrap_or_default();
    let source = if let Some(path) = resource.strip_prefix("file://") {
        if path.is_empty() {
            invalid(v, name, "file:// resource without a path");
            return None;
        }
        BundleSource::File(PathBuf::from(path))
    } else {
        let found = if service.is_empty() {
            services.first().cloned()
        } else {
            services.contains(&service).then(|| service.clone())
        };
        let Some(service) = found else {
            invalid(v, name, format!("service name {service:?} not found"));
            return None;
        };
        let resource = if resource.is_empty() {
            format!("{DEFAULT_RESOURCE_PREFIX}/{name}")
        } else {
            resource
        };
        BundleSource::Service { service, resource }
    };
    if let Some(trigger) = v.string("trigger") {
        match trigger.as_str() {
            "periodic" => {}
            "manual" => invalid(
                v,
                name,
                "trigger mode \"manual\" is not supported by regent yet (it has no API to trigger a download)",
            ),
            other => invalid(
                v,
                name,
                format!("invalid trigger mode {other:?} (want \"periodic\" or \"manual\")"),
            ),
        }
    }
    if v.get("signing").is_some() {
        // Accepting the key and skipping verification would be worse than refusing to start.
        invalid(
            v,
            name,
            "bundle signature verification is not supported by regent yet",
        );
    }
    let polling = polling(v, name);
    let persist = v.bool("persist").unwrap_or(false);
    let size_limit_bytes = match v.get("size_limit_bytes").and_then(|n| n.as_i64()) {
        Some(n) if n > 0 => n as u64,
        Some(_) => DEFAULT_SIZE_LIMIT_BYTES,
        None => v
            .u64("size_limit_bytes")
            .unwrap_or(DEFAULT_SIZE_LIMIT_BYTES),
    };
    Some(BundleConfig {
        name: name.to_string(),
        source,
        polling: polling?,
        persist,
        size_limit_bytes,
    })
}

fn polling(v: &mut Validator, name: &str) -> Option<PollingConfig> {
    let min = v.seconds("polling.min_delay_seconds");
    let max = v.seconds("polling.max_delay_seconds");
    let (min, max) = match (min, max) {
        (Some(min), Some(max)) if max < min => {
            invalid(v, name, "max polling delay must be >= min polling delay");
            return None;
        }
        (Some(min), Some(max)) => (min, max),
        (Some(_), None) => {
            invalid(v, name, "polling configuration missing 'max_delay_seconds'");
            return None;
        }
        (None, Some(_)) => {
            invalid(v, name, "polling configuration missing 'min_delay_seconds'");
            return None;
        }
        (None, None) => (DEFAULT_MIN_DELAY_SECONDS, DEFAULT_MAX_DELAY_SECONDS),
    };
    let long_polling_timeout = match v.seconds("polling.long_polling_timeout_seconds") {
        Some(t) if t < 1.0 => {
            invalid(v, name, "'long_polling_timeout_seconds' must be at least 1");
            return None;
        }
        t => t.map(Duration::from_secs_f64),
    };
    Some(PollingConfig {
        min_delay: Duration::from_secs_f64(min),
        max_delay: Duration::from_secs_f64(max),
        long_polling_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    #[test]
    fn defaults_follow_opa() {
        let c = Config::from_raw(json!({
            "services": {"acme": {"url": "http://acme"}, "other": {"url": "http://other"}},
            "bundles": {"authz/v1": {}, "local": {"resource": "file:///tmp/b.tar.gz"}},
        }))
        .unwrap();
        let b = &c.bundles[0];
        assert_eq!(b.name, "authz/v1");
        assert_eq!(
            b.source,
            BundleSource::Service {
                service: "acme".into(),
                resource: "bundles/authz/v1".into()
            }
        );
        assert_eq!(b.polling, PollingConfig::default());
        assert_eq!(b.size_limit_bytes, DEFAULT_SIZE_LIMIT_BYTES);
        assert!(!b.persist);
        assert_eq!(
            c.bundles[1].source,
            BundleSource::File("/tmp/b.tar.gz".into())
        );
    }

    #[test]
    fn polling_errors_use_opas_words() {
        let err = Config::from_raw(json!({
            "services": [{"name": "s", "url": "http://s"}],
            "bundles": {
                "a": {"polling": {"min_delay_seconds": 10}},
                "b": {"polling": {"min_delay_seconds": 10, "max_delay_seconds": 5}},
                "c": {"polling": {"long_polling_timeout_seconds": 0}},
                "d": {"service": "nope"},
                "../e": {},
                "f": {"trigger": "sometimes"},
            }
        }))
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "bundles.a: invalid configuration for bundle \"a\": polling configuration missing 'max_delay_seconds'",
            "bundles.b: invalid configuration for bundle \"b\": max polling delay must be >= min polling delay",
            "bundles.c: invalid configuration for bundle \"c\": 'long_polling_timeout_seconds' must be at least 1",
            "bundles.d: invalid configuration for bundle \"d\": service name \"nope\" not found",
            "bundles.../e: invalid configuration for bundle \"../e\"",
            "bundles.f: invalid configuration for bundle \"f\": invalid trigger mode \"sometimes\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(err.0.len(), 6, "{text}");
    }

    #[test]
    fn bundles_without_services_are_an_error() {
        let err = Config::from_raw(json!({"bundles": {"a": {}}})).unwrap_err();
        assert!(
            err.to_string().contains("service name \"\" not found"),
            "{err}"
        );
    }
}

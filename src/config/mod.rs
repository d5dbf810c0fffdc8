//! Configuration: OPA's YAML config file with `--set` overrides and `${ENV}` substitution.
//!
//! The file is read raw (a JSON tree), overrides are applied to the tree, and only then is it
//! validated into [`Config`]; every problem found is reported at once with its key path.
//! Each concept with more than a handful of keys lives in its own file (`services.rs`,
//! `bundles.rs`); [`Config::active`] renders what `GET /v1/config` shows.

pub mod active;
pub mod bundles;
pub mod decisions;
pub mod health;
pub mod services;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};
use thiserror::Error;

/// OPA's default `server.decoding.max_length`: 256 MiB.
pub const DEFAULT_MAX_LENGTH: u64 = 268_435_456;
/// OPA's default `server.decoding.gzip.max_length`: 512 MiB.
pub const DEFAULT_GZIP_MAX_LENGTH: u64 = 536_870_912;
/// OPA's default `http_request_duration_seconds` buckets.
pub const DEFAULT_HTTP_BUCKETS: [f64; 10] = [
    1e-06, 5e-06, 1e-05, 5e-05, 0.0001, 0.0005, 0.001, 0.01, 0.1, 1.0,
];
pub const DEFAULT_DECISION: &str = "/system/main";
pub const DEFAULT_AUTHORIZATION_DECISION: &str = "/system/authz/allow";
/// Where persisted bundles go when `persistence_directory` is not set: `$PWD/.opa`.
pub const DEFAULT_PERSISTENCE_DIRECTORY: &str = ".opa";

/// OPA keys regent accepts but does not act on yet; each is named in a startup warning.
const NOT_YET_SUPPORTED: [&str; 7] = [
    "decision_logs",
    "keys",
    "plugins",
    "caching",
    "nd_builtin_cache",
    "distributed_tracing",
    "storage",
];
/// OPA keys whose absence of support would change what regent serves: refusing to start is
/// safer than running without the policy the operator expects.
const REFUSED: [(&str, &str); 2] = [
    ("discovery", "discovery is not supported by regent yet"),
    (
        "bundle",
        "the legacy single-bundle configuration is not supported; use \"bundles\"",
    ),
];

#[derive(Debug, Clone)]
pub struct DecodingLimits {
    pub max_length: u64,
    pub gzip_max_length: u64,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub http_request_duration_buckets: Vec<f64>,
    /// `server.metrics.http_instrumentation` (regent only, default true): a diagnostic knob that
    /// stops observing HTTP requests, to measure what the observation costs. `/metrics` stays.
    pub http_instrumentation: bool,
    /// `server.metrics.decisions` (regent only): see `decisions.rs`.
    pub decisions: decisions::DecisionMetricsConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub decoding: DecodingLimits,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration as given, after overrides: what `GET /v1/config` starts from.
    pub raw: Json,
    pub server: ServerConfig,
    pub default_decision: String,
    pub default_authorization_decision: String,
    /// Configured labels plus the injected `id` (the instance id) and `version`, as OPA reports
    /// them in `GET /v1/config` and status updates.
    pub labels: BTreeMap<String, String>,
    /// A random id fixed for the life of the process (`labels.id`).
    pub instance_id: String,
    /// Services in declaration order; the first is the default for bundles.
    pub services: Vec<services::ServiceConfig>,
    pub bundles: Vec<bundles::BundleConfig>,
    /// `status:`; `None` when the status plugin is not enabled.
    pub status: Option<status::StatusConfig>,
    /// `persistence_directory` as configured; see [`Config::persistence_directory`].
    pub persistence_directory: Option<PathBuf>,
    /// Configured keys regent ignores, for a startup warning.
    pub warnings: Vec<String>,
    /// Regent's `health:` section (opt-in `/health` checks beyond OPA's).
    pub health: health::HealthConfig,
}

#[derive(Debug, Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(Json::Object(Map::new())).expect("the empty config is valid")
    }
}

impl Config {
    /// Reads the file (if any), substitutes `${ENV}`, applies `--set key=value` overrides, validates.
    pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Config, ConfigErrors> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
                let text = substitute_env(&text);
                let value: Json = yaml_serde::from_str(&text)
                    .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
                match value {
                    Json::Null => Json::Object(Map::new()),
                    v @ Json::Object(_) => v,
                    _ => {
                        return Err(ConfigErrors(vec![format!(
                            "{}: config must be a mapping",
                            path.display()
                        )]))
                    }
                }
            }
            None => Json::Object(Map::new()),
        };
        let mut errors = Vec::new();
        for set in sets {
            if let Err(e) = apply_set(&mut raw, set) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Config::from_raw(raw)
    }

    pub fn from_raw(raw: Json) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut v = Validator {
            raw: &raw,
            errors: &mut errors,
        };
        let max_length = v
            .u64("server.decoding.max_length")
            .unwrap_or(DEFAULT_MAX_LENGTH);
        let gzip_max_length = v
            .u64("server.decoding.gzip.max_length")
            .unwrap_or(DEFAULT_GZIP_MAX_LENGTH);
        let buckets = v
            .floats("server.metrics.prom.http_request_duration_seconds.buckets")
            .unwrap_or_else(|| DEFAULT_HTTP_BUCKETS.to_vec());
        let http_instrumentation = v
            .bool("server.metrics.http_instrumentation")
            .unwrap_or(true);
        let decision_metrics = decisions::parse(&mut v);
        let default_decision = v
            .string("default_decision")
            .unwrap_or_else(|| DEFAULT_DECISION.into());
        let default_authorization_decision = v
            .string("default_authorization_decision")
            .unwrap_or_else(|| DEFAULT_AUTHORIZATION_DECISION.into());
        let mut labels = v.string_map("labels");
        let services = services::parse(&mut v);
        let service_names = services::declared_names(v.get("services"));
        let bundles = bundles::parse(&mut v, &service_names);
        let status = status::parse(&mut v, &service_names);
        let persistence_directory = v.string("persistence_directory").map(PathBuf::from);
        let health = health::parse(v.raw, v.errors);
        for (key, why) in REFUSED {
            if v.get(key).is_some() {
                v.errors.push(format!("{key}: {why}"));
            }
        }
        let warnings = NOT_YET_SUPPORTED
            .iter()
            .filter(|key| v.get(key).is_some())
            .map(|key| {
                format!("configuration key {key:?} is not supported by regent yet and is ignored")
            })
            .collect();
        let instance_id = uuid::Uuid::new_v4().to_string();
        labels.insert("id".into(), instance_id.clone());
        labels.insert("version".into(), crate::build::VERSION.into());
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            server: ServerConfig {
                decoding: DecodingLimits {
                    max_length,
                    gzip_max_length,
                },
                metrics: MetricsConfig {
                    http_request_duration_buckets: buckets,
                    http_instrumentation,
                    decisions: decision_metrics,
                },
            },
            default_decision: normalise_decision(&default_decision),
            default_authorization_decision: normalise_decision(&default_authorization_decision),
            labels,
            instance_id,
            services,
            bundles,
            status,
            persistence_directory,
            warnings,
            health,
            raw,
        })
    }

    /// The directory persisted bundles live under: `persistence_directory`, or `$PWD/.opa`.
    pub fn persistence_directory(&self) -> PathBuf {
        match &self.persistence_directory {
            Some(dir) => dir.clone(),
            None => std::env::current_dir()
                .unwrap_or_default()
                .join(DEFAULT_PERSISTENCE_DIRECTORY),
        }
    }
}

/// Runs `f` on a validator rooted at `node` and files its errors under `prefix`, so nested
/// sections whose names may contain dots (service and bundle names) keep exact key paths.
/// An error starting with `:` is about the section itself (`bundles.x: ...`).
pub fn scoped<T>(
    errors: &mut Vec<String>,
    node: &Json,
    prefix: &str,
    f: impl FnOnce(&mut Validator) -> T,
) -> T {
    let mut local = Vec::new();
    let out = f(&mut Validator {
        raw: node,
        errors: &mut local,
    });
    errors.extend(local.into_iter().map(|e| {
        if e.starts_with(':') {
            format!("{prefix}{e}")
        } else {
            format!("{prefix}.{e}")
        }
    }));
    out
}

/// OPA accepts `system/main` and `/system/main` alike.
fn normalise_decision(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

/// The largest number of seconds any config key takes (about 31 years): far beyond any sensible
/// delay, and small enough that adding it to a clock reading cannot overflow.
pub const MAX_SECONDS: f64 = 1e9;

/// Reads typed values out of the raw tree, collecting errors with their key paths.
pub struct Validator<'a> {
    pub raw: &'a Json,
    pub errors: &'a mut Vec<String>,
}

impl Validator<'_> {
    pub fn get(&self, key: &str) -> Option<&Json> {
        key.split('.')
            .try_fold(self.raw, |node, seg| node.get(seg))
            .filter(|v| !v.is_null())
    }

    pub fn u64(&mut self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        let n = v.as_u64();
        if n.is_none() {
            self.errors
                .push(format!("{key}: expected a non-negative integer, got {v}"));
        }
        n
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        let b = v.as_bool();
        if b.is_none() {
            self.errors
                .push(format!("{key}: expected a boolean, got {v}"));
        }
        b
    }

    /// A non-negative number of seconds; fractions are accepted (OPA takes whole seconds).
    /// Bounded by [`MAX_SECONDS`] so that every later `Duration` and `Instant` sum is safe.
    pub fn seconds(&mut self, key: &str) -> Option<f64> {
        let v = self.get(key)?;
        match v.as_f64() {
            Some(n) if (0.0..=MAX_SECONDS).contains(&n) => Some(n),
            _ => {
                self.errors.push(format!(
                    "{key}: expected a number of seconds from 0 to {MAX_SECONDS}, got {v}"
                ));
                None
            }
        }
    }

    pub fn string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let v = self.get(key)?;
        let list: Option<Vec<String>> = v.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect()
        });
        if list.is_none() {
            self.errors
                .push(format!("{key}: expected a list of strings, got {v}"));
        }
        list
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        let v = self.get(key)?;
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.errors
                    .push(format!("{key}: expected a string, got {v}"));
                None
            }
        }
    }

    pub fn floats(&mut self, key: &str) -> Option<Vec<f64>> {
        let v = self.get(key)?;
        let list: Option<Vec<f64>> = v
            .as_array()
            .and_then(|items| items.iter().map(Json::as_f64).collect());
        match list {
            Some(l) if l.windows(2).all(|w| w[0] < w[1]) && !l.is_empty() => Some(l),
            _ => {
                self.errors.push(format!(
                    "{key}: expected a non-empty increasing list of numbers, got {v}"
                ));
                None
            }
        }
    }

    pub fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        let raw = self.raw;
        let Some(v) = key
            .split('.')
            .try_fold(raw, |node, seg| node.get(seg))
            .filter(|v| !v.is_null())
        else {
            return BTreeMap::new();
        };
        let Some(map) = v.as_object() else {
            self.errors
                .push(format!("{key}: expected a mapping, got {v}"));
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, val) in map {
            match val {
                Json::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Json::Number(_) | Json::Bool(_) => {
                    out.insert(k.clone(), val.to_string());
                }
                _ => self
                    .errors
                    .push(format!("{key}.{k}: expected a scalar, got {val}")),
            }
        }
        out
    }
}

/// Replaces `${NAME}` with the environment variable's value (empty when unset), as OPA does.
pub fn substitute_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                let name = &rest[start + 2..start + 2 + end];
                out.push_str(&std::env::var(name).unwrap_or_default());
                rest = &rest[start + 2 + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Applies one `--set a.b.c=value`; the value is read as a YAML scalar (`true`, `3`, `x`).
fn apply_set(raw: &mut Json, set: &str) -> Result<(), String> {
    let (key, value) = set
        .split_once('=')
        .ok_or_else(|| format!("--set {set}: expected key=value"))?;
    let value: Json = yaml_serde::from_str(value).unwrap_or(Json::String(value.to_string()));
    let mut node = raw;
    let segments: Vec<&str> = key.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let map = match node {
            Json::Object(map) => map,
            other => {
                *other = Json::Object(Map::new());
                other.as_object_mut().expect("just made an object")
            }
        };
        if i + 1 == segments.len() {
            map.insert(seg.to_string(), value);
            return Ok(());
        }
        node = map
            .entry(seg.to_string())
            .or_insert_with(|| Json::Object(Map::new()));
    }
    Err(format!("--set {set}: empty key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_opa() {
        let c = Config::default();
        assert_eq!(c.server.decoding.max_length, DEFAULT_MAX_LENGTH);
        assert_eq!(c.default_decision, "/system/main");
        assert_eq!(c.server.metrics.http_request_duration_buckets.len(), 10);
        assert!(c.server.metrics.http_instrumentation);
    }

    #[test]
    fn set_overrides_and_errors_are_collected() {
        let mut raw = Json::Object(Map::new());
        apply_set(&mut raw, "server.decoding.max_length=10").unwrap();
        apply_set(&mut raw, "default_decision=a/b").unwrap();
        apply_set(&mut raw, "server.metrics.http_instrumentation=false").unwrap();
        let c = Config::from_raw(raw).unwrap();
        assert_eq!(c.server.decoding.max_length, 10);
        assert!(!c.server.metrics.http_instrumentation);
        assert_eq!(c.default_decision, "/a/b");

        let raw = serde_json::json!({"server": {"decoding": {"max_length": "x"}}, "labels": []});
        let err = Config::from_raw(raw).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }

    #[test]
    fn huge_delays_are_config_errors_not_panics() {
        let huge = serde_json::json!({
            "services": {"s": {"url": "http://127.0.0.1:1"}},
            "bundles": {"b": {"service": "s", "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1e300}}},
            "status": {"service": "s", "retry": {"min_delay_seconds": 1e300, "max_delay_seconds": 1e301}, "heartbeat_seconds": 1e20},
            "health": {"bundles": {"max_activation_age": 1e300}},
        });
        let err = Config::from_raw(huge).unwrap_err().to_string();
        for key in [
            "max_delay_seconds",
            "status.retry.min_delay_seconds",
            "heartbeat_seconds",
            "max_activation_age",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }

    #[test]
    fn env_substitution() {
        std::env::set_var("REGENT_TEST_TOKEN", "s3cret");
        assert_eq!(substitute_env("t: ${REGENT_TEST_TOKEN}!"), "t: s3cret!");
        assert_eq!(substitute_env("t: ${REGENT_UNSET_VAR_X}"), "t: ");
    }
}

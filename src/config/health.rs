//! `health:` — regent's own options for `GET /health` (OPA has no such section).
//!
//! Everything here is opt-in: with the section absent `/health` behaves exactly as OPA's. The
//! options make `?bundles` stricter for operators who would rather have an instance taken out of
//! rotation than have it serve stale policy (OPA issues #4338, #3554):
//!
//! ```yaml
//! health:
//!   bundles:
//!     max_activation_age: 15m       # fail when a bundle's last activation is older than this
//!     fail_on_download_error: true  # fail while a bundle's last download attempt failed
//! ```
//!
//! Problems are collected with their key paths, like the rest of the configuration.

use std::time::Duration;

use serde_json::Value as Json;

/// Regent's `/health` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthConfig {
    pub bundles: BundleHealth,
}

/// Extra conditions under which `/health?bundles` fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleHealth {
    /// Fail when a bundle's last successful activation is older than this (or never happened).
    pub max_activation_age: Option<Duration>,
    /// Fail while a bundle's last download attempt failed: the request itself failed, or the
    /// bundle it fetched could not be activated, so an older revision is still being served.
    pub fail_on_download_error: bool,
}

impl BundleHealth {
    /// True when any staleness check is switched on.
    pub fn enabled(&self) -> bool {
        self.max_activation_age.is_some() || self.fail_on_download_error
    }
}

/// Reads `health` from the raw configuration tree, pushing every problem onto `errors`.
pub fn parse(raw: &Json, errors: &mut Vec<String>) -> HealthConfig {
    let mut config = HealthConfig::default();
    let Some(section) = mapping(raw.get("health"), "health", &["bundles"], errors) else {
        return config;
    };
    let keys = ["max_activation_age", "fail_on_download_error"];
    let Some(bundles) = mapping(section.get("bundles"), "health.bundles", &keys, errors) else {
        return config;
    };
    if let Some(v) = present(bundles.get("max_activation_age")) {
        match duration(v) {
            Ok(d) => config.bundles.max_activation_age = Some(d),
            Err(e) => errors.push(format!("health.bundles.max_activation_age: {e}, got {v}")),
        }
    }
    if let Some(v) = present(bundles.get("fail_on_download_error")) {
        match v.as_bool() {
            Some(b) => config.bundles.fail_on_download_error = b,
            None => errors.push(format!(
                "health.bundles.fail_on_download_error: expected true or false, got {v}"
            )),
        }
    }
    config
}

fn present(v: Option<&Json>) -> Option<&Json> {
    v.filter(|v| !v.is_null())
}

/// The mapping at `key`, if set. Unknown keys are errors: a misspelt opt-in would otherwise
/// silently leave the check off.
fn mapping<'a>(
    v: Option<&'a Json>,
    key: &str,
    known: &[&str],
    errors: &mut Vec<String>,
) -> Option<&'a serde_json::Map<String, Json>> {
    let v = present(v)?;
    let Some(map) = v.as_object() else {
        errors.push(format!("{key}: expected a mapping, got {v}"));
        return None;
    };
    for k in map.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(format!(
            "{key}.{k}: unknown key (expected one of: {})",
            known.join(", ")
        ));
    }
    Some(map)
}

/// A positive duration: a number of seconds, or a Go-style string such as `90s`, `15m`, `1h30m`,
/// `1.5h`, `500ms`.
fn duration(v: &Json) -> Result<Duration, String> {
    let d = match v {
        Json::Number(n) => n
            .as_f64()
            .filter(|s| (0.0..=super::MAX_SECONDS).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or("expected a number of seconds from 0 to 1e9")?,
        Json::String(s) => parse_go_duration(s)?,
        _ => return Err("expected a duration such as \"15m\" or a number of seconds".into()),
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// Parses Go's `time.ParseDuration` syntax (without a sign): one or more `<number><unit>`.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let bad = || format!("invalid duration {text:?} (use e.g. \"90s\", \"15m\", \"1h30m\")");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == &rest[..unit_len])
            .map(|(_, s)| *s)
            .ok_or_else(bad)?;
        seconds += number * scale;
        rest = &rest[unit_len..];
    }
    if !(0.0..=super::MAX_SECONDS).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(raw: Json) -> (HealthConfig, Vec<String>) {
        let mut errors = Vec::new();
        let config = parse(&raw, &mut errors);
        (config, errors)
    }

    #[test]
    fn absent_means_opa_behaviour() {
        let (config, errors) = parsed(json!({}));
        assert!(errors.is_empty());
        assert_eq!(config, HealthConfig::default());
        assert!(!config.bundles.enabled());
    }

    #[test]
    fn both_options_are_read() {
        let (config, errors) = parsed(json!({"health": {"bundles": {
            "max_activation_age": "1h30m", "fail_on_download_error": true}}}));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            config.bundles.max_activation_age,
            Some(Duration::from_secs(5400))
        );
        assert!(config.bundles.fail_on_download_error);
        assert!(config.bundles.enabled());
    }

    #[test]
    fn durations_follow_go_syntax_or_seconds() {
        let d = |v: Json| duration(&v);
        assert_eq!(d(json!("90s")), Ok(Duration::from_secs(90)));
        assert_eq!(d(json!("1.5h")), Ok(Duration::from_secs(5400)));
        assert_eq!(d(json!("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(d(json!(30)), Ok(Duration::from_secs(30)));
        assert!(d(json!("15")).is_err(), "a unit is required");
        assert!(d(json!("15 minutes")).is_err());
        assert!(d(json!("")).is_err());
        assert!(d(json!("0s")).is_err());
        assert!(d(json!(-1)).is_err());
        assert!(d(json!(true)).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let (_, errors) = parsed(json!({"health": {"bundles": {
            "max_activation_age": "soon", "fail_on_download_error": "yes", "max_age": "1m"}}}));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("health.bundles.max_age: unknown key"));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("health.bundles.max_activation_age:")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("health.bundles.fail_on_download_error:")));

        let (_, errors) = parsed(json!({"health": []}));
        assert_eq!(
            errors,
            vec!["health: expected a mapping, got []".to_string()]
        );
    }
}

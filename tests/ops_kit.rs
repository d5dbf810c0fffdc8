//! The operator kit in `ops/`: the alerting rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and the Grafana dashboard is valid JSON whose every PromQL expression
//! passes promtool's parser (checked as recording rules, with Grafana's variables substituted).
//!
//! promtool comes from Debian's `prometheus` package (.ci/run installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops")
}

/// Runs promtool with `args` in `dir`; fails the test with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is required (Debian package `prometheus`; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alerting_rules_check_and_their_unit_tests_pass() {
    let dir = ops().join("prometheus");
    let out = promtool(&dir, &["check", "rules", "regent-alerts.yml"]);
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let out = promtool(&dir, &["test", "rules", "regent-alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has at least one unit test.
    let rules = std::fs::read_to_string(dir.join("regent-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("regent-alerts_test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test"
        );
    }
}

/// Every `expr` of every panel target, in order.
fn expressions(dashboard: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_valid_json_with_valid_promql() {
    let path = ops().join("grafana/regent-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Json = serde_json::from_str(&text).expect("the dashboard parses as JSON");
    assert_eq!(dashboard["uid"], "regent-overview");
    let mut ids: Vec<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().expect("panel id"))
        .collect();
    let panels = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels, "panel ids are unique");

    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 20, "{}", exprs.len());
    // What the dashboard must show.
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for series in [
        "http_request_duration_seconds_count",
        "http_request_duration_seconds_bucket",
        "regent_decisions_total",
        "regent_decision_duration_seconds_bucket",
        "regent_decision_stage_duration_seconds_bucket",
        "last_success_bundle_activation",
        "last_success_bundle_request",
        "plugin_status_gauge",
        "regent_status_push_failures_total",
        "process_resident_memory_bytes",
        "jemalloc_allocated_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(all.contains(series), "the dashboard does not use {series}");
    }

    // promtool has no expression checker, but `check rules` parses every rule's expression:
    // write each one as a recording rule, with Grafana's variables replaced by valid values.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(!expr.contains('$'), "unknown variable in {title}: {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard-rules.yml"), &rules).unwrap();
    let out = promtool(dir.path(), &["check", "rules", "dashboard-rules.yml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );

    // A broken expression is caught: the check above can fail.
    std::fs::write(
        dir.path().join("broken.yml"),
        "groups:\n  - name: b\n    rules:\n      - record: b:x\n        expr: \"sum by (a (rate(x[5m]))\"\n",
    )
    .unwrap();
    let broken = Command::new("promtool")
        .args(["check", "rules", "broken.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!broken.status.success());
}

#[test]
fn every_series_the_kit_uses_is_documented() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .unwrap();
    let rules = std::fs::read_to_string(ops().join("prometheus/regent-alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(ops().join("grafana/regent-dashboard.json")).unwrap();
    for name in [
        "regent_decisions_total",
        "regent_decision_duration_seconds",
        "regent_decision_stage_duration_seconds",
        "regent_status_push_failures_total",
        "regent_status_last_successful_push_timestamp_seconds",
    ] {
        assert!(
            rules.contains(name) || dashboard.contains(name),
            "{name} unused"
        );
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
    }
    assert!(docs.contains("ops/grafana/regent-dashboard.json"));
    assert!(docs.contains("ops/prometheus/regent-alerts.yml"));
}

//! Decision metrics end to end through the real binary: outcome counters, latency and stage
//! histograms moving per decision on every API (including an error and undefined decisions), the
//! cardinality bound under 10 000 distinct paths, exemplars in OpenMetrics, the protobuf format
//! with native buckets, the enable switch, and `promtool check metrics` on the output.

use crate::common;

use common::{json, promtool, tree, Regent};
use serde_json::json;

const POLICY: &str = r#"package authz

default allow := false

allow if input.user == "alice"

reason := "not alice" if input.user == "bob"

conflict := 1 if input.c
conflict := 2 if input.c
"#;

const MAIN: &str = r#"package system

main := {"answer": 42}
"#;

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

fn start(extra: &[&str]) -> (tempfile::TempDir, Regent) {
    let mut items = serde_json::Map::new();
    for i in 0..5000 {
        items.insert(format!("k{i}"), json!(i));
    }
    let data = json!({ "items": items }).to_string();
    let dir = tree(&[
        ("authz.rego", POLICY),
        ("main.rego", MAIN),
        ("data.json", &data),
    ]);
    let mut args = vec![dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let srv = Regent::start(&args);
    (dir, srv)
}

fn scrape(srv: &Regent, accept: Option<&str>) -> String {
    let mut req = srv.client.get(srv.url("/metrics"));
    if let Some(accept) = accept {
        req = req.header("Accept", accept);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().unwrap()
}

/// The value of the sample `name{labels}` whose labels include every pair given (exactly one).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples(text, name)
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?} matches {found:?}");
    found.first().copied()
}

/// `(label block, value)` of every sample named exactly `name`.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, rest) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None => ("", rest),
            };
            let v = rest.trim_start().split(' ').next()?;
            rest.starts_with(' ').then(|| (labels, v.parse().unwrap()))
        })
}

fn count(text: &str, api: &str, path: &str, outcome: &str) -> f64 {
    value(
        text,
        "regent_decisions_total",
        &[("api", api), ("outcome", outcome), ("path", path)],
    )
    .unwrap_or(0.0)
}

fn latency_count(text: &str, api: &str, path: &str) -> f64 {
    value(
        text,
        "regent_decision_duration_seconds_count",
        &[("api", api), ("path", path)],
    )
    .unwrap_or(0.0)
}

fn stage_count(text: &str, stage: &str) -> f64 {
    value(
        text,
        "regent_decision_stage_duration_seconds_count",
        &[("stage", stage)],
    )
    .unwrap_or(0.0)
}

#[test]
fn every_series_moves_as_decisions_are_made() {
    let (_dir, srv) = start(&[]);
    let before = scrape(&srv, None);
    assert!(
        !before.contains("regent_decisions_total"),
        "no decision yet"
    );

    // v1 POST: allow, deny; GET: deny.
    let (code, body) =
        json(srv.post_json("/v1/data/authz/allow", &json!({"input": {"user": "alice"}})));
    assert_eq!((code, body), (200, json!({"result": true})));
    let (code, _) = json(srv.post_json("/v1/data/authz/allow", &json!({"input": {"user": "bob"}})));
    assert_eq!(code, 200);
    let t = scrape(&srv, None);
    assert_eq!(count(&t, "v1", "authz/allow", "allow"), 1.0);
    assert_eq!(count(&t, "v1", "authz/allow", "deny"), 1.0);
    assert_eq!(latency_count(&t, "v1", "authz/allow"), 2.0);
    assert_eq!(stage_count(&t, "input_parse"), 2.0);
    assert_eq!(stage_count(&t, "query_eval"), 2.0);
    assert_eq!(stage_count(&t, "result_serialize"), 2.0);
    assert!(
        value(
            &t,
            "regent_decision_duration_seconds_sum",
            &[("path", "authz/allow")]
        )
        .unwrap()
            > 0.0
    );

    let resp = srv.get("/v1/data/authz/allow?input=%7B%22user%22%3A%22carol%22%7D");
    assert_eq!(resp.status(), 200);
    let t = scrape(&srv, None);
    assert_eq!(count(&t, "v1", "authz/allow", "deny"), 2.0);
    assert_eq!(stage_count(&t, "input_parse"), 3.0);

    // A value, then undefined on the same path (it has its series by then).
    let (_, body) =
        json(srv.post_json("/v1/data/authz/reason", &json!({"input": {"user": "bob"}})));
    assert_eq!(body, json!({"result": "not alice"}));
    let (_, body) = json(srv.post_json(
        "/v1/data/authz/reason",
        &json!({"input": {"user": "alice"}}),
    ));
    assert_eq!(body, json!({}));
    // Undefined on a path that does not exist: counted, but under `other`.
    let (code, _) = json(srv.post_json("/v1/data/authz/nothing", &json!({"input": {}})));
    assert_eq!(code, 200);
    // An error: conflicting values for a complete rule.
    let (code, body) =
        json(srv.post_json("/v1/data/authz/conflict", &json!({"input": {"c": true}})));
    assert_eq!(code, 500, "{body}");
    let t = scrape(&srv, None);
    assert_eq!(count(&t, "v1", "authz/reason", "value"), 1.0);
    assert_eq!(count(&t, "v1", "authz/reason", "undefined"), 1.0);
    assert_eq!(count(&t, "v1", "other", "undefined"), 1.0);
    assert_eq!(count(&t, "v1", "authz/nothing", "undefined"), 0.0);
    assert_eq!(count(&t, "v1", "authz/conflict", "error"), 1.0);
    assert_eq!(latency_count(&t, "v1", "authz/conflict"), 1.0);
    // An error answer is not serialised as a decision result.
    assert_eq!(stage_count(&t, "query_eval"), 7.0);
    assert_eq!(stage_count(&t, "result_serialize"), 6.0);

    // v0: the body is the input; undefined is a 404.
    let resp = srv
        .client
        .post(srv.url("/v0/data/authz/allow"))
        .json(&json!({"user": "alice"}))
        .send()
        .unwrap();
    assert_eq!(resp.text().unwrap().trim(), "true");
    let resp = srv
        .client
        .post(srv.url("/v0/data/authz/reason"))
        .json(&json!({"user": "alice"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The default decision.
    let resp = srv
        .client
        .post(srv.url("/"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t = scrape(&srv, None);
    assert_eq!(count(&t, "v0", "authz/allow", "allow"), 1.0);
    assert_eq!(count(&t, "v0", "authz/reason", "undefined"), 1.0);
    assert_eq!(count(&t, "default", "system/main", "value"), 1.0);
    assert_eq!(latency_count(&t, "default", "system/main"), 1.0);
    // The v1 series did not move.
    assert_eq!(count(&t, "v1", "authz/allow", "allow"), 1.0);
    assert_eq!(stage_count(&t, "query_eval"), 10.0);

    // Families are typed and documented; the output passes promtool without findings.
    assert!(t.contains("# TYPE regent_decisions_total counter"));
    assert!(t.contains("# TYPE regent_decision_duration_seconds histogram"));
    assert!(t.contains("# TYPE regent_decision_stage_duration_seconds histogram"));
    assert_eq!(promtool(&t), "");
}

#[test]
fn ten_thousand_distinct_paths_stay_bounded() {
    let (_dir, srv) = start(&[]);
    // Half the paths are defined (they may claim the 32 slots), half do not exist.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = srv.client.clone();
            let base = srv.url.clone();
            std::thread::spawn(move || {
                for i in (t..10_000).step_by(4) {
                    let resp = client
                        .get(format!("{base}/v1/data/items/k{i}"))
                        .send()
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let t = scrape(&srv, None);
    let mut paths: Vec<&str> = samples(&t, "regent_decisions_total")
        .filter_map(|(labels, _)| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix("path=\""))
                .map(|p| p.trim_end_matches('"'))
        })
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 33, "32 paths and other: {paths:?}");
    assert!(paths.contains(&"other"));
    assert!(paths
        .iter()
        .all(|p| *p == "other" || p.starts_with("items/k")));
    let total: f64 = samples(&t, "regent_decisions_total").map(|(_, v)| v).sum();
    assert_eq!(total, 10_000.0);
    assert_eq!(count(&t, "v1", "other", "undefined"), 5000.0);
    assert_eq!(count(&t, "v1", "other", "value"), 5000.0 - 32.0);
    let histograms = samples(&t, "regent_decision_duration_seconds_count").count();
    assert_eq!(histograms, 33);
    assert_eq!(promtool(&t), "");
}

#[test]
fn allow_list_and_max_paths_come_from_config() {
    let (_dir, srv) = start(&["--set", "server.metrics.decisions.paths=[authz/allow]"]);
    for path in ["authz/allow", "authz/reason", "items/k1"] {
        let (code, _) = json(srv.post_json(
            &format!("/v1/data/{path}"),
            &json!({"input": {"user": "bob"}}),
        ));
        assert_eq!(code, 200);
    }
    let t = scrape(&srv, None);
    assert_eq!(count(&t, "v1", "authz/allow", "deny"), 1.0);
    assert_eq!(count(&t, "v1", "other", "value"), 2.0);
    assert_eq!(count(&t, "v1", "authz/reason", "value"), 0.0);

    let (_dir, srv) = start(&["--set", "server.metrics.decisions.max_paths=1"]);
    for path in ["items/k1", "items/k2"] {
        json(srv.get(&format!("/v1/data/{path}")));
    }
    let t = scrape(&srv, None);
    assert_eq!(count(&t, "v1", "items/k1", "value"), 1.0);
    assert_eq!(count(&t, "v1", "other", "value"), 1.0);
}

#[test]
fn switched_off_nothing_is_exported() {
    let (_dir, srv) = start(&["--set", "server.metrics.decisions.enabled=false"]);
    let (code, _) = json(srv.post_json("/v1/data/authz/allow", &json!({"input": {}})));
    assert_eq!(code, 200);
    let t = scrape(&srv, None);
    assert!(!t.contains("regent_decision"), "{t}");
    // The HTTP series still move.
    assert!(t.contains("handler=\"v1/data\""));
}

#[test]
fn openmetrics_carries_exemplars_with_decision_and_trace_ids() {
    let (_dir, srv) = start(&[]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = srv
        .client
        .post(srv.url("/v1/data/authz/allow"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"input": {"user": "alice"}}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, _) = json(srv.post_json("/v0/data/authz/allow", &json!({"user": "x"})));
    assert_eq!(code, 200);

    let om = scrape(&srv, Some(OPENMETRICS));
    assert!(om.ends_with("# EOF\n"));
    let exemplars: Vec<&str> = om
        .lines()
        .filter(|l| l.starts_with("regent_decision_duration_seconds_bucket") && l.contains(" # {"))
        .collect();
    assert_eq!(exemplars.len(), 2, "one per decision so far: {om}");
    let traced = exemplars
        .iter()
        .find(|l| l.contains("api=\"v1\""))
        .expect("the v1 decision's exemplar");
    let (_, exemplar) = traced.split_once(" # ").unwrap();
    let (labels, rest) = exemplar
        .strip_prefix('{')
        .unwrap()
        .split_once("} ")
        .unwrap();
    let id = labels
        .strip_prefix("decision_id=\"")
        .and_then(|l| l.split_once('"'))
        .map(|(id, _)| id)
        .expect("decision_id first");
    assert!(uuid_v4(id), "{id}");
    assert!(
        labels.ends_with(&format!(",trace_id=\"{trace}\"")),
        "{labels}"
    );
    let mut fields = rest.split(' ');
    let observed: f64 = fields.next().unwrap().parse().unwrap();
    let at: f64 = fields.next().unwrap().parse().unwrap();
    assert!(observed > 0.0 && observed < 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 60.0);
    // The v0 request had no traceparent.
    let untraced = exemplars.iter().find(|l| l.contains("api=\"v0\"")).unwrap();
    assert!(!untraced.contains("trace_id"));
    // The exemplar sits on the bucket its value belongs to.
    let le: f64 = traced
        .split("le=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(|le| {
            if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            }
        })
        .unwrap();
    assert!(observed <= le);

    // The text format has no place for exemplars.
    let text = scrape(&srv, None);
    assert!(!text.contains("decision_id"));
}

fn uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

#[test]
fn protobuf_when_the_scraper_negotiates_it() {
    let (_dir, srv) = start(&["--set", "server.metrics.decisions.native_histograms=true"]);
    let (code, _) = json(srv.post_json("/v1/data/authz/allow", &json!({"input": {}})));
    assert_eq!(code, 200);
    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                  encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3";
    let resp = srv
        .client
        .get(srv.url("/metrics"))
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let body = resp.bytes().unwrap();
    // Walk the length-delimited messages: each is a MetricFamily whose field 1 is its name.
    let mut names = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let (len, used) = varint(rest);
        let msg = &rest[used..used + len as usize];
        assert_eq!(msg[0], 0x0a, "field 1, length-delimited");
        let (name_len, n) = varint(&msg[1..]);
        names.push(String::from_utf8(msg[1 + n..1 + n + name_len as usize].to_vec()).unwrap());
        rest = &rest[used + len as usize..];
    }
    assert!(
        names.contains(&"regent_decision_duration_seconds".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"http_request_duration_seconds".to_string()));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

fn varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("truncated varint");
}

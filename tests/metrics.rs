//! End-to-end tests of `/metrics` and `/metrics/alloc_bytes` through the real binary: OPA's
//! series (names, labels, buckets, help, types), the runtime families, format negotiation, gzip,
//! configurable buckets, cancellations, diagnostic listeners, `promtool check metrics`, and a real
//! Prometheus scraping regent with OPA's documented scrape config.
//!
//! promtool and prometheus come from Debian's `prometheus` package (.ci/run installs it); a test
//! that needs them fails when they are missing.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{json, promtool, Regent};
use serde_json::{json, Value as Json};

const DEFAULT_LE: [&str; 11] = [
    "1e-06", "5e-06", "1e-05", "5e-05", "0.0001", "0.0005", "0.001", "0.01", "0.1", "1", "+Inf",
];

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: samples in order, and `# HELP` / `# TYPE` per family name.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                out.help.insert(name.into(), help.into());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                out.kind.insert(name.into(), kind.into());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                out.samples.push(parse_sample(line));
            }
        }
        out
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels).as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!("{name} {labels:?} matches {} samples", many.len()),
        }
    }
}

fn parse_sample(line: &str) -> Sample {
    // An OpenMetrics exemplar (` # {labels} value timestamp`) follows the sample's value.
    let line = line.split_once(" # ").map_or(line, |(sample, _)| sample);
    let (head, value) = line.rsplit_once(' ').unwrap();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').unwrap();
            let mut labels = BTreeMap::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").unwrap();
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().unwrap() {
                        (_, '\\') => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.to_string(), value);
                rest = after[end + 1..].trim_start_matches(',');
            }
            (name.to_string(), labels)
        }
    };
    Sample {
        name,
        labels,
        value,
    }
}

fn rbac(extra: &[&str]) -> Regent {
    let dir = common::examples().join("rbac");
    let mut args = vec![dir.to_str().unwrap().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Regent::start(&args)
}

fn scrape_at(client: &common::Client, base: &str) -> (reqwest::header::HeaderMap, String) {
    let resp = client.get(format!("{base}/metrics")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.text().unwrap())
}

fn scrape(srv: &Regent) -> Exposition {
    Exposition::parse(&scrape_at(&srv.client, &srv.url).1)
}

fn decide(srv: &Regent, n: usize) {
    let input = json!({"input": {"user": "bob", "action": "update", "object": "finance"}});
    for _ in 0..n {
        let (code, _) = json(srv.post_json("/v1/data/rbac/allow", &input));
        assert_eq!(code, 200);
    }
}

/// Sends a request head announcing a 100-byte body, part of the body, then hangs up.
fn abandon_upload(base: &str) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(
        b"POST /v1/data/rbac/allow HTTP/1.1\r\nHost: regent\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"input\":",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(conn);
}

/// Polls `check` until it returns `Some`, for at most `limit`.
fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn opa_http_series_with_names_labels_buckets_help_and_types() {
    let srv = rbac(&[]);
    let before = scrape(&srv);
    assert!(
        !before.kind.contains_key("http_request_duration_seconds"),
        "an unobserved family is left out, as client_golang does"
    );

    decide(&srv, 3);
    assert_eq!(srv.get("/v1/data/rbac").status(), 200);
    let delete = srv.client.delete(srv.url("/v1/query")).send().unwrap();
    assert_eq!(delete.status(), 405);
    let head = srv.client.head(srv.url("/v1/data")).send().unwrap();
    assert_eq!(head.status(), 405);
    assert_eq!(srv.get("/v1/data/rbac/").status(), 301);
    assert_eq!(srv.get("/no/such/route").status(), 404);
    assert_eq!(srv.get("/metrics/alloc_bytes").status(), 200);

    let (headers, text) = scrape_at(&srv.client, &srv.url);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let m = Exposition::parse(&text);
    assert_eq!(m.kind["http_request_duration_seconds"], "histogram");
    assert_eq!(
        m.help["http_request_duration_seconds"],
        "A histogram of duration for requests."
    );

    // Exactly the label names code, handler, method (+ le on buckets), lower-case methods.
    let histogram: Vec<&Sample> = m
        .samples
        .iter()
        .filter(|s| s.name.starts_with("http_request_duration_seconds"))
        .collect();
    for s in &histogram {
        let mut names: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        names.retain(|n| *n != "le");
        assert_eq!(names, ["code", "handler", "method"], "{s:?}");
    }
    let series: std::collections::BTreeSet<(String, String, String)> = histogram
        .iter()
        .map(|s| {
            (
                s.labels["code"].clone(),
                s.labels["handler"].clone(),
                s.labels["method"].clone(),
            )
        })
        .collect();
    let want: std::collections::BTreeSet<(String, String, String)> = [
        ("200", "v1/data", "post"),
        ("200", "v1/data", "get"),
        ("405", "catchall", "delete"),
        ("405", "v1/data", "head"),
        ("301", "v1/data", "get"),
    ]
    .iter()
    .map(|(c, h, m)| (c.to_string(), h.to_string(), m.to_string()))
    .collect();
    assert_eq!(
        series, want,
        "404s and /metrics[/alloc_bytes] are not observed"
    );

    // OPA's default buckets, in order, cumulative, +Inf equal to _count.
    let post = [("code", "200"), ("handler", "v1/data"), ("method", "post")];
    let buckets = m.find("http_request_duration_seconds_bucket", &post);
    let les: Vec<&str> = buckets.iter().map(|s| s.labels["le"].as_str()).collect();
    assert_eq!(les, DEFAULT_LE);
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    assert_eq!(buckets.last().unwrap().value, 3.0);
    assert_eq!(
        m.value("http_request_duration_seconds_count", &post),
        Some(3.0)
    );
    let sum = m.value("http_request_duration_seconds_sum", &post).unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    // A scrape of /metrics does not observe itself.
    let again = scrape(&srv);
    assert_eq!(
        again.value("http_request_duration_seconds_count", &post),
        Some(3.0)
    );
    assert!(again
        .samples
        .iter()
        .all(|s| s.labels.get("handler").map(String::as_str) != Some("metrics")));
}

#[test]
fn runtime_families_are_exported_without_go_names() {
    let srv = rbac(&[]);
    decide(&srv, 1);
    let m = scrape(&srv);
    let expect = [
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_virtual_memory_max_bytes", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_threads", "gauge"),
        ("jemalloc_allocated_bytes", "gauge"),
        ("jemalloc_active_bytes", "gauge"),
        ("jemalloc_resident_bytes", "gauge"),
        ("jemalloc_mapped_bytes", "gauge"),
        ("jemalloc_retained_bytes", "gauge"),
        ("jemalloc_metadata_bytes", "gauge"),
        ("jemalloc_allocations_total", "counter"),
        ("jemalloc_deallocations_total", "counter"),
        ("jemalloc_allocation_requests_total", "counter"),
        ("tokio_workers", "gauge"),
        ("tokio_alive_tasks", "gauge"),
        ("tokio_global_queue_depth", "gauge"),
        ("tokio_worker_busy_seconds_total", "counter"),
        ("tokio_worker_parks_total", "counter"),
        ("regent_build_info", "gauge"),
    ];
    for (name, kind) in expect {
        assert_eq!(m.kind.get(name).map(String::as_str), Some(kind), "{name}");
        assert!(!m.help[name].is_empty(), "{name} has help");
        assert!(!m.find(name, &[]).is_empty(), "{name} has samples");
    }
    assert_eq!(
        m.help["process_cpu_seconds_total"],
        "Total user and system CPU time spent in seconds."
    );
    assert!(m.samples.iter().all(|s| !s.name.starts_with("go_")));

    // Honest figures: the allocator holds something, RSS covers it, the build is this one.
    let allocated = m.value("jemalloc_allocated_bytes", &[]).unwrap();
    let resident = m.value("jemalloc_resident_bytes", &[]).unwrap();
    let rss = m.value("process_resident_memory_bytes", &[]).unwrap();
    assert!(allocated > 0.0 && allocated <= resident && resident <= rss * 1.5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = m.value("process_start_time_seconds", &[]).unwrap();
    assert!(started <= now + 1.0 && started > now - 600.0, "{started}");
    let workers = m.value("tokio_workers", &[]).unwrap();
    assert!(workers >= 1.0);
    assert_eq!(
        m.find("tokio_worker_busy_seconds_total", &[]).len() as f64,
        workers
    );
    assert_eq!(
        m.value(
            "regent_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("engine", "regorus")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn openmetrics_when_the_scraper_asks() {
    let srv = rbac(&[]);
    decide(&srv, 2);
    let resp = srv
        .client
        .get(srv.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = Exposition::parse(&text);
    // `_total` counters keep their sample name under the suffix-less family name.
    assert_eq!(m.kind["process_cpu_seconds"], "counter");
    assert!(m.value("process_cpu_seconds_total", &[]).is_some());
    assert_eq!(m.kind["http_request_duration_seconds"], "histogram");
    let les: Vec<String> = m
        .find(
            "http_request_duration_seconds_bucket",
            &[("handler", "v1/data"), ("method", "post")],
        )
        .iter()
        .map(|s| s.labels["le"].clone())
        .collect();
    assert_eq!(les[9], "1.0", "canonical OpenMetrics le values: {les:?}");
    assert!(text.contains(
        "http_request_duration_seconds_count{code=\"200\",handler=\"v1/data\",method=\"post\"} 2\n"
    ));

    // Text stays the default, and a q-value preference for it wins.
    let resp = srv
        .client
        .get(srv.url("/metrics"))
        .header(
            "Accept",
            "application/openmetrics-text;q=0.2,text/plain;version=0.0.4",
        )
        .send()
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!resp.text().unwrap().contains("# EOF"));
}

#[test]
fn gzip_when_the_scraper_asks() {
    let srv = rbac(&[]);
    let raw = reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap();
    let plain = raw.get(srv.url("/metrics")).send().unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.text().unwrap();
    let resp = raw
        .get(srv.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let bytes = resp.bytes().unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(bytes.len() < text.len());
    let names = |t: &str| -> Vec<String> {
        Exposition::parse(t)
            .samples
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names(&text), names(&plain));
}

#[test]
fn buckets_come_from_config() {
    let srv = rbac(&[
        "--set",
        "server.metrics.prom.http_request_duration_seconds.buckets=[1e-7, 0.25, 2]",
    ]);
    decide(&srv, 1);
    let m = scrape(&srv);
    let les: Vec<String> = m
        .find(
            "http_request_duration_seconds_bucket",
            &[("handler", "v1/data")],
        )
        .iter()
        .map(|s| s.labels["le"].clone())
        .collect();
    assert_eq!(les, ["1e-07", "0.25", "2", "+Inf"]);
}

#[test]
fn invalid_buckets_stop_startup() {
    let dir = common::examples().join("rbac");
    let out = Command::new(common::binary())
        .args(["run", "--server", "--addr", "127.0.0.1:0", "--set"])
        .arg("server.metrics.prom.http_request_duration_seconds.buckets=[2, 1]")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.metrics.prom.http_request_duration_seconds.buckets"),
        "{stderr}"
    );
}

#[test]
fn client_that_hangs_up_mid_request_is_a_cancellation() {
    let srv = rbac(&[]);
    decide(&srv, 1);
    assert!(scrape(&srv)
        .find("http_request_cancellations", &[])
        .is_empty());
    abandon_upload(&srv.url);
    let m = eventually(Duration::from_secs(5), "the cancellation", || {
        let m = scrape(&srv);
        (!m.find("http_request_cancellations", &[]).is_empty()).then_some(m)
    });
    assert_eq!(m.kind["http_request_cancellations"], "counter");
    assert_eq!(
        m.help["http_request_cancellations"],
        "A count of cancelled requests."
    );
    // OPA labels cancellations with the raw method and the code the handler wrote.
    assert_eq!(
        m.value(
            "http_request_cancellations",
            &[("code", "400"), ("handler", "v1/data"), ("method", "POST")]
        ),
        Some(1.0)
    );
    assert_eq!(m.find("http_request_cancellations", &[]).len(), 1);
    // The cancelled request is in the histogram too, as OPA's wrapper observes it.
    assert_eq!(
        m.value(
            "http_request_duration_seconds_count",
            &[("code", "400"), ("handler", "v1/data"), ("method", "post")]
        ),
        Some(1.0)
    );
}

/// A request whose future is dropped while the handler waits (the connection died) counts as
/// cancelled with OPA's default code 200. Driven in-process: hyper drops the future only when
/// the connection fails while the handler is pending, which a loopback client cannot time.
#[tokio::test]
async fn dropped_request_future_is_a_cancellation() {
    use axum::body::Body;
    use hyper::body::{Bytes, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tower::ServiceExt;

    /// A request body that never arrives.
    struct Stalled;
    impl axum::body::HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    let config = Arc::new(regent::config::Config::default());
    let telemetry = Arc::new(regent::telemetry::Telemetry::new(&config));
    let state = regent::server::AppState::new(
        Arc::new(regent::engine::Store::new(regent::engine::Snapshot::empty())),
        Arc::new(regent::plugins::PluginManager::new()),
        Arc::new(regent::plugins::bundle::BundleStatusBoard::default()),
        telemetry.clone(),
        config,
    );
    let request = axum::http::Request::post("/v1/data/x")
        .header("content-type", "application/json")
        .body(Body::new(Stalled))
        .unwrap();
    let pending = regent::server::router(state).oneshot(request);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), pending)
            .await
            .is_err(),
        "the handler waits for the body"
    );
    let text = regent::telemetry::encode::text(&telemetry.registry.gather());
    let m = Exposition::parse(&text);
    assert_eq!(
        m.value(
            "http_request_cancellations",
            &[("code", "200"), ("handler", "v1/data"), ("method", "POST")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m.value(
            "http_request_duration_seconds_count",
            &[("code", "200"), ("handler", "v1/data"), ("method", "post")]
        ),
        Some(1.0)
    );
}

#[test]
fn diagnostic_listener_serves_only_health_and_metrics() {
    let dir = common::examples().join("rbac");
    let srv = Regent::start_with(&[dir.to_str().unwrap()], &[], 2);
    assert_eq!(srv.diagnostic_urls.len(), 2);
    decide(&srv, 2);
    for diag in &srv.diagnostic_urls {
        let (headers, text) = scrape_at(&srv.client, diag);
        assert_eq!(
            headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let m = Exposition::parse(&text);
        // One registry behind every listener: the main listener's requests show here.
        assert_eq!(
            m.value(
                "http_request_duration_seconds_count",
                &[("code", "200"), ("handler", "v1/data"), ("method", "post")]
            ),
            Some(2.0)
        );
        assert!(m.value("process_cpu_seconds_total", &[]).is_some());

        let alloc = srv
            .client
            .get(format!("{diag}/metrics/alloc_bytes"))
            .send()
            .unwrap();
        assert_eq!(alloc.status(), 200);
        let body = alloc.text().unwrap();
        assert!(
            body.strip_suffix('\n').unwrap().parse::<u64>().unwrap() > 0,
            "{body:?}"
        );

        for (method, path) in [
            ("GET", "/v1/data"),
            ("POST", "/v1/data/rbac/allow"),
            ("GET", "/v1/data/"),
            ("HEAD", "/v1/data"),
            ("GET", "/"),
            ("GET", "/v1/policies"),
            ("GET", "/v1/config"),
            ("GET", "/nope"),
            ("GET", "/metricsx"),
        ] {
            let resp = srv
                .client
                .request(method.parse().unwrap(), format!("{diag}{path}"))
                .send()
                .unwrap();
            assert_eq!(resp.status(), 404, "{method} {path}");
            if method != "HEAD" {
                assert_eq!(resp.text().unwrap(), "404 page not found\n");
            }
        }
    }
    // None of the diagnostic 404s were observed.
    let m = scrape(&srv);
    let handlers: std::collections::BTreeSet<String> = m
        .find("http_request_duration_seconds_count", &[])
        .iter()
        .map(|s| format!("{} {}", s.labels["handler"], s.labels["code"]))
        .collect();
    assert_eq!(handlers.into_iter().collect::<Vec<_>>(), ["v1/data 200"]);
}

#[test]
fn alloc_bytes_plain_and_pretty() {
    let srv = rbac(&[]);
    let resp = srv.get("/metrics/alloc_bytes");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let plain = resp.text().unwrap();
    let bytes: u64 = plain.strip_suffix('\n').unwrap().parse().unwrap();
    assert!(bytes > 100_000, "{bytes}");

    let pretty = srv.get("/metrics/alloc_bytes?pretty=true").text().unwrap();
    let pretty = pretty.strip_suffix('\n').unwrap();
    let (number, unit) = pretty.split_at(pretty.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    assert!(["KB", "MB", "GB"].contains(&unit), "{pretty}");
    let (_, decimals) = number.split_once('.').unwrap();
    assert_eq!(decimals.len(), 1, "{pretty}");
    // Same order of magnitude as the plain figure read a moment earlier.
    let scale = match unit {
        "KB" => 1e3,
        "MB" => 1e6,
        _ => 1e9,
    };
    let approx = number.parse::<f64>().unwrap() * scale;
    assert!(
        (approx / bytes as f64 - 1.0).abs() < 0.5,
        "{pretty} vs {bytes}"
    );

    // OPA compares with "true" exactly; anything else is the plain figure.
    let not_pretty = srv.get("/metrics/alloc_bytes?pretty=TRUE").text().unwrap();
    assert!(not_pretty.trim_end().parse::<u64>().is_ok(), "{not_pretty}");
    assert_eq!(
        srv.client
            .head(srv.url("/metrics/alloc_bytes"))
            .send()
            .unwrap()
            .status(),
        405
    );
}

#[test]
fn instrumentation_knob_turns_observation_off() {
    let srv = rbac(&["--set", "server.metrics.http_instrumentation=false"]);
    decide(&srv, 3);
    assert_eq!(
        srv.client
            .head(srv.url("/v1/data"))
            .send()
            .unwrap()
            .status(),
        405
    );
    let m = scrape(&srv);
    assert!(m
        .find("http_request_duration_seconds_count", &[])
        .is_empty());
    assert!(m.value("process_cpu_seconds_total", &[]).is_some());
}

#[test]
fn promtool_finds_nothing_to_report() {
    let srv = rbac(&[]);
    decide(&srv, 2);
    assert_eq!(srv.get("/v1/data/rbac").status(), 200);
    let (_, text) = scrape_at(&srv.client, &srv.url);
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert_eq!(promtool(&text), "");

    let dir = common::examples().join("rbac");
    let diag = Regent::start_with(&[dir.to_str().unwrap()], &[], 1);
    let (_, text) = scrape_at(&diag.client, &diag.diagnostic_urls[0]);
    assert_eq!(promtool(&text), "");

    // OPA's cancellation counter has no `_total` suffix, and keeps it for its dashboards: that
    // naming lint is the one finding promtool has once a cancellation exists.
    abandon_upload(&srv.url);
    let text = eventually(Duration::from_secs(5), "the cancellation", || {
        let (_, text) = scrape_at(&srv.client, &srv.url);
        text.contains("http_request_cancellations{").then_some(text)
    });
    assert_eq!(
        promtool(&text).trim(),
        "http_request_cancellations counter metrics should have \"_total\" suffix"
    );
}

/// A Prometheus server on a loopback port, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) with OPA's documented scrape config.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: \"opa\"\n    metrics_path: \"/metrics\"\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is required (Debian package `prometheus`; .ci/run installs it)");
        Prometheus {
            child,
            url: format!("http://{listen}"),
            _dir: dir,
        }
    }

    /// Instant query; `None` while Prometheus is not answering yet.
    fn query(&self, client: &common::Client, promql: &str) -> Option<Vec<Json>> {
        let resp = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .ok()?;
        let body: Json = resp.json().ok()?;
        (body["status"] == "success").then(|| body["data"]["result"].as_array().unwrap().clone())
    }

    /// The single sample value of an instant query, if it has one.
    fn scalar(&self, client: &common::Client, promql: &str) -> Option<f64> {
        let result = self.query(client, promql)?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn real_prometheus_scrapes_regent_with_opas_scrape_config() {
    let srv = rbac(&[]);
    let target = srv.url.strip_prefix("http://").unwrap().to_string();
    let prom = Prometheus::start(&target);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    eventually(Duration::from_secs(60), "up{job=\"opa\"} == 1", || {
        (prom.scalar(&client, "up{job=\"opa\"}") == Some(1.0)).then_some(())
    });

    decide(&srv, 1);
    let query = "sum(http_request_duration_seconds_count{job=\"opa\",handler=\"v1/data\"})";
    let before = eventually(Duration::from_secs(30), "the first v1/data series", || {
        prom.scalar(&client, query)
    });
    decide(&srv, 5);
    let after = eventually(Duration::from_secs(30), "the v1/data count to grow", || {
        prom.scalar(&client, query).filter(|v| *v >= before + 5.0)
    });
    assert!(after >= before + 5.0);

    // The scrape parsed cleanly in whatever format Prometheus negotiated.
    let targets: Json = client
        .get(format!("{}/api/v1/targets", prom.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let active = &targets["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{active}");
    assert_eq!(active["lastError"], "", "{active}");

    // Series keep OPA's names whichever format was negotiated: dashboards port unchanged.
    abandon_upload(&srv.url);
    eventually(
        Duration::from_secs(30),
        "http_request_cancellations",
        || {
            prom.scalar(
                &client,
                "http_request_cancellations{job=\"opa\",handler=\"v1/data\"}",
            )
            .filter(|v| *v == 1.0)
        },
    );
    assert_eq!(
        prom.query(&client, "http_request_cancellations_total"),
        Some(vec![])
    );
    assert!(prom
        .scalar(&client, "process_cpu_seconds_total{job=\"opa\"}")
        .is_some());
    assert!(prom
        .scalar(
            &client,
            "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=\"opa\"}[1m])))"
        )
        .is_some());
}

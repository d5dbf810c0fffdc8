//! End-to-end tests of the server's life: graceful shutdown with requests in flight, and reads
//! that stay consistent while writers replace data and policies.

use crate::common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{json, Regent};
use serde_json::json;

/// A policy whose evaluation takes `k²` steps and little memory.
const SLOW: &str = "package slow\n\ndone if {\n\tevery i in numbers.range(1, input.k) {\n\t\tevery j in numbers.range(1, input.k) {\n\t\t\ti + j > 0\n\t\t}\n\t}\n}\n";

fn slow_server(extra: &[&str]) -> (Regent, tempfile::TempDir) {
    let dir = common::tree(&[("slow.rego", SLOW)]);
    let mut args = vec![dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    (Regent::start(&args), dir)
}

/// The `k` that makes the slow policy run for about `target` on this build and machine.
fn calibrate(srv: &Regent, target: Duration) -> u64 {
    let k = 200u64;
    let started = Instant::now();
    let (code, _) = json(srv.post_json("/v1/data/slow/done", &json!({"input": {"k": k}})));
    assert_eq!(code, 200);
    let per_step = started.elapsed().as_secs_f64() / (k * k) as f64;
    ((target.as_secs_f64() / per_step).sqrt() as u64).max(k)
}

/// Starts the slow decision on another thread and returns once the server has received it.
fn start_slow(
    srv: &Regent,
    k: u64,
) -> std::thread::JoinHandle<Result<(u16, serde_json::Value), String>> {
    let before = received(srv);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = srv.url("/v1/data/slow/done");
    let handle = std::thread::spawn(move || {
        let resp = client
            .post(url)
            .json(&json!({"input": {"k": k}}))
            .send()
            .map_err(|e| e.to_string())?;
        Ok(json(resp))
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while received(srv) == before {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle
}

fn received(srv: &Regent) -> usize {
    srv.log_lines()
        .iter()
        .filter(|l| l.contains("Received request.") && l.contains("/v1/data/slow/done"))
        .count()
}

fn sigterm(srv: &Regent) {
    let status = Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let (srv, _dir) = slow_server(&[]);
    let k = calibrate(&srv, Duration::from_secs(2));
    let slow = start_slow(&srv, k);
    // Other requests are served while the slow one evaluates.
    let started = Instant::now();
    assert_eq!(json(srv.get("/v1/data/slow")), (200, json!({"result": {}})));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let signalled = Instant::now();
    sigterm(&srv);
    // New connections are refused once shutdown has begun.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        reqwest::blocking::Client::new()
            .get(srv.url("/v1/data"))
            .timeout(Duration::from_secs(5))
            .send()
            .is_err(),
        "a new request was accepted during shutdown"
    );
    let (code, body) = slow.join().unwrap().expect("in-flight request completed");
    assert_eq!((code, body), (200, json!({"result": true})));
    assert!(signalled.elapsed() > Duration::from_millis(300));
    let lines = srv.log_lines();
    let status = srv.terminate();
    assert_eq!(status.code(), Some(0), "logs:\n{}", lines.join("\n"));
}

#[test]
fn grace_period_bounds_the_shutdown() {
    let (srv, _dir) = slow_server(&["--shutdown-grace-period", "1"]);
    let k = calibrate(&srv, Duration::from_secs(8));
    let slow = start_slow(&srv, k);
    let signalled = Instant::now();
    sigterm(&srv);
    // The request outlives the grace period: the server gives up on it and exits.
    assert!(
        slow.join().unwrap().is_err(),
        "the slow request should have been cut off"
    );
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv
        .log_lines()
        .iter()
        .any(|l| l.contains("Server shutdown."))
    {
        assert!(Instant::now() < deadline, "no shutdown line");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(srv
        .log_lines()
        .iter()
        .any(|l| l.contains("Graceful shutdown timed out")));
    assert_eq!(srv.terminate().code(), Some(0));
}

/// Policy version `v`: every field is derived from the version and the data, so a reader can
/// tell a torn view (parts from different writes) from a consistent one.
fn policy(v: u64) -> String {
    format!(
        "package t\n\nanswer := {{\"p\": {v}, \"p3\": {p3}, \"v\": data.cfg.version, \"d\": data.cfg.double}}\n",
        p3 = v * 3
    )
}

#[test]
fn reads_during_writes_see_old_or_new_never_errors() {
    let srv = Arc::new(Regent::start(&[]));
    let put = |path: &str, body: String| {
        let resp = srv.client.put(srv.url(path)).body(body).send().unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    };
    put(
        "/v1/data/cfg",
        json!({"version": 0, "double": 0}).to_string(),
    );
    put("/v1/policies/t", policy(0));

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let srv = srv.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let (mut last_p, mut last_v, mut reads) = (0, 0, 0u64);
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let (code, body) =
                        json(srv.post_json("/v1/data/t/answer", &json!({"input": {}})));
                    assert_eq!(code, 200, "read failed: {body}");
                    let a = &body["result"];
                    let (p, v) = (a["p"].as_u64().unwrap(), a["v"].as_u64().unwrap());
                    assert_eq!(a["p3"].as_u64(), Some(p * 3), "torn policy: {a}");
                    assert_eq!(a["d"].as_u64(), Some(v * 2), "torn data: {a}");
                    assert!(p >= last_p && v >= last_v, "went back in time: {a}");
                    (last_p, last_v) = (p, v);
                    reads += 1;
                }
                (reads, last_p, last_v)
            })
        })
        .collect();

    let writes = 25;
    for n in 1..=writes {
        put(
            "/v1/data/cfg",
            json!({"version": n, "double": n * 2}).to_string(),
        );
        put("/v1/policies/t", policy(n));
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        let (reads, _, _) = reader.join().expect("reader saw an inconsistent answer");
        assert!(reads > 0);
    }
    let (_, body) = json(srv.post_json("/v1/data/t/answer", &json!({"input": {}})));
    assert_eq!(
        body["result"],
        json!({"p": writes, "p3": writes * 3, "v": writes, "d": writes * 2})
    );
}

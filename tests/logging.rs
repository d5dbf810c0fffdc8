//! End-to-end tests of the request log and the `--log-format` / `--log-level` flags.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Regent;
use serde_json::Value as Json;

/// Polls the server's log until `pred` holds for some line, or fails after a few seconds: the
/// "Sent response." line is written once the body has gone out, just after the client has it.
fn wait_for(lines: impl Fn() -> Vec<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = lines().into_iter().find(|l| pred(l)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "log line never appeared:\n{}",
            lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_lines_match_opa() {
    let srv = Regent::start(&[]);
    let resp = srv
        .client
        .put(srv.url("/v1/data/x"))
        .body(r#"{"a": 1}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let resp = srv.get("/v1/data/x?pretty");
    let body = resp.text().unwrap();

    let parse = |l: &str| serde_json::from_str::<Json>(l).unwrap();
    let logs = || srv.log_lines();
    let received = parse(&wait_for(logs, |l| {
        l.contains("Received request.") && l.contains("\"req_id\":1,")
    }));
    assert_eq!(received["level"], "info");
    assert_eq!(received["req_method"], "PUT");
    assert_eq!(received["req_path"], "/v1/data/x");
    assert!(received["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(received["time"].is_string());

    let sent = parse(&wait_for(logs, |l| {
        l.contains("Sent response.") && l.contains("\"req_id\":2,")
    }));
    assert_eq!(sent["msg"], "Sent response.");
    assert_eq!(sent["req_method"], "GET");
    assert_eq!(sent["req_path"], "/v1/data/x");
    assert_eq!(sent["resp_status"], 200);
    assert_eq!(sent["resp_bytes"].as_u64(), Some(body.len() as u64));
    assert!(sent["resp_duration"].as_f64().unwrap() > 0.0);
    let first_sent = parse(&wait_for(logs, |l| {
        l.contains("Sent response.") && l.contains("\"req_id\":1,")
    }));
    assert_eq!(
        (
            first_sent["resp_status"].as_u64(),
            first_sent["resp_bytes"].as_u64()
        ),
        (Some(204), Some(0))
    );
}

/// A server started by hand (the harness needs JSON lines at info level), on a free port.
struct Raw {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Raw {
    fn start(args: &[&str]) -> Raw {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(common::binary())
            .args(["run", "--server", "--addr", &addr])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let url = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{url}/v1/data")).is_err() {
            assert!(Instant::now() < deadline, "server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Raw { child, url, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn text_format_reads_like_logrus() {
    let srv = Raw::start(&["--log-format", "text"]);
    reqwest::blocking::get(format!("{}/v1/data/nothing", srv.url)).unwrap();
    let line = wait_for(
        || srv.lines(),
        |l| l.contains("Sent response.") && l.contains("/v1/data/nothing"),
    );
    assert!(line.starts_with("time=\""), "{line}");
    assert!(
        line.contains(" level=info msg=\"Sent response.\" "),
        "{line}"
    );
    assert!(line.contains(" req_path=/v1/data/nothing "), "{line}");
    assert!(line.contains(" resp_status=200"), "{line}");
}

#[test]
fn json_pretty_format_indents_objects() {
    let srv = Raw::start(&["--log-format", "json-pretty"]);
    reqwest::blocking::get(format!("{}/v1/data/nothing", srv.url)).unwrap();
    wait_for(
        || srv.lines(),
        |l| l.contains("\"msg\": \"Sent response.\""),
    );
    let text = srv.lines().join("\n");
    assert!(text.contains("\n  \"level\": \"info\","), "{text}");
    assert!(
        text.contains("\n  \"req_path\": \"/v1/data/nothing\","),
        "{text}"
    );
}

#[test]
fn error_level_drops_request_lines() {
    let srv = Raw::start(&["--log-level", "error"]);
    for _ in 0..3 {
        reqwest::blocking::get(format!("{}/v1/data", srv.url)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let lines = srv.lines();
    assert!(
        !lines.iter().any(|l| l.contains("request.")
            || l.contains("response.")
            || l.contains("Initializing")),
        "{lines:?}"
    );
}

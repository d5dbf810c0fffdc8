//! Test harness: starts the real `regent` binary on ephemeral loopback ports and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use reqwest::blocking::Client;

/// A running server. Killed when dropped.
pub struct Regent {
    child: Child,
    /// `http://127.0.0.1:<port>` of the first main listener.
    pub url: String,
    /// `http://127.0.0.1:<port>` of each diagnostic listener.
    pub diagnostic_urls: Vec<String>,
    /// Every log line the server wrote so far (stderr, JSON).
    pub logs: Arc<Mutex<Vec<String>>>,
    pub client: Client,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_regent"))
}

/// The directory of shared benchmark cases (`../shared/bench`), where present.
/// The benchmark cases every decision test runs: the project's own (`bench/cases/`), plus the
/// shared corpus beside the checkout when it is there (it never is required).
pub fn bench_cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cases = Vec::new();
    for dir in [root.join("bench/cases"), root.join("../shared/bench")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("case.json").is_file())
            .collect();
        found.sort();
        cases.extend(found);
    }
    cases
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

impl Regent {
    /// Starts `regent run --server --addr 127.0.0.1:0 <args>` and waits until it listens.
    pub fn start(args: &[&str]) -> Regent {
        Self::start_with(args, &[], 0)
    }

    /// Like [`start`], with extra environment variables and `diagnostic` diagnostic listeners.
    pub fn start_with(args: &[&str], env: &[(&str, &str)], diagnostic: usize) -> Regent {
        let mut cmd = Command::new(binary());
        cmd.args(["run", "--server", "--addr", "127.0.0.1:0"]);
        for _ in 0..diagnostic {
            cmd.args(["--diagnostic-addr", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start regent");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Initializing server.") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "regent did not start ({status:?}); logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addrs = |key: &str| -> Vec<String> {
            let text = v[key].as_str().unwrap_or("[]");
            serde_json::from_str::<Vec<String>>(text)
                .unwrap()
                .into_iter()
                .map(|a| format!("http://{a}"))
                .collect()
        };
        let url = addrs("addrs").remove(0);
        Regent {
            child,
            url,
            diagnostic_urls: addrs("diagnostic_addrs"),
            logs,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client.get(self.url(path)).send().unwrap()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.client.post(self.url(path)).json(body).send().unwrap()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Regent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response's status and JSON body.
pub fn json(resp: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, body)
}

/// Writes `files` (relative path, contents) under a new temporary directory.
pub fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    dir
}

/// Runs `promtool check metrics` on `text` and returns its findings (empty when clean).
/// promtool must be installed (Debian package `prometheus`; `.ci/run` installs it).
pub fn promtool(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (Debian package `prometheus`; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.success(),
        findings.trim().is_empty(),
        "{findings}"
    );
    findings
}

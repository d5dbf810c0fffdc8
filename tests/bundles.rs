//! End-to-end tests of the bundle plugin through the real binary.
//!
//! Bundles are served by a real nginx (its own ETag and 304 handling) started by each test on a
//! loopback port with a generated config, and, for faults nginx cannot produce (500s, hangs,
//! truncated bodies, long polling, token checks), by a small HTTP server inside the test. The
//! bundle status board is observed through the debug log line the plugin writes on every
//! update ("Bundle status updated.", with the status in OPA's JSON shape).

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{json, Regent};
use flate2::write::GzEncoder;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Tarballs

enum Entry<'a> {
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A .tar.gz whose entry names are written verbatim (so hostile names survive).
fn tarball(entries: Vec<Entry>) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        let (name, body, kind, link) = match entry {
            Entry::File(n, b) => (n, b, tar::EntryType::Regular, None),
            Entry::Symlink(n, t) => (n, vec![], tar::EntryType::Symlink, Some(t)),
            Entry::Hardlink(n, t) => (n, vec![], tar::EntryType::Link, Some(t)),
        };
        header.set_entry_type(kind);
        header.set_size(body.len() as u64);
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            raw.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, body.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn files(list: &[(&str, &str)]) -> Vec<u8> {
    tarball(
        list.iter()
            .map(|(n, b)| Entry::File(n, b.as_bytes().to_vec()))
            .collect(),
    )
}

/// The authz bundle used by most tests: `data.authz.allow` is true for the listed users.
fn authz_bundle(revision: &str, users: &[&str]) -> Vec<u8> {
    files(&[
        (
            "/.manifest",
            &json!({"revision": revision, "roots": ["authz"]}).to_string(),
        ),
        ("/authz/data.json", &json!({"users": users}).to_string()),
        (
            "/authz/policy.rego",
            "package authz\n\ndefault allow := false\n\nallow if input.user in data.authz.users\n",
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// nginx

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is required for these tests: apt-get install nginx-light");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx serving `www` on a loopback port, with its own prefix, config and pid file.
struct Nginx {
    child: Child,
    prefix: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(www: &Path, port: u16) -> Nginx {
        Self::start_with(www, port, "", "")
    }

    /// `listen_flags` go on the `listen` line (`ssl`), `server_extra` inside `server {}`.
    fn start_with(www: &Path, port: u16, listen_flags: &str, server_extra: &str) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        let p = prefix.path().display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format t '$status "$http_if_none_match" "$http_prefer" "$http_user_agent" $request_uri';
  access_log {p}/access.log t;
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;
  server {{
    listen 127.0.0.1:{port} {listen_flags};
    root {www};
    {server_extra}
  }}
}}
"#,
            www = www.display()
        );
        std::fs::write(prefix.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(prefix.path().join("nginx.conf"))
            .arg("-e")
            .arg(prefix.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            prefix,
            port,
        };
        wait_for("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        nginx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.prefix.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header value as nginx writes it in its access log (quotes escaped as `\x22`).
fn logged(value: &str) -> String {
    value.replace('"', "\\x22")
}

/// Replaces a served file atomically with a new modification time, so nginx's ETag changes.
fn publish(path: &Path, bytes: &[u8], mtime_offset_secs: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&tmp).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(mtime_offset_secs))
        .unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// An in-test HTTP server for faults

#[derive(Clone, Debug)]
struct Request {
    path: String,
    headers: BTreeMap<String, String>,
    at: Instant,
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Holds the connection open without answering.
    Hang,
    /// Claims `claimed` bytes, sends `body`, closes.
    Truncated { body: Vec<u8>, claimed: usize },
    /// Waits, then answers.
    Delayed(Duration, Box<Reply>),
}

fn ok(body: Vec<u8>) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![],
        body,
    }
}

fn status(code: u16) -> Reply {
    Reply::Full {
        status: code,
        headers: vec![],
        body: vec![],
    }
}

type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

struct FaultServer {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    /// `handler` gets each request and how many requests for the same path came before it.
    fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::<Request>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (handler, reqs, halt) = (handler.clone(), reqs.clone(), halt.clone());
                std::thread::spawn(move || serve_one(conn, &*handler, &reqs, &halt));
            }
        });
        FaultServer {
            url,
            requests,
            stop,
        }
    }

    fn requests(&self, path: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve_one(mut conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Request {
        path,
        headers,
        at: Instant::now(),
    };
    let seen = {
        let mut log = log.lock().unwrap();
        let seen = log.iter().filter(|r| r.path == req.path).count();
        log.push(req.clone());
        seen
    };
    let mut reply = handler(&req, seen);
    loop {
        match reply {
            Reply::Delayed(d, inner) => {
                std::thread::sleep(d);
                reply = *inner;
            }
            Reply::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Reply::Truncated { body, claimed } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                return;
            }
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                let _ = conn.flush();
                // Drain so the client sees an orderly close.
                let _ = conn.shutdown(std::net::Shutdown::Write);
                let _ = conn.read(&mut [0u8; 64]);
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// regent helpers

/// Starts regent with `config` (YAML) at debug level, so bundle status updates are logged.
fn start(config: &str, extra: &[&str]) -> (Regent, tempfile::TempDir) {
    let dir = common::tree(&[("config.yaml", config)]);
    let cfg = dir.path().join("config.yaml");
    let mut args = vec![
        "--config-file",
        cfg.to_str().unwrap(),
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    (Regent::start(&args), dir)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Every status the plugin published for bundle `name`, oldest first.
fn statuses(srv: &Regent, name: &str) -> Vec<Value> {
    srv.log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let text = v.get("msg").or_else(|| v.get("message"));
            text == Some(&json!("Bundle status updated.")) && v["name"] == name
        })
        .map(|v| serde_json::from_str(v["status"].as_str().unwrap()).unwrap())
        .collect()
}

fn last_status(srv: &Regent, name: &str) -> Value {
    statuses(srv, name).pop().unwrap_or(Value::Null)
}

fn data(srv: &Regent, path: &str) -> Value {
    let url = if path.is_empty() {
        "/v1/data".to_string()
    } else {
        format!("/v1/data/{path}")
    };
    let (code, body) = json(srv.get(&url));
    assert_eq!(code, 200, "{body}");
    body.get("result").cloned().unwrap_or(Value::Null)
}

fn allowed(srv: &Regent, user: &str) -> Value {
    let (code, body) =
        json(srv.post_json("/v1/data/authz/allow", &json!({"input": {"user": user}})));
    assert_eq!(code, 200, "{body}");
    body.get("result").cloned().unwrap_or(Value::Null)
}

fn revision(srv: &Regent, bundle: &str) -> Value {
    let (_, body) = json(srv.get("/v1/data/authz/allow?provenance"));
    body["provenance"]["bundles"][bundle]["revision"].clone()
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A status timestamp (RFC 3339; the number of fraction digits varies, so compare parsed).
fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or(ZERO_TIME)).unwrap()
}
const TIMERS: [&str; 5] = [
    "timer_bundle_request_ns",
    "timer_rego_data_parse_ns",
    "timer_rego_module_parse_ns",
    "timer_rego_module_compile_ns",
    "timer_rego_load_bundles_ns",
];

fn fast_polling() -> &'static str {
    "polling: {min_delay_seconds: 0.2, max_delay_seconds: 0.3}"
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn nginx_bundle_activates_revalidates_with_304_and_changes_revision() {
    let www = tempfile::tempdir().unwrap();
    let served = www.path().join("bundles/authz");
    let v1 = authz_bundle("r1", &["alice"]);
    publish(&served, &v1, 0);
    let nginx = Nginx::start(www.path(), free_port());
    let config = format!(
        "services:\n  cp:\n    url: {}\nbundles:\n  authz:\n    {}\n",
        nginx.url(),
        fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);

    wait_for("activation", Duration::from_secs(15), || {
        allowed(&srv, "alice") == json!(true)
    });
    assert_eq!(allowed(&srv, "bob"), json!(false));
    assert_eq!(revision(&srv, "authz"), json!("r1"));

    // nginx's own ETag is remembered with the bundle and sent back; nginx answers 304.
    let etag = reqwest::blocking::get(format!("{}/bundles/authz", nginx.url()))
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    let system = data(&srv, "system/bundles/authz");
    assert_eq!(
        system,
        json!({"manifest": {"revision": "r1", "roots": ["authz"]}, "etag": etag})
    );
    wait_for("a 304 from nginx", Duration::from_secs(10), || {
        nginx
            .access_log()
            .iter()
            .any(|l| l.starts_with(&format!("304 \"{}\"", logged(&etag))))
    });
    let first = nginx.access_log().remove(0);
    assert!(
        first.starts_with("200 \"-\" \"modes=snapshot,delta\""),
        "{first}"
    );
    let agent = format!(
        "\"regent/{} ({}, {})\"",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    assert!(first.contains(&agent), "{first} lacks {agent}");

    // The status board saw the activation (with every timer) and the revalidations.
    let history = statuses(&srv, "authz");
    let activation = history
        .iter()
        .find(|s| s["active_revision"] == "r1")
        .expect("an activation status");
    assert_eq!(activation["type"], "snapshot");
    assert_eq!(activation["size"], json!(v1.len()));
    for t in TIMERS {
        assert!(
            activation["metrics"][t].as_u64().is_some(),
            "{t} in {activation}"
        );
    }
    assert!(activation.get("code").is_none(), "{activation}");
    // A 304 is a successful request but no download (the log line may trail nginx's).
    wait_for("the 304 on the board", Duration::from_secs(5), || {
        let s = last_status(&srv, "authz");
        time(&s["last_successful_request"]) > time(&s["last_successful_download"])
    });
    let latest = last_status(&srv, "authz");
    assert_eq!(
        latest["last_successful_download"],
        activation["last_successful_download"]
    );

    // A new revision: new ETag, new data, new provenance.
    publish(&served, &authz_bundle("r2", &["bob"]), 5);
    wait_for("revision r2", Duration::from_secs(15), || {
        allowed(&srv, "bob") == json!(true)
    });
    assert_eq!(allowed(&srv, "alice"), json!(false));
    assert_eq!(revision(&srv, "authz"), json!("r2"));
    assert_eq!(last_status(&srv, "authz")["active_revision"], "r2");
}

#[test]
fn persisted_bundle_serves_after_restart_with_the_server_down_then_revalidates() {
    let www = tempfile::tempdir().unwrap();
    let served = www.path().join("bundles/authz");
    let v1 = authz_bundle("r1", &["alice"]);
    publish(&served, &v1, 0);
    let port = free_port();
    let nginx = Nginx::start(www.path(), port);
    let persist = tempfile::tempdir().unwrap();
    let config = format!(
        "services:\n  cp:\n    url: {}\npersistence_directory: {}\nbundles:\n  authz:\n    persist: true\n    {}\n",
        nginx.url(),
        persist.path().display(),
        fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);
    wait_for("activation", Duration::from_secs(15), || {
        allowed(&srv, "alice") == json!(true)
    });
    let stored = persist.path().join("bundles/authz/bundle.tar.gz");
    wait_for("the persisted copy", Duration::from_secs(5), || {
        stored.exists()
    });
    assert!(srv.terminate().success());
    assert_eq!(std::fs::read(&stored).unwrap(), v1);
    let etag = data_etag(&persist.path().join("bundles/authz/manifest.json"));
    assert!(etag.starts_with('"'), "{etag}");

    // The control plane is down: the persisted copy is active before the first request.
    nginx.stop();
    let (srv, _cfg2) = start(&config, &[]);
    assert_eq!(allowed(&srv, "alice"), json!(true));
    assert_eq!(revision(&srv, "authz"), json!("r1"));
    assert_eq!(data(&srv, "system/bundles/authz/etag"), json!(etag));
    wait_for("a failed download", Duration::from_secs(10), || {
        last_status(&srv, "authz")["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("request failed: "))
    });
    let failing = last_status(&srv, "authz");
    assert_eq!(failing["code"], "bundle_error");
    assert_eq!(failing["active_revision"], "r1");
    assert_ne!(failing["last_successful_activation"], ZERO_TIME);
    assert_eq!(allowed(&srv, "alice"), json!(true), "still serving");

    // The control plane returns: the copy is revalidated with its etag, not downloaded again.
    let nginx = Nginx::start(www.path(), port);
    let needle = format!("304 \"{}\"", logged(&etag));
    wait_for("revalidation", Duration::from_secs(15), || {
        nginx.access_log().iter().any(|l| l.starts_with(&needle))
    });
    assert!(
        !nginx.access_log().iter().any(|l| l.starts_with("200 ")),
        "{:?}",
        nginx.access_log()
    );
    wait_for("the error to clear", Duration::from_secs(5), || {
        last_status(&srv, "authz").get("code").is_none()
    });
}

fn data_etag(manifest: &Path) -> String {
    let v: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    v["etag"].as_str().unwrap().to_string()
}

#[test]
fn hostile_bundles_are_refused_and_nothing_lands_outside_its_place() {
    let big = vec![b' '; 512 << 10];
    let mut json_blob = b"{\"x\": \"".to_vec();
    json_blob.extend(std::iter::repeat_n(b'a', 2 << 20));
    json_blob.extend(b"\"}");
    let manifest = |root: &str| {
        json!({"revision": "evil", "roots": [root]})
            .to_string()
            .into_bytes()
    };
    let bundles: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            tarball(vec![
                Entry::File("/.manifest", manifest("dotdot")),
                Entry::File("dotdot/../../../../tmp/regent-evil/data.json", b"{\"x\": 1}".to_vec()),
            ]),
            "has an unsafe path",
        ),
        (
            "absolute",
            tarball(vec![Entry::File("//tmp/regent-evil/data.json", b"{}".to_vec())]),
            "has an unsafe path",
        ),
        (
            "symlink",
            tarball(vec![
                Entry::File("/.manifest", manifest("symlink")),
                Entry::Symlink("symlink/data.json", "/etc/passwd"),
            ]),
            "is a symlink",
        ),
        (
            "hardlink",
            tarball(vec![
                Entry::File("/.manifest", manifest("hardlink")),
                Entry::Hardlink("hardlink/data.json", "/etc/passwd"),
            ]),
            "is a hard link",
        ),
        (
            "bomb",
            // 8 MiB of skipped files, each under the per-file cap, compressed to a few KiB.
            tarball(
                std::iter::once(Entry::File("/.manifest", manifest("bomb")))
                    .chain((0..16).map(|_| Entry::File("bomb/junk.txt", big.clone())))
                    .collect(),
            ),
            "bundle exceeded max inflated size (1048576 bytes)",
        ),
        (
            "oversized",
            tarball(vec![
                Entry::File("/.manifest", manifest("oversized")),
                Entry::File("oversized/data.json", json_blob.clone()),
            ]),
            "bundle file 'oversized/data.json' exceeded max size (1048576 bytes)",
        ),
        (
            "outside_data",
            tarball(vec![
                Entry::File("/.manifest", manifest("outside_data")),
                Entry::File("elsewhere/data.json", b"{\"x\": 1}".to_vec()),
            ]),
            "manifest roots [outside_data] do not permit data at path '/elsewhere'",
        ),
        (
            "outside_package",
            tarball(vec![
                Entry::File("/.manifest", manifest("outside_package")),
                Entry::File("p.rego", b"package elsewhere\nx := 1\n".to_vec()),
            ]),
            "manifest roots [outside_package] do not permit 'package elsewhere' in module '/p.rego'",
        ),
        (
            "overlap",
            tarball(vec![
                Entry::File("/.manifest", manifest("good/sub")),
                Entry::File("good/sub/data.json", b"{\"x\": 1}".to_vec()),
            ]),
            "detected overlapping roots in bundle manifest with: [good]",
        ),
        (
            "bad_json",
            tarball(vec![
                Entry::File("/.manifest", manifest("bad_json")),
                Entry::File("bad_json/data.json", b"{not json".to_vec()),
            ]),
            "bundle load failed on /bad_json/data.json",
        ),
        (
            "bad_rego",
            tarball(vec![
                Entry::File("/.manifest", manifest("bad_rego")),
                Entry::File("bad_rego/p.rego", b"package bad_rego\nallow if {".to_vec()),
            ]),
            "error(s) occurred while compiling module(s)",
        ),
    ];
    let served: BTreeMap<String, Vec<u8>> = bundles
        .iter()
        .map(|(n, b, _)| (format!("/bundles/{n}"), b.clone()))
        .collect();
    let server = FaultServer::start(move |req, _| match served.get(&req.path) {
        Some(b) => ok(b.clone()),
        None => status(404),
    });
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.tar.gz");
    std::fs::write(
        &good,
        tarball(vec![
            Entry::File(
                "/.manifest",
                json!({"revision": "g1", "roots": ["good"]})
                    .to_string()
                    .into_bytes(),
            ),
            Entry::File("/good/data.json", b"{\"ok\": true}".to_vec()),
        ]),
    )
    .unwrap();
    let persist = work.path().join("persist");
    let mut config = format!(
        "services:\n  cp:\n    url: {}\npersistence_directory: {}\nbundles:\n  good:\n    resource: file://{}\n",
        server.url,
        persist.display(),
        good.display()
    );
    for (name, _, _) in &bundles {
        config.push_str(&format!(
            "  {name}:\n    persist: true\n    size_limit_bytes: 1048576\n    {}\n",
            fast_polling()
        ));
    }
    let (srv, _cfg) = start(&config, &[]);
    for (name, _, expected) in &bundles {
        wait_for(&format!("{name} to fail"), Duration::from_secs(15), || {
            last_status(&srv, name)["message"].is_string()
        });
        let s = last_status(&srv, name);
        assert_eq!(s["code"], "bundle_error", "{name}: {s}");
        let message = s["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{name}: {message:?} lacks {expected:?}"
        );
        assert_eq!(s["last_successful_activation"], ZERO_TIME, "{name}: {s}");
        assert!(s.get("active_revision").is_none(), "{name}: {s}");
    }
    let rego = last_status(&srv, "bad_rego");
    assert_eq!(rego["errors"][0]["code"], "rego_parse_error", "{rego}");
    assert_eq!(
        rego["errors"][0]["location"]["file"], "/bad_rego/p.rego",
        "{rego}"
    );

    // Only the good bundle reached the data document; nothing was persisted or written.
    let all = data(&srv, "");
    let mut keys: Vec<&str> = all
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["good", "system"], "{all}");
    assert_eq!(all["good"], json!({"ok": true}));
    let mut active: Vec<&str> = all["system"]["bundles"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    active.sort();
    assert_eq!(active, ["good"]);
    let (_, policies) = json(srv.get("/v1/data/elsewhere"));
    assert_eq!(policies, json!({}), "no module from outside_package");
    assert!(!persist.exists(), "nothing persisted");
    assert!(!Path::new("/tmp/regent-evil").exists());
    let good_status = last_status(&srv, "good");
    assert_eq!(good_status["active_revision"], "g1", "{good_status}");
}

#[test]
fn failed_updates_keep_the_previous_bundle_serving() {
    let server = FaultServer::start(|_, seen| match seen {
        0 => ok(authz_bundle("r1", &["alice"])),
        _ => ok(files(&[
            ("/.manifest", r#"{"revision": "r2", "roots": ["authz"]}"#),
            ("/authz/policy.rego", "package authz\nallow if { y > 1 }\n"),
        ])),
    });
    let config = format!(
        "services:\n  cp:\n    url: {}\nbundles:\n  authz:\n    {}\n",
        server.url,
        fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);
    wait_for("activation", Duration::from_secs(10), || {
        allowed(&srv, "alice") == json!(true)
    });
    wait_for("the broken revision", Duration::from_secs(10), || {
        last_status(&srv, "authz")["errors"].is_array()
    });
    let s = last_status(&srv, "authz");
    assert_eq!(s["message"], "error(s) occurred while compiling module(s)");
    let code = s["errors"][0]["code"].as_str().unwrap_or_default();
    assert!(
        code.starts_with("rego_") && code != "rego_parse_error",
        "a compile-stage error: {s}"
    );
    assert_eq!(s["active_revision"], "r1");
    assert_eq!(allowed(&srv, "alice"), json!(true));
    assert_eq!(revision(&srv, "authz"), json!("r1"));
    // The broken bundle is downloaded again (its etag was not kept) on every poll.
    let n = server.requests("/bundles/authz").len();
    wait_for("another download", Duration::from_secs(5), || {
        server.requests("/bundles/authz").len() > n
    });
}

#[test]
fn bearer_tokens_inline_and_from_a_file_reread_per_request() {
    let expected_file_token = Arc::new(Mutex::new("rotated".to_string()));
    let want = expected_file_token.clone();
    let server = FaultServer::start(move |req, _| {
        let auth = req
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        let good = match req.path.as_str() {
            "/bundles/inline" => auth == "Bearer s3cret",
            "/bundles/file" => auth == format!("Token {}", want.lock().unwrap()),
            _ => false,
        };
        if good {
            ok(files(&[(
                "/.manifest",
                &json!({"revision": "ok", "roots": [req.path.trim_start_matches("/bundles/")]})
                    .to_string(),
            )]))
        } else {
            status(401)
        }
    });
    let work = tempfile::tempdir().unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, "old-token\n").unwrap();
    let config = format!(
        r#"services:
  inline:
    url: {url}
    credentials:
      bearer:
        token: s3cret
  file:
    url: {url}
    credentials:
      bearer:
        token_path: {path}
        scheme: Token
bundles:
  inline:
    service: inline
    {poll}
  file:
    service: file
    {poll}
"#,
        url = server.url,
        path = token.display(),
        poll = fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);
    wait_for("inline activation", Duration::from_secs(10), || {
        last_status(&srv, "inline")["active_revision"] == "ok"
    });
    wait_for("401 for the stale token", Duration::from_secs(10), || {
        last_status(&srv, "file")["http_code"] == 401
    });
    let s = last_status(&srv, "file");
    assert_eq!(s["message"], "server replied with Unauthorized");
    assert_eq!(s["code"], "bundle_error");
    std::fs::write(&token, "rotated\n").unwrap();
    wait_for("the rotated token", Duration::from_secs(10), || {
        last_status(&srv, "file")["active_revision"] == "ok"
    });
    let s = last_status(&srv, "file");
    assert!(
        s.get("http_code").is_none() && s.get("code").is_none(),
        "{s}"
    );
    let sent = server.requests("/bundles/inline");
    assert_eq!(sent[0].headers["authorization"], "Bearer s3cret");
    assert!(sent[0].headers["user-agent"].starts_with("regent/"));
}

#[test]
fn server_errors_back_off_hangs_time_out_and_truncated_bodies_fail() {
    let server = FaultServer::start(|req, seen| match (req.path.as_str(), seen) {
        ("/bundles/flaky", 0..=2) => status(500),
        ("/bundles/flaky", _) => ok(files(&[(
            "/.manifest",
            r#"{"revision": "finally", "roots": ["flaky"]}"#,
        )])),
        ("/bundles/hang", _) => Reply::Hang,
        ("/bundles/truncated", _) => Reply::Truncated {
            body: vec![0x1f, 0x8b, 0, 0],
            claimed: 4096,
        },
        _ => status(404),
    });
    let config = format!(
        r#"services:
  cp:
    url: {url}
  slow:
    url: {url}
    response_header_timeout_seconds: 1
bundles:
  flaky:
    service: cp
    polling: {{min_delay_seconds: 30, max_delay_seconds: 30}}
  hang:
    service: slow
    {poll}
  truncated:
    service: cp
    {poll}
  missing:
    service: cp
    {poll}
"#,
        url = server.url,
        poll = fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);
    wait_for("flaky to recover", Duration::from_secs(10), || {
        last_status(&srv, "flaky")["active_revision"] == "finally"
    });
    let errors: Vec<Value> = statuses(&srv, "flaky")
        .into_iter()
        .filter(|s| s["http_code"] == 500)
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(
        errors[0]["message"],
        "server replied with Internal Server Error"
    );
    // OPA's backoff: the first retry is immediate, then 160 ms, 256 ms (each ±20 %).
    let at: Vec<Instant> = server
        .requests("/bundles/flaky")
        .iter()
        .map(|r| r.at)
        .collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    assert!(gaps[0] < 0.12, "{gaps:?}");
    assert!(gaps[1] >= 0.125 && gaps[1] < 0.6, "{gaps:?}");
    assert!(gaps[2] >= 0.2 && gaps[2] < 0.8, "{gaps:?}");

    wait_for("the hang to time out", Duration::from_secs(10), || {
        last_status(&srv, "hang")["message"].is_string()
    });
    let s = last_status(&srv, "hang");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .starts_with("request failed: timeout"),
        "{s}"
    );
    assert!(s.get("http_code").is_none(), "{s}");

    wait_for(
        "the truncated body to fail",
        Duration::from_secs(10),
        || last_status(&srv, "truncated")["message"].is_string(),
    );
    let s = last_status(&srv, "truncated");
    assert!(
        s["message"].as_str().unwrap().starts_with("request failed"),
        "{s}"
    );

    wait_for("a 404", Duration::from_secs(10), || {
        last_status(&srv, "missing")["http_code"] == 404
    });
    assert_eq!(
        last_status(&srv, "missing")["message"],
        "server replied with Not Found"
    );
    // None of this touched the request path.
    assert_eq!(data(&srv, "flaky"), Value::Null);
}

#[test]
fn long_polling_reissues_immediately_while_the_server_supports_it() {
    const LP: &str = "application/vnd.openpolicyagent.bundles";
    let server = FaultServer::start(|_, seen| {
        let headers = vec![
            ("Content-Type", LP.to_string()),
            ("ETag", "\"v1\"".to_string()),
        ];
        match seen {
            0 => Reply::Full {
                status: 200,
                headers,
                body: authz_bundle("r1", &["alice"]),
            },
            _ => Reply::Delayed(
                Duration::from_millis(300),
                Box::new(Reply::Full {
                    status: 304,
                    headers,
                    body: vec![],
                }),
            ),
        }
    });
    let config = format!(
        "services:\n  cp:\n    url: {}\nbundles:\n  authz:\n    polling: {{min_delay_seconds: 60, max_delay_seconds: 120, long_polling_timeout_seconds: 5}}\n",
        server.url
    );
    let (srv, _cfg) = start(&config, &[]);
    wait_for("activation", Duration::from_secs(10), || {
        allowed(&srv, "alice") == json!(true)
    });
    // With 60 s polling, several requests within a couple of seconds means long polling.
    wait_for("long-poll requests", Duration::from_secs(5), || {
        server.requests("/bundles/authz").len() >= 4
    });
    let sent = server.requests("/bundles/authz");
    assert_eq!(sent[0].headers["prefer"], "modes=snapshot,delta;wait=5");
    assert!(!sent[0].headers.contains_key("if-none-match"));
    assert_eq!(sent[1].headers["if-none-match"], "\"v1\"");
    assert_eq!(sent[1].headers["prefer"], "modes=snapshot,delta;wait=5");
}

#[test]
fn file_resources_are_loaded_at_start_and_show_in_provenance() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("authz.tar.gz");
    std::fs::write(&path, authz_bundle("file-rev", &["carol"])).unwrap();
    let config = format!(
        "bundles:\n  local:\n    resource: file://{}\n",
        path.display()
    );
    let (srv, _cfg) = start(&config, &[]);
    // Activated before the server listened: no waiting.
    assert_eq!(allowed(&srv, "carol"), json!(true));
    assert_eq!(revision(&srv, "local"), json!("file-rev"));
    let s = last_status(&srv, "local");
    assert_eq!(s["active_revision"], "file-rev");
    assert_eq!(s["type"], "snapshot");
    assert_ne!(s["last_successful_download"], ZERO_TIME);
}

#[test]
fn requests_never_wait_for_downloads() {
    // A control plane that hangs must not slow decisions down.
    let server = FaultServer::start(|_, _| Reply::Hang);
    let config = format!(
        "services:\n  cp:\n    url: {}\n    response_header_timeout_seconds: 30\nbundles:\n  authz: {{}}\n",
        server.url
    );
    let dir = common::tree(&[("p.rego", "package other\nx := 1\n")]);
    let (srv, _cfg) = start(&config, &[dir.path().to_str().unwrap()]);
    wait_for("the download to start", Duration::from_secs(5), || {
        !server.requests("/bundles/authz").is_empty()
    });
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(data(&srv, "other/x"), json!(1));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Runs `openssl` (Debian's `openssl` package) with `args` in `dir`.
fn openssl(dir: &Path, args: &str) {
    let status = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is required for the TLS test");
    assert!(status.success(), "openssl {args}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn certificates(dir: &Path) {
    openssl(dir, "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=regent-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(dir, &format!("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.csr -subj /CN=127.0.0.1"));
        openssl(dir, &format!("x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"));
    }
}

#[test]
fn tls_ca_cert_and_client_certificates_against_nginx() {
    let www = tempfile::tempdir().unwrap();
    publish(
        &www.path().join("bundles/authz"),
        &authz_bundle("tls", &["dave"]),
        0,
    );
    let pki = tempfile::tempdir().unwrap();
    certificates(pki.path());
    let p = pki.path().display();
    let nginx = Nginx::start_with(
        www.path(),
        free_port(),
        "ssl",
        &format!(
            "ssl_certificate {p}/server.pem; ssl_certificate_key {p}/server.key; \
             ssl_client_certificate {p}/ca.pem; ssl_verify_client on;"
        ),
    );
    let config = format!(
        r#"services:
  mtls:
    url: {url}
    tls: {{ca_cert: {p}/ca.pem}}
    credentials:
      client_tls: {{cert: {p}/client.pem, private_key: {p}/client.key}}
  no_client_cert:
    url: {url}
    tls: {{ca_cert: {p}/ca.pem}}
  untrusted:
    url: {url}
bundles:
  authz:
    service: mtls
    {poll}
  anonymous:
    service: no_client_cert
    resource: bundles/authz
    {poll}
  unverified:
    service: untrusted
    resource: bundles/authz
    {poll}
"#,
        url = nginx.https_url(),
        poll = fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);
    wait_for(
        "activation over mutual TLS",
        Duration::from_secs(15),
        || allowed(&srv, "dave") == json!(true),
    );
    // Without a client certificate nginx refuses the request itself.
    wait_for(
        "nginx to refuse the anonymous client",
        Duration::from_secs(10),
        || last_status(&srv, "anonymous")["http_code"] == 400,
    );
    // Without the CA the server's certificate is not trusted.
    wait_for(
        "the untrusted server to fail",
        Duration::from_secs(10),
        || last_status(&srv, "unverified")["message"].is_string(),
    );
    let s = last_status(&srv, "unverified");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .starts_with("request failed: "),
        "{s}"
    );
    assert!(
        s["message"].as_str().unwrap().contains("certificate"),
        "{s}"
    );
}

#[test]
fn health_reports_bundles_not_ready_until_activated_then_ready_for_good() {
    let release = Arc::new(AtomicBool::new(false));
    let gate = release.clone();
    let served = std::sync::atomic::AtomicUsize::new(0);
    let server = FaultServer::start(move |_, _| {
        if !gate.load(Ordering::SeqCst) {
            status(503)
        } else if served.fetch_add(1, Ordering::SeqCst) < 3 {
            ok(authz_bundle("r1", &["alice"]))
        } else {
            status(500)
        }
    });
    let config = format!(
        "services:\n  cp:\n    url: {}\nbundles:\n  authz:\n    {}\n",
        server.url,
        fast_polling()
    );
    let (srv, _cfg) = start(&config, &[]);
    let health = |q: &str| json(srv.get(&format!("/health{q}")));
    wait_for("a failed attempt", Duration::from_secs(5), || {
        last_status(&srv, "authz")["http_code"] == 503
    });
    let (code, body) = health("?bundles");
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["error"], "one or more bundles are not activated");
    assert_eq!(health("?plugins").0, 500);
    assert_eq!(health("").0, 200, "plain /health does not look at bundles");

    release.store(true, Ordering::SeqCst);
    wait_for("readiness", Duration::from_secs(10), || {
        health("?bundles").0 == 200
    });
    assert_eq!(health("?plugins").0, 200);
    // Later failures do not take readiness away (OPA's rule).
    wait_for("later failures", Duration::from_secs(10), || {
        last_status(&srv, "authz")["http_code"] == 500
    });
    assert_eq!(health("?bundles").0, 200);
}

/// REST writes under an activated bundle's roots get OPA's 400 answers.
#[test]
fn rest_writes_under_bundle_roots_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("authz.tar.gz");
    std::fs::write(&path, authz_bundle("r1", &["alice"])).unwrap();
    let everything = work.path().join("all.tar.gz");
    std::fs::write(
        &everything,
        files(&[
            ("/.manifest", r#"{"revision": "all"}"#),
            ("/data.json", "{}"),
        ]),
    )
    .unwrap();

    let config = format!(
        "bundles:\n  authz:\n    resource: file://{}\n",
        path.display()
    );
    let (srv, _cfg) = start(&config, &[]);
    let put = |path: &str, body: &str| {
        srv.client
            .put(srv.url(path))
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let refused = |resp: reqwest::blocking::Response, message: &str| {
        let (code, body) = json(resp);
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["code"], "invalid_parameter", "{body}");
        assert_eq!(body["message"], message, "{body}");
    };
    refused(
        put("/v1/data/authz/users", r#"["mallory"]"#),
        "path authz/users is owned by bundle \"authz\"",
    );
    refused(
        put("/v1/data/authz", "{}"),
        "path authz is owned by bundle \"authz\"",
    );
    refused(
        put("/v1/data", "{}"),
        "can't write to document root with bundle roots configured",
    );
    let patch = srv
        .client
        .patch(srv.url("/v1/data/authz"))
        .body(r#"[{"op": "add", "path": "/users/-", "value": "mallory"}]"#)
        .send()
        .unwrap();
    // Checked per operation path, as OPA does.
    refused(patch, "path authz/users/- is owned by bundle \"authz\"");
    let delete = srv
        .client
        .delete(srv.url("/v1/data/authz/users"))
        .send()
        .unwrap();
    refused(delete, "path authz/users is owned by bundle \"authz\"");
    refused(
        put("/v1/policies/mine", "package authz.extra\nx := 1\n"),
        "path authz/extra is owned by bundle \"authz\"",
    );
    // Nothing changed; writes outside the roots still work.
    assert_eq!(allowed(&srv, "alice"), json!(true));
    assert_eq!(allowed(&srv, "mallory"), json!(false));
    assert_eq!(
        put("/v1/data/elsewhere", r#"{"x": 1}"#).status().as_u16(),
        204
    );
    assert_eq!(data(&srv, "elsewhere/x"), json!(1));
    drop(srv);

    // A bundle without roots owns all of data.
    let config = format!(
        "bundles:\n  all:\n    resource: file://{}\n",
        everything.display()
    );
    let (srv, _cfg) = start(&config, &[]);
    let resp = srv
        .client
        .put(srv.url("/v1/data/anything"))
        .body("1")
        .send()
        .unwrap();
    let (code, body) = json(resp);
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["message"], "all paths owned by bundle \"all\"");
}

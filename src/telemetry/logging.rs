//! Log setup: OPA's `--log-level` and `--log-format` (JSON by default), written to stderr.
//!
//! Every request writes two info lines, so logging is on the hot path and is kept cheap:
//!
//! - JSON lines are formatted by [`JsonLines`] straight into the line buffer, with the exact
//!   output of tracing-subscriber's JSON format as configured here (`timestamp`, `level`, then
//!   the event's fields in order, message first; no target, no spans), without going through
//!   serde's per-token writes;
//! - lines are handed to a writer thread over a bounded channel ([`Sink`]); it writes them in
//!   batches, napping 1 ms between batches while lines keep coming, so a request never waits for
//!   a `write(2)` or wakes a thread, unless the channel is full (then it waits, as a synchronous
//!   logger would: lines are never dropped). [`flush`] waits until every line sent so far is written; `main` calls it before
//!   exiting.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    #[value(name = "json-pretty")]
    JsonPretty,
}

/// Lines waiting for the writer thread. Past this, loggers wait for it to catch up.
const QUEUE_LINES: usize = 16 * 1024;

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::new(format!("regent={level},warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink().clone())
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::JsonPretty => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .pretty()
            .try_init(),
    };
    // A second init (tests running several servers in one process) keeps the first subscriber.
    let _ = result;
}

/// Waits until every line logged so far has been written to stderr.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        let (done, wait) = sync_channel(1);
        if sink.send(Message::Flush(done)) {
            let _ = wait.recv();
        }
    }
}

enum Message {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The sending side of the log writer thread; cloned into the subscriber.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Message>,
    wake: Arc<Wake>,
}

/// How loggers wake the writer thread. While lines keep coming the writer naps between
/// batches and nobody wakes it: waking it per line costs a futex call and, on a server pinned to
/// one core, a context switch to the writer and back for every line. Only a writer that found
/// nothing to do sleeps until the next logger wakes it.
#[derive(Default)]
struct Wake {
    sleeping: AtomicBool,
    writer: OnceLock<Thread>,
}

/// Pause between batches while lines keep coming: bounds how late a line is written.
const BUSY_NAP: Duration = Duration::from_millis(1);

/// Longest sleep of an idle writer between looks at the queue.
const IDLE_CHECK: Duration = Duration::from_millis(250);

impl Sink {
    fn send(&self, message: Message) -> bool {
        if self.tx.send(message).is_err() {
            return false;
        }
        if self.wake.sleeping.load(Ordering::SeqCst)
            && self.wake.sleeping.swap(false, Ordering::SeqCst)
        {
            if let Some(writer) = self.wake.writer.get() {
                writer.unpark();
            }
        }
        true
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

fn sink() -> &'static Sink {
    SINK.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let wake = Arc::new(Wake::default());
        let writer_wake = wake.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            // Not `stderr().lock()`: the lock would be held for good and deadlock anything
            // else writing to stderr (`eprintln!` of a startup error in `main`).
            .spawn(move || write_lines(rx, io::stderr(), &writer_wake))
            .expect("spawn the log writer thread");
        Sink { tx, wake }
    })
}

/// Writes lines in batches, one `write(2)` per batch, until every sender is gone.
fn write_lines(rx: Receiver<Message>, out: impl io::Write, wake: &Wake) {
    // Set before the writer can ever sleep, so a logger that sees it asleep can wake it.
    let _ = wake.writer.set(std::thread::current());
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut waiting = Vec::new();
    let mut pending = None;
    loop {
        let mut wrote = false;
        let mut disconnected = false;
        loop {
            let message = match pending.take().map(Ok).unwrap_or_else(|| rx.try_recv()) {
                Ok(message) => message,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            };
            wrote = true;
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => waiting.push(done),
            }
        }
        if wrote || disconnected {
            let _ = out.flush();
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        if disconnected {
            return;
        }
        if wrote {
            std::thread::sleep(BUSY_NAP);
            continue;
        }
        // Nothing came during a nap: sleep until a logger wakes us. Announce it first, then
        // look once more, so a line sent in between is not left waiting.
        wake.sleeping.store(true, Ordering::SeqCst);
        match rx.try_recv() {
            Ok(message) => {
                wake.sleeping.store(false, Ordering::SeqCst);
                pending = Some(message);
            }
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                // Until a logger wakes us; now and then look anyway, which also notices that
                // every sender is gone.
                std::thread::park_timeout(IDLE_CHECK);
                wake.sleeping.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// One event's line, collected while tracing-subscriber writes it, then queued on drop.
pub struct SinkWriter<'a> {
    sink: &'a Sink,
    line: Vec<u8>,
}

impl io::Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            // The receiver only goes away with the process.
            let _ = self.sink.send(Message::Line(line));
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter {
            sink: self,
            line: Vec::new(),
        }
    }
}

/// tracing-subscriber's flattened JSON line, formatted directly.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        push_timestamp(&mut line, SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        event.record(&mut JsonFields { line: &mut line });
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Appends `,"name":value` for each field, as serde_json would write it.
struct JsonFields<'a> {
    line: &'a mut String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_json_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.line, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        push_json_str(self.line, &text);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's rendering (shortest round-trip, `null` for non-finite values).
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
        self.line.push_str(&text);
    }
}

/// A JSON string literal with serde_json's escapes: `"`, `\`, and control characters.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber's default timer writes it. The date
/// and time of day are formatted once per second.
fn push_timestamp(out: &mut String, now: SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let at = chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + since);
            cached.1 = at.format("%Y-%m-%dT%H:%M:%S").to_string();
            cached.0 = secs;
        }
        out.push_str(&cached.1);
    });
    let _ = write!(out, ".{:06}Z", since.subsec_micros());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The same events through tracing-subscriber's JSON format and through [`JsonLines`].
    fn both(emit: impl Fn()) -> (String, String) {
        let theirs = Capture::default();
        let ours = Capture::default();
        let t = theirs.clone();
        let reference = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .without_time()
            .with_writer(move || t.clone())
            .finish();
        tracing::subscriber::with_default(reference, &emit);
        let o = ours.clone();
        let fast = tracing_subscriber::fmt()
            .with_target(false)
            .event_format(JsonLines)
            .with_writer(move || o.clone())
            .finish();
        tracing::subscriber::with_default(fast, &emit);
        let text = |c: Capture| String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        (text(theirs), text(ours))
    }

    #[test]
    fn lines_match_tracing_subscribers_json() {
        let (theirs, ours) = both(|| {
            let method = "POST".to_string();
            tracing::info!(
                client_addr = "127.0.0.1:5",
                req_id = 7u64,
                req_method = method,
                req_path = "/v1/data/a\"b\\c\u{1}\u{e9}\n",
                resp_duration = 0.123456f64,
                big = 1e21f64,
                neg = -3i64,
                ok = true,
                list = ?vec!["x"],
                "Sent response."
            );
            tracing::error!(error = %"boom", "Listener failed.");
        });
        // The reference has no timestamp (without_time); drop ours to compare the rest.
        let ours: Vec<String> = ours
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ts = v["timestamp"].as_str().unwrap();
                assert_eq!(ts.len(), "2026-11-29T22:11:01.288652Z".len(), "{ts}");
                assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
                l.replacen(&format!("\"timestamp\":\"{ts}\","), "", 1)
            })
            .collect();
        let theirs: Vec<&str> = theirs.lines().collect();
        assert_eq!(theirs.len(), 2);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn writer_thread_writes_every_line_in_order() {
        let (tx, rx) = sync_channel(4);
        let out = Capture::default();
        let o = out.clone();
        let wake = Arc::new(Wake::default());
        let w = wake.clone();
        let writer = std::thread::spawn(move || write_lines(rx, o, &w));
        let sink = Sink { tx, wake };
        let written = || String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let flush = || {
            let (done, wait) = sync_channel(1);
            assert!(sink.send(Message::Flush(done)));
            wait.recv().unwrap();
        };
        // A burst (the writer naps between batches) and, after it fell asleep, single lines
        // (each must wake it).
        for i in 0..100 {
            writeln!(sink.make_writer(), "line {i}").unwrap();
        }
        flush();
        let mut expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written(), expected);
        for i in 100..103 {
            std::thread::sleep(Duration::from_millis(20));
            writeln!(sink.make_writer(), "line {i}").unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            expected.push_str(&format!("line {i}\n"));
            while written() != expected {
                assert!(std::time::Instant::now() < deadline, "line {i} not written");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(sink);
        writer.join().unwrap();
    }

    #[test]
    fn timestamps_are_rfc3339_micros() {
        let mut s = String::new();
        push_timestamp(
            &mut s,
            UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456),
        );
        assert_eq!(s, "2023-11-14T22:13:20.123456Z");
    }
}

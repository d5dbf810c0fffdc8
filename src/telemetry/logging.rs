//! Log setup: OPA's `--log-level` and `--log-format` (JSON by default, in OPA's line shapes
//! from `log_format`), written to stderr.
//!
//! Every request writes two info lines, so writing them is kept off the request path: lines
//! are handed to a writer thread over a bounded channel ([`Sink`]); it writes them in batches,
//! napping 1 ms between batches while lines keep coming, so a request never waits for a
//! `write(2)` or wakes a thread, unless the channel is full (then it waits, as a synchronous
//! logger would: lines are never dropped). [`flush`] waits until every line sent so far is
//! written; `main` calls it before exiting.

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use super::log_format::{Layout, OpaFormat};

/// Lines waiting for the writer thread. Past this, loggers wait for it to catch up.
const QUEUE_LINES: usize = 16 * 1024;

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

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::new(format!("regent={level},warn"));
    let layout = match format {
        LogFormat::Text => Layout::Text,
        LogFormat::Json => Layout::Json,
        LogFormat::JsonPretty => Layout::JsonPretty,
    };
    let result = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink().clone())
        .event_format(OpaFormat(layout))
        .try_init();
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
}

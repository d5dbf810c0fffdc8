//! Keeping CPU-heavy engine work from stalling the async runtime.
//!
//! Writes (compiling a new snapshot, waiting for the writer lock) run on tokio's blocking pool.
//! Evaluations run in place on the async workers: handing each one off (`block_in_place`) cost
//! 15-20 % of decision throughput. But a worker stuck in a long evaluation can leave the I/O
//! driver unpolled: tokio's other workers sleep on a condition variable and nothing tells them
//! the driver is free, so the accept loop, SIGTERM and every other connection wait for the
//! evaluation (measured: a 4 s policy delayed shutdown and new requests by the full 4 s).
//! [`keep_io_polled`] wakes an idle worker every 10 ms while an evaluation
//! ([`Evaluations::run`]) is running; once awake it parks on the driver again and I/O flows
//! while the evaluation runs. An idle server is not woken at all (the tick thread itself sleeps
//! until an evaluation starts).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tokio::runtime::Handle;

use super::error::ApiError;
use crate::engine::{Draft, Edit, EngineError, Store};

/// Applies `edit` through [`Store::write_if_changed`] on the blocking pool. The outer error is
/// the task failing (a panic while compiling: 500, store unchanged); the inner one is the
/// engine's verdict, which each handler maps to OPA's answer for its route.
pub async fn write<T: Send + 'static>(
    store: &Arc<Store>,
    edit: impl FnOnce(&mut Draft) -> Result<Edit<T>, EngineError> + Send + 'static,
) -> Result<Result<T, EngineError>, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write_if_changed(edit).map(|(out, _)| out))
        .await
        .map_err(|join| ApiError::Internal(format!("write failed: {join}")))
}

/// How long I/O may go unpolled while every awake worker is busy evaluating.
const IO_TICK: Duration = Duration::from_millis(10);

/// Counts evaluations running on async workers, so the tick thread knows when to nudge.
/// One per server, shared by its handlers ([`AppState::evaluations`](super::AppState)) and its
/// tick thread.
#[derive(Default)]
pub struct Evaluations {
    running: AtomicUsize,
    /// The tick thread, unparked when evaluations start after a quiet spell.
    ticker: OnceLock<Thread>,
}

impl Evaluations {
    /// Runs an evaluation on the current worker, counted while it runs.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Running<'a>(&'a AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.running.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Some(ticker) = self.ticker.get() {
                ticker.unpark();
            }
        }
        let _running = Running(&self.running);
        f()
    }

    fn any(&self) -> bool {
        self.running.load(Ordering::Relaxed) > 0
    }
}

/// Starts the thread that, while evaluations run, nudges the runtime behind `handle` every
/// [`IO_TICK`] (an empty task: a parked worker wakes, runs it, and parks on the I/O driver).
/// With nothing evaluating it sleeps until [`Evaluations::run`] wakes it, so an idle server
/// stays idle.
pub fn keep_io_polled(handle: Handle, evaluations: Arc<Evaluations>) {
    let counted = evaluations.clone();
    let spawned = std::thread::Builder::new()
        .name("regent-io-tick".into())
        .spawn(move || loop {
            if !counted.any() {
                std::thread::park();
                continue;
            }
            std::thread::sleep(IO_TICK);
            if counted.any() {
                drop(handle.spawn(async {}));
            }
        });
    match spawned {
        Ok(thread) => {
            let _ = evaluations.ticker.set(thread.thread().clone());
        }
        Err(err) => tracing::error!(error = %err, "Could not start the I/O tick thread."),
    }
}

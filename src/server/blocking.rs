//! Keeping CPU-heavy engine work from stalling the async runtime.
//!
//! Writes (compiling a new snapshot, waiting for the writer lock) run on tokio's blocking pool.
//! Evaluations run in place on the async workers: handing each one off (`block_in_place`) cost
//! 15-20 % of decision throughput. But a worker stuck in a long evaluation can leave the I/O
//! driver unpolled: tokio's other workers sleep on a condition variable and nothing tells them
//! the driver is free, so the accept loop, SIGTERM and every other connection wait for the
//! evaluation (measured: a 4 s policy delayed shutdown and new requests by the full 4 s).
//! [`keep_io_polled`] wakes an idle worker every 10 ms while an [`evaluate`] call is running;
//! once awake it parks on the driver again and I/O flows while the evaluation runs. An idle
//! server is not woken at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

/// Evaluations running on async workers right now.
static EVALUATING: AtomicUsize = AtomicUsize::new(0);

/// Runs an evaluation on the current worker, counted so [`keep_io_polled`] knows to nudge.
pub fn evaluate<T>(f: impl FnOnce() -> T) -> T {
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            EVALUATING.fetch_sub(1, Ordering::Relaxed);
        }
    }
    EVALUATING.fetch_add(1, Ordering::Relaxed);
    let _running = Running;
    f()
}

/// Starts a thread that, while evaluations run, nudges the runtime behind `handle` every
/// [`IO_TICK`] for as long as the process lives (an empty task: a parked worker wakes, runs it,
/// and parks on the I/O driver).
pub fn keep_io_polled(handle: Handle) {
    let spawned = std::thread::Builder::new()
        .name("regent-io-tick".into())
        .spawn(move || loop {
            std::thread::sleep(IO_TICK);
            if EVALUATING.load(Ordering::Relaxed) > 0 {
                drop(handle.spawn(async {}));
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "Could not start the I/O tick thread.");
    }
}

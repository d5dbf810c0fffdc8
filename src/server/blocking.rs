//! Keeping CPU-heavy engine work from stalling the async runtime.
//!
//! Writes (compiling a new snapshot, waiting for the writer lock) run on tokio's blocking pool.
//! Evaluations run in place but under `block_in_place`: a policy can take seconds, and a worker
//! stuck in one would otherwise hold tasks queued on it (the accept loop, the shutdown signal,
//! other connections) until it finished. Measured: with a 4 s evaluation in flight, SIGTERM and
//! new requests waited the full 4 s without it.

use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};

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

/// Runs an evaluation on the current thread after handing this worker's queued tasks to
/// another thread. On a current-thread runtime (in-process tests) it just runs `f`.
pub fn evaluate<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

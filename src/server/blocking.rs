//! Running CPU-heavy engine work (compiling a new snapshot) on tokio's blocking pool, so a
//! long compile or a writer waiting for the store's writer lock never stalls the async workers
//! that serve decisions.

use std::sync::Arc;

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

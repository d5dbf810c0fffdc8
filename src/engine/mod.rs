//! Rego evaluation and the data store.
//!
//! Requests read an immutable [`Snapshot`] that [`Store`] swaps atomically; they never take a
//! lock. Writers (the REST API, bundle activation) are serialised by a writer-only mutex, build
//! the next snapshot from a [`Draft`] of the current one, and publish it only if it compiles,
//! so a failed write changes nothing.

pub mod document;
pub mod error;
pub mod eval;
pub mod loader;
pub mod snapshot;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use thiserror::Error;

pub use document::DocumentError;
pub use error::{Location, RegoError};
pub use snapshot::{BundleInfo, Draft, Policy, Snapshot};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("error(s) occurred while compiling module(s)")]
    Compile(Vec<RegoError>),
    #[error("error(s) occurred while evaluating query")]
    Eval(Vec<RegoError>),
    #[error("error(s) occurred while parsing query")]
    QueryParse(Vec<RegoError>),
    #[error("error(s) occurred while compiling query")]
    QueryCompile(Vec<RegoError>),
    #[error("invalid data: {0}")]
    InvalidData(String),
    #[error(transparent)]
    Document(#[from] DocumentError),
}

pub struct Store {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
}

impl Store {
    pub fn new(initial: Snapshot) -> Self {
        Store {
            current: ArcSwap::from_pointee(initial),
            writer: Mutex::new(()),
        }
    }

    /// The snapshot to answer one request with. Lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies `edit` to a draft of the current snapshot, compiles it and publishes the result.
    /// Writers run one at a time; readers keep the old snapshot until the swap.
    pub fn write<T>(
        &self,
        edit: impl FnOnce(&mut Draft) -> Result<T, EngineError>,
    ) -> Result<(T, Arc<Snapshot>), EngineError> {
        self.write_with(edit)
    }

    /// [`Store::write`] for writers with their own error type (bundle activation): an `Err`
    /// from `edit` or from compiling aborts the write and publishes nothing.
    pub fn write_with<T, E: From<EngineError>>(
        &self,
        edit: impl FnOnce(&mut Draft) -> Result<T, E>,
    ) -> Result<(T, Arc<Snapshot>), E> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut draft = self.current.load().to_draft();
        let out = edit(&mut draft)?;
        let next = Arc::new(Snapshot::build(draft)?);
        self.current.store(next.clone());
        Ok((out, next))
    }
}

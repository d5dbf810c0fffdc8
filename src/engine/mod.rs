//! Rego evaluation and the data store.
//!
//! Requests read an immutable [`Snapshot`] that [`Store`] swaps atomically; they never take a
//! lock. Writers (the REST API, bundle activation) are serialised by a writer-only mutex, build
//! the next snapshot from a [`Draft`] of the current one, and publish it only if it compiles,
//! so a failed write changes nothing.

pub mod compiled;
pub mod conflicts;
pub mod document;
pub mod error;
pub mod eval;
pub mod loader;
pub mod modules;
pub mod nesting;
pub mod query;
pub mod roots;
mod rvm_safety;
pub mod snapshot;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use thiserror::Error;

pub use document::DocumentError;
pub use error::{Location, RegoError};
pub use roots::RootsError;
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
    /// Base data on a rule's path (OPA's path-conflict check).
    #[error("{}", error::errors_text(.0))]
    DataConflict(Vec<RegoError>),
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// A module with no statements at all (OPA parses it to nothing).
    #[error("empty module")]
    EmptyModule,
    #[error("storage_not_found_error: policy id {0:?}")]
    PolicyNotFound(String),
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(transparent)]
    Roots(#[from] RootsError),
}

pub struct Store {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    /// Syntax for modules and queries that arrive without one (`--v0-compatible` turns it off).
    rego_v1: bool,
}

/// What a [`Store::write_if_changed`] edit decided.
pub enum Edit<T> {
    /// Publish the edited draft.
    Changed(T),
    /// Nothing to do: no compile, no swap (e.g. `If-None-Match: *`, identical module).
    Unchanged(T),
}

impl Store {
    pub fn new(initial: Snapshot) -> Self {
        Store {
            current: ArcSwap::from_pointee(initial),
            writer: Mutex::new(()),
            rego_v1: true,
        }
    }

    /// Parse API-supplied modules and queries with Rego v0 syntax (`--v0-compatible`).
    pub fn v0_compatible(mut self, v0: bool) -> Self {
        self.rego_v1 = !v0;
        self
    }

    /// Whether modules and queries without an explicit version are Rego v1.
    pub fn rego_v1(&self) -> bool {
        self.rego_v1
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
        self.write_if_changed(|draft| edit(draft).map(Edit::Changed))
    }

    /// [`Store::write`] for writers with their own error type (bundle activation): an `Err`
    /// from `edit` or from compiling aborts the write and publishes nothing.
    pub fn write_with<T, E: From<EngineError>>(
        &self,
        edit: impl FnOnce(&mut Draft) -> Result<T, E>,
    ) -> Result<(T, Arc<Snapshot>), E> {
        self.write_if_changed(|draft| edit(draft).map(Edit::Changed))
    }

    /// Like [`Store::write`], but the edit may decide that nothing changes; the current snapshot
    /// is then returned untouched.
    pub fn write_if_changed<T, E: From<EngineError>>(
        &self,
        edit: impl FnOnce(&mut Draft) -> Result<Edit<T>, E>,
    ) -> Result<(T, Arc<Snapshot>), E> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load_full();
        let mut draft = current.to_draft();
        match edit(&mut draft)? {
            Edit::Unchanged(out) => Ok((out, current)),
            Edit::Changed(out) => {
                let next = Arc::new(Snapshot::build(draft)?);
                self.current.store(next.clone());
                Ok((out, next))
            }
        }
    }
}

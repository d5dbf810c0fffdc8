//! The bundle plugin: downloads bundles from services, activates them into the store, and keeps
//! per-bundle status for health, the status plugin and metrics.

pub mod status;

pub use status::{BundleStatus, BundleStatusBoard};

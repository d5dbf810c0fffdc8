//! The bundle plugin: downloads bundles from services, activates them into the store, and keeps
//! per-bundle status for health, the status plugin and metrics.
//!
//! - `download.rs`: one HTTP attempt (ETag, 304, long polling) and the delays between attempts;
//! - `archive.rs`: reading a tarball and refusing hostile content;
//! - `activate.rs`: the all-or-nothing store write that replaces a bundle's roots;
//! - `persist.rs`: the on-disk copy of persisted bundles;
//! - `plugin.rs`: the tasks that tie these together and report status;
//! - `status.rs`: `BundleStatus` in OPA's JSON shape and the board it is published on.

pub mod activate;
pub mod archive;
pub mod download;
pub mod persist;
pub mod plugin;
pub mod roots;
pub mod status;

use std::collections::BTreeMap;
use std::time::Instant;

pub use plugin::BundlePlugin;
pub use status::{BundleStatus, BundleStatusBoard};

/// The plugin's name in the plugin manager, `/health` and status reports.
pub const PLUGIN_NAME: &str = "bundle";

/// Per-attempt timers and counters, as OPA puts them in `BundleStatus.metrics`.
pub type Timers = BTreeMap<String, u64>;

pub const TIMER_BUNDLE_REQUEST: &str = "timer_bundle_request_ns";
pub const TIMER_REGO_DATA_PARSE: &str = "timer_rego_data_parse_ns";
pub const TIMER_REGO_MODULE_PARSE: &str = "timer_rego_module_parse_ns";
pub const TIMER_REGO_MODULE_COMPILE: &str = "timer_rego_module_compile_ns";
pub const TIMER_REGO_LOAD_BUNDLES: &str = "timer_rego_load_bundles_ns";

/// Runs `f` and adds its duration to `timers[key]` in nanoseconds.
pub fn time<T>(timers: &mut Timers, key: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    add(timers, key, started);
    out
}

/// Adds the time since `started` to `timers[key]`.
pub fn add(timers: &mut Timers, key: &str, started: Instant) {
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    *timers.entry(key.to_string()).or_default() += ns;
}

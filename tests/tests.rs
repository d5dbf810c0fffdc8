//! The one integration-test binary (as ripgrep's): one module per area, shared helpers in `common`.

mod bundle_scope;
mod bundles;
mod common;
mod config;
mod data_api;
mod data_write;
mod decision_metrics;
mod differential;
mod health;
mod lifecycle;
mod logging;
mod metrics;
mod ops_kit;
mod policies_api;
mod query_api;
mod server_core;
mod status;

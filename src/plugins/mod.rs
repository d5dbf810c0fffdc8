//! Plugins that run beside the server (bundle, status, ...) and the manager that tracks their
//! states. Each plugin owns its state and reports it to the [`manager::PluginManager`].

pub mod bundle;
pub mod manager;
pub mod status;

pub use manager::{PluginManager, PluginStatus, PluginStatuses, State};

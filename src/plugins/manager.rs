//! The plugin manager: one status per registered plugin, and change notification.
//!
//! This is the single source that `/health`, `GET /v1/status`, the status plugin and the
//! `plugin_status_gauge` read. Reads are lock-free (an atomically swapped map); updates are
//! serialised and every update is published to subscribers, even when the state did not change,
//! as OPA's manager does. Subscribers hold a `watch` receiver: each update wakes them and they
//! read the newest map, so a slow subscriber sees the latest states rather than a backlog (OPA's
//! status plugin likewise keeps only one pending plugin update).
//!
//! A plugin owns its state through the [`PluginHandle`] it gets from
//! [`PluginManager::register_plugin`]; nothing else is meant to write that plugin's entry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    #[serde(rename = "NOT_READY")]
    NotReady,
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "ERROR")]
    Error,
    #[serde(rename = "WARN")]
    Warn,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::NotReady => "NOT_READY",
            State::Ok => "OK",
            State::Error => "ERROR",
            State::Warn => "WARN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PluginStatus {
    pub fn new(state: State) -> Self {
        PluginStatus {
            state,
            message: None,
        }
    }

    pub fn with_message(state: State, message: impl Into<String>) -> Self {
        PluginStatus {
            state,
            message: Some(message.into()),
        }
    }
}

/// Plugin name to status, ordered by name.
pub type PluginStatuses = BTreeMap<String, PluginStatus>;

pub struct PluginManager {
    statuses: ArcSwap<PluginStatuses>,
    writer: Mutex<()>,
    changes: watch::Sender<Arc<PluginStatuses>>,
    /// Set once every plugin was seen OK by [`PluginManager::plugins_ready`]; never cleared.
    ready_once: AtomicBool,
}

impl Default for PluginManager {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginManager {
    pub fn new() -> Self {
        let empty = Arc::new(PluginStatuses::new());
        PluginManager {
            statuses: ArcSwap::new(empty.clone()),
            writer: Mutex::new(()),
            changes: watch::channel(empty).0,
            ready_once: AtomicBool::new(false),
        }
    }

    /// Registers `name` in state NOT_READY and hands the plugin the handle through which it
    /// reports its own state from then on.
    pub fn register_plugin(self: &Arc<Self>, name: &str) -> PluginHandle {
        self.register(name);
        PluginHandle {
            manager: self.clone(),
            name: name.into(),
        }
    }

    /// Registers a plugin in state NOT_READY.
    pub fn register(&self, name: &str) {
        self.update(name, PluginStatus::new(State::NotReady));
    }

    /// Records a plugin's status and tells every subscriber.
    pub fn update(&self, name: &str, status: PluginStatus) {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.statuses.load()).clone();
        next.insert(name.to_string(), status);
        let next = Arc::new(next);
        self.statuses.store(next.clone());
        self.changes.send_replace(next);
    }

    pub fn statuses(&self) -> Arc<PluginStatuses> {
        self.statuses.load_full()
    }

    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        self.statuses.load().get(name).cloned()
    }

    /// A receiver that wakes on every update and sees the newest map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PluginStatuses>> {
        self.changes.subscribe()
    }

    /// OPA's `plugins_ready` latch for `/health/<path>` policies: true from the first call that
    /// finds every registered plugin OK (vacuously so with none), and true forever after, even
    /// if a plugin later leaves OK. Like OPA, it is only evaluated when asked.
    pub fn plugins_ready(&self) -> bool {
        if self.ready_once.load(Ordering::Acquire) {
            return true;
        }
        let all_ok = self.statuses.load().values().all(|s| s.state == State::Ok);
        if all_ok {
            self.ready_once.store(true, Ordering::Release);
        }
        all_ok
    }
}

/// A plugin's write access to its own entry in the manager. Cheap to clone; every write goes
/// through [`PluginManager::update`], so subscribers are told of it.
#[derive(Clone)]
pub struct PluginHandle {
    manager: Arc<PluginManager>,
    name: Arc<str>,
}

impl PluginHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reports a new state without a message (clearing any previous one).
    pub fn set_state(&self, state: State) {
        self.manager.update(&self.name, PluginStatus::new(state));
    }

    /// Reports a new state with a message saying why, shown by `/health` and status reports.
    pub fn set_state_with_message(&self, state: State, message: impl Into<String>) {
        self.manager
            .update(&self.name, PluginStatus::with_message(state, message));
    }

    pub fn set(&self, status: PluginStatus) {
        self.manager.update(&self.name, status);
    }

    /// The plugin's current status as the manager holds it.
    pub fn status(&self) -> Option<PluginStatus> {
        self.manager.status(&self.name)
    }
}

impl std::fmt::Debug for PluginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHandle")
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn register_update_and_notify() {
        let manager = PluginManager::new();
        let mut rx = manager.subscribe();
        manager.register("bundle");
        assert_eq!(manager.status("bundle").unwrap().state, State::NotReady);
        rx.changed().await.unwrap();
        manager.update("bundle", PluginStatus::new(State::Ok));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow()["bundle"].state, State::Ok);
        // Unchanged updates still notify.
        manager.update("bundle", PluginStatus::new(State::Ok));
        assert!(rx.has_changed().unwrap());
    }

    #[tokio::test]
    async fn handle_writes_its_own_entry_and_notifies() {
        let manager = Arc::new(PluginManager::new());
        let mut rx = manager.subscribe();
        let handle = manager.register_plugin("status");
        assert_eq!(handle.name(), "status");
        assert_eq!(handle.status(), Some(PluginStatus::new(State::NotReady)));
        rx.changed().await.unwrap();
        handle.set_state_with_message(State::Warn, "retrying");
        rx.changed().await.unwrap();
        assert_eq!(
            rx.borrow()["status"],
            PluginStatus::with_message(State::Warn, "retrying")
        );
        handle.set_state(State::Ok);
        assert_eq!(manager.status("status"), Some(PluginStatus::new(State::Ok)));
    }

    #[test]
    fn plugins_ready_latches_once_all_are_ok() {
        let manager = Arc::new(PluginManager::new());
        let a = manager.register_plugin("a");
        let b = manager.register_plugin("b");
        assert!(!manager.plugins_ready());
        a.set_state(State::Ok);
        assert!(!manager.plugins_ready());
        b.set_state(State::Ok);
        // Not latched until asked: a plugin leaving OK before the first call still counts.
        a.set_state(State::Error);
        assert!(!manager.plugins_ready());
        a.set_state(State::Ok);
        assert!(manager.plugins_ready());
        a.set_state(State::Error);
        b.set_state(State::NotReady);
        assert!(manager.plugins_ready(), "the latch never clears");
    }

    #[test]
    fn no_plugins_means_ready() {
        assert!(PluginManager::new().plugins_ready());
    }

    #[test]
    fn status_json_matches_opa() {
        let s = PluginStatus::with_message(State::NotReady, "waiting");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"state":"NOT_READY","message":"waiting"}"#
        );
        let s = PluginStatus::new(State::Ok);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"state":"OK"}"#);
    }
}

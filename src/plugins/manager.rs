//! The plugin manager: one status per registered plugin, and change notification.
//!
//! This is the single source that `/health`, `GET /v1/status`, the status plugin and the
//! `plugin_status_gauge` read. Reads are lock-free (an atomically swapped map); updates are
//! serialised and every update is published to subscribers, even when the state did not change,
//! as OPA's manager does.

use std::collections::BTreeMap;
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

//! Per-bundle status in OPA's `BundleStatus` JSON shape, and the board that publishes it.
//!
//! The bundle plugin is the only writer. Readers (`/health` staleness checks, the status plugin,
//! metrics) get lock-free snapshots, and subscribers are woken on every update, as OPA's bulk
//! bundle listeners are called after every download attempt and activation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use tokio::sync::watch;

use crate::engine::RegoError;

/// OPA's rendering of a never-set timestamp (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BundleStatus {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub active_revision: String,
    #[serde(serialize_with = "opa_time")]
    pub last_request: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opa_time")]
    pub last_successful_request: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opa_time")]
    pub last_successful_download: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opa_time")]
    pub last_successful_activation: Option<DateTime<Utc>>,
    /// Timers of the last update (`timer_bundle_request_ns`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, u64>,
    /// `snapshot` or `delta`.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `bundle_error` on failure.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RegoError>,
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// RFC 3339 with nanoseconds in UTC, or Go's zero time when never set.
pub fn format_time(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => ZERO_TIME.to_string(),
    }
}

fn opa_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

impl BundleStatus {
    pub fn new(name: &str) -> Self {
        BundleStatus {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Clears the error fields, as OPA does after a success or a 304.
    pub fn clear_error(&mut self) {
        self.code.clear();
        self.message.clear();
        self.http_code = None;
        self.errors.clear();
    }
}

pub type BundleStatuses = BTreeMap<String, BundleStatus>;

pub struct BundleStatusBoard {
    current: ArcSwap<BundleStatuses>,
    writer: Mutex<()>,
    changes: watch::Sender<Arc<BundleStatuses>>,
}

impl Default for BundleStatusBoard {
    fn default() -> Self {
        let empty = Arc::new(BundleStatuses::new());
        BundleStatusBoard {
            current: ArcSwap::new(empty.clone()),
            writer: Mutex::new(()),
            changes: watch::channel(empty).0,
        }
    }
}

impl BundleStatusBoard {
    pub fn snapshot(&self) -> Arc<BundleStatuses> {
        self.current.load_full()
    }

    /// Edits one bundle's status (created if new) and wakes every subscriber.
    pub fn update(&self, name: &str, edit: impl FnOnce(&mut BundleStatus)) {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.current.load()).clone();
        edit(
            next.entry(name.to_string())
                .or_insert_with(|| BundleStatus::new(name)),
        );
        let next = Arc::new(next);
        self.current.store(next.clone());
        self.changes.send_replace(next);
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<BundleStatuses>> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_set_times_and_omitted_fields_follow_opa() {
        let s = BundleStatus::new("authz");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "authz",
                "last_request": ZERO_TIME,
                "last_successful_request": ZERO_TIME,
                "last_successful_download": ZERO_TIME,
                "last_successful_activation": ZERO_TIME,
            })
        );
    }

    #[test]
    fn set_fields_render_in_opa_names() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut s = BundleStatus::new("b");
        s.last_request = Some(t);
        s.kind = "snapshot".into();
        s.code = "bundle_error".into();
        s.http_code = Some(404);
        s.size = 10;
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["last_request"], "2026-01-02T03:04:05.123456789Z");
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["http_code"], 404);
        assert_eq!(v["size"], 10);
    }

    #[tokio::test]
    async fn updates_wake_subscribers() {
        let board = BundleStatusBoard::default();
        let mut rx = board.subscribe();
        board.update("b", |s| s.active_revision = "r1".into());
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow()["b"].active_revision, "r1");
    }
}

//! The status plugin: reports the agent's state (labels, bundles, plugins, metrics) to a
//! control plane in OPA's format, on OPA's events, and serves the latest report to
//! `GET /v1/status`.
//!
//! Two tasks: the *loop* listens to the plugin manager and the bundle status board and, on each
//! event, builds a report, logs it (`console`), updates the Prometheus series (`prometheus`) and
//! replaces the latest-report slot; the *pusher* ([`push`]) delivers from that slot with retry.
//! Nothing that produces events ever waits for either task.

pub mod metrics;
pub mod payload;
pub mod push;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::status::{StatusConfig, Trigger};
use crate::plugins::bundle::status::BundleStatuses;
use crate::plugins::bundle::BundleStatusBoard;
use crate::plugins::{PluginManager, PluginStatus, PluginStatuses, State};
use crate::telemetry::Telemetry;

use metrics::StatusSeries;
use payload::{Inputs, Report};
use push::{Pending, Pusher, Sender};

/// The plugin's name in the manager, as OPA's.
pub const NAME: &str = "status";

/// What the plugin reads from and reports to.
pub struct Deps {
    pub manager: Arc<PluginManager>,
    pub bundles: Arc<BundleStatusBoard>,
    pub telemetry: Arc<Telemetry>,
    /// `labels` of the report: the config labels, which include `id` and `version`.
    pub labels: BTreeMap<String, String>,
    /// The client of the configured status service; `None` when no service is configured.
    pub sender: Option<Arc<dyn Sender>>,
}

/// Read access to the latest statuses, for `GET /v1/status`.
pub struct StatusView {
    labels: Arc<BTreeMap<String, String>>,
    telemetry: Arc<Telemetry>,
    inputs: ArcSwap<Inputs>,
}

impl StatusView {
    /// A report from the last events received and the current metrics; sends nothing.
    pub fn snapshot(&self) -> Report {
        Report::build(
            self.labels.clone(),
            &self.inputs.load(),
            &self.telemetry.registry.gather(),
        )
    }
}

/// The running plugin; [`StatusPlugin::stop`] flushes and shuts it down.
pub struct StatusPlugin {
    view: Arc<StatusView>,
    manager: Arc<PluginManager>,
    stop_loop: CancellationToken,
    finish_push: CancellationToken,
    event_loop: JoinHandle<()>,
    pusher: Option<JoinHandle<()>>,
}

impl StatusPlugin {
    /// Registers the plugin, starts its tasks and marks it OK, which (as in OPA) triggers the
    /// first update. Must run inside a tokio runtime.
    pub fn start(config: StatusConfig, deps: Deps) -> StatusPlugin {
        deps.manager.register(NAME);
        let plugins_rx = deps.manager.subscribe();
        let bundles_rx = deps.bundles.subscribe();
        let view = Arc::new(StatusView {
            labels: Arc::new(deps.labels),
            telemetry: deps.telemetry.clone(),
            inputs: ArcSwap::from_pointee(Inputs {
                plugins: deps.manager.statuses(),
                bundles: published(&deps.bundles.snapshot()),
            }),
        });
        let series = config.prometheus.then(|| {
            let series = StatusSeries::new(config.bundle_loading_duration_buckets.clone());
            deps.telemetry.registry.register(series.collector());
            series
        });
        let heartbeat_request = Arc::new(Notify::new());
        let finish_push = CancellationToken::new();
        let (slot, slot_rx) = watch::channel(None);
        let pusher = match deps.sender {
            Some(sender) => {
                let pusher = Pusher {
                    sender,
                    path: push::status_path(&config.partition_name),
                    retry: config.retry,
                    skip_unchanged: config.skip_unchanged,
                    heartbeat: config.heartbeat,
                    heartbeat_request: heartbeat_request.clone(),
                    push_metrics: deps.telemetry.status_push.clone(),
                };
                Some(tokio::spawn(pusher.run(slot_rx, finish_push.clone())))
            }
            None => None,
        };
        let stop_loop = CancellationToken::new();
        let event_loop = EventLoop {
            trigger: config.trigger,
            console: config.console,
            view: view.clone(),
            series,
            slot: pusher.is_some().then_some(slot),
            seq: 0,
        };
        let event_loop = tokio::spawn(event_loop.run(
            plugins_rx,
            bundles_rx,
            heartbeat_request,
            stop_loop.clone(),
        ));
        tracing::info!(plugin = NAME, "Starting status reporter.");
        deps.manager.update(NAME, PluginStatus::new(State::Ok));
        StatusPlugin {
            view,
            manager: deps.manager,
            stop_loop,
            finish_push,
            event_loop,
            pusher,
        }
    }

    pub fn view(&self) -> Arc<StatusView> {
        self.view.clone()
    }

    /// Stops listening, sends the newest report if it was not delivered yet, and marks the
    /// plugin NOT_READY; gives up after `grace`.
    pub async fn stop(self, grace: Duration) {
        tracing::info!(plugin = NAME, "Stopping status reporter.");
        let deadline = tokio::time::Instant::now() + grace;
        let StatusPlugin {
            manager,
            stop_loop,
            finish_push,
            event_loop,
            pusher,
            ..
        } = self;
        let flushed = async move {
            stop_loop.cancel();
            let _ = event_loop.await;
            finish_push.cancel();
            if let Some(pusher) = pusher {
                let _ = pusher.await;
            }
        };
        if tokio::time::timeout_at(deadline, flushed).await.is_err() {
            tracing::error!(
                plugin = NAME,
                "Status Plugin stopped with statuses possibly not sent."
            );
            return;
        }
        manager.update(NAME, PluginStatus::new(State::NotReady));
    }
}

/// The board's statuses once the bundle plugin has published any.
fn published(bundles: &Arc<BundleStatuses>) -> Option<Arc<BundleStatuses>> {
    (!bundles.is_empty()).then(|| bundles.clone())
}

struct EventLoop {
    trigger: Trigger,
    console: bool,
    view: Arc<StatusView>,
    series: Option<StatusSeries>,
    slot: Option<push::Slot>,
    seq: u64,
}

impl EventLoop {
    async fn run(
        mut self,
        mut plugins_rx: watch::Receiver<Arc<PluginStatuses>>,
        mut bundles_rx: watch::Receiver<Arc<BundleStatuses>>,
        heartbeat_request: Arc<Notify>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                changed = plugins_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let plugins = plugins_rx.borrow_and_update().clone();
                    self.record(|inputs| inputs.plugins = plugins);
                    self.on_event(false);
                }
                changed = bundles_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let bundles = published(&bundles_rx.borrow_and_update());
                    self.record(|inputs| inputs.bundles = bundles);
                    self.on_event(false);
                }
                _ = heartbeat_request.notified() => self.update(true),
            }
        }
        // Pick up what arrived since the last update so the final flush carries it.
        let mut pending = false;
        if plugins_rx.has_changed().unwrap_or(false) {
            let plugins = plugins_rx.borrow_and_update().clone();
            self.record(|inputs| inputs.plugins = plugins);
            pending = true;
        }
        if bundles_rx.has_changed().unwrap_or(false) {
            let bundles = published(&bundles_rx.borrow_and_update());
            self.record(|inputs| inputs.bundles = bundles);
            pending = true;
        }
        if pending {
            self.on_event(false);
        }
    }

    fn record(&self, edit: impl FnOnce(&mut Inputs)) {
        let mut inputs = (**self.view.inputs.load()).clone();
        edit(&mut inputs);
        self.view.inputs.store(Arc::new(inputs));
    }

    /// In manual mode events only refresh what `GET /v1/status` shows, as in OPA.
    fn on_event(&mut self, force: bool) {
        if self.trigger == Trigger::Periodic {
            self.update(force);
        }
    }

    /// One status update: OPA's `oneShot` (snapshot, console, Prometheus, send).
    fn update(&mut self, force: bool) {
        let inputs = self.view.inputs.load_full();
        let report = self.view.snapshot();
        if self.console {
            log_report(&report);
        }
        if let Some(series) = &mut self.series {
            series.update(&inputs.plugins, inputs.bundles.as_deref());
        }
        if let Some(slot) = &self.slot {
            self.seq += 1;
            let body = serde_json::to_vec(&report).expect("reports serialise");
            slot.send_replace(Some(Arc::new(Pending {
                seq: self.seq,
                body: Bytes::from(body),
                fingerprint: report.fingerprint(),
                force,
            })));
        }
    }
}

/// OPA's console form: message "Status Log", `type: openpolicyagent.org/status` and the
/// report's top-level fields (each a JSON value rendered as text).
fn log_report(report: &Report) {
    tracing::info!(
        r#type = "openpolicyagent.org/status",
        labels = %json_text(&*report.labels),
        bundles = report.bundles.as_deref().map(|b| tracing::field::display(json_text(b))),
        metrics = %report.metrics,
        plugins = %json_text(&*report.plugins),
        "Status Log"
    );
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("log fields serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::status::parse;
    use crate::config::{Config, Validator};
    use push::{PushError, SendFuture};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<serde_json::Value>>);

    impl Sender for Recorder {
        fn post<'a>(&'a self, _path: &'a str, body: Bytes) -> SendFuture<'a> {
            Box::pin(async move {
                let v = serde_json::from_slice(&body)
                    .map_err(|e| PushError::Transport(e.to_string()))?;
                self.0.lock().unwrap().push(v);
                Ok(())
            })
        }
    }

    fn config(raw: serde_json::Value) -> StatusConfig {
        let mut errors = Vec::new();
        let mut v = Validator {
            raw: &raw,
            errors: &mut errors,
        };
        let c = parse(&mut v, &["svc".to_string()]).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        c
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..400 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn reports_on_plugin_and_bundle_events_and_stops_not_ready() {
        let manager = Arc::new(PluginManager::new());
        let board = Arc::new(BundleStatusBoard::default());
        let telemetry = Arc::new(Telemetry::new(&Config::default()));
        let recorder = Arc::new(Recorder::default());
        let plugin = StatusPlugin::start(
            config(serde_json::json!({"status": {"service": "svc", "prometheus": true}})),
            Deps {
                manager: manager.clone(),
                bundles: board.clone(),
                telemetry: telemetry.clone(),
                labels: BTreeMap::from([("id".to_string(), "id-1".to_string())]),
                sender: Some(recorder.clone()),
            },
        );
        let sent = || recorder.0.lock().unwrap().clone();
        until("first report", || !sent().is_empty()).await;
        let first = sent()[0].clone();
        assert_eq!(first["plugins"]["status"]["state"], "OK");
        assert_eq!(first["labels"]["id"], "id-1");
        assert!(first.get("bundles").is_none());

        board.update("b", |s| s.last_request = Some(chrono::Utc::now()));
        until("bundle report", || {
            sent().last().unwrap().get("bundles").is_some()
        })
        .await;
        manager.update("bundle", PluginStatus::new(State::Ok));
        until("plugin report", || {
            sent().last().unwrap()["plugins"]["bundle"]["state"] == "OK"
        })
        .await;

        // The series were updated by the updates above and show in the next report.
        let view = plugin.view();
        let snapshot = serde_json::to_value(view.snapshot()).unwrap();
        assert_eq!(snapshot["bundles"]["b"]["name"], "b");
        let failed = &snapshot["metrics"]["prometheus"]["bundle_failed_load_counter"];
        assert_eq!(failed["type"], "COUNTER");

        plugin.stop(Duration::from_secs(5)).await;
        assert_eq!(manager.status(NAME).unwrap().state, State::NotReady);
    }

    #[tokio::test]
    async fn manual_trigger_records_without_sending() {
        let manager = Arc::new(PluginManager::new());
        let board = Arc::new(BundleStatusBoard::default());
        let recorder = Arc::new(Recorder::default());
        let plugin = StatusPlugin::start(
            config(serde_json::json!({"status": {"trigger": "manual"}})),
            Deps {
                manager: manager.clone(),
                bundles: board.clone(),
                telemetry: Arc::new(Telemetry::new(&Config::default())),
                labels: BTreeMap::from([("id".to_string(), "id-1".to_string())]),
                sender: Some(recorder.clone()),
            },
        );
        board.update("b", |_| {});
        let view = plugin.view();
        until("bundle recorded", || view.snapshot().bundles.is_some()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(recorder.0.lock().unwrap().is_empty());
        plugin.stop(Duration::from_secs(5)).await;
        assert!(recorder.0.lock().unwrap().is_empty());
    }
}

//! Delivery of status reports to the service, beyond OPA: retry with capped exponential backoff
//! and jitter, always the newest report, optional skipping of unchanged reports and heartbeat.
//!
//! Producers only replace the single "latest" slot (a `watch` channel), so memory stays bounded
//! however long the receiver is down, and nothing upstream ever waits for a push. This task is
//! the only consumer: it sends the newest report, and after a failure sleeps the backoff delay
//! and then sends whatever is newest by then.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use thiserror::Error;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::status::RetryPolicy;
use crate::rest::{status_text, HeaderTimeout, ServiceClient};
use crate::telemetry::StatusPushMetrics;

/// One report ready to send. `seq` orders reports; `force` is set on heartbeats, which are sent
/// even when unchanged.
#[derive(Debug)]
pub struct Pending {
    pub seq: u64,
    pub body: Bytes,
    pub fingerprint: String,
    pub force: bool,
}

/// The latest-report slot shared by the producer (the plugin loop) and the push task.
pub type Slot = watch::Sender<Option<Arc<Pending>>>;

#[derive(Debug, Error)]
pub enum PushError {
    #[error("status update failed, server replied with HTTP {code} {reason}")]
    Status { code: u16, reason: String },
    #[error("status update failed: {0}")]
    Transport(String),
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PushError>> + Send + 'a>>;

/// Posts a JSON body to a path of the status service (headers, credentials and TLS are the
/// service client's business). Any 2xx is success.
pub trait Sender: Send + Sync {
    fn post<'a>(&'a self, path: &'a str, body: Bytes) -> SendFuture<'a>;
}

/// The configured service's client: its URL, headers, credentials, TLS, User-Agent and
/// `response_header_timeout_seconds` (a hung receiver counts as a failure and is retried).
impl Sender for ServiceClient {
    fn post<'a>(&'a self, path: &'a str, body: Bytes) -> SendFuture<'a> {
        Box::pin(async move {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
            let resp = self
                .send(
                    reqwest::Method::POST,
                    path,
                    headers,
                    Some(body.to_vec()),
                    HeaderTimeout::Service,
                )
                .await
                .map_err(|e| PushError::Transport(e.to_string()))?;
            let code = resp.status().as_u16();
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(PushError::Status {
                    code,
                    reason: status_text(code),
                })
            }
        })
    }
}

/// OPA's status path: `/status`, or `/status/<partition_name>`.
pub fn status_path(partition_name: &str) -> String {
    let partition = partition_name.trim_matches('/');
    if partition.is_empty() {
        "/status".to_string()
    } else {
        format!("/status/{partition}")
    }
}

/// The delay before retry number `failures` (1-based): `min * 2^(failures-1)` capped at `max`,
/// then scaled by a random factor in [0.5, 1] so a fleet that lost its receiver together does
/// not come back in lockstep. Never above `max`.
pub fn backoff(policy: RetryPolicy, failures: u32) -> Duration {
    let exp = policy
        .min_delay
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(31)));
    let capped = exp.min(policy.max_delay);
    capped.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

pub struct Pusher {
    pub sender: Arc<dyn Sender>,
    pub path: String,
    pub retry: RetryPolicy,
    pub skip_unchanged: bool,
    pub heartbeat: Option<Duration>,
    /// Asks the plugin loop for a fresh forced report when a heartbeat is due.
    pub heartbeat_request: Arc<Notify>,
    /// `regent_status_push_failures_total` and `regent_status_last_successful_push_timestamp_seconds`.
    pub push_metrics: Arc<StatusPushMetrics>,
}

impl Pusher {
    /// Runs until `finish` fires, then makes one last attempt if the newest report was not
    /// delivered yet (OPA's flush on stop); the caller bounds that with the grace period.
    pub async fn run(
        self,
        mut slot: watch::Receiver<Option<Arc<Pending>>>,
        finish: CancellationToken,
    ) {
        // The newest seq delivered, or skipped as unchanged.
        let mut handled = 0u64;
        let mut delivered: Option<String> = None;
        let mut last_delivery = Instant::now();
        let mut failures = 0u32;
        loop {
            let newest = slot.borrow_and_update().clone();
            let Some(pending) = newest.filter(|p| p.seq > handled) else {
                let heartbeat_at = self.heartbeat.map(|h| last_delivery + h);
                tokio::select! {
                    _ = finish.cancelled() => return,
                    changed = slot.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = sleep_until(heartbeat_at) => {
                        // Restart the interval so a heartbeat that cannot be built or sent
                        // does not spin.
                        last_delivery = Instant::now();
                        self.heartbeat_request.notify_one();
                    }
                }
                continue;
            };
            if self.skip_unchanged
                && !pending.force
                && delivered.as_ref() == Some(&pending.fingerprint)
            {
                tracing::debug!(
                    plugin = "status",
                    "Status unchanged since the last update sent; not sending."
                );
                handled = pending.seq;
                continue;
            }
            match self.sender.post(&self.path, pending.body.clone()).await {
                Ok(()) => {
                    self.push_metrics.succeeded();
                    handled = pending.seq;
                    delivered = Some(pending.fingerprint.clone());
                    last_delivery = Instant::now();
                    if failures > 0 {
                        tracing::info!(
                            plugin = "status",
                            failures,
                            "Status update sent successfully after retrying."
                        );
                    } else {
                        tracing::info!(plugin = "status", "Status update sent successfully.");
                    }
                    failures = 0;
                }
                Err(err) => {
                    self.push_metrics.failed();
                    if finish.is_cancelled() {
                        tracing::error!(plugin = "status", "{err}. Final status update not sent.");
                        return;
                    }
                    failures = failures.saturating_add(1);
                    let delay = backoff(self.retry, failures);
                    tracing::error!(
                        plugin = "status",
                        retry_in_ms = delay.as_millis() as u64,
                        failures,
                        "{err}."
                    );
                    // On stop, skip the rest of the delay: the loop makes the final attempt.
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = finish.cancelled() => {}
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::family::{Collector as _, MetricValue};
    use std::sync::Mutex;

    /// Records every body; fails while `failing` is set.
    #[derive(Default)]
    struct Recorder {
        bodies: Mutex<Vec<(String, String)>>,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Sender for Recorder {
        fn post<'a>(&'a self, path: &'a str, body: Bytes) -> SendFuture<'a> {
            Box::pin(async move {
                if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(PushError::Status {
                        code: 503,
                        reason: "Service Unavailable".into(),
                    });
                }
                let text = String::from_utf8(body.to_vec()).unwrap();
                self.bodies.lock().unwrap().push((path.to_string(), text));
                Ok(())
            })
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        }
    }

    fn pending(seq: u64, body: &str, fingerprint: &str, force: bool) -> Option<Arc<Pending>> {
        Some(Arc::new(Pending {
            seq,
            body: Bytes::from(body.to_string()),
            fingerprint: fingerprint.to_string(),
            force,
        }))
    }

    fn start(
        recorder: Arc<Recorder>,
        skip_unchanged: bool,
        heartbeat: Option<Duration>,
        push_metrics: Arc<StatusPushMetrics>,
    ) -> (
        Slot,
        CancellationToken,
        tokio::task::JoinHandle<()>,
        Arc<Notify>,
    ) {
        let (tx, rx) = watch::channel(None);
        let finish = CancellationToken::new();
        let notify = Arc::new(Notify::new());
        let pusher = Pusher {
            sender: recorder,
            path: status_path("p1"),
            retry: policy(),
            skip_unchanged,
            heartbeat,
            heartbeat_request: notify.clone(),
            push_metrics,
        };
        let task = tokio::spawn(pusher.run(rx, finish.clone()));
        (tx, finish, task, notify)
    }

    async fn wait_for(recorder: &Recorder, n: usize) {
        for _ in 0..200 {
            if recorder.bodies.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("only {:?}", recorder.bodies.lock().unwrap());
    }

    #[test]
    fn paths_follow_opa() {
        assert_eq!(status_path(""), "/status");
        assert_eq!(status_path("p1"), "/status/p1");
        assert_eq!(status_path("/a/b/"), "/status/a/b");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = backoff(p, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(p, 3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(p, 1000);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn retries_until_delivered_and_sends_only_the_newest() {
        let recorder = Arc::new(Recorder::default());
        recorder
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let push_metrics = Arc::new(StatusPushMetrics::default());
        let (tx, finish, task, _) = start(recorder.clone(), false, None, push_metrics.clone());
        for seq in 1..=20 {
            tx.send_replace(pending(seq, &format!("r{seq}"), "f", false));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(recorder.bodies.lock().unwrap().is_empty());
        recorder
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        wait_for(&recorder, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *recorder.bodies.lock().unwrap(),
            vec![("/status/p1".to_string(), "r20".to_string())]
        );
        // Every failed attempt was counted, and the delivery stamped.
        let mut families = Vec::new();
        push_metrics.collect(&mut families);
        let failures = match families[0].metrics[0].value {
            MetricValue::Counter(n) => n,
            ref other => panic!("{other:?}"),
        };
        assert!(failures >= 1.0, "{failures}");
        assert_eq!(
            families[1].name,
            "regent_status_last_successful_push_timestamp_seconds"
        );
        finish.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn skip_unchanged_skips_equal_fingerprints_but_not_forced() {
        let recorder = Arc::new(Recorder::default());
        let (tx, finish, task, _) = start(recorder.clone(), true, None, Arc::default());
        tx.send_replace(pending(1, "a", "same", false));
        wait_for(&recorder, 1).await;
        tx.send_replace(pending(2, "b", "same", false));
        tx.send_replace(pending(3, "c", "same", false));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(recorder.bodies.lock().unwrap().len(), 1);
        tx.send_replace(pending(4, "d", "same", true));
        wait_for(&recorder, 2).await;
        tx.send_replace(pending(5, "e", "other", false));
        wait_for(&recorder, 3).await;
        let bodies: Vec<String> = recorder
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.1.clone())
            .collect();
        assert_eq!(bodies, ["a", "d", "e"]);
        finish.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn heartbeat_asks_for_a_report_when_idle() {
        let recorder = Arc::new(Recorder::default());
        let (tx, finish, task, notify) = start(
            recorder.clone(),
            true,
            Some(Duration::from_millis(50)),
            Arc::default(),
        );
        tx.send_replace(pending(1, "a", "same", false));
        wait_for(&recorder, 1).await;
        tokio::time::timeout(Duration::from_secs(2), notify.notified())
            .await
            .expect("heartbeat requested");
        finish.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn finish_flushes_an_undelivered_report_once() {
        let recorder = Arc::new(Recorder::default());
        recorder
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (tx, finish, task, _) = start(recorder.clone(), false, None, Arc::default());
        tx.send_replace(pending(1, "a", "f", false));
        tokio::time::sleep(Duration::from_millis(30)).await;
        recorder
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tx.send_replace(pending(2, "final", "f", false));
        finish.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(recorder.bodies.lock().unwrap().last().unwrap().1, "final");
    }
}

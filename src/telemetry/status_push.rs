//! Status push health (regent only): whether status reports reach the status service.
//!
//! OPA only logs failed status pushes, so nothing in Prometheus says that the control plane has
//! stopped hearing from an instance. The status plugin calls [`StatusPushMetrics::failed`] when a
//! push attempt fails and [`StatusPushMetrics::succeeded`] when one is delivered:
//!
//! - `regent_status_push_failures_total`: counter of failed attempts (each retry counts);
//! - `regent_status_last_successful_push_timestamp_seconds`: gauge, Unix time of the last
//!   delivered report.
//!
//! Neither series exists before the first attempt, so instances without a status plugin export
//! nothing; after it, the counter is present (possibly 0) so `increase()` works from the start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::family::{Collector, Metric, MetricFamily, MetricType, MetricValue};

pub const FAILURES_NAME: &str = "regent_status_push_failures_total";
pub const LAST_SUCCESS_NAME: &str = "regent_status_last_successful_push_timestamp_seconds";

#[derive(Default)]
pub struct StatusPushMetrics {
    attempted: AtomicBool,
    failures: AtomicU64,
    /// Milliseconds since the Unix epoch of the last delivered report; 0 before the first.
    last_success_ms: AtomicU64,
}

impl StatusPushMetrics {
    /// A push attempt failed (the receiver refused it, timed out or could not be reached).
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.attempted.store(true, Ordering::Relaxed);
    }

    /// A report was delivered.
    pub fn succeeded(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.last_success_ms
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.attempted.store(true, Ordering::Relaxed);
    }
}

impl Collector for StatusPushMetrics {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        if !self.attempted.load(Ordering::Relaxed) {
            return;
        }
        out.push(MetricFamily {
            name: FAILURES_NAME.into(),
            help: "Status reports that could not be delivered to the status service, counting \
                   every retry."
                .into(),
            kind: MetricType::Counter,
            metrics: vec![Metric {
                labels: vec![],
                value: MetricValue::Counter(self.failures.load(Ordering::Relaxed) as f64),
            }],
        });
        let last = self.last_success_ms.load(Ordering::Relaxed);
        if last > 0 {
            out.push(MetricFamily {
                name: LAST_SUCCESS_NAME.into(),
                help: "Unix time in seconds at which a status report was last delivered.".into(),
                kind: MetricType::Gauge,
                metrics: vec![Metric {
                    labels: vec![],
                    value: MetricValue::Gauge(last as f64 / 1000.0),
                }],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(m: &StatusPushMetrics) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        m.collect(&mut out);
        out
    }

    #[test]
    fn nothing_before_the_first_attempt_then_both_series() {
        let m = StatusPushMetrics::default();
        assert!(gather(&m).is_empty());
        m.failed();
        m.failed();
        let f = gather(&m);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, FAILURES_NAME);
        assert_eq!(f[0].metrics[0].value, MetricValue::Counter(2.0));
        m.succeeded();
        let f = gather(&m);
        assert_eq!(f[1].name, LAST_SUCCESS_NAME);
        let MetricValue::Gauge(at) = f[1].metrics[0].value else {
            panic!("not a gauge");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - at).abs() < 5.0, "{at} vs {now}");
    }
}

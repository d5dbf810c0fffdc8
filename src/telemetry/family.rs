//! The metric data model every collector produces and every encoder reads.
//!
//! Collectors (HTTP metrics, runtime figures, the status plugin's series, decision metrics)
//! append [`MetricFamily`] values at scrape time; encoders turn them into Prometheus text,
//! OpenMetrics, or the protobuf-JSON form of OPA's status payload. Names are exposed exactly as
//! given: no suffix is added, so OPA's unsuffixed counter names survive.

use std::sync::Arc;

use arc_swap::ArcSwap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(f64),
    Gauge(f64),
    /// Cumulative counts per upper bound, in increasing order, without `+Inf`.
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub labels: Vec<(String, String)>,
    pub value: MetricValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    pub kind: MetricType,
    pub metrics: Vec<Metric>,
}

/// Anything that contributes families to a scrape.
pub trait Collector: Send + Sync {
    fn collect(&self, out: &mut Vec<MetricFamily>);
}

/// The set of collectors behind `/metrics`. Registration is rare; scrapes read lock-free.
#[derive(Default)]
pub struct Registry {
    collectors: ArcSwap<Vec<Arc<dyn Collector>>>,
}

impl Registry {
    pub fn register(&self, collector: Arc<dyn Collector>) {
        self.collectors.rcu(|current| {
            let mut next = (**current).clone();
            next.push(collector.clone());
            next
        });
    }

    /// Every family, in registration order.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        for collector in self.collectors.load().iter() {
            collector.collect(&mut out);
        }
        out
    }
}

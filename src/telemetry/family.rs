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
    /// A histogram that also carries exemplars and, optionally, native (exponential) buckets.
    /// Encoders without a place for those write it as a plain [`MetricValue::Histogram`].
    RichHistogram(Box<RichHistogram>),
}

/// See [`MetricValue::RichHistogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct RichHistogram {
    /// Cumulative counts per upper bound, in increasing order, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
    /// One slot per bucket, then one for `+Inf`; empty when the series keeps no exemplars.
    pub exemplars: Vec<Option<Exemplar>>,
    pub native: Option<NativeBuckets>,
}

/// A sample observation kept beside a bucket so a scraper can link it (e.g. to a trace).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
}

/// Native histogram buckets: bucket `i` holds observations in `(base^(i-1), base^i]` with
/// `base = 2^(2^-schema)`; observations up to `zero_threshold` are in the zero bucket. Only
/// positive observations exist here (durations).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBuckets {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    /// `(index, count)` of every non-empty bucket, by increasing index.
    pub positive: Vec<(i32, u64)>,
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

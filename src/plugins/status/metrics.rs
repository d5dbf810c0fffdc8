//! OPA's status-plugin Prometheus series (`status.prometheus: true`), with OPA's names, labels,
//! help strings and quirks.
//!
//! The values change only when the plugin builds an update, never at scrape time, so the plugin
//! task owns the mutable [`StatusSeries`] and publishes finished families after each update; the
//! [`StatusCollector`] on the registry just hands out the last published families (lock-free).
//! Quirks kept on purpose because dashboards are built on them: the counters count status
//! updates (every configured bundle, every update), a never-activated bundle counts as failed
//! with empty `code`/`message`, and a never-set time is Go's zero time in Unix nanoseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::build;
use crate::plugins::bundle::status::BundleStatuses;
use crate::plugins::PluginStatuses;
use crate::telemetry::family::{Collector, Metric, MetricFamily, MetricType, MetricValue};

/// Seconds from the Unix epoch back to Go's zero time (0001-01-01T00:00:00Z).
const GO_ZERO_TIME_UNIX_SECONDS: i64 = -62_135_596_800;

/// What OPA's gauges read for a never-set time: Go's `UnixNano()` of the zero time, which
/// overflows int64 and wraps (-6795364578871345152).
pub fn zero_time_nanos() -> i64 {
    GO_ZERO_TIME_UNIX_SECONDS.wrapping_mul(1_000_000_000)
}

/// Unix nanoseconds as OPA's gauges show them.
fn unix_nanos(t: Option<DateTime<Utc>>) -> f64 {
    t.and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or_else(zero_time_nanos) as f64
}

/// The bundle timers OPA observes into `bundle_loading_duration_ns` (its `stage` label).
const STAGES: [&str; 5] = [
    "timer_bundle_request_ns",
    "timer_rego_data_parse_ns",
    "timer_rego_module_parse_ns",
    "timer_rego_module_compile_ns",
    "timer_rego_load_bundles_ns",
];

#[derive(Debug, Clone)]
struct Histogram {
    /// Per-bucket (not cumulative) counts, one per configured bound.
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// The registry side: the families published by the last update.
#[derive(Default)]
pub struct StatusCollector {
    families: ArcSwap<Vec<MetricFamily>>,
}

impl Collector for StatusCollector {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        out.extend(self.families.load().iter().cloned());
    }
}

/// The plugin side: the series' state, updated once per status update.
pub struct StatusSeries {
    buckets: Vec<f64>,
    published: Arc<StatusCollector>,
    plugin_status: Vec<(String, String)>,
    loaded: BTreeMap<String, f64>,
    failed: BTreeMap<(String, String, String), f64>,
    last_request: BTreeMap<String, f64>,
    last_activation: BTreeMap<(String, String), f64>,
    last_download: BTreeMap<String, f64>,
    last_successful_request: BTreeMap<String, f64>,
    durations: BTreeMap<(String, String), Histogram>,
}

impl StatusSeries {
    /// Creates the series and publishes `opa_info` at once, as OPA sets it when it registers.
    pub fn new(buckets: Vec<f64>) -> Self {
        let series = StatusSeries {
            buckets,
            published: Arc::new(StatusCollector::default()),
            plugin_status: Vec::new(),
            loaded: BTreeMap::new(),
            failed: BTreeMap::new(),
            last_request: BTreeMap::new(),
            last_activation: BTreeMap::new(),
            last_download: BTreeMap::new(),
            last_successful_request: BTreeMap::new(),
            durations: BTreeMap::new(),
        };
        series.publish();
        series
    }

    /// The collector to register on the metrics registry.
    pub fn collector(&self) -> Arc<StatusCollector> {
        self.published.clone()
    }

    /// Applies one status update, as OPA's `updatePrometheusMetrics`.
    pub fn update(&mut self, plugins: &PluginStatuses, bundles: Option<&BundleStatuses>) {
        self.plugin_status = plugins
            .iter()
            .map(|(name, s)| (name.clone(), s.state.as_str().to_string()))
            .collect();
        self.last_activation.clear();
        for (name, b) in bundles.into_iter().flatten() {
            if b.code.is_empty() && b.last_successful_activation.is_some() {
                *self.loaded.entry(name.clone()).or_default() += 1.0;
            } else {
                let key = (name.clone(), b.code.clone(), b.message.clone());
                *self.failed.entry(key).or_default() += 1.0;
            }
            self.last_activation.insert(
                (name.clone(), b.active_revision.clone()),
                unix_nanos(b.last_successful_activation),
            );
            self.last_download
                .insert(name.clone(), unix_nanos(b.last_successful_download));
            self.last_successful_request
                .insert(name.clone(), unix_nanos(b.last_successful_request));
            self.last_request
                .insert(name.clone(), unix_nanos(b.last_request));
            for (stage, value) in &b.metrics {
                if STAGES.contains(&stage.as_str()) {
                    self.observe(name, stage, *value as f64);
                }
            }
        }
        self.publish();
    }

    fn observe(&mut self, bundle: &str, stage: &str, value: f64) {
        let buckets = &self.buckets;
        let h = self
            .durations
            .entry((bundle.to_string(), stage.to_string()))
            .or_insert_with(|| Histogram {
                counts: vec![0; buckets.len()],
                count: 0,
                sum: 0.0,
            });
        if let Some(i) = buckets.iter().position(|bound| value <= *bound) {
            h.counts[i] += 1;
        }
        h.count += 1;
        h.sum += value;
    }

    /// Builds the families (sorted by name; a vector with no series is not exposed, as in
    /// client_golang) and swaps them in for scrapes.
    fn publish(&self) {
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let gauge_by_name = |values: &BTreeMap<String, f64>| -> Vec<Metric> {
            values
                .iter()
                .map(|(name, v)| Metric {
                    labels: labels(&[("name", name)]),
                    value: MetricValue::Gauge(*v),
                })
                .collect()
        };
        let mut families = vec![
            family(
                "opa_info",
                "Information about the OPA environment.",
                MetricType::Gauge,
                vec![Metric {
                    labels: labels(&[("version", build::VERSION)]),
                    value: MetricValue::Gauge(1.0),
                }],
            ),
            family(
                "plugin_status_gauge",
                "Gauge for the plugin by status.",
                MetricType::Gauge,
                self.plugin_status
                    .iter()
                    .map(|(name, status)| Metric {
                        labels: labels(&[("name", name), ("status", status)]),
                        value: MetricValue::Gauge(1.0),
                    })
                    .collect(),
            ),
            family(
                "bundle_loaded_counter",
                "Counter for the bundle loaded.",
                MetricType::Counter,
                self.loaded
                    .iter()
                    .map(|(name, v)| Metric {
                        labels: labels(&[("name", name)]),
                        value: MetricValue::Counter(*v),
                    })
                    .collect(),
            ),
            family(
                "bundle_failed_load_counter",
                "Counter for the failed bundle load.",
                MetricType::Counter,
                self.failed
                    .iter()
                    .map(|((name, code, message), v)| Metric {
                        labels: labels(&[("code", code), ("message", message), ("name", name)]),
                        value: MetricValue::Counter(*v),
                    })
                    .collect(),
            ),
            family(
                "last_bundle_request",
                "Gauge for the last bundle request.",
                MetricType::Gauge,
                gauge_by_name(&self.last_request),
            ),
            family(
                "last_success_bundle_activation",
                "Gauge for the last success bundle activation.",
                MetricType::Gauge,
                self.last_activation
                    .iter()
                    .map(|((name, revision), v)| Metric {
                        labels: labels(&[("active_revision", revision), ("name", name)]),
                        value: MetricValue::Gauge(*v),
                    })
                    .collect(),
            ),
            family(
                "last_success_bundle_download",
                "Gauge for the last success bundle download.",
                MetricType::Gauge,
                gauge_by_name(&self.last_download),
            ),
            family(
                "last_success_bundle_request",
                "Gauge for the last success bundle request.",
                MetricType::Gauge,
                gauge_by_name(&self.last_successful_request),
            ),
            family(
                "bundle_loading_duration_ns",
                "Histogram for the bundle loading duration by stage.",
                MetricType::Histogram,
                self.durations
                    .iter()
                    .map(|((name, stage), h)| Metric {
                        labels: labels(&[("name", name), ("stage", stage)]),
                        value: MetricValue::Histogram {
                            buckets: self
                                .buckets
                                .iter()
                                .zip(h.counts.iter().scan(0, |acc, n| {
                                    *acc += n;
                                    Some(*acc)
                                }))
                                .map(|(bound, cumulative)| (*bound, cumulative))
                                .collect(),
                            count: h.count,
                            sum: h.sum,
                        },
                    })
                    .collect(),
            ),
        ];
        families.retain(|f| !f.metrics.is_empty());
        families.sort_by(|a, b| a.name.cmp(&b.name));
        self.published.families.store(Arc::new(families));
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    MetricFamily {
        name: name.to_string(),
        help: help.to_string(),
        kind,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::status::default_bundle_loading_buckets;
    use crate::plugins::bundle::BundleStatus;
    use crate::plugins::{PluginStatus, State};

    fn gathered(series: &StatusSeries) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        series.collector().collect(&mut out);
        out
    }

    fn find<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
        families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    #[test]
    fn zero_time_is_gos_wrapped_value() {
        assert_eq!(zero_time_nanos(), -6_795_364_578_871_345_152);
    }

    #[test]
    fn only_opa_info_before_the_first_update() {
        let series = StatusSeries::new(default_bundle_loading_buckets());
        let families = gathered(&series);
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].name, "opa_info");
        assert_eq!(
            families[0].metrics[0].labels,
            vec![("version".to_string(), build::VERSION.to_string())]
        );
    }

    #[test]
    fn updates_follow_opas_quirks() {
        let mut series = StatusSeries::new(vec![1000.0, 2000.0, 4000.0]);
        let mut plugins = PluginStatuses::new();
        plugins.insert("bundle".into(), PluginStatus::new(State::NotReady));
        let mut bundles = BundleStatuses::new();
        bundles.insert("b".into(), BundleStatus::new("b"));
        series.update(&plugins, Some(&bundles));

        // Never activated: a failure with empty code and message, zero-time gauges.
        let f = gathered(&series);
        let failed = &find(&f, "bundle_failed_load_counter").metrics[0];
        assert_eq!(
            failed.labels,
            vec![
                ("code".to_string(), String::new()),
                ("message".to_string(), String::new()),
                ("name".to_string(), "b".to_string())
            ]
        );
        assert_eq!(failed.value, MetricValue::Counter(1.0));
        assert_eq!(
            find(&f, "last_bundle_request").metrics[0].value,
            MetricValue::Gauge(zero_time_nanos() as f64)
        );
        assert!(f.iter().all(|f| f.name != "bundle_loaded_counter"));

        // Activated: loaded counts every update, the activation gauge follows the revision.
        plugins.insert("bundle".into(), PluginStatus::new(State::Ok));
        let now = Utc::now();
        let b = bundles.get_mut("b").unwrap();
        b.active_revision = "r1".into();
        b.last_successful_activation = Some(now);
        b.metrics.insert("timer_bundle_request_ns".into(), 1500);
        b.metrics
            .insert("timer_rego_module_parse_ns".into(), 10_000);
        b.metrics.insert("counter_other".into(), 1);
        series.update(&plugins, Some(&bundles));
        bundles.get_mut("b").unwrap().active_revision = "r2".into();
        series.update(&plugins, Some(&bundles));

        let f = gathered(&series);
        assert_eq!(
            find(&f, "bundle_loaded_counter").metrics[0].value,
            MetricValue::Counter(2.0)
        );
        let activation = &find(&f, "last_success_bundle_activation").metrics;
        assert_eq!(activation.len(), 1, "old revisions disappear");
        assert_eq!(
            activation[0].labels[0],
            ("active_revision".into(), "r2".into())
        );
        assert_eq!(
            activation[0].value,
            MetricValue::Gauge(now.timestamp_nanos_opt().unwrap() as f64)
        );
        let states = &find(&f, "plugin_status_gauge").metrics;
        assert_eq!(states.len(), 1, "reset each update");
        assert_eq!(states[0].labels[1], ("status".into(), "OK".into()));

        let durations = &find(&f, "bundle_loading_duration_ns").metrics;
        assert_eq!(durations.len(), 2, "only OPA's stages are observed");
        // Observed on each of the two updates: 1500 ns falls in the 2000 bucket.
        assert_eq!(
            durations[0].labels,
            vec![
                ("name".to_string(), "b".to_string()),
                ("stage".to_string(), "timer_bundle_request_ns".to_string())
            ]
        );
        assert_eq!(
            durations[0].value,
            MetricValue::Histogram {
                buckets: vec![(1000.0, 0), (2000.0, 2), (4000.0, 2)],
                count: 2,
                sum: 3000.0
            }
        );
        // Above the last bound: only in +Inf (count), not in any bucket.
        assert_eq!(
            durations[1].value,
            MetricValue::Histogram {
                buckets: vec![(1000.0, 0), (2000.0, 0), (4000.0, 0)],
                count: 2,
                sum: 20_000.0
            }
        );
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}

//! The status report in OPA's `UpdateRequestV1` shape: what is pushed to the service, logged to
//! the console and returned by `GET /v1/status`.
//!
//! A report is built from the last plugin and bundle statuses the plugin received plus a fresh
//! gather of the metrics registry. Also here: the fingerprint used to skip pushes that changed
//! only in timestamps and metrics (regent's `skip_unchanged`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::plugins::bundle::status::BundleStatuses;
use crate::plugins::PluginStatuses;
use crate::telemetry::encode::status_json;
use crate::telemetry::family::MetricFamily;

/// The key of the metrics provider in `metrics`, as OPA names its Prometheus provider.
const METRICS_PROVIDER: &str = "prometheus";

/// The statuses the last events delivered; what a report is built from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub plugins: Arc<PluginStatuses>,
    /// `None` until the bundle plugin has published anything, so `bundles` is omitted then,
    /// as OPA omits it before the first bundle event.
    pub bundles: Option<Arc<BundleStatuses>>,
}

/// OPA's `UpdateRequestV1`. `bundle`, `discovery` and `decision_logs` are absent: regent has no
/// legacy single bundle, no discovery and no decision log plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub labels: Arc<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundles: Option<Arc<BundleStatuses>>,
    pub metrics: Json,
    #[serde(skip_serializing_if = "is_empty")]
    pub plugins: Arc<PluginStatuses>,
}

fn is_empty(plugins: &Arc<PluginStatuses>) -> bool {
    plugins.is_empty()
}

impl Report {
    pub fn build(
        labels: Arc<BTreeMap<String, String>>,
        inputs: &Inputs,
        families: &[MetricFamily],
    ) -> Report {
        Report {
            labels,
            bundles: inputs.bundles.clone(),
            metrics: json!({ METRICS_PROVIDER: status_json(families) }),
            plugins: inputs.plugins.clone(),
        }
    }

    /// The report without what changes on every poll: bundle timestamps and timers, and the
    /// metrics. Two reports with equal fingerprints tell a receiver nothing new.
    pub fn fingerprint(&self) -> String {
        let bundles: Option<BTreeMap<&String, Json>> = self.bundles.as_ref().map(|bundles| {
            bundles
                .iter()
                .map(|(name, status)| {
                    let mut v = serde_json::to_value(status).expect("bundle status serialises");
                    if let Some(fields) = v.as_object_mut() {
                        for volatile in [
                            "last_request",
                            "last_successful_request",
                            "last_successful_download",
                            "last_successful_activation",
                            "metrics",
                        ] {
                            fields.remove(volatile);
                        }
                    }
                    (name, v)
                })
                .collect()
        });
        serde_json::to_string(&json!({
            "labels": &*self.labels,
            "bundles": bundles,
            "plugins": &*self.plugins,
        }))
        .expect("fingerprint serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::bundle::BundleStatus;
    use crate::plugins::{PluginStatus, State};
    use crate::telemetry::family::{Metric, MetricType, MetricValue};
    use chrono::Utc;

    fn inputs() -> Inputs {
        let mut plugins = PluginStatuses::new();
        plugins.insert("status".into(), PluginStatus::new(State::Ok));
        let mut bundles = BundleStatuses::new();
        let mut b = BundleStatus::new("authz");
        b.last_request = Some(Utc::now());
        b.metrics.insert("timer_bundle_request_ns".into(), 10);
        bundles.insert("authz".into(), b);
        Inputs {
            plugins: Arc::new(plugins),
            bundles: Some(Arc::new(bundles)),
        }
    }

    #[test]
    fn report_has_opas_shape() {
        let labels = Arc::new(BTreeMap::from([
            ("region".to_string(), "eu".to_string()),
            ("id".to_string(), "abc".to_string()),
        ]));
        let families = vec![MetricFamily {
            name: "bundle_loaded_counter".into(),
            help: "Counter for the bundle loaded.".into(),
            kind: MetricType::Counter,
            metrics: vec![Metric {
                labels: vec![("name".into(), "authz".into())],
                value: MetricValue::Counter(2.0),
            }],
        }];
        let v = serde_json::to_value(Report::build(labels, &inputs(), &families)).unwrap();
        assert_eq!(v["labels"], json!({"id": "abc", "region": "eu"}));
        assert_eq!(v["plugins"], json!({"status": {"state": "OK"}}));
        assert_eq!(v["bundles"]["authz"]["name"], "authz");
        assert_eq!(
            v["metrics"]["prometheus"]["bundle_loaded_counter"],
            json!({
                "name": "bundle_loaded_counter",
                "help": "Counter for the bundle loaded.",
                "type": "COUNTER",
                "metric": [{"label": [{"name": "name", "value": "authz"}], "counter": {"value": 2.0}}],
            })
        );
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["labels", "bundles", "metrics", "plugins"]);
    }

    #[test]
    fn bundles_omitted_before_the_first_bundle_event() {
        let report = Report::build(Arc::new(BTreeMap::new()), &Inputs::default(), &[]);
        let v = serde_json::to_value(report).unwrap();
        assert!(v.get("bundles").is_none());
        assert!(v.get("plugins").is_none());
        assert_eq!(v["metrics"], json!({"prometheus": {}}));
    }

    #[test]
    fn fingerprint_ignores_timestamps_and_timers_only() {
        let labels = Arc::new(BTreeMap::new());
        let a = Report::build(labels.clone(), &inputs(), &[]);
        let mut later = inputs();
        let bundles = Arc::make_mut(later.bundles.as_mut().unwrap());
        let b = bundles.get_mut("authz").unwrap();
        b.last_request = Some(Utc::now() + chrono::Duration::seconds(5));
        b.last_successful_request = b.last_request;
        b.metrics.insert("timer_bundle_request_ns".into(), 99);
        let b2 = Report::build(labels.clone(), &later, &[]);
        assert_eq!(a.fingerprint(), b2.fingerprint());

        bundles_mut(&mut later).active_revision = "r2".into();
        let c = Report::build(labels, &later, &[]);
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    fn bundles_mut(inputs: &mut Inputs) -> &mut BundleStatus {
        Arc::make_mut(inputs.bundles.as_mut().unwrap())
            .get_mut("authz")
            .unwrap()
    }
}

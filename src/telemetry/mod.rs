//! Telemetry: the metrics registry handed to everything that observes, its encoders, and
//! logging setup.

pub mod decisions;
pub mod encode;
pub mod family;
pub mod histogram;
pub mod log_format;
pub mod logging;
pub mod metrics;
pub mod protobuf;
pub mod runtime;
pub mod status_push;

use std::sync::Arc;

pub use decisions::DecisionMetrics;
pub use metrics::HttpMetrics;
pub use status_push::StatusPushMetrics;

/// Created once at start and shared by the HTTP layer, the engine and the plugins.
pub struct Telemetry {
    pub http: Arc<HttpMetrics>,
    /// Per-decision-path metrics, observed by the data API handlers.
    pub decisions: Arc<DecisionMetrics>,
    /// Status push health, reported by the status plugin.
    pub status_push: Arc<StatusPushMetrics>,
    /// Every collector behind `/metrics` (and the status payload's `metrics.prometheus`): the
    /// HTTP metrics and the runtime figures from the start; plugins register theirs when they
    /// start.
    pub registry: family::Registry,
}

impl Telemetry {
    /// Call from inside the async runtime so its figures are exported too.
    pub fn new(config: &crate::config::Config) -> Self {
        let metrics = &config.server.metrics;
        let http = Arc::new(HttpMetrics::new(
            &metrics.http_request_duration_buckets,
            metrics.http_instrumentation,
        ));
        let registry = family::Registry::default();
        registry.register(http.clone());
        registry.register(Arc::new(runtime::ProcessCollector::new()));
        registry.register(Arc::new(runtime::JemallocCollector::new()));
        if let Some(tokio) = runtime::TokioCollector::current() {
            registry.register(Arc::new(tokio));
        }
        registry.register(Arc::new(runtime::BuildInfo));
        let decisions = Arc::new(DecisionMetrics::new(&metrics.decisions));
        registry.register(decisions.clone());
        let status_push = Arc::new(StatusPushMetrics::default());
        registry.register(status_push.clone());
        Telemetry {
            http,
            decisions,
            status_push,
            registry,
        }
    }
}

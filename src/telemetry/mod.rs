//! Telemetry: the metrics registry handed to everything that observes, and logging setup.

pub mod family;
pub mod log_format;
pub mod logging;
pub mod metrics;

pub use metrics::HttpMetrics;

/// Created once at start and shared by the HTTP layer, the engine and the plugins.
pub struct Telemetry {
    pub http: HttpMetrics,
    /// Every collector behind `/metrics`; plugins register theirs at start.
    pub registry: family::Registry,
}

impl Telemetry {
    pub fn new(config: &crate::config::Config) -> Self {
        Telemetry {
            http: HttpMetrics::new(&config.server.metrics.http_request_duration_buckets),
            registry: family::Registry::default(),
        }
    }
}

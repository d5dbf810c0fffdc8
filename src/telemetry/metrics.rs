//! HTTP request metrics (`http_request_duration_seconds`, `http_request_cancellations`).
//!
//! Placeholder with the final interface; the /metrics work (issue 3) fills in storage and
//! exposition.

use std::time::Duration;

use axum::http::{Method, StatusCode};

pub struct HttpMetrics {
    buckets: Vec<f64>,
}

/// Tracks one in-flight request so a request whose client went away can be counted.
pub struct InFlight;

impl InFlight {
    pub fn finish(self) {}
}

impl HttpMetrics {
    pub fn new(buckets: &[f64]) -> Self {
        HttpMetrics {
            buckets: buckets.to_vec(),
        }
    }

    pub fn buckets(&self) -> &[f64] {
        &self.buckets
    }

    pub fn start(&self, _handler: &'static str, _method: &Method) -> InFlight {
        InFlight
    }

    pub fn observe(
        &self,
        _handler: &'static str,
        _method: &Method,
        _code: StatusCode,
        _elapsed: Duration,
    ) {
    }
}

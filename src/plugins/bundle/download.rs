//! One download attempt against a service, and the delays between attempts (OPA's rules).
//!
//! A request sends `If-None-Match` with the last etag (when one is known) and
//! `Prefer: modes=snapshot,delta` (plus `;wait=<seconds>` when long polling). 200 carries a
//! tarball and maybe an `ETag`; 304 means "unchanged"; any other status is an error worded
//! as OPA's (`server replied with Not Found`). The body is read in chunks with a size cap, and
//! a body that stalls for longer than the response-header timeout is an error rather than a
//! task stuck forever.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use thiserror::Error;

use crate::rest::{status_text, HeaderTimeout, RestError, ServiceClient};

/// The content type with which a server says it supports long polling.
pub const LONG_POLLING_CONTENT_TYPE: &str = "application/vnd.openpolicyagent.bundles";
/// OPA's first backoff step after an error (100 ms), grown by [`BACKOFF_FACTOR`] per retry.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_FACTOR: f64 = 1.6;
/// ±20 % jitter on every backoff delay.
pub const BACKOFF_JITTER: f64 = 0.2;
/// The tarball may exceed `size_limit_bytes` by gzip and tar framing; the inflated content is
/// capped exactly when it is read.
pub const DOWNLOAD_SLACK_BYTES: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum DownloadError {
    #[error("server replied with {text}")]
    Status { code: u16, text: String },
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("request failed: reading the body: {0}")]
    Body(String),
    #[error("bundle download exceeded max size ({0} bytes)")]
    TooLarge(u64),
}

impl DownloadError {
    /// The HTTP status to report, only when the server answered with an unexpected one.
    pub fn http_code(&self) -> Option<u16> {
        match self {
            DownloadError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Fetched {
    Modified { body: Vec<u8>, etag: String },
    NotModified { etag: String },
}

#[derive(Debug)]
pub struct Response {
    pub fetched: Fetched,
    /// The server answered with the long-polling content type.
    pub long_poll: bool,
}

/// Downloads `resource` once.
pub async fn fetch(
    client: &ServiceClient,
    resource: &str,
    etag: &str,
    long_poll: Option<Duration>,
    limit: u64,
) -> Result<Response, DownloadError> {
    let mut headers = HeaderMap::new();
    if !etag.is_empty() {
        if let Ok(v) = HeaderValue::from_str(etag) {
            headers.insert(IF_NONE_MATCH, v);
        }
    }
    let prefer = match long_poll {
        Some(wait) => format!(
            "modes=snapshot,delta;wait={}",
            wait.as_secs_f64().ceil() as u64
        ),
        None => "modes=snapshot,delta".to_string(),
    };
    headers.insert(
        "prefer",
        HeaderValue::from_str(&prefer).expect("ASCII header"),
    );
    let timeout = match long_poll {
        Some(wait) => HeaderTimeout::Extended(wait),
        None => HeaderTimeout::Service,
    };
    let mut resp = client
        .send(Method::GET, resource, headers, None, timeout)
        .await?;
    let long_poll = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(LONG_POLLING_CONTENT_TYPE));
    let new_etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_MODIFIED => {
            return Ok(Response {
                fetched: Fetched::NotModified {
                    etag: new_etag.unwrap_or_else(|| etag.to_string()),
                },
                long_poll,
            })
        }
        other => {
            return Err(DownloadError::Status {
                code: other.as_u16(),
                text: status_text(other.as_u16()),
            })
        }
    }
    let cap = limit.saturating_add(DOWNLOAD_SLACK_BYTES);
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(DownloadError::TooLarge(cap));
    }
    let mut body = Vec::new();
    loop {
        let chunk = match client.header_timeout() {
            Some(idle) => tokio::time::timeout(idle, resp.chunk())
                .await
                .map_err(|_| DownloadError::Body(format!("no data for {}s", idle.as_secs_f64())))?,
            None => resp.chunk().await,
        }
        .map_err(|e| DownloadError::Body(RestError::from_reqwest(e).to_string()))?;
        let Some(chunk) = chunk else { break };
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(DownloadError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        fetched: Fetched::Modified {
            body,
            etag: new_etag.unwrap_or_default(),
        },
        long_poll,
    })
}

/// The delay before the next attempt after `retries` earlier consecutive failures
/// (0 for the first retry, then 160 ms, 256 ms, ... capped at `max`, ±20 %).
pub fn backoff(retries: u32, max: Duration) -> Duration {
    if retries == 0 {
        return Duration::ZERO;
    }
    let max = max.as_secs_f64();
    let mut delay = BACKOFF_BASE.as_secs_f64();
    let mut n = retries;
    while delay < max && n > 0 {
        delay *= BACKOFF_FACTOR;
        n -= 1;
    }
    let delay = delay.min(max);
    let jitter = 1.0 + BACKOFF_JITTER * (rand::thread_rng().gen::<f64>() * 2.0 - 1.0);
    Duration::from_secs_f64(delay * jitter)
}

/// The delay after a success: uniform in `[min, max]`.
pub fn poll_delay(min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    rand::thread_rng().gen_range(min..=max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_opa() {
        let max = Duration::from_secs(120);
        assert_eq!(backoff(0, max), Duration::ZERO);
        for (n, expected) in [(1, 0.16), (2, 0.256), (3, 0.4096)] {
            let d = backoff(n, max).as_secs_f64();
            assert!(
                d >= expected * 0.8 - 1e-9 && d <= expected * 1.2 + 1e-9,
                "{n}: {d}"
            );
        }
        let capped = backoff(100, Duration::from_secs(2)).as_secs_f64();
        assert!((1.6..=2.4).contains(&capped), "{capped}");
    }

    #[test]
    fn poll_delay_is_within_bounds() {
        let (min, max) = (Duration::from_millis(10), Duration::from_millis(20));
        for _ in 0..100 {
            let d = poll_delay(min, max);
            assert!(d >= min && d <= max);
        }
        assert_eq!(poll_delay(max, min), max);
    }
}

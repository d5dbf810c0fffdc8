//! `GET /metrics` (the Prometheus endpoint, on every listener, always on) and
//! `GET /metrics/alloc_bytes`. Neither is instrumented, as in OPA.

use std::io::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;

use super::AppState;
use crate::telemetry::encode::{self, Format};
use crate::telemetry::runtime;

/// Every collector's families in the format the `Accept` header asks for (text 0.0.4 unless
/// OpenMetrics is preferred), gzipped when `Accept-Encoding` allows it.
pub async fn get(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(header_str(header::ACCEPT));
    let body = encode::encode(&state.telemetry.registry.gather(), format);
    let content_type = [(header::CONTENT_TYPE, format.content_type())];
    if !accepts_gzip(header_str(header::ACCEPT_ENCODING)) {
        return (content_type, body).into_response();
    }
    // Fast compression: a scrape is about 10 KiB and must stay cheap for the server.
    let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    let compressed = gz.write_all(&body).and_then(|()| gz.finish());
    match compressed {
        Ok(bytes) => (content_type, [(header::CONTENT_ENCODING, "gzip")], bytes).into_response(),
        Err(_) => (content_type, body).into_response(),
    }
}

/// True when `gzip` is an acceptable content coding (present and not `q=0`).
fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|header| {
        header.split(',').any(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
                })
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
    })
}

/// Bytes the allocator has handed out and not yet taken back (jemalloc `stats.allocated`), the
/// counterpart of OPA's in-use heap, stack and runtime-structure bytes. `?pretty=true` (exactly)
/// gives a humanised value such as `12.3MB`.
pub async fn alloc_bytes(uri: Uri) -> Response {
    let Some(bytes) = runtime::allocated_bytes() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "allocator statistics are not available\n",
        )
            .into_response();
    };
    let pretty = uri.query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "pretty")
            .is_some_and(|(_, v)| v == "true")
    });
    let text = if pretty {
        humanise(bytes)
    } else {
        bytes.to_string()
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

/// `/metrics` and `/metrics/alloc_bytes` are GET only; HEAD gets the 405 OPA's router gives it.
pub async fn method_not_allowed() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

/// SI units with one decimal, as OPA prints them: `999.0B`, `1.5KB`, `12.3MB`.
fn humanise(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["", "K", "M", "G", "T", "P", "E", "Z"] {
        if value.abs() < 1000.0 {
            return format!("{value:.1}{unit}B");
        }
        value /= 1000.0;
    }
    format!("{value:.1}YiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanised_like_opa() {
        assert_eq!(humanise(0), "0.0B");
        assert_eq!(humanise(999), "999.0B");
        assert_eq!(humanise(1500), "1.5KB");
        assert_eq!(humanise(12_345_678), "12.3MB");
        assert_eq!(humanise(u64::MAX), "18.4EB");
    }

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }
}

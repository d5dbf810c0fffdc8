//! Layers every request passes through, outermost first: request logging, decoding limits
//! (main listener only), then instrumentation with OPA's "default handler" rules (HEAD -> 405,
//! trailing slash -> 301) inside it, so those answers are observed as OPA observes them, and
//! innermost a panic guard that turns a panicking handler into OPA's 500.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::error::ApiError;
use super::AppState;

/// Marks a 405 produced by a route family's catch-all, observed with `handler="catchall"`.
#[derive(Clone, Copy)]
struct Catchall;

/// The `handler` label of a path, or `None` for paths OPA does not instrument.
pub fn route_label(path: &str) -> Option<&'static str> {
    let family = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    Some(match path {
        "/" => "index",
        "/v1/config" | "/v1/config/" => "v1/config",
        "/v1/status" | "/v1/status/" => "v1/status",
        _ if family("/v0/data") => "v0/data",
        _ if family("/v1/data") => "v1/data",
        _ if family("/v1/policies") => "v1/policies",
        _ if family("/v1/query") => "v1/query",
        _ if family("/v1/compile") => "v1/compile",
        _ if family("/health") => "health",
        _ => return None,
    })
}

pub async fn instrument(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match route_label(req.uri().path()) {
        Some(label) => observed(&state, label, req, next).await,
        None => next.run(req).await,
    }
}

/// A diagnostic listener has only the health routes to instrument: any other path there is the
/// router's plain 404, neither observed nor subject to the default-handler rules.
pub async fn instrument_diagnostic(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match route_label(req.uri().path()) {
        Some(label @ "health") => observed(&state, label, req, next).await,
        _ => next.run(req).await,
    }
}

/// OPA's per-route wrapper: HTTP metrics around the default handler around the route.
async fn observed(state: &AppState, label: &'static str, req: Request, next: Next) -> Response {
    let is_head = req.method() == Method::HEAD;
    let mut inflight = state.telemetry.http.start(label, req.method());
    let path = req.uri().path();
    let response = if is_head {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    } else if path.len() > 1 && path.ends_with('/') {
        let mut location = path.trim_end_matches('/').to_string();
        if location.is_empty() {
            location.push('/');
        }
        if let Some(q) = req.uri().query() {
            location = format!("{location}?{q}");
        }
        (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, location)],
        )
            .into_response()
    } else {
        let req = inflight.watch_body(req);
        inflight.watch(next.run(req)).await
    };
    let label = if response.extensions().get::<Catchall>().is_some() {
        "catchall"
    } else if response.status() == StatusCode::METHOD_NOT_ALLOWED && !is_head {
        // The router's own 405 for routes outside the catch-all families: not observed.
        inflight.discard();
        return response;
    } else {
        label
    };
    inflight.finish(label, response.status());
    response
}

/// `server.decoding.max_length`: a declared body over the limit is refused before anything else.
pub async fn decoding_limits(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.server.decoding.max_length) {
        return ApiError::InvalidParameter("request body too large".into()).into_response();
    }
    next.run(req).await
}

/// OPA's request log: "Received request." and "Sent response." at info level. The second line
/// is written once the body has been sent, so `resp_bytes` is the size actually written.
pub async fn log_requests(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.run(req).await;
    }
    let req_id = state.request_ids.fetch_add(1, Ordering::Relaxed) + 1;
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    tracing::info!(
        client_addr,
        req_id,
        req_method = method,
        req_path = path,
        "Received request."
    );
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let sent = SentLog {
        client_addr,
        req_id,
        method,
        path,
        status: parts.status.as_u16(),
        started,
    };
    Response::from_parts(
        parts,
        Body::new(CountedBody {
            inner: body,
            bytes: 0,
            log: Some(sent),
        }),
    )
}

/// What the "Sent response." line needs besides the byte count.
struct SentLog {
    client_addr: String,
    req_id: u64,
    method: String,
    path: String,
    status: u16,
    started: Instant,
}

impl SentLog {
    fn emit(self, resp_bytes: u64) {
        tracing::info!(
            client_addr = self.client_addr,
            req_id = self.req_id,
            req_method = self.method,
            req_path = self.path,
            resp_status = self.status,
            resp_bytes,
            resp_duration = self.started.elapsed().as_secs_f64() * 1000.0,
            "Sent response."
        );
    }
}

/// A response body that counts the bytes it yields and logs "Sent response." when it is done
/// (fully sent, or dropped because the client went away).
struct CountedBody {
    inner: Body,
    bytes: u64,
    log: Option<SentLog>,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.emit(self.bytes);
        }
    }
}

/// Wrong method on `/v0/data`, `/v1/data`, `/v1/policies`, `/v1/query`: empty 405.
pub async fn catchall() -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response.extensions_mut().insert(Catchall);
    response
}

/// A handler that panicked answers OPA's 500 instead of dropping the connection.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("internal error while handling the request".into()).into_response()
}

/// Unknown paths: the Go mux's plain-text 404.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn labels_match_opa_handler_names() {
        assert_eq!(route_label("/"), Some("index"));
        assert_eq!(route_label("/v1/data"), Some("v1/data"));
        assert_eq!(route_label("/v1/data/a/b"), Some("v1/data"));
        assert_eq!(route_label("/v1/dataset"), None);
        assert_eq!(route_label("/v0/data/x"), Some("v0/data"));
        assert_eq!(route_label("/health/ready"), Some("health"));
        assert_eq!(route_label("/metrics"), None);
        assert_eq!(route_label("/nope"), None);
    }
}

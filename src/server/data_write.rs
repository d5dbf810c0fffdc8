//! Data API writes: `PUT /v1/data[/path]`, `PATCH /v1/data[/path]`, `DELETE /v1/data/path`.
//!
//! Each write is one [`Store`](crate::engine::Store) transaction: refused under a bundle's
//! roots, applied to a draft, checked against the rules (base data may not sit on a rule's
//! path), compiled and swapped in atomically; a refused or failing write changes nothing.
//! Success is `204`, or `200 {"metrics": …}` with `?metrics` (never pretty-printed, as in OPA).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use super::error::ApiError;
use super::params::{path_segments, Params};
use super::timers::RequestTimers;
use super::{blocking, body, reply, AppState};
use crate::engine::{document, roots, Draft, Edit, EngineError};

const PREFIX: &str = "/v1/data";

/// The request parts every write needs.
struct Write {
    started: Instant,
    timers: RequestTimers,
    path: Vec<String>,
}

impl Write {
    fn new(uri: &Uri) -> Self {
        Write {
            started: Instant::now(),
            timers: RequestTimers::new(Params::parse(uri.query()).flag("metrics")),
            path: path_segments(uri.path(), PREFIX),
        }
    }

    /// Reads and decodes the JSON body (timed as input parsing, as OPA does).
    async fn json_body(
        &mut self,
        state: &AppState,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Json, ApiError> {
        // OPA reads PUT/PATCH bodies raw: `Content-Encoding: gzip` is not inflated here.
        let bytes = body::read(headers, body, &state.config.server.decoding, false).await?;
        self.timers
            .time("timer_rego_input_parse_ns", || {
                serde_json::from_slice(&bytes)
            })
            .map_err(|e| ApiError::InvalidParameter(e.to_string()))
    }

    async fn apply<T: Send + 'static>(
        &self,
        state: &AppState,
        edit: impl FnOnce(&mut Draft) -> Result<Edit<T>, EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        Ok(blocking::write(&state.store, edit).await??)
    }

    fn done(mut self) -> Response {
        self.timers
            .record("timer_server_handler_ns", self.started.elapsed());
        match self.timers.into_reported() {
            Some(metrics) => reply::ok(&json!({ "metrics": metrics }), false),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

/// `PUT`: creates or replaces the document, creating missing parents; with `If-None-Match: *`
/// an existing document is left alone and the answer is `304` without a body.
pub async fn put(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut write = Write::new(&uri);
    let value = write.json_body(&state, &headers, body).await?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let path = write.path.clone();
    let written = write
        .apply(&state, move |draft| {
            roots::check_write(&draft.bundles, &path)?;
            if if_none_match && document::get(&draft.data, &path).is_some() {
                return Ok(Edit::Unchanged(false));
            }
            document::put(&mut draft.data, &path, value)?;
            Ok(Edit::Changed(true))
        })
        .await?;
    if !written {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(write.done())
}

/// `PATCH`: a JSON Patch (`add`, `remove`, `replace`) whose paths are relative to the URL path.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut write = Write::new(&uri);
    let ops = write.json_body(&state, &headers, body).await?;
    let ops = document::parse_patch(&ops, &write.path).map_err(EngineError::from)?;
    write
        .apply(&state, move |draft| {
            for op in &ops {
                roots::check_write(&draft.bundles, &op.path)?;
            }
            document::apply_patch(&mut draft.data, ops)?;
            Ok(Edit::Changed(()))
        })
        .await?;
    Ok(write.done())
}

/// `DELETE /v1/data/path`: removes the document; a missing one is `404 resource_not_found`.
pub async fn delete(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let write = Write::new(&uri);
    let path = write.path.clone();
    write
        .apply(&state, move |draft| {
            roots::check_write(&draft.bundles, &path)?;
            document::remove(&mut draft.data, &path)?;
            Ok(Edit::Changed(()))
        })
        .await?;
    Ok(write.done())
}

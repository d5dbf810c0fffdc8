//! Data API reads: `GET/POST /v1/data[/path]`, `POST /v0/data[/path]` and the default decision
//! `POST /`. Writes to the data document live in `data_write.rs`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::error::ApiError;
use super::params::{path_segments, Params};
use super::timers::{RequestTimers, Timers};
use super::{blocking, body, reply, AppState};
use crate::engine::eval::{display_ref, eval_path, eval_path_with, EvalOptions};

#[derive(Deserialize)]
struct DataRequest {
    input: Option<regorus::Value>,
}

#[derive(Serialize)]
struct DataResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<regorus::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<Timers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<Json>,
}

/// Parses JSON or YAML (when the Content-Type says so) into `T`.
fn decode<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, String> {
    if body::is_yaml(headers) {
        yaml_serde::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

pub async fn get_v1(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri.query());
    let mut timers = RequestTimers::new(params.flag("metrics") || params.flag("instrument"));
    let input = match params.last("input") {
        Some(text) => Some(timers.time("timer_rego_input_parse_ns", || {
            serde_json::from_str::<regorus::Value>(text).map_err(|e| {
                ApiError::InvalidParameter(format!(
                    "parameter contains malformed input document: {e}"
                ))
            })
        })?),
        None => None,
    };
    let path = path_segments(uri.path(), "/v1/data");
    decide_v1(&state, &params, &path, input, None, timers, started)
}

pub async fn post_v1(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri.query());
    let mut timers = RequestTimers::new(params.flag("metrics") || params.flag("instrument"));
    let bytes = body::read(&headers, body, &state.config.server.decoding, true).await?;
    let input = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        timers
            .time("timer_rego_input_parse_ns", || {
                decode::<DataRequest>(&headers, &bytes)
            })
            .map_err(|e| {
                ApiError::InvalidParameter(format!("body contains malformed input document: {e}"))
            })?
            .input
    };
    let warning = input.is_none().then(|| {
        serde_json::json!({"code": "api_usage_warning", "message": "'input' key missing from the request"})
    });
    let path = path_segments(uri.path(), "/v1/data");
    decide_v1(&state, &params, &path, input, warning, timers, started)
}

fn decide_v1(
    state: &AppState,
    params: &Params,
    path: &[String],
    input: Option<regorus::Value>,
    warning: Option<Json>,
    mut timers: RequestTimers,
    started: Instant,
) -> Result<Response, ApiError> {
    let snapshot = state.store.snapshot();
    let options = EvalOptions {
        strict_builtin_errors: params.flag("strict-builtin-errors"),
    };
    let result = timers.time("timer_rego_query_eval_ns", || {
        blocking::evaluate(|| eval_path_with(&snapshot, path, input, options))
    })?;
    let provenance = params
        .flag("provenance")
        .then(|| super::provenance(&snapshot));
    timers.record("timer_server_handler_ns", started.elapsed());
    let response = DataResponse {
        result,
        metrics: timers.into_reported(),
        provenance,
        warning,
    };
    Ok(reply::ok(&response, params.flag("pretty")))
}

/// `POST /v0/data[/path]`: the body is the input itself and the reply is the bare value.
pub async fn post_v0(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = path_segments(uri.path(), "/v0/data");
    decide_v0(&state, &uri, &headers, body, &path).await
}

/// `POST /`: the default decision (`default_decision`, `/system/main` unless configured).
pub async fn post_index(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = path_segments(&state.config.default_decision, "");
    decide_v0(&state, &uri, &headers, body, &path).await
}

async fn decide_v0(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    path: &[String],
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let bytes = body::read(headers, body, &state.config.server.decoding, true).await?;
    let input = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(decode::<regorus::Value>(headers, &bytes).map_err(|e| {
            ApiError::InvalidParameter(format!(
                "unexpected parse error for input: body contains malformed input document: {e}"
            ))
        })?)
    };
    let snapshot = state.store.snapshot();
    match blocking::evaluate(|| eval_path(&snapshot, path, input))? {
        Some(value) => Ok(reply::json(StatusCode::OK, &value, params.flag("pretty"))),
        None => {
            // OPA says "undefined" when rules define the document (they just did not produce a
            // value) and "missing" when nothing does.
            let kind = if snapshot.has_rules_for(path) {
                "undefined"
            } else {
                "missing"
            };
            Err(ApiError::Undefined(format!(
                "document {kind}: {}",
                display_ref(path)
            )))
        }
    }
}

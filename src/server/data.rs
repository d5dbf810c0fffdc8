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
use super::{body, reply, AppState};
use crate::engine::eval::{display_ref, eval_path, eval_path_with, EvalOptions};
use crate::telemetry::decisions::{Api, Outcome, Stage};

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

pub async fn get_v1(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri.query());
    let mut timers = decision_timers(&state, &params);
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
    decide_v1(
        &state, &params, &headers, &path, input, None, timers, started,
    )
}

pub async fn post_v1(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri.query());
    let mut timers = decision_timers(&state, &params);
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
    decide_v1(
        &state, &params, &headers, &path, input, warning, timers, started,
    )
}

/// `?metrics` timers that also time the decision's stages for the decision metrics.
fn decision_timers(state: &AppState, params: &Params) -> RequestTimers {
    RequestTimers::for_decision(
        params.flag("metrics") || params.flag("instrument"),
        state.telemetry.decisions.stages(),
    )
}

#[allow(clippy::too_many_arguments)]
fn decide_v1(
    state: &AppState,
    params: &Params,
    headers: &HeaderMap,
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
    let evaluated = timers.time("timer_rego_query_eval_ns", || {
        state
            .evaluations
            .run(|| eval_path_with(&snapshot, path, input, options))
    });
    let outcome = Outcome::of(&evaluated);
    let answer = evaluated.map_err(ApiError::from).map(|result| {
        let provenance = params
            .flag("provenance")
            .then(|| super::provenance(&snapshot));
        timers.record("timer_server_handler_ns", started.elapsed());
        let response = DataResponse {
            result,
            metrics: timers.take_reported(),
            provenance,
            warning,
        };
        timers.stage(Stage::ResultSerialize, || {
            reply::ok(&response, params.flag("pretty"))
        })
    });
    // Decision metrics: the one observation of every v1 decision (GET and POST).
    let stages = timers.stages();
    state
        .telemetry
        .decisions
        .observe(Api::V1, path, outcome, stages, headers);
    answer
}

/// `POST /v0/data[/path]`: the body is the input itself and the reply is the bare value.
pub async fn post_v0(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = path_segments(uri.path(), "/v0/data");
    decide_v0(&state, Api::V0, &uri, &headers, body, &path).await
}

/// `POST /`: the default decision (`default_decision`, `/system/main` unless configured).
pub async fn post_index(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = path_segments(&state.config.default_decision, "");
    decide_v0(&state, Api::Default, &uri, &headers, body, &path).await
}

async fn decide_v0(
    state: &AppState,
    api: Api,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    path: &[String],
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let mut timers = RequestTimers::for_decision(false, state.telemetry.decisions.stages());
    let bytes = body::read(headers, body, &state.config.server.decoding, true).await?;
    let input = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            timers
                .time("timer_rego_input_parse_ns", || {
                    decode::<regorus::Value>(headers, &bytes)
                })
                .map_err(|e| {
                    ApiError::InvalidParameter(format!(
                        "unexpected parse error for input: body contains malformed input document: {e}"
                    ))
                })?,
        )
    };
    let snapshot = state.store.snapshot();
    let evaluated = timers.time("timer_rego_query_eval_ns", || {
        state.evaluations.run(|| eval_path(&snapshot, path, input))
    });
    let outcome = Outcome::of(&evaluated);
    let answer = evaluated.map_err(ApiError::from).map(|result| {
        result.map(|value| {
            timers.stage(Stage::ResultSerialize, || {
                reply::json(StatusCode::OK, &value, params.flag("pretty"))
            })
        })
    });
    // Decision metrics: the one observation of every v0 and default decision.
    let stages = timers.stages();
    state
        .telemetry
        .decisions
        .observe(api, path, outcome, stages, headers);
    match answer? {
        Some(response) => Ok(response),
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

//! Query API: `GET /v1/query?q=…` and `POST /v1/query {"query", "input"}`.
//!
//! The answer is `{"result": [<bindings>…]}`: one object of variable bindings per solution
//! (`{}` for a satisfied query without variables; `_` and generated variables left out), and no
//! `result` at all when nothing satisfies the query. Syntax errors are 400 "error(s) occurred
//! while parsing query", static errors 400 "… while compiling query", runtime errors 500.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::Params;
use super::timers::{RequestTimers, Timers};
use super::{body, reply, AppState};
use crate::engine::query::{eval_query, parse_query};

#[derive(Deserialize)]
struct QueryRequest {
    #[serde(default)]
    query: String,
    input: Option<regorus::Value>,
}

#[derive(Serialize)]
struct QueryResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    result: Vec<regorus::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<Timers>,
}

fn timers(params: &Params) -> RequestTimers {
    RequestTimers::new(params.flag("metrics") || params.flag("instrument"))
}

pub async fn get(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri.query());
    let query = params
        .last("q")
        .ok_or_else(|| ApiError::InvalidParameter("missing parameter 'q'".into()))?
        .to_string();
    run(&state, &params, &query, None, timers(&params), started)
}

pub async fn post(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = Params::parse(uri.query());
    let mut timers = timers(&params);
    // OPA reads this body raw: no gzip, no YAML.
    let bytes = body::read(&headers, body, &state.config.server.decoding, false).await?;
    let request: QueryRequest = timers
        .time("timer_rego_input_parse_ns", || {
            serde_json::from_slice(&bytes)
        })
        .map_err(|e| {
            ApiError::InvalidParameter(format!("error(s) occurred while decoding request: {e}"))
        })?;
    run(
        &state,
        &params,
        &request.query,
        request.input,
        timers,
        started,
    )
}

fn run(
    state: &AppState,
    params: &Params,
    query: &str,
    input: Option<regorus::Value>,
    mut timers: RequestTimers,
    started: Instant,
) -> Result<Response, ApiError> {
    let rego_v1 = state.store.rego_v1();
    let parsed = timers.time("timer_rego_query_parse_ns", || parse_query(query, rego_v1))?;
    let snapshot = state.store.snapshot();
    let result = timers.time("timer_rego_query_eval_ns", || {
        state
            .evaluations
            .run(|| eval_query(&snapshot, &parsed, input, rego_v1))
    })?;
    timers.record("timer_server_handler_ns", started.elapsed());
    let response = QueryResponse {
        result,
        metrics: timers.into_reported(),
    };
    Ok(reply::ok(&response, params.flag("pretty")))
}

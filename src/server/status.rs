//! `GET /v1/status`: the status plugin's latest report under `result`, as OPA serves it.
//!
//! Built from the last events the plugin received and the current metrics; it sends nothing.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json;

use super::error::ApiError;
use super::params::Params;
use super::{reply, AppState};

pub async fn get(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let view = state
        .status
        .get()
        .ok_or_else(|| ApiError::Internal("status plugin not enabled".into()))?;
    let pretty = Params::parse(query.as_deref()).flag("pretty");
    Ok(reply::ok(&json!({ "result": view.snapshot() }), pretty))
}

//! `GET /v1/config`: the active configuration, credentials removed (see `Config::active`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde_json::json;

use super::params::Params;
use super::{reply, AppState};

pub async fn get(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let params = Params::parse(uri.query());
    reply::ok(
        &json!({"result": state.config.active()}),
        params.flag("pretty"),
    )
}

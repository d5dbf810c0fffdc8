//! Success responses in OPA's format: `application/json`, compact or 2-space indented with
//! `?pretty`, always ending in a newline.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T, pretty: bool) -> Response {
    let mut body = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .expect("response values serialise");
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn ok<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Response {
    json(StatusCode::OK, value, pretty)
}

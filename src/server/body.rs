//! Reading request bodies under OPA's decoding limits (`server.decoding.*`), with gzip request
//! bodies inflated where OPA accepts them and the inflated size capped.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};

use super::error::ApiError;
use crate::config::DecodingLimits;

/// Reads the whole body. `gzip` says whether this route accepts `Content-Encoding: gzip`.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: &DecodingLimits,
    gzip: bool,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::InvalidParameter("request body too large".into());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_length) {
        return Err(too_large());
    }
    let raw = Limited::new(
        body,
        usize::try_from(limits.max_length).unwrap_or(usize::MAX),
    )
    .collect()
    .await
    .map_err(|_| too_large())?
    .to_bytes();
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !(gzip && gzipped) {
        return Ok(raw);
    }
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(limits.gzip_max_length.saturating_add(1))
        .read_to_end(&mut inflated)
        .map_err(|e| ApiError::InvalidParameter(format!("could not decompress the body: {e}")))?;
    if inflated.len() as u64 > limits.gzip_max_length {
        return Err(ApiError::InvalidParameter(
            "compressed request body too large".into(),
        ));
    }
    Ok(inflated.into())
}

/// True when the request says its body is YAML (OPA checks for `yaml` in the Content-Type).
pub fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"))
}

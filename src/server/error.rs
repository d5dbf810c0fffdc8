//! The one table that maps internal errors to OPA's error JSON and status codes.
//!
//! OPA always indents error bodies by two spaces and ends them with a newline, whatever `?pretty`
//! says; clients match on `code`, so the codes here are OPA's.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value as Json;

use crate::engine::{DocumentError, EngineError, RegoError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{message}")]
    InvalidParameterWithErrors {
        message: String,
        errors: Vec<RegoError>,
    },
    #[error("{0}")]
    InvalidOperation(String),
    #[error("{message}")]
    InvalidOperationWithErrors {
        message: String,
        errors: Vec<RegoError>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Undefined(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Json>,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Vec<Json>) {
        let rego = |errs: &[RegoError]| -> Vec<Json> {
            errs.iter()
                .map(|e| serde_json::to_value(e).expect("errors serialise"))
                .collect()
        };
        match self {
            ApiError::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter", vec![]),
            ApiError::InvalidParameterWithErrors { errors, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_parameter", rego(errors))
            }
            ApiError::InvalidOperation(_) => (StatusCode::BAD_REQUEST, "invalid_operation", vec![]),
            ApiError::InvalidOperationWithErrors { errors, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_operation", rego(errors))
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "resource_not_found", vec![]),
            ApiError::Undefined(_) => (StatusCode::NOT_FOUND, "undefined_document", vec![]),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", vec![]),
            ApiError::Engine(e) => match e {
                EngineError::Compile(errs)
                | EngineError::QueryParse(errs)
                | EngineError::QueryCompile(errs) => {
                    (StatusCode::BAD_REQUEST, "invalid_parameter", rego(errs))
                }
                EngineError::Eval(errs) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    rego(errs),
                ),
                // Data writes report path conflicts as one message, as OPA does; the Policy API
                // turns them into compile errors before they get here.
                EngineError::PolicyNotFound(_) => {
                    (StatusCode::NOT_FOUND, "resource_not_found", vec![])
                }
                EngineError::InvalidData(_)
                | EngineError::EmptyModule
                | EngineError::DataConflict(_)
                | EngineError::Roots(_) => (StatusCode::BAD_REQUEST, "invalid_parameter", vec![]),
                EngineError::Document(DocumentError::NotFound(_)) => {
                    (StatusCode::NOT_FOUND, "resource_not_found", vec![])
                }
                EngineError::Document(DocumentError::Conflict(_)) => {
                    (StatusCode::NOT_FOUND, "resource_conflict", vec![])
                }
                EngineError::Document(_) => (StatusCode::BAD_REQUEST, "invalid_parameter", vec![]),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, errors) = self.parts();
        let body = ErrorBody {
            code,
            message: self.to_string(),
            errors,
        };
        let mut text = serde_json::to_string_pretty(&body).expect("error bodies serialise");
        text.push('\n');
        (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn error_body_is_indented_with_trailing_newline() {
        let resp = ApiError::InvalidParameter("missing parameter 'q'".into()).into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body(resp).await,
            "{\n  \"code\": \"invalid_parameter\",\n  \"message\": \"missing parameter 'q'\"\n}\n"
        );
    }

    #[tokio::test]
    async fn write_conflict_is_404_resource_conflict() {
        let err = ApiError::from(EngineError::Document(DocumentError::Conflict("/a".into())));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(body(resp).await.contains("\"resource_conflict\""));
    }
}

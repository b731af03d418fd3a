//! One error type for the HTTP surface, rendered as `application/problem+json` (RFC 9457).
//!
//! Handlers return `Result<_, AppError>`. Internal failures are logged here with their cause
//! chain and reach the client as an opaque 500: no SQL, no stack trace, no secret.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{domain::FieldError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the body is not JSON, or not the JSON object expected.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no key, or a key we do not know.
    #[error("a valid API key is required")]
    Unauthorized,
    /// 403: a valid key whose scope does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown, or another account's: the two are indistinguishable on purpose.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: the request is valid but the resource's state refuses it.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the configured limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: a body that is not declared as JSON.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 422: well-formed JSON whose values break the rules; every problem is listed.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// 429: a per-key limit other than the request rate (which answers with its own headers).
    #[error("{0}")]
    TooManyRequests(String),
    /// 502: a server Skein had to reach for the answer (an agent's tool server) failed.
    #[error("{0}")]
    BadGateway(String),
    /// 500: logged with its cause, hidden from the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => Self::Conflict(message),
            other => Self::Internal(other.into()),
        }
    }
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        Self {
            kind: format!(
                "https://skein.dev/problems/{}",
                title.to_lowercase().replace(' ', "-")
            ),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = match self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                Problem::new(status, "an internal error occurred; it has been logged")
            }
            Self::Validation(errors) => {
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                Problem {
                    errors: Some(errors),
                    ..Problem::new(status, detail)
                }
            }
            other => Problem::new(status, other.to_string()),
        };
        problem.into_response()
    }
}

//! `ApiError`: every way an admin call fails, mapped to its HTTP status in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llmux_store::StoreError;
use serde_json::json;

/// An admin API error; rendered as `{"error":{"message"}}` with the status of its variant.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: a name is taken, or the object is read-only (declared in the config file).
    #[error("{0}")]
    Conflict(String),
    /// 500: the store or the gateway failed; logged, and said in general terms.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// 400 about one field: `"<field>: <reason>"`.
    pub fn field(field: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest(format!("{field}: {reason}"))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::NotFound => ApiError::NotFound("not found".to_owned()),
            StoreError::MissingReference(m) => ApiError::BadRequest(m),
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "admin API call failed");
        }
        (
            status,
            Json(json!({ "error": { "message": self.to_string() } })),
        )
            .into_response()
    }
}

/// What admin handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

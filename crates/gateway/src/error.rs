//! The gateway's errors: the one place an error answered to a client becomes an HTTP response
//! (rendered in the caller's dialect), and why a config cannot become a running gateway.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use llmux_wire::{Dialect, ErrorKind};

/// An error answered by llmux itself (not relayed from an upstream).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub dialect: Dialect,
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(dialect: Dialect, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            dialect,
            kind,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response<Body> {
        let status =
            StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.dialect.error_body(self.kind, &self.message);
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// Why a config cannot become a running gateway ([`crate::Gateway::new`],
/// [`crate::Gateway::apply`]).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// An upstream's HTTP client could not be built (its TLS backend failed to start).
    #[error("upstream {upstream}: cannot build HTTP client: {source}")]
    HttpClient {
        upstream: String,
        #[source]
        source: reqwest::Error,
    },
}

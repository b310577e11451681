//! The API dialects clients speak, and how each one spells an error — in a response body or mid-stream.

use bytes::Bytes;
use serde_json::json;

/// An API family. The ingress dialect decides how errors look; the upstream's decides paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI chat completions, completions, embeddings, models.
    OpenAi,
    /// Ollama's native `/api/*`.
    Ollama,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google Gemini (`/v1beta/models/{model}:generateContent`).
    Gemini,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Ollama => "ollama",
            Dialect::Anthropic => "anthropic",
            Dialect::Gemini => "gemini",
        }
    }

    /// The JSON error body a client of this dialect expects.
    /// OpenAI: `{"error":{"message","type","param","code"}}`; Ollama: `{"error":"..."}`.
    pub fn error_body(self, kind: ErrorKind, message: &str) -> Vec<u8> {
        let mut value = match self {
            Dialect::OpenAi => json!({
                "error": {
                    "message": message,
                    "type": kind.openai_type(),
                    "param": null,
                    "code": kind.openai_code(),
                }
            }),
            Dialect::Ollama => json!({ "error": message }),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": kind.anthropic_type(), "message": message }
            }),
            Dialect::Gemini => json!({
                "error": {
                    "code": kind.status(),
                    "message": message,
                    "status": kind.google_status(),
                }
            }),
        };
        if kind == ErrorKind::HookDenied {
            mark_hook_denied(self, &mut value);
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The event that ends a broken stream so the client's library raises instead of
    /// reporting a normal finish: OpenAI and Gemini SSE `data: {"error":…}` (no `[DONE]`
    /// follows); Anthropic `event: error`; Ollama a final NDJSON line `{"error":"…"}`.
    pub fn stream_error_event(self, kind: ErrorKind, message: &str) -> Bytes {
        let body = self.error_body(kind, message);
        let mut out = Vec::with_capacity(body.len() + 8);
        match self {
            Dialect::OpenAi | Dialect::Gemini => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\n\n");
            }
            Dialect::Anthropic => {
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\n\n");
            }
            Dialect::Ollama => {
                out.extend_from_slice(&body);
                out.push(b'\n');
            }
        }
        Bytes::from(out)
    }
}

/// What went wrong, independent of dialect; decides the HTTP status and the error's type/code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed JSON, missing fields, wrong content type.
    InvalidRequest,
    /// No upstream serves the requested model.
    ModelNotFound,
    /// No such route.
    NotFound,
    /// Missing or wrong credentials.
    Authentication,
    /// Credentials valid but not allowed.
    PermissionDenied,
    /// A hook (`[[hooks]]`) refused the call: a 403 with the code `hook_denied`.
    HookDenied,
    /// Body over `server.max_body`.
    PayloadTooLarge,
    /// Too many requests.
    RateLimited,
    /// The caller's credit or budget is spent (OpenAI's `insufficient_quota`, also a 429).
    InsufficientQuota,
    /// Every upstream candidate failed.
    BadGateway,
    /// No upstream could be tried at all.
    Unavailable,
    /// The upstream did not answer in time.
    Timeout,
    /// A bug or an unexpected state in llmux itself.
    Internal,
}

/// A hook's refusal carries the code `hook_denied` where the dialect has room for one:
/// OpenAI's `error.code` (already), Anthropic's error object (an extra `code` field, which its
/// SDKs keep on the exception's body), Gemini's `details` (a `google.rpc.ErrorInfo` reason).
/// Ollama's errors are a bare message.
fn mark_hook_denied(dialect: Dialect, value: &mut serde_json::Value) {
    let error = value.get_mut("error").and_then(|e| e.as_object_mut());
    match (dialect, error) {
        (Dialect::Anthropic, Some(e)) => {
            e.insert("code".into(), json!("hook_denied"));
        }
        (Dialect::Gemini, Some(e)) => {
            let info = json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "hook_denied",
                "domain": "llmux",
            });
            e.insert("details".into(), json!([info]));
        }
        _ => {}
    }
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => 404,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied | ErrorKind::HookDenied => 403,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::InsufficientQuota => 429,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ModelNotFound
            | ErrorKind::NotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Authentication => "invalid_request_error",
            ErrorKind::PermissionDenied | ErrorKind::HookDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::InsufficientQuota => "insufficient_quota",
            ErrorKind::BadGateway
            | ErrorKind::Unavailable
            | ErrorKind::Timeout
            | ErrorKind::Internal => "server_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::ModelNotFound | ErrorKind::NotFound => "not_found_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied | ErrorKind::HookDenied => "permission_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::InsufficientQuota => "billing_error",
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::BadGateway | ErrorKind::Timeout | ErrorKind::Internal => "api_error",
        }
    }

    fn google_status(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::PayloadTooLarge => "INVALID_ARGUMENT",
            ErrorKind::ModelNotFound | ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::Authentication => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied | ErrorKind::HookDenied => "PERMISSION_DENIED",
            ErrorKind::RateLimited | ErrorKind::InsufficientQuota => "RESOURCE_EXHAUSTED",
            ErrorKind::Unavailable | ErrorKind::BadGateway => "UNAVAILABLE",
            ErrorKind::Timeout => "DEADLINE_EXCEEDED",
            ErrorKind::Internal => "INTERNAL",
        }
    }

    fn openai_code(self) -> Option<&'static str> {
        match self {
            ErrorKind::InvalidRequest => None,
            ErrorKind::ModelNotFound => Some("model_not_found"),
            ErrorKind::NotFound => Some("not_found"),
            ErrorKind::Authentication => Some("invalid_api_key"),
            ErrorKind::PermissionDenied => Some("permission_denied"),
            ErrorKind::HookDenied => Some("hook_denied"),
            ErrorKind::PayloadTooLarge => Some("payload_too_large"),
            ErrorKind::RateLimited => Some("rate_limit_exceeded"),
            ErrorKind::InsufficientQuota => Some("insufficient_quota"),
            ErrorKind::BadGateway => Some("upstream_error"),
            ErrorKind::Unavailable => Some("no_upstream_available"),
            ErrorKind::Timeout => Some("upstream_timeout"),
            ErrorKind::Internal => Some("internal_error"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn openai_error_shape() {
        let body = Dialect::OpenAi.error_body(ErrorKind::ModelNotFound, "model `x` not found");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "model `x` not found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn ollama_error_shape() {
        let body = Dialect::Ollama.error_body(ErrorKind::InvalidRequest, "bad \"json\"");
        assert_eq!(body, br#"{"error":"bad \"json\""}"#);
    }

    #[test]
    fn anthropic_and_gemini_error_shapes() {
        let v: serde_json::Value = serde_json::from_slice(
            &Dialect::Anthropic.error_body(ErrorKind::RateLimited, "slow down"),
        )
        .unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let v: serde_json::Value =
            serde_json::from_slice(&Dialect::Gemini.error_body(ErrorKind::ModelNotFound, "no"))
                .unwrap();
        assert_eq!(v["error"]["code"], 404);
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        let e = Dialect::Anthropic.stream_error_event(ErrorKind::BadGateway, "cut");
        assert!(e.starts_with(b"event: error\ndata: {"));
    }

    #[test]
    fn hook_denied_carries_its_code_in_each_dialect() {
        let v = |d: Dialect| -> serde_json::Value {
            serde_json::from_slice(&d.error_body(ErrorKind::HookDenied, "no")).unwrap()
        };
        assert_eq!(ErrorKind::HookDenied.status(), 403);
        let o = v(Dialect::OpenAi);
        assert_eq!(
            (o["error"]["code"].as_str(), o["error"]["type"].as_str()),
            (Some("hook_denied"), Some("permission_error"))
        );
        let a = v(Dialect::Anthropic);
        assert_eq!(
            (a["error"]["code"].as_str(), a["error"]["type"].as_str()),
            (Some("hook_denied"), Some("permission_error"))
        );
        let g = v(Dialect::Gemini);
        assert_eq!(g["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(g["error"]["details"][0]["reason"], "hook_denied");
        assert_eq!(v(Dialect::Ollama), serde_json::json!({"error": "no"}));
    }

    #[test]
    fn stream_error_events() {
        let e = Dialect::OpenAi.stream_error_event(ErrorKind::BadGateway, "cut");
        assert!(e.starts_with(b"data: {\"error\":"));
        assert!(e.ends_with(b"\n\n"));
        let e = Dialect::Ollama.stream_error_event(ErrorKind::BadGateway, "cut");
        assert_eq!(&e[..], b"{\"error\":\"cut\"}\n");
    }
}

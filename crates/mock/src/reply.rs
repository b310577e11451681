//! Replies in each dialect's own shape: the success envelope, the error bodies (Ollama's,
//! OpenAI's, Anthropic's, Gemini's) and the injected failures, byte-faithful to the real servers.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::handler::{Dialect, GEMINI_JSON, OLLAMA_JSON, OPENAI_JSON};
use crate::{gemini, Faults};

pub(crate) fn respond(status: StatusCode, ctype: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

pub(crate) fn ok_json(dialect: Dialect, body: impl Into<Body>) -> Response {
    let ctype = match dialect {
        Dialect::Ollama => OLLAMA_JSON,
        Dialect::OpenAi | Dialect::Anthropic => OPENAI_JSON,
        Dialect::Gemini => GEMINI_JSON,
    };
    respond(StatusCode::OK, ctype, body)
}

pub(crate) fn ollama_error(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::to_vec(&json!({ "error": msg })).unwrap_or_default();
    respond(status, OLLAMA_JSON, body)
}

pub(crate) fn openai_error(
    status: StatusCode,
    msg: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({"error": {"message": msg, "type": kind, "param": param, "code": code}});
    respond(
        status,
        OPENAI_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Anthropic's error envelope; `kind` is one of its documented error types.
pub(crate) fn anthropic_error(status: StatusCode, kind: &str, msg: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": msg}});
    respond(
        status,
        OPENAI_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// Google's canonical status name for an HTTP status, as Gemini puts in `error.status`.
fn google_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// Gemini's (Google API) error envelope; `details` is left out when empty.
pub(crate) fn gemini_error(status: StatusCode, msg: &str, details: Vec<Value>) -> Response {
    let mut error =
        json!({"code": status.as_u16(), "message": msg, "status": google_status(status)});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    respond(
        status,
        GEMINI_JSON,
        serde_json::to_vec(&json!({ "error": error })).unwrap_or_default(),
    )
}

/// What Go's default mux (and so Ollama) says for an unknown route.
pub(crate) fn not_found_text() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found",
    )
}

pub(crate) fn not_routed(dialect: Dialect, method: &Method, path: &str) -> Response {
    match dialect {
        Dialect::Ollama => not_found_text(),
        Dialect::OpenAi => openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
        Dialect::Anthropic => {
            anthropic_error(StatusCode::NOT_FOUND, "not_found_error", "Not Found")
        }
        Dialect::Gemini => gemini_error(StatusCode::NOT_FOUND, "Method not found.", Vec::new()),
    }
}

pub(crate) fn unauthorized(dialect: Dialect, given: &str, revoked: bool) -> Response {
    match dialect {
        Dialect::Anthropic if given.is_empty() => anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        ),
        Dialect::Anthropic => anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ),
        Dialect::Gemini if given.is_empty() => gemini_error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            Vec::new(),
        ),
        Dialect::Gemini if revoked => gemini_error(
            StatusCode::FORBIDDEN,
            "Permission denied: Consumer 'api_key:mock' has been suspended.",
            vec![error_info("CONSUMER_SUSPENDED")],
        ),
        // Real Gemini answers a wrong key with 400, not 401.
        Dialect::Gemini => gemini_error(
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            vec![error_info("API_KEY_INVALID")],
        ),
        Dialect::OpenAi | Dialect::Ollama => {
            // OpenAI shows only the ends of a wrong key.
            let shown = if given.len() > 8 && given.is_ascii() {
                format!("{}***{}", &given[..3], &given[given.len() - 4..])
            } else {
                given.to_owned()
            };
            let msg = format!(
                "Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
            );
            if dialect == Dialect::OpenAi {
                openai_error(
                    StatusCode::UNAUTHORIZED,
                    &msg,
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                )
            } else {
                ollama_error(StatusCode::UNAUTHORIZED, &msg)
            }
        }
    }
}

/// The `google.rpc.ErrorInfo` detail Gemini attaches to key errors.
fn error_info(reason: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    })
}

pub(crate) fn bad_request(dialect: Dialect, detail: &str) -> Response {
    match dialect {
        Dialect::Ollama => ollama_error(StatusCode::BAD_REQUEST, detail),
        Dialect::OpenAi => openai_error(
            StatusCode::BAD_REQUEST,
            &format!("We could not parse the JSON body of your request. ({detail})"),
            "invalid_request_error",
            None,
            None,
        ),
        Dialect::Anthropic => anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("There was an error parsing the body of your request: {detail}"),
        ),
        Dialect::Gemini => gemini_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid JSON payload received. {detail}"),
            Vec::new(),
        ),
    }
}

pub(crate) fn missing_model(dialect: Dialect) -> Response {
    match dialect {
        Dialect::Ollama => ollama_error(StatusCode::BAD_REQUEST, "model is required"),
        Dialect::OpenAi => openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
            None,
        ),
        Dialect::Anthropic => anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: Field required",
        ),
        Dialect::Gemini => gemini_error(
            StatusCode::BAD_REQUEST,
            "* GenerateContentRequest.model: unexpected model name format\n",
            Vec::new(),
        ),
    }
}

pub(crate) fn model_not_found(dialect: Dialect, model: &str) -> Response {
    match dialect {
        Dialect::Ollama => ollama_error(
            StatusCode::NOT_FOUND,
            &format!("model \"{model}\" not found, try pulling it first"),
        ),
        Dialect::OpenAi => openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ),
        Dialect::Anthropic => anthropic_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("model: {model}"),
        ),
        Dialect::Gemini => gemini::not_found(model, "generateContent"),
    }
}

pub(crate) fn injected_failure(dialect: Dialect, faults: &Faults) -> Response {
    let status = StatusCode::from_u16(faults.fail_status)
        .ok()
        .filter(|s| s.as_u16() >= 100 && faults.fail_status != 0)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let limited = status == StatusCode::TOO_MANY_REQUESTS;
    let mut resp = match dialect {
        Dialect::Ollama => ollama_error(status, &format!("mock: injected failure ({status})")),
        Dialect::OpenAi if limited => openai_error(
            status,
            "Rate limit reached (mock: injected failure).",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        Dialect::OpenAi => openai_error(
            status,
            &format!("The server had an error while processing your request. (mock: injected failure, {status})"),
            "server_error",
            None,
            None,
        ),
        Dialect::Anthropic => {
            let (kind, msg) = match status.as_u16() {
                429 => ("rate_limit_error", "Number of requests has exceeded your rate limit (mock: injected failure)."),
                529 => ("overloaded_error", "Overloaded (mock: injected failure)"),
                400 => ("invalid_request_error", "mock: injected failure"),
                401 => ("authentication_error", "mock: injected failure"),
                403 => ("permission_error", "mock: injected failure"),
                404 => ("not_found_error", "mock: injected failure"),
                413 => ("request_too_large", "mock: injected failure"),
                _ => ("api_error", "Internal server error (mock: injected failure)"),
            };
            anthropic_error(status, kind, msg)
        }
        Dialect::Gemini => {
            let (msg, details) = match status.as_u16() {
                429 => (
                    "Resource has been exhausted (e.g. check quota). (mock: injected failure)".to_owned(),
                    faults
                        .retry_after
                        .map(|s| {
                            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{s}s")})
                        })
                        .into_iter()
                        .collect(),
                ),
                503 => (
                    "The model is overloaded. Please try again later. (mock: injected failure)".to_owned(),
                    Vec::new(),
                ),
                500 => (
                    "An internal error has occurred. (mock: injected failure)".to_owned(),
                    Vec::new(),
                ),
                _ => (format!("mock: injected failure ({status})"), Vec::new()),
            };
            gemini_error(status, &msg, details)
        }
    };
    if let Some(secs) = faults.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

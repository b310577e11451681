//! The generation path: read the body, pick candidates, try them until one answers, then relay its bytes as they arrive.

use crate::error::ApiError;
use crate::relay::{CallLog, Relay};
use crate::routing::RouteError;
use crate::upstream::Upstream;
use crate::{Gateway, RequestId};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use config::UpstreamKind;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use wire::{Dialect, ErrorKind, Peek};

/// A generation endpoint of one ingress dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
    OllamaShow,
}

impl Endpoint {
    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => {
                Dialect::OpenAi
            }
            _ => Dialect::Ollama,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::OllamaChat => "api.chat",
            Endpoint::OllamaGenerate => "api.generate",
            Endpoint::OllamaEmbed => "api.embed",
            Endpoint::OllamaEmbeddings => "api.embeddings",
            Endpoint::OllamaShow => "api.show",
        }
    }

    /// Whether an upstream of `kind` can take this call without translation.
    /// Ollama serves OpenAI's API under `/v1`; OpenAI-kind upstreams do not speak Ollama's.
    pub fn accepts(self, kind: UpstreamKind) -> bool {
        match self.dialect() {
            Dialect::OpenAi => true,
            Dialect::Ollama => kind == UpstreamKind::Ollama,
        }
    }

    /// Path appended to the upstream's base URL. An OpenAI-kind base already ends in `/v1`.
    fn upstream_path(self, kind: UpstreamKind) -> &'static str {
        match (self, kind) {
            (Endpoint::ChatCompletions, UpstreamKind::Openai) => "/chat/completions",
            (Endpoint::Completions, UpstreamKind::Openai) => "/completions",
            (Endpoint::Embeddings, UpstreamKind::Openai) => "/embeddings",
            (Endpoint::ChatCompletions, UpstreamKind::Ollama) => "/v1/chat/completions",
            (Endpoint::Completions, UpstreamKind::Ollama) => "/v1/completions",
            (Endpoint::Embeddings, UpstreamKind::Ollama) => "/v1/embeddings",
            (Endpoint::OllamaChat, _) => "/api/chat",
            (Endpoint::OllamaGenerate, _) => "/api/generate",
            (Endpoint::OllamaEmbed, _) => "/api/embed",
            (Endpoint::OllamaEmbeddings, _) => "/api/embeddings",
            (Endpoint::OllamaShow, _) => "/api/show",
        }
    }

    fn loads_model(self) -> bool {
        self != Endpoint::OllamaShow
    }
}

/// Statuses after which another candidate may do better. Everything else (400, 404, 413, 422, …)
/// is the client's problem and goes back to it unchanged.
fn retryable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        401 | 402 | 403 | 408 | 429 | 500 | 502 | 503 | 504 | 529
    )
}

/// Response headers of the upstream that are worth passing on; the rest (hop-by-hop, server,
/// provider internals) stay behind.
const PASSED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
];

pub async fn handle(gw: Arc<Gateway>, endpoint: Endpoint, req: Request) -> Response<Body> {
    let started = Instant::now();
    let dialect = endpoint.dialect();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let routes = gw.routes();
    let (body, peek) = match read_request(req, dialect, routes.config.server.max_body).await {
        Ok(v) => v,
        Err(e) => return axum::response::IntoResponse::into_response(e),
    };
    let Some(model) = peek.model.clone() else {
        return error(
            dialect,
            ErrorKind::InvalidRequest,
            "missing required field `model`",
        );
    };
    let candidates = match routes.plan(&model, |k| endpoint.accepts(k)) {
        Ok(c) => c,
        Err(e @ RouteError::Incompatible { .. }) => {
            return error(dialect, ErrorKind::InvalidRequest, e.to_string())
        }
        Err(e) => return error(dialect, ErrorKind::ModelNotFound, e.to_string()),
    };
    let max_attempts = (routes.config.routing.max_attempts as usize).max(1);
    let tries = candidates.len().min(max_attempts);
    let upstream_header = routes.config.server.upstream_header;
    let mut failures: Vec<String> = Vec::new();

    for (i, cand) in candidates.into_iter().take(tries).enumerate() {
        let attempt = i + 1;
        let last = attempt == tries;
        let up = &cand.upstream;
        let guard = up.begin();
        let url = format!("{}{}", up.base, endpoint.upstream_path(up.kind));
        let mut call = up
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(peek.with_model(&body, &cand.model));
        if let Some((_, key)) = up.next_key() {
            call = call.bearer_auth(key.expose());
        }
        let attempt_start = Instant::now();
        let deadline = tokio::time::Instant::from_std(attempt_start + up.timeouts.first_byte);
        let resp = match tokio::time::timeout_at(deadline, call.send()).await {
            Err(_) => {
                failures.push(fail(
                    up,
                    format!("no response within {:?}", up.timeouts.first_byte),
                ));
                continue;
            }
            Ok(Err(e)) => {
                let reason = describe(&e);
                if e.is_connect() {
                    up.mark_down(&reason);
                }
                failures.push(fail(up, reason));
                continue;
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if !status.is_success() && retryable(status) && !last {
            failures.push(fail(up, format!("HTTP {}", status.as_u16())));
            continue;
        }
        let headers = pick_headers(resp.headers());
        let content_length = resp.content_length();
        let mut stream = resp.bytes_stream().boxed();
        // Nothing has reached the client yet: wait for the first bytes too, so a node that
        // answers headers and then dies is still retried elsewhere.
        let first = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) if !last => {
                failures.push(fail(
                    up,
                    format!("no data within {:?}", up.timeouts.first_byte),
                ));
                continue;
            }
            Ok(Some(Err(e))) if !last => {
                failures.push(fail(up, describe(&e)));
                continue;
            }
            Err(_) => {
                failures.push(fail(
                    up,
                    format!("no data within {:?}", up.timeouts.first_byte),
                ));
                break;
            }
            Ok(Some(Err(e))) => {
                failures.push(fail(up, describe(&e)));
                break;
            }
            Ok(Some(Ok(chunk))) => Some(chunk),
            Ok(None) => None,
        };
        let ttft = attempt_start.elapsed();
        if status.is_success() {
            up.record_ttft(ttft);
            up.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if up.kind == UpstreamKind::Ollama && endpoint.loads_model() {
                up.mark_loaded(&cand.model);
            }
        } else {
            up.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let stream_dialect = stream_format(&headers);
        let log = CallLog {
            request_id,
            endpoint: endpoint.as_str(),
            model,
            upstream: up.name.clone(),
            status: status.as_u16(),
            attempts: attempt,
            started,
            ttft: started.elapsed(),
        };
        let relay = Relay::new(
            first,
            stream,
            up.timeouts.idle,
            stream_dialect,
            content_length,
            log,
            guard,
        );
        let mut out = Response::new(Body::new(relay));
        *out.status_mut() = status;
        let h = out.headers_mut();
        for (name, value) in headers {
            h.insert(name, value);
        }
        if upstream_header {
            if let Ok(v) = HeaderValue::from_str(&up.name) {
                h.insert(crate::X_LLMUX_UPSTREAM, v);
            }
        }
        h.insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(attempt));
        return out;
    }

    let summary = failures.join("; ");
    tracing::warn!(request_id, model, failures = %summary, "every upstream candidate failed");
    let mut out = error(
        dialect,
        ErrorKind::BadGateway,
        format!("no upstream could serve model '{model}': {summary}"),
    );
    out.headers_mut()
        .insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(failures.len()));
    out
}

/// Reads the body within `max_body` and peeks at it, checking the content type first.
async fn read_request(
    req: Request,
    dialect: Dialect,
    max_body: usize,
) -> Result<(Bytes, Peek), ApiError> {
    let bad = |m: String| ApiError::new(dialect, ErrorKind::InvalidRequest, m);
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let text = ct.to_str().unwrap_or_default();
        let mime = text.split(';').next().unwrap_or_default().trim();
        let json = mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json");
        if !json {
            return Err(bad(format!(
                "unsupported content type '{text}': send the request body as application/json"
            )));
        }
    }
    let too_large = || {
        ApiError::new(
            dialect,
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the limit of {max_body} bytes (server.max_body)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(too_large());
    }
    let body = match axum::body::to_bytes(req.into_body(), max_body).await {
        Ok(b) => b,
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return Err(if over {
                too_large()
            } else {
                bad(format!("could not read the request body: {e}"))
            });
        }
    };
    if body.is_empty() {
        return Err(bad("request body is empty: send a JSON object".into()));
    }
    let peek = Peek::parse(&body).map_err(|e| bad(e.to_string()))?;
    Ok((body, peek))
}

pub fn error(dialect: Dialect, kind: ErrorKind, message: impl Into<String>) -> Response<Body> {
    axum::response::IntoResponse::into_response(ApiError::new(dialect, kind, message))
}

/// Records a failed attempt on the upstream and returns the line for the client's error.
fn fail(up: &Upstream, reason: String) -> String {
    up.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(upstream = %up.name, reason, "attempt failed; trying the next candidate");
    up.update(|s| s.last_error = Some(reason.clone()));
    format!("{}: {reason}", up.name)
}

/// A reqwest error in words an operator can act on, without the URL (it may carry a key in a query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

fn pick_headers(from: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    PASSED_HEADERS
        .iter()
        .filter_map(|name| from.get(name).map(|v| (name.clone(), v.clone())))
        .collect()
}

/// The streaming format of a response, judged by what the upstream actually sent.
fn stream_format(headers: &[(HeaderName, HeaderValue)]) -> Option<Dialect> {
    let ct = headers
        .iter()
        .find(|(n, _)| n == header::CONTENT_TYPE)
        .and_then(|(_, v)| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        Some(Dialect::OpenAi)
    } else if ct.starts_with("application/x-ndjson") {
        Some(Dialect::Ollama)
    } else {
        None
    }
}

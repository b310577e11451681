//! Every route llmux serves and the layers around them, in one place.

use crate::call::{self, Endpoint};
use crate::upstream::Pool;
use crate::{auth, catalog, Gateway, RequestId};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use llmux_wire::{Dialect, ErrorKind};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

fn generation(endpoint: Endpoint) -> axum::routing::MethodRouter<Arc<Gateway>> {
    post(move |State(gw): State<Arc<Gateway>>, req: Request| call::handle(gw, endpoint, req))
}

/// The whole HTTP surface. Layers run outside-in: request id (every response carries
/// `x-request-id`), CORS (`cors.rs`: preflights answered before anything else), compression of
/// whole JSON answers (`compress.rs`), rate limits per client IP and global (before authentication, so a flood
/// of bad keys never reaches the key lookup), client authentication (when `auth.required`;
/// open paths are one named list), the virtual key's concurrency limit (its request and token
/// rates are checked, and their headers set, by the call once the body is read), then the
/// route. `admin` (the control plane's admin API, behind its own authentication) is served
/// under `/admin/v1`; `console` (the web console's `/ui` routes) is merged in when given,
/// and then a browser asking for `/` is sent there.
pub fn router(gw: Arc<Gateway>, admin: Router, console: Option<Router<Arc<Gateway>>>) -> Router {
    let has_console = console.is_some();
    let routes = Router::new()
        // OpenAI dialect
        .route(
            "/v1/chat/completions",
            generation(Endpoint::ChatCompletions),
        )
        .route("/v1/completions", generation(Endpoint::Completions))
        .route("/v1/embeddings", generation(Endpoint::Embeddings))
        .route("/v1/responses", generation(Endpoint::Responses))
        .route("/v1/models", get(catalog::openai_models))
        // `/v1/models/{id}` is OpenAI's model retrieval, and — google-genai's default API
        // version being v1 — Gemini's `{model}:{action}` calls too.
        .route(
            "/v1/models/{*rest}",
            post(gemini_call).get(catalog::model_info),
        )
        // Anthropic dialect
        .route("/v1/messages", generation(Endpoint::AnthropicMessages))
        .route(
            "/v1/messages/count_tokens",
            post(catalog::anthropic_count_tokens),
        )
        // Gemini dialect (`/v1beta/models/{model}:{action}`: the action is parsed from the path)
        .route("/v1beta/models", get(catalog::gemini_models))
        .route(
            "/v1beta/models/{*rest}",
            post(gemini_call).get(catalog::gemini_model),
        )
        // Ollama dialect
        .route(
            "/",
            get(move |req: Request| async move {
                if has_console && prefers_html(req.headers()) {
                    return axum::response::Redirect::to("/ui/").into_response();
                }
                catalog::root().await
            }),
        )
        .route("/api/chat", generation(Endpoint::OllamaChat))
        .route("/api/generate", generation(Endpoint::OllamaGenerate))
        .route("/api/embed", generation(Endpoint::OllamaEmbed))
        .route("/api/embeddings", generation(Endpoint::OllamaEmbeddings))
        .route("/api/show", post(catalog::ollama_show))
        .route("/api/pull", post(crate::ollama_admin::pull))
        .route(
            "/api/delete",
            axum::routing::delete(crate::ollama_admin::delete),
        )
        .route("/api/create", post(catalog::ollama_unsupported))
        .route("/api/copy", post(catalog::ollama_unsupported))
        .route("/api/push", post(catalog::ollama_unsupported))
        .route("/api/tags", get(catalog::ollama_tags))
        .route("/api/ps", get(catalog::ollama_ps))
        .route("/api/version", get(catalog::ollama_version))
        // Operations
        .route("/metrics", get(crate::metrics::scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest_service("/admin/v1", admin);
    let routes = match console {
        Some(console) => routes.merge(console),
        None => routes,
    };
    let routes = routes.fallback(not_found).with_state(Arc::clone(&gw));
    // The layers wrap the whole router once, as one service, rather than each route through
    // `Router::layer` and `middleware::from_fn`: those box a future and clone the stack of
    // boxed services under them per layer and call (about 70 allocations per call for seven
    // layers); this costs two boxed futures. The outer router only hands every request to it.
    let inner = Inner {
        gw: Arc::clone(&gw),
        routes,
    };
    let outer = Outer {
        inner: crate::compress::layer(Arc::clone(&gw), inner),
        gw,
    };
    Router::new().fallback_service(outer)
}

/// The layers outside compression: request id, then CORS.
#[derive(Clone)]
struct Outer<S> {
    gw: Arc<Gateway>,
    inner: S,
}

impl<S, B> Service<Request> for Outer<S>
where
    S: Service<Request, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is asked of a clone of the inner service, per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let gw = Arc::clone(&self.gw);
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let head = req.method() == axum::http::Method::HEAD;
            let mut resp = request_id(&gw, req, |req| {
                crate::cors::layer(&gw, req, |req| async move {
                    match run(&mut inner, req).await {
                        Ok(resp) => resp.map(axum::body::Body::new),
                        Err(never) => match never {},
                    }
                })
            })
            .await;
            top_level(&mut resp, head);
            Ok(resp)
        })
    }
}

/// What axum's method router did to every answer when these layers ran inside it (each route
/// had them): a `Content-Length` for a body of known size, and no body for `HEAD`. Answers of
/// the routes already have both; this covers the ones the layers make or rewrite.
fn top_level(resp: &mut Response, head: bool) {
    if !resp.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(size) = http_body::Body::size_hint(resp.body()).exact() {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
    if head {
        *resp.body_mut() = axum::body::Body::empty();
    }
}

/// The layers inside compression: JSON errors, edge limits, client authentication, the key's
/// concurrency limit, then the route.
#[derive(Clone)]
struct Inner {
    gw: Arc<Gateway>,
    routes: Router,
}

impl Service<Request> for Inner {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let gw = Arc::clone(&self.gw);
        let mut routes = self.routes.clone();
        Box::pin(async move {
            let resp = json_errors(req, |req| {
                edge_limits(&gw, req, |req| {
                    client_auth(&gw, req, |req| {
                        crate::limits::key_limits(&gw, req, |req| async move {
                            match run(&mut routes, req).await {
                                Ok(resp) => resp,
                                Err(never) => match never {},
                            }
                        })
                    })
                })
            })
            .await;
            Ok(resp)
        })
    }
}

/// Calls `svc` once it is ready.
async fn run<S: Service<Request>>(svc: &mut S, req: Request) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// Whether the client is a browser: its `Accept` names `text/html` (Ollama clients and probes
/// send `*/*` or nothing, and keep getting the banner).
fn prefers_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// Paths any client may call without a key: liveness, readiness and metrics probes, and the
/// Ollama banner and version that tools check first. `/admin` has its own auth.
const OPEN_PATHS: [&str; 5] = ["/", "/healthz", "/readyz", "/metrics", "/api/version"];

/// Ollama model management: no virtual key; with `auth.required` the handler itself asks for
/// an administrator (`ollama_admin`).
const MANAGE_PATHS: [&str; 2] = ["/api/pull", "/api/delete"];

/// Per client IP and global limits. Probes (`/healthz`, `/readyz`, `/metrics`, …) and the
/// admin API are never limited: neither may be locked by a flood of data-plane calls nor, with
/// `limits.fail_open = false`, by an unreachable rate-limit backend (the admin sign-in has its
/// own limits).
async fn edge_limits<F, Fut>(gw: &Gateway, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) || path.starts_with("/admin/") || path.starts_with("/ui") {
        return next(req).await;
    }
    crate::limits::edge_limits(gw, req, next).await
}

/// With `auth.required`, a call must carry a virtual key that checks out; without it, a call
/// that presents an llmux key (`sk-llmux-…`) is still held to that key (its models, limits,
/// app and billing; 401 when it is wrong), and only calls with no llmux key are anonymous.
/// The identity travels in the request's extensions (the model restriction is checked once
/// the model is known).
async fn client_auth<F, Fut>(gw: &Gateway, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path)
        || MANAGE_PATHS.contains(&path)
        || path.starts_with("/admin/")
        || path.starts_with("/ui")
    {
        return next(req).await;
    }
    let required = gw.routes().config.auth.required;
    let dialect = dialect_of(&req);
    // Takes the request rather than capturing it: a borrow held across the key lookup's
    // await would make the middleware's future not `Send`.
    let refuse = |req: &Request, e: auth::AuthError| {
        gw.metrics.rejected("auth");
        // A key store that cannot be asked is not the key's fault: 503, which clients retry.
        let kind = match e {
            auth::AuthError::Unavailable(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Authentication,
        };
        let resp = call::error(dialect, kind, e.to_string());
        call::log_refused(req, &resp);
        resp
    };
    let token = auth::credential(req.headers(), req.uri().query()).map(str::to_string);
    let token = match token {
        Some(t) if required || auth::is_virtual_key(&t) => t,
        // Anonymous: no credential, or the provider key or placeholder an SDK insists on sending.
        _ if !required => return next(req).await,
        _ => return refuse(&req, auth::AuthError::Missing),
    };
    let Some(checker) = gw.authenticator().cloned() else {
        return refuse(
            &req,
            auth::AuthError::Unavailable("no key store is configured".into()),
        );
    };
    match checker.authenticate(&token).await {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next(req).await
        }
        Err(e) => refuse(&req, e),
    }
}

/// The dialect a request is written in, judged by its path (and Anthropic's version header).
pub fn dialect_of(req: &Request) -> Dialect {
    let path = req.uri().path();
    if path.starts_with("/api/") {
        Dialect::Ollama
    } else if path.starts_with("/v1beta/")
        || (path.starts_with("/v1/models/") && path.contains(':'))
    {
        Dialect::Gemini
    } else if path.starts_with("/v1/messages") || req.headers().contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// `POST /v1beta/models/{model}:{action}`.
async fn gemini_call(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let Some((model, action)) = rest.rsplit_once(':') else {
        return call::error(
            Dialect::Gemini,
            ErrorKind::NotFound,
            format!(
                "no route for POST /v1beta/models/{}: expected {{model}}:{{action}}",
                crate::accounting::cap(&rest, crate::accounting::MAX_CLIENT_STRING)
            ),
        );
    };
    let endpoint = match action {
        "generateContent" => Endpoint::GeminiGenerate,
        "streamGenerateContent" => Endpoint::GeminiStream,
        "embedContent" => Endpoint::GeminiEmbed,
        "batchEmbedContents" => Endpoint::GeminiBatchEmbed,
        other => {
            return call::error(
                Dialect::Gemini,
                ErrorKind::NotFound,
                format!(
                    "unsupported Gemini method '{}'",
                    crate::accounting::cap(other, crate::accounting::MAX_CLIENT_STRING)
                ),
            )
        }
    };
    let sse = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    let path = call::PathModel {
        model: Some(model.trim_start_matches("models/").to_string()),
        sse,
    };
    call::handle_with(gw, endpoint, req, path).await
}

/// Takes the client's `x-request-id` when it is sane, or makes one; echoes it on the response.
async fn request_id<F, Fut>(gw: &Gateway, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let id = req
        .headers()
        .get(crate::X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(crate::new_request_id);
    let value = HeaderValue::from_str(&id).ok();
    // The call's span: a child of the client's `traceparent`, or a new trace.
    let trace = crate::telemetry::enabled().then(|| {
        let incoming = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::telemetry::TraceContext::parse);
        crate::telemetry::CallTrace::new(incoming, req.uri().path())
    });
    if let Some(t) = &trace {
        req.extensions_mut().insert(t.clone());
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next(req).await;
    gw.metrics.response(resp.status().as_u16());
    if let Some(v) = value {
        resp.headers_mut().insert(crate::X_REQUEST_ID, v);
    }
    match trace {
        // The span ends with the response body, so a stream's span covers the whole stream.
        Some(t) => t.finish_with(resp, id),
        None => resp,
    }
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready when at least one upstream is active and not drained (or none are configured, so the
/// process itself is the check).
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let routes = gw.routes();
    let active = routes
        .upstreams
        .iter()
        .filter(|u| {
            let s = u.state();
            // An upstream not yet probed at start-up is not known to answer.
            s.pool == Pool::Active
                && !(s.awaiting_probe && s.last_check.is_none())
                && !routes.is_drained(&u.name)
        })
        .count();
    let ready = active > 0 || routes.upstreams.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready {
                "ready"
            } else if !*gw.discovered.borrow() {
                "starting: probing the upstreams"
            } else {
                "no active upstream"
            },
            "active_upstreams": active,
            "upstreams": routes.upstreams.len(),
        })),
    )
        .into_response()
}

/// Unknown paths answer in the dialect their prefix suggests.
async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    let dialect = dialect_of(&req);
    let mut resp = call::error(
        dialect,
        ErrorKind::NotFound,
        format!("no route for {} {path}", req.method()),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Error answers that llmux's own layers (axum's method routing, path and body extractors,
/// the admin API's body limit) write as plain text or nothing become JSON in the caller's
/// dialect, judged by the path. Upstream answers (they carry `x-llmux-attempts`) and JSON
/// errors are left as they are.
async fn json_errors<F, Fut>(req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let dialect = dialect_of(&req);
    // Kept for the message of an error; cloning a standard method and a URI allocates nothing.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = next(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.headers().contains_key(&crate::X_LLMUX_ATTEMPTS)
    {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let path = uri.path();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!("method {method} is not allowed on {path}"),
        _ if text.is_empty() => format!(
            "{} ({method} {path})",
            status.canonical_reason().unwrap_or("error")
        ),
        _ => text,
    };
    let kind = match status.as_u16() {
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Internal,
        _ => ErrorKind::InvalidRequest,
    };
    let mut body = if path.starts_with("/admin/") {
        // The admin API's own error shape, as its handlers answer.
        serde_json::to_vec(&json!({ "error": { "message": message } })).unwrap_or_default()
    } else {
        dialect.error_body(kind, &message)
    };
    if dialect == Dialect::Gemini && !path.starts_with("/admin/") {
        // Google's error carries the HTTP status in `code`.
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
            v["error"]["code"] = json!(status.as_u16());
            body = serde_json::to_vec(&v).unwrap_or(body);
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Method;

    fn app() -> Router {
        let mut config = llmux_config::Config::default();
        config.auth.required = true;
        config.server.cors.allowed_origins = vec!["https://app.example".into()];
        router(Gateway::new(config).unwrap(), Router::new(), None)
    }

    async fn send(method: Method, path: &str, headers: &[(&str, &str)]) -> (Response, Vec<u8>) {
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut app = app();
        let resp = Service::call(&mut app, req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (Response::from_parts(parts, Body::empty()), bytes.to_vec())
    }

    fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
        resp.headers().get(name).map(|v| v.to_str().unwrap())
    }

    /// The layers around the whole router answer as they did inside each route: request id
    /// outermost, CORS before authentication, JSON errors in the caller's dialect, and the
    /// method router's `Content-Length` and empty `HEAD` bodies.
    #[tokio::test]
    async fn the_layers_keep_their_order_and_effects() {
        // A preflight from an allowed origin is answered before authentication.
        let (resp, body) = send(
            Method::OPTIONS,
            "/v1/chat/completions",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert!(body.is_empty());
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert!(header(&resp, "x-request-id").is_some());

        // No key: a 401 in the caller's dialect, with CORS headers and the client's request id.
        let (resp, body) = send(
            Method::POST,
            "/v1/messages",
            &[("origin", "https://app.example"), ("x-request-id", "abc-1")],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&resp, "x-request-id"), Some("abc-1"));
        assert_eq!(header(&resp, "vary"), Some("origin"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
        assert_eq!(
            header(&resp, "content-length"),
            Some(body.len().to_string().as_str())
        );

        // axum's plain-text 405 on an open path becomes JSON, with its length.
        let (resp, body) = send(Method::POST, "/healthz", &[]).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["error"]["message"],
            "method POST is not allowed on /healthz"
        );
        assert_eq!(
            header(&resp, "content-length"),
            Some(body.len().to_string().as_str())
        );

        // HEAD: no body, whoever answered.
        let (resp, body) = send(Method::HEAD, "/healthz", &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(body.is_empty());
        let (resp, body) = send(Method::HEAD, "/api/tags", &[]).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(body.is_empty());
        assert!(header(&resp, "content-length").is_some_and(|n| n != "0"));
    }
}

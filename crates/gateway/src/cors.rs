//! CORS (`[server.cors]`): browsers on the allowed origins may call llmux. A preflight from an
//! allowed origin is answered here (204, before limits and authentication: browsers send no
//! credentials with it); one from any other origin gets a 403 in the caller's dialect that
//! names the setting, and no CORS header. Other calls run as usual; the answer carries
//! `Access-Control-Allow-Origin` (and the headers a page may read) only for an allowed origin.
//! Credentials (cookies) are never allowed cross-origin: clients send a bearer key.

use crate::server::dialect_of;
use crate::{call, Gateway};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use llmux_config::CorsConfig;
use llmux_wire::ErrorKind;
use std::future::Future;

const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers allowed when the preflight does not list any.
const DEFAULT_HEADERS: &str = "authorization, content-type, x-api-key, anthropic-version";
/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSED: &str = "x-request-id, x-llmux-upstream, x-llmux-cache, x-ratelimit-limit-requests, \
x-ratelimit-remaining-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, retry-after";

/// The CORS layer (`next` runs the layers inside it); does nothing while `server.cors` allows
/// no origin.
pub async fn layer<F, Fut>(gw: &Gateway, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let config = gw.config();
    let cors = &config.server.cors;
    if !cors.enabled() {
        return next(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return next(req).await;
    };
    let allowed = cors.allows(&origin);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        return match allowed {
            true => preflight_answer(req.headers(), cors, &origin),
            false => refused(&req, &origin),
        };
    }
    let mut resp = next(req).await;
    let headers = resp.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if allowed {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            allow_origin(cors, &origin),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
    }
    resp
}

/// `*` when every origin is allowed, else the origin itself.
fn allow_origin(cors: &CorsConfig, origin: &str) -> HeaderValue {
    match cors.any_origin {
        true => HeaderValue::from_static("*"),
        false => HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null")),
    }
}

fn preflight_answer(req: &HeaderMap, cors: &CorsConfig, origin: &str) -> Response {
    // The headers the page asks to send (SDKs add their own, e.g. `x-stainless-*`): allowed as
    // asked, since the key, not the header list, is what protects llmux.
    let asked = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_HEADERS));
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin(cors, origin),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age.as_secs()),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    resp
}

fn refused(req: &Request, origin: &str) -> Response {
    let shown = crate::accounting::cap(origin, crate::accounting::MAX_CLIENT_STRING);
    let mut resp = call::error(
        dialect_of(req),
        ErrorKind::PermissionDenied,
        format!("origin {shown:?} is not allowed to call llmux (server.cors.allowed_origins)"),
    );
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("origin"));
    resp
}

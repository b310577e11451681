//! The web console at `/ui/`: its files, compiled into the binary, and its session cookie.
//!
//! The console is static HTML, one CSS file and hand-written ES modules talking to the admin
//! API (`/admin/v1`) — there is no second write path. Signing in exchanges a username and
//! password for the same token `POST /admin/v1/login` issues, kept in an HttpOnly,
//! SameSite=Strict cookie that `session::authenticate` accepts (with an Origin check on
//! writes).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::session::{self, SESSION_COOKIE};
use crate::ControlPlane;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const FAVICON_SVG: &str = include_str!("../ui/favicon.svg");

/// Headers on every console response: no inline script or style, no framing (clickjacking),
/// no MIME sniffing, no leaking console URLs to other sites.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
];

/// The console's routes (absolute paths under `/ui`), for any router state `S`: the gateway
/// merges them beside its own.
pub fn router<S: Clone + Send + Sync + 'static>(cp: &Arc<ControlPlane>) -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route("/ui/session", get(whoami).post(sign_in).delete(sign_out))
        .route("/ui/setup-state", get(setup_state))
        .layer(middleware::from_fn(security_headers))
        .with_state(Arc::clone(cp))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Files change only with the binary; revalidation is cheap on localhost.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    for (name, value) in SECURITY_HEADERS {
        res.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    res
}

/// `GET /ui/session`: who the cookie belongs to; `{"signed_in": false}` (not a 401, which a
/// browser logs as an error on every first visit) when there is none or it no longer holds.
async fn whoami(State(cp): State<Arc<ControlPlane>>, headers: HeaderMap) -> Response {
    let Some(token) = session::session_cookie(&headers) else {
        return Json(json!({ "signed_in": false })).into_response();
    };
    match session::caller(&cp, Some(&format!("Bearer {token}"))).await {
        Ok(c) => Json(json!({ "signed_in": true, "username": c.actor, "role": c.role.as_str() }))
            .into_response(),
        Err(ApiError::Unauthorized(reason)) => {
            Json(json!({ "signed_in": false, "reason": reason })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /ui/session` {username, password}: the login route's token (the same handler, so its
/// sign-in limits apply), set as the cookie.
async fn sign_in(State(cp): State<Arc<ControlPlane>>, req: Request) -> Response {
    let headers = req.headers().clone();
    if let Err(e) = same_origin_only(&headers) {
        return e.into_response();
    }
    let answer = crate::login::login(State(Arc::clone(&cp)), req).await;
    if answer.status() != StatusCode::OK {
        // Wrong password, throttled (with its Retry-After), busy: as the API says it.
        return answer;
    }
    let login: Value = match axum::body::to_bytes(answer.into_body(), 64 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(v) => v,
        None => return ApiError::Internal("login answered without a token".into()).into_response(),
    };
    let Some(token) = login.get("token").and_then(Value::as_str) else {
        return ApiError::Internal("login answered without a token".into()).into_response();
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        crate::jwt::TOKEN_TTL_SECS,
        if over_tls(&headers) { "; Secure" } else { "" }
    );
    let mut res = Json(json!({
        "role": login.get("role"),
        "expires_at": login.get("expires_at"),
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `DELETE /ui/session`: signs out (the browser drops the cookie).
async fn sign_out(headers: HeaderMap) -> Response {
    if let Err(e) = same_origin_only(&headers) {
        return e.into_response();
    }
    let cookie = format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if over_tls(&headers) { "; Secure" } else { "" }
    );
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /ui/setup-state`: whether any user exists, so that a first run explains how to create
/// the first admin instead of showing a sign-in nobody can pass.
async fn setup_state(State(cp): State<Arc<ControlPlane>>) -> Response {
    match cp.store.list_users().await {
        Ok(users) => Json(json!({ "users": !users.is_empty() })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// llmux itself speaks plain HTTP; behind a TLS-terminating proxy the proxy says so.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Another site may not sign a browser in or out (login CSRF).
fn same_origin_only(headers: &HeaderMap) -> Result<(), ApiError> {
    if session::same_origin(headers) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "cross-origin request refused: send an Origin matching the Host".into(),
        ))
    }
}

//! Who is calling the admin API: the bootstrap token (role admin) or a login JWT (the user's
//! role), checked for every route except the named open ones; viewers may only read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use llmux_store::Role;

use crate::error::ApiError;
use crate::ControlPlane;

/// Admin paths (relative to `/admin/v1`) that need no credential: logging in, and the API
/// description (which holds no data).
pub const OPEN_PATHS: [&str; 2] = ["/login", "/openapi.json"];

/// The authenticated caller, in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Username, or `admin-token` for the bootstrap token.
    pub actor: String,
    /// What the caller may do.
    pub role: Role,
}

/// The actor name recorded for the bootstrap token.
pub const TOKEN_ACTOR: &str = "admin-token";

/// Authenticates every admin request (open paths excepted) and refuses writes by viewers.
pub async fn authenticate(
    State(cp): State<Arc<ControlPlane>>,
    mut req: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let mut given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // The web console's session cookie stands in for the header (see `cookie_credential`).
    if given.is_none() {
        match cookie_credential(req.headers(), read_only) {
            Ok(bearer) => given = bearer,
            Err(e) => return e.into_response(),
        }
    }
    let caller = match caller(&cp, given.as_deref()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if caller.role == Role::Viewer && !read_only {
        return ApiError::Forbidden(format!(
            "user {:?} has the viewer role: read-only",
            caller.actor
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Whether a token was issued to this very user (not a namesake created later) under its
/// current session epoch.
fn session_current(claims: &crate::jwt::Claims, user: &llmux_store::User) -> bool {
    claims.uid == user.id && claims.ver == user.session_epoch
}

/// Who `authorization` (an `Authorization` header value) belongs to.
pub(crate) async fn caller(
    cp: &ControlPlane,
    authorization: Option<&str>,
) -> Result<Caller, ApiError> {
    let given = authorization
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing credentials: send Authorization: Bearer <admin token or login token>"
                    .into(),
            )
        })?;
    if let Some(expected) = cp.gateway.config().admin.token.as_ref() {
        if llmux_gateway::auth::constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
            return Ok(Caller {
                actor: TOKEN_ACTOR.into(),
                role: Role::Admin,
            });
        }
    }
    let now = llmux_store::now_ms() / 1000;
    let claims = crate::jwt::verify(&cp.jwt_secret, given, now)
        .map_err(|e| ApiError::Unauthorized(format!("invalid admin credentials: {e}")))?;
    // The user is read again on every call (one indexed row, no cache to go stale): a deleted
    // user, a new password or a changed role ends the session at once, on every instance.
    let user = cp
        .store
        .get_user_by_username(&claims.sub)
        .await
        .map_err(|e| match e {
            llmux_store::StoreError::NotFound => {
                ApiError::Unauthorized("invalid admin credentials: user no longer exists".into())
            }
            other => other.into(),
        })?;
    if !session_current(&claims, &user) {
        return Err(ApiError::Unauthorized(
            "invalid admin credentials: the session ended (the user's password or role changed, \
             or the user was replaced): log in again"
                .into(),
        ));
    }
    Ok(Caller {
        actor: user.username,
        role: user.role,
    })
}

/// The data plane's administrator check (Ollama model management: `/api/pull`,
/// `/api/delete`), by the admin API's own rule: the admin token, or the login token of a user
/// with the admin role. Holds the control plane weakly (the control plane holds the gateway).
pub struct AdminGate(pub std::sync::Weak<ControlPlane>);

impl llmux_gateway::auth::AdminCheck for AdminGate {
    fn check<'a>(&'a self, token: &'a str) -> llmux_gateway::auth::AdminFuture<'a> {
        use llmux_gateway::auth::AdminRefusal;
        Box::pin(async move {
            let cp = self.0.upgrade().ok_or_else(|| {
                AdminRefusal::Unavailable("the admin API is shutting down".into())
            })?;
            match caller(&cp, Some(&format!("Bearer {token}"))).await {
                Ok(c) if c.role == Role::Admin => Ok(c.actor),
                Ok(c) => Err(AdminRefusal::Forbidden(format!(
                    "user {:?} has the viewer role: model management needs an administrator",
                    c.actor
                ))),
                Err(ApiError::Unauthorized(m)) => Err(AdminRefusal::Unauthorized(m)),
                Err(other) => Err(AdminRefusal::Unavailable(other.to_string())),
            }
        })
    }
}

/// The web console's session cookie (set by `POST /ui/session`, HttpOnly, SameSite=Strict).
pub const SESSION_COOKIE: &str = "llmux_session";

/// The value of the console's session cookie in `headers`, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The console's cookie as an `Authorization` value. A browser sends cookies with any request,
/// so a state-changing one (`read_only` false) must also prove it comes from a page of this
/// origin: its `Origin` (or, lacking that, `Referer`) must name the request's `Host`. With
/// SameSite=Strict that is the CSRF defence.
pub fn cookie_credential(headers: &HeaderMap, read_only: bool) -> Result<Option<String>, ApiError> {
    let Some(token) = session_cookie(headers) else {
        return Ok(None);
    };
    if !read_only && !same_origin(headers) {
        return Err(ApiError::Forbidden(
            "cross-origin request refused: a console write must carry an Origin matching the Host"
                .into(),
        ));
    }
    Ok(Some(format!("Bearer {token}")))
}

/// Whether the request's `Origin` (else `Referer`) has the same host and port as its `Host`.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    let Some((_, rest)) = source.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[(header::COOKIE, "a=1; llmux_session=tok.en.sig; b=2")]);
        assert_eq!(session_cookie(&h), Some("tok.en.sig"));
        assert_eq!(
            session_cookie(&headers(&[(header::COOKIE, "llmux_sessionx=1")])),
            None
        );
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn a_cookie_write_needs_a_matching_origin() {
        let cookie = (header::COOKIE, "llmux_session=t");
        let host = (header::HOST, "127.0.0.1:4000");
        let same = headers(&[
            cookie.clone(),
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:4000"),
        ]);
        assert_eq!(
            cookie_credential(&same, false).unwrap().as_deref(),
            Some("Bearer t")
        );
        let referer = headers(&[
            cookie.clone(),
            host.clone(),
            (header::REFERER, "http://127.0.0.1:4000/ui/#apps"),
        ]);
        assert!(cookie_credential(&referer, false).is_ok());
        let foreign = headers(&[
            cookie.clone(),
            host.clone(),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(matches!(
            cookie_credential(&foreign, false),
            Err(ApiError::Forbidden(_))
        ));
        let other_port = headers(&[
            cookie.clone(),
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:4001"),
        ]);
        assert!(cookie_credential(&other_port, false).is_err());
        let none = headers(&[cookie.clone(), host.clone()]);
        assert!(cookie_credential(&none, false).is_err());
        // Reads need no origin: they change nothing.
        assert!(cookie_credential(&none, true).is_ok());
        assert_eq!(cookie_credential(&headers(&[host]), false).unwrap(), None);
    }

    #[test]
    fn a_token_is_bound_to_the_user_id_and_its_epoch() {
        let user = llmux_store::User {
            id: "usr_a".into(),
            username: "ann".into(),
            role: Role::Admin,
            created_at: 0,
            session_epoch: 2,
        };
        let claims = |uid: &str, ver| crate::jwt::Claims {
            sub: "ann".into(),
            role: "admin".into(),
            iat: 0,
            exp: 1,
            uid: uid.into(),
            ver,
        };
        assert!(session_current(&claims("usr_a", 2), &user));
        assert!(
            !session_current(&claims("usr_a", 1), &user),
            "password changed"
        );
        assert!(!session_current(&claims("usr_b", 2), &user), "re-created");
        assert!(!session_current(&claims("", 0), &user), "token from before");
    }
}

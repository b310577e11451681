//! Who is calling the admin API: the bootstrap token (role admin) or a login JWT (the user's
//! role), checked for every route except the named open ones; viewers may only read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use store::Role;

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
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let caller = match caller(&cp, given.as_deref()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
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

async fn caller(cp: &ControlPlane, authorization: Option<&str>) -> Result<Caller, ApiError> {
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
        if gateway::admin::constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
            return Ok(Caller {
                actor: TOKEN_ACTOR.into(),
                role: Role::Admin,
            });
        }
    }
    let now = store::now_ms() / 1000;
    let claims = crate::jwt::verify(&cp.jwt_secret, given, now)
        .map_err(|e| ApiError::Unauthorized(format!("invalid admin credentials: {e}")))?;
    // The role is read again so that a deleted user or a changed role takes effect at once.
    let user = cp
        .store
        .get_user_by_username(&claims.sub)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound => {
                ApiError::Unauthorized("invalid admin credentials: user no longer exists".into())
            }
            other => other.into(),
        })?;
    Ok(Caller {
        actor: user.username,
        role: user.role,
    })
}

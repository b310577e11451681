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

/// Whether a token was issued to this very user (not a namesake created later) under its
/// current session epoch.
fn session_current(claims: &crate::jwt::Claims, user: &store::User) -> bool {
    claims.uid == user.id && claims.ver == user.session_epoch
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
    // The user is read again on every call (one indexed row, no cache to go stale): a deleted
    // user, a new password or a changed role ends the session at once, on every instance.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_to_the_user_id_and_its_epoch() {
        let user = store::User {
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

//! `/users`: the admin API's own users and their roles.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use llmux_config::Secret;
use llmux_store::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_name, created, not_found};
use crate::change::{audited, audited_delete};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::time::rfc3339_ms;
use crate::{parse_body, ControlPlane};
use llmux_store::ChangeKind;

/// `POST /users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    role: String,
}

/// `PATCH /users/{username}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

fn user_view(u: &llmux_store::User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "role": u.role.as_str(),
        "created_at": rfc3339_ms(u.created_at),
    })
}

fn parse_role(role: &str) -> ApiResult<Role> {
    role.parse()
        .map_err(|_| ApiError::field("role", "must be \"admin\" or \"viewer\""))
}

fn check_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < 8 {
        return Err(ApiError::field("password", "must be at least 8 characters"));
    }
    Ok(())
}

async fn find_user(cp: &ControlPlane, username: &str) -> ApiResult<llmux_store::User> {
    cp.store
        .get_user_by_username(username)
        .await
        .map_err(not_found("user", username))
}

/// `GET /users`.
pub async fn list_users(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let list = cp.store.list_users().await?;
    Ok(Json(Value::Array(list.iter().map(user_view).collect())))
}

/// `POST /users`.
pub async fn create_user(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: CreateUser = parse_body(&body)?;
    check_name("username", &req.username)?;
    check_password(&req.password)?;
    let role = parse_role(&req.role)?;
    let user = cp
        .store
        .create_user(&req.username, &Secret::new(req.password), role)
        .await?;
    cp.publish(ChangeKind::User, Some(&user.id)).await;
    let after = user_view(&user);
    let target = ("user", user.username.as_str());
    Ok(created(
        audited(&cp, &caller, "user.create", target, None, after).await,
    ))
}

/// `PATCH /users/{username}`: new password and/or role.
pub async fn patch_user(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchUser = parse_body(&body)?;
    let current = find_user(&cp, &username).await?;
    let role = req.role.as_deref().map(parse_role).transpose()?;
    if let Some(password) = &req.password {
        check_password(password)?;
        cp.store
            .set_user_password(&current.id, &Secret::new(password.clone()))
            .await?;
    }
    let updated = match role {
        Some(role) => cp.store.set_user_role(&current.id, role).await?,
        None => current.clone(),
    };
    cp.publish(ChangeKind::User, Some(&current.id)).await;
    // The audit log notes that the password changed; the answer does not.
    let mut after = user_view(&updated);
    if req.password.is_some() {
        after["password"] = json!("***");
    }
    let before = Some(user_view(&current));
    audited(
        &cp,
        &caller,
        "user.update",
        ("user", &username),
        before,
        after,
    )
    .await;
    Ok(Json(user_view(&updated)))
}

/// `DELETE /users/{username}`.
pub async fn delete_user(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    let current = find_user(&cp, &username).await?;
    cp.store.delete_user(&current.id).await?;
    cp.publish(ChangeKind::User, Some(&current.id)).await;
    let before = user_view(&current);
    Ok(audited_delete(&cp, &caller, "user.delete", ("user", &username), before).await)
}

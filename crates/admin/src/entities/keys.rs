//! `/keys`: virtual keys (the full key is shown once, at creation; the data plane's key cache
//! is told of every change).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use llmux_store::{KeyLimits, NewVirtualKey, VirtualKey, VirtualKeyUpdate};
use serde::Deserialize;
use serde_json::{json, Value};

use super::apps::find_app;
use super::{check_name, created, not_found};
use crate::change::{audited, audited_delete};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::time::{opt_rfc3339, parse_rfc3339, rfc3339_ms};
use crate::{parse_body, ControlPlane};

/// `POST /keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    app: String,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    limits: Option<KeyLimits>,
    #[serde(default)]
    expires_at: Option<Value>,
}

/// A key's limits are at least 1: a limit of 0 refused every call with "try again when one
/// finishes", which never comes. No limit is the field left out; a key to block is revoked.
fn check_limits(limits: Option<&KeyLimits>) -> ApiResult<()> {
    let Some(l) = limits else {
        return Ok(());
    };
    let zero = |field: String| {
        ApiError::field(
            &field,
            "must be at least 1 (leave it out for no limit; revoke the key to block it)",
        )
    };
    for (field, v) in [
        ("limits.rpm", l.rpm.map(u64::from)),
        ("limits.tpm", l.tpm),
        ("limits.concurrency", l.concurrency.map(u64::from)),
    ] {
        if v == Some(0) {
            return Err(zero(field.to_string()));
        }
    }
    for (model, m) in &l.models {
        if m.rpm == Some(0) {
            return Err(zero(format!("limits.models.{model}.rpm")));
        }
        if m.tpm == Some(0) {
            return Err(zero(format!("limits.models.{model}.tpm")));
        }
    }
    Ok(())
}

/// `PATCH /keys/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    limits: Option<KeyLimits>,
    #[serde(default)]
    expires_at: Option<Value>,
}

/// `GET /keys?app=…`.
#[derive(Deserialize)]
pub struct KeyQuery {
    app: Option<String>,
}

/// `expires_at`: RFC 3339, or unix seconds.
fn parse_expiry(v: Option<&Value>) -> ApiResult<Option<i64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|s| *s > 0)
            .map(|s| Some(s.saturating_mul(1000)))
            .ok_or_else(|| ApiError::field("expires_at", "must be unix seconds or RFC 3339")),
        Some(Value::String(s)) => parse_rfc3339(s).map(Some).ok_or_else(|| {
            ApiError::field(
                "expires_at",
                "must be RFC 3339 (e.g. 2030-01-01T00:00:00Z) or unix seconds",
            )
        }),
        Some(_) => Err(ApiError::field(
            "expires_at",
            "must be unix seconds or RFC 3339",
        )),
    }
}

fn check_models(models: Option<&Vec<String>>) -> ApiResult<()> {
    if let Some(i) = models.and_then(|m| m.iter().position(|x| x.trim().is_empty())) {
        return Err(ApiError::field(
            &format!("models[{i}]"),
            "model name must not be empty",
        ));
    }
    Ok(())
}

pub(super) fn key_view(k: &VirtualKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "app": k.app_id,
        "prefix": format!("{}{}", llmux_store::VIRTUAL_KEY_PREFIX, k.public_id),
        "models": k.models,
        "limits": k.limits,
        "expires_at": opt_rfc3339(k.expires_at),
        "revoked_at": opt_rfc3339(k.revoked_at),
        "status": k.status_at(llmux_store::now_ms()),
        "created_at": rfc3339_ms(k.created_at),
        "last_used_at": opt_rfc3339(k.last_used_at),
    })
}

async fn find_key(cp: &ControlPlane, id: &str) -> ApiResult<VirtualKey> {
    cp.store
        .get_virtual_key(id)
        .await
        .map_err(not_found("key", id))
}

/// `GET /keys`.
pub async fn list_keys(
    State(cp): State<Arc<ControlPlane>>,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Json<Value>> {
    let app = match &q.app {
        Some(a) => Some(find_app(&cp, a).await?.id),
        None => None,
    };
    let list = cp.store.list_virtual_keys(app.as_deref()).await?;
    Ok(Json(Value::Array(list.iter().map(key_view).collect())))
}

/// `GET /keys/{id}`.
pub async fn get_key(
    State(cp): State<Arc<ControlPlane>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(key_view(&find_key(&cp, &id).await?)))
}

/// `POST /keys`: the response is the only time the full key is shown.
pub async fn create_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: CreateKey = parse_body(&body)?;
    check_name("name", &req.name)?;
    check_models(req.models.as_ref())?;
    check_limits(req.limits.as_ref())?;
    let expires_at = parse_expiry(req.expires_at.as_ref())?;
    let app = match find_app(&cp, &req.app).await {
        Ok(a) => a,
        Err(ApiError::NotFound(_)) => {
            return Err(ApiError::field(
                "app",
                format!("no app {:?} (create it with POST /apps)", req.app),
            ))
        }
        Err(e) => return Err(e),
    };
    let (key, full) = cp
        .store
        .create_virtual_key(&NewVirtualKey {
            app_id: app.id,
            name: req.name,
            models: req.models,
            limits: req.limits.unwrap_or_default(),
            expires_at,
        })
        .await?;
    // A client may have tried this key before it existed: forget negative answers.
    cp.key_changed(Some(&key.id)).await;
    let view = key_view(&key);
    let mut out = audited(
        &cp,
        &caller,
        "key.create",
        ("virtual_key", &key.id),
        None,
        view,
    )
    .await;
    out["key"] = json!(full);
    Ok(created(out))
}

/// `PATCH /keys/{id}`.
pub async fn patch_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchKey = parse_body(&body)?;
    let current = find_key(&cp, &id).await?;
    if let Some(name) = &req.name {
        check_name("name", name)?;
    }
    check_models(req.models.as_ref())?;
    check_limits(req.limits.as_ref())?;
    let expires_at = match &req.expires_at {
        Some(v) => parse_expiry(Some(v))?,
        None => current.expires_at,
    };
    let update = VirtualKeyUpdate {
        name: req.name.unwrap_or_else(|| current.name.clone()),
        models: req.models.or_else(|| current.models.clone()),
        limits: req.limits.unwrap_or_else(|| current.limits.clone()),
        expires_at,
    };
    let updated = cp.store.update_virtual_key(&id, &update).await?;
    cp.key_changed(Some(&id)).await;
    let (before, after) = (Some(key_view(&current)), key_view(&updated));
    Ok(Json(
        audited(
            &cp,
            &caller,
            "key.update",
            ("virtual_key", &id),
            before,
            after,
        )
        .await,
    ))
}

/// `POST /keys/{id}/revoke`.
pub async fn revoke_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let current = find_key(&cp, &id).await?;
    let updated = cp.store.revoke_virtual_key(&id).await?;
    cp.key_changed(Some(&id)).await;
    let (before, after) = (Some(key_view(&current)), key_view(&updated));
    Ok(Json(
        audited(
            &cp,
            &caller,
            "key.revoke",
            ("virtual_key", &id),
            before,
            after,
        )
        .await,
    ))
}

/// `DELETE /keys/{id}`.
pub async fn delete_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = find_key(&cp, &id).await?;
    cp.store.delete_virtual_key(&id).await?;
    cp.key_changed(Some(&id)).await;
    let before = key_view(&current);
    Ok(audited_delete(&cp, &caller, "key.delete", ("virtual_key", &id), before).await)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_limits_of_zero_are_refused() {
        let limits = |v: serde_json::Value| serde_json::from_value::<KeyLimits>(v).unwrap();
        assert!(check_limits(None).is_ok());
        assert!(check_limits(Some(&limits(json!({"rpm": 1, "tpm": 5})))).is_ok());
        for (v, field) in [
            (json!({"rpm": 0}), "limits.rpm"),
            (json!({"concurrency": 0}), "limits.concurrency"),
            (
                json!({"models": {"gpt-4o": {"tpm": 0}}}),
                "limits.models.gpt-4o.tpm",
            ),
        ] {
            let err = check_limits(Some(&limits(v))).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field}: ")), "{err}");
        }
    }
}

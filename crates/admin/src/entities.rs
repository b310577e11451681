//! `/models`, `/aliases`, `/apps`, `/keys` (virtual keys), `/users` and `/login`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmux_config::Secret;
use llmux_store::{
    AppPatch, KeyLimits, ModelOrigin, NewApp, NewModel, NewVirtualKey, Role, Source, VirtualKey,
    VirtualKeyUpdate,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::time::{opt_rfc3339, parse_rfc3339, rfc3339_ms};
use crate::{parse_body, ControlPlane};

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn not_found(what: &str, id: &str) -> impl FnOnce(llmux_store::StoreError) -> ApiError {
    let (what, id) = (what.to_owned(), id.to_owned());
    move |e| match e {
        llmux_store::StoreError::NotFound => ApiError::NotFound(format!("no {what} {id:?}")),
        other => other.into(),
    }
}

fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::field(field, "must be 1 to 200 characters"));
    }
    // PostgreSQL cannot store a NUL byte (a 500 there), and a model name with a control
    // character is refused on the data plane anyway.
    if name.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- models

/// `POST /models`: declare a model, or switch one off (on one API upstream, or everywhere).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    name: String,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `PATCH /models/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchModel {
    #[serde(default)]
    enabled: Option<bool>,
}

async fn upstream_names(cp: &ControlPlane) -> ApiResult<HashMap<String, String>> {
    Ok(cp
        .store
        .list_upstreams()
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect())
}

fn model_view(m: &llmux_store::Model, names: &HashMap<String, String>) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "upstream": m.upstream_id.as_ref().and_then(|id| names.get(id)),
        "enabled": m.enabled,
        "origin": m.origin.as_str(),
        "created_at": rfc3339_ms(m.created_at),
    })
}

/// `GET /models`: the stored models (declared, or switched off), then every model an upstream
/// serves right now that has no stored row (`origin: discovered`, `id: null`).
pub async fn list_models(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let names = upstream_names(&cp).await?;
    let stored = cp.store.list_models(None).await?;
    let mut out: Vec<Value> = stored.iter().map(|m| model_view(m, &names)).collect();
    let routes = cp.gateway.routes();
    for up in &routes.upstreams {
        for model in &up.state().model_list {
            let known = stored.iter().any(|m| {
                m.name == *model
                    && m.upstream_id
                        .as_ref()
                        .is_none_or(|id| names.get(id) == Some(&up.name))
            });
            if !known {
                out.push(json!({
                    "id": null,
                    "name": model,
                    "upstream": up.name,
                    "enabled": true,
                    "origin": ModelOrigin::Discovered.as_str(),
                }));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /models`.
pub async fn create_model(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: CreateModel = parse_body(&body)?;
    check_name("name", &req.name)?;
    let upstream_id = match &req.upstream {
        None => None,
        Some(name) => match cp.store.get_upstream_by_name(name).await {
            Ok(u) => Some(u.id),
            Err(llmux_store::StoreError::NotFound) => {
                let hint = if cp.file_upstreams().await.contains(name) {
                    " (models can be tied only to upstreams managed through the API; leave \
                     `upstream` out to switch the model on or off everywhere)"
                } else {
                    ""
                };
                return Err(ApiError::field(
                    "upstream",
                    format!("no API upstream named {name:?}{hint}"),
                ));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let fs = cp.lock().await;
    let model = cp
        .store
        .create_model(&NewModel {
            name: req.name,
            upstream_id,
            enabled: req.enabled.unwrap_or(true),
            origin: ModelOrigin::Declared,
        })
        .await?;
    let note = format!("model {:?} added", model.name);
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    let after = model_view(&model, &upstream_names(&cp).await?);
    cp.audit(
        &caller.actor,
        "model.create",
        "model",
        Some(&model.id),
        None,
        Some(after.clone()),
    )
    .await;
    Ok(created(after))
}

/// `PATCH /models/{id}`: switch a model on or off.
pub async fn patch_model(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchModel = parse_body(&body)?;
    let current = cp
        .store
        .get_model(&id)
        .await
        .map_err(not_found("model", &id))?;
    let names = upstream_names(&cp).await?;
    let fs = cp.lock().await;
    let updated = cp
        .store
        .update_model(
            &id,
            &NewModel {
                name: current.name.clone(),
                upstream_id: current.upstream_id.clone(),
                enabled: req.enabled.unwrap_or(current.enabled),
                origin: current.origin,
            },
        )
        .await?;
    let note = format!("model {:?} updated", updated.name);
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    let after = model_view(&updated, &names);
    cp.audit(
        &caller.actor,
        "model.update",
        "model",
        Some(&id),
        Some(model_view(&current, &names)),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `DELETE /models/{id}`.
pub async fn delete_model(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = cp
        .store
        .get_model(&id)
        .await
        .map_err(not_found("model", &id))?;
    let names = upstream_names(&cp).await?;
    let fs = cp.lock().await;
    cp.store.delete_model(&id).await?;
    let note = format!("model {:?} removed", current.name);
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    cp.audit(
        &caller.actor,
        "model.delete",
        "model",
        Some(&id),
        Some(model_view(&current, &names)),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- aliases

/// `POST /aliases`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAlias {
    name: String,
    targets: Vec<String>,
}

/// `PATCH /aliases/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchAlias {
    targets: Vec<String>,
}

fn alias_view(a: &llmux_store::Alias) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "targets": a.targets,
        "created_at": rfc3339_ms(a.created_at),
        "updated_at": rfc3339_ms(a.updated_at),
    })
}

fn check_targets(targets: &[String]) -> ApiResult<()> {
    if targets.is_empty() {
        return Err(ApiError::field("targets", "must list at least one model"));
    }
    if let Some(i) = targets.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::field(
            &format!("targets[{i}]"),
            "model name must not be empty",
        ));
    }
    for (i, t) in targets.iter().enumerate() {
        check_name(&format!("targets[{i}]"), t)?;
    }
    Ok(())
}

/// `GET /aliases`.
pub async fn list_aliases(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let list = cp.store.list_aliases().await?;
    Ok(Json(Value::Array(list.iter().map(alias_view).collect())))
}

/// `POST /aliases`.
pub async fn create_alias(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: CreateAlias = parse_body(&body)?;
    check_name("name", &req.name)?;
    check_targets(&req.targets)?;
    let fs = cp.lock().await;
    let alias = cp.store.create_alias(&req.name, &req.targets).await?;
    let note = format!("alias {:?} created", alias.name);
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    let after = alias_view(&alias);
    cp.audit(
        &caller.actor,
        "alias.create",
        "alias",
        Some(&alias.name),
        None,
        Some(after.clone()),
    )
    .await;
    Ok(created(after))
}

/// `PATCH /aliases/{name}`.
pub async fn patch_alias(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchAlias = parse_body(&body)?;
    check_targets(&req.targets)?;
    let current = cp
        .store
        .get_alias_by_name(&name)
        .await
        .map_err(not_found("alias", &name))?;
    let fs = cp.lock().await;
    let alias = cp
        .store
        .update_alias(&current.id, &name, &req.targets)
        .await?;
    let note = format!("alias {name:?} updated");
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    let after = alias_view(&alias);
    cp.audit(
        &caller.actor,
        "alias.update",
        "alias",
        Some(&name),
        Some(alias_view(&current)),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `DELETE /aliases/{name}`.
pub async fn delete_alias(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let current = cp
        .store
        .get_alias_by_name(&name)
        .await
        .map_err(not_found("alias", &name))?;
    let fs = cp.lock().await;
    cp.store.delete_alias(&current.id).await?;
    let note = format!("alias {name:?} deleted");
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    cp.audit(
        &caller.actor,
        "alias.delete",
        "alias",
        Some(&name),
        Some(alias_view(&current)),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- apps

/// `POST /apps` and `PATCH /apps/{app}`: on a patch, absent fields keep their value and
/// `null` clears one (no budget; credits not metered). Outer `None`: absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    credits: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    daily_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    monthly_budget: Option<Option<f64>>,
}

/// A field that is present, as `null` or a number (absent ones get the `default`: `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// `POST /apps/{app}/credits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCredits {
    add: f64,
}

fn app_view(a: &llmux_store::App) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "credits": a.credits,
        "daily_budget": a.daily_budget,
        "monthly_budget": a.monthly_budget,
        "created_at": rfc3339_ms(a.created_at),
    })
}

/// The app with this id or name.
async fn find_app(cp: &ControlPlane, id_or_name: &str) -> ApiResult<llmux_store::App> {
    match cp.store.get_app(id_or_name).await {
        Ok(a) => Ok(a),
        Err(llmux_store::StoreError::NotFound) => cp
            .store
            .get_app_by_name(id_or_name)
            .await
            .map_err(not_found("app", id_or_name)),
        Err(e) => Err(e.into()),
    }
}

/// Largest balance, budget or top-up (USD) the API takes. Beyond real money, and it keeps
/// `credits + add` finite: an infinite balance reads back as JSON `null`, i.e. "not metered".
const MAX_MONEY: f64 = 1e12;

fn check_money(field: &str, v: Option<Option<f64>>) -> ApiResult<()> {
    match v.flatten() {
        Some(x) if !x.is_finite() || !(0.0..=MAX_MONEY).contains(&x) => Err(ApiError::field(
            field,
            "must be a number between 0 and 1000000000000",
        )),
        _ => Ok(()),
    }
}

/// A top-up: not zero, and within [`MAX_MONEY`] either way (negative takes credits back).
fn check_top_up(add: f64) -> ApiResult<()> {
    if !add.is_finite() || add == 0.0 || add.abs() > MAX_MONEY {
        return Err(ApiError::field(
            "add",
            "must be a number other than 0, at most 1000000000000 either way (negative takes credits back)",
        ));
    }
    Ok(())
}

/// `GET /apps`.
pub async fn list_apps(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let list = cp.store.list_apps().await?;
    Ok(Json(Value::Array(list.iter().map(app_view).collect())))
}

/// `GET /apps/{app}`.
pub async fn get_app(
    State(cp): State<Arc<ControlPlane>>,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(app_view(&find_app(&cp, &app).await?)))
}

/// `POST /apps`.
pub async fn create_app(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AppBody = parse_body(&body)?;
    let name = req
        .name
        .ok_or_else(|| ApiError::field("name", "required"))?;
    check_name("name", &name)?;
    check_money("credits", req.credits)?;
    check_money("daily_budget", req.daily_budget)?;
    check_money("monthly_budget", req.monthly_budget)?;
    let app = cp
        .store
        .create_app(&NewApp {
            name,
            credits: req.credits.flatten(),
            daily_budget: req.daily_budget.flatten(),
            monthly_budget: req.monthly_budget.flatten(),
        })
        .await?;
    let after = app_view(&app);
    cp.audit(
        &caller.actor,
        "app.create",
        "app",
        Some(&app.id),
        None,
        Some(after.clone()),
    )
    .await;
    Ok(created(after))
}

/// `PATCH /apps/{app}`.
pub async fn patch_app(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: AppBody = parse_body(&body)?;
    let current = find_app(&cp, &app).await?;
    if let Some(name) = &req.name {
        check_name("name", name)?;
    }
    check_money("credits", req.credits)?;
    check_money("daily_budget", req.daily_budget)?;
    check_money("monthly_budget", req.monthly_budget)?;
    // Only the fields sent, in one statement: a charge committed since `current` was read
    // must not be overwritten with the balance read then.
    let updated = cp
        .store
        .patch_app(
            &current.id,
            &AppPatch {
                name: req.name,
                credits: req.credits,
                daily_budget: req.daily_budget,
                monthly_budget: req.monthly_budget,
            },
        )
        .await?;
    // Credits or budgets may have changed: the data plane re-reads them at the app's next call.
    cp.ledger.refresh(&current.id);
    let after = app_view(&updated);
    cp.audit(
        &caller.actor,
        "app.update",
        "app",
        Some(&current.id),
        Some(app_view(&current)),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `POST /apps/{app}/credits {"add"}`: an atomic top-up (`credits = credits + add`), so it
/// adds to whatever the calls meanwhile left; an app that was not metered starts from `add`.
pub async fn add_credits(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: AddCredits = parse_body(&body)?;
    check_top_up(req.add)?;
    let current = find_app(&cp, &app).await?;
    let updated = cp.store.top_up_app(&current.id, req.add).await?;
    cp.ledger.refresh(&current.id);
    let after = app_view(&updated);
    cp.audit(
        &caller.actor,
        "app.credits",
        "app",
        Some(&current.id),
        Some(app_view(&current)),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `DELETE /apps/{app}`: also deletes its virtual keys.
pub async fn delete_app(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let current = find_app(&cp, &app).await?;
    cp.store.delete_app(&current.id).await?;
    cp.keycache.clear();
    cp.audit(
        &caller.actor,
        "app.delete",
        "app",
        Some(&current.id),
        Some(app_view(&current)),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- virtual keys

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

fn key_view(k: &VirtualKey) -> Value {
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
    let key = cp
        .store
        .get_virtual_key(&id)
        .await
        .map_err(not_found("key", &id))?;
    Ok(Json(key_view(&key)))
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
    cp.keycache.invalidate(&key.id);
    let view = key_view(&key);
    cp.audit(
        &caller.actor,
        "key.create",
        "virtual_key",
        Some(&key.id),
        None,
        Some(view.clone()),
    )
    .await;
    let mut out = view;
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
    let current = cp
        .store
        .get_virtual_key(&id)
        .await
        .map_err(not_found("key", &id))?;
    if let Some(name) = &req.name {
        check_name("name", name)?;
    }
    check_models(req.models.as_ref())?;
    check_limits(req.limits.as_ref())?;
    let expires_at = match &req.expires_at {
        Some(v) => parse_expiry(Some(v))?,
        None => current.expires_at,
    };
    let updated = cp
        .store
        .update_virtual_key(
            &id,
            &VirtualKeyUpdate {
                name: req.name.unwrap_or_else(|| current.name.clone()),
                models: req.models.or_else(|| current.models.clone()),
                limits: req.limits.unwrap_or_else(|| current.limits.clone()),
                expires_at,
            },
        )
        .await?;
    cp.keycache.invalidate(&id);
    let after = key_view(&updated);
    cp.audit(
        &caller.actor,
        "key.update",
        "virtual_key",
        Some(&id),
        Some(key_view(&current)),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `POST /keys/{id}/revoke`.
pub async fn revoke_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let current = cp
        .store
        .get_virtual_key(&id)
        .await
        .map_err(not_found("key", &id))?;
    let updated = cp.store.revoke_virtual_key(&id).await?;
    cp.keycache.invalidate(&id);
    let after = key_view(&updated);
    cp.audit(
        &caller.actor,
        "key.revoke",
        "virtual_key",
        Some(&id),
        Some(key_view(&current)),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `DELETE /keys/{id}`.
pub async fn delete_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let current = cp
        .store
        .get_virtual_key(&id)
        .await
        .map_err(not_found("key", &id))?;
    cp.store.delete_virtual_key(&id).await?;
    cp.keycache.invalidate(&id);
    cp.audit(
        &caller.actor,
        "key.delete",
        "virtual_key",
        Some(&id),
        Some(key_view(&current)),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- users and login

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
    let after = user_view(&user);
    cp.audit(
        &caller.actor,
        "user.create",
        "user",
        Some(&user.username),
        None,
        Some(after.clone()),
    )
    .await;
    Ok(created(after))
}

/// `PATCH /users/{username}`: new password and/or role.
pub async fn patch_user(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchUser = parse_body(&body)?;
    let current = cp
        .store
        .get_user_by_username(&username)
        .await
        .map_err(not_found("user", &username))?;
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
    let mut after = user_view(&updated);
    if req.password.is_some() {
        after["password"] = json!("***");
    }
    cp.audit(
        &caller.actor,
        "user.update",
        "user",
        Some(&username),
        Some(user_view(&current)),
        Some(after.clone()),
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
    let current = cp
        .store
        .get_user_by_username(&username)
        .await
        .map_err(not_found("user", &username))?;
    cp.store.delete_user(&current.id).await?;
    cp.audit(
        &caller.actor,
        "user.delete",
        "user",
        Some(&username),
        Some(user_view(&current)),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod money_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn balances_budgets_and_top_ups_are_finite_and_bounded() {
        assert!(check_money("credits", Some(Some(5.0))).is_ok());
        assert!(check_money("credits", Some(None)).is_ok());
        assert!(check_money("credits", Some(Some(-1.0))).is_err());
        assert!(check_money("credits", Some(Some(1e308))).is_err());
        assert!(check_money("daily_budget", Some(Some(2e12))).is_err());
        assert!(check_top_up(5.0).is_ok());
        assert!(check_top_up(-5.0).is_ok());
        assert!(check_top_up(0.0).is_err());
        // Twice 1e308 is infinite: the app would read back as not metered.
        assert!(check_top_up(1e308).is_err());
        assert!(check_top_up(-1e308).is_err());
    }

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

    /// Names the admin API stores (apps, keys, aliases and their targets, models) carry no
    /// control characters: PostgreSQL refuses a NUL byte with a 500.
    #[test]
    fn names_with_control_characters_are_refused() {
        assert!(check_name("name", "gpt-4o").is_ok());
        assert!(check_name("name", "a\u{0}b").is_err());
        assert!(check_name("name", "a\nb").is_err());
        assert!(check_targets(&["llama3".into(), "ll\u{0}ama3".into()])
            .unwrap_err()
            .to_string()
            .starts_with("targets[1]: "));
    }
}

//! `/models` (declared or switched-off models, and the ones upstreams serve) and `/aliases`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use llmux_store::{ModelOrigin, NewModel};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_name, created, not_found};
use crate::change::{apply, audited, audited_delete};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::time::rfc3339_ms;
use crate::{parse_body, ControlPlane};

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

/// `PATCH /models/{id}`: switch on or off, and/or rename (`name`: the new name answers, the
/// old one stops unless `keep_alias` makes it an alias of the new one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchModel {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    keep_alias: Option<bool>,
}

pub(super) async fn upstream_names(cp: &ControlPlane) -> ApiResult<HashMap<String, String>> {
    Ok(cp
        .store
        .list_upstreams()
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect())
}

/// The normalised name a model is routed on (without Ollama's `:latest`).
pub(super) fn normalized(name: &str, rules: llmux_wire::model::Rules) -> String {
    let key = llmux_wire::model::normalized_key(name, rules);
    key.strip_suffix(":latest")
        .map_or(key.clone(), str::to_string)
}

pub(super) fn model_view(
    m: &llmux_store::Model,
    names: &HashMap<String, String>,
    rules: llmux_wire::model::Rules,
) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "display_name": m.name,
        "original_name": m.original_name.as_deref().unwrap_or(&m.name),
        "normalized": normalized(&m.name, rules),
        "renamed": m.original_name.is_some(),
        "upstream": m.upstream_id.as_ref().and_then(|id| names.get(id)),
        "enabled": m.enabled,
        "origin": m.origin.as_str(),
        "created_at": rfc3339_ms(m.created_at),
    })
}

/// `GET /models`: the stored models (declared, or switched off), then every model an upstream
/// serves right now that has no stored row (`origin: discovered`, `id: null`).
pub async fn list_models(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    // Discovered models are listed too: during the start-up probe round, wait for them.
    cp.gateway.discovery_settled().await;
    let names = upstream_names(&cp).await?;
    let stored = cp.store.list_models(None).await?;
    let routes = cp.gateway.routes();
    let rules = routes.rules();
    let mut out: Vec<Value> = stored
        .iter()
        .map(|m| model_view(m, &names, rules))
        .collect();
    for up in &routes.upstreams {
        for model in &up.state().model_list {
            let known = stored.iter().any(|m| {
                m.original_name.as_ref().unwrap_or(&m.name) == model
                    && m.upstream_id
                        .as_ref()
                        .is_none_or(|id| names.get(id) == Some(&up.name))
            });
            if !known {
                out.push(json!({
                    "id": null,
                    "name": model,
                    "display_name": model,
                    "original_name": model,
                    "normalized": normalized(model, rules),
                    "renamed": false,
                    "upstream": up.name,
                    "enabled": true,
                    "origin": ModelOrigin::Discovered.as_str(),
                }));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

/// The id of the API upstream `name` a model is tied to; a 400 naming the field otherwise.
async fn model_upstream(cp: &ControlPlane, name: &str) -> ApiResult<String> {
    match cp.store.get_upstream_by_name(name).await {
        Ok(u) => Ok(u.id),
        Err(llmux_store::StoreError::NotFound) => {
            let hint = if cp.file_upstreams().await.contains(name) {
                " (models can be tied only to upstreams managed through the API; leave \
                 `upstream` out to switch the model on or off everywhere)"
            } else {
                ""
            };
            Err(ApiError::field(
                "upstream",
                format!("no API upstream named {name:?}{hint}"),
            ))
        }
        Err(e) => Err(e.into()),
    }
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
        Some(name) => Some(model_upstream(&cp, name).await?),
    };
    let new = NewModel {
        name: req.name,
        upstream_id,
        enabled: req.enabled.unwrap_or(true),
        origin: ModelOrigin::Declared,
        original_name: None,
    };
    let model = apply(
        &cp,
        &caller,
        async { Ok(cp.store.create_model(&new).await?) },
        |m| format!("model {:?} added", m.name),
    )
    .await?;
    let rules = cp.gateway.routes().rules();
    let after = model_view(&model, &upstream_names(&cp).await?, rules);
    let after = audited(
        &cp,
        &caller,
        "model.create",
        ("model", &model.id),
        None,
        after,
    )
    .await;
    Ok(created(after))
}

/// `PATCH /models/{id}`: switch a model on or off, rename it.
pub async fn patch_model(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchModel = parse_body(&body)?;
    if let Some(name) = &req.name {
        check_name("name", name)?;
    }
    let current = cp
        .store
        .get_model(&id)
        .await
        .map_err(not_found("model", &id))?;
    let names = upstream_names(&cp).await?;
    let new = renamed(&current, &req);
    let alias = match (&req.name, req.keep_alias) {
        (Some(name), Some(true)) if *name != current.name => {
            Some((current.name.clone(), name.clone()))
        }
        (_, Some(true)) => {
            return Err(ApiError::field(
                "keep_alias",
                "only with a new `name` (the old name becomes an alias of it)",
            ))
        }
        _ => None,
    };
    let updated = apply(
        &cp,
        &caller,
        async {
            // An alias of the new name would take every call meant for the model.
            if let Some(name) = req.name.as_ref().filter(|n| **n != current.name) {
                if cp.store.get_alias_by_name(name).await.is_ok() {
                    return Err(ApiError::Conflict(format!(
                        "name: {name:?} is an alias; an alias answers before a model of the \
                         same name, so the renamed model would never be reached"
                    )));
                }
            }
            if let Some((old, _)) = &alias {
                // Checked first so that a taken alias name changes nothing.
                if cp.store.get_alias_by_name(old).await.is_ok() {
                    return Err(ApiError::Conflict(format!(
                        "keep_alias: an alias {old:?} exists already; delete it or rename without keep_alias"
                    )));
                }
            }
            Ok(match &alias {
                Some((old, _)) => cp.store.rename_model_keeping_alias(&id, &new, old).await?,
                None => cp.store.update_model(&id, &new).await?,
            })
        },
        |m| match &req.name {
            Some(_) if current.name != m.name => {
                format!("model {:?} renamed to {:?}", current.name, m.name)
            }
            _ => format!("model {:?} updated", m.name),
        },
    )
    .await?;
    let rules = cp.gateway.routes().rules();
    let before = Some(model_view(&current, &names, rules));
    let after = model_view(&updated, &names, rules);
    Ok(Json(
        audited(&cp, &caller, "model.update", ("model", &id), before, after).await,
    ))
}

/// `current` with what `req` changes: a new name keeps the upstream's own name as
/// `original_name` (renaming back to it clears it).
fn renamed(current: &llmux_store::Model, req: &PatchModel) -> NewModel {
    let original = current
        .original_name
        .clone()
        .unwrap_or_else(|| current.name.clone());
    let (name, original_name) = match &req.name {
        Some(n) if *n == original => (n.clone(), None),
        Some(n) => (n.clone(), Some(original)),
        None => (current.name.clone(), current.original_name.clone()),
    };
    NewModel {
        name,
        upstream_id: current.upstream_id.clone(),
        enabled: req.enabled.unwrap_or(current.enabled),
        origin: current.origin,
        original_name,
    }
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
    let note = format!("model {:?} removed", current.name);
    apply(
        &cp,
        &caller,
        async { Ok(cp.store.delete_model(&id).await?) },
        |()| note,
    )
    .await?;
    let before = model_view(&current, &names, cp.gateway.routes().rules());
    Ok(audited_delete(&cp, &caller, "model.delete", ("model", &id), before).await)
}

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

pub(super) fn check_targets(targets: &[String]) -> ApiResult<()> {
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

async fn find_alias(cp: &ControlPlane, name: &str) -> ApiResult<llmux_store::Alias> {
    cp.store
        .get_alias_by_name(name)
        .await
        .map_err(not_found("alias", name))
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
    let alias = apply(
        &cp,
        &caller,
        async { Ok(cp.store.create_alias(&req.name, &req.targets).await?) },
        |a| format!("alias {:?} created", a.name),
    )
    .await?;
    let after = alias_view(&alias);
    let after = audited(
        &cp,
        &caller,
        "alias.create",
        ("alias", &alias.name),
        None,
        after,
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
    let current = find_alias(&cp, &name).await?;
    let alias = apply(
        &cp,
        &caller,
        async {
            Ok(cp
                .store
                .update_alias(&current.id, &name, &req.targets)
                .await?)
        },
        |_| format!("alias {name:?} updated"),
    )
    .await?;
    let (before, after) = (Some(alias_view(&current)), alias_view(&alias));
    Ok(Json(
        audited(
            &cp,
            &caller,
            "alias.update",
            ("alias", &name),
            before,
            after,
        )
        .await,
    ))
}

/// `DELETE /aliases/{name}`.
pub async fn delete_alias(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let current = find_alias(&cp, &name).await?;
    apply(
        &cp,
        &caller,
        async { Ok(cp.store.delete_alias(&current.id).await?) },
        |()| format!("alias {name:?} deleted"),
    )
    .await?;
    let before = alias_view(&current);
    Ok(audited_delete(&cp, &caller, "alias.delete", ("alias", &name), before).await)
}

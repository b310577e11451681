//! The catalogue's batch operations (`/models/batch`, `/keys/batch`, all or nothing) and its
//! name collisions (`/models/collisions`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::keys::key_view;
use super::models::{model_view, upstream_names};
use crate::change::{apply, audited};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::{parse_body, ControlPlane};

/// The most ids one batch may name.
const MAX_BATCH: usize = 1000;

/// `POST /models/batch`: `{"ids": [..], "enabled": bool}` or `{"ids": [..], "delete": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBatch {
    ids: Vec<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    delete: Option<bool>,
}

/// `POST /keys/batch`: `{"ids": [..], "revoke": true}` or `{"ids": [..], "delete": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBatch {
    ids: Vec<String>,
    #[serde(default)]
    revoke: bool,
    #[serde(default)]
    delete: bool,
}

/// The ids of a batch: 1 to [`MAX_BATCH`], none empty, none twice.
fn check_ids(ids: &[String]) -> ApiResult<()> {
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(ApiError::field(
            "ids",
            format!("must list 1 to {MAX_BATCH} ids (got {})", ids.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if id.trim().is_empty() {
            return Err(ApiError::field(&format!("ids[{i}]"), "must not be empty"));
        }
        if !seen.insert(id) {
            return Err(ApiError::field(
                &format!("ids[{i}]"),
                format!("{id:?} is named twice"),
            ));
        }
    }
    Ok(())
}

/// `POST /models/batch`: switch many models on or off, or delete them, in one transaction.
/// An unknown id is a 400 naming it, and nothing changes.
pub async fn batch_models(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: ModelBatch = parse_body(&body)?;
    check_ids(&req.ids)?;
    let names = upstream_names(&cp).await?;
    let (action, changed) = match (req.enabled, req.delete) {
        (Some(enabled), None | Some(false)) => {
            let changed = apply(
                &cp,
                &caller,
                async { Ok(cp.store.set_models_enabled(&req.ids, enabled).await?) },
                |m| {
                    format!(
                        "{} models switched {}",
                        m.len(),
                        if enabled { "on" } else { "off" }
                    )
                },
            )
            .await?;
            ("model.batch_update", changed)
        }
        (None, Some(true)) => {
            let changed = apply(
                &cp,
                &caller,
                async { Ok(cp.store.delete_models(&req.ids).await?) },
                |m| format!("{} models deleted", m.len()),
            )
            .await?;
            ("model.batch_delete", changed)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either \"enabled\": true|false or \"delete\": true with the ids".into(),
            ))
        }
    };
    let rules = cp.gateway.routes().rules();
    let views: Vec<Value> = changed
        .iter()
        .map(|m| model_view(m, &names, rules))
        .collect();
    let deleted = action == "model.batch_delete";
    let after = json!({ "count": views.len(), "deleted": deleted, "models": views });
    let target = req.ids.join(",");
    Ok(Json(
        audited(&cp, &caller, action, ("model", &target), None, after).await,
    ))
}

/// `POST /keys/batch`: revoke or delete many virtual keys in one transaction; an unknown id is
/// a 400 naming it, and no key is changed.
pub async fn batch_keys(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: KeyBatch = parse_body(&body)?;
    check_ids(&req.ids)?;
    let (action, changed) = match (req.revoke, req.delete) {
        (true, false) => (
            "key.batch_revoke",
            cp.store.revoke_virtual_keys(&req.ids).await?,
        ),
        (false, true) => (
            "key.batch_delete",
            cp.store.delete_virtual_keys(&req.ids).await?,
        ),
        _ => {
            return Err(ApiError::BadRequest(
                "give either \"revoke\": true or \"delete\": true with the ids (a revoked \
                 key cannot be restored; create a new one)"
                    .into(),
            ))
        }
    };
    // Every instance drops its cached copies: the keys stop working at their next call.
    cp.key_changed(None).await;
    let views: Vec<Value> = changed.iter().map(key_view).collect();
    let after = json!({ "count": views.len(), "deleted": req.delete, "keys": views });
    let target = req.ids.join(",");
    Ok(Json(
        audited(&cp, &caller, action, ("virtual_key", &target), None, after).await,
    ))
}

/// `GET /models/collisions`: served names that normalise alike, and where a request by the
/// shared name goes.
pub async fn collisions(State(cp): State<Arc<ControlPlane>>) -> Json<Value> {
    let routes = cp.gateway.routes();
    let found = llmux_gateway::catalog::collisions(
        &llmux_gateway::catalog::served_models(&routes),
        routes.rules(),
    );
    let out: Vec<Value> = found
        .into_iter()
        .map(|c| {
            let models: Vec<Value> = c
                .models
                .iter()
                .map(|(up, name)| json!({ "upstream": up, "name": name }))
                .collect();
            json!({
                "normalized": c.normalized,
                "rule": c.rule,
                "models": models,
                "routes_to": c.routes_to,
            })
        })
        .collect();
    Json(Value::Array(out))
}

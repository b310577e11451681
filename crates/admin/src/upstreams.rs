//! `/upstreams`: runtime state of every upstream (file and API), and CRUD of the API-managed ones
//! with their provider keys (encrypted at rest, shown masked).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use llmux_config::Secret;
use llmux_store::{NewUpstream, Source};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::change::{apply, audited, audited_delete};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::{parse_body, ControlPlane};

/// `POST /upstreams`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUpstream {
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    timeouts: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// `"max_tokens"` | `"max_completion_tokens"` (kinds openai, azure, ollama).
    #[serde(default)]
    max_tokens_field: Option<Value>,
    /// `{ "model": tokens }` (kind anthropic).
    #[serde(default)]
    max_output_tokens: Option<Value>,
}

/// `PATCH /upstreams/{name}`: the fields to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUpstream {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    timeouts: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// Absent: unchanged; `null`: back to the kind's default.
    #[serde(default, deserialize_with = "present")]
    max_tokens_field: Option<Value>,
    /// Absent: unchanged; `null` or `{}`: none.
    #[serde(default, deserialize_with = "present")]
    max_output_tokens: Option<Value>,
}

/// A field that is present, `null` included (absent stays `None` through `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The stored translation options: `current` with what a request sets (`Some(Null)` clears).
fn options(current: &Value, field: Option<Value>, limits: Option<Value>) -> Value {
    let mut out = current.as_object().cloned().unwrap_or_default();
    for (key, v) in [("max_tokens_field", field), ("max_output_tokens", limits)] {
        match v {
            None => {}
            Some(Value::Null) => {
                out.remove(key);
            }
            Some(v) => {
                out.insert(key.into(), v);
            }
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// `POST /upstreams/{name}/keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    key: String,
}

/// The admin view of one upstream: its runtime state when it runs, with where it comes from
/// and, for API upstreams, the store ids of its keys (what `DELETE …/keys/{id}` takes).
pub(crate) async fn view(cp: &ControlPlane, name: &str) -> ApiResult<Value> {
    let routes = cp.gateway.routes();
    let stored = match routes.source(name) {
        "api" => Some(cp.store.get_upstream_by_name(name).await?),
        _ => None,
    };
    let Some(up) = routes.upstream(name) else {
        // A disabled API upstream is not running; show what is stored.
        return match stored {
            Some(u) => stored_view(cp, &u).await,
            None => Err(ApiError::NotFound(format!("no upstream named {name:?}"))),
        };
    };
    let mut v = up.describe();
    v["source"] = json!(routes.source(name));
    v["drain"] = crate::drain::state_of(cp, name);
    if let Some(u) = stored {
        let keys = cp.store.list_provider_keys(Some(&u.id)).await?;
        if let Some(list) = v["keys"].as_array_mut() {
            for (slot, key) in list.iter_mut().zip(keys.iter()) {
                slot["slot"] = slot["id"].clone();
                slot["id"] = json!(key.id);
            }
        }
        v["id"] = json!(u.id);
        v["enabled"] = json!(u.enabled);
        v["declared_models"] = json!(u.models);
        v["timeouts"] = u.timeouts.clone();
        v["api_version"] = json!(u.api_version);
        v["max_tokens_field"] = u.options["max_tokens_field"].clone();
        v["max_output_tokens"] = u.options["max_output_tokens"].clone();
    }
    Ok(v)
}

async fn stored_view(cp: &ControlPlane, u: &llmux_store::Upstream) -> ApiResult<Value> {
    let keys: Vec<Value> = cp
        .store
        .list_provider_keys(Some(&u.id))
        .await?
        .into_iter()
        .map(|k| json!({ "id": k.id, "masked": k.masked, "state": k.state.as_str() }))
        .collect();
    Ok(json!({
        "id": u.id,
        "name": u.name,
        "kind": u.kind,
        "url": u.url,
        "weight": u.weight,
        "source": "api",
        "enabled": u.enabled,
        "pool": "disabled",
        "drain": crate::drain::state_of(cp, &u.name),
        "active_requests": 0,
        "models": u.models.clone().unwrap_or_default(),
        "declared_models": u.models,
        "loaded_models": [],
        "keys": keys,
        "timeouts": u.timeouts,
        "api_version": u.api_version,
        "max_tokens_field": u.options["max_tokens_field"],
        "max_output_tokens": u.options["max_output_tokens"],
        "last_error": null,
    }))
}

/// `GET /upstreams`: every upstream, file and API, as a JSON array. During the start-up
/// probe round it answers once the round is over (at most `health.timeout`), with what the
/// probes found.
pub async fn list(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    cp.gateway.discovery_settled().await;
    let routes = cp.gateway.routes();
    let mut out = Vec::with_capacity(routes.upstreams.len());
    for u in &routes.upstreams {
        out.push(view(&cp, &u.name).await?);
    }
    for u in cp.store.list_upstreams().await? {
        if u.source == Source::Api && routes.upstream(&u.name).is_none() {
            out.push(stored_view(&cp, &u).await?);
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /upstreams/{name}`.
pub async fn get(
    State(cp): State<Arc<ControlPlane>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    cp.gateway.discovery_settled().await;
    Ok(Json(view(&cp, &name).await?))
}

fn timeouts_json(t: Option<serde_json::Map<String, Value>>) -> Value {
    Value::Object(t.unwrap_or_default())
}

/// Validates (as the config file would) and checks the URL against the SSRF rules.
async fn validate(
    cp: &ControlPlane,
    u: &llmux_store::Upstream,
    keys: &[Secret],
) -> ApiResult<String> {
    let cfg = crate::plane::upstream_config(u, keys)?;
    let allow_private = cp.gateway.config().admin.allow_private_upstreams;
    crate::ssrf::check_url(&cfg.url, allow_private)
        .await
        .map_err(|e| ApiError::field("url", e))?;
    Ok(cfg.url)
}

fn draft(new: &NewUpstream) -> llmux_store::Upstream {
    llmux_store::Upstream {
        id: String::new(),
        name: new.name.clone(),
        kind: new.kind.clone(),
        url: new.url.clone(),
        weight: new.weight,
        models: new.models.clone(),
        timeouts: new.timeouts.clone(),
        enabled: new.enabled,
        source: new.source,
        api_version: new.api_version.clone(),
        options: new.options.clone(),
        created_at: 0,
        updated_at: 0,
    }
}

/// `POST /upstreams`.
pub async fn create(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: CreateUpstream = parse_body(&body)?;
    let fs = cp.lock().await;
    if fs.config.upstream(&req.name).is_some() {
        return Err(ApiError::Conflict(format!(
            "upstream {:?} is declared in the config file (read-only through the API)",
            req.name
        )));
    }
    let secrets: Vec<Secret> = req.keys.iter().map(Secret::new).collect();
    let mut new = NewUpstream {
        name: req.name.clone(),
        kind: req.kind,
        url: req.url,
        weight: req.weight.unwrap_or(1),
        models: req.models,
        timeouts: timeouts_json(req.timeouts),
        enabled: req.enabled.unwrap_or(true),
        source: Source::Api,
        api_version: req.api_version,
        options: options(&Value::Null, req.max_tokens_field, req.max_output_tokens),
    };
    new.url = validate(&cp, &draft(&new), &secrets).await?;
    let up = cp.store.create_upstream(&new).await?;
    for secret in &secrets {
        if let Err(e) = cp.store.create_provider_key(&cp.keys, &up.id, secret).await {
            let _ = cp.store.delete_upstream(&up.id).await;
            return Err(e.into());
        }
    }
    let note = format!("upstream {:?} created", up.name);
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note))
        .await?;
    drop(fs);
    let after = view(&cp, &up.name).await?;
    let after = audited(
        &cp,
        &caller,
        "upstream.create",
        ("upstream", &up.name),
        None,
        after,
    )
    .await;
    Ok((StatusCode::CREATED, Json(after)).into_response())
}

/// The stored API upstream `name`; 409 for a file upstream, 404 for none.
async fn api_upstream(cp: &ControlPlane, name: &str) -> ApiResult<llmux_store::Upstream> {
    if cp.file_upstreams().await.contains(name) {
        return Err(ApiError::Conflict(format!(
            "upstream {name:?} is declared in the config file: edit the file to change it"
        )));
    }
    match cp.store.get_upstream_by_name(name).await {
        Ok(u) if u.source == Source::Api => Ok(u),
        Ok(_) | Err(llmux_store::StoreError::NotFound) => {
            Err(ApiError::NotFound(format!("no upstream named {name:?}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `PATCH /upstreams/{name}`.
pub async fn patch(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PatchUpstream = parse_body(&body)?;
    let current = api_upstream(&cp, &name).await?;
    let before = view(&cp, &name).await?;
    let mut new = NewUpstream {
        name: current.name.clone(),
        kind: req.kind.unwrap_or(current.kind),
        url: req.url.unwrap_or(current.url),
        weight: req.weight.unwrap_or(current.weight),
        models: req.models.or(current.models),
        timeouts: req
            .timeouts
            .map_or(current.timeouts, |t| timeouts_json(Some(t))),
        enabled: req.enabled.unwrap_or(current.enabled),
        source: Source::Api,
        api_version: req.api_version.or(current.api_version),
        options: options(
            &current.options,
            req.max_tokens_field,
            req.max_output_tokens,
        ),
    };
    let change = async {
        new.url = validate(&cp, &draft(&new), &[]).await?;
        Ok(cp.store.update_upstream(&current.id, &new).await?)
    };
    apply(&cp, &caller, change, |_| {
        format!("upstream {name:?} updated")
    })
    .await?;
    let after = view(&cp, &name).await?;
    let target = ("upstream", name.as_str());
    Ok(Json(
        audited(&cp, &caller, "upstream.update", target, Some(before), after).await,
    ))
}

/// `DELETE /upstreams/{name}`.
pub async fn delete(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let current = api_upstream(&cp, &name).await?;
    let before = view(&cp, &name).await?;
    let change = async {
        // A drain belongs to the upstream: a new one of the same name starts in rotation.
        cp.store.clear_drain(&name).await?;
        Ok(cp.store.delete_upstream(&current.id).await?)
    };
    apply(&cp, &caller, change, |()| {
        format!("upstream {name:?} deleted")
    })
    .await?;
    let target = ("upstream", name.as_str());
    Ok(audited_delete(&cp, &caller, "upstream.delete", target, before).await)
}

/// `POST /upstreams/{name}/keys`: adds a provider key (encrypted at rest; shown masked).
pub async fn add_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AddKey = parse_body(&body)?;
    if req.key.trim().is_empty() {
        return Err(ApiError::field("key", "must not be empty"));
    }
    let up = api_upstream(&cp, &name).await?;
    let secret = Secret::new(req.key);
    let change = async {
        Ok(cp
            .store
            .create_provider_key(&cp.keys, &up.id, &secret)
            .await?)
    };
    let key = apply(&cp, &caller, change, |_| {
        format!("key added to upstream {name:?}")
    })
    .await?;
    let after = json!({ "id": key.id, "upstream": name, "masked": key.masked, "state": key.state.as_str() });
    let target = ("provider_key", key.id.as_str());
    let after = audited(&cp, &caller, "upstream.key.create", target, None, after).await;
    Ok((StatusCode::CREATED, Json(after)).into_response())
}

/// `DELETE /upstreams/{name}/keys/{key_id}`.
pub async fn delete_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path((name, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let up = api_upstream(&cp, &name).await?;
    let key = match cp.store.get_provider_key(&key_id).await {
        Ok(k) if k.upstream_id == up.id => k,
        Ok(_) | Err(llmux_store::StoreError::NotFound) => {
            return Err(ApiError::NotFound(format!(
                "upstream {name:?} has no key {key_id:?}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let change = async { Ok(cp.store.delete_provider_key(&key.id).await?) };
    apply(&cp, &caller, change, |()| {
        format!("key removed from upstream {name:?}")
    })
    .await?;
    let before = json!({ "id": key.id, "upstream": name, "masked": key.masked });
    let target = ("provider_key", key.id.as_str());
    Ok(audited_delete(&cp, &caller, "upstream.key.delete", target, before).await)
}

/// The running upstream `name` and the pool slot of its key `key_id`: the runtime slot
/// (`k0`, …) or, for API upstreams, the stored key id.
async fn key_slot(
    cp: &ControlPlane,
    name: &str,
    key_id: &str,
) -> ApiResult<(Arc<llmux_gateway::upstream::Upstream>, usize)> {
    let routes = cp.gateway.routes();
    let up = routes
        .upstream(name)
        .ok_or_else(|| ApiError::NotFound(format!("no upstream named {name:?}")))?;
    let mut slot = up.keys.find(key_id);
    if slot.is_none() && routes.source(name) == "api" {
        let stored = cp.store.get_upstream_by_name(name).await?;
        let keys = cp.store.list_provider_keys(Some(&stored.id)).await?;
        slot = keys.iter().position(|k| k.id == key_id);
    }
    let i = slot
        .filter(|i| *i < up.keys.len())
        .ok_or_else(|| ApiError::NotFound(format!("upstream {name:?} has no key {key_id:?}")))?;
    Ok((Arc::clone(up), i))
}

/// `POST /upstreams/{name}/keys/{key_id}/disable`: takes a key out of rotation now, by hand.
/// It stays out (the re-checker leaves it alone, reloads keep it) until `…/enable` or a restart.
pub async fn disable_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path((name, key_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (up, i) = key_slot(&cp, &name, &key_id).await?;
    let before = json!({ "id": key_id, "state": up.keys.state(i).as_str() });
    up.keys
        .disable_by_hand(i, &format!("disabled by {} (admin API)", caller.actor));
    tracing::info!(upstream = %name, key = %key_id, actor = %caller.actor, "key disabled by the admin API");
    let after = json!({ "id": key_id, "state": up.keys.state(i).as_str() });
    let target = ("provider_key", key_id.as_str());
    Ok(Json(
        audited(
            &cp,
            &caller,
            "upstream.key.disable",
            target,
            Some(before),
            after,
        )
        .await,
    ))
}

/// `POST /upstreams/{name}/keys/{key_id}/enable`: puts a disabled key back into rotation now.
/// Takes the runtime slot (`k0`, …) or, for API upstreams, the stored key id.
pub async fn enable_key(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path((name, key_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (up, i) = key_slot(&cp, &name, &key_id).await?;
    up.keys.enable(i);
    tracing::info!(upstream = %name, key = %key_id, "key re-enabled by the admin API");
    let after = json!({ "id": key_id, "state": up.keys.state(i).as_str() });
    let target = ("provider_key", key_id.as_str());
    Ok(Json(
        audited(&cp, &caller, "upstream.key.enable", target, None, after).await,
    ))
}

/// `POST /upstreams/{name}/refresh`: probes the upstream now (health, models, pool) instead of
/// waiting for the next health interval, and answers its state afterwards. Changes no config.
pub async fn refresh(
    State(cp): State<Arc<ControlPlane>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let routes = cp.gateway.routes();
    let Some(up) = routes.upstream(&name) else {
        return Err(ApiError::NotFound(format!(
            "no running upstream named {name:?} (a disabled one is not probed)"
        )));
    };
    llmux_gateway::health::reprobe(&cp.gateway, std::slice::from_ref(up)).await;
    Ok(Json(view(&cp, &name).await?))
}

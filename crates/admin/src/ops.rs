//! `/routing`, `/reload`, `/config`, `/config/revisions`, `/config/rollback` and `/audit`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use llmux_config::Strategy;
use llmux_store::Source;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::plane::STRATEGY_SETTING;
use crate::session::Caller;
use crate::time::rfc3339_ms;
use crate::{parse_body, ControlPlane};

const STRATEGIES: [Strategy; 5] = [
    Strategy::LeastActive,
    Strategy::LowestLatency,
    Strategy::RoundRobin,
    Strategy::Weighted,
    Strategy::Cheapest,
];

/// `PUT /routing`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRouting {
    /// A strategy, or `null` to go back to the file's.
    strategy: Option<String>,
}

/// `?limit=&before=` paging, newest first.
#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    before: Option<i64>,
}

impl Page {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

async fn routing_view(cp: &ControlPlane) -> ApiResult<Value> {
    let running = cp.gateway.config();
    let file_strategy = cp.lock().await.config.routing.strategy;
    let overridden = cp.store.get_setting(STRATEGY_SETTING).await?.is_some();
    Ok(json!({
        "strategy": running.routing.strategy.as_str(),
        "source": if overridden { "api" } else { "file" },
        "file_strategy": file_strategy.as_str(),
        "strategies": STRATEGIES.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "max_attempts": running.routing.max_attempts,
        "fallbacks": running.routing.fallbacks,
    }))
}

/// `GET /routing`.
pub async fn get_routing(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    Ok(Json(routing_view(&cp).await?))
}

/// `PUT /routing`: overrides the file's strategy (stored; survives restarts), or clears the
/// override with `null`.
pub async fn put_routing(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PutRouting = parse_body(&body)?;
    let before = routing_view(&cp).await?;
    let fs = cp.lock().await;
    match &req.strategy {
        Some(s) => {
            let strategy: Strategy = s.parse().map_err(|e| ApiError::field("strategy", e))?;
            cp.store
                .set_setting(STRATEGY_SETTING, &json!(strategy.as_str()))
                .await?;
        }
        None => cp.store.delete_setting(STRATEGY_SETTING).await?,
    }
    cp.apply_locked(
        &fs,
        &caller.actor,
        Source::Api,
        Some("routing strategy set"),
    )
    .await?;
    drop(fs);
    let after = routing_view(&cp).await?;
    cp.audit(
        &caller.actor,
        "routing.update",
        "routing",
        None,
        Some(before),
        Some(after.clone()),
    )
    .await;
    Ok(Json(after))
}

/// `POST /reload`: re-reads the config file now; 400 with the reason when it is invalid (the
/// running config keeps serving).
pub async fn reload(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let out = cp.reload_file(&caller.actor, false).await?;
    if out["changed"] == json!(true) {
        cp.audit(
            &caller.actor,
            "config.reload",
            "config",
            None,
            None,
            Some(out.clone()),
        )
        .await;
    }
    Ok(Json(out))
}

/// `GET /config`: where the config comes from and how the last reload went.
pub async fn get_config(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let status = cp.status();
    let running = cp.gateway.config();
    Ok(Json(json!({
        "file": cp.file_path.as_ref().map(|p| p.display().to_string()),
        "store": match cp.store.kind() {
            llmux_store::BackendKind::Sqlite => "sqlite",
            llmux_store::BackendKind::Postgres => "postgres",
        },
        "revision": status.revision,
        "last_reload_at": status.last_reload_at,
        "last_reload_error": status.last_reload_error,
        "upstreams": running.upstreams.len(),
        "strategy": running.routing.strategy.as_str(),
        "auth_required": running.auth.required,
    })))
}

/// `GET /config/revisions`: newest first, without their content (which holds sealed secrets).
pub async fn list_revisions(
    State(cp): State<Arc<ControlPlane>>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let list = cp
        .store
        .list_config_revisions(page.limit(), page.before)
        .await?;
    let status = cp.status();
    let out: Vec<Value> = list
        .iter()
        .map(|r| {
            let content: Value = serde_json::from_str(&r.content).unwrap_or(Value::Null);
            let upstreams: Vec<&Value> = content["routing"]["upstreams"]
                .as_array()
                .map(|ups| ups.iter().map(|u| &u["name"]).collect())
                .unwrap_or_default();
            json!({
                "id": r.id,
                "at": rfc3339_ms(r.at),
                "actor": r.actor,
                "source": r.source.as_str(),
                "note": r.note,
                "current": status.revision == Some(r.id),
                "api_upstreams": upstreams,
                "strategy": content["routing"]["settings"][STRATEGY_SETTING],
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// `POST /config/rollback`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    revision: i64,
}

/// `POST /config/rollback`: restores a revision's routing in one call; records a new revision.
pub async fn rollback(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: Rollback = parse_body(&body)?;
    let out = cp.rollback(req.revision, &caller.actor).await?;
    cp.audit(
        &caller.actor,
        "config.rollback",
        "config",
        Some(&req.revision.to_string()),
        None,
        Some(out.clone()),
    )
    .await;
    Ok(Json(out))
}

/// `GET /audit`: newest first.
pub async fn list_audit(
    State(cp): State<Arc<ControlPlane>>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Value>> {
    let list = cp
        .store
        .list_audit_events(page.limit(), page.before)
        .await?;
    let out: Vec<Value> = list
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": rfc3339_ms(e.at),
                "actor": e.actor,
                "action": e.action,
                "target_type": e.target_type,
                "target_id": e.target_id,
                "before": e.before,
                "after": e.after,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

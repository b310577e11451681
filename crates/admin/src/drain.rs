//! `POST /upstreams/{name}/drain` and `/undrain`: take an upstream out of rotation for
//! maintenance and put it back.
//!
//! A drain is a runtime switch, not configuration: it is kept in the store's settings (one
//! `runtime.drain.NAME` row per upstream, so it survives a reload and a restart, and every
//! instance on a shared PostgreSQL store applies it within a second through the change stream),
//! but it records no config revision and a rollback leaves it alone. Routing skips a drained
//! upstream (`Overlay::drained`); its calls in flight finish; probes and model discovery go on.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use llmux_store::{ChangeKind, Source};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::ControlPlane;

/// `POST /upstreams/{name}/drain`: no new call goes to the upstream; idempotent.
pub async fn drain(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    switch(&cp, &caller, &name, true).await.map(Json)
}

/// `POST /upstreams/{name}/undrain`: the upstream takes new calls again; idempotent.
pub async fn undrain(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    switch(&cp, &caller, &name, false).await.map(Json)
}

/// Stores the switch, applies it here and tells the other instances; answers the upstream's
/// view. An unknown name is a 404, except that a drain left on a name that no longer exists
/// (its upstream was removed from the file) can still be lifted.
async fn switch(cp: &ControlPlane, caller: &Caller, name: &str, on: bool) -> ApiResult<Value> {
    let fs = cp.lock().await;
    let known = fs.config.upstream(name).is_some() || is_api_upstream(cp, name).await?;
    let was = cp
        .store
        .list_drains()
        .await?
        .into_iter()
        .any(|d| d.upstream == name);
    // A stale drain (on a name no longer configured) may still be lifted.
    let lifting_stale = was && !on;
    if !known && !lifting_stale {
        return Err(ApiError::NotFound(format!("no upstream named {name:?}")));
    }
    let before = json!({ "drain": state_of(cp, name) });
    let changed = if on {
        cp.store.set_drain(name, &caller.actor).await?
    } else {
        cp.store.clear_drain(name).await?
    };
    if changed {
        cp.apply_composed(&fs).await?;
    }
    drop(fs);
    if !changed {
        return view(cp, name, known).await;
    }
    cp.publish(ChangeKind::Config, None).await;
    let after = view(cp, name, known).await?;
    let action = if on {
        "upstream.drain"
    } else {
        "upstream.undrain"
    };
    let summary = json!({ "drain": after["drain"], "active_requests": after["active_requests"] });
    cp.audit(
        &caller.actor,
        action,
        "upstream",
        Some(name),
        Some(before),
        Some(summary),
    )
    .await;
    tracing::info!(upstream = name, actor = %caller.actor, action, "upstream drain switched");
    Ok(after)
}

async fn is_api_upstream(cp: &ControlPlane, name: &str) -> ApiResult<bool> {
    match cp.store.get_upstream_by_name(name).await {
        Ok(u) => Ok(u.source == Source::Api),
        Err(llmux_store::StoreError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn view(cp: &ControlPlane, name: &str, known: bool) -> ApiResult<Value> {
    if known {
        crate::upstreams::view(cp, name).await
    } else {
        Ok(json!({ "name": name, "drain": null }))
    }
}

/// The `drain` field of an upstream's view: `"draining"` while calls it took before the drain
/// are still in flight, `"drained"` once none is left, `null` when it takes calls.
pub(crate) fn state_of(cp: &ControlPlane, name: &str) -> Value {
    let routes = cp.gateway.routes();
    match routes.upstream(name) {
        Some(up) => json!(routes.drain_state(up).map(|d| d.as_str())),
        // Not running (a disabled API upstream): nothing in flight.
        None => json!(routes.is_drained(name).then_some("drained")),
    }
}

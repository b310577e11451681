//! Admin API (`/admin/v1`): the state of upstreams, behind the bootstrap bearer token.

use crate::keys::KeyState;
use crate::upstream::Upstream;
use crate::Gateway;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// Every `/admin/v1` route passes here first: a missing or wrong token never reaches a handler.
pub async fn require_admin(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let routes = gw.routes();
    let Some(expected) = routes.config.admin.token.as_ref() else {
        return admin_error(
            StatusCode::UNAUTHORIZED,
            "the admin API is disabled: set admin.token in the config file",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
        return admin_error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid admin token (Authorization: Bearer …)",
        );
    }
    next.run(req).await
}

pub async fn list_upstreams(State(gw): State<Arc<Gateway>>) -> Response {
    let routes = gw.routes();
    let list: Vec<Value> = routes.upstreams.iter().map(|u| describe(u)).collect();
    Json(Value::Array(list)).into_response()
}

pub async fn get_upstream(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    match gw.routes().upstream(&name) {
        Some(u) => Json(describe(u)).into_response(),
        None => admin_error(
            StatusCode::NOT_FOUND,
            &format!("no upstream named '{name}'"),
        ),
    }
}

/// `POST /admin/v1/upstreams/{name}/keys/{key_id}/enable`: puts a disabled key back into rotation now.
pub async fn enable_key(
    State(gw): State<Arc<Gateway>>,
    Path((name, key_id)): Path<(String, String)>,
) -> Response {
    let routes = gw.routes();
    let Some(up) = routes.upstream(&name) else {
        return admin_error(
            StatusCode::NOT_FOUND,
            &format!("no upstream named '{name}'"),
        );
    };
    let Some(i) = up.keys.find(&key_id) else {
        return admin_error(
            StatusCode::NOT_FOUND,
            &format!("upstream '{name}' has no key '{key_id}'"),
        );
    };
    up.keys.enable(i);
    tracing::info!(upstream = %name, key = %key_id, "key re-enabled by the admin API");
    Json(json!({ "id": key_id, "state": up.keys.state(i).as_str() })).into_response()
}

/// The runtime state of one upstream as the admin API shows it (the control plane reuses it).
pub fn describe(u: &Upstream) -> Value {
    let state = u.state();
    let mut loaded: Vec<&String> = state
        .model_list
        .iter()
        .filter(|m| {
            state
                .loaded
                .contains(llmux_wire::model::model_key(m).as_ref())
        })
        .collect();
    loaded.sort();
    let keys: Vec<Value> = u
        .keys
        .keys()
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let state = u.keys.state(i);
            let (success_rate, latency_ms) = k.stats();
            let round = |x: f64, digits: f64| (x * digits).round() / digits;
            let mut v = json!({
                "id": k.id,
                "masked": k.secret.masked(),
                "state": state.as_str(),
                "success_rate": success_rate.map(|r| round(r, 1000.0)),
                "latency_ms": latency_ms.map(|l| round(l, 10.0)),
            });
            match state {
                KeyState::Ok => {}
                KeyState::Cooling { remaining } => {
                    v["cooling_for_s"] = json!((remaining.as_secs_f64() * 10.0).round() / 10.0);
                }
                KeyState::Disabled { reason, since } => {
                    v["disabled_reason"] = json!(reason);
                    v["disabled_at"] = json!(llmux_wire::time::rfc3339(since));
                }
            }
            v
        })
        .collect();
    json!({
        "name": u.name,
        "kind": u.kind.as_str(),
        "url": u.base,
        "weight": u.weight,
        "source": "file",
        "pool": state.pool.as_str(),
        "latency_ms": state.latency_ms.map(|l| (l * 1000.0).round() / 1000.0),
        "ttft_ms": u.ttft_ms().map(|l| (l * 1000.0).round() / 1000.0),
        "active_requests": u.active_requests(),
        "served": u.served.load(std::sync::atomic::Ordering::Relaxed),
        "failed": u.failed.load(std::sync::atomic::Ordering::Relaxed),
        "models": state.model_list,
        "loaded_models": loaded,
        "keys": keys,
        "breaker": u.breaker.state().as_str(),
        "breaker_open_for_s": (u.breaker.open_remaining().as_secs_f64() * 10.0).round() / 10.0,
        "last_error": state.last_error,
        "last_check": state.last_check.map(llmux_wire::time::rfc3339),
    })
}

fn admin_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": { "message": message } }))).into_response()
}

/// Compares secrets without an early exit, so timing does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

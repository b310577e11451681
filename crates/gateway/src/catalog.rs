//! Answers that llmux composes itself from what the prober learned: model lists, loaded models, Ollama's version and banner.

use crate::upstream::{Pool, UpstreamState};
use crate::Gateway;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use config::UpstreamKind;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The Ollama API version llmux answers `/api/version` with: the release whose API it mirrors.
pub const OLLAMA_COMPAT_VERSION: &str = "0.12.6";

/// Every model an active upstream serves, once: (name, upstream, seen at unix seconds).
fn reachable_models(gw: &Gateway) -> Vec<(String, String, u64)> {
    let routes = gw.routes();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for up in &routes.upstreams {
        let state = up.state();
        if state.pool != Pool::Active {
            continue;
        }
        for name in &state.model_list {
            if seen.insert(name.clone()) {
                out.push((name.clone(), up.name.clone(), state.models_seen_at));
            }
        }
    }
    out
}

/// `GET /v1/models`: every reachable model in OpenAI's list format — or Anthropic's, when the
/// client is an Anthropic SDK (it sends `anthropic-version`).
pub async fn openai_models(
    State(gw): State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let models = reachable_models(&gw);
    if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = models
            .iter()
            .map(|(name, _, seen)| {
                json!({
                    "type": "model",
                    "id": name,
                    "display_name": name,
                    "created_at": wire::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*seen)),
                })
            })
            .collect();
        let first = models.first().map(|m| m.0.clone());
        let last = models.last().map(|m| m.0.clone());
        return Json(
            json!({ "data": data, "has_more": false, "first_id": first, "last_id": last }),
        )
        .into_response();
    }
    let data: Vec<Value> = models
        .iter()
        .map(|(name, owner, seen)| {
            json!({ "id": name, "object": "model", "created": seen, "owned_by": owner })
        })
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /v1beta/models`: every reachable model in Gemini's list format.
pub async fn gemini_models(State(gw): State<Arc<Gateway>>) -> Response {
    let models: Vec<(String, String)> = reachable_models(&gw)
        .into_iter()
        .map(|(name, owner, _)| (name, owner))
        .collect();
    Json(wire::translate::gemini::models_list(&models)).into_response()
}

/// `GET /v1/models/{id}`: OpenAI's model object — or Gemini's, for a Gemini client (it sends its key
/// in `x-goog-api-key` or `?key=`).
pub async fn model_info(
    State(gw): State<Arc<Gateway>>,
    path: axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Response {
    let gemini_client = req.headers().contains_key("x-goog-api-key")
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
    if gemini_client {
        return gemini_model(State(gw), path).await;
    }
    let id = path.0;
    match reachable_models(&gw).into_iter().find(|(m, _, _)| *m == id) {
        Some((name, owner, seen)) => {
            Json(json!({ "id": name, "object": "model", "created": seen, "owned_by": owner }))
                .into_response()
        }
        None => crate::proxy::error(
            wire::Dialect::OpenAi,
            wire::ErrorKind::ModelNotFound,
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                crate::accounting::cap(&id, crate::accounting::MAX_CLIENT_STRING)
            ),
        ),
    }
}

/// `GET /v1beta/models/{model}`: one model in Gemini's format, or 404.
pub async fn gemini_model(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
) -> Response {
    let name = rest.trim_start_matches("models/");
    let found: Vec<(String, String)> = reachable_models(&gw)
        .into_iter()
        .filter(|(m, _, _)| m == name)
        .map(|(name, owner, _)| (name, owner))
        .collect();
    let list = wire::translate::gemini::models_list(&found);
    match list.get("models").and_then(|m| m.get(0)) {
        Some(model) => Json(model.clone()).into_response(),
        None => crate::proxy::error(
            wire::Dialect::Gemini,
            wire::ErrorKind::ModelNotFound,
            format!(
                "models/{} is not found",
                crate::accounting::cap(name, crate::accounting::MAX_CLIENT_STRING)
            ),
        ),
    }
}

/// `GET /api/tags`: every reachable model, de-duplicated by name — the Ollama nodes' entries as
/// they sent them, then the other upstreams' models (reached through translation).
pub async fn ollama_tags(State(gw): State<Arc<Gateway>>) -> Response {
    let mut entries = union_ollama(&gw, |state| {
        if state.tags.is_empty() {
            // Declared models have no tag entry from the node: describe them minimally.
            state.model_list.iter().map(|m| synthetic_tag(m)).collect()
        } else {
            state.tags.clone()
        }
    });
    let mut seen: HashSet<String> = entries
        .iter()
        .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    for (name, _, _) in reachable_models(&gw) {
        if seen.insert(name.clone()) {
            entries.push(synthetic_tag(&name));
        }
    }
    Json(json!({ "models": entries })).into_response()
}

/// `GET /api/ps`: the union of the models loaded on active Ollama nodes.
pub async fn ollama_ps(State(gw): State<Arc<Gateway>>) -> Response {
    let entries = union_ollama(&gw, |state| state.ps.clone());
    Json(json!({ "models": entries })).into_response()
}

pub async fn ollama_version() -> Response {
    Json(json!({ "version": OLLAMA_COMPAT_VERSION })).into_response()
}

/// `GET /`: what an Ollama server answers, so tools that check for "Ollama is running" accept llmux.
pub async fn root() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

fn union_ollama(gw: &Gateway, entries: impl Fn(&UpstreamState) -> Vec<Value>) -> Vec<Value> {
    let routes = gw.routes();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for up in &routes.upstreams {
        if up.kind != UpstreamKind::Ollama {
            continue;
        }
        let state = up.state();
        if state.pool != Pool::Active {
            continue;
        }
        for entry in entries(&state) {
            let name = entry
                .get("name")
                .or_else(|| entry.get("model"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(name) = name {
                if seen.insert(name) {
                    out.push(entry);
                }
            }
        }
    }
    out
}

fn synthetic_tag(name: &str) -> Value {
    json!({
        "name": name,
        "model": name,
        "modified_at": "1970-01-01T00:00:00Z",
        "size": 0,
        "digest": "",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": null,
            "parameter_size": "",
            "quantization_level": ""
        }
    })
}

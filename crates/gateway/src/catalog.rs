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

/// `GET /v1/models`: every model an active upstream serves, once, in OpenAI's list format.
pub async fn openai_models(State(gw): State<Arc<Gateway>>) -> Response {
    let routes = gw.routes();
    let mut seen = HashSet::new();
    let mut data = Vec::new();
    for up in &routes.upstreams {
        let state = up.state();
        if state.pool != Pool::Active {
            continue;
        }
        for name in &state.model_list {
            if seen.insert(name.clone()) {
                data.push(json!({
                    "id": name,
                    "object": "model",
                    "created": state.models_seen_at,
                    "owned_by": up.name,
                }));
            }
        }
    }
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /api/tags`: the union of the active Ollama nodes' models, de-duplicated by name.
pub async fn ollama_tags(State(gw): State<Arc<Gateway>>) -> Response {
    let entries = union_ollama(&gw, |state| {
        if state.tags.is_empty() {
            // Declared models have no tag entry from the node: describe them minimally.
            state.model_list.iter().map(|m| synthetic_tag(m)).collect()
        } else {
            state.tags.clone()
        }
    });
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

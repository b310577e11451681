//! Answers that llmux composes itself from what the prober learned: model lists, loaded models, Ollama's version and banner.

use crate::endpoint::Endpoint;
use crate::upstream::{Pool, UpstreamState};
use crate::Gateway;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llmux_config::UpstreamKind;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The Ollama API version llmux answers `/api/version` with: the release whose API it mirrors.
pub const OLLAMA_COMPAT_VERSION: &str = "0.12.6";

/// Every model an active upstream serves, once, by the name clients use (a renamed model by
/// its new name; a switched-off one not at all): (name, upstream, seen at unix seconds).
fn reachable_models(gw: &Gateway) -> Vec<(String, String, u64)> {
    let routes = gw.routes();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for up in &routes.upstreams {
        let state = up.state();
        if state.pool != Pool::Active {
            continue;
        }
        for served in &state.model_list {
            let Some(name) = routes.listed_name(&up.name, served) else {
                continue;
            };
            if seen.insert(name.clone()) {
                out.push((name, up.name.clone(), state.models_seen_at));
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
    gw.discovery_settled().await;
    let models = reachable_models(&gw);
    if headers.contains_key("anthropic-version") {
        let data: Vec<Value> = models
            .iter()
            .map(|(name, _, seen)| {
                json!({
                    "type": "model",
                    "id": name,
                    "display_name": name,
                    "created_at": llmux_wire::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*seen)),
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
    gw.discovery_settled().await;
    let models: Vec<(String, String)> = reachable_models(&gw)
        .into_iter()
        .map(|(name, owner, _)| (name, owner))
        .collect();
    Json(llmux_wire::translate::gemini::models_list(&models)).into_response()
}

/// `GET /v1/models/{id}`: OpenAI's model object — or Gemini's, for a Gemini client (it sends its key
/// in `x-goog-api-key` or `?key=`), or Anthropic's, for an Anthropic client (`anthropic-version`).
pub async fn model_info(
    State(gw): State<Arc<Gateway>>,
    path: axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Response {
    gw.discovery_settled().await;
    let gemini_client = req.headers().contains_key("x-goog-api-key")
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
    if gemini_client {
        return gemini_model(State(gw), path).await;
    }
    let id = path.0;
    let anthropic_client = req.headers().contains_key("anthropic-version");
    match find_model(&gw, &id) {
        Some(Found {
            name, seen, ..
        }) if anthropic_client => Json(json!({
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": llmux_wire::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seen)),
        }))
        .into_response(),
        Some(Found {
            name, owner, seen, ..
        }) => Json(json!({ "id": name, "object": "model", "created": seen, "owned_by": owner }))
            .into_response(),
        None if anthropic_client => crate::call::error(
            llmux_wire::Dialect::Anthropic,
            llmux_wire::ErrorKind::ModelNotFound,
            format!(
                "model: {}",
                crate::accounting::cap(&id, crate::accounting::MAX_CLIENT_STRING)
            ),
        ),
        None => crate::call::error(
            llmux_wire::Dialect::OpenAi,
            llmux_wire::ErrorKind::ModelNotFound,
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                crate::accounting::cap(&id, crate::accounting::MAX_CLIENT_STRING)
            ),
        ),
    }
}

/// A model an active upstream serves, found by the name a client gave it.
struct Found {
    name: String,
    owner: String,
    kind: UpstreamKind,
    seen: u64,
}

/// The model `requested` names, matched the way calls are routed (`llama3` is
/// `llama3:latest`, `gpu-a/llama3` looks only at `gpu-a`, normalised names and renames
/// apply, a switched-off model is not found), on an active upstream.
fn find_model(gw: &Gateway, requested: &str) -> Option<Found> {
    let routes = gw.routes();
    let plan = routes.plan(requested, |_| true, None).ok()?;
    plan.into_iter().find_map(|c| {
        let state = c.upstream.state();
        if state.pool != Pool::Active {
            return None;
        }
        let served = state
            .models
            .get(llmux_wire::model::model_key(&c.model).as_ref())
            .cloned()
            .unwrap_or_else(|| c.model.clone());
        Some(Found {
            name: routes.listed_name(&c.upstream.name, &served)?,
            owner: c.upstream.name.clone(),
            kind: c.upstream.kind,
            seen: state.models_seen_at,
        })
    })
}

/// `POST /api/show`: from an Ollama node when one serves the model; for a hosted model
/// (OpenAI, Anthropic, …) llmux describes it itself, since only Ollama nodes have this call.
pub async fn ollama_show(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    gw.discovery_settled().await;
    let (parts, bytes) = match buffered(&gw, req, llmux_wire::Dialect::Ollama).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let field = |k: &str| {
        body.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // Older clients name the model in `name`, which Ollama still accepts.
    let legacy_name = field("model").is_none().then(|| field("name")).flatten();
    let requested = field("model").or_else(|| legacy_name.clone());
    let on_ollama = |m: &str| {
        gw.routes()
            .plan(m, |k| k == UpstreamKind::Ollama, None)
            .is_ok()
    };
    if let Some(found) = requested
        .as_deref()
        .filter(|m| !on_ollama(m))
        .and_then(|m| find_model(&gw, m))
    {
        return Json(hosted_show(&found)).into_response();
    }
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    let path = crate::call::PathModel {
        model: legacy_name,
        sse: false,
    };
    crate::call::handle_with(gw, Endpoint::OllamaShow, req, path).await
}

/// What `/api/show` says about a model no Ollama node holds: its name, where it is served
/// and what it can do, with the fields Ollama clients read present (empty where unknown).
fn hosted_show(found: &Found) -> Value {
    let kind = found.kind.as_str();
    json!({
        "license": "",
        "modelfile": format!(
            "# {} is a hosted model, served through llmux by upstream '{}' ({kind}).\nFROM {}\n",
            found.name, found.owner, found.name
        ),
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": {
            "parent_model": "",
            "format": "",
            "family": kind,
            "families": [kind],
            "parameter_size": "",
            "quantization_level": ""
        },
        "model_info": {
            "general.architecture": kind,
            "general.basename": found.name,
        },
        "capabilities": ["completion", "tools"],
        "modified_at": llmux_wire::time::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(found.seen)
        ),
    })
}

/// `POST /v1/messages/count_tokens`: Anthropic's own count when an Anthropic upstream serves
/// the model; otherwise an estimate from the request's text (about four characters a token).
pub async fn anthropic_count_tokens(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let dialect = llmux_wire::Dialect::Anthropic;
    let (parts, bytes) = match buffered(&gw, req, dialect).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let model = llmux_wire::Peek::parse(&bytes).ok().and_then(|p| p.model);
    // Checked as a call's model is: it may be echoed in the 404 below.
    if let Some(Err(e)) = model.as_deref().map(crate::call::check_model) {
        return crate::call::error(
            dialect,
            llmux_wire::ErrorKind::InvalidRequest,
            e.to_string(),
        );
    }
    let on_anthropic = model.as_deref().is_some_and(|m| {
        gw.routes()
            .plan(m, |k| k == UpstreamKind::Anthropic, None)
            .is_ok()
    });
    if on_anthropic {
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        return crate::call::handle(gw, Endpoint::AnthropicCountTokens, req).await;
    }
    let codec = llmux_wire::translate::codec(dialect);
    let request = match codec.decode_request(llmux_wire::canonical::Op::Chat, &bytes) {
        Ok(r) => r,
        Err(e) => {
            return crate::call::error(
                dialect,
                llmux_wire::ErrorKind::InvalidRequest,
                e.to_string(),
            )
        }
    };
    if find_model(&gw, &request.model).is_none() {
        return crate::call::error(
            dialect,
            llmux_wire::ErrorKind::ModelNotFound,
            format!("model: {}", request.model),
        );
    }
    Json(json!({ "input_tokens": estimate_input_tokens(&request) })).into_response()
}

/// Input tokens of a request, estimated: about four characters a token, plus a few per message
/// for the chat framing, as tokenizers of the common models come out on English text.
fn estimate_input_tokens(req: &llmux_wire::canonical::ChatRequest) -> u64 {
    use llmux_wire::canonical::Part;
    let mut chars = req.system.as_deref().map_or(0, |s| s.chars().count());
    let mut tokens = 0u64;
    for m in &req.messages {
        tokens += 4;
        for p in &m.content {
            match p {
                Part::Text(t) => chars += t.chars().count(),
                // Anthropic counts an image at roughly (width × height) / 750 tokens; the size
                // is unknown here, so a typical photo's share.
                Part::Image(_) => tokens += 1_600,
            }
        }
        for c in &m.tool_calls {
            chars += c.name.len() + c.arguments.len();
        }
    }
    for t in &req.tools {
        chars += t.name.len()
            + t.description.as_deref().map_or(0, str::len)
            + t.parameters.to_string().len();
    }
    tokens + (chars as u64).div_ceil(4).max(1)
}

/// The request's body within `server.max_body`, with the rest of the request to rebuild it.
async fn buffered(
    gw: &Gateway,
    req: Request,
    dialect: llmux_wire::Dialect,
) -> Result<(axum::http::request::Parts, bytes::Bytes), Response> {
    let max_body = gw.routes().config.server.max_body;
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, max_body).await {
        Ok(b) => Ok((parts, b)),
        Err(e) => Err(crate::call::error(
            dialect,
            llmux_wire::ErrorKind::PayloadTooLarge,
            format!(
                "request body could not be read within server.max_body ({max_body} bytes): {e}"
            ),
        )),
    }
}

/// `POST /api/create`, `/api/copy`, `/api/push`: model management llmux does not do across a
/// fleet; Ollama's error shape, so the `ollama` CLI prints it.
pub async fn ollama_unsupported(req: Request) -> Response {
    let path = req.uri().path().to_string();
    (
        axum::http::StatusCode::NOT_IMPLEMENTED,
        Json(json!({ "error": format!(
            "{path} is not supported by llmux: it fronts many nodes; run it against an Ollama node directly"
        ) })),
    )
        .into_response()
}

/// `GET /v1beta/models/{model}`: one model in Gemini's format, or 404.
pub async fn gemini_model(
    State(gw): State<Arc<Gateway>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
) -> Response {
    gw.discovery_settled().await;
    let name = rest.trim_start_matches("models/");
    let found: Vec<(String, String)> = find_model(&gw, name)
        .map(|f| (f.name, f.owner))
        .into_iter()
        .collect();
    let list = llmux_wire::translate::gemini::models_list(&found);
    match list.get("models").and_then(|m| m.get(0)) {
        Some(model) => Json(model.clone()).into_response(),
        None => crate::call::error(
            llmux_wire::Dialect::Gemini,
            llmux_wire::ErrorKind::ModelNotFound,
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
    gw.discovery_settled().await;
    let routes = gw.routes();
    let mut entries = union_ollama(&gw, |up, state| {
        let entries = if state.tags.is_empty() {
            // Declared models have no tag entry from the node: describe them minimally.
            state.model_list.iter().map(|m| synthetic_tag(m)).collect()
        } else {
            state.tags.clone()
        };
        listed_entries(&routes, up, entries)
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
    gw.discovery_settled().await;
    let routes = gw.routes();
    let entries = union_ollama(&gw, |up, state| {
        listed_entries(&routes, up, state.ps.clone())
    });
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

/// A node's `/api/tags` or `/api/ps` entries as clients may see them: switched-off models
/// left out, renamed ones under their new name.
fn listed_entries(
    routes: &crate::routing::Routes,
    upstream: &str,
    entries: Vec<Value>,
) -> Vec<Value> {
    entries
        .into_iter()
        .filter_map(|mut entry| {
            let served = entry
                .get("name")
                .or_else(|| entry.get("model"))
                .and_then(Value::as_str)?
                .to_string();
            let listed = routes.listed_name(upstream, &served)?;
            if listed != served {
                for field in ["name", "model"] {
                    if let Some(v) = entry.get_mut(field) {
                        *v = Value::String(listed.clone());
                    }
                }
            }
            Some(entry)
        })
        .collect()
}

fn union_ollama(gw: &Gateway, entries: impl Fn(&str, &UpstreamState) -> Vec<Value>) -> Vec<Value> {
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
        for entry in entries(&up.name, &state) {
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

/// Served names that normalise alike (`[catalog] normalize`): a request by the shared name
/// matches more than one of them, and routing takes the greatest (the newest snapshot).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Collision {
    /// The shared normalised key, as requested (without Ollama's `:latest`).
    pub normalized: String,
    /// `normalized` (case or prefixes) or `dated_snapshots` (undated name, nothing exact).
    pub rule: &'static str,
    /// `(upstream, served name)` of each model involved.
    pub models: Vec<(String, String)>,
    /// The served name a request by `normalized` is sent as.
    pub routes_to: String,
}

/// The collisions among `(upstream, served name)` pairs under `rules`; a name on two upstreams
/// is one model (no collision).
pub fn collisions(models: &[(String, String)], rules: llmux_wire::model::Rules) -> Vec<Collision> {
    use llmux_wire::model::{normalized_key, undated};
    use std::collections::{BTreeMap, BTreeSet};
    if !rules.any() {
        return Vec::new();
    }
    let bare = |k: &str| k.strip_suffix(":latest").unwrap_or(k).to_string();
    let mut by_key: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut by_undated: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (up, name) in models {
        let key = normalized_key(name, rules);
        if rules.dated_snapshots {
            if let Some(u) = undated(&key) {
                by_undated
                    .entry(u)
                    .or_default()
                    .push((up.clone(), name.clone()));
            }
        }
        by_key
            .entry(key)
            .or_default()
            .push((up.clone(), name.clone()));
    }
    let mut out = Vec::new();
    let mut push = |key: &str, rule, members: Vec<(String, String)>| {
        let names: BTreeSet<&String> = members.iter().map(|(_, n)| n).collect();
        if names.len() > 1 {
            let routes_to = names
                .iter()
                .next_back()
                .map(|n| n.to_string())
                .unwrap_or_default();
            out.push(Collision {
                normalized: bare(key),
                rule,
                models: members,
                routes_to,
            });
        }
    };
    for (key, members) in &by_key {
        push(key, "normalized", members.clone());
    }
    for (key, members) in by_undated {
        // An undated name served as such answers exactly: no ambiguity then.
        if !by_key.contains_key(&key) {
            push(&key, "dated_snapshots", members);
        }
    }
    out
}

/// Every `(upstream, served name)` the running upstreams offer now.
pub fn served_models(routes: &crate::routing::Routes) -> Vec<(String, String)> {
    routes
        .upstreams
        .iter()
        .flat_map(|u| {
            let state = u.state();
            // A switched-off model takes no call, so it collides with nothing.
            state
                .model_list
                .iter()
                .filter(|m| routes.listed_name(&u.name, m).is_some())
                .map(|m| (u.name.clone(), m.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod collision_tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn collisions_by_rule() {
        let rules = crate::routing::rules_of(&llmux_config::CatalogConfig::default());
        let found = collisions(
            &pairs(&[
                ("a", "GPT-4o"),
                ("b", "gpt-4o"),
                ("a", "llama3"),
                ("b", "llama3"),
                ("a", "claude-3-5-sonnet-20240620"),
                ("b", "claude-3-5-sonnet-20241022"),
                ("a", "gpt-4o-2024-08-06"),
            ]),
            rules,
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].normalized, "gpt-4o");
        assert_eq!(found[0].rule, "normalized");
        assert_eq!(found[1].normalized, "claude-3-5-sonnet");
        assert_eq!(found[1].rule, "dated_snapshots");
        assert_eq!(found[1].routes_to, "claude-3-5-sonnet-20241022");
        let none = llmux_wire::model::Rules::default();
        assert!(collisions(&pairs(&[("a", "X"), ("b", "x")]), none).is_empty());
    }
}

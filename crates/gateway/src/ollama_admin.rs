//! Ollama model management through the gateway: `POST /api/pull` and `DELETE /api/delete` on
//! one node (`gpu-a/llama3`) or on every active Ollama node (`llama3`).
//!
//! A pull streams the nodes' own NDJSON progress lines as they arrive, merged, each with an
//! `"upstream"` field naming its node; `"stream": false` gives one JSON answer. A node's model
//! list is re-discovered as soon as its pull or delete ends (before its `success` line is sent),
//! so the model routes at once. With `auth.required` both paths are for administrators only:
//! the admin token or an admin user's login token (checked by [`crate::auth::AdminCheck`]).

use crate::auth::AdminRefusal;
use crate::call::error;
use crate::upstream::{Pool, Upstream};
use crate::Gateway;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use llmux_config::UpstreamKind;
use llmux_wire::{Dialect, ErrorKind};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Largest request body (`{"model": …}`) and largest progress line a node may send.
const MAX_BODY: usize = 64 << 10;
const MAX_LINE: usize = 1 << 20;

/// What to do on the nodes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Pull,
    Delete,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Pull => "/api/pull",
            Op::Delete => "/api/delete",
        }
    }
}

/// How one node's pull or delete ended.
struct NodeOutcome {
    upstream: String,
    /// The node's (or the connection's) error message.
    error: Option<String>,
}

impl NodeOutcome {
    /// Whether the node said it has no such model (Ollama's registry or local store).
    fn not_found(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.contains("file does not exist") || e.contains("not found"))
    }
}

/// A refusal before any node is asked: what kind, and the message.
type Refusal = (ErrorKind, String);

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Response {
    error(Dialect::Ollama, kind, message)
}

/// `POST /api/pull`.
pub async fn pull(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let (model, stream, targets) = match admit(&gw, req, Op::Pull).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    if !stream {
        let outcomes = run_all(&gw, &targets, &model, Op::Pull).await;
        return whole_answer(&model, Op::Pull, outcomes);
    }
    let (tx, rx) = mpsc::channel::<Value>(64);
    for up in targets {
        let (gw, model, tx) = (Arc::clone(&gw), model.clone(), tx.clone());
        tokio::spawn(async move { run_node(&gw, &up, &model, Op::Pull, Some(&tx)).await });
    }
    drop(tx);
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), rx))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// `DELETE /api/delete`: 200 `{"status":"success","upstreams":[…]}` when every node deleted it.
pub async fn delete(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let (model, _, targets) = match admit(&gw, req, Op::Delete).await {
        Ok(admitted) => admitted,
        Err(resp) => return resp,
    };
    let outcomes = run_all(&gw, &targets, &model, Op::Delete).await;
    whole_answer(&model, Op::Delete, outcomes)
}

/// The caller's right, the body's model and `stream`, and the nodes it names.
async fn admit(
    gw: &Gateway,
    req: Request,
    op: Op,
) -> Result<(String, bool, Vec<Arc<Upstream>>), Response> {
    let (parts, body) = req.into_parts();
    if let Some(actor) = authorize(gw, &parts.headers).await? {
        tracing::info!(
            actor,
            path = op.path(),
            "model management by an administrator"
        );
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        refuse(
            ErrorKind::InvalidRequest,
            format!("cannot read the request body (at most {MAX_BODY} bytes): {e}"),
        )
    })?;
    let body: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
        refuse(
            ErrorKind::InvalidRequest,
            format!(
                "{} takes a JSON object such as {{\"model\": \"llama3\"}}: {e}",
                op.path()
            ),
        )
    })?;
    // Older Ollama clients send `name`.
    let model = body
        .get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| refuse(ErrorKind::InvalidRequest, "model is required"))?;
    let stream = match body.get("stream") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(refuse(
                ErrorKind::InvalidRequest,
                "stream must be true or false",
            ))
        }
    };
    let (model, targets) = targets(gw, model, op).map_err(|(kind, m)| refuse(kind, m))?;
    Ok((model, stream, targets))
}

/// With `auth.required`, only an administrator may manage models: `Ok(Some(actor))`. Without
/// it anyone may (`Ok(None)`), as anyone may call Ollama itself.
async fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<Option<String>, Response> {
    if !gw.routes().config.auth.required {
        return Ok(None);
    }
    let token = crate::auth::credential(headers, None).ok_or_else(|| {
        refuse(
            ErrorKind::Authentication,
            "model management needs an administrator: send `Authorization: Bearer <admin token \
             or an admin user's login token>`",
        )
    })?;
    let check = gw.admin_check().ok_or_else(|| {
        refuse(
            ErrorKind::Unavailable,
            "model management is unavailable: no admin API is running",
        )
    })?;
    match check.check(token).await {
        Ok(actor) => Ok(Some(actor)),
        Err(AdminRefusal::Unauthorized(m)) => Err(refuse(ErrorKind::Authentication, m)),
        Err(AdminRefusal::Forbidden(m)) => Err(refuse(ErrorKind::PermissionDenied, m)),
        Err(AdminRefusal::Unavailable(m)) => Err(refuse(ErrorKind::Unavailable, m)),
    }
}

/// The nodes `requested` names: `node/model` one node (an Ollama one), a bare name every
/// active Ollama node — for a delete, those that list the model.
fn targets(gw: &Gateway, requested: &str, op: Op) -> Result<(String, Vec<Arc<Upstream>>), Refusal> {
    let routes = gw.routes();
    let (pin, model) = llmux_wire::model::split_pinned(requested, |p| routes.upstream(p).is_some());
    if let Some(name) = pin {
        let up = routes
            .upstream(name)
            .cloned()
            .ok_or_else(|| (ErrorKind::NotFound, format!("no upstream named '{name}'")))?;
        if up.kind != UpstreamKind::Ollama {
            return Err((
                ErrorKind::InvalidRequest,
                format!(
                    "upstream '{name}' is a {} upstream: {} manages models on Ollama nodes only",
                    up.kind.as_str(),
                    op.path()
                ),
            ));
        }
        return Ok((model.to_string(), vec![up]));
    }
    let key = llmux_wire::model::model_key(model);
    let nodes: Vec<Arc<Upstream>> = routes
        .upstreams
        .iter()
        .filter(|u| u.kind == UpstreamKind::Ollama && u.state().pool == Pool::Active)
        .filter(|u| op == Op::Pull || u.state().models.contains_key(key.as_ref()))
        .cloned()
        .collect();
    if nodes.is_empty() {
        return Err(match op {
            Op::Pull => (
                ErrorKind::Unavailable,
                "no active Ollama node to pull onto (see GET /admin/v1/upstreams)".to_string(),
            ),
            Op::Delete => (
                ErrorKind::ModelNotFound,
                format!("model '{model}' not found on any active Ollama node"),
            ),
        });
    }
    Ok((model.to_string(), nodes))
}

/// Runs `op` on every node at once and waits for all of them (no progress is relayed).
async fn run_all(gw: &Gateway, targets: &[Arc<Upstream>], model: &str, op: Op) -> Vec<NodeOutcome> {
    let runs = targets.iter().map(|up| run_node(gw, up, model, op, None));
    futures_util::future::join_all(runs).await
}

/// `op` on one node. Progress lines go to `tx` (when streaming) with the node's name; the
/// node's model list is re-discovered when it succeeded, before its `success` line is sent.
async fn run_node(
    gw: &Gateway,
    up: &Arc<Upstream>,
    model: &str,
    op: Op,
    tx: Option<&mpsc::Sender<Value>>,
) -> NodeOutcome {
    let result = match op {
        Op::Pull => relay_pull(up, model, tx).await,
        Op::Delete => delete_on(up, model).await.map(|()| None),
    };
    let (held, result) = match result {
        Ok(held) => (held, Ok(())),
        Err(e) => (None, Err(e)),
    };
    if result.is_ok() {
        crate::health::reprobe(gw, std::slice::from_ref(up)).await;
        tracing::info!(upstream = %up.name, model, path = op.path(), "model management done; models re-discovered");
    }
    let error = result.err();
    if let Some(tx) = tx {
        let last = match (&error, held) {
            // Ollama's own line, naming the model as the whole-answer form does.
            (Some(e), _) => Some(json!({"error": e, "upstream": up.name, "model": model})),
            (None, Some(line)) => Some(line),
            (None, None) => None,
        };
        if let Some(line) = last {
            let _ = tx.send(line).await;
        }
    }
    NodeOutcome {
        upstream: up.name.clone(),
        error,
    }
}

/// A key of the node's, when it has keys.
fn node_key(up: &Upstream) -> Option<String> {
    let pick = up.keys.pick(None, &[])?;
    up.keys.get(pick).map(|k| k.secret.expose().to_string())
}

/// One progress line of a node's.
enum Line {
    Blank,
    Progress(Value),
    /// `{"status":"success"}`: held back until the node's models are re-discovered.
    Success(Value),
    /// `{"error": …}`: sent by `run_node` as the node's last line.
    Failed(String),
}

/// Reads one line, adding `"upstream"`.
fn parse_line(up: &Upstream, line: &[u8]) -> Result<Line, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Line::Blank);
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(line) else {
        return Err(format!(
            "{} sent a progress line that is not a JSON object",
            up.name
        ));
    };
    if let Some(e) = obj.get("error") {
        return Ok(Line::Failed(
            e.as_str().map_or_else(|| e.to_string(), str::to_string),
        ));
    }
    let done = obj.get("status").and_then(Value::as_str) == Some("success");
    obj.insert("upstream".into(), Value::String(up.name.clone()));
    Ok(if done {
        Line::Success(Value::Object(obj))
    } else {
        Line::Progress(Value::Object(obj))
    })
}

/// What a node's pull stream said so far.
#[derive(Default)]
struct PullState {
    success: Option<Value>,
    failure: Option<String>,
}

impl PullState {
    /// Takes one line; progress goes to `tx` at once (an error when the client went away).
    async fn take(
        &mut self,
        up: &Upstream,
        line: &[u8],
        tx: Option<&mpsc::Sender<Value>>,
    ) -> Result<(), String> {
        match parse_line(up, line)? {
            Line::Blank => {}
            Line::Progress(v) => {
                if let Some(tx) = tx {
                    tx.send(v)
                        .await
                        .map_err(|_| "the client went away".to_string())?;
                }
            }
            Line::Success(v) => self.success = Some(v),
            Line::Failed(e) => {
                self.failure.get_or_insert(e);
            }
        }
        Ok(())
    }
}

/// Sends `/api/pull` to the node and relays its progress lines (with `"upstream"`) to `tx`
/// until the node ends the stream. `Ok(success line)`; an error line, an error status or a
/// broken connection is the error.
async fn relay_pull(
    up: &Upstream,
    model: &str,
    tx: Option<&mpsc::Sender<Value>>,
) -> Result<Option<Value>, String> {
    let req = up
        .client
        .post(format!("{}/api/pull", up.base))
        .json(&json!({"model": model, "stream": true}));
    let req = crate::egress::authorize(req, up, node_key(up).as_deref());
    let resp = send(up, req).await?;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut state = PullState::default();
    loop {
        let chunk = match tokio::time::timeout(up.timeouts.idle, body.next()).await {
            Err(_) => {
                let idle = up.timeouts.idle;
                return Err(format!("{} sent no progress for {idle:?}", up.name));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("{}: the pull broke off: {e}", up.name)),
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            state.take(up, &line, tx).await?;
        }
        if buf.len() > MAX_LINE {
            return Err(format!(
                "{} sent a progress line over {MAX_LINE} bytes",
                up.name
            ));
        }
    }
    state.take(up, &buf, tx).await?;
    match (state.failure, state.success) {
        (Some(e), _) => Err(e),
        (None, Some(done)) => Ok(Some(done)),
        (None, None) => Err(format!("{} ended the pull without success", up.name)),
    }
}

/// Sends a management request, waiting for its status within `timeouts.first_byte`; an error
/// status becomes the node's `error` message.
async fn send(up: &Upstream, req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    let resp = match tokio::time::timeout(up.timeouts.first_byte, req.send()).await {
        Err(_) => {
            return Err(format!(
                "{} did not answer within {:?}",
                up.name, up.timeouts.first_byte
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot reach {}: {e}", up.name)),
        Ok(Ok(r)) => r,
    };
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("{} answered {status}", up.name));
    Err(message)
}

/// Sends `/api/delete` to the node.
async fn delete_on(up: &Upstream, model: &str) -> Result<(), String> {
    let req = up
        .client
        .delete(format!("{}/api/delete", up.base))
        .json(&json!({"model": model}));
    let req = crate::egress::authorize(req, up, node_key(up).as_deref());
    send(up, req).await.map(drop)
}

/// One JSON answer for every node: `{"status":"success","upstreams":[…]}`, or — when any node
/// failed — Ollama's `{"error": …}` naming each failed node, 404 when every failure was a model
/// the node could not find, else 502; `upstreams` says how each node ended.
fn whole_answer(model: &str, op: Op, outcomes: Vec<NodeOutcome>) -> Response {
    let each: Vec<Value> = outcomes
        .iter()
        .map(|o| match &o.error {
            None => json!({"upstream": o.upstream, "status": "success"}),
            Some(e) => json!({"upstream": o.upstream, "error": e}),
        })
        .collect();
    let failed: Vec<&NodeOutcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    if failed.is_empty() {
        return (
            StatusCode::OK,
            axum::Json(json!({"status": "success", "upstreams": each})),
        )
            .into_response();
    }
    let status = if failed.iter().all(|o| o.not_found()) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    let message = failed
        .iter()
        .map(|o| format!("{}: {}", o.upstream, o.error.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("; ");
    let verb = match op {
        Op::Pull => "pull",
        Op::Delete => "delete",
    };
    let body = json!({"error": format!("{verb} '{model}' failed on {message}"), "upstreams": each});
    (status, axum::Json(body)).into_response()
}

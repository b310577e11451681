//! The model-call path: read the body, pick candidates, try them until one answers, then relay
//! its bytes as they arrive — passed through when the upstream speaks the client's dialect,
//! translated through the canonical form when it does not.

use crate::accounting::{self, Accountant, CallRecord, Draft, Tokens};
use crate::breaker::Admission;
use crate::egress;
pub use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::keys::KeyPick;
use crate::relay::{CallLog, Relay, Transcoder};
use crate::retry::{self, Class};
use crate::routing::{fnv1a, Candidate, RouteError, Routes};
use crate::upstream::Upstream;
use crate::{Gateway, RequestId};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use llmux_config::UpstreamKind;
use llmux_wire::canonical::{ChatRequest, Op, TranslateError};
use llmux_wire::translate::{self, embed};
use llmux_wire::{Dialect, ErrorKind, Peek};
use std::sync::Arc;
use std::time::Instant;

/// Response headers of the upstream that are worth passing on; the rest (hop-by-hop, server,
/// provider internals) stay behind.
const PASSED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
];

/// Error bodies of failed attempts are kept (to hand back if every option fails) up to this size.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Where the model comes from when it is not in the body (Gemini puts it in the path).
#[derive(Clone, Debug, Default)]
pub struct PathModel {
    pub model: Option<String>,
    /// Gemini `?alt=sse`: stream as SSE rather than a JSON array.
    pub sse: bool,
}

pub async fn handle(gw: Arc<Gateway>, endpoint: Endpoint, req: Request) -> Response<Body> {
    handle_with(gw, endpoint, req, PathModel::default()).await
}

/// Marks a response whose call line is logged elsewhere (by the relay when its body ends, or by
/// the whole-answer path): every other answer of a model call is logged by [`handle_with`].
#[derive(Clone, Copy)]
pub(crate) struct CallLogged;

/// One model call; every finished call — answered, refused or failed — logs one `call` line.
/// A call whose client hangs up before its answer is ready (the handler is dropped) logs its
/// line as `client_closed` from [`CallLine`]'s drop.
pub async fn handle_with(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    req: Request,
    path: PathModel,
) -> Response<Body> {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let mut line = CallLine {
        request_id,
        endpoint,
        started: Instant::now(),
        model: None,
        pending: true,
    };
    // At the end of `server.shutdown_grace` a call still waiting for its answer is cut as
    // open streams are: answered now (its record settles as `shutdown` when the call's future
    // is dropped here), while the call-log writer still runs.
    let cut = gw.accounting.streams_cut.clone();
    let dialect = endpoint.dialect();
    let mut resp = tokio::select! {
        resp = handle_call(gw, endpoint, req, path, &mut line.model) => resp,
        () = cut.cancelled() => error(dialect, ErrorKind::Unavailable, SHUTDOWN_CUT),
    };
    line.pending = false;
    if resp.extensions_mut().remove::<CallLogged>().is_none() {
        let header = |name: &HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let status = resp.status().as_u16();
        let outcome = match status {
            _ if cut.is_cancelled() && status == 503 => "shutdown",
            0..=399 => "ok",
            400..=499 => "refused",
            _ => "upstream_error",
        };
        // The model that answered, else the one asked for (a refused call has no upstream).
        let model = match header(&crate::X_LLMUX_MODEL) {
            "" => line.model.as_deref().unwrap_or(""),
            m => m,
        };
        let attempts: u64 = header(&crate::X_LLMUX_ATTEMPTS).parse().unwrap_or(0);
        line.log(
            model,
            header(&crate::X_LLMUX_UPSTREAM),
            status,
            attempts,
            outcome,
        );
    }
    resp
}

/// The `call` line of a call refused before its handler ran (a missing or wrong key, a per-IP,
/// global or key-concurrency limit): every finished call logs one line, these too.
pub(crate) fn log_refused(req: &Request, resp: &Response<Body>) {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map_or("", |r| r.0.as_str());
    tracing::info!(
        request_id,
        endpoint = req.uri().path(),
        model = "",
        upstream = "",
        status = resp.status().as_u16(),
        attempts = 0u64,
        duration_ms = 0u64,
        outcome = "refused",
        "call"
    );
}

/// What a call still waiting for its answer at the end of the grace period is told.
const SHUTDOWN_CUT: &str =
    "llmux is shutting down: the call was cut at the end of server.shutdown_grace; retry it";

/// The `call` line of a call answered here (not by the relay): written when the answer is
/// ready, or on drop as `client_closed` when the client went away before that.
struct CallLine {
    request_id: String,
    endpoint: Endpoint,
    started: Instant,
    /// The model asked for, once it was read and checked.
    model: Option<String>,
    pending: bool,
}

impl CallLine {
    fn log(&self, model: &str, upstream: &str, status: u16, attempts: u64, outcome: &str) {
        macro_rules! call_line {
            ($level:ident) => {
                tracing::$level!(
                    request_id = %self.request_id,
                    endpoint = self.endpoint.as_str(),
                    model,
                    upstream,
                    status,
                    attempts,
                    duration_ms = self.started.elapsed().as_millis() as u64,
                    outcome,
                    "call"
                )
            };
        }
        if status >= 500 {
            call_line!(warn);
        } else {
            call_line!(info);
        }
    }
}

impl Drop for CallLine {
    fn drop(&mut self) {
        if self.pending {
            let model = self.model.as_deref().unwrap_or("");
            self.log(
                model,
                "",
                crate::accounting::CLIENT_CLOSED_STATUS,
                0,
                "client_closed",
            );
        }
    }
}

/// Longest `model` a request may name (the longest real model names are under 100 bytes).
pub const MAX_MODEL_LEN: usize = 256;

/// A client's model name is checked before it is echoed in a message, logged or stored: no
/// control characters (a NUL byte cannot be stored in PostgreSQL) and at most
/// [`MAX_MODEL_LEN`] bytes. The message never repeats the name.
pub fn check_model(model: &str) -> Result<(), String> {
    if model.len() > MAX_MODEL_LEN {
        return Err(format!(
            "invalid `model`: {} bytes long; the limit is {MAX_MODEL_LEN}",
            model.len()
        ));
    }
    if model.chars().any(char::is_control) {
        return Err("invalid `model`: contains control characters".into());
    }
    Ok(())
}

async fn handle_call(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    req: Request,
    path: PathModel,
    requested: &mut Option<String>,
) -> Response<Body> {
    let started = Instant::now();
    let dialect = endpoint.dialect();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let session = req
        .headers()
        .get(crate::X_LLMUX_SESSION)
        .map(|v| fnv1a(v.as_bytes()));
    let anthropic_beta = req.headers().get("anthropic-beta").cloned();
    let trace = req
        .extensions()
        .get::<crate::telemetry::CallTrace>()
        .map(|t| t.ctx);
    let identity = req.extensions().get::<crate::auth::Identity>().cloned();
    // The address the per-IP limit used: past trusted proxies, not the client's own claim.
    let client_ip =
        crate::limits::client_addr(&req, &gw.routes().config.limits).map(|ip| ip.to_string());
    let routes = gw.routes();
    let (body, peek) = match read_request(req, dialect, routes.config.server.max_body).await {
        Ok(v) => v,
        Err(e) => return axum::response::IntoResponse::into_response(e),
    };
    let Some(model) = path.model.clone().or_else(|| peek.model.clone()) else {
        return error(
            dialect,
            ErrorKind::InvalidRequest,
            "missing required field `model`",
        );
    };
    if let Err(message) = check_model(&model) {
        return error(dialect, ErrorKind::InvalidRequest, message);
    }
    *requested = Some(model.clone());
    // What may be sent upstream: the model or its alias's targets, then their fallbacks.
    // Permissions, prices and per-model limits apply to these, not to the name asked for.
    let targets = permitted(identity.as_ref(), &routes, &model);
    if targets.is_empty() {
        gw.metrics.rejected("model_permission");
        return error(
            dialect,
            ErrorKind::PermissionDenied,
            format!("this API key may not use model '{model}' (nor any model it stands for)"),
        );
    }
    // The call's record, made before any refusal below so that refused calls are logged too.
    let mut draft = gw.accounting.accountant().map(|sink| {
        new_draft(
            &gw,
            Arc::clone(sink),
            Draft0 {
                request_id: &request_id,
                identity: identity.as_ref(),
                dialect,
                model: &model,
                body: &body,
                started,
                client_ip,
                stream: peek.stream,
            },
        )
    });
    // Per-key and per-model request and token rates; the grant is reconciled when the call settles.
    let limits_grant =
        match crate::limits::admit(&gw, identity.as_ref(), &model, &body, dialect).await {
            Ok(grant) => grant,
            Err(resp) => {
                if let Some(d) = draft {
                    let status = resp.status().as_u16();
                    d.finish(status, None, None, Tokens::default(), None);
                }
                return resp;
            }
        };
    let admitted = match draft.as_ref() {
        Some(d) => admit(&gw, &d.sink, identity.as_ref(), dialect, &targets, &body)
            .await
            .map(Some),
        None => Ok(None),
    };
    // Grows when the call moves on to a fallback target with limits of its own.
    let grant = Arc::new(std::sync::Mutex::new(crate::limits::TokenGrant::default()));
    match admitted {
        Ok(reserved) => {
            if let Ok(mut g) = grant.lock() {
                g.absorb(limits_grant);
            }
            if let Some(d) = draft.as_mut() {
                d.record.reserved = reserved.unwrap_or(0.0);
                let limiter = Arc::clone(&gw);
                let grant = Arc::clone(&grant);
                d.on_settle = Some(Box::new(move |t: Tokens| {
                    let Some(grant) = grant.lock().ok().map(|mut g| std::mem::take(&mut *g)) else {
                        return;
                    };
                    // Like OpenAI, the admission estimate (prompt + max_tokens) stays charged;
                    // only an answer that used more than that is charged the difference.
                    let used = (t.input + t.output).max(grant.estimated());
                    limiter.limits.reconcile(grant, used);
                }));
            }
        }
        Err(refusal) => {
            // Refused before any upstream: the tokens charged at admission go back.
            gw.limits.reconcile(limits_grant, 0);
            if let Some(d) = draft {
                let status = refusal.status().as_u16();
                d.finish(
                    status,
                    Some("insufficient_quota"),
                    None,
                    Tokens::default(),
                    None,
                );
            }
            return refusal;
        }
    }
    let draft = Arc::new(std::sync::Mutex::new(draft));
    let affinity = session.or_else(|| peek.user.as_deref().map(|u| fnv1a(u.as_bytes())));
    let call = Call {
        trace,
        gw,
        routes,
        endpoint,
        request_id,
        started,
        body,
        peek,
        affinity,
        gemini_sse: path.sse,
        model_in_path: path.model.is_some(),
        anthropic_beta,
        canonical: None,
        inexpressible: None,
        attempts: 0,
        attempt_log: Vec::new(),
        failures: Vec::new(),
        last_reply: None,
        out_of_budget: false,
        draft: Arc::clone(&draft),
        identity,
        grant,
    };
    let resp = call.run(model, targets).await;
    // No upstream answer took the record (refused, no route, every attempt failed): log it now.
    if let Some(mut d) = draft.lock().ok().and_then(|mut d| d.take()) {
        let header = |name: &HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        d.record.attempts = header(&crate::X_LLMUX_ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        d.record.upstream = header(&crate::X_LLMUX_UPSTREAM);
        // What the failed attempts noted stays out of the record: no upstream served the call.
        d.record.upstream_model = None;
        d.record.provider_key_id = None;
        d.finish(resp.status().as_u16(), None, None, Tokens::default(), None);
    }
    resp
}

/// The models a call for `model` may reach: its alias's targets (or itself), then their
/// fallbacks, keeping for a key with a model list only those it allows. A key that lists the
/// alias name itself may use the alias's own targets; fallbacks need their own permission.
fn permitted(
    identity: Option<&crate::auth::Identity>,
    routes: &Routes,
    model: &str,
) -> Vec<String> {
    // Most calls have no alias and no fallback: skip building the chain for them.
    let chain = if routes.overlay.aliases.is_empty() && routes.config.routing.fallbacks.is_empty() {
        vec![model.to_string()]
    } else {
        routes.chain(model)
    };
    let Some(id) = identity.filter(|id| !id.models.is_empty()) else {
        return chain;
    };
    let named = id.allows(model);
    let heads = routes.overlay.aliases.get(model);
    chain
        .into_iter()
        .filter(|t| id.allows(t) || (named && heads.is_some_and(|h| h.contains(t))))
        .collect()
}

/// Checks the caller's app against its credit and budgets before anything reaches an upstream,
/// reserving the estimated cost of the dearest model the call may reach (`targets`); `Err` is
/// the `insufficient_quota` answer. Calls without a key are not billed; calls whose every target
/// is free (no price, or priced at 0) are never refused for money.
async fn admit(
    gw: &Gateway,
    sink: &Arc<dyn Accountant>,
    identity: Option<&crate::auth::Identity>,
    dialect: Dialect,
    targets: &[String],
    body: &Bytes,
) -> Result<f64, Response<Body>> {
    let Some(id) = identity else {
        return Ok(0.0);
    };
    let pricing = gw.accounting.pricing();
    let prices: Vec<accounting::Price> = targets
        .iter()
        .filter_map(|t| pricing.price(t))
        .filter(|p| p.input_per_mtok > 0.0 || p.output_per_mtok > 0.0)
        .collect();
    // The answer's size is unknown yet: reserve the prompt plus a modest answer, so that many
    // concurrent streams cannot each spend the same last credit.
    let estimate = Tokens {
        input: accounting::estimate_tokens(body.len() as u64),
        output: RESERVED_OUTPUT_TOKENS,
        estimated: true,
    };
    let reserve = prices.iter().map(|p| p.cost(estimate)).fold(0.0, f64::max);
    match sink.admit(&id.app_id, reserve, !prices.is_empty()).await {
        Ok(()) => Ok(reserve),
        Err(refusal) => {
            gw.accounting
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(error(
                dialect,
                ErrorKind::InsufficientQuota,
                refusal.to_string(),
            ))
        }
    }
}

/// Output tokens reserved at admission for a priced call, settled to the real count at its end.
const RESERVED_OUTPUT_TOKENS: u64 = 256;

/// The error class a failed attempt is logged with: its status's class when the upstream
/// answered, else `rate_limited`/`authentication` by verdict, `upstream_error` for no answer.
fn attempt_failure_class(status: Option<u16>, class: &Class) -> &'static str {
    match (status.and_then(accounting::status_class), class) {
        (Some(c), _) => c,
        (None, Class::Throttled { .. }) => "rate_limited",
        (None, Class::BadKey) => "authentication",
        (None, _) => "upstream_error",
    }
}

/// What the call log needs from the request, before any upstream is chosen.
struct Draft0<'a> {
    request_id: &'a str,
    identity: Option<&'a crate::auth::Identity>,
    dialect: Dialect,
    model: &'a str,
    body: &'a Bytes,
    started: Instant,
    client_ip: Option<String>,
    stream: Option<bool>,
}

fn new_draft(gw: &Gateway, sink: Arc<dyn Accountant>, d: Draft0<'_>) -> Draft {
    let bodies = gw.routes().config.logs.bodies;
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as i64)
        - d.started.elapsed().as_millis() as i64;
    Draft::new(
        CallRecord {
            created_at,
            request_id: d.request_id.to_string(),
            app_id: d.identity.map(|i| i.app_id.clone()),
            virtual_key_id: d.identity.map(|i| i.key_id.clone()),
            dialect: d.dialect.as_str().to_string(),
            requested_model: d.model.to_string(),
            client_ip: d.client_ip,
            request_body: bodies.then(|| accounting::redact(&String::from_utf8_lossy(d.body))),
            stream: d.stream,
            ..CallRecord::default()
        },
        d.body.len() as u64,
        d.started,
        gw.accounting.pricing(),
        sink,
        bodies,
    )
    .with_shutdown(gw.accounting.streams_cut.clone())
}

/// A request ready to send to one candidate.
struct Prepared {
    url: reqwest::Url,
    body: Bytes,
    /// `None`: passthrough. `Some`: the upstream's dialect, for translating the answer back.
    translated: Option<Translated>,
    /// llmux asked the upstream for the stream's usage the client did not ask for: the
    /// usage-only chunk is removed from what the client sees.
    added_usage: bool,
}

#[derive(Clone, Copy)]
struct Translated {
    upstream: Dialect,
    op: Op,
    stream: bool,
    include_usage: bool,
    /// `Some` for embeddings (with the format an OpenAI client asked for).
    embed: Option<embed::EncodingFormat>,
}

/// Why a candidate could not be sent this call.
enum Unprepared {
    /// The client's body is invalid in its own dialect: a 400, whatever the upstream.
    Invalid(TranslateError),
    /// The request uses something this upstream's dialect cannot express: try another.
    Inexpressible(TranslateError),
}

/// An upstream's error answer, kept to hand back if nothing better comes of the retries.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    upstream: String,
}

enum Outcome {
    /// Committed: success or the client's own error, already flowing to the client.
    Done(Response<Body>),
    Failed {
        class: Class,
        reason: String,
        reply: Option<Reply>,
    },
}

/// One client call on its way through candidates and fallbacks.
struct Call {
    /// The call's span, when tracing is on: attempts are its children.
    trace: Option<crate::telemetry::TraceContext>,
    gw: Arc<Gateway>,
    routes: Arc<Routes>,
    endpoint: Endpoint,
    request_id: String,
    started: Instant,
    body: Bytes,
    peek: Peek,
    affinity: Option<u64>,
    gemini_sse: bool,
    model_in_path: bool,
    anthropic_beta: Option<HeaderValue>,
    /// The body in canonical form, decoded once, on the first call that needs translating.
    canonical: Option<Result<ChatRequest, TranslateError>>,
    /// Set when some candidate could not express the request (reported if nothing else works).
    inexpressible: Option<TranslateError>,
    attempts: usize,
    /// The attempts that failed so far, for the call log (the answering one is added when it takes the draft).
    attempt_log: Vec<accounting::AttemptRecord>,
    failures: Vec<String>,
    last_reply: Option<Reply>,
    out_of_budget: bool,
    /// The call-log record; whoever answers the client takes it (the relay, at the body's end).
    draft: Arc<std::sync::Mutex<Option<Draft>>>,
    /// The caller's virtual key: its per-model limits apply to each target the call moves to.
    identity: Option<crate::auth::Identity>,
    /// Token limits charged so far, reconciled when the call settles.
    grant: Arc<std::sync::Mutex<crate::limits::TokenGrant>>,
}

impl Call {
    /// The requested model's targets (see [`permitted`]) in order, each with up to
    /// `max_attempts` attempts.
    async fn run(mut self, model: String, targets: Vec<String>) -> Response<Body> {
        self.gw.retry_budget.deposit();
        let routes = Arc::clone(&self.routes);
        let mut route_error = None;
        let mut limited = None;
        let asked = llmux_wire::model::model_key(&model);
        for target in &targets {
            let target = target.as_str();
            let endpoint = self.endpoint;
            let cands = match routes.plan(target, |k| endpoint.accepts(k), self.affinity) {
                Ok(c) => c,
                Err(e) => {
                    route_error.get_or_insert(e);
                    continue;
                }
            };
            // The requested name's own limits were checked at admission; a target's apply
            // when the call reaches it, and one that is spent is skipped.
            if llmux_wire::model::model_key(target) != asked {
                let dialect = self.endpoint.dialect();
                let id = self.identity.as_ref();
                match crate::limits::admit_model(&self.gw, id, target, &self.body, dialect).await {
                    Ok(g) => {
                        if let Ok(mut grant) = self.grant.lock() {
                            grant.absorb(g);
                        }
                    }
                    Err(refused) => {
                        self.failures
                            .push(format!("{target}: this API key's limit for it is reached"));
                        limited.get_or_insert(refused);
                        continue;
                    }
                }
            }
            if let Some(resp) = self.try_model(target, &cands).await {
                return resp;
            }
            if self.out_of_budget {
                break;
            }
        }
        if let Some(refused) = limited.filter(|_| self.attempts == 0) {
            return refused;
        }
        self.give_up(&model, route_error)
    }

    /// Tries the candidates for one model: another key of the same upstream after a key's
    /// failure, the next upstream after the upstream's failure.
    async fn try_model(&mut self, target: &str, cands: &[Candidate]) -> Option<Response<Body>> {
        let routing = &self.routes.config.routing;
        let (max, cooldown, max_cooldown) = (
            routing.max_attempts as usize,
            routing.cooldown,
            routing.max_cooldown,
        );
        let mut made = 0;
        let mut tried: Vec<(usize, Option<usize>)> = Vec::new();
        // Targets that answered a transient 5xx: retried (after a backoff) only once no other target is left.
        let mut again: Vec<(usize, Option<KeyPick>)> = Vec::new();
        let mut ci = 0;
        while made < max {
            let (idx, key, same_target) = if ci < cands.len() {
                let up = &cands[ci].upstream;
                let keys_tried: Vec<usize> = tried
                    .iter()
                    .filter(|(c, _)| *c == ci)
                    .filter_map(|(_, k)| *k)
                    .collect();
                let last_resort = ci + 1 >= cands.len() && self.attempts == 0;
                let key = if up.keys.is_empty() {
                    None
                } else {
                    let pick = up.keys.pick(self.affinity, &keys_tried).or_else(|| {
                        // Every key resting: better the one that rests least than no answer.
                        last_resort
                            .then(|| up.keys.soonest_cooling(&keys_tried))
                            .flatten()
                    });
                    match pick {
                        Some(k) => Some(k),
                        None => {
                            self.failures.push(format!("{}: no usable key", up.name));
                            ci += 1;
                            continue;
                        }
                    }
                };
                (ci, key, false)
            } else if let Some((i, k)) = again.pop() {
                (i, k, true)
            } else {
                break;
            };
            let cand = &cands[idx];
            let up = Arc::clone(&cand.upstream);
            let prepared = match self.prepare(cand) {
                Ok(p) => p,
                Err(Unprepared::Invalid(e)) => {
                    return Some(error(
                        self.endpoint.dialect(),
                        ErrorKind::InvalidRequest,
                        e.to_string(),
                    ))
                }
                Err(Unprepared::Inexpressible(e)) => {
                    self.failures
                        .push(format!("{}: cannot express the request: {e}", up.name));
                    self.inexpressible.get_or_insert(e);
                    ci = idx + 1;
                    continue;
                }
            };
            let admission = up.breaker.admit();
            if admission == Admission::Rejected {
                let others = cands[idx + 1..]
                    .iter()
                    .any(|c| c.upstream.breaker.is_available());
                if others || self.attempts > 0 {
                    self.failures.push(format!("{}: circuit open", up.name));
                    ci = idx + 1;
                    continue;
                }
                // The only candidate left: never eject it — a slow answer beats none.
            }
            let trial = TrialGuard((admission == Admission::Trial).then(|| Arc::clone(&up)));
            if self.attempts > 0 && !self.gw.retry_budget.try_withdraw() {
                self.failures.push("retry budget exhausted".into());
                self.out_of_budget = true;
                return None;
            }
            if same_target {
                tokio::time::sleep(retry::backoff(made as u32)).await;
            }
            tried.push((idx, key.map(|k| k.0)));
            made += 1;
            self.attempts += 1;
            let attempt_trace = self.trace.map(|t| t.child());
            let attempt_started = std::time::SystemTime::now();
            let outcome = self
                .attempt(cand, key, target, prepared, attempt_trace)
                .await;
            if let (Some(ctx), Some(parent)) = (attempt_trace, self.trace) {
                crate::telemetry::record(crate::telemetry::Span {
                    name: "llmux.attempt",
                    ctx,
                    parent: Some(parent.span_id),
                    kind: crate::telemetry::SpanKind::Client,
                    start: attempt_started,
                    end: std::time::SystemTime::now(),
                    attributes: vec![
                        ("llmux.upstream", up.name.clone().into()),
                        ("llmux.attempt", self.attempts.into()),
                        (
                            crate::telemetry::GEN_AI_REQUEST_MODEL,
                            cand.model.clone().into(),
                        ),
                    ],
                    error: match &outcome {
                        Outcome::Done(_) => None,
                        Outcome::Failed { reason, .. } => Some(reason.clone()),
                    },
                });
            }
            let used_key = key.and_then(|k| up.keys.get(k));
            match outcome {
                Outcome::Done(resp) => {
                    trial.disarm();
                    if let Some(k) = used_key {
                        k.answered(attempt_started.elapsed().unwrap_or_default());
                    }
                    if self.attempts > 1 {
                        self.gw.metrics.retried(true);
                    }
                    return Some(resp);
                }
                Outcome::Failed {
                    class,
                    reason,
                    reply,
                } => {
                    tracing::info!(
                        request_id = %self.request_id,
                        upstream = %up.name,
                        key = key.and_then(|k| up.keys.get(k)).map_or("", |k| k.id.as_str()),
                        reason,
                        ?class,
                        "attempt failed"
                    );
                    up.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(k) = used_key {
                        k.failed();
                    }
                    let status = reply.as_ref().map(|r| r.status.as_u16());
                    self.log_attempt(accounting::AttemptRecord {
                        upstream: up.name.clone(),
                        key_id: used_key.map(|k| k.id.clone()),
                        status,
                        error_class: Some(attempt_failure_class(status, &class).to_string()),
                        ms: attempt_started
                            .elapsed()
                            .unwrap_or_default()
                            .as_millis()
                            .try_into()
                            .unwrap_or(u64::MAX),
                    });
                    up.metrics.attempt_failed(match class {
                        Class::OtherUpstream | Class::Client => 0,
                        Class::Throttled { .. } => 1,
                        Class::BadKey => 2,
                    });
                    up.update(|s| s.last_error = Some(reason.clone()));
                    self.failures.push(format!("{}: {reason}", up.name));
                    match class {
                        Class::OtherUpstream => {
                            if let Some(open_for) = up.breaker.failure() {
                                tracing::warn!(upstream = %up.name, ?open_for, "circuit opened: upstream ejected");
                            }
                            trial.disarm();
                            if reply.is_some() && !same_target {
                                again.insert(0, (idx, key));
                            }
                            ci = ci.max(idx + 1);
                        }
                        Class::Throttled { retry_after } => {
                            let rest = retry::rest(retry_after, cooldown, max_cooldown);
                            up.mark_throttled(rest);
                            match key {
                                Some(k) => up.keys.cool(k, rest),
                                None => ci = ci.max(idx + 1),
                            }
                        }
                        Class::BadKey => match key.and_then(|k| up.keys.get(k).map(|kk| (k, kk))) {
                            Some((k, kk)) => {
                                if up.keys.disable(k, &reason) {
                                    tracing::warn!(upstream = %up.name, key = %kk.id, reason, "key disabled");
                                }
                            }
                            None => ci = ci.max(idx + 1),
                        },
                        Class::Client => {}
                    }
                    // A key's 401 is no answer for the client (it did not send that key).
                    if class != Class::BadKey && reply.is_some() {
                        self.last_reply = reply;
                    }
                }
            }
        }
        None
    }

    /// The URL and body for `cand`: the client's bytes (model rewritten) when the upstream
    /// speaks the client's dialect, else the canonical form encoded in the upstream's.
    fn prepare(&mut self, cand: &Candidate) -> Result<Prepared, Unprepared> {
        let up = &cand.upstream;
        let ingress = self.endpoint.dialect();
        let upstream = egress::dialect_for(up.kind, ingress);
        if self.endpoint.passes_through(up.kind) {
            let mut body = if self.model_in_path {
                self.body.clone()
            } else {
                self.peek.with_model(&self.body, &cand.model)
            };
            // A stream's tokens come from the upstream's own count, not an estimate: ask for it
            // when the client did not (the extra usage chunk is stripped on the way back).
            let mut added_usage = false;
            if matches!(
                self.endpoint,
                Endpoint::ChatCompletions | Endpoint::Completions
            ) && self.peek.stream == Some(true)
                && !self.peek.include_usage
                && egress::reports_stream_usage(up.kind)
            {
                if let Some(b) = egress::with_include_usage(&body) {
                    body = b;
                    added_usage = true;
                }
            }
            let url = self
                .endpoint
                .passthrough_parsed(up, &cand.model, self.gemini_sse)
                .map_err(|e| Unprepared::Inexpressible(TranslateError::new("", e)))?;
            return Ok(Prepared {
                url,
                body,
                translated: None,
                added_usage,
            });
        }
        if self.endpoint.is_embed() {
            return self.prepare_embed(cand, upstream);
        }
        let Some(op) = self.endpoint.op() else {
            return Err(Unprepared::Inexpressible(TranslateError::new(
                "",
                format!(
                    "{} calls cannot be translated to the {} API",
                    self.endpoint.as_str(),
                    upstream.as_str()
                ),
            )));
        };
        let canonical = self.canonical_request(op).map_err(Unprepared::Invalid)?;
        let mut req = canonical.clone();
        req.model = cand.model.clone();
        let include_usage = req.include_usage;
        // Usage is needed to answer clients whose dialect always reports it (and for accounting).
        req.include_usage = true;
        let body = translate::codec(upstream)
            .encode_request(&req)
            .map_err(Unprepared::Inexpressible)?;
        Ok(Prepared {
            // Translated bodies are always chat bodies (a legacy prompt travels as one user message).
            url: parse_url(egress::chat_url(
                up,
                upstream,
                Op::Chat,
                &cand.model,
                req.stream,
            ))?,
            body: Bytes::from(body),
            translated: Some(Translated {
                upstream,
                op,
                stream: req.stream,
                include_usage,
                embed: None,
            }),
            added_usage: false,
        })
    }

    /// Embeddings between dialects: decoded from the client's call, encoded for the upstream's.
    fn prepare_embed(&self, cand: &Candidate, upstream: Dialect) -> Result<Prepared, Unprepared> {
        let body = &self.body[..];
        let (mut req, format) = match self.endpoint {
            Endpoint::Embeddings => embed::decode_openai_request(body),
            Endpoint::OllamaEmbed => {
                embed::decode_ollama_request(body).map(|r| (r, Default::default()))
            }
            Endpoint::OllamaEmbeddings => {
                embed::decode_ollama_legacy_request(body).map(|r| (r, Default::default()))
            }
            Endpoint::GeminiEmbed => {
                embed::decode_gemini_request(body).map(|r| (r, Default::default()))
            }
            _ => embed::decode_gemini_batch_request(body).map(|r| (r, Default::default())),
        }
        .map_err(Unprepared::Invalid)?;
        req.model = cand.model.clone();
        let encoded = match upstream {
            Dialect::OpenAi => embed::encode_openai_request(&req),
            Dialect::Ollama => embed::encode_ollama_request(&req),
            Dialect::Gemini => embed::encode_gemini_batch_request(&req),
            Dialect::Anthropic => Err(TranslateError::new("", "Anthropic has no embeddings API")),
        }
        .map_err(Unprepared::Inexpressible)?;
        Ok(Prepared {
            url: parse_url(egress::embed_url(&cand.upstream, upstream, &cand.model))?,
            body: Bytes::from(encoded),
            translated: Some(Translated {
                upstream,
                op: Op::Chat,
                stream: false,
                include_usage: false,
                embed: Some(format),
            }),
            added_usage: false,
        })
    }

    /// An upstream's embeddings answer, in the client's dialect.
    fn translate_embeddings(&self, t: Translated, body: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let resp = match t.upstream {
            Dialect::OpenAi => embed::decode_openai_response(body),
            Dialect::Ollama => embed::decode_ollama_response(body),
            Dialect::Gemini => embed::decode_gemini_batch_response(body),
            Dialect::Anthropic => Err(TranslateError::new("", "Anthropic has no embeddings API")),
        }?;
        Ok(match self.endpoint {
            Endpoint::Embeddings => {
                embed::encode_openai_response(&resp, t.embed.unwrap_or_default())
            }
            Endpoint::OllamaEmbed => embed::encode_ollama_response(&resp),
            Endpoint::OllamaEmbeddings => embed::encode_ollama_legacy_response(&resp),
            Endpoint::GeminiEmbed => embed::encode_gemini_response(&resp),
            _ => embed::encode_gemini_batch_response(&resp),
        })
    }

    fn canonical_request(&mut self, op: Op) -> Result<&ChatRequest, TranslateError> {
        if self.canonical.is_none() {
            let codec = self.endpoint.codec();
            let decoded = codec.decode_request(op, &self.body).map(|mut r| {
                if self.model_in_path {
                    r.model = self.peek.model.clone().unwrap_or_default();
                }
                if self.endpoint == Endpoint::GeminiStream {
                    r.stream = true;
                }
                r
            });
            self.canonical = Some(decoded);
        }
        match &self.canonical {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e.clone()),
            None => Err(TranslateError::new("", "request could not be decoded")),
        }
    }

    async fn attempt(
        &self,
        cand: &Candidate,
        key: Option<KeyPick>,
        target: &str,
        prepared: Prepared,
        trace: Option<crate::telemetry::TraceContext>,
    ) -> Outcome {
        let up = &cand.upstream;
        let guard = up.begin();
        let mut call = up
            .client
            .post(prepared.url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(prepared.body);
        call = egress::authorize(
            call,
            up,
            key.and_then(|k| up.keys.get(k)).map(|k| k.secret.expose()),
        );
        if let Some(t) = trace {
            call = call.header("traceparent", t.header());
        }
        if up.kind == UpstreamKind::Anthropic {
            if let Some(beta) = &self.anthropic_beta {
                call = call.header("anthropic-beta", beta.clone());
            }
        }
        let translated = prepared.translated;
        let added_usage = prepared.added_usage;
        self.note_attempt(cand, key);
        let attempt_start = Instant::now();
        let deadline =
            crate::deadline::after_tokio(tokio::time::Instant::now(), up.timeouts.first_byte);
        let failed = |reason: String| Outcome::Failed {
            class: Class::OtherUpstream,
            reason,
            reply: None,
        };
        let resp = match tokio::time::timeout_at(deadline, call.send()).await {
            Err(_) => {
                return failed(format!(
                    "no response within {:?} (timeouts.first_byte)",
                    up.timeouts.first_byte
                ))
            }
            Ok(Err(e)) => {
                let reason = describe(&e);
                if e.is_connect() {
                    up.mark_down(&reason);
                }
                return failed(reason);
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if status.is_redirection() {
            // Redirects are never followed (a key must not travel to another host), and a 3xx
            // is no answer for the client: the upstream failed this attempt.
            return failed(format!(
                "HTTP {} redirect from the upstream (not followed)",
                status.as_u16()
            ));
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok());
            let class = retry::classify_status(status, retry_after);
            if class != Class::Client {
                let headers = pick_headers(resp.headers());
                let body = tokio::time::timeout_at(deadline, read_limited(resp, ERROR_BODY_LIMIT))
                    .await
                    .unwrap_or_default();
                let (headers, body) = self.client_error(translated, status, headers, body);
                return Outcome::Failed {
                    class,
                    reason: format!("HTTP {}", status.as_u16()),
                    reply: Some(Reply {
                        status,
                        headers,
                        body,
                        upstream: up.name.clone(),
                    }),
                };
            }
        }
        let headers = pick_headers(resp.headers());
        let content_length = resp.content_length();
        let mut stream = resp.bytes_stream().boxed();
        // Nothing has reached the client yet: wait for the first bytes too, so a node that
        // answers headers and then dies is still retried elsewhere.
        let first = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return failed(format!(
                    "no data within {:?} (timeouts.first_byte)",
                    up.timeouts.first_byte
                ))
            }
            Ok(Some(Err(e))) => return failed(describe(&e)),
            Ok(Some(Ok(chunk))) => Some(chunk),
            Ok(None) => None,
        };
        // The upstream answered (a client error is still an answer): good for its breaker.
        up.breaker.success();
        if status.is_success() {
            up.record_ttft(attempt_start.elapsed());
            up.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if up.kind == UpstreamKind::Ollama && self.endpoint.loads_model() {
                up.mark_loaded(&cand.model);
            }
        }
        let log = CallLog {
            request_id: self.request_id.clone(),
            endpoint: self.endpoint,
            model: target.to_string(),
            upstream: up.name.clone(),
            status: status.as_u16(),
            attempts: self.attempts,
            started: self.started,
            ttft: self.started.elapsed(),
            draft: self.take_draft(accounting::AttemptRecord {
                upstream: up.name.clone(),
                key_id: key.and_then(|k| up.keys.get(k)).map(|k| k.id.clone()),
                status: Some(status.as_u16()),
                error_class: accounting::status_class(status.as_u16()).map(str::to_string),
                ms: attempt_start
                    .elapsed()
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            }),
            cut: self.gw.accounting.streams_cut.clone(),
        };
        let Some(t) = translated else {
            let format = stream_format(&headers);
            let mut relay = Relay::new(
                first,
                stream,
                up.timeouts.idle,
                format,
                content_length,
                log,
                guard,
            );
            if added_usage && status.is_success() && format == Some(Dialect::OpenAi) {
                relay = relay.stripping_usage();
            }
            let mut out = Response::new(Body::new(relay));
            out.extensions_mut().insert(CallLogged);
            *out.status_mut() = status;
            self.decorate(&mut out, headers, &up.name, Some(target));
            return Outcome::Done(out);
        };
        let ingress = self.endpoint.dialect();
        let upstream_streams = stream_format(&headers).is_some();
        if status.is_success() && t.stream && upstream_streams {
            // Transcoded event by event as the upstream produces them; never collected first.
            let encoder = ingress_encoder(self.endpoint, self.gemini_sse, t.op, t.include_usage);
            let content_type = encoder.content_type();
            let transcoder =
                Transcoder::new(translate::codec(t.upstream).stream_decoder(), encoder);
            let relay = Relay::new(
                first,
                stream,
                up.timeouts.idle,
                Some(ingress),
                None,
                log,
                guard,
            )
            .transcoding(transcoder);
            let mut out = Response::new(Body::new(relay));
            out.extensions_mut().insert(CallLogged);
            *out.status_mut() = status;
            let headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
            self.decorate(&mut out, headers, &up.name, Some(target));
            return Outcome::Done(out);
        }
        // A whole answer: nothing has reached the client yet, so a body that breaks or stalls
        // now can still be retried elsewhere.
        let limit = self.routes.config.server.max_upstream_body;
        let idle = up.timeouts.idle;
        let body = match read_whole(first, &mut stream, content_length, idle, limit).await {
            Ok(body) => body,
            Err(WholeError::Broken(e)) => return self.put_back(log.draft, failed(describe(&e))),
            Err(WholeError::Stalled) => {
                let reason = format!("upstream stalled: no data for {idle:?} (timeouts.idle)");
                return self.put_back(log.draft, failed(reason));
            }
            Err(WholeError::TooLarge) => {
                // Not a sick upstream, and no use asking another: the same request would get
                // an answer as large. Refused whole, without a retry or a breaker failure.
                let message = format!(
                    "upstream '{}' answered with more than {limit} bytes, the most llmux holds \
                     to translate an answer (server.max_upstream_body)",
                    up.name
                );
                tracing::warn!(request_id = %self.request_id, upstream = %up.name, limit, "upstream answer too large to translate");
                up.metrics.call(
                    self.endpoint,
                    crate::metrics::Outcome::UpstreamError,
                    self.started.elapsed(),
                    log.ttft,
                );
                let kind = ErrorKind::BadGateway;
                if let Some(d) = log.draft {
                    d.finish(
                        kind.status(),
                        Some("upstream_error"),
                        Some(log.ttft),
                        Tokens::default(),
                        None,
                    );
                }
                let mut out = error(ingress, kind, message);
                self.decorate(&mut out, Vec::new(), &up.name, Some(target));
                return Outcome::Done(out);
            }
        };
        drop(guard);
        let draft = log.draft;
        if !status.is_success() {
            if let Some(d) = draft {
                d.finish(
                    status.as_u16(),
                    None,
                    Some(log.ttft),
                    Tokens::default(),
                    Some(&body),
                );
            }
            let (headers, body) = self.client_error(Some(t), status, headers, Bytes::from(body));
            let mut out = Response::new(Body::from(body));
            *out.status_mut() = status;
            self.decorate(&mut out, headers, &up.name, Some(target));
            return Outcome::Done(out);
        }
        if t.embed.is_some() {
            let bytes = match self.translate_embeddings(t, &body) {
                Ok(b) => b,
                Err(e) => {
                    return self.put_back(
                        draft,
                        failed(format!("upstream answer could not be read: {e}")),
                    )
                }
            };
            if let Some(d) = draft {
                let mut tap = accounting::UsageTap::new(None);
                tap.feed(&Bytes::from(body));
                let mut tokens = tap.finish(d.request_bytes);
                if tokens.estimated {
                    // Embeddings produce no text: only the input counts.
                    tokens.output = 0;
                }
                d.finish(status.as_u16(), None, Some(log.ttft), tokens, None);
            }
            let mut out = Response::new(Body::from(bytes));
            *out.status_mut() = status;
            let headers = vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )];
            self.decorate(&mut out, headers, &up.name, Some(target));
            return Outcome::Done(out);
        }
        let answer = match translate::codec(t.upstream).decode_response(&body) {
            Ok(a) => a,
            Err(e) => {
                return self.put_back(
                    draft,
                    failed(format!("upstream answer could not be read: {e}")),
                )
            }
        };
        let (content_type, bytes) = if t.stream {
            // The client asked for a stream but the upstream answered whole: replay it as events.
            let mut encoder =
                ingress_encoder(self.endpoint, self.gemini_sse, t.op, t.include_usage);
            let mut out = Vec::new();
            for event in answer_events(&answer) {
                encoder.encode(&event, &mut out);
            }
            encoder.finish(&mut out);
            (encoder.content_type(), out)
        } else {
            (
                "application/json",
                self.endpoint.codec().encode_response(t.op, &answer),
            )
        };
        up.metrics.call(
            self.endpoint,
            crate::metrics::Outcome::Ok,
            self.started.elapsed(),
            self.started.elapsed(),
        );
        up.metrics
            .tokens(answer.usage.input_tokens, answer.usage.output_tokens);
        tracing::info!(
            request_id = %self.request_id,
            endpoint = self.endpoint.as_str(),
            model = %target,
            upstream = %up.name,
            status = status.as_u16(),
            attempts = self.attempts,
            input_tokens = answer.usage.input_tokens,
            output_tokens = answer.usage.output_tokens,
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = "ok",
            "call"
        );
        if let Some(mut d) = draft {
            if !answer.model.is_empty() {
                let m = accounting::cap(&answer.model, accounting::MAX_CLIENT_STRING);
                d.record.reported_model = Some(m.to_string());
            }
            let tokens =
                accounting::from_canonical(Some(answer.usage), d.request_bytes, bytes.len() as u64);
            d.finish(status.as_u16(), None, Some(log.ttft), tokens, Some(&bytes));
        }
        let mut out = Response::new(Body::from(bytes));
        out.extensions_mut().insert(CallLogged);
        *out.status_mut() = status;
        let headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
        self.decorate(&mut out, headers, &up.name, Some(target));
        Outcome::Done(out)
    }

    /// Notes on the call's record where the prompt is about to go, before it is sent: a call
    /// dropped while it waits (client gone, shutdown) is charged for a prompt an upstream has.
    fn note_attempt(&self, cand: &Candidate, key: Option<KeyPick>) {
        let Ok(mut slot) = self.draft.lock() else {
            return;
        };
        if let Some(d) = slot.as_mut() {
            let up = &cand.upstream;
            d.record.upstream = Some(up.name.clone());
            d.record.upstream_model = Some(cand.model.clone());
            d.record.provider_key_id = key.and_then(|k| up.keys.get(k)).map(|k| k.id.clone());
            d.record.attempts = self.attempts as u32;
        }
    }

    /// Takes the call's record for the attempt that answers (its upstream already noted);
    /// `answered` joins the failed attempts in its log.
    fn take_draft(&self, answered: accounting::AttemptRecord) -> Option<Draft> {
        let mut d = self.draft.lock().ok()?.take()?;
        d.record.attempts = self.attempts as u32;
        d.record.attempt_log.clone_from(&self.attempt_log);
        d.record.attempt_log.push(answered);
        Some(d)
    }

    /// Adds a failed attempt to the call's log, and to the record if no answer took it (an
    /// answer that failed after all put it back): a call nobody answers is logged with them.
    fn log_attempt(&mut self, failed: accounting::AttemptRecord) {
        self.attempt_log.push(failed);
        if let Ok(mut slot) = self.draft.lock() {
            if let Some(d) = slot.as_mut() {
                d.record.attempt_log.clone_from(&self.attempt_log);
            }
        }
    }

    /// Gives the record back when an attempt that took it fails after all (it can be retried).
    fn put_back(&self, draft: Option<Draft>, outcome: Outcome) -> Outcome {
        if let (Some(d), Ok(mut slot)) = (draft, self.draft.lock()) {
            *slot = Some(d);
        }
        outcome
    }

    /// An upstream error body as the client's dialect spells it (unchanged on passthrough).
    fn client_error(
        &self,
        translated: Option<Translated>,
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> (Vec<(HeaderName, HeaderValue)>, Bytes) {
        let Some(t) = translated else {
            return (headers, body);
        };
        let message = translate::codec(t.upstream)
            .error_message(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
        let kind = kind_for_status(status);
        let rendered = self.endpoint.dialect().error_body(kind, &message);
        let mut out = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        out.extend(
            headers
                .into_iter()
                .filter(|(n, _)| n == header::RETRY_AFTER),
        );
        (out, Bytes::from(rendered))
    }

    fn decorate(
        &self,
        out: &mut Response<Body>,
        headers: Vec<(HeaderName, HeaderValue)>,
        upstream: &str,
        model: Option<&str>,
    ) {
        let h = out.headers_mut();
        for (name, value) in headers {
            h.insert(name, value);
        }
        if self.routes.config.server.upstream_header {
            let cached = self
                .routes
                .upstream(upstream)
                .and_then(|u| u.name_header.clone());
            if let Some(v) = cached.or_else(|| HeaderValue::from_str(upstream).ok()) {
                h.insert(crate::X_LLMUX_UPSTREAM, v);
            }
        }
        if let Some(v) = model.and_then(|m| HeaderValue::from_str(m).ok()) {
            h.insert(crate::X_LLMUX_MODEL, v);
        }
        h.insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(self.attempts));
    }

    /// Every option failed before a byte reached the client.
    fn give_up(self, model: &str, route_error: Option<RouteError>) -> Response<Body> {
        let dialect = self.endpoint.dialect();
        if self.attempts > 1 {
            self.gw.metrics.retried(false);
        }
        if self.attempts == 0 {
            if let Some(e) = route_error.filter(|_| self.failures.is_empty()) {
                let kind = match e {
                    RouteError::Incompatible { .. } => ErrorKind::InvalidRequest,
                    _ => ErrorKind::ModelNotFound,
                };
                return error(dialect, kind, e.to_string());
            }
        }
        if self.attempts == 0 {
            if let Some(e) = &self.inexpressible {
                // No upstream serving the model can express the request: the client must change it.
                return error(dialect, ErrorKind::InvalidRequest, e.to_string());
            }
        }
        let summary = self.failures.join("; ");
        tracing::warn!(request_id = %self.request_id, model, attempts = self.attempts, failures = %summary, "no upstream could serve the call");
        if let Some(reply) = &self.last_reply {
            // The upstream's own answer (a 5xx or a 429 with Retry-After) says more than a generic 502.
            let mut out = Response::new(Body::from(reply.body.clone()));
            *out.status_mut() = reply.status;
            self.decorate(&mut out, reply.headers.clone(), &reply.upstream, None);
            return out;
        }
        let kind = if self.attempts == 0 {
            ErrorKind::Unavailable
        } else {
            ErrorKind::BadGateway
        };
        let mut out = error(
            dialect,
            kind,
            format!("no upstream could serve model '{model}': {summary}"),
        );
        out.headers_mut()
            .insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(self.attempts));
        out
    }
}

fn parse_url(text: String) -> Result<reqwest::Url, Unprepared> {
    reqwest::Url::parse(&text).map_err(|e| {
        Unprepared::Inexpressible(TranslateError::new(
            "",
            format!("bad upstream URL {text}: {e}"),
        ))
    })
}

/// The client-side stream encoder; OpenAI's needs to know whether usage was asked for, and
/// Gemini's is a JSON array unless the client asked for `alt=sse`.
fn ingress_encoder(
    endpoint: Endpoint,
    gemini_sse: bool,
    op: Op,
    include_usage: bool,
) -> Box<dyn llmux_wire::canonical::StreamEncoder> {
    match endpoint.dialect() {
        Dialect::OpenAi if endpoint != Endpoint::Responses => {
            translate::openai::OpenAiCodec.stream_encoder_with(op, include_usage)
        }
        Dialect::Gemini if !gemini_sse => Box::new(translate::json_array::JsonArrayEncoder::new(
            endpoint.codec().stream_encoder(op),
        )),
        _ => endpoint.codec().stream_encoder(op),
    }
}

/// A whole answer as the events a stream of it would have carried.
fn answer_events(
    a: &llmux_wire::canonical::ChatResponse,
) -> Vec<llmux_wire::canonical::StreamEvent> {
    use llmux_wire::canonical::StreamEvent as E;
    let mut events = vec![E::Start {
        id: a.id.clone(),
        model: a.model.clone(),
    }];
    if !a.text.is_empty() {
        events.push(E::Text(a.text.clone()));
    }
    for (index, call) in a.tool_calls.iter().enumerate() {
        events.push(E::ToolCallStart {
            index,
            id: call.id.clone(),
            name: call.name.clone(),
        });
        events.push(E::ToolCallArgs {
            index,
            fragment: call.arguments.clone(),
        });
    }
    events.push(E::Finish(a.finish.clone()));
    events.push(E::Usage(a.usage));
    events
}

/// The error kind whose status is `status`, for re-rendering an upstream error.
fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        402 | 403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::ModelNotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Unavailable,
        504 => ErrorKind::Timeout,
        500..=599 => ErrorKind::BadGateway,
        _ => ErrorKind::InvalidRequest,
    }
}

/// Holds a half-open breaker's trial claim; dropping it without a verdict (hang-up, a key's
/// error) frees the trial for the next call instead of leaving the breaker stuck.
struct TrialGuard(Option<Arc<Upstream>>);

impl TrialGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TrialGuard {
    fn drop(&mut self) {
        if let Some(up) = self.0.take() {
            up.breaker.release_trial();
        }
    }
}

/// Why a whole upstream answer could not be read.
pub(crate) enum WholeError {
    /// The connection broke mid-body.
    Broken(reqwest::Error),
    /// No data for `timeouts.idle`.
    Stalled,
    /// Longer than `server.max_upstream_body` (declared or as it arrived).
    TooLarge,
}

/// Reads an answer whole (to translate it): each chunk within `idle`, at most `limit` bytes.
pub(crate) async fn read_whole(
    first: Option<Bytes>,
    stream: &mut futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    declared: Option<u64>,
    idle: std::time::Duration,
    limit: usize,
) -> Result<Vec<u8>, WholeError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(WholeError::TooLarge);
    }
    let first = first.unwrap_or_default();
    if first.len() > limit {
        return Err(WholeError::TooLarge);
    }
    // The declared length saves regrowing the buffer, but only up to 1 MiB: memory is spent
    // on bytes that arrived, not on what an upstream claims it will send.
    let capacity = declared.map_or(0, |n| (n as usize).min(1 << 20));
    let mut body = Vec::with_capacity(capacity.max(first.len()));
    body.extend_from_slice(&first);
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(WholeError::Stalled),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => return Err(WholeError::Broken(e)),
            Ok(Some(Ok(chunk))) => {
                if chunk.len() > limit - body.len() {
                    return Err(WholeError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// The start of an error body, at most `limit` bytes; the rest is not read. Callers bound the
/// time too (the attempt's first-byte deadline), so a trickling error body cannot hold a call.
async fn read_limited(resp: reqwest::Response, limit: usize) -> Bytes {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

/// Reads the body within `max_body` and peeks at it, checking the content type first.
async fn read_request(
    req: Request,
    dialect: Dialect,
    max_body: usize,
) -> Result<(Bytes, Peek), ApiError> {
    let bad = |m: String| ApiError::new(dialect, ErrorKind::InvalidRequest, m);
    // Ollama reads any body as JSON, and its own examples (`curl -d`) send it as form data.
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .filter(|_| dialect != Dialect::Ollama);
    if let Some(ct) = content_type {
        let text = ct.to_str().unwrap_or_default();
        let mime = text.split(';').next().unwrap_or_default().trim();
        let json = mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json");
        if !json {
            return Err(bad(format!(
                "unsupported content type '{text}': send the request body as application/json"
            )));
        }
    }
    let too_large = || {
        ApiError::new(
            dialect,
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the limit of {max_body} bytes (server.max_body)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(too_large());
    }
    let body = match axum::body::to_bytes(req.into_body(), max_body).await {
        Ok(b) => b,
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            return Err(if over {
                too_large()
            } else {
                bad(format!("could not read the request body: {e}"))
            });
        }
    };
    if body.is_empty() {
        return Err(bad("request body is empty: send a JSON object".into()));
    }
    let peek = Peek::parse(&body).map_err(|e| bad(e.to_string()))?;
    Ok((body, peek))
}

pub fn error(dialect: Dialect, kind: ErrorKind, message: impl Into<String>) -> Response<Body> {
    axum::response::IntoResponse::into_response(ApiError::new(dialect, kind, message))
}

/// A reqwest error in words an operator can act on, without the URL (it may carry a key in a query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

fn pick_headers(from: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    PASSED_HEADERS
        .iter()
        .filter_map(|name| from.get(name).map(|v| (name.clone(), v.clone())))
        .collect()
}

/// The streaming format of a response, judged by what the upstream actually sent.
fn stream_format(headers: &[(HeaderName, HeaderValue)]) -> Option<Dialect> {
    let ct = headers
        .iter()
        .find(|(n, _)| n == header::CONTENT_TYPE)
        .and_then(|(_, v)| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        Some(Dialect::OpenAi)
    } else if ct.starts_with("application/x-ndjson") {
        Some(Dialect::Ollama)
    } else {
        None
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod admission_tests;

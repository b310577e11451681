//! One model call as a pipeline of named stages over one owned per-call context (`Call`):
//! `admission` (read the request; model permission), `hooked` (the `[[hooks]]` in scope:
//! refuse, change, add headers, mask the log), `admission` again (the key's limits, credit) → `plan`
//! (targets and their candidates, in order) → `failover` (what to try next, how to react to a
//! failure) → `send` (the upstream request, up to its first byte) → `respond` (passthrough,
//! transcoded stream, whole translated answer, embeddings). The call's record travels in the
//! context from start to settle; whoever answers the client takes it.

pub(crate) mod admission;
mod cached;
pub mod failover;
pub mod failure;
mod hooked;
mod inline;
mod line;
mod plan;
mod prepare;
mod respond;
mod send;

pub use crate::endpoint::Endpoint;
pub use admission::{check_model, ModelNameError, MAX_MODEL_LEN};
pub(crate) use line::log_refused;
pub(crate) use send::{read_whole, WholeError};

use crate::accounting::Draft;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::limits::{Decision, Layer};
use crate::routing::Routes;
use crate::telemetry::TraceContext;
use crate::Gateway;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use failure::Failure;
use line::{CallLine, CallLogged, Shown};
use llmux_wire::canonical::{ChatRequest, TranslateError};
use llmux_wire::{Dialect, ErrorKind, Peek};
use std::sync::Arc;
use std::time::Instant;

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

/// What a call still waiting for its answer at the end of the grace period is told.
const SHUTDOWN_CUT: &str =
    "llmux is shutting down: the call was cut at the end of server.shutdown_grace; retry it";

/// One model call; every finished call — answered, refused or failed — logs one `call` line.
/// A call whose client hangs up before its answer is ready (the handler is dropped) logs its
/// line as `client_closed` from `CallLine`'s drop.
pub async fn handle_with(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    req: Request,
    path: PathModel,
) -> Response<Body> {
    let mut line = CallLine::new(&req, endpoint);
    // At the end of `server.shutdown_grace` a call still waiting for its answer is cut as
    // open streams are: answered now (its record settles as `shutdown` when the call's future
    // is dropped here), while the call-log writer still runs.
    let cut = gw.accounting.streams_cut.clone();
    let dialect = endpoint.dialect();
    let (mut resp, shown) = tokio::select! {
        answer = handle_call(gw, endpoint, req, path, &mut line.model) => answer,
        () = cut.cancelled() => (error(dialect, ErrorKind::Unavailable, SHUTDOWN_CUT), Shown::default()),
    };
    line.answered(&mut resp, &shown, cut.is_cancelled());
    resp
}

/// Admission, then the plan with its failover, then the record of a call nobody answered.
async fn handle_call(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    req: Request,
    path: PathModel,
    requested: &mut Option<String>,
) -> (Response<Body>, Shown) {
    // Read before the request is taken; used only when `[cache]` covers the call.
    let directive = crate::cache::Directive::of(req.headers());
    let (mut call, model, targets) = match Call::intake(gw, endpoint, req, path, requested).await {
        Ok(c) => c,
        Err(resp) => return (resp, Shown::default()),
    };
    if let Err(refusal) = call.hook(&model).await {
        return call.finish(refusal);
    }
    let resp = match call.admit(&model, &targets).await {
        Ok(()) => call.run_cached(&model, &targets, directive).await,
        Err(refusal) => refusal,
    };
    call.finish(resp)
}

/// An upstream's error answer, kept to hand back if nothing better comes of the retries.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    upstream: String,
}

/// How one attempt ended.
enum Outcome {
    /// Committed: success or the client's own error, already flowing to the client.
    Done(Response<Body>),
    Failed(Failed),
}

/// A failed attempt: its class, the reason in words, and the upstream's answer if it sent one.
struct Failed {
    failure: Failure,
    reason: String,
    reply: Option<Reply>,
}

impl Failed {
    /// The upstream failed without an answer worth handing back.
    fn upstream(reason: String) -> Failed {
        Failed {
            failure: Failure::UPSTREAM,
            reason,
            reply: None,
        }
    }
}

/// One client call on its way through the stages: what the request says, the call's record,
/// and what its attempts found. Owned by the call's handler; dropping it (a hang-up) settles
/// the record as `client_closed`.
pub(crate) struct Call {
    gw: Arc<Gateway>,
    /// The routing snapshot the call started with.
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
    /// The call's span, when tracing is on: attempts are its children.
    trace: Option<TraceContext>,
    /// The caller's virtual key: its per-model limits apply to each target the call moves to.
    identity: Option<Identity>,
    /// The call-log record (`None`: no accountant installed); whoever answers the client takes it.
    draft: Option<Draft>,
    /// The key's rate-limit decisions, rendered as `x-ratelimit-*` headers on the answer.
    rates: Vec<(Layer, Decision)>,
    /// The body in canonical form, decoded once, on the first attempt that needs translating.
    canonical: Option<Result<ChatRequest, TranslateError>>,
    /// Set when some candidate could not express the request (reported if nothing else works).
    inexpressible: Option<TranslateError>,
    attempts: usize,
    /// The record's attempt log ends with the attempt whose answer is being read.
    answering: bool,
    failures: Vec<String>,
    last_reply: Option<Reply>,
    out_of_budget: bool,
    /// What the answer's `x-llmux-*` headers say, for the call line and the record.
    shown: Shown,
    /// Headers the hooks in scope add to every upstream request of the call.
    hook_headers: Vec<(HeaderName, HeaderValue)>,
    /// The response cache keeps this call's whole answer: the respond stage notes it in
    /// `captured` (and reads a passthrough answer whole rather than relaying it).
    capture: bool,
    captured: Option<crate::cache::Entry>,
    /// The answer this call stored in the cache, for the followers of a coalesced call.
    stored: Option<Arc<crate::cache::Entry>>,
}

impl Call {
    fn dialect(&self) -> Dialect {
        self.endpoint.dialect()
    }

    /// Sets the answer's headers: the upstream's `headers`, then `x-llmux-upstream` (when
    /// `server.upstream_header`), `x-llmux-model` and `x-llmux-attempts`. `logged`: the
    /// answer logs its own call line (else the call line and the record read [`Shown`]).
    fn decorate(
        &mut self,
        out: &mut Response<Body>,
        headers: Vec<(HeaderName, HeaderValue)>,
        upstream: &str,
        model: Option<&str>,
        logged: bool,
    ) {
        let h = out.headers_mut();
        for (name, value) in headers {
            h.insert(name, value);
        }
        let mut shown_upstream = false;
        if self.routes.config.server.upstream_header {
            let cached = self
                .routes
                .upstream(upstream)
                .and_then(|u| u.name_header.clone());
            if let Some(v) = cached.or_else(|| HeaderValue::from_str(upstream).ok()) {
                h.insert(crate::X_LLMUX_UPSTREAM, v);
                shown_upstream = true;
            }
        }
        let mut shown_model = None;
        if let Some((m, v)) = model.and_then(|m| Some((m, HeaderValue::from_str(m).ok()?))) {
            h.insert(crate::X_LLMUX_MODEL, v);
            shown_model = Some(m);
        }
        h.insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(self.attempts));
        if logged {
            out.extensions_mut().insert(CallLogged);
        } else {
            self.shown = Shown {
                model: shown_model.map(str::to_string),
                upstream: shown_upstream.then(|| upstream.to_string()),
                attempts: self.attempts as u64,
            };
        }
    }

    /// The end of the call: the key's rate-limit headers go on the answer, and a record no
    /// upstream answer took (refused, no route, every attempt failed) is settled now.
    fn finish(mut self, mut resp: Response<Body>) -> (Response<Body>, Shown) {
        crate::limits::rate_headers_of(resp.headers_mut(), &self.rates);
        if let Some(mut d) = self.draft.take() {
            d.record.attempts = self.shown.attempts as u32;
            d.record.upstream = self.shown.upstream.clone();
            // What the failed attempts noted stays out of the record: no upstream served it.
            d.record.upstream_model = None;
            d.record.provider_key_id = None;
            d.finish(resp.status().as_u16(), None, None, Default::default(), None);
        }
        (resp, self.shown)
    }
}

pub fn error(dialect: Dialect, kind: ErrorKind, message: impl Into<String>) -> Response<Body> {
    axum::response::IntoResponse::into_response(ApiError::new(dialect, kind, message))
}

#[cfg(test)]
mod admission_tests;

//! Layered rate limits: per client IP and global before authentication, then per virtual key
//! (requests and tokens per minute, concurrent calls) and per model once the model is known.
//!
//! Counters live in this process ([`MemoryLimiter`], GCRA) or in a shared backend (Redis,
//! wired by the binary through [`SharedBackend`]) so that many instances share one limit. When
//! the shared backend fails, calls are limited locally (or refused, with `fail_open = false`)
//! while a background probe waits for it to come back.

mod memory;

pub use memory::{Concurrency, ConcurrencyGuard, MemoryLimiter};

use crate::auth::Identity;
use crate::call;
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response};
use bytes::Bytes;
use llmux_config::Rate;
use llmux_wire::{Dialect, ErrorKind};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shared call waits this long for the backend before it is treated as down.
const BACKEND_TIMEOUT: Duration = Duration::from_millis(250);
/// Probe backoff while the shared backend is down.
const PROBE_FIRST: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(5);

/// One rate to check: the counter's key (e.g. `ip:10.0.0.1`, `key:vk_…:rpm`), its rate, and
/// what this call costs (1 for a request, the estimated tokens for a token limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub key: String,
    pub rate: Rate,
    pub cost: u64,
}

/// The answer for one [`Check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Units left right after this call.
    pub remaining: u64,
    /// Until the counter is back to its full limit.
    pub reset: Duration,
    /// When refused: until the call would be allowed.
    pub retry_after: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("rate-limit backend: {0}")]
pub struct BackendError(pub String);

/// Counters shared between instances. Implementations must be atomic per call: every check
/// charged or none, with one clock for all instances.
pub trait SharedBackend: Send + Sync {
    /// Like [`MemoryLimiter::check`].
    fn check<'a>(
        &'a self,
        checks: &'a [Check],
    ) -> BoxFuture<'a, Result<Vec<Decision>, BackendError>>;
    /// Like [`MemoryLimiter::adjust`].
    fn adjust<'a>(
        &'a self,
        check: &'a Check,
        delta: i64,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Whether the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// For logs and metrics: `redis`.
    fn name(&self) -> &'static str;
}

/// A virtual key's limits; `None`: unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub concurrency: Option<u32>,
    /// Per model (by name as the client sends it, Ollama's `:latest` rule applied).
    pub models: BTreeMap<String, ModelLimits>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelLimits {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

impl KeyLimits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.concurrency.is_none()
            && self.models.is_empty()
    }

    fn model(&self, model: &str) -> Option<(&str, ModelLimits)> {
        if self.models.is_empty() {
            return None;
        }
        let bare = model.split_once('/').map_or(model, |(_, m)| m);
        let want = [
            llmux_wire::model::model_key(model),
            llmux_wire::model::model_key(bare),
        ];
        self.models
            .iter()
            .find(|(m, _)| want.contains(&llmux_wire::model::model_key(m)))
            .map(|(m, l)| (m.as_str(), *l))
    }
}

fn per_minute(n: u64) -> Rate {
    Rate {
        count: n.max(1),
        per: Duration::from_secs(60),
    }
}

/// Which limit refused a call (the metric label of `llmux_rejections_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Ip,
    Global,
    KeyRpm,
    KeyTpm,
    KeyConcurrency,
    Model,
    /// A model's token limit (counted as `model` too; its headers are the `-tokens` ones).
    ModelTokens,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Ip => "ip",
            Layer::Global => "global",
            Layer::KeyRpm => "key_rpm",
            Layer::KeyTpm => "key_tpm",
            Layer::KeyConcurrency => "key_concurrency",
            Layer::Model | Layer::ModelTokens => "model",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Layer::Ip => "requests from this address",
            Layer::Global => "requests to this gateway",
            Layer::KeyRpm => "requests per minute for this API key",
            Layer::KeyTpm => "tokens per minute for this API key",
            Layer::KeyConcurrency => "concurrent requests for this API key",
            Layer::Model => "requests per minute to this model for this API key",
            Layer::ModelTokens => "tokens per minute to this model for this API key",
        }
    }

    fn is_tokens(self) -> bool {
        matches!(self, Layer::KeyTpm | Layer::ModelTokens)
    }
}

/// The limiter of one gateway: local counters always, a shared backend when configured.
pub struct Limiter {
    local: MemoryLimiter,
    concurrency: Arc<Concurrency>,
    shared: OnceLock<Arc<dyn SharedBackend>>,
    shared_up: AtomicBool,
    /// Wakes the probe when the shared backend went down.
    down: tokio::sync::Notify,
    /// Reconciliations for the shared backend, applied off the call path.
    adjustments: Mutex<Option<tokio::sync::mpsc::Sender<(Check, i64)>>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            local: MemoryLimiter::default(),
            concurrency: Arc::new(Concurrency::default()),
            shared: OnceLock::new(),
            shared_up: AtomicBool::new(true),
            down: tokio::sync::Notify::new(),
            adjustments: Mutex::new(None),
        }
    }
}

/// The shared backend is down and `fail_open = false`.
#[derive(Debug)]
pub struct BackendDown;

impl Limiter {
    /// Puts counters in `backend` (once; later calls are ignored). Call [`Limiter::start`] too.
    pub fn set_shared(&self, backend: Arc<dyn SharedBackend>) {
        let _ = self.shared.set(backend);
    }

    /// `(backend name, answering)`, for `/metrics`.
    pub fn backend_state(&self) -> (&'static str, bool) {
        match self.shared.get() {
            Some(b) => (b.name(), self.shared_up.load(Ordering::Relaxed)),
            None => ("memory", true),
        }
    }

    pub fn concurrency(&self) -> &Arc<Concurrency> {
        &self.concurrency
    }

    /// Checks `checks` all-or-nothing on the shared backend when it answers, else locally (or
    /// not at all: `Err` when it is down and `fail_open` is false).
    pub async fn check(
        &self,
        checks: &[Check],
        fail_open: bool,
    ) -> Result<Vec<Decision>, BackendDown> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(shared) = self.shared.get() {
            if self.shared_up.load(Ordering::Relaxed) {
                match tokio::time::timeout(BACKEND_TIMEOUT, shared.check(checks)).await {
                    Ok(Ok(d)) if d.len() == checks.len() => return Ok(d),
                    Ok(Ok(_)) => self.mark_down("the script answered in an unexpected shape"),
                    Ok(Err(e)) => self.mark_down(&e.to_string()),
                    Err(_) => self.mark_down("timed out"),
                }
            }
            if !fail_open {
                return Err(BackendDown);
            }
        }
        Ok(self.local.check(checks))
    }

    fn mark_down(&self, why: &str) {
        if self.shared_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason = why,
                "rate-limit backend unreachable: limiting on local counters until it is back"
            );
            self.down.notify_one();
        }
    }

    /// Charges (or refunds) `delta` units of `check` without refusing: reconciliation.
    pub fn adjust(&self, check: Check, delta: i64) {
        if delta == 0 {
            return;
        }
        if self.shared.get().is_some() && self.shared_up.load(Ordering::Relaxed) {
            let tx = self.adjustments.lock().ok().and_then(|t| t.clone());
            if let Some(tx) = tx {
                // Dropped when the queue is full: a reconciliation is a correction, not a must.
                let _ = tx.try_send((check, delta));
                return;
            }
        }
        self.local.adjust(&check, delta);
    }

    /// Reconciles a token estimate with the tokens the call really used (see [`TokenGrant`]).
    pub fn reconcile(&self, grant: TokenGrant, actual_tokens: u64) {
        let delta = i64::try_from(actual_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(grant.estimated).unwrap_or(i64::MAX));
        for c in grant.checks {
            self.adjust(c, delta);
        }
    }
}

/// Starts the shared backend's probe and reconciliation worker on `tasks` (nothing without a
/// shared backend). The probe runs only while the backend is down, with backoff, so calls
/// never wait on it.
pub fn start(gw: &Arc<Gateway>, tasks: &tokio_util::task::TaskTracker, cancel: CancellationToken) {
    let Some(shared) = gw.limits.shared.get().cloned() else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Check, i64)>(4096);
    if let Ok(mut slot) = gw.limits.adjustments.lock() {
        *slot = Some(tx);
    }
    let (g, c, s) = (Arc::clone(gw), cancel.clone(), Arc::clone(&shared));
    tasks.spawn(async move {
        loop {
            let next = tokio::select! {
                _ = c.cancelled() => return,
                n = rx.recv() => n,
            };
            let Some((check, delta)) = next else { return };
            let sent = tokio::time::timeout(BACKEND_TIMEOUT, s.adjust(&check, delta)).await;
            if !matches!(sent, Ok(Ok(()))) {
                g.limits.local.adjust(&check, delta);
            }
        }
    });
    let gw = Arc::clone(gw);
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = gw.limits.down.notified() => {}
            }
            let mut wait = PROBE_FIRST;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                if let Ok(Ok(())) = tokio::time::timeout(BACKEND_TIMEOUT, shared.ping()).await {
                    gw.limits.shared_up.store(true, Ordering::Relaxed);
                    tracing::info!(backend = shared.name(), "rate-limit backend is back");
                    break;
                }
                wait = (wait * 2).min(PROBE_MAX);
            }
        }
    });
}

/// The tokens a call was charged at admission, to reconcile with its real usage once known:
/// `gw.limits.reconcile(grant, actual_tokens)`. Dropping it keeps the estimate.
#[derive(Debug, Default)]
#[must_use = "reconcile it with the real usage, or drop it to keep the estimate"]
pub struct TokenGrant {
    checks: Vec<Check>,
    estimated: u64,
}

impl TokenGrant {
    /// The tokens charged at admission (0 when the key has no token limit).
    pub fn estimated(&self) -> u64 {
        self.estimated
    }

    /// Adds the token checks of `other` (a fallback target's limits, charged when the call
    /// moved on to it), so that one reconciliation settles both.
    pub fn absorb(&mut self, other: TokenGrant) {
        self.estimated = self.estimated.max(other.estimated);
        self.checks.extend(other.checks);
    }
}

/// The estimate charged against token limits before the call: a quarter of the body's bytes
/// (≈ the prompt's tokens) plus the completion cap the client asked for.
pub fn estimate_tokens(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Caps {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        options: Option<OllamaOptions>,
        #[serde(rename = "generationConfig")]
        generation_config: Option<GeminiConfig>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct OllamaOptions {
        num_predict: Option<i64>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct GeminiConfig {
        max_output_tokens: Option<u64>,
    }
    let caps: Caps = serde_json::from_slice(body).unwrap_or_default();
    let cap = caps
        .max_completion_tokens
        .or(caps.max_tokens)
        .or(caps
            .options
            .and_then(|o| o.num_predict)
            .and_then(|n| u64::try_from(n).ok()))
        .or(caps.generation_config.and_then(|g| g.max_output_tokens))
        .unwrap_or(0);
    (body.len() as u64 / 4).saturating_add(cap)
}

/// What the key's limits said to a call they let through: the token grant to reconcile, and
/// the decisions its answer's `x-ratelimit-*` headers report (see [`rate_headers_of`]).
#[derive(Debug, Default)]
pub struct Admitted {
    pub grant: TokenGrant,
    pub decisions: Vec<(Layer, Decision)>,
}

/// Per-key and per-model admission, once the model and body are known: requests and tokens
/// per minute, all-or-nothing. `Err` is the 429 (or 503) to answer.
pub async fn admit(
    gw: &Gateway,
    identity: Option<&Identity>,
    model: &str,
    body: &[u8],
    dialect: Dialect,
) -> Result<Admitted, Response<Body>> {
    let Some(id) = identity else {
        return Ok(Admitted::default());
    };
    let limits = &id.limits;
    if limits.rpm.is_none() && limits.tpm.is_none() && limits.models.is_empty() {
        return Ok(Admitted::default());
    }
    let model_limits = limits.model(model);
    let wants_tokens = limits.tpm.is_some() || model_limits.is_some_and(|(_, m)| m.tpm.is_some());
    let estimated = if wants_tokens {
        estimate_tokens(body)
    } else {
        0
    };
    let mut checks = Vec::with_capacity(4);
    let mut layers = Vec::with_capacity(4);
    let mut grant = TokenGrant {
        checks: Vec::new(),
        estimated,
    };
    if let Some(rpm) = limits.rpm {
        checks.push(Check {
            key: format!("key:{}:rpm", id.key_id),
            rate: per_minute(rpm.into()),
            cost: 1,
        });
        layers.push(Layer::KeyRpm);
    }
    if let Some(tpm) = limits.tpm {
        let c = Check {
            key: format!("key:{}:tpm", id.key_id),
            rate: per_minute(tpm),
            cost: estimated,
        };
        grant.checks.push(c.clone());
        checks.push(c);
        layers.push(Layer::KeyTpm);
    }
    if let Some((name, m)) = model_limits {
        model_checks(id, name, m, estimated, &mut checks, &mut layers, &mut grant);
    }
    let decisions = decide(gw, &checks, layers, dialect).await?;
    Ok(Admitted { grant, decisions })
}

/// The per-model limits of `target` alone: checked when a call moves on to a fallback target
/// (the first target's are checked by [`admit`] with the key's own limits).
pub async fn admit_model(
    gw: &Gateway,
    identity: Option<&Identity>,
    target: &str,
    body: &[u8],
    dialect: Dialect,
) -> Result<Admitted, Response<Body>> {
    let Some(id) = identity else {
        return Ok(Admitted::default());
    };
    let Some((name, m)) = id.limits.model(target) else {
        return Ok(Admitted::default());
    };
    let estimated = if m.tpm.is_some() {
        estimate_tokens(body)
    } else {
        0
    };
    let mut grant = TokenGrant {
        checks: Vec::new(),
        estimated,
    };
    let (mut checks, mut layers) = (Vec::with_capacity(2), Vec::with_capacity(2));
    model_checks(id, name, m, estimated, &mut checks, &mut layers, &mut grant);
    let decisions = decide(gw, &checks, layers, dialect).await?;
    Ok(Admitted { grant, decisions })
}

/// The checks of one model's limits for key `id`.
fn model_checks(
    id: &Identity,
    name: &str,
    m: ModelLimits,
    estimated: u64,
    checks: &mut Vec<Check>,
    layers: &mut Vec<Layer>,
    grant: &mut TokenGrant,
) {
    let name = llmux_wire::model::model_key(name);
    if let Some(rpm) = m.rpm {
        checks.push(Check {
            key: format!("key:{}:model:{name}:rpm", id.key_id),
            rate: per_minute(rpm.into()),
            cost: 1,
        });
        layers.push(Layer::Model);
    }
    if let Some(tpm) = m.tpm {
        let c = Check {
            key: format!("key:{}:model:{name}:tpm", id.key_id),
            rate: per_minute(tpm),
            cost: estimated,
        };
        grant.checks.push(c.clone());
        checks.push(c);
        layers.push(Layer::ModelTokens);
    }
}

/// Runs `checks` (all or nothing); `Err` is the refusal to answer.
async fn decide(
    gw: &Gateway,
    checks: &[Check],
    layers: Vec<Layer>,
    dialect: Dialect,
) -> Result<Vec<(Layer, Decision)>, Response<Body>> {
    let fail_open = gw.routes().config.limits.fail_open;
    let decisions = match gw.limits.check(checks, fail_open).await {
        Ok(d) => d,
        Err(BackendDown) => return Err(backend_down(dialect)),
    };
    let pairs: Vec<(Layer, Decision)> = layers.into_iter().zip(decisions).collect();
    if let Some((layer, d)) = pairs.iter().find(|(_, d)| !d.allowed) {
        gw.metrics.rejected(layer.as_str());
        return Err(rejection(dialect, *layer, d));
    }
    Ok(pairs)
}

fn backend_down(dialect: Dialect) -> Response<Body> {
    call::error(
        dialect,
        ErrorKind::Unavailable,
        "rate limits cannot be checked right now (the shared backend is unreachable)",
    )
}

/// Formats a duration the way OpenAI's reset headers do: `1s`, `6m0s`, `20ms`.
fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs_f64();
    if s < 60.0 {
        let t = format!("{s:.3}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        return format!("{t}s");
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The rate-limit headers of a call the key's limits let through: one set per kind (requests,
/// tokens), from the limit closest to refusing.
pub fn rate_headers_of(headers: &mut HeaderMap, decisions: &[(Layer, Decision)]) {
    for tokens in [false, true] {
        let tightest = decisions
            .iter()
            .filter(|(l, _)| l.is_tokens() == tokens)
            .min_by_key(|(_, d)| d.remaining);
        if let Some((layer, d)) = tightest {
            rate_headers(headers, *layer, d);
        }
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for one decision.
fn rate_headers(headers: &mut HeaderMap, layer: Layer, d: &Decision) {
    let (limit, remaining, reset) = if layer.is_tokens() {
        (
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        )
    } else {
        (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        )
    };
    put(headers, limit, d.limit.to_string());
    put(headers, remaining, d.remaining.to_string());
    put(headers, reset, openai_duration(d.reset));
}

/// A 429 in the caller's dialect, with `Retry-After` (whole seconds, at least 1) and the
/// rate-limit headers OpenAI clients read.
pub fn rejection(dialect: Dialect, layer: Layer, d: &Decision) -> Response<Body> {
    let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut resp = call::error(
        dialect,
        ErrorKind::RateLimited,
        format!(
            "rate limit reached: {} {} allowed; try again in {secs}s",
            d.limit,
            layer.describe()
        ),
    );
    let h = resp.headers_mut();
    put(h, "retry-after", secs.to_string());
    rate_headers(h, layer, d);
    resp
}

/// The client's address, for the per-IP limit and the call record.
///
/// Without `trust_forwarded_for` it is the peer. With it, the peer is taken for your proxy
/// (when `trusted_proxies` is set, only if the peer is one of them) and `X-Forwarded-For` is
/// read from the right, past the trusted proxies: the first other entry was appended by a
/// proxy you trust and names the client. Entries further left are whatever the client sent and
/// are never believed, so a client cannot pick its own address.
pub fn client_addr(
    req: &axum::extract::Request,
    cfg: &llmux_config::LimitsConfig,
) -> Option<std::net::IpAddr> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    if !cfg.trust_forwarded_for {
        return peer;
    }
    let trusted = |ip: std::net::IpAddr| cfg.trusted_proxies.iter().any(|c| c.contains(ip));
    if !cfg.trusted_proxies.is_empty() && !peer.is_some_and(trusted) {
        return peer;
    }
    let mut nearest = peer;
    let entries = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for entry in entries {
        let Some(ip) = parse_forwarded(entry.trim()) else {
            // Garbage where an address should be: the nearest hop that named one stands.
            break;
        };
        if !trusted(ip) {
            return Some(ip);
        }
        nearest = Some(ip);
    }
    nearest
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse::<std::net::IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Middleware before authentication: per client IP, then global. A flood of bad keys is
/// refused here and never reaches the key lookup.
pub async fn edge_limits(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response<Body> {
    let routes = gw.routes();
    let cfg = &routes.config.limits;
    if cfg.ip.is_none() && cfg.global.is_none() {
        return next.run(req).await;
    }
    let mut checks = Vec::with_capacity(2);
    let mut layers = Vec::with_capacity(2);
    if let Some(rate) = cfg.ip {
        if let Some(ip) = client_addr(&req, cfg) {
            checks.push(Check {
                key: format!("ip:{ip}"),
                rate,
                cost: 1,
            });
            layers.push(Layer::Ip);
        }
    }
    if let Some(rate) = cfg.global {
        checks.push(Check {
            key: "global".into(),
            rate,
            cost: 1,
        });
        layers.push(Layer::Global);
    }
    let dialect = crate::server::dialect_of(&req);
    match gw.limits.check(&checks, cfg.fail_open).await {
        Err(BackendDown) => backend_down(dialect),
        Ok(decisions) => match layers.iter().zip(&decisions).find(|(_, d)| !d.allowed) {
            Some((layer, d)) => {
                gw.metrics.rejected(layer.as_str());
                let resp = rejection(dialect, *layer, d);
                call::log_refused(&req, &resp);
                resp
            }
            None => next.run(req).await,
        },
    }
}

/// Middleware after authentication: the key's concurrent calls (the slot is held until the
/// response body ends or is dropped). [`admit`] does the rate checks once the body is read,
/// and the call puts their headers on its answer.
pub async fn key_limits(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response<Body> {
    let Some(id) = req.extensions().get::<Identity>() else {
        return next.run(req).await;
    };
    if id.limits.is_empty() {
        return next.run(req).await;
    }
    let guard = match id.limits.concurrency {
        None => None,
        Some(limit) => match gw.limits.concurrency.acquire(&id.key_id, limit) {
            Ok(g) => Some(g),
            Err(in_use) => {
                gw.metrics.rejected(Layer::KeyConcurrency.as_str());
                let dialect = crate::server::dialect_of(&req);
                let mut resp = call::error(
                    dialect,
                    ErrorKind::RateLimited,
                    format!(
                        "rate limit reached: {in_use} {} allowed; try again when one finishes",
                        Layer::KeyConcurrency.describe()
                    ),
                );
                // A slot frees when some call ends, which nobody can predict: ask for a second.
                put(resp.headers_mut(), "retry-after", "1".into());
                call::log_refused(&req, &resp);
                return resp;
            }
        },
    };
    let resp = next.run(req).await;
    match guard {
        None => resp,
        Some(guard) => resp.map(|inner| {
            Body::new(Guarded {
                inner,
                guard: Some(guard),
            })
        }),
    }
}

/// A response body that holds a concurrency slot until it ends or is dropped.
struct Guarded {
    inner: Body,
    guard: Option<ConcurrencyGuard>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_estimates() {
        let body = br#"{"model":"m","max_tokens":100,"messages":[]}"#;
        assert_eq!(estimate_tokens(body), body.len() as u64 / 4 + 100);
        let ollama = br#"{"model":"m","options":{"num_predict":7}}"#;
        assert_eq!(estimate_tokens(ollama), ollama.len() as u64 / 4 + 7);
        let gemini = br#"{"generationConfig":{"maxOutputTokens":9}}"#;
        assert_eq!(estimate_tokens(gemini), gemini.len() as u64 / 4 + 9);
        assert_eq!(estimate_tokens(b"not json!!!!"), 3);
    }

    fn from(peer: &str, xff: &[&str]) -> axum::extract::Request {
        let mut req = axum::extract::Request::new(Body::empty());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                peer.parse().unwrap(),
                4321,
            )));
        for v in xff {
            req.headers_mut()
                .append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        req
    }

    fn resolved(cfg: &llmux_config::LimitsConfig, peer: &str, xff: &[&str]) -> String {
        client_addr(&from(peer, xff), cfg).unwrap().to_string()
    }

    /// The leftmost entry is the client's own word; the address is read from the right, past
    /// the trusted proxies.
    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let mut cfg = llmux_config::LimitsConfig::default();
        // Not trusted: the peer, whatever the header says.
        assert_eq!(resolved(&cfg, "192.0.2.1", &["6.6.6.6"]), "192.0.2.1");
        cfg.trust_forwarded_for = true;
        // One trusted hop (the peer): the entry it appended, not the one the client forged.
        assert_eq!(
            resolved(&cfg, "127.0.0.1", &["6.6.6.6, 203.0.113.7"]),
            "203.0.113.7"
        );
        assert_eq!(resolved(&cfg, "127.0.0.1", &["203.0.113.7"]), "203.0.113.7");
        assert_eq!(resolved(&cfg, "127.0.0.1", &[]), "127.0.0.1");
        cfg.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        // Two hops: CDN at 10.1.1.1 appended the client; the load balancer (peer) appended it.
        assert_eq!(
            resolved(&cfg, "10.0.0.2", &["6.6.6.6, 203.0.113.7", "10.1.1.1"]),
            "203.0.113.7"
        );
        assert_eq!(
            resolved(
                &cfg,
                "::ffff:10.0.0.2",
                &["6.6.6.6,203.0.113.7:5555,10.1.1.1"]
            ),
            "203.0.113.7"
        );
        // A peer that is not a trusted proxy came straight in: its header is ignored.
        assert_eq!(resolved(&cfg, "198.51.100.9", &["6.6.6.6"]), "198.51.100.9");
        // Garbage past the trusted hops: the nearest hop that named an address stands.
        assert_eq!(
            resolved(&cfg, "10.0.0.2", &["nonsense, 10.1.1.1"]),
            "10.1.1.1"
        );
    }

    #[test]
    fn reset_durations_like_openai() {
        assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(openai_duration(Duration::from_secs(12)), "12s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    }

    /// A shared backend that answers `remaining = 7` while `up`, and fails otherwise.
    #[derive(Default)]
    struct Flaky {
        up: AtomicBool,
    }

    impl SharedBackend for Flaky {
        fn check<'a>(
            &'a self,
            checks: &'a [Check],
        ) -> BoxFuture<'a, Result<Vec<Decision>, BackendError>> {
            let up = self.up.load(Ordering::Relaxed);
            Box::pin(async move {
                if !up {
                    return Err(BackendError("connection refused".into()));
                }
                Ok(checks
                    .iter()
                    .map(|c| Decision {
                        allowed: true,
                        limit: c.rate.count,
                        remaining: 7,
                        reset: Duration::ZERO,
                        retry_after: Duration::ZERO,
                    })
                    .collect())
            })
        }
        fn adjust<'a>(&'a self, _: &'a Check, _: i64) -> BoxFuture<'a, Result<(), BackendError>> {
            Box::pin(async { Ok(()) })
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
            let up = self.up.load(Ordering::Relaxed);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err(BackendError("connection refused".into()))
                }
            })
        }
        fn name(&self) -> &'static str {
            "fake"
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_backend_outage_falls_back_to_local_counters_and_recovers() {
        let gw = Gateway::new(llmux_config::Config::default()).unwrap();
        let flaky = Arc::new(Flaky::default());
        flaky.up.store(true, Ordering::Relaxed);
        gw.limits
            .set_shared(Arc::clone(&flaky) as Arc<dyn SharedBackend>);
        let tasks = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        start(&gw, &tasks, cancel.clone());
        let c = [Check {
            key: "k".into(),
            rate: per_minute(1),
            cost: 1,
        }];
        assert_eq!(gw.limits.check(&c, true).await.unwrap()[0].remaining, 7);

        flaky.up.store(false, Ordering::Relaxed);
        // Fail-open: the local counters apply the same limit (1/min).
        assert!(gw.limits.check(&c, true).await.unwrap()[0].allowed);
        assert!(!gw.limits.check(&c, true).await.unwrap()[0].allowed);
        assert_eq!(gw.limits.backend_state(), ("fake", false));
        // Fail-closed refuses instead.
        assert!(gw.limits.check(&c, false).await.is_err());

        flaky.up.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(gw.limits.backend_state(), ("fake", true));
        assert_eq!(gw.limits.check(&c, false).await.unwrap()[0].remaining, 7);
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn reconcile_refunds_and_charges() {
        let l = Limiter::default();
        let tpm = Check {
            key: "key:k:tpm".into(),
            rate: per_minute(100),
            cost: 80,
        };
        assert!(l.check(std::slice::from_ref(&tpm), true).await.unwrap()[0].allowed);
        let grant = TokenGrant {
            checks: vec![tpm.clone()],
            estimated: 80,
        };
        l.reconcile(grant, 10);
        // 10 used of 100: 80 more fit.
        assert!(l.check(std::slice::from_ref(&tpm), true).await.unwrap()[0].allowed);
        assert!(!l.check(&[tpm], true).await.unwrap()[0].allowed);
    }
}

//! Layered rate limits: per client IP and global before authentication, then per virtual key
//! (requests and tokens per minute, concurrent calls) and per model once the model is known.
//! The edge middleware is `http.rs`, the per-key admission `admit.rs`; this file holds the
//! limiter, its types and the shared backend's probe.
//!
//! Counters live in this process ([`MemoryLimiter`], GCRA) or in a shared backend (Redis,
//! wired by the binary through [`SharedBackend`]) so that many instances share one limit. When
//! the shared backend fails, calls are limited locally (or refused, with `fail_open = false`)
//! while a background probe waits for it to come back.

mod admit;
mod http;
mod memory;

pub use admit::{admit, admit_model, estimate_tokens, Admitted};
pub use http::{client_addr, edge_limits, key_limits, rate_headers_of, rejection};
pub use memory::{Concurrency, ConcurrencyGuard, MemoryLimiter};

use crate::Gateway;
use llmux_config::Rate;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
        let same = llmux_wire::model::same_model;
        self.models
            .iter()
            .find(|(m, _)| same(m, model) || same(m, bare))
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
    /// Puts counters in `backend` (once; later calls are ignored). Call [`start`] too.
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
        if self.checks.is_empty() {
            // The common case (the call's first grant): moved, not copied.
            self.checks = other.checks;
        } else {
            self.checks.extend(other.checks);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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

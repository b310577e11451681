//! The llmux data plane: takes calls in four dialects — OpenAI (Chat Completions, Completions,
//! Responses, Embeddings), Anthropic, Gemini and Ollama — routes each to a healthy upstream
//! that serves the model, translating between dialects when they differ, and relays the answer
//! as it streams. The path of one call is `call/` (see `docs/architecture.md`).

pub mod accounting;
pub mod alerts;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod call;
pub mod catalog;
mod compress;
mod cors;
pub mod deadline;
pub mod egress;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod hooks;
pub mod image_fetch;
pub mod keys;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod ollama_admin;
pub mod peers;
pub mod relay;
pub mod retry;
pub mod routing;
pub mod server;
pub mod ssrf_dns;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod upstream_http;
pub mod workers;

#[cfg(test)]
mod bounds_tests;

use arc_swap::ArcSwap;
use axum::http::HeaderName;
use llmux_config::Config;
use routing::Routes;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use upstream::Upstream;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_LLMUX_UPSTREAM: HeaderName = HeaderName::from_static("x-llmux-upstream");
pub const X_LLMUX_ATTEMPTS: HeaderName = HeaderName::from_static("x-llmux-attempts");
pub const X_LLMUX_MODEL: HeaderName = HeaderName::from_static("x-llmux-model");
pub const X_LLMUX_SESSION: HeaderName = HeaderName::from_static("x-llmux-session");

/// The request id of the call being served, put in the request's extensions by the server.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A running gateway: the current routing snapshot plus the background work around it.
pub struct Gateway {
    routes: ArcSwap<Routes>,
    /// Shared by every call, so retries across all upstreams stay a fraction of the traffic.
    pub retry_budget: retry::RetryBudget,
    /// Checks virtual keys when `auth.required`; set once by whoever owns the key store.
    authenticator: std::sync::OnceLock<Arc<dyn auth::Authenticator>>,
    /// Tells administrators apart for admin-only data-plane paths (`/api/pull`, `/api/delete`).
    admin_check: std::sync::OnceLock<Arc<dyn auth::AdminCheck>>,
    /// Serializes `apply`, so two reloads cannot interleave their probes and swaps.
    applying: tokio::sync::Mutex<()>,
    /// `false` while the start-up probe round runs (it does not hold the listener back); a
    /// call whose model no probed upstream serves yet waits for it (see `call::plan`).
    pub discovered: tokio::sync::watch::Sender<bool>,
    pub metrics: metrics::GatewayMetrics,
    /// Pricing, and the hook that admits calls against credit and takes their records.
    pub accounting: accounting::Accounting,
    /// Rate limits: local counters, and the shared backend when the binary wires one.
    pub limits: limits::Limiter,
    /// What other instances of a cluster share with this one; empty on a single instance.
    pub peers: peers::Peers,
    /// `[[hooks]]`, compiled for the running config; their client and metrics.
    pub hooks: hooks::Hooks,
    /// The response cache (`[cache]`): its memory backend, the shared one when installed, the
    /// calls in flight and the counters.
    pub cache: cache::Cache,
}

impl Gateway {
    /// Builds the upstreams of `config`. No network I/O: call [`Gateway::start`] to probe and serve.
    pub fn new(config: Config) -> Result<Arc<Gateway>, error::GatewayError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, &config.routing).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let budget = retry::RetryBudget::new(config.routing.retry_budget);
        let accounting = accounting::Accounting::default();
        accounting.reprice(&config.pricing);
        let routes = Routes::new(Arc::new(config), upstreams);
        Ok(Arc::new(Gateway {
            routes: ArcSwap::from_pointee(routes),
            retry_budget: budget,
            authenticator: std::sync::OnceLock::new(),
            admin_check: std::sync::OnceLock::new(),
            applying: tokio::sync::Mutex::new(()),
            discovered: tokio::sync::watch::Sender::new(true),
            metrics: metrics::GatewayMetrics::default(),
            accounting,
            limits: limits::Limiter::default(),
            peers: peers::Peers::default(),
            hooks: hooks::Hooks::default(),
            cache: cache::Cache::default(),
        }))
    }

    /// Installs the virtual-key checker (once; later calls are ignored).
    pub fn set_authenticator(&self, a: Arc<dyn auth::Authenticator>) {
        let _ = self.authenticator.set(a);
    }

    pub fn authenticator(&self) -> Option<&Arc<dyn auth::Authenticator>> {
        self.authenticator.get()
    }

    /// Installs the administrator check (once; later calls are ignored).
    pub fn set_admin_check(&self, a: Arc<dyn auth::AdminCheck>) {
        let _ = self.admin_check.set(a);
    }

    /// The administrator check, when the control plane installed one.
    pub fn admin_check(&self) -> Option<&Arc<dyn auth::AdminCheck>> {
        self.admin_check.get()
    }

    /// Compiles `config` plus `overlay` into a new routing snapshot and swaps it in. Upstreams
    /// whose definition did not change keep their runtime (health, in-flight counts, breaker,
    /// key states); changed ones carry over what the change leaves true (see
    /// [`Upstream::carry_over`]); new or changed ones are probed first, so they serve from the
    /// first call. Calls in flight finish on the snapshot they started with.
    pub async fn apply(
        &self,
        config: Config,
        overlay: routing::Overlay,
    ) -> Result<(), error::GatewayError> {
        let _one_at_a_time = self.applying.lock().await;
        let current = self.routes();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut fresh = Vec::new();
        for cfg in &config.upstreams {
            let reused = current
                .upstream(&cfg.name)
                .filter(|u| u.definition.0 == *cfg && u.definition.1 == config.routing.breaker);
            match reused {
                Some(u) => upstreams.push(Arc::clone(u)),
                None => {
                    let mut u = Upstream::new(cfg, &config.routing)?;
                    if let Some(old) = current.upstream(&cfg.name) {
                        u = u.carry_over(old);
                    }
                    let u = Arc::new(u);
                    fresh.push(Arc::clone(&u));
                    upstreams.push(u);
                }
            }
        }
        // Before any probe: an API upstream's first connection is already guarded.
        let allow_private = config.admin.allow_private_upstreams;
        for u in &upstreams {
            u.dns_policy
                .set(if overlay.api_upstreams.contains(&u.name) {
                    ssrf_dns::Policy::Guarded { allow_private }
                } else {
                    ssrf_dns::Policy::Trusted
                });
        }
        health::probe_some(&fresh, &config).await;
        self.accounting.reprice(&config.pricing);
        self.cache.reconfigured(&config.cache);
        configure_outputs(&config);
        let routes = Routes::with_overlay(Arc::new(config), Arc::new(overlay), upstreams);
        self.routes.store(Arc::new(routes));
        Ok(())
    }

    /// The routing snapshot in force; a call keeps the one it started with.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.routes.load().config)
    }

    /// Starts the prober on `tasks`: a first round over every upstream at once (each bounded
    /// by `health.timeout`), then the periodic rounds. Nothing waits for the first round: the
    /// listener opens at once, an upstream not yet probed is tried after the probed ones, and
    /// a call for a model no probed upstream serves yet waits for the round (at most
    /// `health.timeout`), so an unresponsive node never delays start-up.
    pub async fn start(self: &Arc<Self>, tasks: &TaskTracker, cancel: CancellationToken) {
        // The exporter and the alert sender always run (idle when unconfigured), so a reload
        // can turn `[telemetry]` and `[alerts]` on, off or elsewhere.
        configure_outputs(&self.config());
        if let Some(exporter) = telemetry::start(cancel.clone()) {
            tasks.spawn(exporter);
        }
        if let Some(sender) = alerts::start(cancel.clone()) {
            tasks.spawn(sender);
        }
        tasks.spawn(alerts::watch_error_rates(Arc::clone(self), cancel.clone()));
        self.discovered.send_replace(false);
        for u in &self.routes().upstreams {
            u.update(|s| s.awaiting_probe = true);
        }
        let gw = Arc::clone(self);
        tasks.spawn(async move {
            // A stop during the round ends it: shutting down does not wait out a node that
            // never answers (up to `health.timeout`).
            tokio::select! {
                () = health::probe_all(&gw) => {}
                () = cancel.cancelled() => return,
            }
            gw.discovered.send_replace(true);
            health::run(gw, cancel).await;
        });
    }

    /// Resolves once the start-up probe round (begun by [`Gateway::start`]) is over.
    pub async fn probed_once(&self) {
        let mut done = self.discovered.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    /// During the start-up probe round, waits for it (at most `health.timeout` and a little):
    /// what needs the discovered models — a model listing, a call for a model no probed
    /// upstream serves yet — waits for them; nothing does once the round is over.
    pub async fn discovery_settled(&self) {
        if *self.discovered.borrow() {
            return;
        }
        let wait = self.config().health.timeout + std::time::Duration::from_millis(250);
        let _ = tokio::time::timeout(wait, self.probed_once()).await;
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then lets open calls finish.
    /// `admin` (the control plane's admin API) is served under `/admin/v1`; `console` (the
    /// web console's `/ui` routes) beside it when given. Connections are
    /// bounded by `server.header_timeout`, `idle_timeout` and `max_connections` (read here, at
    /// start-up), and the open-files limit is raised to its hard maximum first. With `tls`
    /// (loaded by the caller, so a broken certificate stops start-up) it serves HTTPS and
    /// re-reads the files on SIGHUP or change.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<tls::Tls>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
        admin: axum::Router,
        console: Option<axum::Router<Arc<Gateway>>>,
    ) -> std::io::Result<()> {
        let mut limits = listen::ConnLimits::from(&self.config().server);
        if let Some(nofile) = listen::raise_nofile_limit() {
            tracing::debug!(nofile, "open-files limit");
            // Every call needs an upstream socket too (and the store its files): clients may
            // take half the descriptors, so calls still reach upstreams when clients use theirs.
            let room = usize::try_from(nofile / 2).unwrap_or(usize::MAX).max(1);
            if room < limits.max_connections {
                tracing::warn!(
                    nofile,
                    max_connections = limits.max_connections,
                    effective = room,
                    "the open-files limit is too low for server.max_connections: client connections are capped at half of it"
                );
                limits.max_connections = room;
            }
        }
        let app = server::router(Arc::clone(self), admin, console);
        let watching = CancellationToken::new();
        if let Some(tls) = &tls {
            let gw = Arc::clone(self);
            tls.watch(move || gw.config().server.tls.clone(), watching.clone());
        }
        let served = listen::serve(
            listener,
            app,
            limits,
            tls,
            shutdown,
            self.accounting.calls_dropped.clone(),
        )
        .await;
        watching.cancel();
        served
    }
}

/// Points the span exporter and the alert sender at what `[telemetry]` and `[alerts]` say.
fn configure_outputs(config: &Config) {
    telemetry::configure(
        config.telemetry.otlp_endpoint.clone(),
        config.telemetry.service_name.clone(),
    );
    alerts::configure(config.alerts.webhook_url.clone());
}

/// A short random id (64 bits from rand's thread-local CSPRNG), e.g. `req_3f9a…`.
pub fn new_request_id() -> String {
    format!("req_{:016x}", rand::random::<u64>())
}

/// SplitMix64's finaliser: a fast, stable bijection on `u64` (hashing, not randomness).
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use llmux_config::{Secret, Timeouts, UpstreamConfig, UpstreamKind};
    use std::time::Duration;

    fn with_keys(url: &str, keys: &[&str]) -> Config {
        let mut cfg = Config::default();
        cfg.upstreams.push(UpstreamConfig {
            name: "gpu-a".into(),
            kind: UpstreamKind::Ollama,
            url: url.into(),
            keys: keys.iter().map(|k| Secret::new(k.to_string())).collect(),
            models: None,
            weight: 1,
            timeouts: Timeouts::default(),
            api_version: None,
            max_tokens_field: Default::default(),
            max_output_tokens: Default::default(),
        });
        cfg
    }

    /// Adding a key changes the upstream's definition. The rebuilt upstream keeps what the
    /// change leaves true: discovered models (even though the probe after the reload fails),
    /// the other key's cooldown, the breaker, and the calls in flight.
    #[tokio::test]
    async fn a_reload_carries_runtime_state_over_a_changed_definition() {
        let node = llmux_mock::MockServer::start(llmux_mock::MockConfig::default())
            .await
            .unwrap();
        let url = node.url();
        let gw = Gateway::new(with_keys(&url, &["sk-1"])).unwrap();
        health::probe_all(&gw).await;
        let old = Arc::clone(&gw.routes().upstreams[0]);
        assert!(old.state().models.contains_key("llama3:latest"));
        old.keys.cool(keys::KeyPick(0), Duration::from_secs(120));
        for _ in 0..5 {
            old.breaker.failure();
        }
        let in_flight = old.begin();
        node.stop().await;

        gw.apply(
            with_keys(&url, &["sk-2", "sk-1"]),
            routing::Overlay::default(),
        )
        .await
        .unwrap();
        let new = Arc::clone(&gw.routes().upstreams[0]);
        assert!(!Arc::ptr_eq(&old, &new), "the definition changed");
        assert!(
            new.state().models.contains_key("llama3:latest"),
            "discovered models survive a failed probe"
        );
        assert_eq!(new.keys.state(0).as_str(), "ok", "the new key");
        assert_eq!(new.keys.state(1).as_str(), "cooling", "sk-1 keeps its rest");
        assert_eq!(new.breaker.state(), breaker::BreakerState::Open);
        assert_eq!(new.active_requests(), 1);
        drop(in_flight);
        assert_eq!(new.active_requests(), 0);

        // A different server under the same name starts afresh (but keeps its counters).
        gw.apply(
            with_keys("http://127.0.0.1:9", &["sk-1"]),
            routing::Overlay::default(),
        )
        .await
        .unwrap();
        let moved = Arc::clone(&gw.routes().upstreams[0]);
        assert!(moved.state().models.is_empty());
        assert_eq!(moved.keys.state(0).as_str(), "cooling");
    }
}

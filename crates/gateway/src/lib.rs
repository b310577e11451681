//! The llmux data plane: routes OpenAI- and Ollama-dialect calls to healthy upstreams that serve the model, and relays their answers as they stream.

pub mod accounting;
pub mod admin;
pub mod alerts;
pub mod auth;
pub mod breaker;
pub mod catalog;
pub mod deadline;
pub mod egress;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod relay;
pub mod retry;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod upstream;

#[cfg(test)]
mod bounds_tests;

use arc_swap::ArcSwap;
use axum::http::HeaderName;
use config::Config;
use routing::Routes;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Serializes `apply`, so two reloads cannot interleave their probes and swaps.
    applying: tokio::sync::Mutex<()>,
    pub metrics: metrics::GatewayMetrics,
    /// Pricing, and the hook that admits calls against credit and takes their records.
    pub accounting: accounting::Accounting,
    /// Rate limits: local counters, and the shared backend when the binary wires one.
    pub limits: limits::Limiter,
}

impl Gateway {
    /// Builds the upstreams of `config`. No network I/O: call [`Gateway::start`] to probe and serve.
    pub fn new(config: Config) -> Result<Arc<Gateway>, String> {
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
            applying: tokio::sync::Mutex::new(()),
            metrics: metrics::GatewayMetrics::default(),
            accounting,
            limits: limits::Limiter::default(),
        }))
    }

    /// Installs the virtual-key checker (once; later calls are ignored).
    pub fn set_authenticator(&self, a: Arc<dyn auth::Authenticator>) {
        let _ = self.authenticator.set(a);
    }

    pub fn authenticator(&self) -> Option<&Arc<dyn auth::Authenticator>> {
        self.authenticator.get()
    }

    /// Compiles `config` plus `overlay` into a new routing snapshot and swaps it in. Upstreams
    /// whose definition did not change keep their runtime (health, in-flight counts, breaker,
    /// key states); new or changed ones are probed first, so they serve from the first call.
    /// Calls in flight finish on the snapshot they started with.
    pub async fn apply(&self, config: Config, overlay: routing::Overlay) -> Result<(), String> {
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
                    let u = Arc::new(Upstream::new(cfg, &config.routing)?);
                    fresh.push(Arc::clone(&u));
                    upstreams.push(u);
                }
            }
        }
        health::probe_some(&fresh, &config).await;
        self.accounting.reprice(&config.pricing);
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

    /// Probes every upstream once (bounded by `health.timeout`) and starts the periodic prober
    /// on `tasks`. Start-up never waits on a dead node longer than the probe timeout.
    pub async fn start(self: &Arc<Self>, tasks: &TaskTracker, cancel: CancellationToken) {
        let telemetry = self.config().telemetry.clone();
        if let Some(endpoint) = telemetry.otlp_endpoint {
            if let Some(exporter) =
                telemetry::start(endpoint, telemetry.service_name, cancel.clone())
            {
                tasks.spawn(exporter);
            }
        }
        let alerts = self.config().alerts.clone();
        if let Some(url) = alerts.webhook_url {
            if let Some(sender) = alerts::start(url, cancel.clone()) {
                tasks.spawn(sender);
            }
            tasks.spawn(alerts::watch_error_rates(
                Arc::clone(self),
                alerts.error_rate,
                alerts.window,
                alerts.min_calls,
                cancel.clone(),
            ));
        }
        health::probe_all(self).await;
        tasks.spawn(health::run(Arc::clone(self), cancel));
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then lets open calls finish.
    /// `admin` replaces the built-in read-only `/admin/v1` routes when given; `console` (the
    /// web console's `/ui` routes) is served beside them when given.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        admin: Option<axum::Router>,
        console: Option<axum::Router<Arc<Gateway>>>,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            // Small SSE chunks must leave at once, not wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        // With the peer address in each request's extensions: the per-IP limit needs it.
        let app = server::router(Arc::clone(self), admin, console)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// A short unique id: a per-process random seed mixed with a counter (a bijection, so no repeats in one process).
pub fn new_request_id() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    });
    let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("req_{:016x}", splitmix64(seed.wrapping_add(n)))
}

pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

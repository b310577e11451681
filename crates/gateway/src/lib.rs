//! The llmux data plane: routes OpenAI- and Ollama-dialect calls to healthy upstreams that serve the model, and relays their answers as they stream.

pub mod admin;
pub mod breaker;
pub mod catalog;
pub mod egress;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod keys;
pub mod proxy;
pub mod relay;
pub mod retry;
pub mod routing;
pub mod server;
pub mod upstream;

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
        let routes = Routes::new(Arc::new(config), upstreams);
        Ok(Arc::new(Gateway {
            routes: ArcSwap::from_pointee(routes),
            retry_budget: budget,
        }))
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
        health::probe_all(self).await;
        tasks.spawn(health::run(Arc::clone(self), cancel));
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then lets open calls finish.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            // Small SSE chunks must leave at once, not wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, server::router(Arc::clone(self)))
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

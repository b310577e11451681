//! Cluster mode: every llmux instance on one PostgreSQL store and one Redis behaves as one
//! gateway. See `docs/cluster.md` for what is shared where, how fast, and what each outage does.
//!
//! This crate holds what lives in Redis: the instance's liveness lease and the registry
//! ([`registry`]), the one prober per cluster ([`prober`]), passive signals ([`signals`]),
//! cluster-wide in-flight counts and key concurrency ([`counts`]), and credit reservations
//! ([`credits`]). Config changes travel by PostgreSQL `LISTEN/NOTIFY` instead (the admin
//! crate's `sync`), so they need no Redis and arrive in the same order as the writes.
//!
//! Every key and channel is `{prefix}:c1:…` ([`Cluster::key`]): `prefix` from `[cluster]`, `c1`
//! the version of their meaning. An instance is alive while its lease key
//! ([`Cluster::live_key`]) exists; whatever it holds under its id (counts, reservations, the
//! prober lease) stops counting once that key expires, so an instance killed with SIGKILL
//! pins nothing for longer than `cluster.lease`.

pub mod counts;
pub mod credits;
pub mod prober;
pub mod registry;
pub mod signals;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use llmux_config::Config;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// This instance's handle on the cluster's shared state in Redis.
pub struct Cluster {
    /// Unique per process: `{host}-{pid}-{4 hex}`.
    pub id: String,
    /// `{prefix}:c1`: what every key and channel starts with.
    namespace: String,
    /// The address shown in the registry (`cluster.advertise`, else the listen address).
    pub address: String,
    pub version: &'static str,
    /// Unix ms when this process started serving.
    pub started_ms: i64,
    pub heartbeat: Duration,
    pub lease: Duration,
    /// Opens dedicated connections (pub/sub).
    pub client: redis::Client,
    /// The shared multiplexed connection for commands; reconnects by itself.
    pub conn: ConnectionManager,
    /// Whether the last heartbeat reached Redis.
    reachable: AtomicBool,
}

impl Cluster {
    /// The cluster handle for `config` (which must be in cluster mode), serving on `listen`.
    /// Connects lazily: an unreachable Redis at start-up is an outage, not a start-up error.
    pub fn new(config: &Config, listen: std::net::SocketAddr) -> Result<Arc<Cluster>, String> {
        let url = config
            .limits
            .redis_url
            .as_ref()
            .ok_or("cluster mode needs limits.redis_url")?;
        let (client, conn) = llmux_ratelimit_redis::connect(url.expose())?;
        let host = hostname();
        let address = config.cluster.advertise.clone().unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                format!("{host}:{}", listen.port())
            } else {
                listen.to_string()
            }
        });
        let suffix: u16 = rand::random();
        Ok(Arc::new(Cluster {
            id: format!("{host}-{}-{suffix:04x}", std::process::id()),
            namespace: format!("{}:c1", config.cluster.prefix),
            address,
            version: env!("CARGO_PKG_VERSION"),
            started_ms: llmux_store::now_ms(),
            heartbeat: config.cluster.heartbeat,
            lease: config.cluster.lease,
            client,
            conn,
            reachable: AtomicBool::new(false),
        }))
    }

    /// `{prefix}:c1:{rest}`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.namespace)
    }

    /// The key that exists while instance `id` is alive.
    pub fn live_key(&self, id: &str) -> String {
        self.key(&format!("live:{id}"))
    }

    /// Whether Redis answered the last heartbeat.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Renews this instance's lease: `SET live:{id} PX lease`. Updates [`Cluster::reachable`].
    pub async fn renew(&self) -> bool {
        let mut conn = self.conn.clone();
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.live_key(&self.id))
            .arg(self.started_ms)
            .arg("PX")
            .arg(lease_ms);
        let set = cmd.query_async::<()>(&mut conn);
        let ok = matches!(
            tokio::time::timeout(llmux_ratelimit_redis::IO_TIMEOUT * 2, set).await,
            Ok(Ok(()))
        );
        let was = self.reachable.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!(instance = %self.id, "cluster: Redis reachable");
            } else {
                tracing::warn!(instance = %self.id, "cluster: Redis unreachable; serving on local state until it is back");
            }
        }
        ok
    }
}

/// What each part of cluster mode is started with.
#[derive(Clone)]
pub struct Ctx {
    pub cluster: Arc<Cluster>,
    pub gw: Arc<llmux_gateway::Gateway>,
    pub cp: Arc<llmux_admin::ControlPlane>,
    pub store: llmux_store::Store,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
}

/// Starts cluster mode: the lease/heartbeat loop, then each shared part.
pub async fn start(ctx: Ctx) {
    ctx.cluster.renew().await;
    tracing::info!(
        instance = %ctx.cluster.id,
        address = %ctx.cluster.address,
        reachable = ctx.cluster.reachable(),
        "cluster mode: sharing state with the other instances through Redis and PostgreSQL"
    );
    {
        let (cluster, cancel) = (Arc::clone(&ctx.cluster), ctx.cancel.clone());
        ctx.tasks.spawn(async move {
            let mut tick = tokio::time::interval(cluster.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                cluster.renew().await;
            }
            // A clean stop gives its lease up at once, rather than after `lease`.
            let mut conn = cluster.conn.clone();
            let mut cmd = redis::cmd("DEL");
            cmd.arg(cluster.live_key(&cluster.id));
            let del = cmd.query_async::<()>(&mut conn);
            let _ = tokio::time::timeout(Duration::from_millis(500), del).await;
        });
    }
    registry::start(&ctx);
    prober::start(&ctx);
    signals::start(&ctx);
    counts::start(&ctx);
    credits::start(&ctx);
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "llmux".to_string())
}

//! Passive signals shared: a provider key disabled or cooled, a breaker opened, announced to
//! every instance.
//!
//! A live call (or the prober) that disables a key after a 401/403, cools it after a 429,
//! re-enables it after a passed re-check, or opens an upstream's breaker, announces it on the
//! channel `{ns}:signals`; every other instance applies it as it arrives (well under 1 s). A
//! key is named by its upstream and a SHA-256 of the cluster prefix and its secret, never the
//! secret. Announcing only queues (bounded: past [`QUEUE`] a signal is dropped, counted and
//! logged); a task sends the queue in batches, each Redis call bounded by a timeout. An
//! applied remote signal goes straight to the key pool or breaker, not through the bus, so it
//! is never announced again. Signals are not stored: an instance that misses one (Redis down,
//! started later) learns the key's state from its own next call, as a single instance would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llmux_gateway::keys::KeyPick;
use llmux_gateway::peers::signals::{SignalBus, SignalKind};
use llmux_gateway::upstream::Upstream;
use llmux_gateway::Gateway;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::{Cluster, Ctx};

/// Signals waiting to be sent, at most.
const QUEUE: usize = 1024;

/// Every Redis call of this module is bounded by this.
const REDIS_TIMEOUT: Duration = Duration::from_millis(400);

/// A signal as it travels between instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Wire {
    /// The announcing instance (its own signals come back to it and are skipped).
    from: String,
    upstream: String,
    /// SHA-256 (hex, first 16 bytes) of the cluster prefix and the key's secret.
    key: Option<String>,
    /// `key_disabled`, `key_cooled`, `key_enabled` or `breaker_opened`.
    kind: String,
    /// The rest or open time, for `key_cooled` and `breaker_opened`.
    ms: u64,
    reason: String,
}

/// The cluster's [`SignalBus`].
pub struct Signals {
    cluster: Arc<Cluster>,
    tx: mpsc::Sender<Wire>,
    /// Signals dropped because the queue was full.
    dropped: AtomicU64,
}

impl SignalBus for Signals {
    fn announce(&self, up: &Upstream, key: Option<KeyPick>, kind: SignalKind, reason: &str) {
        let (name, ms) = match kind {
            SignalKind::KeyDisabled => ("key_disabled", 0),
            SignalKind::KeyCooled(d) => ("key_cooled", millis(d)),
            SignalKind::KeyEnabled => ("key_enabled", 0),
            SignalKind::BreakerOpened(d) => ("breaker_opened", millis(d)),
        };
        let key = key
            .and_then(|k| up.keys.get(k))
            .map(|k| key_hash(&self.cluster, k.secret.expose()));
        let wire = Wire {
            from: self.cluster.id.clone(),
            upstream: up.name.clone(),
            key,
            kind: name.to_string(),
            ms,
            reason: reason.chars().take(200).collect(),
        };
        if self.tx.try_send(wire).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "cluster: signal queue full: signals dropped (the other instances learn from their own calls)");
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How the cluster names a key: never the secret itself.
fn key_hash(cluster: &Cluster, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(cluster.key("signals").as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies a signal announced by another instance; returns whether it changed anything here.
fn apply(cluster: &Cluster, gw: &Gateway, w: &Wire) -> bool {
    if w.from == cluster.id {
        return false;
    }
    let routes = gw.routes();
    let Some(up) = routes.upstream(&w.upstream) else {
        return false;
    };
    let pick = w.key.as_ref().and_then(|h| {
        up.keys
            .keys()
            .iter()
            .position(|k| key_hash(cluster, k.secret.expose()) == *h)
            .map(KeyPick)
    });
    let d = Duration::from_millis(w.ms);
    let changed = match (w.kind.as_str(), pick) {
        ("key_disabled", Some(k)) => up
            .keys
            .disable_quietly(k, &format!("{} (seen by instance {})", w.reason, w.from)),
        ("key_cooled", k) => {
            up.mark_throttled(d);
            if let Some(k) = k {
                up.keys.cool(k, d);
            }
            true
        }
        ("key_enabled", Some(k)) => up.keys.enable_rechecked(k.0),
        ("breaker_opened", _) => up.breaker.open_remotely(d),
        _ => false,
    };
    if changed {
        let key = pick.and_then(|k| up.keys.get(k)).map(|k| k.id.as_str());
        tracing::info!(upstream = %up.name, key, signal = %w.kind, from = %w.from, "cluster: applied a signal from another instance");
    }
    changed
}

/// A subscription to `channel` on a dedicated connection, or `None` (logged at debug) when
/// Redis does not answer in time.
pub(crate) async fn subscription(
    cluster: &Cluster,
    channel: &str,
) -> Option<redis::aio::PubSubStream> {
    let open = async {
        let mut pubsub = cluster.client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    match tokio::time::timeout(REDIS_TIMEOUT * 5, open).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(channel, error = %e, "cluster: cannot subscribe");
            None
        }
        Err(_) => None,
    }
}

/// Sends queued signals in batches until the queue closes.
async fn send(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Wire>) {
    let channel = cluster.key("signals");
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        let mut pipe = redis::pipe();
        for w in batch.drain(..) {
            if let Ok(json) = serde_json::to_string(&w) {
                pipe.publish(&channel, json).ignore();
            }
        }
        let mut conn = cluster.conn.clone();
        let call = pipe.query_async::<()>(&mut conn);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cluster: could not announce signals"),
            Err(_) => tracing::debug!("cluster: announcing signals timed out"),
        }
    }
}

/// Starts this part on `ctx.tasks`: installs the bus, its sender and the subscriber.
pub(crate) fn start(ctx: &Ctx) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let bus = Arc::new(Signals {
        cluster: Arc::clone(&ctx.cluster),
        tx,
        dropped: AtomicU64::new(0),
    });
    let _ = ctx.gw.peers.signals.set(bus as Arc<dyn SignalBus>);
    let (cluster, cancel) = (Arc::clone(&ctx.cluster), ctx.cancel.clone());
    ctx.tasks.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = send(cluster, rx) => {}
        }
    });
    let (cluster, gw, cancel) = (
        Arc::clone(&ctx.cluster),
        Arc::clone(&ctx.gw),
        ctx.cancel.clone(),
    );
    ctx.tasks.spawn(async move {
        let channel = cluster.key("signals");
        loop {
            if let Some(mut messages) = subscription(&cluster, &channel).await {
                loop {
                    let msg = tokio::select! {
                        _ = cancel.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Ok(w) = serde_json::from_str::<Wire>(&payload) {
                        apply(&cluster, &gw, &w);
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(cluster.heartbeat) => {}
            }
        }
    });
}

//! One prober per cluster: a lease elects the instance that runs active health checks and model
//! discovery; the others take its results.
//!
//! - **Lease**: `{ns}:prober` holds the prober's instance id with a TTL of one `health.interval`
//!   (at least 1 s). Every instance tries, every quarter of the TTL (at most every heartbeat),
//!   to claim the key if it is free or to renew it if it is its own (one Lua script: compare
//!   and `PEXPIRE`, or `SET NX PX`). A clean stop deletes it (compare and `DEL`). A prober
//!   killed with SIGKILL is replaced once its lease runs out: within one interval plus one
//!   tick, and the new prober probes at once.
//! - **Results**: after each round (and each standby re-probe) the prober writes every
//!   upstream's [`ProbeResult`] into the hash `{ns}:probe` (field = upstream name; the hash
//!   expires when no prober refreshes it) and publishes the same on channel `{ns}:probe`. The
//!   others apply them as they arrive, and read the hash when no publication came for an
//!   interval plus a timeout (a lost message, a reconnect).
//! - **On demand**: a re-probe made for a pull, a delete or an admin's refresh is shared at
//!   once by whichever instance made it (marked `manual`: fresh news of those upstreams, but
//!   not a sign that the prober is alive).
//! - **Fallback**: an instance that cannot reach Redis, or whose newest shared results are
//!   older than `2 × interval + timeout` (one missed round, each round bounded by the
//!   timeout), probes for itself and says so in its log, rather than route blind.
//! - **Start-up**: every instance probes once at start (`Gateway::start`), so none routes
//!   blind before the first shared results arrive; after that only the prober probes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use llmux_gateway::peers::probe::{ProbeCoordinator, ProbeResult};
use llmux_gateway::upstream::Upstream;
use llmux_gateway::Gateway;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{Cluster, Ctx};

/// Claims the lease when free, renews it when ours; returns the holder's id either way.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return cur
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
";

/// Deletes the lease only when ours (a clean stop).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Every Redis call of this module is bounded by this.
const REDIS_TIMEOUT: Duration = Duration::from_millis(400);

/// What this instance does about probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Another instance probes; this one applies its results.
    Following = 0,
    /// This instance holds the lease.
    Prober = 1,
    /// Redis is unreachable: probing for itself.
    Unreachable = 2,
    /// The shared results are stale: probing for itself.
    Stale = 3,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Prober,
            2 => Mode::Unreachable,
            3 => Mode::Stale,
            _ => Mode::Following,
        }
    }

    fn probes(self) -> bool {
        self != Mode::Following
    }
}

/// One publication of the prober: the results of what it just probed.
#[derive(Serialize, Deserialize)]
struct Shared {
    /// The prober's instance id.
    by: String,
    /// When it published (unix ms): how fresh the results are.
    at_ms: i64,
    results: Vec<ProbeResult>,
    /// An on-demand re-probe (a pull, a refresh), possibly by a follower: fresh news of these
    /// upstreams, but no sign that the prober is alive (it does not move `fresh_ms`).
    #[serde(default)]
    manual: bool,
}

/// The cluster's [`ProbeCoordinator`]: the lease, the shared results, the fallback.
pub struct Prober {
    cluster: Arc<Cluster>,
    gw: Arc<Gateway>,
    mode: AtomicU8,
    /// Unix ms of the newest shared result seen (or of start-up, when none yet).
    fresh_ms: AtomicU64,
    /// Set once the first claim settled the mode (no wake for the start-up decision).
    settled: AtomicBool,
    wake: Arc<Notify>,
    /// Upstream name → whether the latest shared result has it in standby.
    reported: Mutex<HashMap<String, bool>>,
    /// Results waiting to be published, by upstream name.
    pending: Mutex<HashMap<String, ProbeResult>>,
    /// On-demand re-probe results waiting to be published (by any instance), by name.
    pending_manual: Mutex<HashMap<String, ProbeResult>>,
    publish: Notify,
}

impl ProbeCoordinator for Prober {
    fn is_prober(&self) -> bool {
        self.mode() == Mode::Prober
    }

    fn should_probe(&self) -> bool {
        self.mode().probes()
    }

    fn probed(&self, upstreams: &[Arc<Upstream>]) {
        if !self.is_prober() {
            return;
        }
        if let Ok(mut pending) = self.pending.lock() {
            for up in upstreams {
                pending.insert(up.name.clone(), ProbeResult::of(up));
            }
        }
        self.publish.notify_one();
    }

    fn reprobed(&self, upstreams: &[Arc<Upstream>]) {
        if let Ok(mut pending) = self.pending_manual.lock() {
            for up in upstreams {
                pending.insert(up.name.clone(), ProbeResult::of(up));
            }
        }
        self.publish.notify_one();
    }

    fn reported_down(&self, up: &Upstream) -> bool {
        self.reported
            .lock()
            .is_ok_and(|r| r.get(&up.name).copied().unwrap_or(false))
    }

    fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }
}

impl Prober {
    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Relaxed))
    }

    fn lease_key(&self) -> String {
        self.cluster.key("prober")
    }

    fn results_key(&self) -> String {
        self.cluster.key("probe")
    }

    /// The lease's TTL: one health interval, so a dead prober is replaced within two.
    fn ttl(&self) -> Duration {
        self.gw.config().health.interval.max(Duration::from_secs(1))
    }

    /// How old the newest shared results may be before this instance probes for itself.
    fn stale_after(&self) -> Duration {
        let health = &self.gw.config().health;
        health.interval * 2 + health.timeout
    }

    /// How often the lease is claimed or renewed.
    fn tick(&self) -> Duration {
        (self.ttl() / 4)
            .min(self.cluster.heartbeat)
            .max(Duration::from_millis(100))
    }

    /// Claims or renews the lease: `Some(holder)`, or `None` when Redis did not answer.
    async fn claim(&self) -> Option<String> {
        let mut conn = self.cluster.conn.clone();
        let ttl_ms = u64::try_from(self.ttl().as_millis()).unwrap_or(u64::MAX);
        let script = redis::Script::new(CLAIM);
        let mut inv = script.key(self.lease_key());
        inv.arg(&self.cluster.id).arg(ttl_ms);
        let call = inv.invoke_async::<String>(&mut conn);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(holder)) => Some(holder),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster: prober lease claim failed");
                None
            }
            Err(_) => None,
        }
    }

    /// One step of the lease loop: claim or renew, read the shared results when no
    /// publication came for an interval, and decide the mode.
    async fn step(&self) {
        let holder = self.claim().await;
        let now = llmux_store::now_ms();
        if holder.is_some() && self.mode() == Mode::Unreachable {
            // Back from an outage in which it probed for itself: its own results are fresh;
            // the prober's next publication takes over from here.
            self.fresh_ms
                .fetch_max(u64::try_from(now).unwrap_or(0), Ordering::Relaxed);
        }
        let mode = match &holder {
            None => Mode::Unreachable,
            Some(h) if *h == self.cluster.id => {
                // Its own results are the freshest there are.
                let now = u64::try_from(now).unwrap_or(0);
                self.fresh_ms.fetch_max(now, Ordering::Relaxed);
                Mode::Prober
            }
            Some(_) => {
                // Publications come every interval plus one round (bounded by the timeout).
                let health = &self.gw.config().health;
                if self.age(now) > health.interval + health.timeout {
                    self.read_shared().await;
                }
                if self.age(now) > self.stale_after() {
                    Mode::Stale
                } else {
                    Mode::Following
                }
            }
        };
        self.set_mode(mode, holder.as_deref());
    }

    /// How old the newest shared results are at `now_ms`.
    fn age(&self, now_ms: i64) -> Duration {
        let fresh = i64::try_from(self.fresh_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        Duration::from_millis(u64::try_from(now_ms.saturating_sub(fresh)).unwrap_or(0))
    }

    /// Records `mode`, logs a change, and wakes the health loop when this instance starts
    /// probing (after start-up, which probes anyway).
    fn set_mode(&self, mode: Mode, holder: Option<&str>) {
        let was = Mode::from_u8(self.mode.swap(mode as u8, Ordering::Relaxed));
        let first = !self.settled.swap(true, Ordering::Relaxed);
        if was == mode && !first {
            return;
        }
        let id = &self.cluster.id;
        match mode {
            Mode::Prober => {
                tracing::info!(instance = %id, "cluster: this instance is the prober now: it runs the health checks and model discovery for the cluster")
            }
            Mode::Following => {
                tracing::info!(instance = %id, prober = holder.unwrap_or(""), "cluster: following the prober: taking its health results instead of probing")
            }
            Mode::Unreachable => {
                tracing::warn!(instance = %id, "cluster: Redis unreachable: probing for itself until it is back")
            }
            Mode::Stale => {
                tracing::warn!(instance = %id, prober = holder.unwrap_or(""), stale_after = ?self.stale_after(), "cluster: the prober's shared results are stale: probing for itself")
            }
        }
        if mode.probes() && !was.probes() && !first {
            self.wake.notify_one();
        }
    }

    /// Applies a publication of another instance, received at `received_ms` (a message, fresh
    /// by definition: no clock of another host involved) or read from the hash (`None`: its
    /// own time stamp says how fresh it is). Returns whether it was another instance's.
    fn apply(&self, shared: &Shared, received_ms: Option<i64>) -> bool {
        if shared.by == self.cluster.id {
            return false;
        }
        if !shared.manual {
            let at = u64::try_from(received_ms.unwrap_or(shared.at_ms)).unwrap_or(0);
            self.fresh_ms.fetch_max(at, Ordering::Relaxed);
        }
        let routes = self.gw.routes();
        for result in &shared.results {
            if let Ok(mut reported) = self.reported.lock() {
                reported.insert(result.name.clone(), result.pool != "active");
            }
            if let Some(up) = routes.upstream(&result.name) {
                result.apply(up);
            }
        }
        true
    }

    /// Reads every shared result from the hash (the safety net for a lost publication).
    async fn read_shared(&self) {
        let mut conn = self.cluster.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.results_key());
        let call = cmd.query_async::<HashMap<String, String>>(&mut conn);
        let Ok(Ok(fields)) = tokio::time::timeout(REDIS_TIMEOUT, call).await else {
            return;
        };
        for json in fields.values() {
            if let Ok(shared) = serde_json::from_str::<Shared>(json) {
                self.apply(&shared, None);
            }
        }
    }

    /// Publishes what is pending: a round's results when this instance is the prober,
    /// on-demand re-probes whoever made them.
    async fn publish_pending(&self) {
        let take = |m: &Mutex<HashMap<String, ProbeResult>>| -> Vec<ProbeResult> {
            m.lock()
                .map(|mut p| p.drain().map(|(_, r)| r).collect())
                .unwrap_or_default()
        };
        let rounds = take(&self.pending);
        let manual = take(&self.pending_manual);
        if self.is_prober() && !rounds.is_empty() {
            self.share(rounds, false).await;
        }
        if !manual.is_empty() {
            self.share(manual, true).await;
        }
    }

    /// Writes `results` into the hash and publishes them, in one atomic pipeline.
    async fn share(&self, results: Vec<ProbeResult>, manual: bool) {
        let at_ms = llmux_store::now_ms();
        let by = self.cluster.id.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in &results {
            let one = Shared {
                by: by.clone(),
                at_ms,
                results: vec![r.clone()],
                manual,
            };
            if let Ok(json) = serde_json::to_string(&one) {
                pipe.hset(self.results_key(), &r.name, json).ignore();
            }
        }
        let keep_ms = u64::try_from(self.stale_after().as_millis()).unwrap_or(u64::MAX);
        pipe.pexpire(self.results_key(), keep_ms as i64).ignore();
        let all = Shared {
            by,
            at_ms,
            results,
            manual,
        };
        if let Ok(json) = serde_json::to_string(&all) {
            pipe.publish(self.results_key(), json).ignore();
        }
        let mut conn = self.cluster.conn.clone();
        let call = pipe.query_async::<()>(&mut conn);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cluster: could not share probe results"),
            Err(_) => tracing::warn!("cluster: sharing probe results timed out"),
        }
    }

    /// Gives the lease up when this instance holds it (a clean stop).
    async fn release(&self) {
        let mut conn = self.cluster.conn.clone();
        let script = redis::Script::new(RELEASE);
        let mut inv = script.key(self.lease_key());
        inv.arg(&self.cluster.id);
        let call = inv.invoke_async::<i64>(&mut conn);
        let _ = tokio::time::timeout(REDIS_TIMEOUT, call).await;
    }
}

/// Starts this part on `ctx.tasks`: installs the coordinator, runs the lease loop, the
/// publisher and the subscriber.
pub(crate) fn start(ctx: &Ctx) {
    let prober = Arc::new(Prober {
        cluster: Arc::clone(&ctx.cluster),
        gw: Arc::clone(&ctx.gw),
        mode: AtomicU8::new(Mode::Following as u8),
        fresh_ms: AtomicU64::new(u64::try_from(llmux_store::now_ms()).unwrap_or(0)),
        settled: AtomicBool::new(false),
        wake: Arc::new(Notify::new()),
        reported: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        pending_manual: Mutex::new(HashMap::new()),
        publish: Notify::new(),
    });
    let _ = ctx
        .gw
        .peers
        .probe
        .set(Arc::clone(&prober) as Arc<dyn ProbeCoordinator>);
    let (p, cancel) = (Arc::clone(&prober), ctx.cancel.clone());
    ctx.tasks.spawn(async move {
        loop {
            p.step().await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(p.tick()) => {}
            }
        }
        if p.is_prober() {
            p.release().await;
        }
    });
    let (p, cancel) = (Arc::clone(&prober), ctx.cancel.clone());
    ctx.tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = p.publish.notified() => p.publish_pending().await,
            }
        }
    });
    let (p, cancel) = (prober, ctx.cancel.clone());
    ctx.tasks.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = subscribe(&p) => {}
        }
    });
}

/// Applies every publication on `{ns}:probe`, reconnecting after a lost connection.
async fn subscribe(p: &Prober) {
    let channel = p.results_key();
    loop {
        if let Some(mut messages) = crate::signals::subscription(&p.cluster, &channel).await {
            while let Some(msg) = messages.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                if let Ok(shared) = serde_json::from_str::<Shared>(&payload) {
                    p.apply(&shared, Some(llmux_store::now_ms()));
                }
            }
        }
        tokio::time::sleep(p.cluster.heartbeat).await;
    }
}

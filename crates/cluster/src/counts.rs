//! Cluster-wide in-flight counts per upstream (for `least_active`) and per-key concurrency, held under each instance's lease.
//!
//! In-flight counts: every [`PUBLISH_EVERY`] each instance writes its own counts (one field of
//! `{ns}:inflight`, keyed by its id) and, in the same script, reads the others' — only those
//! whose lease key exists; a dead instance's field is deleted. The sum per upstream goes on each
//! `Upstream` (`set_remote_active_requests`), which `least_active` adds to the local count. So
//! the calls of an instance killed with SIGKILL stop counting once its lease expires.
//!
//! Key concurrency: per virtual key a hash `{ns}:conc:{key}` of instance id → slots held there.
//! Admission is one script that sums the live instances' fields (deleting dead ones), refuses
//! at the limit, else adds one to this instance's field. Releases go through a worker off the
//! call path. Every heartbeat the instance re-asserts its own held counts (absolute values),
//! which repairs a lost release, a timed-out admission that did run, or a Redis restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmux_gateway::limits::BoxFuture;
use llmux_gateway::peers::counts::{SharedCounts, SharedSlot};
use redis::Script;
use tokio::sync::mpsc;

use crate::{Cluster, Ctx};

/// How often an instance publishes its in-flight counts and reads the others'.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// A shared admission waits this long for Redis before the call is counted locally.
const ADMIT_TIMEOUT: Duration = Duration::from_millis(400);
/// A key's hash outlives its last write by this long (re-asserted every heartbeat while held).
const CONC_TTL_MS: u64 = 86_400_000;

/// Publishes this instance's counts (`ARGV[2]`, JSON; empty: none) under its id (`ARGV[1]`) and
/// returns the counts of the other live instances (`ARGV[3]`: the lease-key prefix).
const INFLIGHT: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local id = all[i]
  if id ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[3] .. id) == 1 then
      out[#out + 1] = all[i + 1]
    else
      redis.call('HDEL', KEYS[1], id)
    end
  end
end
return out
";

/// One slot of key `KEYS[1]` for instance `ARGV[1]` under limit `ARGV[2]`, counting only live
/// instances (`ARGV[3]`: lease-key prefix). Returns `{1, held_after}` or `{0, held}`.
const ACQUIRE: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local held = 0
for i = 1, #all, 2 do
  local id = all[i]
  if id == ARGV[1] or redis.call('EXISTS', ARGV[3] .. id) == 1 then
    held = held + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], id)
  end
end
if held >= tonumber(ARGV[2]) then
  return {0, held}
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, held + 1}
";

/// Gives back one slot of instance `ARGV[1]`; never below zero.
const RELEASE: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return n
";

/// Starts this part on `ctx.tasks`: the in-flight publisher and the concurrency hook.
pub(crate) fn start(ctx: &Ctx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let counts = Arc::new(ClusterCounts {
        cluster: Arc::clone(&ctx.cluster),
        acquire: Script::new(ACQUIRE),
        release: Script::new(RELEASE),
        held: Mutex::new(Held {
            keys: HashMap::new(),
            releases: tx,
        }),
    });
    let _ = ctx
        .gw
        .peers
        .counts
        .set(Arc::clone(&counts) as Arc<dyn SharedCounts>);
    ctx.tasks
        .spawn(run_concurrency(counts, rx, ctx.cancel.clone()));
    ctx.tasks.spawn(run_inflight(
        Arc::clone(&ctx.cluster),
        Arc::clone(&ctx.gw),
        ctx.cancel.clone(),
    ));
}

/// Publishes this instance's in-flight counts and takes the others', every [`PUBLISH_EVERY`].
async fn run_inflight(
    cluster: Arc<Cluster>,
    gw: Arc<llmux_gateway::Gateway>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let script = Script::new(INFLIGHT);
    let key = cluster.key("inflight");
    let prefix = cluster.live_key("");
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let routes = gw.routes();
        let mine: HashMap<&str, usize> = routes
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.active_requests()))
            .filter(|(_, n)| *n > 0)
            .collect();
        let json = if mine.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&mine).unwrap_or_default()
        };
        let mut conn = cluster.conn.clone();
        let mut call = script.key(&key);
        call.arg(&cluster.id).arg(json).arg(&prefix);
        let others: Vec<String> = if cluster.reachable() {
            match tokio::time::timeout(ADMIT_TIMEOUT, call.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                // Stale counts of others would pin nodes: without an answer, count none.
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let sums = sum_counts(&others);
        for u in &routes.upstreams {
            u.set_remote_active_requests(sums.get(u.name.as_str()).copied().unwrap_or(0));
        }
    }
    // A clean stop takes this instance's counts away at once.
    let mut conn = cluster.conn.clone();
    let mut cmd = redis::cmd("HDEL");
    cmd.arg(cluster.key("inflight")).arg(&cluster.id);
    let _ = tokio::time::timeout(ADMIT_TIMEOUT, cmd.query_async::<()>(&mut conn)).await;
}

/// The per-upstream sums of the other instances' published counts (JSON objects).
fn sum_counts(published: &[String]) -> HashMap<String, usize> {
    let mut sums: HashMap<String, usize> = HashMap::new();
    for one in published {
        let Ok(counts) = serde_json::from_str::<HashMap<String, usize>>(one) else {
            continue;
        };
        for (upstream, n) in counts {
            let s = sums.entry(upstream).or_default();
            *s = s.saturating_add(n);
        }
    }
    sums
}

/// This instance's slots held in Redis per key, and the releases not yet sent. One mutex for
/// both, so that a re-assertion's snapshot and the releases it makes moot are one step.
struct Held {
    keys: HashMap<Box<str>, u32>,
    releases: mpsc::UnboundedSender<Box<str>>,
}

/// Key concurrency shared through Redis (the gateway's [`SharedCounts`] hook).
struct ClusterCounts {
    cluster: Arc<Cluster>,
    acquire: Script,
    release: Script,
    held: Mutex<Held>,
}

impl ClusterCounts {
    fn conc_key(&self, key: &str) -> String {
        self.cluster.key(&format!("conc:{key}"))
    }

    /// Adds `delta` to this instance's held slots of `key` (locally).
    fn note(&self, key: &str, delta: i64) {
        if let Ok(mut h) = self.held.lock() {
            let n = h.keys.entry(key.into()).or_default();
            *n = u32::try_from((i64::from(*n) + delta).max(0)).unwrap_or(0);
        }
    }

    async fn acquire_slot(&self, key: &str, limit: u32) -> SharedSlot {
        if !self.cluster.reachable() {
            return SharedSlot::Unavailable;
        }
        // Counted before Redis answers: a re-assertion meanwhile over-counts, never under.
        self.note(key, 1);
        let mut conn = self.cluster.conn.clone();
        let mut call = self.acquire.key(self.conc_key(key));
        call.arg(&self.cluster.id)
            .arg(limit)
            .arg(self.cluster.live_key(""))
            .arg(CONC_TTL_MS);
        let answer =
            tokio::time::timeout(ADMIT_TIMEOUT, call.invoke_async::<(i64, i64)>(&mut conn));
        match answer.await {
            Ok(Ok((1, _))) => SharedSlot::Granted,
            Ok(Ok((_, held))) => {
                self.note(key, -1);
                SharedSlot::Refused(u32::try_from(held).unwrap_or(u32::MAX))
            }
            Ok(Err(e)) => {
                self.note(key, -1);
                tracing::debug!(error = %e, "cluster: key concurrency unavailable; counting locally");
                SharedSlot::Unavailable
            }
            Err(_) => {
                self.note(key, -1);
                SharedSlot::Unavailable
            }
        }
    }

    /// Sends queued releases.
    async fn send_release(&self, key: &str) {
        let mut conn = self.cluster.conn.clone();
        let mut call = self.release.key(self.conc_key(key));
        call.arg(&self.cluster.id);
        // A lost release is repaired by the next re-assertion.
        let _ = tokio::time::timeout(ADMIT_TIMEOUT, call.invoke_async::<i64>(&mut conn)).await;
    }

    /// Writes this instance's held count of every key it holds (or held since the last time) as
    /// absolute values, dropping the releases queued until now (the values include them).
    async fn reassert(&self, rx: &mut mpsc::UnboundedReceiver<Box<str>>) {
        let snapshot: Vec<(Box<str>, u32)> = {
            let Ok(h) = self.held.lock() else {
                return;
            };
            while rx.try_recv().is_ok() {}
            h.keys.iter().map(|(k, n)| (k.clone(), *n)).collect()
        };
        if snapshot.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, n) in &snapshot {
            let k = self.conc_key(key);
            if *n == 0 {
                pipe.hdel(&k, &self.cluster.id).ignore();
            } else {
                pipe.hset(&k, &self.cluster.id, *n).ignore();
                pipe.pexpire(&k, CONC_TTL_MS as i64).ignore();
            }
        }
        let mut conn = self.cluster.conn.clone();
        let written = tokio::time::timeout(ADMIT_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        if matches!(written, Ok(Ok(()))) {
            // Keys back at zero are written as such: forget them (unless taken again since).
            if let Ok(mut h) = self.held.lock() {
                h.keys.retain(|_, n| *n > 0);
            }
        }
    }
}

impl SharedCounts for ClusterCounts {
    fn acquire<'a>(&'a self, key: &'a str, limit: u32) -> BoxFuture<'a, SharedSlot> {
        Box::pin(self.acquire_slot(key, limit))
    }

    fn release(&self, key: &str) {
        if let Ok(mut h) = self.held.lock() {
            if let Some(n) = h.keys.get_mut(key) {
                *n = n.saturating_sub(1);
            }
            let _ = h.releases.send(key.into());
        }
    }
}

/// Sends releases as they come, and re-asserts the held counts every heartbeat.
async fn run_concurrency(
    counts: Arc<ClusterCounts>,
    mut rx: mpsc::UnboundedReceiver<Box<str>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(counts.cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                if counts.cluster.reachable() {
                    counts.reassert(&mut rx).await;
                }
            }
            key = rx.recv() => {
                let Some(key) = key else { return };
                if counts.cluster.reachable() {
                    counts.send_release(&key).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sums_per_upstream_skip_garbage() {
        let s = sum_counts(&[
            r#"{"a":2,"b":1}"#.to_string(),
            r#"{"a":3}"#.to_string(),
            "not json".to_string(),
        ]);
        assert_eq!(s.get("a"), Some(&5));
        assert_eq!(s.get("b"), Some(&1));
        assert_eq!(s.len(), 2);
    }
}

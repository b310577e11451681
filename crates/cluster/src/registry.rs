//! The instance registry: each instance's heartbeat record (id, address, version, started, last
//! heartbeat, in-flight, calls/s, prober) and `GET /admin/v1/cluster`.
//!
//! At every heartbeat an instance writes its record as JSON into the hash `{ns}:instances`
//! (field = its id) and its heartbeat time into the sorted set `{ns}:beats` — one Lua script,
//! timed by Redis's own clock (`TIME`), so instances with skewed clocks still agree on who is
//! late. Reading takes Redis's time, the hash and the set in one pipeline: an instance whose last
//! heartbeat is older than three of its heartbeat intervals is `lost`; one silent for
//! [`FORGET`] is dropped by the next write (and both keys expire when the whole cluster has been
//! gone that long). A clean stop removes the instance's record at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use llmux_admin::cluster_api::{
    local_load, CallRate, ClusterSnapshot, ClusterView, Instance, InstanceState, Mode, ViewFuture,
};
use llmux_ratelimit_redis::IO_TIMEOUT;
use redis::Script;

use crate::{Cluster, Ctx};

/// How long a lost instance stays listed before its record is dropped.
pub const FORGET: Duration = Duration::from_secs(600);

/// Writes one heartbeat: KEYS = instances hash, beats set; ARGV = id, record JSON, forget ms.
const WRITE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return #gone
";

/// This instance's side of the registry, and the view `GET /admin/v1/cluster` answers from.
pub struct Registry {
    cluster: Arc<Cluster>,
    gw: Arc<llmux_gateway::Gateway>,
    rate: CallRate,
    write: Script,
}

/// Starts this part on `ctx.tasks`: the view set on the control plane, and a heartbeat loop that
/// writes this instance's record and removes it on a clean stop.
pub(crate) fn start(ctx: &Ctx) {
    let registry = Arc::new(Registry {
        cluster: Arc::clone(&ctx.cluster),
        gw: Arc::clone(&ctx.gw),
        rate: CallRate::default(),
        write: Script::new(WRITE),
    });
    if !ctx
        .cp
        .set_cluster_view(Arc::clone(&registry) as Arc<dyn ClusterView>)
    {
        tracing::warn!(
            "cluster registry: a cluster view was already set; /admin/v1/cluster keeps it"
        );
    }
    let cancel = ctx.cancel.clone();
    ctx.tasks.spawn(async move {
        let mut tick = tokio::time::interval(registry.cluster.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            match registry.beat().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("cluster registry: heartbeat records written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cluster registry: cannot write this instance's heartbeat record; other instances will list it as lost until Redis answers");
                }
                Err(_) => {}
            }
        }
        registry.remove().await;
    });
}

impl Registry {
    fn instances_key(&self) -> String {
        self.cluster.key("instances")
    }

    fn beats_key(&self) -> String {
        self.cluster.key("beats")
    }

    /// This instance's record now; `sample` takes a new calls/s sample (heartbeats do; a read
    /// only repeats the last one).
    fn record(&self, sample: bool) -> Instance {
        let (in_flight, total) = local_load(&self.gw);
        let min = if sample {
            Duration::ZERO
        } else {
            Duration::MAX
        };
        Instance {
            id: self.cluster.id.clone(),
            address: self.cluster.address.clone(),
            version: self.cluster.version.to_string(),
            started_ms: self.cluster.started_ms,
            last_heartbeat_ms: llmux_store::now_ms(),
            heartbeat_ms: u64::try_from(self.cluster.heartbeat.as_millis()).unwrap_or(u64::MAX),
            in_flight,
            calls_per_s: self.rate.sample(total, min),
            // No coordinator (the prober part is off): every instance probes for itself.
            prober: self.gw.peers.probe.get().is_none_or(|p| p.is_prober()),
        }
    }

    /// Writes this instance's record and heartbeat, dropping records silent for [`FORGET`].
    async fn beat(&self) -> Result<(), String> {
        let record = serde_json::to_string(&self.record(true)).map_err(|e| e.to_string())?;
        let mut conn = self.cluster.conn.clone();
        let mut invocation = self.write.prepare_invoke();
        invocation
            .key(self.instances_key())
            .key(self.beats_key())
            .arg(&self.cluster.id)
            .arg(record)
            .arg(u64::try_from(FORGET.as_millis()).unwrap_or(u64::MAX));
        let write = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(IO_TIMEOUT * 2, write).await {
            Ok(Ok(dropped)) => {
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "cluster registry: forgot instances silent for 10 minutes"
                    );
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("Redis did not answer within {:?}", IO_TIMEOUT * 2)),
        }
    }

    /// A clean stop: this instance leaves the list now rather than turning `lost`.
    async fn remove(&self) {
        let mut conn = self.cluster.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL")
            .arg(self.instances_key())
            .arg(&self.cluster.id)
            .ignore()
            .cmd("ZREM")
            .arg(self.beats_key())
            .arg(&self.cluster.id)
            .ignore();
        let del = pipe.query_async::<()>(&mut conn);
        if !matches!(
            tokio::time::timeout(Duration::from_millis(500), del).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("cluster registry: could not remove this instance's record on stop; others list it as lost until it is forgotten");
        }
    }

    /// Redis's time (ms), every record, every heartbeat time (ms).
    async fn read(&self) -> Result<(i64, HashMap<String, String>, Vec<(String, f64)>), String> {
        let mut conn = self.cluster.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("TIME")
            .cmd("HGETALL")
            .arg(self.instances_key())
            .cmd("ZRANGE")
            .arg(self.beats_key())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        type Answer = ((i64, i64), HashMap<String, String>, Vec<(String, f64)>);
        let read = pipe.query_async::<Answer>(&mut conn);
        match tokio::time::timeout(IO_TIMEOUT * 2, read).await {
            Ok(Ok(((secs, micros), records, beats))) => {
                Ok((secs * 1000 + micros / 1000, records, beats))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("Redis did not answer within {:?}", IO_TIMEOUT * 2)),
        }
    }
}

/// The registry's listing at Redis time `now`: records with a heartbeat, marked live or lost,
/// without those silent for [`FORGET`] or unreadable.
pub fn listing(
    now: i64,
    records: &HashMap<String, String>,
    beats: &[(String, f64)],
) -> Vec<(Instance, InstanceState)> {
    let forget = i64::try_from(FORGET.as_millis()).unwrap_or(i64::MAX);
    beats
        .iter()
        .filter_map(|(id, at)| {
            #[allow(clippy::cast_possible_truncation)] // unix ms fit an f64 exactly
            let at = *at as i64;
            let mut instance: Instance = serde_json::from_str(records.get(id)?).ok()?;
            instance.last_heartbeat_ms = at;
            let late = now.saturating_sub(at);
            let lost_after =
                i64::try_from(instance.heartbeat_ms.saturating_mul(3)).unwrap_or(i64::MAX);
            let state = if late > lost_after {
                InstanceState::Lost
            } else {
                InstanceState::Live
            };
            (late <= forget).then_some((instance, state))
        })
        .collect()
}

impl ClusterView for Registry {
    fn snapshot(&self) -> ViewFuture<'_> {
        Box::pin(async move {
            let this = self.cluster.id.clone();
            match self.read().await {
                Ok((now, records, beats)) => {
                    let mut instances = listing(now, &records, &beats);
                    if !instances.iter().any(|(i, _)| i.id == this) {
                        // Before its first heartbeat landed: this instance is alive, it answers.
                        instances.push((self.record(false), InstanceState::Live));
                    }
                    ClusterSnapshot {
                        mode: Mode::Cluster,
                        this,
                        instances,
                        warning: None,
                    }
                }
                Err(e) => ClusterSnapshot {
                    mode: Mode::Cluster,
                    this,
                    instances: vec![(self.record(false), InstanceState::Live)],
                    warning: Some(format!(
                        "Redis unreachable ({e}): only this instance is listed"
                    )),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(id: &str, heartbeat_ms: u64) -> String {
        serde_json::to_string(&Instance {
            id: id.into(),
            address: format!("{id}:4000"),
            version: "0.1.0".into(),
            started_ms: 1,
            last_heartbeat_ms: 0,
            heartbeat_ms,
            in_flight: 0,
            calls_per_s: 0.0,
            prober: id == "a",
        })
        .unwrap()
    }

    #[test]
    fn late_by_three_heartbeats_is_lost_and_by_ten_minutes_gone() {
        let now = 1_700_000_000_000_i64;
        let records: HashMap<String, String> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| (id.to_string(), record(id, 500)))
            .chain([("bad".to_string(), "{not json".to_string())])
            .collect();
        let beats = vec![
            ("a".to_string(), (now - 200) as f64),
            ("b".to_string(), (now - 1500) as f64),
            ("c".to_string(), (now - 1501) as f64),
            ("d".to_string(), (now - 600_001) as f64),
            ("bad".to_string(), now as f64),
            ("no-record".to_string(), now as f64),
        ];
        let list = listing(now, &records, &beats);
        let states: Vec<(&str, InstanceState)> =
            list.iter().map(|(i, s)| (i.id.as_str(), *s)).collect();
        assert_eq!(
            states,
            [
                ("a", InstanceState::Live),
                ("b", InstanceState::Live),
                ("c", InstanceState::Lost)
            ]
        );
        assert_eq!(list[0].0.last_heartbeat_ms, now - 200);
        assert!(list[0].0.prober);
    }
}

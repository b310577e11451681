//! The prober lease as the gateway sees it, and the probe results the prober shares.
//!
//! One instance of a cluster (the lease holder) runs the active health checks, model discovery
//! and key re-checks; the others apply its [`ProbeResult`]s to their own upstreams. Every
//! instance still probes once at start-up (so none routes blind), and an instance that cannot
//! rely on the prober's results (Redis unreachable, results stale) probes for itself. Live-call
//! failures (`mark_down`, key and breaker reactions) stay local and immediate.

use crate::upstream::{Pool, Upstream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Decides whether this instance runs the active health checks now.
pub trait ProbeCoordinator: Send + Sync {
    /// Whether this instance holds the cluster's prober lease (shown in the registry).
    fn is_prober(&self) -> bool;

    /// Whether this instance should run the active health checks (and key re-checks) now:
    /// it holds the lease, or it cannot rely on the prober's shared results (Redis
    /// unreachable, or results older than allowed), and then probes for itself.
    fn should_probe(&self) -> bool;

    /// This instance just probed `upstreams`: the prober shares their results (off the
    /// caller's path; never blocks).
    fn probed(&self, upstreams: &[Arc<Upstream>]);

    /// This instance just re-probed `upstreams` on demand (a model pulled or deleted through
    /// it, `POST /admin/v1/upstreams/{name}/refresh`): the results are shared with every
    /// instance at once, whether or not this one is the prober (off the caller's path).
    fn reprobed(&self, upstreams: &[Arc<Upstream>]) {
        self.probed(upstreams);
    }

    /// Whether the prober's latest shared result has `up` in standby: then re-probing it is
    /// the prober's work, and a follower leaves it alone. A follower re-probes (on the usual
    /// backoff) only upstreams it put in standby itself after a live call failed there.
    fn reported_down(&self, up: &Upstream) -> bool;

    /// Fires when [`ProbeCoordinator::should_probe`] turns true (the lease was won, or the
    /// shared results went stale), so the health loop probes at once rather than at its next
    /// round.
    fn wake(&self) -> Arc<tokio::sync::Notify>;
}

/// What the prober learned about one upstream, as it shares it with the other instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    /// The upstream's kind and URL: a result is applied only to the same server (during a
    /// config change two instances may briefly know one name by different definitions).
    pub kind: String,
    pub url: String,
    /// `active` or `standby`.
    pub pool: String,
    pub latency_ms: Option<f64>,
    /// Discovered models; `None` when the upstream's models are declared in config.
    pub models: Option<Vec<String>>,
    /// Ollama `/api/tags` and `/api/ps` entries as the node sent them.
    pub tags: Vec<Value>,
    pub ps: Vec<Value>,
    pub last_error: Option<String>,
    /// When the prober last checked it (unix ms); a result no newer than what an instance
    /// already has is not applied.
    pub last_check_ms: Option<u64>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

impl ProbeResult {
    /// The prober's view of `up` now.
    pub fn of(up: &Upstream) -> ProbeResult {
        let s = up.state();
        ProbeResult {
            name: up.name.clone(),
            kind: up.kind.as_str().to_string(),
            url: up.base.clone(),
            pool: s.pool.as_str().to_string(),
            latency_ms: s.latency_ms,
            models: up.static_models.is_none().then(|| s.model_list.clone()),
            tags: s.tags.clone(),
            ps: s.ps.clone(),
            last_error: s.last_error.clone(),
            last_check_ms: s.last_check.map(unix_ms),
        }
    }

    /// Applies this result to `up` (this instance's runtime of the same upstream) when it is
    /// about the same server and newer than what `up` knows. Returns whether it applied.
    pub fn apply(&self, up: &Upstream) -> bool {
        if self.kind != up.kind.as_str() || self.url != up.base {
            return false;
        }
        let Some(checked_ms) = self.last_check_ms else {
            return false;
        };
        let before = up.state();
        if before.last_check.map(unix_ms) >= Some(checked_ms) {
            return false;
        }
        let pool = if self.pool == Pool::Active.as_str() {
            Pool::Active
        } else {
            Pool::Standby
        };
        let checked = UNIX_EPOCH + Duration::from_millis(checked_ms);
        let was = before.pool;
        drop(before);
        up.update(|s| {
            s.pool = pool;
            s.latency_ms = self.latency_ms;
            s.last_error = self.last_error.clone();
            s.last_check = Some(checked);
            let models = self.models.as_ref().filter(|_| up.static_models.is_none());
            s.take_discovery(up.kind, models, &self.tags, &self.ps);
        });
        if was != pool {
            tracing::info!(upstream = %up.name, pool = pool.as_str(), "upstream pool changed by the cluster's prober");
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::upstream::index_models;
    use llmux_config::{RoutingConfig, Timeouts, UpstreamConfig, UpstreamKind};

    fn node(url: &str) -> Upstream {
        let cfg = UpstreamConfig {
            name: "gpu-a".into(),
            kind: UpstreamKind::Ollama,
            url: url.into(),
            keys: Vec::new(),
            models: None,
            weight: 1,
            timeouts: Timeouts::default(),
            api_version: None,
            max_tokens_field: Default::default(),
            max_output_tokens: Default::default(),
        };
        Upstream::new(&cfg, &RoutingConfig::default()).unwrap()
    }

    /// A follower takes the prober's pool, models and loaded models; an older result, or one
    /// about another server of the same name, changes nothing.
    #[tokio::test]
    async fn a_newer_result_for_the_same_server_is_applied_and_nothing_else() {
        let prober = node("http://10.0.0.5:11434");
        prober.update(|s| {
            s.pool = Pool::Standby;
            s.last_error = Some("connection failed".into());
            s.last_check = Some(SystemTime::now());
            let (map, list) = index_models(vec!["llama3:latest".into(), "qwen2:7b".into()]);
            s.models = map;
            s.model_list = list;
            s.ps = vec![serde_json::json!({"name": "qwen2:7b"})];
        });
        let shared = ProbeResult::of(&prober);
        let wire: ProbeResult =
            serde_json::from_str(&serde_json::to_string(&shared).unwrap()).unwrap();
        assert_eq!(wire, shared);

        let follower = node("http://10.0.0.5:11434");
        assert!(wire.apply(&follower));
        let s = follower.state();
        assert_eq!(s.pool, Pool::Standby);
        assert_eq!(s.model_list, vec!["llama3:latest", "qwen2:7b"]);
        assert!(s.loaded.contains("qwen2:7b"));
        assert_eq!(s.last_error.as_deref(), Some("connection failed"));
        assert!(
            !wire.apply(&follower),
            "the same result twice is applied once"
        );

        let elsewhere = node("http://10.0.0.6:11434");
        assert!(!wire.apply(&elsewhere), "another server of the same name");
        assert_eq!(elsewhere.state().pool, Pool::Active);

        let fresher = node("http://10.0.0.5:11434");
        fresher.update(|s| s.last_check = Some(SystemTime::now() + Duration::from_secs(5)));
        assert!(
            !wire.apply(&fresher),
            "an older result than the instance's own"
        );
    }
}

//! One upstream at run time: its pooled HTTP client, keys, in-flight count and the state the prober keeps.

use crate::breaker::Breaker;
use crate::keys::KeyPool;
use crate::keys::KeyState;
use arc_swap::ArcSwap;
use llmux_config::{RoutingConfig, Timeouts, UpstreamConfig, UpstreamKind};
use llmux_wire::model::model_key;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Whether an upstream takes traffic. Standby nodes are tried only when no active one serves the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Active,
    Standby,
}

impl Pool {
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Active => "active",
            Pool::Standby => "standby",
        }
    }
}

/// What the health prober (and live-call failures) learned about an upstream. Replaced whole,
/// never mutated in place, so the hot path reads it without a lock.
#[derive(Clone, Debug)]
pub struct UpstreamState {
    pub pool: Pool,
    /// Model key (see [`model_key`]) → the name this upstream knows it by.
    pub models: HashMap<String, String>,
    /// Served model names in the order the upstream listed them.
    pub model_list: Vec<String>,
    /// Keys of models loaded in memory right now (Ollama `/api/ps`, plus models served since).
    pub loaded: HashSet<String>,
    /// Ollama `/api/tags` entries as the node sent them, for faithful aggregation.
    pub tags: Vec<Value>,
    /// Ollama `/api/ps` entries as the node sent them.
    pub ps: Vec<Value>,
    /// Smoothed probe latency.
    pub latency_ms: Option<f64>,
    pub last_error: Option<String>,
    pub last_check: Option<SystemTime>,
    /// When the model list was last refreshed (unix seconds), used as `created` in `/v1/models`.
    pub models_seen_at: u64,
    /// Set by `Gateway::start` on every upstream: until its first probe (`last_check`), it is
    /// tried after the upstreams known to answer.
    pub awaiting_probe: bool,
}

impl UpstreamState {
    /// Takes what a probe discovered (here or on the cluster's prober): the model list when it
    /// changed (`None`: declared in config) and, for Ollama, the `/api/tags` and `/api/ps`
    /// entries with the loaded models they name.
    pub fn take_discovery(
        &mut self,
        kind: UpstreamKind,
        models: Option<&Vec<String>>,
        tags: &[Value],
        ps: &[Value],
    ) {
        if let Some(models) = models {
            if *models != self.model_list {
                let (map, list) = index_models(models.clone());
                self.models = map;
                self.model_list = list;
                self.models_seen_at = unix_now();
            }
        }
        if kind == UpstreamKind::Ollama {
            self.tags = tags.to_vec();
            self.ps = ps.to_vec();
            self.loaded = crate::health::loaded_models(ps);
        }
    }
}

/// A running upstream. Shared by every call routed to it; counters are atomics.
pub struct Upstream {
    pub name: String,
    pub kind: UpstreamKind,
    /// Base URL without trailing slash: an Ollama node's root, or an OpenAI-style API's `/v1` prefix.
    pub base: String,
    pub weight: u32,
    pub timeouts: Timeouts,
    /// Azure `api-version` / Anthropic `anthropic-version`, when the config sets one.
    pub api_version: Option<String>,
    /// Declared models (`models = [...]`); when set, discovery does not replace them.
    pub static_models: Option<Vec<String>>,
    /// The client of probes, model management and image fetches.
    pub client: reqwest::Client,
    /// The client of calls made on the main runtime (when no connection workers run).
    calls: crate::upstream_http::CallClient,
    /// One call client per connection worker, built on first use there: a worker's calls reuse
    /// its own pooled connections, whose tasks run on its thread (see [`crate::workers`]).
    worker_calls: Box<[std::sync::OnceLock<crate::upstream_http::CallClient>]>,
    /// Which addresses `client` may connect to; set by [`crate::Gateway::apply`] from where the
    /// upstream comes from (the file is trusted, the admin API is guarded).
    pub dns_policy: Arc<crate::ssrf_dns::PolicyCell>,
    /// The definition it was built from: an unchanged definition keeps this runtime (health,
    /// breaker, key states) across reloads.
    pub definition: (UpstreamConfig, llmux_config::BreakerConfig),
    pub keys: KeyPool,
    /// Shared with the upstream's next definition when a reload leaves the breaker settings alone.
    pub breaker: Arc<Breaker>,
    /// Parsed passthrough URLs by endpoint (those that do not embed the model), so the hot
    /// path clones a URL instead of parsing one per call.
    pub url_cache: [std::sync::OnceLock<http::Uri>; 16],
    /// The name as a header value, built once for `x-llmux-upstream`.
    pub name_header: Option<axum::http::HeaderValue>,
    /// Until when (ms since `created`) the upstream counts as throttled after a 429: `lowest_latency` ranks it last meanwhile.
    throttled_until_ms: AtomicU64,
    created: tokio::time::Instant,
    // The counters below belong to the upstream's name, not to one definition of it: a reload
    // that changes the definition shares them with the new runtime (see `carry_over`), so
    // calls started before it are still counted where routing and `/metrics` look.
    /// Calls in flight right now (attempt started, response not yet finished or dropped).
    active: Arc<AtomicUsize>,
    /// Calls in flight on the other instances of a cluster (0 on a single instance), as their
    /// last published counts say; set by `llmux-cluster`.
    remote_active: Arc<AtomicUsize>,
    /// Smoothed time to first byte of live calls, in microseconds (0 = none yet).
    ttft_us: Arc<AtomicU64>,
    pub served: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub metrics: Arc<crate::metrics::UpstreamMetrics>,
    state: ArcSwap<UpstreamState>,
}

/// The HTTP client of an upstream: keep-alive pool, TCP_NODELAY, no redirects, the guarded resolver.
fn build_client(
    cfg: &UpstreamConfig,
    dns_policy: &Arc<crate::ssrf_dns::PolicyCell>,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(crate::ssrf_dns::GuardedResolver::new(Arc::clone(
            dns_policy,
        ))))
        .tcp_nodelay(true)
        .connect_timeout(cfg.timeouts.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        // Upstream redirects are never followed: a redirect could point a provider key at another host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("llmux/", env!("CARGO_PKG_VERSION")));
    if let Some(total) = cfg.timeouts.total {
        builder = builder.timeout(total);
    }
    builder.build()
}

impl Upstream {
    /// The client for a call made on this thread: the worker's own when it runs on a
    /// connection worker, so the call and its upstream connection share one thread.
    pub fn call_client(&self) -> &crate::upstream_http::CallClient {
        match crate::workers::current().and_then(|i| self.worker_calls.get(i)) {
            Some(slot) => slot
                .get_or_init(|| crate::upstream_http::build(&self.definition.0, &self.dns_policy)),
            None => &self.calls,
        }
    }

    pub fn new(
        cfg: &UpstreamConfig,
        routing: &RoutingConfig,
    ) -> Result<Upstream, crate::error::GatewayError> {
        // Trusted until `Gateway::apply` learns the upstream came through the admin API; every
        // lookup reads the cell, so a later change applies to the next connection.
        let dns_policy = crate::ssrf_dns::PolicyCell::new(crate::ssrf_dns::Policy::Trusted);
        if let Some(proxy) = crate::upstream_http::proxy_for(&cfg.url) {
            let (host, port) = (proxy.uri().host().unwrap_or("?"), proxy.uri().port_u16());
            tracing::info!(upstream = %cfg.name, proxy_host = host, proxy_port = ?port, "calls go through the proxy the environment names (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY)");
        }
        let client = build_client(cfg, &dns_policy).map_err(|source| {
            crate::error::GatewayError::HttpClient {
                upstream: cfg.name.clone(),
                source,
            }
        })?;
        let (models, model_list) = match &cfg.models {
            Some(list) => index_models(list.clone()),
            None => (HashMap::new(), Vec::new()),
        };
        Ok(Upstream {
            name: cfg.name.clone(),
            kind: cfg.kind,
            base: cfg.url.trim_end_matches('/').to_string(),
            weight: cfg.weight.max(1),
            timeouts: cfg.timeouts.clone(),
            api_version: cfg.api_version.clone(),
            static_models: cfg.models.clone(),
            client,
            calls: crate::upstream_http::build(cfg, &dns_policy),
            worker_calls: (0..crate::workers::count())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            dns_policy,
            definition: (cfg.clone(), routing.breaker.clone()),
            keys: KeyPool::new(&cfg.name, &cfg.keys),
            breaker: Arc::new(Breaker::new(routing.breaker.clone())),
            url_cache: Default::default(),
            name_header: axum::http::HeaderValue::from_str(&cfg.name).ok(),
            throttled_until_ms: AtomicU64::new(0),
            created: tokio::time::Instant::now(),
            active: Arc::default(),
            remote_active: Arc::default(),
            ttft_us: Arc::default(),
            served: Arc::default(),
            failed: Arc::default(),
            metrics: Arc::default(),
            state: ArcSwap::from_pointee(UpstreamState {
                pool: Pool::Active,
                models,
                model_list,
                loaded: HashSet::new(),
                tags: Vec::new(),
                ps: Vec::new(),
                latency_ms: None,
                last_error: None,
                last_check: None,
                models_seen_at: unix_now(),
                awaiting_probe: false,
            }),
        })
    }

    /// `self` is `old` after a reload changed its definition: takes over what that change
    /// leaves true. Counters and calls in flight always; keys whose secret stayed keep their
    /// state (cooling, disabled); the breaker when its settings did not change; and, when URL
    /// and kind are the same (the same server), what the prober learned — pool, discovered and
    /// loaded models, latency — so a failed first probe after the reload does not leave the
    /// upstream without models for a whole interval.
    pub fn carry_over(mut self, old: &Upstream) -> Upstream {
        self.active = Arc::clone(&old.active);
        self.remote_active = Arc::clone(&old.remote_active);
        self.ttft_us = Arc::clone(&old.ttft_us);
        self.served = Arc::clone(&old.served);
        self.failed = Arc::clone(&old.failed);
        self.metrics = Arc::clone(&old.metrics);
        self.keys.carry_over(&old.keys);
        if self.definition.1 == old.definition.1 {
            self.breaker = Arc::clone(&old.breaker);
        }
        if self.kind == old.kind && self.base == old.base {
            let mut state = UpstreamState::clone(&old.state());
            if let Some(list) = &self.static_models {
                if *list != state.model_list {
                    let (models, model_list) = index_models(list.clone());
                    state.models = models;
                    state.model_list = model_list;
                    state.models_seen_at = unix_now();
                }
            }
            self.state = ArcSwap::from_pointee(state);
            self.created = old.created;
            self.throttled_until_ms =
                AtomicU64::new(old.throttled_until_ms.load(Ordering::Relaxed));
        }
        self
    }

    pub fn state(&self) -> arc_swap::Guard<Arc<UpstreamState>> {
        self.state.load()
    }

    /// Applies `f` to a copy of the state and publishes it; retried if a concurrent update won.
    pub fn update(&self, f: impl Fn(&mut UpstreamState)) {
        self.state.rcu(|old| {
            let mut next = UpstreamState::clone(old);
            f(&mut next);
            next
        });
    }

    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Calls in flight on the other instances of a cluster (0 on a single instance).
    pub fn remote_active_requests(&self) -> usize {
        self.remote_active.load(Ordering::Relaxed)
    }

    /// Sets the other instances' in-flight calls on this upstream (cluster mode).
    pub fn set_remote_active_requests(&self, n: usize) {
        self.remote_active.store(n, Ordering::Relaxed);
    }

    /// In flight here and on the other instances: what `least_active` compares.
    pub fn cluster_active_requests(&self) -> usize {
        self.active_requests()
            .saturating_add(self.remote_active_requests())
    }

    /// Counts a call in flight until the returned guard is dropped — on success, failure or hang-up alike.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight {
            upstream: Arc::clone(self),
        }
    }

    /// Notes a 429: the upstream ranks last under `lowest_latency` for `for_`.
    pub fn mark_throttled(&self, for_: Duration) {
        let until = self.created.elapsed().saturating_add(for_);
        self.throttled_until_ms.fetch_max(
            until.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn is_throttled(&self) -> bool {
        let until = self.throttled_until_ms.load(Ordering::Relaxed);
        until != 0 && (self.created.elapsed().as_millis() as u64) < until
    }

    /// The name this upstream serves `requested` under, by Ollama's `:latest` rule.
    pub fn serves(&self, state: &UpstreamState, requested: &str) -> Option<String> {
        state.models.get(model_key(requested).as_ref()).cloned()
    }

    /// A live call could not connect: take the node out of rotation now rather than at the next probe.
    pub fn mark_down(&self, reason: &str) {
        let was = self.state().pool;
        self.update(|s| {
            s.pool = Pool::Standby;
            s.last_error = Some(reason.to_string());
        });
        if was == Pool::Active {
            tracing::warn!(upstream = %self.name, reason, "upstream moved to standby after a failed call");
            crate::alerts::emit(crate::alerts::Alert::UpstreamDown {
                upstream: self.name.clone(),
                reason: reason.to_string(),
            });
        }
    }

    /// Remembers that `model` is loaded here (Ollama loads a model on first use), so warm-first routing sees it before the next probe.
    pub fn mark_loaded(&self, model: &str) {
        let key = model_key(model);
        if !self.state().loaded.contains(key.as_ref()) {
            let key = key.into_owned();
            self.update(|s| {
                s.loaded.insert(key.clone());
            });
        }
    }

    pub fn record_ttft(&self, ttft: Duration) {
        let sample = ttft.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.ttft_us.load(Ordering::Relaxed);
        // EWMA with alpha 1/4; a lost race only drops one sample.
        let next = if old == 0 {
            sample.max(1)
        } else {
            (old * 3 + sample) / 4
        };
        self.ttft_us.store(next.max(1), Ordering::Relaxed);
    }

    pub fn ttft_ms(&self) -> Option<f64> {
        match self.ttft_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }
}

/// Keeps an upstream's in-flight count raised while alive.
pub struct InFlight {
    upstream: Arc<Upstream>,
}

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// The runtime state of this upstream as the admin API shows it.
    pub fn describe(&self) -> Value {
        let u = self;
        let state = u.state();
        let mut loaded: Vec<&String> = state
            .model_list
            .iter()
            .filter(|m| {
                state
                    .loaded
                    .contains(llmux_wire::model::model_key(m).as_ref())
            })
            .collect();
        loaded.sort();
        let keys: Vec<Value> = u
            .keys
            .keys()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let state = u.keys.state(i);
                let (success_rate, latency_ms) = k.stats();
                let round = |x: f64, digits: f64| (x * digits).round() / digits;
                let mut v = json!({
                    "id": k.id,
                    "masked": k.secret.masked(),
                    "state": state.as_str(),
                    "success_rate": success_rate.map(|r| round(r, 1000.0)),
                    "latency_ms": latency_ms.map(|l| round(l, 10.0)),
                });
                match state {
                    KeyState::Ok => {}
                    KeyState::Cooling { remaining } => {
                        v["cooling_for_s"] = json!((remaining.as_secs_f64() * 10.0).round() / 10.0);
                    }
                    KeyState::Disabled { reason, since } => {
                        v["disabled_reason"] = json!(reason);
                        v["disabled_at"] = json!(llmux_wire::time::rfc3339(since));
                    }
                }
                v
            })
            .collect();
        json!({
            "name": u.name,
            "kind": u.kind.as_str(),
            "url": u.base,
            "weight": u.weight,
            "source": "file",
            "pool": state.pool.as_str(),
            "latency_ms": state.latency_ms.map(|l| (l * 1000.0).round() / 1000.0),
            "ttft_ms": u.ttft_ms().map(|l| (l * 1000.0).round() / 1000.0),
            "active_requests": u.active_requests(),
            "remote_active_requests": u.remote_active_requests(),
            "served": u.served.load(std::sync::atomic::Ordering::Relaxed),
            "failed": u.failed.load(std::sync::atomic::Ordering::Relaxed),
            "models": state.model_list,
            "loaded_models": loaded,
            "keys": keys,
            "breaker": u.breaker.state().as_str(),
            "breaker_open_for_s": (u.breaker.open_remaining().as_secs_f64() * 10.0).round() / 10.0,
            "last_error": state.last_error,
            "last_check": state.last_check.map(llmux_wire::time::rfc3339),
        })
    }
}

/// Builds the key → name index and the ordered, de-duplicated list.
pub fn index_models(list: Vec<String>) -> (HashMap<String, String>, Vec<String>) {
    let mut map = HashMap::with_capacity(list.len());
    let mut ordered = Vec::with_capacity(list.len());
    for name in list {
        let key = model_key(&name).into_owned();
        if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
            slot.insert(name.clone());
            ordered.push(name);
        }
    }
    (map, ordered)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

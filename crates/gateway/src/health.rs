//! The health prober: checks every upstream concurrently, refreshes its models, moves it between pools.

use crate::upstream::{Pool, Upstream};
use crate::Gateway;
use llmux_config::UpstreamKind;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// What one probe learned.
struct Probe {
    latency: Duration,
    /// `None` when the upstream's models are declared in config.
    models: Option<Vec<String>>,
    tags: Vec<Value>,
    ps: Vec<Value>,
}

/// Probes every upstream once, at most `health.discovery_concurrency` at a time, each bounded
/// by `timeout`; an active upstream listed less than `health.min_discovery_interval` ago is
/// left alone this time.
pub async fn probe_all(gw: &Gateway) {
    let routes = gw.routes();
    let due = due_for_discovery(
        &routes.upstreams,
        routes.config.health.min_discovery_interval,
    );
    probe_with(&due, &routes.config, Some(&gw.peers)).await;
}

/// The upstreams a scheduled round probes: every one but the active ones probed less than
/// `min_interval` ago (a standby upstream is probed for its recovery whenever it is due).
fn due_for_discovery(upstreams: &[Arc<Upstream>], min_interval: Duration) -> Vec<Arc<Upstream>> {
    let now = SystemTime::now();
    upstreams
        .iter()
        .filter(|u| {
            let state = u.state();
            let recent = state
                .last_check
                .and_then(|at| now.duration_since(at).ok())
                .is_some_and(|age| age < min_interval);
            !(recent && state.pool == Pool::Active)
        })
        .cloned()
        .collect()
}

/// Probes `upstreams` now (none held back by the minimum interval), at most
/// `health.discovery_concurrency` at a time, each bounded by `health.timeout`.
pub async fn probe_some(upstreams: &[Arc<Upstream>], config: &llmux_config::Config) {
    probe_with(upstreams, config, None).await;
}

/// Probes `upstreams` now (after a model was pulled onto or deleted from them, or on an
/// admin's refresh) and hands the results to the cluster's coordinator, which shares them
/// with every instance at once, from the prober or a follower alike.
pub async fn reprobe(gw: &Gateway, upstreams: &[Arc<Upstream>]) {
    let config = gw.config();
    probe_with(upstreams, &config, Some(&gw.peers)).await;
    if let Some(p) = gw.peers.probe.get() {
        p.reprobed(upstreams);
    }
}

/// [`probe_some`], announcing keys it disables or cools to the cluster's other instances
/// through `peers` when given.
async fn probe_with(
    upstreams: &[Arc<Upstream>],
    config: &llmux_config::Config,
    peers: Option<&crate::peers::Peers>,
) {
    let timeout = config.health.timeout;
    let r = &config.routing;
    let rests = (r.cooldown, r.max_cooldown);
    let cap = usize::try_from(config.health.discovery_concurrency)
        .unwrap_or(usize::MAX)
        .max(1);
    let slots = discovery_slots(cap);
    let probes = upstreams.iter().map(|u| {
        let slots = &slots;
        async move {
            // Never closed, so the permit always comes.
            let _slot = slots.acquire().await.ok();
            probe_one(u, timeout, rests, peers).await;
        }
    });
    futures_util::future::join_all(probes).await;
}

/// The process's probe slots: `health.discovery_concurrency` bounds every probe at once,
/// whoever started it (the scheduled round, a standby retry, an admin's refresh, a re-probe
/// after a pull, a new upstream), not each batch on its own. A changed cap takes a new
/// semaphore; probes holding the old one finish on it.
fn discovery_slots(cap: usize) -> Arc<tokio::sync::Semaphore> {
    use std::sync::Mutex;
    static SLOTS: Mutex<Option<(usize, Arc<tokio::sync::Semaphore>)>> = Mutex::new(None);
    let mut slots = SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match slots.as_ref() {
        Some((n, s)) if *n == cap => Arc::clone(s),
        _ => {
            let s = Arc::new(tokio::sync::Semaphore::new(cap));
            *slots = Some((cap, Arc::clone(&s)));
            s
        }
    }
}

/// Keys of the models an Ollama node's `/api/ps` entries say are loaded.
pub fn loaded_models(ps: &[Value]) -> std::collections::HashSet<String> {
    ps.iter()
        .filter_map(|m| m.get("name").or_else(|| m.get("model")))
        .filter_map(Value::as_str)
        .map(|n| llmux_wire::model::model_key(n).into_owned())
        .collect()
}

/// The first re-probe of a standby upstream comes this soon; each failure doubles the wait,
/// up to `health.interval`. A restarted node is back in seconds, a dead one costs a probe per
/// interval as before.
const STANDBY_FIRST_RETRY: Duration = Duration::from_secs(1);

/// Runs probes (and re-checks of disabled keys) every `health.interval` until `cancel` fires;
/// in between, standby upstreams are re-probed on their own backoff.
///
/// In a cluster (`gw.peers.probe` set) only the instance the coordinator names probes; the
/// others skip their rounds and take the prober's results. When the coordinator wakes this
/// loop (the lease was won, or the shared results went stale) it probes at once.
pub async fn run(gw: Arc<Gateway>, cancel: CancellationToken) {
    use tokio::time::Instant;
    let mut next_round = Instant::now() + gw.routes().config.health.interval;
    // Standby upstream → (next re-probe, current wait).
    let mut retries: HashMap<String, (Instant, Duration)> = HashMap::new();
    let wake = gw.peers.probe.get().map(|p| p.wake());
    // Share the start-up probe (`Gateway::start` ran it just before) when this is the prober.
    probed(&gw, &gw.routes().upstreams);
    loop {
        let routes = gw.routes();
        let interval = routes.config.health.interval;
        let now = Instant::now();
        next_round = next_round.min(now + interval);
        // A follower re-probes only what it put in standby itself (a live call's failure):
        // standby upstreams the prober reported are the prober's to re-probe.
        let probing = should_probe(&gw);
        track_standby(&routes, &mut retries, now, |u| {
            probing || !gw.peers.probe.get().is_some_and(|p| p.reported_down(u))
        });
        // Wake at least every first-retry step, so a node a live call just marked down is
        // re-probed in about a second rather than at the next round.
        let wake_at = retries
            .values()
            .map(|(at, _)| *at)
            .chain([next_round, now + STANDBY_FIRST_RETRY])
            .min()
            .unwrap_or(next_round);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = woken(wake.as_deref()) => next_round = Instant::now(),
        }
        let now = Instant::now();
        if now >= next_round {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = round(&gw) => {}
            }
            next_round = Instant::now() + interval;
            continue;
        }
        let due: Vec<Arc<Upstream>> = routes
            .upstreams
            .iter()
            .filter(|u| retries.get(&u.name).is_some_and(|(at, _)| *at <= now))
            .cloned()
            .collect();
        if due.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = probe_with(&due, &routes.config, Some(&gw.peers)) => {}
        }
        probed(&gw, &due);
        let now = Instant::now();
        for u in &due {
            if let Some((at, wait)) = retries.get_mut(&u.name) {
                *wait = (*wait * 2).min(interval);
                *at = now + *wait;
            }
        }
    }
}

/// One round: probe every upstream and re-check disabled keys, then share the results. A
/// cluster's follower only re-checks: the prober re-checks disabled keys and announces the
/// ones that work again, and a key still disabled here after two re-check periods (an
/// announcement lost) is re-checked here, so no key stays out for good.
async fn round(gw: &Gateway) {
    if should_probe(gw) {
        probe_all(gw).await;
        recheck_keys(gw).await;
        probed(gw, &gw.routes().upstreams);
    } else {
        recheck_keys_after(gw, gw.routes().config.health.key_recheck * 2).await;
    }
}

/// Whether this instance runs the active checks now: always on a single instance; in a
/// cluster, when the coordinator says so.
fn should_probe(gw: &Gateway) -> bool {
    gw.peers.probe.get().is_none_or(|p| p.should_probe())
}

/// Hands what was just probed to the cluster's coordinator (which shares it when this
/// instance is the prober).
fn probed(gw: &Gateway, upstreams: &[Arc<Upstream>]) {
    if let Some(p) = gw.peers.probe.get() {
        p.probed(upstreams);
    }
}

/// Resolves when `wake` is notified; never without one.
async fn woken(wake: Option<&tokio::sync::Notify>) {
    match wake {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Keeps `retries` to the upstreams in standby now: new ones start at the first step, ones
/// that came back (or left the config) are dropped.
fn track_standby(
    routes: &crate::routing::Routes,
    retries: &mut HashMap<String, (tokio::time::Instant, Duration)>,
    now: tokio::time::Instant,
    mine: impl Fn(&Upstream) -> bool,
) {
    let standby = |u: &Upstream| u.state().pool == Pool::Standby && mine(u);
    retries.retain(|name, _| routes.upstream(name).is_some_and(|u| standby(u)));
    for u in &routes.upstreams {
        if standby(u) && !retries.contains_key(&u.name) {
            retries.insert(
                u.name.clone(),
                (now + STANDBY_FIRST_RETRY, STANDBY_FIRST_RETRY),
            );
        }
    }
}

/// Disabled keys come back: each one due is tried with a cheap listing call and re-enabled on success.
pub async fn recheck_keys(gw: &Gateway) {
    recheck_keys_after(gw, gw.routes().config.health.key_recheck).await;
}

/// [`recheck_keys`] for keys whose last check is at least `every` old.
async fn recheck_keys_after(gw: &Gateway, every: Duration) {
    let routes = gw.routes();
    let timeout = routes.config.health.timeout;
    for up in &routes.upstreams {
        for i in up.keys.due_for_recheck(every) {
            let Some(key) = up.keys.keys().get(i) else {
                continue;
            };
            let url = crate::egress::listing_url(up);
            let result =
                tokio::time::timeout(timeout, get_json(up, &url, Some(key.secret.expose())))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ProbeError {
                            status: None,
                            message: "timed out".into(),
                            retry_after: None,
                        })
                    });
            match result {
                Ok(_) => {
                    up.keys.enable(i);
                    tracing::info!(upstream = %up.name, key = %key.id, "disabled key works again: re-enabled");
                    crate::peers::signals::announce(
                        gw,
                        up,
                        Some(crate::keys::KeyPick(i)),
                        crate::peers::signals::SignalKind::KeyEnabled,
                        "re-check passed",
                    );
                }
                Err(e) => up
                    .keys
                    .recheck_failed(i, &format!("re-check: {}", e.message)),
            }
        }
    }
}

async fn probe_one(
    up: &Arc<Upstream>,
    timeout: Duration,
    rests: (Duration, Duration),
    peers: Option<&crate::peers::Peers>,
) {
    let result = match tokio::time::timeout(timeout, check(up, rests, peers)).await {
        Ok(r) => r,
        Err(_) => Err(format!("health check timed out after {timeout:?}")),
    };
    let before = up.state().pool;
    match result {
        Ok(probe) => {
            let ms = probe.latency.as_secs_f64() * 1000.0;
            up.update(|s| {
                s.pool = Pool::Active;
                s.last_error = None;
                s.last_check = Some(SystemTime::now());
                // EWMA, alpha 0.3: smooths one slow probe without hiding a lasting change for long.
                s.latency_ms = Some(match s.latency_ms {
                    Some(old) => old * 0.7 + ms * 0.3,
                    None => ms,
                });
                s.take_discovery(up.kind, probe.models.as_ref(), &probe.tags, &probe.ps);
            });
            if before == Pool::Standby {
                tracing::info!(upstream = %up.name, latency_ms = ms, "upstream healthy again: back to active");
                crate::alerts::emit(crate::alerts::Alert::UpstreamUp {
                    upstream: up.name.clone(),
                });
            }
        }
        Err(reason) => {
            up.update(|s| {
                s.pool = Pool::Standby;
                s.last_error = Some(reason.clone());
                s.last_check = Some(SystemTime::now());
            });
            if before == Pool::Active {
                tracing::warn!(upstream = %up.name, reason, "health check failed: upstream moved to standby");
                crate::alerts::emit(crate::alerts::Alert::UpstreamDown {
                    upstream: up.name.clone(),
                    reason,
                });
            }
        }
    }
}

async fn check(
    up: &Upstream,
    rests: (Duration, Duration),
    peers: Option<&crate::peers::Peers>,
) -> Result<Probe, String> {
    let started = Instant::now();
    match up.kind {
        UpstreamKind::Ollama => {
            let tags = get_with_keys(up, &crate::egress::listing_url(up), rests, peers).await?;
            let latency = started.elapsed();
            let tags = list(&tags, "models");
            // /api/ps is informative (warm models); an old node without it is still healthy.
            let key = up.keys.pick(None, &[]).and_then(|k| up.keys.get(k));
            let ps = match get_json(
                up,
                &format!("{}/api/ps", up.base),
                key.map(|k| k.secret.expose()),
            )
            .await
            {
                Ok(v) => list(&v, "models"),
                Err(_) => Vec::new(),
            };
            let models = match &up.static_models {
                Some(_) => None,
                None => Some(names(&tags, &["name", "model"])),
            };
            Ok(Probe {
                latency,
                models,
                tags,
                ps,
            })
        }
        _ => {
            let listed = get_with_keys(up, &crate::egress::listing_url(up), rests, peers).await?;
            let latency = started.elapsed();
            let models = match &up.static_models {
                Some(_) => None,
                None => Some(crate::egress::listed_models(up.kind, &listed)),
            };
            Ok(Probe {
                latency,
                models,
                tags: Vec::new(),
                ps: Vec::new(),
            })
        }
    }
}

struct ProbeError {
    status: Option<u16>,
    message: String,
    retry_after: Option<Duration>,
}

/// GETs `url` with a usable key; a key the upstream refuses (401/402/403) is disabled and
/// the next one tried, so one revoked key does not put a healthy upstream in standby.
async fn get_with_keys(
    up: &Upstream,
    url: &str,
    (cooldown, max_cooldown): (Duration, Duration),
    peers: Option<&crate::peers::Peers>,
) -> Result<Value, String> {
    use crate::peers::signals::{announce_to, SignalKind};
    if up.keys.is_empty() {
        return get_json(up, url, None).await.map_err(|e| e.message);
    }
    let mut tried = Vec::new();
    let mut throttled = false;
    loop {
        let pick = up.keys.pick(None, &tried).or_else(|| {
            // All keys resting after 429s: the upstream is alive; probe with the one that rests least.
            tried
                .is_empty()
                .then(|| up.keys.soonest_cooling(&tried))
                .flatten()
        });
        let Some(pick) = pick else {
            return Err(no_usable_key(throttled));
        };
        tried.push(pick.0);
        let Some(key) = up.keys.get(pick) else {
            return Err("no usable key".into());
        };
        match get_json(up, url, Some(key.secret.expose())).await {
            Ok(v) => return Ok(v),
            Err(e) if matches!(e.status, Some(401..=403)) => {
                let reason = format!("health check: {}", e.message);
                if up.keys.disable(pick, &reason) {
                    tracing::warn!(upstream = %up.name, key = %key.id, reason, "key disabled");
                    announce_to(peers, up, Some(pick), SignalKind::KeyDisabled, &reason);
                }
            }
            // A throttled key says nothing about the upstream's health: rest it, ask with the next.
            Err(e) if e.status == Some(429) => {
                let rest = crate::retry::rest(e.retry_after, cooldown, max_cooldown);
                up.keys.cool(pick, rest);
                up.mark_throttled(rest);
                announce_to(
                    peers,
                    up,
                    Some(pick),
                    SignalKind::KeyCooled(rest),
                    &e.message,
                );
                throttled = true;
            }
            Err(e) => return Err(e.message),
        }
    }
}

/// Why a probe found no key to ask with: keys resting after a 429 are not disabled, and an
/// operator reading "disabled" would look for a revoked key that is not there.
fn no_usable_key(throttled: bool) -> String {
    if throttled {
        "no usable key: every key is rate-limited (429) or disabled".into()
    } else {
        "no usable key: every key is disabled".into()
    }
}

async fn get_json(up: &Upstream, url: &str, key: Option<&str>) -> Result<Value, ProbeError> {
    let req = crate::egress::authorize(up.client.get(url), up, key);
    let resp = req.send().await.map_err(|e| ProbeError {
        status: None,
        retry_after: None,
        message: if e.is_connect() {
            "connection failed".to_string()
        } else {
            format!("request failed: {e}")
        },
    })?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = crate::call::failure::classify_status(
            status,
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        )
        .and_then(|f| f.retry_after);
        return Err(ProbeError {
            status: Some(status.as_u16()),
            message: format!("health check got HTTP {}", status.as_u16()),
            retry_after,
        });
    }
    // Read within a bound: a listing is small, and a node must not make the prober hold
    // gigabytes. The probe's own timeout bounds the time.
    let declared = resp.content_length();
    let mut stream =
        futures_util::StreamExt::boxed(futures_util::StreamExt::map(resp.bytes_stream(), |r| {
            r.map_err(crate::upstream_http::BodyError::from)
        }));
    let fail = |message: String| ProbeError {
        status: None,
        retry_after: None,
        message,
    };
    let body = crate::call::read_whole(
        None,
        &mut stream,
        declared,
        llmux_config::MAX_DURATION,
        LISTING_LIMIT,
    )
    .await
    .map_err(|e| {
        fail(match e {
            crate::call::WholeError::TooLarge => format!(
                "health check reply is larger than {LISTING_LIMIT} bytes, the most llmux reads"
            ),
            crate::call::WholeError::Broken(e) => format!("health check reply broke: {e}"),
            crate::call::WholeError::Stalled => "health check reply stalled".to_string(),
        })
    })?;
    serde_json::from_slice::<Value>(&body)
        .map_err(|e| fail(format!("health check reply is not JSON: {e}")))
}

/// The largest model listing (or `/api/ps`) the prober reads.
const LISTING_LIMIT: usize = 16 << 20;

fn list(v: &Value, field: &str) -> Vec<Value> {
    v.get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn names(entries: &[Value], fields: &[&str]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| {
            fields
                .iter()
                .find_map(|f| e.get(*f).and_then(Value::as_str))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use llmux_config::{Config, Timeouts, UpstreamConfig};

    /// A node down at start that comes back is active again within seconds, not at the next
    /// 60 s round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_node_is_back_within_seconds() {
        let reserved = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = reserved.local_addr().unwrap();
        drop(reserved);
        let mut cfg = Config::default();
        cfg.upstreams.push(UpstreamConfig {
            name: "gpu-a".into(),
            kind: UpstreamKind::Ollama,
            url: format!("http://{addr}"),
            keys: Vec::new(),
            models: None,
            weight: 1,
            timeouts: Timeouts::default(),
            api_version: None,
            max_tokens_field: Default::default(),
            max_output_tokens: Default::default(),
        });
        let gw = Gateway::new(cfg).unwrap();
        let tasks = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        gw.start(&tasks, cancel.clone()).await;
        gw.probed_once().await;
        let node = &gw.routes().upstreams[0];
        assert_eq!(node.state().pool, Pool::Standby);

        // Down for a few failed re-probes (1 s, 2 s), then back.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let _mock = llmux_mock::MockServer::start_on(listener, llmux_mock::MockConfig::default())
            .await
            .unwrap();
        let back = Instant::now();
        while node.state().pool != Pool::Active {
            assert!(
                back.elapsed() < Duration::from_secs(8),
                "still standby after {:?}",
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(node.state().models.contains_key("llama3:latest"));
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
    }

    /// A probe whose every key is answered 429 says so, not that the keys are disabled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_probe_throttled_on_every_key_does_not_say_disabled() {
        let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
            api_key: Some("k".into()),
            limited_keys: vec!["k".into()],
            ..llmux_mock::MockConfig::default()
        })
        .await
        .unwrap();
        let mut cfg = Config::default();
        cfg.upstreams.push(UpstreamConfig {
            name: "oa".into(),
            kind: UpstreamKind::Openai,
            url: format!("{}/v1", m.url()),
            keys: vec![llmux_config::Secret::new("k")],
            models: None,
            weight: 1,
            timeouts: Timeouts::default(),
            api_version: None,
            max_tokens_field: Default::default(),
            max_output_tokens: Default::default(),
        });
        let gw = Gateway::new(cfg).unwrap();
        let tasks = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        gw.start(&tasks, cancel.clone()).await;
        gw.probed_once().await;
        let error = gw.routes().upstreams[0].state().last_error.clone();
        let error = error.unwrap_or_default();
        assert!(error.contains("rate-limited"), "{error}");
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
    }
}

//! The limits at the HTTP edge: per client IP and global (before authentication), the key's
//! concurrent calls (after it), the client's address past trusted proxies, and the 429s and
//! `x-ratelimit-*` headers OpenAI clients read.

use super::{admit::backend_down, BackendDown, Check, ConcurrencyGuard, Decision, Layer};
use crate::auth::Identity;
use crate::call;
use crate::peers::counts::{SharedCounts, SharedSlot};
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response};
use bytes::Bytes;
use llmux_wire::{Dialect, ErrorKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Formats a duration the way OpenAI's reset headers do: `1s`, `6m0s`, `20ms`.
fn openai_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs_f64();
    if s < 60.0 {
        let t = format!("{s:.3}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        return format!("{t}s");
    }
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

fn put(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The rate-limit headers of a call the key's limits let through: one set per kind (requests,
/// tokens), from the limit closest to refusing.
pub fn rate_headers_of(headers: &mut HeaderMap, decisions: &[(Layer, Decision)]) {
    for tokens in [false, true] {
        let tightest = decisions
            .iter()
            .filter(|(l, _)| l.is_tokens() == tokens)
            .min_by_key(|(_, d)| d.remaining);
        if let Some((layer, d)) = tightest {
            rate_headers(headers, *layer, d);
        }
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for one decision.
fn rate_headers(headers: &mut HeaderMap, layer: Layer, d: &Decision) {
    let (limit, remaining, reset) = if layer.is_tokens() {
        (
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        )
    } else {
        (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        )
    };
    put(headers, limit, d.limit.to_string());
    put(headers, remaining, d.remaining.to_string());
    put(headers, reset, openai_duration(d.reset));
}

/// A 429 in the caller's dialect, with `Retry-After` (whole seconds, at least 1) and the
/// rate-limit headers OpenAI clients read.
pub fn rejection(dialect: Dialect, layer: Layer, d: &Decision) -> Response<Body> {
    let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut resp = call::error(
        dialect,
        ErrorKind::RateLimited,
        format!(
            "rate limit reached: {} {} allowed; try again in {secs}s",
            d.limit,
            layer.describe()
        ),
    );
    let h = resp.headers_mut();
    put(h, "retry-after", secs.to_string());
    rate_headers(h, layer, d);
    resp
}

/// The client's address, for the per-IP limit and the call record.
///
/// Without `trust_forwarded_for` it is the peer. With it, the peer is taken for your proxy
/// (when `trusted_proxies` is set, only if the peer is one of them) and `X-Forwarded-For` is
/// read from the right, past the trusted proxies: the first other entry was appended by a
/// proxy you trust and names the client. Entries further left are whatever the client sent and
/// are never believed, so a client cannot pick its own address.
pub fn client_addr(
    req: &axum::extract::Request,
    cfg: &llmux_config::LimitsConfig,
) -> Option<std::net::IpAddr> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    if !cfg.trust_forwarded_for {
        return peer;
    }
    let trusted = |ip: std::net::IpAddr| cfg.trusted_proxies.iter().any(|c| c.contains(ip));
    if !cfg.trusted_proxies.is_empty() && !peer.is_some_and(trusted) {
        return peer;
    }
    let mut nearest = peer;
    let entries = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for entry in entries {
        let Some(ip) = parse_forwarded(entry.trim()) else {
            // Garbage where an address should be: the nearest hop that named one stands.
            break;
        };
        if !trusted(ip) {
            return Some(ip);
        }
        nearest = Some(ip);
    }
    nearest
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse::<std::net::IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Middleware before authentication (`next` runs the layers inside it): per client IP, then
/// global. A flood of bad keys is refused here and never reaches the key lookup.
pub async fn edge_limits<F, Fut>(
    gw: &Gateway,
    req: axum::extract::Request,
    next: F,
) -> Response<Body>
where
    F: FnOnce(axum::extract::Request) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let routes = gw.routes();
    let cfg = &routes.config.limits;
    if cfg.ip.is_none() && cfg.global.is_none() {
        return next(req).await;
    }
    let mut checks = Vec::with_capacity(2);
    let mut layers = Vec::with_capacity(2);
    if let Some(rate) = cfg.ip {
        if let Some(ip) = client_addr(&req, cfg) {
            checks.push(Check {
                key: format!("ip:{ip}"),
                rate,
                cost: 1,
            });
            layers.push(Layer::Ip);
        }
    }
    if let Some(rate) = cfg.global {
        checks.push(Check {
            key: "global".into(),
            rate,
            cost: 1,
        });
        layers.push(Layer::Global);
    }
    let dialect = crate::server::dialect_of(&req);
    match gw.limits.check(&checks, cfg.fail_open).await {
        Err(BackendDown) => backend_down(dialect),
        Ok(decisions) => match layers.iter().zip(&decisions).find(|(_, d)| !d.allowed) {
            Some((layer, d)) => {
                gw.metrics.rejected(layer.as_str());
                let resp = rejection(dialect, *layer, d);
                call::log_refused(&req, &resp);
                resp
            }
            None => next(req).await,
        },
    }
}

/// Middleware after authentication (`next` runs the route): the key's concurrent calls (the slot
/// is held until the response body ends or is dropped). [`super::admit`] does the rate checks
/// once the body is read, and the call puts their headers on its answer.
pub async fn key_limits<F, Fut>(
    gw: &Gateway,
    req: axum::extract::Request,
    next: F,
) -> Response<Body>
where
    F: FnOnce(axum::extract::Request) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let Some(id) = req.extensions().get::<Identity>() else {
        return next(req).await;
    };
    if id.limits.is_empty() {
        return next(req).await;
    }
    let guard = match id.limits.concurrency {
        None => None,
        Some(limit) => match take_slot(gw, &id.key_id, limit).await {
            Ok(slot) => Some(slot),
            Err(refused) => {
                let dialect = crate::server::dialect_of(&req);
                let Some(in_use) = refused else {
                    let resp = backend_down(dialect);
                    call::log_refused(&req, &resp);
                    return resp;
                };
                gw.metrics.rejected(Layer::KeyConcurrency.as_str());
                let mut resp = call::error(
                    dialect,
                    ErrorKind::RateLimited,
                    format!(
                        "rate limit reached: {in_use} {} allowed; try again when one finishes",
                        Layer::KeyConcurrency.describe()
                    ),
                );
                // A slot frees when some call ends, which nobody can predict: ask for a second.
                put(resp.headers_mut(), "retry-after", "1".into());
                call::log_refused(&req, &resp);
                return resp;
            }
        },
    };
    let resp = next(req).await;
    match guard {
        None => resp,
        Some(guard) => resp.map(|inner| {
            Body::new(Guarded {
                inner,
                guard: Some(guard),
            })
        }),
    }
}

/// A concurrent-call slot of a key: the local one always, and the cluster's when a cluster
/// granted one (given back when the slot is dropped).
struct Slot {
    _local: ConcurrencyGuard,
    shared: Option<(Arc<dyn SharedCounts>, Box<str>)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((counts, key)) = &self.shared {
            counts.release(key);
        }
    }
}

/// Takes a slot of `key` (limit `limit`): in this process, then across the cluster when there
/// is one. `Err(Some(n))`: `n` slots are held; `Err(None)`: the cluster's shared state is
/// unreachable and `limits.fail_open` is false.
async fn take_slot(gw: &Gateway, key: &str, limit: u32) -> Result<Slot, Option<u32>> {
    let local = gw.limits.concurrency.acquire(key, limit).map_err(Some)?;
    let Some(counts) = gw.peers.counts.get() else {
        return Ok(Slot {
            _local: local,
            shared: None,
        });
    };
    match counts.acquire(key, limit).await {
        SharedSlot::Granted => Ok(Slot {
            _local: local,
            shared: Some((Arc::clone(counts), key.into())),
        }),
        SharedSlot::Refused(in_use) => Err(Some(in_use)),
        // The local count stands in for the cluster's, as the rate limits do.
        SharedSlot::Unavailable if gw.routes().config.limits.fail_open => Ok(Slot {
            _local: local,
            shared: None,
        }),
        SharedSlot::Unavailable => Err(None),
    }
}

/// A response body that holds a concurrency slot until it ends or is dropped.
struct Guarded {
    inner: Body,
    guard: Option<Slot>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn from(peer: &str, xff: &[&str]) -> axum::extract::Request {
        let mut req = axum::extract::Request::new(Body::empty());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                peer.parse().unwrap(),
                4321,
            )));
        for v in xff {
            req.headers_mut()
                .append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        req
    }

    fn resolved(cfg: &llmux_config::LimitsConfig, peer: &str, xff: &[&str]) -> String {
        client_addr(&from(peer, xff), cfg).unwrap().to_string()
    }

    /// The leftmost entry is the client's own word; the address is read from the right, past
    /// the trusted proxies.
    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_proxies() {
        let mut cfg = llmux_config::LimitsConfig::default();
        // Not trusted: the peer, whatever the header says.
        assert_eq!(resolved(&cfg, "192.0.2.1", &["6.6.6.6"]), "192.0.2.1");
        cfg.trust_forwarded_for = true;
        // One trusted hop (the peer): the entry it appended, not the one the client forged.
        assert_eq!(
            resolved(&cfg, "127.0.0.1", &["6.6.6.6, 203.0.113.7"]),
            "203.0.113.7"
        );
        assert_eq!(resolved(&cfg, "127.0.0.1", &["203.0.113.7"]), "203.0.113.7");
        assert_eq!(resolved(&cfg, "127.0.0.1", &[]), "127.0.0.1");
        cfg.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        // Two hops: CDN at 10.1.1.1 appended the client; the load balancer (peer) appended it.
        assert_eq!(
            resolved(&cfg, "10.0.0.2", &["6.6.6.6, 203.0.113.7", "10.1.1.1"]),
            "203.0.113.7"
        );
        assert_eq!(
            resolved(
                &cfg,
                "::ffff:10.0.0.2",
                &["6.6.6.6,203.0.113.7:5555,10.1.1.1"]
            ),
            "203.0.113.7"
        );
        // A peer that is not a trusted proxy came straight in: its header is ignored.
        assert_eq!(resolved(&cfg, "198.51.100.9", &["6.6.6.6"]), "198.51.100.9");
        // Garbage past the trusted hops: the nearest hop that named an address stands.
        assert_eq!(
            resolved(&cfg, "10.0.0.2", &["nonsense, 10.1.1.1"]),
            "10.1.1.1"
        );
    }

    /// A cluster that answers `answer` and counts the releases it gets.
    struct FakeCounts {
        answer: SharedSlot,
        released: std::sync::atomic::AtomicUsize,
    }

    impl SharedCounts for FakeCounts {
        fn acquire<'a>(&'a self, _: &'a str, _: u32) -> super::super::BoxFuture<'a, SharedSlot> {
            let answer = self.answer;
            Box::pin(async move { answer })
        }
        fn release(&self, _: &str) {
            self.released
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn gateway_with(answer: SharedSlot, fail_open: bool) -> (Arc<Gateway>, Arc<FakeCounts>) {
        let mut config = llmux_config::Config::default();
        config.limits.fail_open = fail_open;
        let gw = Gateway::new(config).unwrap();
        let fake = Arc::new(FakeCounts {
            answer,
            released: Default::default(),
        });
        let _ = gw
            .peers
            .counts
            .set(Arc::clone(&fake) as Arc<dyn SharedCounts>);
        (gw, fake)
    }

    #[tokio::test]
    async fn a_cluster_slot_is_taken_refused_or_counted_locally() {
        use std::sync::atomic::Ordering::Relaxed;
        // Granted: held locally too, and given back to the cluster once dropped.
        let (gw, fake) = gateway_with(SharedSlot::Granted, true);
        let slot = take_slot(&gw, "k", 5).await.unwrap();
        assert_eq!(gw.limits.concurrency.in_use("k"), 1);
        drop(slot);
        assert_eq!(fake.released.load(Relaxed), 1);
        assert_eq!(gw.limits.concurrency.in_use("k"), 0);
        // The cluster's limit is reached although this instance holds nothing.
        let (gw, _) = gateway_with(SharedSlot::Refused(5), true);
        assert_eq!(take_slot(&gw, "k", 5).await.err(), Some(Some(5)));
        assert_eq!(gw.limits.concurrency.in_use("k"), 0);
        // Redis unreachable: counted locally with fail_open (nothing to release), else refused.
        let (gw, fake) = gateway_with(SharedSlot::Unavailable, true);
        let slots: Vec<_> = [take_slot(&gw, "k", 2).await, take_slot(&gw, "k", 2).await]
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(take_slot(&gw, "k", 2).await.err(), Some(Some(2)));
        drop(slots);
        assert_eq!(fake.released.load(Relaxed), 0);
        let (gw, _) = gateway_with(SharedSlot::Unavailable, false);
        assert_eq!(take_slot(&gw, "k", 2).await.err(), Some(None));
        assert_eq!(gw.limits.concurrency.in_use("k"), 0);
    }

    #[test]
    fn reset_durations_like_openai() {
        assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(openai_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(openai_duration(Duration::from_secs(12)), "12s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    }
}

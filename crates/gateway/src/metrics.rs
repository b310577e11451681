//! Prometheus metrics: counters and histograms kept in atomics on the hot path (no locks, no
//! label maps: each upstream holds its own handles), encoded as Prometheus text (0.0.4) by
//! `prometheus-client` when `/metrics` is scraped. Labels stay low-cardinality: upstream
//! names, endpoints, outcomes and classes — never keys, users or ids.

use crate::call::failure::FailureClass;
use crate::endpoint::Endpoint;
use crate::upstream::{Pool, Upstream};
use crate::Gateway;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Histogram bucket bounds in seconds: from sub-millisecond gateway work to long generations.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How a call that reached an upstream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, body complete.
    Ok,
    /// The upstream's 4xx went back to the client.
    ClientError,
    /// The upstream failed (an error status after every retry, or the stream broke).
    UpstreamError,
    /// The client hung up before the end.
    ClientClosed,
}

const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Ok, "ok"),
    (Outcome::ClientError, "client_error"),
    (Outcome::UpstreamError, "upstream_error"),
    (Outcome::ClientClosed, "client_closed"),
];

/// A lock-free histogram over [`BUCKETS`] (prometheus-client's own takes a mutex per
/// observation); it encodes through prometheus-client like any other metric.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let buckets: [(f64, u64); BUCKETS.len() + 1] = std::array::from_fn(|i| {
            let bound = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            (bound, self.counts[i].load(Relaxed))
        });
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What one upstream saw; lives in the `Upstream`, so recording is a few relaxed atomic adds
/// on handles resolved when the upstream was built.
#[derive(Default)]
pub struct UpstreamMetrics {
    /// Calls by endpoint × outcome.
    calls: [[Counter; OUTCOMES.len()]; Endpoint::ALL.len()],
    duration: Histogram,
    ttft: Histogram,
    attempt_failures: [Counter; FailureClass::ALL.len()],
    input_tokens: Counter,
    output_tokens: Counter,
}

impl UpstreamMetrics {
    /// A call this upstream answered, once its response is over.
    pub fn call(&self, endpoint: Endpoint, outcome: Outcome, duration: Duration, ttft: Duration) {
        let o = OUTCOMES
            .iter()
            .position(|(x, _)| *x == outcome)
            .unwrap_or(0);
        self.calls[endpoint.index()][o].inc();
        self.duration.observe(duration);
        if outcome == Outcome::Ok || outcome == Outcome::ClientClosed {
            self.ttft.observe(ttft);
        }
    }

    /// A failed attempt (retried elsewhere or not), by class.
    pub fn attempt_failed(&self, class: FailureClass) {
        self.attempt_failures[class.index()].inc();
    }

    /// (calls, failed calls) since start: what the error-rate alert watches.
    pub fn totals(&self) -> (u64, u64) {
        let mut total = 0;
        let mut failed = 0;
        for per_endpoint in &self.calls {
            for (i, c) in per_endpoint.iter().enumerate() {
                let n = c.get();
                total += n;
                if OUTCOMES[i].0 == Outcome::UpstreamError {
                    failed += n;
                }
            }
        }
        // Attempts that failed over to another upstream never reach the client, but they are
        // this upstream's failures all the same.
        let attempts: u64 = self.attempt_failures.iter().map(Counter::get).sum();
        (total + attempts, failed + attempts)
    }

    pub fn tokens(&self, input: u64, output: u64) {
        self.input_tokens.inc_by(input);
        self.output_tokens.inc_by(output);
    }
}

/// Gateway-wide counters: responses by status class, and calls refused before routing.
#[derive(Default)]
pub struct GatewayMetrics {
    /// Every HTTP response by class: 1xx..5xx (index 0..4), other.
    responses: [Counter; STATUS_CLASSES.len()],
    /// Calls refused by a gatekeeping layer, by [`REJECTION_LAYERS`] index.
    rejections: [Counter; REJECTION_LAYERS.len()],
    /// Calls that needed more than one attempt: answered in the end (0) or not (1).
    retried: [Counter; 2],
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Layers that can refuse a call before it reaches an upstream.
pub const REJECTION_LAYERS: [&str; 8] = [
    "auth",
    "model_permission",
    "ip",
    "global",
    "key_rpm",
    "key_tpm",
    "key_concurrency",
    "model",
];

impl GatewayMetrics {
    pub fn response(&self, status: u16) {
        let i = match status {
            100..=599 => usize::from(status / 100) - 1,
            _ => 5,
        };
        self.responses[i].inc();
    }

    /// A call that made more than one attempt ended: `success` when one of them answered.
    pub fn retried(&self, success: bool) {
        self.retried[usize::from(!success)].inc();
    }

    pub fn rejected(&self, layer: &str) {
        if let Some(i) = REJECTION_LAYERS.iter().position(|l| *l == layer) {
            self.rejections[i].inc();
        }
    }
}

/// `GET /metrics`.
pub async fn scrape(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        render(&gw),
    )
        .into_response()
}

/// The whole exposition.
pub fn render(gw: &Arc<Gateway>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(Arc::clone(gw))));
    let mut out = String::with_capacity(16 * 1024);
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// Reads the gateway's counters and the upstreams' current state at scrape time.
struct Scrape(Arc<Gateway>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let gw = &self.0;
        encode_gateway(&mut enc, gw)?;
        let routes = gw.routes();
        let ups: Vec<&Arc<Upstream>> = routes.upstreams.iter().collect();
        encode_traffic(&mut enc, &ups)?;
        encode_alerts(&mut enc)?;
        encode_image_fetches(&mut enc)?;
        encode_upstream_state(&mut enc, &ups)?;
        encode_catalog(&mut enc, &routes)?;
        encode_hooks(&mut enc, gw)?;
        encode_cache(&mut enc, gw, &routes)?;
        encode_call_log(&mut enc, gw)
    }
}

/// `[[hooks]]`: what each hook decided, and how long external hooks took.
fn encode_hooks(enc: &mut DescriptorEncoder, gw: &Gateway) -> fmt::Result {
    let hooks = gw.hooks.metrics();
    if hooks.is_empty() {
        return Ok(());
    }
    let help = "Hook decisions, by hook and outcome (allow, deny, modify, error).";
    let mut m = family(enc, "llmux_hook_calls", help, MetricType::Counter)?;
    for (name, h) in &hooks {
        for (o, n) in crate::hooks::HookOutcome::ALL.iter().zip(&h.calls) {
            series(
                &mut m,
                &[("hook", name.as_str()), ("outcome", o.as_str())],
                n,
            )?;
        }
    }
    let help = "Time external hooks took to answer (or fail).";
    let mut m = family(
        enc,
        "llmux_hook_duration_seconds",
        help,
        MetricType::Histogram,
    )?;
    for (name, h) in &hooks {
        if h.duration.count() > 0 {
            series(&mut m, &[("hook", name.as_str())], &h.duration)?;
        }
    }
    Ok(())
}

/// The call log's queue and the ledger's refusals.
fn encode_call_log(enc: &mut DescriptorEncoder, gw: &Gateway) -> fmt::Result {
    for (name, counter, help, v) in crate::accounting::metric_values(&gw.accounting) {
        if counter {
            let m = family(enc, name, help, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)?;
        } else {
            let m = family(enc, name, help, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)?;
        }
    }
    Ok(())
}

/// The response cache (`[cache]`, docs/cache.md): calls by how they met it, backend errors,
/// and the answers the memory backend holds. Only when the cache is on.
fn encode_cache(
    enc: &mut DescriptorEncoder,
    gw: &Gateway,
    routes: &crate::routing::Routes,
) -> fmt::Result {
    let config = &routes.config.cache;
    if !config.enabled {
        return Ok(());
    }
    let help = "Calls the response cache covered, by result: hit, miss or bypass.";
    let mut m = family(enc, "llmux_cache_requests", help, MetricType::Counter)?;
    for o in crate::cache::Outcome::ALL {
        let n = ConstCounter::new(gw.cache.requests(o));
        series(&mut m, &[("result", o.as_str())], &n)?;
    }
    let help =
        "Lookups and stores the shared (Redis) cache backend failed (the calls bypassed it).";
    let m = family(enc, "llmux_cache_errors", help, MetricType::Counter)?;
    ConstCounter::new(gw.cache.errors()).encode(m)?;
    if config.backend != llmux_config::CacheBackend::Memory {
        // Redis holds the entries of the whole cluster, with their expiry: none are counted here.
        return Ok(());
    }
    let help = "Answers held by the response cache's memory backend (expired ones until evicted).";
    let m = family(enc, "llmux_cache_entries", help, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(gw.cache.entries()).unwrap_or(i64::MAX)).encode(m)
}

/// Starts a family: its `# HELP` and `# TYPE` lines. Counters get `_total` appended.
fn family<'a>(
    enc: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, fmt::Error> {
    enc.encode_descriptor(name, help, None, kind)
}

/// One series of a family.
fn series(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    value: &impl EncodeMetric,
) -> fmt::Result {
    value.encode(m.encode_family(labels)?)
}

fn encode_gateway(enc: &mut DescriptorEncoder, gw: &Gateway) -> fmt::Result {
    let mut m = family(
        enc,
        "llmux_build_info",
        "Build information.",
        MetricType::Gauge,
    )?;
    series(
        &mut m,
        &[("version", env!("CARGO_PKG_VERSION"))],
        &ConstGauge::new(1),
    )?;

    let help = "HTTP responses by status class.";
    let mut m = family(enc, "llmux_http_responses", help, MetricType::Counter)?;
    for (class, n) in STATUS_CLASSES.iter().zip(&gw.metrics.responses) {
        series(&mut m, &[("class", *class)], n)?;
    }

    let help = "Calls refused before reaching an upstream, by layer.";
    let mut m = family(enc, "llmux_rejections", help, MetricType::Counter)?;
    for (layer, n) in REJECTION_LAYERS.iter().zip(&gw.metrics.rejections) {
        series(&mut m, &[("layer", *layer)], n)?;
    }

    let help = "Calls that needed more than one attempt, by whether one of the retries answered.";
    let mut m = family(enc, "llmux_retries", help, MetricType::Counter)?;
    for (outcome, n) in ["success", "failure"].iter().zip(&gw.metrics.retried) {
        series(&mut m, &[("outcome", *outcome)], n)?;
    }

    let help = "1 while the rate-limit backend answers (0: limiting on local counters, or refusing with fail_open = false).";
    let mut m = family(enc, "llmux_ratelimit_backend_up", help, MetricType::Gauge)?;
    let (backend, up) = gw.limits.backend_state();
    series(
        &mut m,
        &[("backend", backend)],
        &ConstGauge::new(u32::from(up)),
    )
}

/// What the upstreams answered: calls, latencies, failed attempts, tokens.
fn encode_traffic(enc: &mut DescriptorEncoder, ups: &[&Arc<Upstream>]) -> fmt::Result {
    let help = "Calls answered by an upstream, by endpoint and outcome.";
    let mut m = family(enc, "llmux_calls", help, MetricType::Counter)?;
    for u in ups {
        for e in Endpoint::ALL {
            for ((_, outcome), n) in OUTCOMES.iter().zip(&u.metrics.calls[e.index()]) {
                if n.get() > 0 {
                    let labels = [
                        ("upstream", u.name.as_str()),
                        ("endpoint", e.as_str()),
                        ("outcome", outcome),
                    ];
                    series(&mut m, &labels, n)?;
                }
            }
        }
    }
    let help = "Time from request to the end of the response.";
    let mut m = family(
        enc,
        "llmux_call_duration_seconds",
        help,
        MetricType::Histogram,
    )?;
    for u in ups {
        series(
            &mut m,
            &[("upstream", u.name.as_str())],
            &u.metrics.duration,
        )?;
    }
    let help = "Time from request to the first byte of the answer.";
    let mut m = family(enc, "llmux_ttft_seconds", help, MetricType::Histogram)?;
    for u in ups {
        series(&mut m, &[("upstream", u.name.as_str())], &u.metrics.ttft)?;
    }
    let help = "Failed upstream attempts (each retried elsewhere when possible), by class.";
    let mut m = family(enc, "llmux_attempt_failures", help, MetricType::Counter)?;
    for u in ups {
        for (class, n) in FailureClass::ALL.iter().zip(&u.metrics.attempt_failures) {
            series(
                &mut m,
                &[("upstream", u.name.as_str()), ("class", class.as_str())],
                n,
            )?;
        }
    }
    let help = "Tokens reported by upstreams on translated calls, by direction.";
    let mut m = family(enc, "llmux_tokens", help, MetricType::Counter)?;
    for u in ups {
        let name = u.name.as_str();
        series(
            &mut m,
            &[("upstream", name), ("direction", "input")],
            &u.metrics.input_tokens,
        )?;
        series(
            &mut m,
            &[("upstream", name), ("direction", "output")],
            &u.metrics.output_tokens,
        )?;
    }
    Ok(())
}

fn encode_alerts(enc: &mut DescriptorEncoder) -> fmt::Result {
    let (sent, dropped) = crate::alerts::counts();
    let help = "Alerts posted to the webhook, and dropped.";
    let mut m = family(enc, "llmux_alerts", help, MetricType::Counter)?;
    series(&mut m, &[("result", "sent")], &ConstCounter::new(sent))?;
    series(
        &mut m,
        &[("result", "dropped")],
        &ConstCounter::new(dropped),
    )
}

/// Images fetched for upstreams that take only inline bytes, by result.
fn encode_image_fetches(enc: &mut DescriptorEncoder) -> fmt::Result {
    let help = "Images given by URL that llmux fetched to inline them, by result.";
    let mut m = family(enc, "llmux_image_fetches", help, MetricType::Counter)?;
    let counts = crate::image_fetch::counts();
    for (result, n) in crate::image_fetch::RESULTS.iter().zip(counts) {
        series(&mut m, &[("result", *result)], &ConstCounter::new(n))?;
    }
    Ok(())
}

/// The model catalogue: models each upstream offers (switched-off ones not counted), and the
/// distinct models clients can call on active upstreams (what `/v1/models` lists).
fn encode_catalog(enc: &mut DescriptorEncoder, routes: &crate::routing::Routes) -> fmt::Result {
    let help =
        "Models the upstream offers now (discovered or declared; switched-off ones not counted).";
    let mut m = family(enc, "llmux_upstream_models", help, MetricType::Gauge)?;
    let mut listed = std::collections::HashSet::new();
    for u in &routes.upstreams {
        let state = u.state();
        let names: Vec<String> = state
            .model_list
            .iter()
            .filter_map(|served| routes.listed_name(&u.name, served))
            .collect();
        let n = ConstGauge::new(i64::try_from(names.len()).unwrap_or(i64::MAX));
        series(&mut m, &[("upstream", u.name.as_str())], &n)?;
        if state.pool == Pool::Active {
            listed.extend(names);
        }
    }
    let help = "Distinct models clients can call now, as /v1/models lists them.";
    let m = family(enc, "llmux_models", help, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(listed.len()).unwrap_or(i64::MAX)).encode(m)
}

/// The upstreams' state now: pool, load, probe latency, breaker and provider keys.
fn encode_upstream_state(enc: &mut DescriptorEncoder, ups: &[&Arc<Upstream>]) -> fmt::Result {
    let help = "1 when the upstream is in the active pool, 0 in standby.";
    let mut m = family(enc, "llmux_upstream_up", help, MetricType::Gauge)?;
    for u in ups {
        let up = u32::from(u.state().pool == Pool::Active);
        series(
            &mut m,
            &[("upstream", u.name.as_str())],
            &ConstGauge::new(up),
        )?;
    }
    let help = "Calls in flight to the upstream.";
    let mut m = family(enc, "llmux_upstream_in_flight", help, MetricType::Gauge)?;
    for u in ups {
        let n = ConstGauge::new(u.active_requests());
        series(&mut m, &[("upstream", u.name.as_str())], &n)?;
    }
    let help = "Smoothed health-probe latency.";
    let mut m = family(
        enc,
        "llmux_upstream_latency_seconds",
        help,
        MetricType::Gauge,
    )?;
    for u in ups {
        if let Some(ms) = u.state().latency_ms {
            series(
                &mut m,
                &[("upstream", u.name.as_str())],
                &ConstGauge::new(ms / 1000.0),
            )?;
        }
    }
    let help = "1 for the breaker's current state (closed, open, half_open).";
    let mut m = family(enc, "llmux_breaker_state", help, MetricType::Gauge)?;
    for u in ups {
        let current = u.breaker.state().as_str();
        for s in ["closed", "open", "half_open"] {
            let v = ConstGauge::new(u32::from(current == s));
            series(&mut m, &[("upstream", u.name.as_str()), ("state", s)], &v)?;
        }
    }
    let help = "Provider keys by state (ok, cooling, disabled).";
    let mut m = family(enc, "llmux_provider_keys", help, MetricType::Gauge)?;
    for u in ups {
        let mut counts = [0usize; 3];
        for i in 0..u.keys.len() {
            counts[match u.keys.state(i).as_str() {
                "ok" => 0,
                "cooling" => 1,
                _ => 2,
            }] += 1;
        }
        for (s, n) in ["ok", "cooling", "disabled"].iter().zip(counts) {
            series(
                &mut m,
                &[("upstream", u.name.as_str()), ("state", s)],
                &ConstGauge::new(n),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `x{u="a"}` over one histogram, as `/metrics` would print it.
    #[derive(Debug)]
    struct One(Histogram);

    impl Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            let mut m = family(&mut enc, "x", "Help.", MetricType::Histogram)?;
            series(&mut m, &[("u", "a")], &self.0)
        }
    }

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(500));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(h)));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(
            out.starts_with("# HELP x Help.\n# TYPE x histogram\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{u=\"a\",le=\"0.001\"} 1\n"));
        assert!(out.contains("x_bucket{u=\"a\",le=\"0.05\"} 2\n"));
        assert!(out.contains("x_bucket{u=\"a\",le=\"120\"} 2\n"));
        assert!(out.contains("x_bucket{u=\"a\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count{u=\"a\"} 3\n"));
    }

    #[test]
    fn status_classes() {
        let m = GatewayMetrics::default();
        for s in [200, 204, 404, 503, 42] {
            m.response(s);
        }
        assert_eq!(m.responses[1].get(), 2);
        assert_eq!(m.responses[3].get(), 1);
        assert_eq!(m.responses[4].get(), 1);
        assert_eq!(m.responses[5].get(), 1);
    }
}

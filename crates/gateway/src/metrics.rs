//! Prometheus metrics: counters and histograms kept in atomics on the hot path (no locks, no
//! label maps), rendered as Prometheus text when `/metrics` is scraped. Labels stay
//! low-cardinality: upstream names, endpoints, outcomes and classes — never keys, users or ids.

use crate::call::failure::FailureClass;
use crate::endpoint::Endpoint;
use crate::upstream::{Pool, Upstream};
use crate::Gateway;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;
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

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// What one upstream saw; lives in the `Upstream`, so recording is a few relaxed atomic adds.
pub struct UpstreamMetrics {
    /// Calls by endpoint × outcome.
    calls: [[AtomicU64; OUTCOMES.len()]; Endpoint::ALL.len()],
    duration: Histogram,
    ttft: Histogram,
    attempt_failures: [AtomicU64; FailureClass::ALL.len()],
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        UpstreamMetrics {
            calls: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            duration: Histogram::default(),
            ttft: Histogram::default(),
            attempt_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
        }
    }
}

impl UpstreamMetrics {
    /// A call this upstream answered, once its response is over.
    pub fn call(&self, endpoint: Endpoint, outcome: Outcome, duration: Duration, ttft: Duration) {
        let o = OUTCOMES
            .iter()
            .position(|(x, _)| *x == outcome)
            .unwrap_or(0);
        self.calls[endpoint.index()][o].fetch_add(1, Relaxed);
        self.duration.observe(duration);
        if outcome == Outcome::Ok || outcome == Outcome::ClientClosed {
            self.ttft.observe(ttft);
        }
    }

    /// A failed attempt (retried elsewhere or not), by class.
    pub fn attempt_failed(&self, class: FailureClass) {
        self.attempt_failures[class.index()].fetch_add(1, Relaxed);
    }

    /// (calls, failed calls) since start: what the error-rate alert watches.
    pub fn totals(&self) -> (u64, u64) {
        let mut total = 0;
        let mut failed = 0;
        for per_endpoint in &self.calls {
            for (i, c) in per_endpoint.iter().enumerate() {
                let n = c.load(Relaxed);
                total += n;
                if OUTCOMES[i].0 == Outcome::UpstreamError {
                    failed += n;
                }
            }
        }
        // Attempts that failed over to another upstream never reach the client, but they are
        // this upstream's failures all the same.
        let attempts: u64 = self.attempt_failures.iter().map(|c| c.load(Relaxed)).sum();
        (total + attempts, failed + attempts)
    }

    pub fn tokens(&self, input: u64, output: u64) {
        self.input_tokens.fetch_add(input, Relaxed);
        self.output_tokens.fetch_add(output, Relaxed);
    }
}

/// Gateway-wide counters: responses by status class, and calls refused before routing.
#[derive(Default)]
pub struct GatewayMetrics {
    /// Every HTTP response by class: 1xx..5xx (index 0..4), other.
    responses: [AtomicU64; 6],
    /// Calls refused by a gatekeeping layer, by [`REJECTION_LAYERS`] index.
    rejections: [AtomicU64; REJECTION_LAYERS.len()],
    /// Calls that needed more than one attempt: answered in the end (0) or not (1).
    retried: [AtomicU64; 2],
}

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
        self.responses[i].fetch_add(1, Relaxed);
    }

    /// A call that made more than one attempt ended: `success` when one of them answered.
    pub fn retried(&self, success: bool) {
        self.retried[usize::from(!success)].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, layer: &str) {
        if let Some(i) = REJECTION_LAYERS.iter().position(|l| *l == layer) {
            self.rejections[i].fetch_add(1, Relaxed);
        }
    }
}

/// `GET /metrics`.
pub async fn scrape(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&gw),
    )
        .into_response()
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values are upstream names (`[A-Za-z0-9._-]`) and fixed words; escaping is for safety.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(gw: &Gateway) -> String {
    let routes = gw.routes();
    let ups: Vec<&Arc<Upstream>> = routes.upstreams.iter().collect();
    let mut out = String::with_capacity(16 * 1024);

    help(&mut out, "llmux_build_info", "gauge", "Build information.");
    let _ = writeln!(
        out,
        "llmux_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    help(
        &mut out,
        "llmux_http_responses_total",
        "counter",
        "HTTP responses by status class.",
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
        .iter()
        .enumerate()
    {
        let n = gw.metrics.responses[i].load(Relaxed);
        let _ = writeln!(out, "llmux_http_responses_total{{class=\"{class}\"}} {n}");
    }

    help(
        &mut out,
        "llmux_rejections_total",
        "counter",
        "Calls refused before reaching an upstream, by layer.",
    );
    for (i, layer) in REJECTION_LAYERS.iter().enumerate() {
        let n = gw.metrics.rejections[i].load(Relaxed);
        let _ = writeln!(out, "llmux_rejections_total{{layer=\"{layer}\"}} {n}");
    }

    help(
        &mut out,
        "llmux_retries_total",
        "counter",
        "Calls that needed more than one attempt, by whether one of the retries answered.",
    );
    for (i, outcome) in ["success", "failure"].iter().enumerate() {
        let n = gw.metrics.retried[i].load(Relaxed);
        let _ = writeln!(out, "llmux_retries_total{{outcome=\"{outcome}\"}} {n}");
    }

    crate::accounting::render_metrics(&gw.accounting, &mut out);

    help(
        &mut out,
        "llmux_ratelimit_backend_up",
        "gauge",
        "1 while the rate-limit backend answers (0: limiting on local counters, or refusing with fail_open = false).",
    );
    let (backend, up) = gw.limits.backend_state();
    let _ = writeln!(
        out,
        "llmux_ratelimit_backend_up{{backend=\"{backend}\"}} {}",
        u8::from(up)
    );

    help(
        &mut out,
        "llmux_calls_total",
        "counter",
        "Calls answered by an upstream, by endpoint and outcome.",
    );
    for u in &ups {
        let name = esc(&u.name);
        for e in Endpoint::ALL {
            for (o, (_, oname)) in OUTCOMES.iter().enumerate() {
                let n = u.metrics.calls[e.index()][o].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "llmux_calls_total{{upstream=\"{name}\",endpoint=\"{}\",outcome=\"{oname}\"}} {n}",
                        e.as_str()
                    );
                }
            }
        }
    }

    help(
        &mut out,
        "llmux_call_duration_seconds",
        "histogram",
        "Time from request to the end of the response.",
    );
    for u in &ups {
        u.metrics.duration.render(
            &mut out,
            "llmux_call_duration_seconds",
            &format!("upstream=\"{}\"", esc(&u.name)),
        );
    }
    help(
        &mut out,
        "llmux_ttft_seconds",
        "histogram",
        "Time from request to the first byte of the answer.",
    );
    for u in &ups {
        u.metrics.ttft.render(
            &mut out,
            "llmux_ttft_seconds",
            &format!("upstream=\"{}\"", esc(&u.name)),
        );
    }

    help(
        &mut out,
        "llmux_attempt_failures_total",
        "counter",
        "Failed upstream attempts (each retried elsewhere when possible), by class.",
    );
    for u in &ups {
        for class in FailureClass::ALL {
            let n = u.metrics.attempt_failures[class.index()].load(Relaxed);
            let class = class.as_str();
            let _ = writeln!(
                out,
                "llmux_attempt_failures_total{{upstream=\"{}\",class=\"{class}\"}} {n}",
                esc(&u.name)
            );
        }
    }

    help(
        &mut out,
        "llmux_tokens_total",
        "counter",
        "Tokens reported by upstreams on translated calls, by direction.",
    );
    for u in &ups {
        let name = esc(&u.name);
        let i = u.metrics.input_tokens.load(Relaxed);
        let o = u.metrics.output_tokens.load(Relaxed);
        let _ = writeln!(
            out,
            "llmux_tokens_total{{upstream=\"{name}\",direction=\"input\"}} {i}"
        );
        let _ = writeln!(
            out,
            "llmux_tokens_total{{upstream=\"{name}\",direction=\"output\"}} {o}"
        );
    }

    let (sent, dropped) = crate::alerts::counts();
    help(
        &mut out,
        "llmux_alerts_total",
        "counter",
        "Alerts posted to the webhook, and dropped.",
    );
    let _ = writeln!(out, "llmux_alerts_total{{result=\"sent\"}} {sent}");
    let _ = writeln!(out, "llmux_alerts_total{{result=\"dropped\"}} {dropped}");

    help(
        &mut out,
        "llmux_upstream_up",
        "gauge",
        "1 when the upstream is in the active pool, 0 in standby.",
    );
    for u in &ups {
        let up = u8::from(u.state().pool == Pool::Active);
        let _ = writeln!(
            out,
            "llmux_upstream_up{{upstream=\"{}\"}} {up}",
            esc(&u.name)
        );
    }
    help(
        &mut out,
        "llmux_upstream_in_flight",
        "gauge",
        "Calls in flight to the upstream.",
    );
    for u in &ups {
        let _ = writeln!(
            out,
            "llmux_upstream_in_flight{{upstream=\"{}\"}} {}",
            esc(&u.name),
            u.active_requests()
        );
    }
    help(
        &mut out,
        "llmux_upstream_latency_seconds",
        "gauge",
        "Smoothed health-probe latency.",
    );
    for u in &ups {
        if let Some(ms) = u.state().latency_ms {
            let _ = writeln!(
                out,
                "llmux_upstream_latency_seconds{{upstream=\"{}\"}} {}",
                esc(&u.name),
                ms / 1000.0
            );
        }
    }
    help(
        &mut out,
        "llmux_breaker_state",
        "gauge",
        "1 for the breaker's current state (closed, open, half_open).",
    );
    for u in &ups {
        let current = u.breaker.state().as_str();
        for s in ["closed", "open", "half_open"] {
            let _ = writeln!(
                out,
                "llmux_breaker_state{{upstream=\"{}\",state=\"{s}\"}} {}",
                esc(&u.name),
                u8::from(current == s)
            );
        }
    }
    help(
        &mut out,
        "llmux_provider_keys",
        "gauge",
        "Provider keys by state (ok, cooling, disabled).",
    );
    for u in &ups {
        let mut counts = [0usize; 3];
        for i in 0..u.keys.len() {
            let idx = match u.keys.state(i).as_str() {
                "ok" => 0,
                "cooling" => 1,
                _ => 2,
            };
            counts[idx] += 1;
        }
        for (i, s) in ["ok", "cooling", "disabled"].iter().enumerate() {
            let _ = writeln!(
                out,
                "llmux_provider_keys{{upstream=\"{}\",state=\"{s}\"}} {}",
                esc(&u.name),
                counts[i]
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(500));
        let mut out = String::new();
        h.render(&mut out, "x", "u=\"a\"");
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
        assert_eq!(m.responses[1].load(Relaxed), 2);
        assert_eq!(m.responses[3].load(Relaxed), 1);
        assert_eq!(m.responses[4].load(Relaxed), 1);
        assert_eq!(m.responses[5].load(Relaxed), 1);
    }
}

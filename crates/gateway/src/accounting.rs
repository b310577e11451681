//! Accounting on the data plane: the usage tap that reads token counts out of relayed bytes,
//! the pricing table, the call record, and the hook (`Accountant`) through which the control
//! plane admits calls against credits and budgets and receives one record per call.
//!
//! The gateway does not know the store: it hands records to an [`Accountant`] that must never
//! block (the control plane's implementation queues them for a batched writer).

use bytes::Bytes;
use llmux_wire::canonical::Usage;
use llmux_wire::Dialect;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Input and output tokens of one call, and whether llmux had to estimate them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub estimated: bool,
}

/// Price of one model in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    pub fn cost(&self, t: Tokens) -> f64 {
        (t.input as f64 * self.input_per_mtok + t.output as f64 * self.output_per_mtok) / 1e6
    }
}

/// Shipped list prices (USD per million tokens, input/output). A model not listed here nor in
/// the config is free — which is what local Ollama models are.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("gemini-2.0-flash", 0.1, 0.4),
    ("gemini-2.0-flash-lite", 0.075, 0.3),
    ("gemini-2.5-flash", 0.3, 2.5),
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-1.5-pro", 1.25, 5.0),
    ("gemini-1.5-flash", 0.075, 0.3),
];

/// Model → price: the shipped defaults, then `[[pricing]]` from the config, then overrides set
/// through the admin API (each layer replaces the one before for the models it names).
#[derive(Clone, Debug, Default)]
pub struct Pricing {
    prices: BTreeMap<String, Price>,
}

impl Pricing {
    pub fn build(config: &[llmux_config::PricingConfig], api: &BTreeMap<String, Price>) -> Pricing {
        let mut prices: BTreeMap<String, Price> = DEFAULT_PRICES
            .iter()
            .map(|(m, i, o)| {
                (
                    (*m).to_string(),
                    Price {
                        input_per_mtok: *i,
                        output_per_mtok: *o,
                    },
                )
            })
            .collect();
        for p in config {
            prices.insert(
                p.model.clone(),
                Price {
                    input_per_mtok: p.input_per_mtok,
                    output_per_mtok: p.output_per_mtok,
                },
            );
        }
        for (m, p) in api {
            prices.insert(m.clone(), *p);
        }
        Pricing { prices }
    }

    /// The price of `model`: an exact entry, else the longest entry that prefixes it followed
    /// by `-`, `:` or `@` (dated snapshots such as `claude-sonnet-4-20250514`), after dropping an
    /// upstream pin (`openai/gpt-4o`) and Ollama's `:latest`. `None`: free.
    pub fn price(&self, model: &str) -> Option<Price> {
        let bare = model.split_once('/').map_or(model, |(_, m)| m);
        let bare = bare.strip_suffix(":latest").unwrap_or(bare);
        for m in [model, bare] {
            if let Some(p) = self.prices.get(m) {
                return Some(*p);
            }
        }
        self.prices
            .iter()
            .filter(|(name, _)| {
                bare.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['-', ':', '@']))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }

    pub fn entries(&self) -> &BTreeMap<String, Price> {
        &self.prices
    }
}

/// Tokens a byte count stands for when the upstream reports none (about 4 bytes a token).
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// One call, as the call log records it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallRecord {
    /// Unix milliseconds when the request arrived.
    pub created_at: i64,
    pub request_id: String,
    pub app_id: Option<String>,
    pub virtual_key_id: Option<String>,
    pub dialect: String,
    pub requested_model: String,
    pub upstream: Option<String>,
    pub upstream_model: Option<String>,
    pub provider_key_id: Option<String>,
    pub status: u16,
    pub error_class: Option<String>,
    pub attempts: u32,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub tokens: Tokens,
    /// USD.
    pub cost: f64,
    pub client_ip: Option<String>,
    /// Data chunks the upstream streamed (SSE events / NDJSON lines); `None` for whole answers.
    pub chunks: Option<u64>,
    /// The model the upstream named in its answer (may differ from `upstream_model`).
    pub reported_model: Option<String>,
    /// What admission reserved for this call (released when the record is settled).
    pub reserved: f64,
    /// The request body, secrets redacted, when `[logs] bodies = true`.
    pub request_body: Option<String>,
    /// The answer, secrets redacted, when `[logs] bodies = true` (up to a bounded size).
    pub response_body: Option<String>,
    /// Every attempt at an upstream, in order; the last one answered when the call succeeded.
    pub attempt_log: Vec<AttemptRecord>,
    /// Whether the client asked for a streamed answer.
    pub stream: Option<bool>,
}

/// One attempt of a call at an upstream, as the call log shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptRecord {
    pub upstream: String,
    pub key_id: Option<String>,
    /// The upstream's HTTP status; `None` when it sent none (connect error, timeout).
    pub status: Option<u16>,
    /// Why the attempt failed; `None` for a successful answer.
    pub error_class: Option<String>,
    /// From sending the request to the answer's first byte, or to the failure.
    pub ms: u64,
}

/// A call's record while the call runs: filled in as the call learns its upstream, finished
/// (tokens, cost, status) when its answer is over, then handed to the accountant.
pub struct Draft {
    pub record: CallRecord,
    pub request_bytes: u64,
    pub started: std::time::Instant,
    pub pricing: Arc<Pricing>,
    pub sink: Arc<dyn Accountant>,
    /// Whether the answer is kept (`[logs] bodies`).
    pub bodies: bool,
    /// The tokens the key's limits charged the call so far (grown when it moves on to a
    /// fallback target with limits of its own); handed to `on_settle`.
    pub grant: crate::limits::TokenGrant,
    /// Told the real tokens and the grant when the call settles (the rate limiter's token
    /// reconciliation).
    pub on_settle: Option<Box<dyn FnOnce(Tokens, crate::limits::TokenGrant) + Send + Sync>>,
    /// Set once the record was handed over; a draft dropped without it settles as
    /// `client_closed` (see the `Drop` impl).
    settled: bool,
    /// Cancelled once the shutdown grace is over: a draft dropped after that was dropped by
    /// the shutdown, not by its client.
    shutdown: Option<tokio_util::sync::CancellationToken>,
}

/// Most tokens one call is recorded with, each way (far beyond any model's context): larger
/// counts an upstream reports are taken as this.
pub const MAX_CALL_TOKENS: u64 = 1_000_000_000;

/// Bytes of an answer kept in the log when `[logs] bodies = true`.
pub const BODY_LOG_LIMIT: usize = 64 * 1024;

impl Draft {
    /// A record of a call that has not reached an upstream yet, handing it to `sink` at its end.
    pub fn new(
        record: CallRecord,
        request_bytes: u64,
        started: std::time::Instant,
        pricing: Arc<Pricing>,
        sink: Arc<dyn Accountant>,
        bodies: bool,
    ) -> Draft {
        Draft {
            record,
            request_bytes,
            started,
            pricing,
            sink,
            bodies,
            grant: crate::limits::TokenGrant::default(),
            on_settle: None,
            settled: false,
            shutdown: None,
        }
    }

    /// Tells the draft how to know that a drop comes from the shutdown (see the `Drop` impl).
    pub fn with_shutdown(mut self, token: tokio_util::sync::CancellationToken) -> Draft {
        self.shutdown = Some(token);
        self
    }

    /// Completes the record and hands it over. Tokens are priced by the model that answered.
    pub fn finish(
        mut self,
        status: u16,
        error_class: Option<&str>,
        ttft: Option<std::time::Duration>,
        tokens: Tokens,
        response: Option<&[u8]>,
    ) {
        self.settle(status, error_class, ttft, tokens, response);
    }

    fn settle(
        &mut self,
        status: u16,
        error_class: Option<&str>,
        ttft: Option<std::time::Duration>,
        tokens: Tokens,
        response: Option<&[u8]>,
    ) {
        if self.settled {
            return;
        }
        self.settled = true;
        // Counts come from the upstream's own report: a broken or hostile one must not
        // overflow the sums below nor bill an app without bound.
        let tokens = Tokens {
            input: tokens.input.min(MAX_CALL_TOKENS),
            output: tokens.output.min(MAX_CALL_TOKENS),
            ..tokens
        };
        if let Some(settle) = self.on_settle.take() {
            settle(tokens, std::mem::take(&mut self.grant));
        }
        let r = &mut self.record;
        r.status = status;
        r.error_class = error_class
            .map(str::to_string)
            .or_else(|| status_class(status).map(str::to_string));
        r.latency_ms = self.started.elapsed().as_millis() as u64;
        r.ttft_ms = ttft.map(|d| d.as_millis() as u64);
        r.tokens = tokens;
        let model = r.upstream_model.as_deref().unwrap_or(&r.requested_model);
        r.cost = self
            .pricing
            .price(model)
            .or_else(|| self.pricing.price(&r.requested_model))
            .map_or(0.0, |p| p.cost(tokens));
        if self.bodies {
            if let Some(b) = response {
                let b = &b[..b.len().min(BODY_LOG_LIMIT)];
                r.response_body = Some(redact(&String::from_utf8_lossy(b)));
            }
        }
        self.sink.record(std::mem::take(&mut self.record));
    }
}

/// A call whose handler was dropped before its answer was settled (the client hung up while
/// llmux waited for the first byte, failed over, or read a whole answer to translate) is
/// settled here: as `client_closed` (499), which releases its credit reservation and
/// reconciles its rate-limit grant. Once an upstream had taken the call (`upstream` is known),
/// the prompt was sent and is charged as estimated input tokens; before that, nothing is. A
/// call dropped by the shutdown (still open when the grace period ended) is settled the same
/// way as `shutdown` (503): llmux closed it, not the client.
impl Drop for Draft {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let tokens = if self.record.upstream.is_some() {
            Tokens {
                input: estimate_tokens(self.request_bytes),
                output: 0,
                estimated: true,
            }
        } else {
            Tokens::default()
        };
        let by_shutdown = self.shutdown.as_ref().is_some_and(|t| t.is_cancelled());
        let (status, class) = if by_shutdown {
            (503, "shutdown")
        } else {
            (CLIENT_CLOSED_STATUS, "client_closed")
        };
        self.settle(status, Some(class), None, tokens, None);
    }
}

/// The status the log records for a call whose client went away (nginx's convention).
pub const CLIENT_CLOSED_STATUS: u16 = 499;

/// The error class the log records for a status llmux answered with.
pub fn status_class(status: u16) -> Option<&'static str> {
    Some(match status {
        0..=399 => return None,
        400 | 422 => "invalid_request",
        401 => "authentication",
        402 | 403 => "permission",
        404 => "not_found",
        413 => "payload_too_large",
        429 => "rate_limited",
        400..=499 => "client_error",
        502 => "upstream_error",
        503 => "unavailable",
        504 => "timeout",
        _ => "server_error",
    })
}

/// Why a call is refused before it reaches an upstream.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    OutOfCredit,
    DailyBudget,
    MonthlyBudget,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::OutOfCredit => {
                "This app's credit balance is 0 (spent, or held by calls still running): add \
                 credits (POST /admin/v1/apps/{app}/credits) to continue."
            }
            Refusal::DailyBudget => {
                "This app's daily budget is spent: calls resume tomorrow (UTC) or when the budget is raised."
            }
            Refusal::MonthlyBudget => {
                "This app's monthly budget is spent: calls resume next month (UTC) or when the budget is raised."
            }
        })
    }
}

pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// Admits calls against an app's credit and budgets, and receives every call's record.
/// Implemented over the store by the control plane.
pub trait Accountant: Send + Sync {
    /// Checks `app_id`'s balance and budgets and reserves `reserve` USD until the call's
    /// record arrives. `priced`: whether the model costs anything (free models always pass).
    fn admit<'a>(&'a self, app_id: &'a str, reserve: f64, priced: bool) -> AdmitFuture<'a>;
    /// Takes one finished call. Must not block: it runs on the request path's drop.
    fn record(&self, record: CallRecord);
}

/// The accounting state the gateway holds: the accountant (once installed), the pricing, and
/// whether bodies go into the log.
#[derive(Default)]
pub struct Accounting {
    accountant: std::sync::OnceLock<Arc<dyn Accountant>>,
    pricing: arc_swap::ArcSwap<Pricing>,
    api_prices: std::sync::Mutex<BTreeMap<String, Price>>,
    pub refused: AtomicU64,
    /// Cancelled when the shutdown grace period is over: streams still open end (their
    /// records settled with what they delivered) while the call-log writer still runs.
    pub streams_cut: tokio_util::sync::CancellationToken,
    /// Cancelled a moment after `streams_cut`: calls still open (waiting for an upstream,
    /// reading a whole answer) are dropped with their connections, so their records settle —
    /// as `shutdown` — while the writer still runs.
    pub calls_dropped: tokio_util::sync::CancellationToken,
}

impl Accounting {
    pub fn set_accountant(&self, a: Arc<dyn Accountant>) {
        let _ = self.accountant.set(a);
    }

    pub fn accountant(&self) -> Option<&Arc<dyn Accountant>> {
        self.accountant.get()
    }

    pub fn pricing(&self) -> Arc<Pricing> {
        self.pricing.load_full()
    }

    /// Rebuilds the table from the config's `[[pricing]]` and the API's overrides.
    pub fn reprice(&self, config: &[llmux_config::PricingConfig]) {
        let api = self
            .api_prices
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        self.pricing.store(Arc::new(Pricing::build(config, &api)));
    }

    /// Replaces the admin API's overrides and rebuilds the table.
    pub fn set_api_prices(
        &self,
        prices: BTreeMap<String, Price>,
        config: &[llmux_config::PricingConfig],
    ) {
        if let Ok(mut m) = self.api_prices.lock() {
            *m = prices;
        }
        self.reprice(config);
    }

    pub fn record(&self, record: CallRecord) {
        if let Some(a) = self.accountant.get() {
            a.record(record);
        }
    }
}

/// What the call-log writer reports for `/metrics`.
#[derive(Default)]
pub struct LogMetrics {
    /// Records waiting to be written (channel plus overflow buffer).
    pub queue_depth: AtomicU64,
    /// Records that went to the overflow buffer because the channel was full.
    pub overflowed: AtomicU64,
    /// Records dropped because even the overflow buffer was full.
    pub dropped: AtomicU64,
    /// Batches that failed to write (and were retried).
    pub write_errors: AtomicU64,
    /// Records the store refused for their data (a NUL byte, an oversized value): stored
    /// sanitised, or set aside when even that failed — never retried forever.
    pub rejected: AtomicU64,
    /// Records written to the spill file because the store could not take them at shutdown.
    pub spilled: AtomicU64,
}

/// Shared by the writer (which updates it) and the gateway's `/metrics`.
pub static LOG_METRICS: LogMetrics = LogMetrics {
    queue_depth: AtomicU64::new(0),
    overflowed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    write_errors: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    spilled: AtomicU64::new(0),
};

pub(crate) fn render_metrics(accounting: &Accounting, out: &mut String) {
    use std::fmt::Write as _;
    let m = &LOG_METRICS;
    for (name, kind, help, v) in [
        (
            "llmux_call_log_queue_depth",
            "gauge",
            "Call-log records waiting for the writer.",
            m.queue_depth.load(Relaxed),
        ),
        (
            "llmux_call_log_overflow_total",
            "counter",
            "Call-log records that waited in the overflow buffer because the channel was full.",
            m.overflowed.load(Relaxed),
        ),
        (
            "llmux_call_log_dropped_total",
            "counter",
            "Call-log records dropped because the overflow buffer was full too.",
            m.dropped.load(Relaxed),
        ),
        (
            "llmux_call_log_write_errors_total",
            "counter",
            "Call-log batches that failed to write and were retried.",
            m.write_errors.load(Relaxed),
        ),
        (
            "llmux_call_log_rejected_total",
            "counter",
            "Call-log records the store refused for their data (stored sanitised or set aside).",
            m.rejected.load(Relaxed),
        ),
        (
            "llmux_call_log_spilled_total",
            "counter",
            "Call-log records written to the spill file for the next start to replay.",
            m.spilled.load(Relaxed),
        ),
        (
            "llmux_quota_refusals_total",
            "counter",
            "Calls refused for lack of credit or budget.",
            accounting.refused.load(Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// Lines longer than this are not scanned for usage (no usage line comes near it).
const MAX_LINE: usize = 1 << 20;
/// Whole (non-streamed) bodies larger than this are not parsed for usage: tokens are estimated.
const MAX_BODY: usize = 8 << 20;

/// Reads the upstream's reported usage out of the bytes as they pass, without holding any back:
/// SSE and NDJSON are scanned line by line (only lines that mention a usage field are parsed),
/// a whole JSON body is parsed once at its end.
pub struct UsageTap {
    streaming: bool,
    buf: Vec<u8>,
    overflow: bool,
    input: Option<u64>,
    output: Option<u64>,
    bytes: u64,
    /// Bytes of generated text seen in the stream (content, text and argument deltas): what an
    /// estimate of the output counts when the upstream reports no usage — never the framing.
    text_bytes: u64,
    /// Stream chunks seen (SSE events / NDJSON lines that carry data).
    chunks: u64,
    /// The model the upstream named in its answer (the first `"model"` it reported).
    reported_model: Option<String>,
}

impl UsageTap {
    /// `stream`: `Some(format)` for SSE (`OpenAi`) or NDJSON (`Ollama`) bodies, `None` for a whole JSON body.
    pub fn new(stream: Option<Dialect>) -> UsageTap {
        UsageTap {
            streaming: stream.is_some(),
            buf: Vec::new(),
            overflow: false,
            input: None,
            output: None,
            bytes: 0,
            text_bytes: 0,
            chunks: 0,
            reported_model: None,
        }
    }

    pub fn feed(&mut self, chunk: &Bytes) {
        self.bytes += chunk.len() as u64;
        if !self.streaming {
            if self.buf.len() + chunk.len() > MAX_BODY {
                self.overflow = true;
                self.buf = Vec::new();
            }
            if !self.overflow {
                self.buf.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest: &[u8] = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            if self.overflow {
                self.overflow = false;
            } else if self.buf.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.buf);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.buf = whole;
            }
            rest = &tail[1..];
        }
        if !rest.is_empty() && !self.overflow {
            if self.buf.len() + rest.len() > MAX_LINE {
                self.overflow = true;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(rest);
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let json = line.strip_prefix(b"data:").unwrap_or(line);
        let trimmed = json.trim_ascii();
        if trimmed.starts_with(b"{") || (trimmed.starts_with(b"[") && trimmed != b"[DONE]") {
            self.chunks += 1;
            self.text_bytes += text_bytes(trimmed);
            if self.reported_model.is_none() {
                self.reported_model = string_field(trimmed, b"\"model\":");
            }
        }
        let mentions = |needle: &[u8]| json.windows(needle.len()).any(|w| w == needle);
        if !(mentions(b"usage") || mentions(b"usageMetadata") || mentions(b"eval_count")) {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(json.trim_ascii()) {
            self.value(&v);
        }
    }

    fn value(&mut self, v: &Value) {
        if let Value::Array(items) = v {
            // Gemini's non-SSE stream: a JSON array of chunks.
            for item in items {
                self.value(item);
            }
            return;
        }
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        // OpenAI (chat, completions, embeddings), Anthropic (message, message_delta), OpenAI
        // Responses (`response.completed` carries the response object).
        let usage = v
            .get("usage")
            .or_else(|| v.get("message").and_then(|m| m.get("usage")))
            .or_else(|| v.get("response").and_then(|m| m.get("usage")));
        if let Some(u) = usage.filter(|u| u.is_object()) {
            if let Some(n) = num(u, "prompt_tokens").or_else(|| num(u, "input_tokens")) {
                self.input = Some(n);
            }
            if let Some(n) = num(u, "completion_tokens").or_else(|| num(u, "output_tokens")) {
                self.output = Some(n);
            }
        }
        // Ollama.
        if let Some(n) = num(v, "prompt_eval_count") {
            self.input = Some(n);
        }
        if let Some(n) = num(v, "eval_count") {
            self.output = Some(n);
        }
        // Gemini: cumulative in every chunk that carries it.
        if let Some(u) = v.get("usageMetadata") {
            if let Some(n) = num(u, "promptTokenCount") {
                self.input = Some(n);
            }
            let out = num(u, "candidatesTokenCount").unwrap_or(0)
                + num(u, "thoughtsTokenCount").unwrap_or(0);
            if u.get("candidatesTokenCount").is_some() || out > 0 {
                self.output = Some(out);
            }
        }
    }

    /// Whether the upstream reported the input tokens (call after [`UsageTap::finish`]).
    pub fn input_reported(&self) -> bool {
        self.input.is_some()
    }

    /// Data chunks of a stream seen so far (SSE events or NDJSON lines).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The model the upstream named in its answer, if it named one.
    pub fn reported_model(&self) -> Option<&str> {
        self.reported_model.as_deref()
    }

    /// Reports the usage seen; missing counts are estimated from `request_bytes` and the
    /// bytes relayed, and flagged.
    pub fn finish(&mut self, request_bytes: u64) -> Tokens {
        if !self.streaming && !self.overflow && !self.buf.is_empty() {
            if let Ok(v) = serde_json::from_slice::<Value>(&self.buf) {
                self.value(&v);
                if let Some(m) = v.get("model").and_then(Value::as_str) {
                    self.reported_model = Some(cap(m, MAX_CLIENT_STRING).to_string());
                }
            }
            self.buf = Vec::new();
        } else if self.streaming && !self.buf.is_empty() && !self.overflow {
            let last = std::mem::take(&mut self.buf);
            self.line(&last);
        }
        // A stream's output estimate counts the generated text only: SSE framing and JSON
        // envelopes are most of a stream's bytes (an estimate from them over-charges ~70x).
        let answer_bytes = if self.streaming {
            self.text_bytes
        } else {
            self.bytes
        };
        tokens(self.input, self.output, request_bytes, answer_bytes)
    }

    /// What the tap knows so far without ending it: for a stream cut before its end.
    pub fn so_far(&self, request_bytes: u64) -> Tokens {
        let answer_bytes = if self.streaming {
            self.text_bytes
        } else {
            self.bytes
        };
        tokens(self.input, self.output, request_bytes, answer_bytes)
    }
}

/// Keys whose string values are generated text in a stream chunk of some dialect: OpenAI
/// `content`/`text`/`arguments`/`reasoning_content`, Anthropic `text`/`partial_json`/`thinking`,
/// Ollama `content`/`response`, Gemini `text`.
const TEXT_KEYS: [&[u8]; 7] = [
    b"\"content\":",
    b"\"text\":",
    b"\"arguments\":",
    b"\"reasoning_content\":",
    b"\"partial_json\":",
    b"\"thinking\":",
    b"\"response\":",
];

/// Bytes of the string values of [`TEXT_KEYS`] in one JSON line (escapes count as one byte).
/// A byte scan, not a parse: it runs on every chunk of a stream.
fn text_bytes(json: &[u8]) -> u64 {
    let mut total = 0;
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(key) = TEXT_KEYS.iter().find(|k| json[i..].starts_with(k)) else {
            i += 1;
            continue;
        };
        i += key.len();
        while json.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if json.get(i) != Some(&b'"') {
            continue;
        }
        i += 1;
        while i < json.len() {
            match json[i] {
                b'\\' => {
                    total += 1;
                    i += 2;
                }
                b'"' => {
                    i += 1;
                    break;
                }
                _ => {
                    total += 1;
                    i += 1;
                }
            }
        }
    }
    total
}

/// The first string value of `key` (e.g. `"model":`) in a JSON line, capped.
fn string_field(json: &[u8], key: &[u8]) -> Option<String> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = json[at..].trim_ascii_start();
    let mut de = serde_json::Deserializer::from_slice(rest);
    let s = <String as serde::Deserialize>::deserialize(&mut de).ok()?;
    Some(cap(&s, MAX_CLIENT_STRING).to_string())
}

/// Longest client- or upstream-supplied string llmux echoes in a message or stores in the
/// call log (models, users, ids): longer ones are cut, so a huge name cannot bloat either.
pub const MAX_CLIENT_STRING: usize = 256;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reported counts where known, estimates (flagged) where not.
pub fn tokens(
    input: Option<u64>,
    output: Option<u64>,
    request_bytes: u64,
    response_bytes: u64,
) -> Tokens {
    Tokens {
        input: input.unwrap_or_else(|| estimate_tokens(request_bytes)),
        output: output.unwrap_or_else(|| estimate_tokens(response_bytes)),
        estimated: input.is_none() || output.is_none(),
    }
}

/// The canonical usage of a translated call (all zeros means the upstream reported none).
pub fn from_canonical(u: Option<Usage>, request_bytes: u64, response_bytes: u64) -> Tokens {
    match u {
        Some(u) if u.input_tokens > 0 || u.output_tokens > 0 => Tokens {
            input: u.input_tokens,
            output: u.output_tokens,
            estimated: false,
        },
        _ => tokens(None, None, request_bytes, response_bytes),
    }
}

/// Text for the call log with credentials removed: the whole value of any field named like a
/// credential (`authorization`, `api_key`, `x-api-key`, `password`, `secret`, `token`, …,
/// quoted or not, also inside JSON-in-a-string such as tool-call arguments), and anywhere in
/// the text whatever is shaped like one: `Bearer …`, a whole JWT, `sk-…`, `AIza…`.
pub fn redact(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !is_word(b[i]) || (i > 0 && is_word(b[i - 1])) {
            i += 1;
            continue;
        }
        let end = word_end(b, i);
        if let Some((secret_start, secret_end, replacement)) = secret_shape(text, i, end) {
            out.push_str(&text[copied..secret_start]);
            out.push_str(replacement);
            copied = secret_end;
            i = secret_end;
            continue;
        }
        if is_credential_name(&text[i..end]) {
            if let Some((value_start, value_end)) = value_span(b, end) {
                out.push_str(&text[copied..value_start]);
                out.push_str("***");
                copied = value_end;
                i = value_end;
                continue;
            }
        }
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Bytes of identifiers and of the secrets matched here (base64url, JWT segments, key ids).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn word_end(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| !is_word(c))
        .map_or(b.len(), |n| from + n)
}

/// A secret starting at the word `text[start..end]`: `(from, to, replacement)` of what to
/// replace.
fn secret_shape(text: &str, start: usize, end: usize) -> Option<(usize, usize, &'static str)> {
    let b = text.as_bytes();
    let word = &text[start..end];
    // A JWT: three base64url segments, the first a JSON header (`eyJ` = `{"`); all of it goes.
    if word.starts_with("eyJ") && word.len() >= 10 && b.get(end) == Some(&b'.') {
        let second = word_end(b, end + 1);
        if second > end + 1 && b.get(second) == Some(&b'.') {
            return Some((start, word_end(b, second + 1), "***"));
        }
    }
    for (prefix, kept) in [("sk-", "sk-***"), ("AIza", "AIza***")] {
        if word.starts_with(prefix) && word.len() >= prefix.len() + 8 {
            return Some((start, end, kept));
        }
    }
    if word.eq_ignore_ascii_case("bearer") {
        let token_start = end + b[end..].iter().take_while(|&&c| c == b' ').count();
        if token_start > end {
            let token_end = b[token_start..]
                .iter()
                .position(|&c| !(is_word(c) || matches!(c, b'.' | b'~' | b'+' | b'/' | b'=')))
                .map_or(b.len(), |n| token_start + n);
            if token_end - token_start >= 8 {
                return Some((token_start, token_end, "***"));
            }
        }
    }
    None
}

/// Whether a field, header or parameter of this name holds a credential (case, `-` and `_`
/// ignored).
fn is_credential_name(word: &str) -> bool {
    if word.len() > 40 {
        return false;
    }
    let name: String = word
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const EXACT: [&str; 11] = [
        "authorization",
        "proxyauthorization",
        "token",
        "key",
        "passwd",
        "pwd",
        "cookie",
        "setcookie",
        "credential",
        "credentials",
        "privatekey",
    ];
    const SUFFIXES: [&str; 8] = [
        "apikey",
        "secret",
        "password",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "sessiontoken",
    ];
    EXACT.contains(&name.as_str()) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Where the value after a credential name is: past an optional closing quote (`"`, `'` or a
/// JSON-escaped `\"`), a `:` or `=`, and a quoted string's opening quote. `None` when no
/// value follows, or it is an object, an array, `null` or a boolean.
fn value_span(b: &[u8], name_end: usize) -> Option<(usize, usize)> {
    let mut j = name_end;
    if b[j..].starts_with(b"\\\"") {
        j += 2;
    } else if matches!(b.get(j), Some(b'"' | b'\'')) {
        j += 1;
    }
    let spaces = |j: usize| {
        j + b[j..]
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count()
    };
    j = spaces(j);
    if !matches!(b.get(j), Some(b':' | b'=')) {
        return None;
    }
    j = spaces(j + 1);
    let rest = &b[j..];
    if rest.starts_with(b"\\\"") {
        // A string inside a JSON string: up to the next escaped quote.
        let start = j + 2;
        let len = b[start..].windows(2).position(|w| w == b"\\\"")?;
        return Some((start, start + len));
    }
    match rest.first()? {
        b'"' | b'\'' => {
            let quote = rest[0];
            let start = j + 1;
            let mut k = start;
            while k < b.len() && b[k] != quote {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            Some((start, k.min(b.len())))
        }
        b'{' | b'[' => None,
        _ if rest.starts_with(b"null")
            || rest.starts_with(b"true")
            || rest.starts_with(b"false") =>
        {
            None
        }
        _ => {
            let len = rest
                .iter()
                .position(|c| {
                    matches!(
                        c,
                        b'\n' | b'\r' | b'"' | b'&' | b',' | b';' | b'}' | b']' | b'<'
                    )
                })
                .unwrap_or(rest.len());
            (len > 0).then_some((j, j + len))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tap(stream: Option<Dialect>, chunks: &[&str]) -> Tokens {
        let mut t = UsageTap::new(stream);
        for c in chunks {
            t.feed(&Bytes::copy_from_slice(c.as_bytes()));
        }
        t.finish(400)
    }

    #[test]
    fn usage_in_every_dialect_split_anywhere() {
        let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let ollama = "{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"done\":true,\"prompt_eval_count\":5,\"eval_count\":3}\n";
        let gemini = "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2}}\r\n\r\ndata: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":6}}\r\n\r\n";
        for (text, fmt, want) in [
            (openai, Dialect::OpenAi, (12, 7)),
            (anthropic, Dialect::OpenAi, (9, 15)),
            (ollama, Dialect::Ollama, (5, 3)),
            (gemini, Dialect::OpenAi, (4, 6)),
        ] {
            for split in 1..text.len() {
                let (a, b) = text.split_at(split);
                let t = tap(Some(fmt), &[a, b]);
                assert_eq!(
                    (t.input, t.output, t.estimated),
                    (want.0, want.1, false),
                    "{text} @ {split}"
                );
            }
        }
    }

    #[test]
    fn whole_bodies_and_estimates() {
        let t = tap(
            None,
            &[
                "{\"usage\":{\"prompt_tokens\":3,",
                "\"completion_tokens\":4}}",
            ],
        );
        assert_eq!((t.input, t.output, t.estimated), (3, 4, false));
        let t = tap(
            None,
            &["[{\"usageMetadata\":{\"promptTokenCount\":1,\"candidatesTokenCount\":2}}]"],
        );
        assert_eq!((t.input, t.output), (1, 2));
        let t = tap(Some(Dialect::OpenAi), &["data: {\"choices\":[]}\n\n"]);
        assert!(t.estimated);
        assert_eq!(t.input, 100);
    }

    #[test]
    fn a_stream_without_usage_is_estimated_from_its_text_not_its_framing() {
        let mut text = String::new();
        for _ in 0..50 {
            text.push_str("data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word\"},\"finish_reason\":null}]}\n\n");
        }
        text.push_str("data: [DONE]\n\n");
        let mut t = UsageTap::new(Some(Dialect::OpenAi));
        t.feed(&Bytes::from(text));
        let tokens = t.finish(400);
        assert!(tokens.estimated);
        // 50 × "word" = 200 bytes of text = 50 tokens; the framing (~7 KB) does not count.
        assert_eq!(tokens.output, 50);
        assert_eq!(t.chunks(), 50);
        assert_eq!(t.reported_model(), Some("gpt-4o-mini"));
        // Escapes count as one character each.
        assert_eq!(text_bytes(br#"{"delta":{"content":"a\"b\n"}}"#), 4);
        assert_eq!(
            text_bytes(br#"{"message":{"content": "abc"},"response":"de"}"#),
            5
        );
    }

    #[test]
    fn caps_on_a_char_boundary() {
        assert_eq!(cap("héllo", 2), "h");
        assert_eq!(cap("abc", 5), "abc");
    }

    #[test]
    fn prices_by_prefix() {
        let p = Pricing::build(&[], &BTreeMap::new());
        assert_eq!(p.price("gpt-4o").unwrap().input_per_mtok, 2.5);
        assert_eq!(p.price("gpt-4o-mini").unwrap().input_per_mtok, 0.15);
        assert_eq!(p.price("gpt-4o-2024-08-06").unwrap().input_per_mtok, 2.5);
        assert_eq!(p.price("openai/gpt-4o-mini").unwrap().output_per_mtok, 0.6);
        assert_eq!(
            p.price("claude-sonnet-4-20250514").unwrap().output_per_mtok,
            15.0
        );
        assert!(p.price("llama3").is_none());
        assert!(p.price("gpt-4omni").is_none());
        let cost = p.price("gpt-4o").unwrap().cost(Tokens {
            input: 1_000_000,
            output: 100_000,
            estimated: false,
        });
        assert!((cost - 3.5).abs() < 1e-9);
    }

    #[test]
    fn secrets_are_redacted() {
        let r = redact(
            r#"{"k":"sk-abcdefghijklmnop","x-api-key":"whatever","t":"Bearer abcdefghijk","g":"AIzaSyABCDEFGH123"}"#,
        );
        assert!(!r.contains("abcdefghijklmnop"), "{r}");
        assert!(!r.contains("whatever"), "{r}");
        assert!(!r.contains("SyABCDEFGH"), "{r}");
        assert!(r.contains("sk-***"));
    }

    #[test]
    fn whole_credential_values_and_jwts_are_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let cases = [
            (
                r#"{"authorization": "Basic dXNlcjpwYXNzd29yZA=="}"#,
                "dXNlcjpw",
            ),
            (
                "GET /\r\nAuthorization: Basic dXNlcjpwYXNzd29yZA==\r\n",
                "dXNlcjpw",
            ),
            (r#"{"Proxy-Authorization":"Digest u=1"}"#, "Digest"),
            (r#"{"api_key": "abc123"}"#, "abc123"),
            (
                r#"{"client_secret":"s3cr3t","password":"hunter2"}"#,
                "s3cr3t",
            ),
            (
                r#"{"client_secret":"s3cr3t","password":"hunter2"}"#,
                "hunter2",
            ),
            (r#"{"token": "opaque-xyz"}"#, "opaque-xyz"),
            ("https://h/v1?api_key=qwerty&x=1", "qwerty"),
            (r#"{"arguments":"{\"password\": \"hunter2\"}"}"#, "hunter2"),
            (
                &format!(r#"{{"note":"my token is {jwt} ok"}}"#),
                "eyJzdWIiOiJhbm4ifQ",
            ),
            (&format!("x {jwt}"), "c2lnbmF0dXJl"),
            ("bearer abcdefghijklmn.op", "ijklmn"),
        ];
        for (text, secret) in cases {
            let r = redact(text);
            assert!(!r.contains(secret), "{text} -> {r}");
        }
        let r = redact(r#"{"api_key": "abc123", "x": 1}"#);
        assert_eq!(r, r#"{"api_key": "***", "x": 1}"#);
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            r#"{"model":"gpt-4o","max_tokens":100,"token_type":"Bearer","usage":{"prompt_tokens":3}}"#,
            "a task-management tool; tokens: 12",
            r#"{"key": null, "authorization": {"scheme": "none"}}"#,
            "über — ünïcödé",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}

//! Traces: W3C `traceparent` in and out, and spans (one per call, one per attempt) exported
//! over OTLP/HTTP as JSON when `telemetry.otlp_endpoint` is set.
//!
//! Spans go through a bounded queue to one exporter task that batches them; a full queue
//! drops spans (counted) rather than slow a call.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// A trace position: which trace, and which span is the parent of the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// Reads a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when absent or invalid.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2
            || version == "ff"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = hex(span)?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// A new root context (no incoming `traceparent`).
    pub fn root() -> TraceContext {
        let a = random_u64().to_be_bytes();
        let b = random_u64().to_be_bytes();
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a);
        trace_id[8..].copy_from_slice(&b);
        TraceContext {
            trace_id,
            span_id: random_u64().to_be_bytes(),
            sampled: true,
        }
    }

    /// A child position in the same trace.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: random_u64().to_be_bytes(),
            ..*self
        }
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    pub fn trace_hex(&self) -> String {
        to_hex(&self.trace_id)
    }
}

/// The OTLP span kinds llmux emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A client's call into llmux (`llmux.call`).
    Server,
    /// One attempt at an upstream (`llmux.attempt`).
    Client,
}

impl SpanKind {
    /// The number OTLP gives the kind (`SPAN_KIND_SERVER` = 2, `SPAN_KIND_CLIENT` = 3).
    fn otlp(self) -> u8 {
        match self {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        }
    }
}

/// The model asked for, as the OpenTelemetry GenAI conventions name it.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";

/// A finished span, ready to export.
#[derive(Clone, Debug)]
pub struct Span {
    pub name: &'static str,
    pub ctx: TraceContext,
    pub parent: Option<[u8; 8]>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    pub error: Option<String>,
}

impl Span {
    fn to_otlp(&self) -> Value {
        let nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos().to_string())
                .unwrap_or_default()
        };
        let attributes: Vec<Value> = self
            .attributes
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Number(n) if n.is_i64() || n.is_u64() => {
                        json!({ "intValue": n.to_string() })
                    }
                    Value::Number(n) => json!({ "doubleValue": n.as_f64().unwrap_or(0.0) }),
                    Value::Bool(b) => json!({ "boolValue": b }),
                    Value::String(s) => json!({ "stringValue": s }),
                    other => json!({ "stringValue": other.to_string() }),
                };
                json!({ "key": k, "value": value })
            })
            .collect();
        let mut span = json!({
            "traceId": to_hex(&self.ctx.trace_id),
            "spanId": to_hex(&self.ctx.span_id),
            "name": self.name,
            "kind": self.kind.otlp(),
            "startTimeUnixNano": nanos(self.start),
            "endTimeUnixNano": nanos(self.end),
            "attributes": attributes,
            "status": match &self.error {
                Some(m) => json!({ "code": 2, "message": m }),
                None => json!({ "code": 1 }),
            },
        });
        if let Some(p) = self.parent {
            span["parentSpanId"] = json!(to_hex(&p));
        }
        span
    }
}

/// What a call's record learned that its span reports under OpenTelemetry's GenAI names:
/// set once when the record settles, read when the span ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenAiUsage {
    /// The model the call asked for.
    pub request_model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Request to first byte of the answer, for calls an upstream answered.
    pub ttft: Option<std::time::Duration>,
}

/// Shared by a call's span and its record (only when tracing is on).
pub type UsageSlot = std::sync::Arc<OnceLock<GenAiUsage>>;

/// The span of one client call, carried in the request's extensions while the call runs.
#[derive(Clone, Debug)]
pub struct CallTrace {
    pub ctx: TraceContext,
    /// The client's span, when it sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub start: SystemTime,
    pub path: String,
    /// Filled by the call's record when it settles.
    pub usage: UsageSlot,
}

impl CallTrace {
    pub fn new(incoming: Option<TraceContext>, path: &str) -> CallTrace {
        let (ctx, parent) = match incoming {
            Some(p) => (p.child(), Some(p.span_id)),
            None => (TraceContext::root(), None),
        };
        CallTrace {
            ctx,
            parent,
            start: SystemTime::now(),
            path: path.to_string(),
            usage: UsageSlot::default(),
        }
    }

    /// Wraps the response body so the call's span ends when the body does (or is dropped).
    pub fn finish_with(
        self,
        resp: axum::response::Response,
        request_id: String,
    ) -> axum::response::Response {
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let traced = SpanBody {
            inner: body,
            pending: Some((self, status, request_id)),
            ended: false,
        };
        axum::response::Response::from_parts(parts, axum::body::Body::new(traced))
    }
}

/// A response body that records its call's span when it ends.
struct SpanBody {
    inner: axum::body::Body,
    pending: Option<(CallTrace, u16, String)>,
    ended: bool,
}

impl SpanBody {
    fn finish(&mut self) {
        if let Some((t, status, request_id)) = self.pending.take() {
            let mut attributes = vec![
                ("http.route", t.path.into()),
                ("http.status_code", status.into()),
                ("llmux.request_id", request_id.into()),
            ];
            if let Some(u) = t.usage.get() {
                attributes.extend(gen_ai_attributes(u));
            }
            record(Span {
                name: "llmux.call",
                ctx: t.ctx,
                parent: t.parent,
                kind: SpanKind::Server,
                start: t.start,
                end: SystemTime::now(),
                attributes,
                error: if !self.ended {
                    Some("client closed the connection before the end".into())
                } else if status >= 500 {
                    Some(format!("HTTP {status}"))
                } else {
                    None
                },
            });
        }
    }
}

/// The call's model, tokens and time to first token, as OpenTelemetry's GenAI conventions
/// name them.
fn gen_ai_attributes(u: &GenAiUsage) -> Vec<(&'static str, Value)> {
    let mut a = vec![
        (GEN_AI_REQUEST_MODEL, u.request_model.clone().into()),
        ("gen_ai.usage.input_tokens", u.input_tokens.into()),
        ("gen_ai.usage.output_tokens", u.output_tokens.into()),
    ];
    if let Some(t) = u.ttft {
        a.push(("gen_ai.server.time_to_first_token", t.as_secs_f64().into()));
    }
    a
}

impl http_body::Body for SpanBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = &polled {
            // The span is recorded on drop, once the inner body (the relay, which settles
            // the call's record and with it the usage) is gone.
            self.ended = true;
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

impl Drop for SpanBody {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            self.ended = true;
        }
        // The inner body first: dropping the relay settles the call's record, which fills
        // the usage this span reports.
        drop(std::mem::replace(
            &mut self.inner,
            axum::body::Body::empty(),
        ));
        self.finish();
    }
}

static SINK: OnceLock<mpsc::Sender<Span>> = OnceLock::new();
/// Where spans go: (`{telemetry.otlp_endpoint}/v1/traces`, `telemetry.service_name`); set at
/// start and on every reload, read by the exporter for each batch.
static EXPORT: std::sync::RwLock<Option<(String, String)>> = std::sync::RwLock::new(None);
static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Sets (or clears, with `None`) the collector; a reload that changes `[telemetry]` takes
/// effect with the next call and the next batch.
pub fn configure(endpoint: Option<String>, service: String) {
    let target = endpoint.map(|e| (format!("{}/v1/traces", e.trim_end_matches('/')), service));
    ON.store(target.is_some(), Relaxed);
    if let Ok(mut t) = EXPORT.write() {
        *t = target;
    }
}

/// Whether spans are being exported (so callers can skip building them).
pub fn enabled() -> bool {
    ON.load(Relaxed) && SINK.get().is_some()
}

/// Queues a finished span; a no-op when tracing is off.
pub fn record(span: Span) {
    if !ON.load(Relaxed) {
        return;
    }
    if let Some(tx) = SINK.get() {
        if tx.try_send(span).is_err() {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// (exported, dropped) spans since start.
pub fn counts() -> (u64, u64) {
    (EXPORTED.load(Relaxed), DROPPED.load(Relaxed))
}

/// Starts the exporter (once per process), posting to the collector [`configure`] set last.
pub fn start(
    cancel: tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send> {
    let (tx, mut rx) = mpsc::channel::<Span>(8192);
    SINK.set(tx).ok()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    Some(async move {
        let mut batch: Vec<Span> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let closing = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tick.tick() => false,
                s = rx.recv() => match s {
                    Some(s) => { batch.push(s); if batch.len() < 512 { continue; } false }
                    None => true,
                },
            };
            if closing {
                // Take what is queued so the spans of the last calls still go out.
                while let Ok(s) = rx.try_recv() {
                    batch.push(s);
                }
            }
            let target = EXPORT.read().ok().and_then(|t| t.clone());
            if let (false, Some((url, service))) = (batch.is_empty(), target) {
                let spans: Vec<Value> = batch.iter().map(Span::to_otlp).collect();
                let body = json!({
                    "resourceSpans": [{
                        "resource": { "attributes": [
                            { "key": "service.name", "value": { "stringValue": service } }
                        ]},
                        "scopeSpans": [{ "scope": { "name": "llmux" }, "spans": spans }]
                    }]
                });
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        EXPORTED.fetch_add(batch.len() as u64, Relaxed);
                    }
                    outcome => {
                        DROPPED.fetch_add(batch.len() as u64, Relaxed);
                        let why = match outcome {
                            Ok(r) => format!("HTTP {}", r.status().as_u16()),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(
                            why,
                            spans = batch.len(),
                            "OTLP export failed; spans dropped"
                        );
                    }
                }
            }
            // Sent, failed or (telemetry turned off by a reload) not wanted: done with either way.
            batch.clear();
            if closing {
                return;
            }
        }
    })
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A random non-zero id part (W3C trace and span ids must not be all zeros).
fn random_u64() -> u64 {
    rand::random::<u64>() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(h);
        assert_eq!(c.map(|c| c.header()), Some(h.to_string()));
        let child = c.map(|c| c.child());
        assert_eq!(child.map(|x| x.trace_id), c.map(|c| c.trace_id));
        assert_ne!(child.map(|x| x.span_id), c.map(|c| c.span_id));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        let r = TraceContext::root();
        assert_eq!(TraceContext::parse(&r.header()), Some(r));
    }

    #[test]
    fn otlp_json_shape() {
        let ctx = TraceContext::root();
        let s = Span {
            name: "llmux.call",
            ctx,
            parent: None,
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_secs(1),
            end: UNIX_EPOCH + Duration::from_secs(2),
            attributes: vec![
                (GEN_AI_REQUEST_MODEL, json!("llama3")),
                ("http.status_code", json!(200)),
            ],
            error: None,
        };
        let v = s.to_otlp();
        assert_eq!(v["traceId"].as_str().map(str::len), Some(32));
        assert_eq!(v["startTimeUnixNano"], "1000000000");
        assert_eq!(v["attributes"][1]["value"]["intValue"], "200");
        assert_eq!(v["status"]["code"], 1);
        assert_eq!(v["kind"], 2);
        assert_eq!(v["attributes"][0]["key"], "gen_ai.request.model");
    }
}

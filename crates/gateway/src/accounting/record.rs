//! The call record: what the call log keeps of one call, built as the call runs ([`Draft`]) and
//! settled once — by its answer, or by its drop (`client_closed`, `shutdown`).

use super::{estimate_tokens, redact, Accountant, Pricing, Tokens};
use std::sync::Arc;

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
    /// The hook (`[[hooks]]`) that refused the call, if one did.
    pub hook: Option<String>,
    /// Answered from the response cache (`[cache]`): no upstream, no tokens, no cost.
    pub cache_hit: bool,
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
    /// The call span's usage, filled when the record settles (tracing on).
    usage: Option<crate::telemetry::UsageSlot>,
    /// The `redact` patterns of the hooks in scope, applied to the bodies the record keeps.
    pub masks: Option<Arc<Vec<regex_automata::meta::Regex>>>,
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
            usage: None,
            masks: None,
        }
    }

    /// Tells the draft how to know that a drop comes from the shutdown (see the `Drop` impl).
    /// Reports the settled model, tokens and time to first token to the call's span.
    pub fn with_usage(mut self, usage: Option<crate::telemetry::UsageSlot>) -> Draft {
        self.usage = usage;
        self
    }

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
        let (input, output) = (
            tokens.input.min(MAX_CALL_TOKENS),
            tokens.output.min(MAX_CALL_TOKENS),
        );
        let tokens = Tokens {
            input,
            output,
            // Parts of the totals, never more than them.
            cached: tokens.cached.min(input),
            cache_write: tokens.cache_write.min(input),
            reasoning: tokens.reasoning.min(output),
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
        if let Some(u) = &self.usage {
            let _ = u.set(crate::telemetry::GenAiUsage {
                request_model: r.requested_model.clone(),
                input_tokens: tokens.input,
                output_tokens: tokens.output,
                ttft,
            });
        }
        let model = r.upstream_model.as_deref().unwrap_or(&r.requested_model);
        // A deployment's own entry (`upstream/model`) first, then the model's.
        let deployment = r.upstream.as_ref().map(|u| format!("{u}/{model}"));
        r.cost = self
            .pricing
            .price(deployment.as_deref().unwrap_or(model))
            .or_else(|| self.pricing.price(&r.requested_model))
            .map_or(0.0, |p| p.cost(tokens));
        if self.bodies {
            if let Some(b) = response {
                let b = &b[..b.len().min(BODY_LOG_LIMIT)];
                let text = redact(&String::from_utf8_lossy(b));
                r.response_body = Some(match &self.masks {
                    Some(m) => crate::hooks::mask(m, &text),
                    None => text,
                });
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
                ..Tokens::default()
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

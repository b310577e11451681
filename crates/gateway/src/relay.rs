//! The response body handed to the client: upstream bytes pass through untouched as they arrive,
//! or — when the client speaks another dialect — are transcoded event by event as they arrive.
//!
//! It also holds the call's in-flight guard, so the upstream's count drops the moment the
//! body finishes, fails, or is dropped because the client hung up (which also drops the
//! upstream connection and so cancels the upstream call).

use crate::accounting::{self, Draft, UsageTap, BODY_LOG_LIMIT};
use crate::upstream::InFlight;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::{Body, Frame, SizeHint};
use llmux_wire::canonical::{StreamDecoder, StreamEncoder, StreamEvent};
use llmux_wire::{Dialect, ErrorKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Rewrites a stream from the upstream's dialect into the client's, one chunk at a time.
pub struct Transcoder {
    pub decoder: Box<dyn StreamDecoder>,
    pub encoder: Box<dyn StreamEncoder>,
    events: Vec<StreamEvent>,
    /// The upstream's usage, as its decoder reported it (for the call log).
    usage: Option<llmux_wire::canonical::Usage>,
    /// Upstream chunks read, and the model the upstream named (for the call log).
    chunks: u64,
    reported_model: Option<String>,
}

impl Transcoder {
    pub fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Transcoder {
        Transcoder {
            decoder,
            encoder,
            events: Vec::new(),
            usage: None,
            chunks: 0,
            reported_model: None,
        }
    }

    /// Client bytes for an upstream chunk; empty when the chunk completed no event yet.
    fn chunk(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        self.events.clear();
        self.chunks += 1;
        let fed = self.decoder.feed(chunk, &mut self.events);
        let mut out = Vec::new();
        for e in &self.events {
            match e {
                StreamEvent::Usage(u) => self.usage = Some(*u),
                StreamEvent::Start { model, .. } if self.reported_model.is_none() => {
                    let m = accounting::cap(model, accounting::MAX_CLIENT_STRING);
                    self.reported_model = (!m.is_empty()).then(|| m.to_string());
                }
                _ => {}
            }
            self.encoder.encode(e, &mut out);
        }
        fed.map(|()| out).map_err(|e| e.to_string())
    }

    fn end(&mut self) -> Result<Vec<u8>, String> {
        self.events.clear();
        let fed = self.decoder.finish(&mut self.events);
        let mut out = Vec::new();
        for e in &self.events {
            if let StreamEvent::Usage(u) = e {
                self.usage = Some(*u);
            }
            self.encoder.encode(e, &mut out);
        }
        fed.map_err(|e| e.to_string())?;
        self.encoder.finish(&mut out);
        Ok(out)
    }

    fn error(&mut self, message: &str) -> Bytes {
        let mut out = Vec::new();
        self.encoder
            .encode(&StreamEvent::Error(message.to_string()), &mut out);
        Bytes::from(out)
    }
}

/// What the access log line says about a call once its response is over.
pub struct CallLog {
    pub request_id: String,
    pub endpoint: crate::endpoint::Endpoint,
    pub model: String,
    pub upstream: String,
    pub status: u16,
    pub attempts: usize,
    pub started: Instant,
    /// Time from the request's arrival to the first upstream bytes.
    pub ttft: Duration,
    /// The call-log record, finished when the body ends (`None`: no accounting installed).
    pub draft: Option<Draft>,
    /// Cancelled at the end of the shutdown grace period: the stream ends at once.
    pub cut: tokio_util::sync::CancellationToken,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Streaming,
    Complete,
    Failed,
    /// Ended by llmux at the end of the shutdown grace period.
    Cut,
}

/// Removes from an OpenAI stream the usage-only chunk (`"choices":[]` with a `usage` object)
/// that llmux asked the upstream for on the client's behalf. Chunks pass through as they come;
/// only a line cut by a chunk boundary waits for its end (a few bytes, never a whole event).
#[derive(Default)]
struct UsageStrip {
    partial: Vec<u8>,
    /// The usage line was dropped: drop the blank line that ends its event too.
    drop_blank: bool,
}

impl UsageStrip {
    fn is_usage_only(line: &[u8]) -> bool {
        let json = line.strip_prefix(b"data:").unwrap_or(line).trim_ascii();
        let has = |n: &[u8]| json.windows(n.len()).any(|w| w == n);
        if !(has(b"\"usage\"") && (has(b"\"choices\":[]") || has(b"\"choices\": []"))) {
            return false;
        }
        serde_json::from_slice::<serde_json::Value>(json).is_ok_and(|v| {
            v.get("choices")
                .and_then(|c| c.as_array())
                .is_some_and(|c| c.is_empty())
                && v.get("usage").is_some_and(|u| u.is_object())
        })
    }

    fn apply(&mut self, chunk: Bytes) -> Bytes {
        let empty_choices = |n: &[u8]| chunk.windows(n.len()).any(|w| w == n);
        if self.partial.is_empty()
            && !self.drop_blank
            && chunk.ends_with(b"\n")
            && !empty_choices(b"\"choices\":[]")
            && !empty_choices(b"\"choices\": []")
        {
            return chunk;
        }
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&chunk);
        let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = data.split_off(complete);
        let mut out = Vec::with_capacity(data.len());
        for line in data.split_inclusive(|b| *b == b'\n') {
            let bare = line.strip_suffix(b"\n").unwrap_or(line);
            let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
            if self.drop_blank && bare.is_empty() {
                self.drop_blank = false;
                continue;
            }
            self.drop_blank = false;
            if Self::is_usage_only(bare) {
                self.drop_blank = true;
                continue;
            }
            out.extend_from_slice(line);
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.partial);
        if Self::is_usage_only(rest.trim_ascii()) {
            return Bytes::new();
        }
        Bytes::from(rest)
    }
}

pub struct Relay {
    first: Option<Bytes>,
    inner: crate::upstream_http::BodyStream,
    /// Armed lazily: chunks only note the time; the timer is re-armed when it fires early.
    idle_timer: Pin<Box<Sleep>>,
    idle: Duration,
    /// On tokio's clock, like the timer it re-arms (pausable in tests).
    last_data: tokio::time::Instant,
    /// `Some` for SSE / NDJSON responses: a failure is reported as that format's error event.
    stream_dialect: Option<Dialect>,
    transcoder: Option<Transcoder>,
    size: SizeHint,
    outcome: Outcome,
    error: Option<String>,
    bytes: u64,
    log: CallLog,
    inflight: InFlight,
    /// Reads usage out of passthrough bytes (only when there is a record to fill).
    tap: Option<UsageTap>,
    /// The answer as relayed, for `[logs] bodies` (bounded).
    captured: Option<Vec<u8>>,
    /// Drops the usage chunk llmux asked for on the client's behalf.
    strip: Option<UsageStrip>,
    /// Wakes the body when the stream is cut (armed only while it waits for the upstream).
    cut_wait: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    /// In a cluster: where a breaker this stream opens is announced.
    signals: Option<Arc<dyn crate::peers::signals::SignalBus>>,
    /// Passthrough streams: notes whether the upstream sent its final event, so a stream the
    /// upstream closed cleanly half-way ends with an error event rather than as if whole.
    end_watch: Option<llmux_wire::stream::ending::EndWatch>,
}

impl Relay {
    pub fn new(
        first: Option<Bytes>,
        inner: crate::upstream_http::BodyStream,
        idle: Duration,
        stream_dialect: Option<Dialect>,
        content_length: Option<u64>,
        log: CallLog,
        inflight: InFlight,
    ) -> Relay {
        let now = tokio::time::Instant::now();
        let tap = log.draft.as_ref().map(|_| UsageTap::new(stream_dialect));
        let captured = log.draft.as_ref().filter(|d| d.bodies).map(|_| Vec::new());
        Relay {
            first,
            inner,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            idle,
            last_data: now,
            stream_dialect,
            transcoder: None,
            size: content_length.map_or_else(SizeHint::default, SizeHint::with_exact),
            outcome: Outcome::Streaming,
            error: None,
            bytes: 0,
            log,
            inflight,
            tap,
            captured,
            strip: None,
            cut_wait: None,
            signals: None,
            end_watch: None,
        }
    }

    /// Announces a breaker this stream opens (a break after the first byte) through `bus`.
    pub fn announcing(mut self, bus: Option<&Arc<dyn crate::peers::signals::SignalBus>>) -> Relay {
        self.signals = bus.cloned();
        self
    }

    /// Watches a passed-through stream for its dialect's final event (see [`EndWatch`]).
    ///
    /// [`EndWatch`]: llmux_wire::stream::ending::EndWatch
    pub fn watching_end(mut self, watch: llmux_wire::stream::ending::EndWatch) -> Relay {
        self.end_watch = Some(watch);
        self
    }

    /// Removes the usage-only chunk from the stream the client sees (the tap still reads it).
    pub fn stripping_usage(mut self) -> Relay {
        self.strip = Some(UsageStrip::default());
        self.size = SizeHint::default();
        self
    }

    /// Ends the stream because the process is shutting down: the stream's error event (a plain
    /// body is cut), and a record for what was delivered.
    fn cut(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.outcome = Outcome::Cut;
        let message =
            "llmux is shutting down: the stream was cut at the end of server.shutdown_grace";
        self.error = Some(message.to_string());
        if let Some(t) = self.transcoder.as_mut() {
            return Poll::Ready(Some(Ok(Frame::data(t.error(message)))));
        }
        Poll::Ready(Some(match self.stream_dialect {
            Some(d) => Ok(Frame::data(
                d.stream_error_event(ErrorKind::Unavailable, message),
            )),
            None => Err(std::io::Error::other(message)),
        }))
    }

    /// Transcodes the stream into the client's dialect instead of passing it through.
    pub fn transcoding(mut self, transcoder: Transcoder) -> Relay {
        self.transcoder = Some(transcoder);
        self.tap = None;
        self.size = SizeHint::default();
        self
    }

    fn data(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.bytes += chunk.len() as u64;
        self.last_data = tokio::time::Instant::now();
        if let Some(c) = self.captured.as_mut() {
            let room = BODY_LOG_LIMIT.saturating_sub(c.len());
            c.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        // With a Content-Length, hyper stops polling once that many bytes went out: the body
        // is complete then, not abandoned.
        if self.size.exact().is_some_and(|n| self.bytes >= n) {
            self.outcome = Outcome::Complete;
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    /// Ends the body honestly: an error event the client's SDK raises on, or a cut
    /// connection for a plain JSON body — never a clean end that reads as success.
    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.outcome = Outcome::Failed;
        // A stream that breaks is the upstream's failure, even though it can no longer be retried.
        let up = self.inflight.upstream();
        if let (Some(open_for), Some(bus)) = (up.breaker.failure(), &self.signals) {
            let kind = crate::peers::signals::SignalKind::BreakerOpened(open_for);
            bus.announce(up, None, kind, &message);
        }
        if let Some(t) = self.transcoder.as_mut() {
            let event = t.error(&message);
            self.error = Some(message);
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
        let reply = match self.stream_dialect {
            Some(_) if self.log.endpoint == crate::endpoint::Endpoint::Responses => Ok(
                Frame::data(llmux_wire::translate::responses::stream_error_event(&message).into()),
            ),
            Some(d) => Ok(Frame::data(
                d.stream_error_event(ErrorKind::BadGateway, &message),
            )),
            None => Err(std::io::Error::other(message.clone())),
        };
        self.error = Some(message);
        Poll::Ready(Some(reply))
    }
}

impl Relay {
    /// The upstream's body ended: the transcoder's last events, or for a passed-through
    /// stream a check that it reached its final event (else the dialect's error event).
    fn ended(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let tail = match self.transcoder.as_mut().map(Transcoder::end) {
            Some(Ok(tail)) => tail,
            Some(Err(msg)) => return self.fail(format!("upstream '{}': {msg}", self.log.upstream)),
            None if self.end_watch.as_ref().is_some_and(|w| !w.ended()) => {
                let msg = format!(
                    "upstream '{}': {}",
                    self.log.upstream,
                    llmux_wire::stream::ending::CUT_SHORT
                );
                return self.fail(msg);
            }
            None => self
                .strip
                .as_mut()
                .map(|s| s.finish().to_vec())
                .unwrap_or_default(),
        };
        self.outcome = Outcome::Complete;
        if tail.is_empty() {
            return Poll::Ready(None);
        }
        self.bytes += tail.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))))
    }

    /// Passthrough: the chunk itself. Transcoding: what the chunk completed, if anything.
    fn transform(&mut self, chunk: Bytes) -> Result<Option<Bytes>, String> {
        match self.transcoder.as_mut() {
            None => {
                // The tap reads what the upstream sent, usage chunk included.
                if let Some(tap) = self.tap.as_mut() {
                    tap.feed(&chunk);
                }
                if let Some(w) = self.end_watch.as_mut() {
                    w.feed(&chunk);
                }
                match self.strip.as_mut() {
                    None => Ok(Some(chunk)),
                    Some(strip) => {
                        let out = strip.apply(chunk);
                        Ok((!out.is_empty()).then_some(out))
                    }
                }
            }
            Some(t) => {
                // Upstream data counts as activity for the idle timer even when it completes no event.
                self.last_data = tokio::time::Instant::now();
                let out = t.chunk(&chunk).map_err(|e| {
                    format!(
                        "upstream '{}' sent a stream llmux cannot read: {e}",
                        self.log.upstream
                    )
                })?;
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            }
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.outcome != Outcome::Streaming {
            return Poll::Ready(None);
        }
        if this.log.cut.is_cancelled() {
            return this.cut();
        }
        if let Some(chunk) = this.first.take() {
            match this.transform(chunk) {
                Ok(Some(out)) => return this.data(out),
                Ok(None) => {}
                Err(msg) => return this.fail(msg),
            }
        }
        loop {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => match this.transform(chunk) {
                    Ok(Some(out)) => return this.data(out),
                    // The chunk completed no event yet: read on.
                    Ok(None) => continue,
                    Err(msg) => return this.fail(msg),
                },
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!(
                        "upstream '{}' failed mid-response: {}",
                        this.log.upstream,
                        crate::upstream_http::root_cause(&e)
                    );
                    return this.fail(msg);
                }
                Poll::Ready(None) => return this.ended(),
                Poll::Pending => {}
            }
            let deadline = crate::deadline::after_tokio(this.last_data, this.idle);
            if this.idle_timer.as_mut().poll(cx).is_pending() {
                // Waiting for the upstream: a shutdown's cut must wake this body too.
                let cut = this
                    .cut_wait
                    .get_or_insert_with(|| Box::pin(this.log.cut.clone().cancelled_owned()));
                if cut.as_mut().poll(cx).is_ready() {
                    return this.cut();
                }
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= deadline {
                let msg = format!(
                    "upstream '{}' stalled: no data for {:?} (timeouts.idle)",
                    this.log.upstream, this.idle
                );
                return this.fail(msg);
            }
            // Data arrived since the timer was armed: re-arm for the real deadline and poll again
            // so the new timer registers this task.
            this.idle_timer.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.outcome != Outcome::Streaming
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let l = &self.log;
        let measured = match self.outcome {
            Outcome::Complete if l.status < 400 => crate::metrics::Outcome::Ok,
            Outcome::Complete if l.status < 500 => crate::metrics::Outcome::ClientError,
            Outcome::Complete | Outcome::Failed => crate::metrics::Outcome::UpstreamError,
            Outcome::Streaming | Outcome::Cut => crate::metrics::Outcome::ClientClosed,
        };
        self.inflight
            .upstream()
            .metrics
            .call(l.endpoint, measured, l.started.elapsed(), l.ttft);
        self.log_call();
        if let Some(draft) = self.log.draft.take() {
            self.settle(draft);
        }
    }
}

impl Relay {
    /// The call's `call` line, once its body is over (or dropped).
    fn log_call(&self) {
        let outcome = match self.outcome {
            Outcome::Complete => "ok",
            Outcome::Failed => "upstream_error",
            Outcome::Cut => "shutdown",
            // Dropped before the end: the client went away; dropping `inner` closes the upstream connection.
            Outcome::Streaming => "client_closed",
        };
        let l = &self.log;
        macro_rules! call_line {
            ($level:ident) => {
                tracing::$level!(
                    request_id = %l.request_id,
                    endpoint = l.endpoint.as_str(),
                    model = %l.model,
                    upstream = %l.upstream,
                    status = l.status,
                    attempts = l.attempts,
                    ttft_ms = l.ttft.as_millis() as u64,
                    duration_ms = l.started.elapsed().as_millis() as u64,
                    bytes = self.bytes,
                    outcome,
                    error = self.error.as_deref().unwrap_or(""),
                    "call"
                )
            };
        }
        // A stream that broke or was cut half-way is a failure, even though it began with a 200.
        match self.outcome {
            Outcome::Failed => call_line!(error),
            Outcome::Cut => call_line!(warn),
            _ if l.status >= 500 => call_line!(warn),
            _ => call_line!(info),
        }
    }

    /// Settles the call's record with what the body delivered.
    fn settle(&mut self, mut draft: Draft) {
        let request_bytes = draft.request_bytes;
        let mut tokens = match (self.tap.as_mut(), self.transcoder.as_ref()) {
            (Some(tap), _) => tap.finish(request_bytes),
            (None, Some(t)) => accounting::from_canonical(t.usage, request_bytes, self.bytes),
            (None, None) => accounting::tokens(None, None, request_bytes, self.bytes),
        };
        if !self.log.endpoint.generates() {
            // Model details or a token count, not a generation: nothing to count.
            tokens = accounting::Tokens::default();
        } else if self.log.endpoint.is_embed() && tokens.estimated {
            // Embeddings produce vectors, not tokens: only the input counts (an OpenAI
            // embeddings answer reports `prompt_tokens` alone).
            tokens.output = 0;
            tokens.estimated = !self.tap.as_ref().is_some_and(UsageTap::input_reported);
        }
        let class = match self.outcome {
            Outcome::Failed => Some("upstream_error"),
            Outcome::Streaming => Some("client_closed"),
            Outcome::Cut => Some("shutdown"),
            Outcome::Complete => None,
        };
        let status = self.log.status;
        let ttft = self.log.ttft;
        if let Some(tap) = self.tap.as_ref() {
            if self.stream_dialect.is_some() {
                draft.record.chunks = Some(tap.chunks());
            }
            draft.record.reported_model = tap.reported_model().map(str::to_string);
        }
        if let Some(t) = self.transcoder.as_ref() {
            draft.record.chunks = Some(t.chunks);
            draft.record.reported_model = t.reported_model.clone();
        }
        draft.finish(status, class, Some(ttft), tokens, self.captured.as_deref());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn strips_only_the_usage_chunk_wherever_the_stream_is_split() {
        let want = STREAM.replace(
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
            "",
        );
        for split in 1..STREAM.len() {
            let (a, b) = STREAM.split_at(split);
            let mut strip = UsageStrip::default();
            let mut out = Vec::new();
            out.extend_from_slice(&strip.apply(Bytes::copy_from_slice(a.as_bytes())));
            out.extend_from_slice(&strip.apply(Bytes::copy_from_slice(b.as_bytes())));
            out.extend_from_slice(&strip.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "split at {split}");
        }
        // Whole events pass through as they are, not copied or held.
        let mut strip = UsageStrip::default();
        let first =
            Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        assert_eq!(strip.apply(first.clone()).as_ptr(), first.as_ptr());
    }
}

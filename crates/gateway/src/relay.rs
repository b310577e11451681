//! The response body handed to the client: upstream bytes pass through untouched as they arrive.
//!
//! It also holds the call's in-flight guard, so the upstream's count drops the moment the
//! body finishes, fails, or is dropped because the client hung up (which also drops the
//! upstream connection and so cancels the upstream call).

use crate::upstream::InFlight;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use wire::{Dialect, ErrorKind};

/// What the access log line says about a call once its response is over.
pub struct CallLog {
    pub request_id: String,
    pub endpoint: &'static str,
    pub model: String,
    pub upstream: String,
    pub status: u16,
    pub attempts: usize,
    pub started: Instant,
    /// Time from the request's arrival to the first upstream bytes.
    pub ttft: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Streaming,
    Complete,
    Failed,
}

pub struct Relay {
    first: Option<Bytes>,
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    /// Armed lazily: chunks only note the time; the timer is re-armed when it fires early.
    idle_timer: Pin<Box<Sleep>>,
    idle: Duration,
    last_data: Instant,
    /// `Some` for SSE / NDJSON responses: a failure is reported as that format's error event.
    stream_dialect: Option<Dialect>,
    size: SizeHint,
    outcome: Outcome,
    error: Option<String>,
    bytes: u64,
    log: CallLog,
    inflight: InFlight,
}

impl Relay {
    pub fn new(
        first: Option<Bytes>,
        inner: BoxStream<'static, reqwest::Result<Bytes>>,
        idle: Duration,
        stream_dialect: Option<Dialect>,
        content_length: Option<u64>,
        log: CallLog,
        inflight: InFlight,
    ) -> Relay {
        let now = Instant::now();
        Relay {
            first,
            inner,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            idle,
            last_data: now,
            stream_dialect,
            size: content_length.map_or_else(SizeHint::default, SizeHint::with_exact),
            outcome: Outcome::Streaming,
            error: None,
            bytes: 0,
            log,
            inflight,
        }
    }

    fn data(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.bytes += chunk.len() as u64;
        self.last_data = Instant::now();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    /// Ends the body honestly: an error event the client's SDK raises on, or a cut
    /// connection for a plain JSON body — never a clean end that reads as success.
    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.outcome = Outcome::Failed;
        // A stream that breaks is the upstream's failure, even though it can no longer be retried.
        let _ = self.inflight.upstream().breaker.failure();
        let reply = match self.stream_dialect {
            Some(d) => Ok(Frame::data(
                d.stream_error_event(ErrorKind::BadGateway, &message),
            )),
            None => Err(std::io::Error::other(message.clone())),
        };
        self.error = Some(message);
        Poll::Ready(Some(reply))
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
        if let Some(chunk) = this.first.take() {
            return this.data(chunk);
        }
        loop {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => return this.data(chunk),
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!(
                        "upstream '{}' failed mid-response: {}",
                        this.log.upstream,
                        root_cause(&e)
                    );
                    return this.fail(msg);
                }
                Poll::Ready(None) => {
                    this.outcome = Outcome::Complete;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            let deadline = this.last_data + this.idle;
            if this.idle_timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                let msg = format!(
                    "upstream '{}' stalled: no data for {:?} (timeouts.idle)",
                    this.log.upstream, this.idle
                );
                return this.fail(msg);
            }
            // Data arrived since the timer was armed: re-arm for the real deadline and poll again
            // so the new timer registers this task.
            this.idle_timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
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
        let outcome = match self.outcome {
            Outcome::Complete => "ok",
            Outcome::Failed => "upstream_error",
            // Dropped before the end: the client went away; dropping `inner` closes the upstream connection.
            Outcome::Streaming => "client_closed",
        };
        let l = &self.log;
        tracing::info!(
            request_id = %l.request_id,
            endpoint = l.endpoint,
            model = %l.model,
            upstream = %l.upstream,
            status = l.status,
            attempts = l.attempts,
            ttft_ms = l.ttft.as_secs_f64() * 1000.0,
            duration_ms = l.started.elapsed().as_secs_f64() * 1000.0,
            bytes = self.bytes,
            outcome,
            error = self.error.as_deref().unwrap_or(""),
            "call"
        );
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

//! The send stage: one attempt's request to one candidate, up to the answer's first bytes
//! (bounded by `timeouts.first_byte`). An error status is read (a little) and classified here.

use super::failure::{classify_status, Failure};
use super::prepare::{Prepared, Translated};
use super::{Call, Failed, Reply};
use crate::keys::KeyPick;
use crate::routing::Candidate;
use crate::upstream::{InFlight, Upstream};
use crate::upstream_http::{BodyError, BodyStream};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use llmux_config::UpstreamKind;
use std::time::{Duration, Instant};

/// Response headers of the upstream that are worth passing on; the rest (hop-by-hop, server,
/// provider internals) stay behind.
const PASSED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
];

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("llmux/", env!("CARGO_PKG_VERSION")));

/// Error bodies of failed attempts are kept (to hand back if every option fails) up to this size.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// An upstream answer whose first bytes (or end) arrived within the first-byte deadline.
pub(super) struct Sent {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub content_length: Option<u64>,
    pub first: Option<Bytes>,
    pub stream: BodyStream,
    /// Counts the call in flight at the upstream until the answer is over.
    pub guard: InFlight,
    /// When the request was sent.
    pub at: Instant,
    pub translated: Option<Translated>,
    pub added_usage: bool,
}

impl Call {
    /// Sends `prepared` to `cand` with `key`. `Err`: the attempt failed before any byte could
    /// reach the client (no answer in time, a broken connection, a redirect, an error status
    /// that is not the client's own).
    pub(super) async fn send(
        &self,
        cand: &Candidate,
        key: Option<KeyPick>,
        prepared: Prepared,
        trace: Option<crate::telemetry::TraceContext>,
    ) -> Result<Sent, Failed> {
        let up = &cand.upstream;
        let guard = up.begin();
        let (translated, added_usage) = (prepared.translated, prepared.added_usage);
        let request = self.request(up, key, prepared, trace);
        let at = Instant::now();
        let limits = Deadlines::from_now(up);
        let (deadline, total) = (limits.first, limits.total);
        let resp = match tokio::time::timeout_at(deadline, up.call_client().request(request)).await
        {
            Err(_) => return Err(Failed::upstream(limits.late("no response"))),
            Ok(Err(e)) => {
                let reason = crate::upstream_http::describe(&e);
                if e.is_connect() {
                    up.mark_down(&reason);
                }
                return Err(Failed::upstream(reason));
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        if status.is_redirection() {
            // Redirects are never followed (a key must not travel to another host), and a 3xx
            // is no answer for the client: the upstream failed this attempt.
            let reason = format!(
                "HTTP {} redirect from the upstream (not followed)",
                status.as_u16()
            );
            return Err(Failed::upstream(reason));
        }
        let (parts, body) = resp.into_parts();
        // hyper knows it from `Content-Length` (exact), or that there is none (chunked).
        let content_length = http_body::Body::size_hint(&body).exact();
        let mut stream = crate::upstream_http::body_stream(body, total);
        self.unless_failed(&parts, &mut stream, deadline, translated, &up.name)
            .await?;
        let headers = pick_headers(&parts.headers);
        // Nothing has reached the client yet: wait for the first bytes too, so a node that
        // answers headers and then dies is still retried elsewhere.
        let first = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(Failed::upstream(limits.late("no data"))),
            Ok(Some(Err(e))) => return Err(Failed::upstream(format!("response body failed: {e}"))),
            Ok(Some(Ok(chunk))) => Some(chunk),
            Ok(None) => None,
        };
        // The upstream answered (a client error is still an answer): good for its breaker.
        up.breaker.success();
        if status.is_success() {
            up.record_ttft(at.elapsed());
            up.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if up.kind == UpstreamKind::Ollama && self.endpoint.loads_model() {
                up.mark_loaded(&cand.model);
            }
        }
        Ok(Sent {
            status,
            headers,
            content_length,
            first,
            stream,
            guard,
            at,
            translated,
            added_usage,
        })
    }

    /// The HTTP request of `prepared` for `up`, with the key's credentials, the trace context
    /// and the headers passed on from the client.
    fn request(
        &self,
        up: &Upstream,
        key: Option<KeyPick>,
        prepared: Prepared,
        trace: Option<crate::telemetry::TraceContext>,
    ) -> http::Request<Full<Bytes>> {
        let mut call = http::Request::new(Full::new(prepared.body));
        *call.method_mut() = http::Method::POST;
        *call.uri_mut() = prepared.url;
        let headers = call.headers_mut();
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(header::USER_AGENT, USER_AGENT);
        let secret = key.and_then(|k| up.keys.get(k)).map(|k| k.secret.expose());
        crate::egress::authorize_headers(headers, up, secret);
        for (name, value) in &self.hook_headers {
            headers.append(name.clone(), value.clone());
        }
        if let Some(t) = trace {
            if let Ok(v) = HeaderValue::from_str(&t.header()) {
                headers.insert(HeaderName::from_static("traceparent"), v);
            }
        }
        if up.kind == UpstreamKind::Anthropic {
            if let Some(beta) = &self.anthropic_beta {
                headers.insert(HeaderName::from_static("anthropic-beta"), beta.clone());
            }
        }
        call
    }

    /// `resp` unless its status is a failure of the upstream or the key (the client's own
    /// errors are answers); the failure keeps the start of the error body, in the client's
    /// dialect, to hand back if nothing better comes of the retries.
    async fn unless_failed(
        &self,
        resp: &http::response::Parts,
        stream: &mut BodyStream,
        deadline: tokio::time::Instant,
        translated: Option<Translated>,
        upstream: &str,
    ) -> Result<(), Failed> {
        let status = resp.status;
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        let Some(mut failure) = classify_status(status, retry_after) else {
            return Ok(());
        };
        let mut headers = pick_headers(&resp.headers);
        let body = tokio::time::timeout_at(deadline, read_limited(stream, ERROR_BODY_LIMIT))
            .await
            .unwrap_or_default();
        if status == StatusCode::TOO_MANY_REQUESTS && failure.retry_after.is_none() {
            retry_hint(&body, &mut failure, &mut headers);
        }
        let (headers, body) = self.client_error(translated, status, headers, body);
        Err(Failed {
            failure,
            reason: format!("HTTP {}", status.as_u16()),
            reply: Some(Reply {
                status,
                headers,
                body,
                upstream: upstream.to_string(),
            }),
        })
    }
}

/// An attempt's deadlines, on tokio's clock (so they follow paused time in tests): until the
/// first bytes (`timeouts.first_byte`, or `timeouts.total` when that comes first), and the
/// end of the answer (`timeouts.total`).
struct Deadlines {
    first: tokio::time::Instant,
    first_byte: Duration,
    total: Option<(tokio::time::Instant, Duration)>,
}

impl Deadlines {
    fn from_now(up: &Upstream) -> Deadlines {
        let now = tokio::time::Instant::now();
        let first_byte = up.timeouts.first_byte;
        let total = up
            .timeouts
            .total
            .map(|limit| (crate::deadline::after_tokio(now, limit), limit));
        let first_byte_at = crate::deadline::after_tokio(now, first_byte);
        Deadlines {
            first: total.map_or(first_byte_at, |(t, _)| t.min(first_byte_at)),
            first_byte,
            total,
        }
    }

    /// Why the first deadline passed: "`what` within …" and the key that set it.
    fn late(&self, what: &str) -> String {
        match self.total {
            Some((t, limit)) if t <= self.first => {
                format!("{what} within {limit:?} (timeouts.total)")
            }
            _ => format!("{what} within {:?} (timeouts.first_byte)", self.first_byte),
        }
    }
}

/// A 429 without `Retry-After` whose body says when to retry (Gemini's `RetryInfo`): the key
/// rests that long, and the client gets the hint as `Retry-After` (whole seconds, rounded up).
fn retry_hint(body: &[u8], failure: &mut Failure, headers: &mut Vec<(HeaderName, HeaderValue)>) {
    let Some(secs) = llmux_wire::gemini::retry_delay(body) else {
        return;
    };
    let max = llmux_config::MAX_DURATION;
    let delay = Duration::try_from_secs_f64(secs).unwrap_or(max).min(max);
    failure.retry_after = Some(delay);
    let whole = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    headers.push((header::RETRY_AFTER, HeaderValue::from(whole)));
}

/// Why a whole upstream answer could not be read.
pub(crate) enum WholeError {
    /// The connection broke mid-body (or `timeouts.total` passed).
    Broken(BodyError),
    /// No data for `timeouts.idle`.
    Stalled,
    /// Longer than `server.max_upstream_body` (declared or as it arrived).
    TooLarge,
}

/// Reads an answer whole (to translate it): each chunk within `idle`, at most `limit` bytes.
pub(crate) async fn read_whole(
    first: Option<Bytes>,
    stream: &mut BodyStream,
    declared: Option<u64>,
    idle: std::time::Duration,
    limit: usize,
) -> Result<Vec<u8>, WholeError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(WholeError::TooLarge);
    }
    let first = first.unwrap_or_default();
    if first.len() > limit {
        return Err(WholeError::TooLarge);
    }
    // The declared length saves regrowing the buffer, but only up to 1 MiB: memory is spent
    // on bytes that arrived, not on what an upstream claims it will send.
    let capacity = declared.map_or(0, |n| (n as usize).min(1 << 20));
    let mut body = Vec::with_capacity(capacity.max(first.len()));
    body.extend_from_slice(&first);
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(WholeError::Stalled),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => return Err(WholeError::Broken(e)),
            Ok(Some(Ok(chunk))) => {
                if chunk.len() > limit - body.len() {
                    return Err(WholeError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// The start of an error body, at most `limit` bytes; the rest is not read. Callers bound the
/// time too (the attempt's first-byte deadline), so a trickling error body cannot hold a call.
async fn read_limited(stream: &mut BodyStream, limit: usize) -> Bytes {
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

fn pick_headers(from: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    PASSED_HEADERS
        .iter()
        .filter_map(|name| from.get(name).map(|v| (name.clone(), v.clone())))
        .collect()
}

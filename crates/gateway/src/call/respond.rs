//! The respond stage: an upstream answer on its way to the client — relayed as it streams
//! (passed through, or transcoded event by event), or read whole and translated (a chat
//! answer, an error, embeddings). The call's record leaves the context here.

use super::prepare::Translated;
use super::send::{read_whole, Sent, WholeError};
use super::{error, Call, Failed, Outcome};
use crate::accounting::{self, AttemptRecord, Draft, Tokens};
use crate::keys::KeyPick;
use crate::relay::{CallLog, Relay, Transcoder};
use crate::routing::Candidate;
use crate::upstream::Upstream;
use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use llmux_wire::canonical::{ChatResponse, Op, StreamEncoder, StreamEvent, TranslateError};
use llmux_wire::stream::ending::EndWatch;
use llmux_wire::translate::{self, embed};
use llmux_wire::{Dialect, ErrorKind};
use std::sync::Arc;
use std::time::Duration;

/// A whole answer read from the upstream.
pub(super) struct Whole {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    pub ttft: Duration,
}

impl Call {
    /// Answers the client with `sent`, the answer of `cand` (asked for `target`) with `key`.
    pub(super) async fn respond(
        &mut self,
        cand: &Candidate,
        key: Option<KeyPick>,
        target: &str,
        sent: Sent,
    ) -> Outcome {
        let up = &cand.upstream;
        let ttft = self.started.elapsed();
        let status = sent.status.as_u16();
        self.answering(|| AttemptRecord {
            upstream: up.name.clone(),
            key_id: key.and_then(|k| up.keys.get(k)).map(|k| k.id.clone()),
            status: Some(status),
            error_class: accounting::status_class(status).map(str::to_string),
            ms: sent.at.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
        });
        let upstream_streams = stream_format(&sent.headers).is_some();
        let Some(t) = sent.translated else {
            if self.capture && sent.status.is_success() && !upstream_streams {
                // The response cache keeps this answer: read whole rather than relayed.
                return self.pass_whole(up, target, sent, ttft).await;
            }
            return Outcome::Done(self.pass_through(up, target, sent, ttft));
        };
        if sent.status.is_success() && t.stream && upstream_streams {
            return Outcome::Done(self.transcode(up, target, t, sent, ttft));
        }
        let whole = match self.read_answer(up, target, sent, ttft).await {
            Ok(w) => w,
            Err(outcome) => return outcome,
        };
        self.translate_whole(up, target, t, whole)
    }

    /// A whole answer read from the upstream: nothing has reached the client yet, so a body
    /// that breaks or stalls now can still be retried elsewhere (`Err`: the attempt's outcome).
    pub(super) async fn read_answer(
        &mut self,
        up: &Arc<Upstream>,
        target: &str,
        sent: Sent,
        ttft: Duration,
    ) -> Result<Whole, Outcome> {
        let limit = self.routes.config.server.max_upstream_body;
        let idle = up.timeouts.idle;
        let Sent {
            status,
            headers,
            content_length,
            first,
            mut stream,
            guard,
            ..
        } = sent;
        let body = match read_whole(first, &mut stream, content_length, idle, limit).await {
            Ok(body) => body,
            Err(WholeError::Broken(e)) => {
                return Err(Outcome::Failed(Failed::upstream(format!(
                    "response body failed: {e}"
                ))))
            }
            Err(WholeError::Stalled) => {
                let reason = format!("upstream stalled: no data for {idle:?} (timeouts.idle)");
                return Err(Outcome::Failed(Failed::upstream(reason)));
            }
            Err(WholeError::TooLarge) => {
                return Err(Outcome::Done(self.too_large(up, target, ttft)))
            }
        };
        drop(guard);
        Ok(Whole {
            status,
            headers,
            body,
            ttft,
        })
    }

    /// Notes the attempt whose answer is arriving in the record's attempt log (see
    /// [`Call::log_attempt`] for when its whole answer then fails).
    fn answering(&mut self, answered: impl FnOnce() -> AttemptRecord) {
        if let Some(d) = self.draft.as_mut() {
            d.record.attempts = self.attempts as u32;
            d.record.attempt_log.push(answered());
            self.answering = true;
        }
    }

    /// The record, for whoever answers the client now.
    pub(super) fn take_draft(&mut self) -> Option<Draft> {
        self.answering = false;
        self.draft.take()
    }

    /// The facts the relay logs and settles the call with when the body ends.
    fn call_log(&mut self, up: &Upstream, target: &str, status: u16, ttft: Duration) -> CallLog {
        CallLog {
            request_id: self.request_id.clone(),
            endpoint: self.endpoint,
            model: target.to_string(),
            upstream: up.name.clone(),
            status,
            attempts: self.attempts,
            started: self.started,
            ttft,
            draft: self.take_draft(),
            cut: self.gw.accounting.streams_cut.clone(),
        }
    }

    /// The upstream speaks the client's dialect: its bytes are relayed as they come.
    fn pass_through(
        &mut self,
        up: &Arc<Upstream>,
        target: &str,
        sent: Sent,
        ttft: Duration,
    ) -> Response<Body> {
        let log = self.call_log(up, target, sent.status.as_u16(), ttft);
        // An SSE stream of Anthropic's or Gemini's: a failure ends it with that dialect's
        // error event (Anthropic's SDK reads only `event: error`), not OpenAI's.
        let format = stream_format(&sent.headers).map(|f| match (f, self.dialect()) {
            (Dialect::OpenAi, d @ (Dialect::Anthropic | Dialect::Gemini)) => d,
            (f, _) => f,
        });
        let Sent {
            status, headers, ..
        } = sent;
        let mut relay = Relay::new(
            sent.first,
            sent.stream,
            up.timeouts.idle,
            format,
            sent.content_length,
            log,
            sent.guard,
        )
        .announcing(self.gw.peers.signals.get());
        if sent.added_usage && status.is_success() && format == Some(Dialect::OpenAi) {
            relay = relay.stripping_usage();
        }
        if status.is_success() && format.is_some() && self.endpoint.op().is_some() {
            let responses = self.endpoint == super::Endpoint::Responses;
            relay = relay.watching_end(EndWatch::new(self.endpoint.dialect(), responses));
        }
        let mut out = Response::new(Body::new(relay));
        *out.status_mut() = status;
        self.decorate(&mut out, headers, &up.name, Some(target), true);
        out
    }

    /// A stream in another dialect: transcoded event by event as the upstream produces them;
    /// never collected first.
    fn transcode(
        &mut self,
        up: &Arc<Upstream>,
        target: &str,
        t: Translated,
        sent: Sent,
        ttft: Duration,
    ) -> Response<Body> {
        let status = sent.status;
        let log = self.call_log(up, target, status.as_u16(), ttft);
        let encoder = ingress_encoder(self.endpoint, self.gemini_sse, t.op, t.include_usage);
        let content_type = encoder.content_type();
        let transcoder = Transcoder::new(translate::codec(t.upstream).stream_decoder(), encoder);
        let ingress = Some(self.dialect());
        let idle = up.timeouts.idle;
        let relay = Relay::new(
            sent.first,
            sent.stream,
            idle,
            ingress,
            None,
            log,
            sent.guard,
        )
        .announcing(self.gw.peers.signals.get())
        .transcoding(transcoder);
        let mut out = Response::new(Body::new(relay));
        *out.status_mut() = status;
        let headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
        self.decorate(&mut out, headers, &up.name, Some(target), true);
        out
    }

    /// Not a sick upstream, and no use asking another: the same request would get an answer
    /// as large. Refused whole, without a retry or a breaker failure.
    fn too_large(&mut self, up: &Upstream, target: &str, ttft: Duration) -> Response<Body> {
        let limit = self.routes.config.server.max_upstream_body;
        let message = format!(
            "upstream '{}' answered with more than {limit} bytes, the most llmux holds \
             to translate an answer (server.max_upstream_body)",
            up.name
        );
        tracing::warn!(request_id = %self.request_id, upstream = %up.name, limit, "upstream answer too large to translate");
        let elapsed = self.started.elapsed();
        let outcome = crate::metrics::Outcome::UpstreamError;
        up.metrics.call(self.endpoint, outcome, elapsed, ttft);
        let kind = ErrorKind::BadGateway;
        if let Some(d) = self.take_draft() {
            let class = Some("upstream_error");
            d.finish(kind.status(), class, Some(ttft), Tokens::default(), None);
        }
        let mut out = error(self.dialect(), kind, message);
        self.decorate(&mut out, Vec::new(), &up.name, Some(target), false);
        out
    }

    /// A whole answer in the upstream's dialect, in the client's.
    fn translate_whole(&mut self, up: &Upstream, target: &str, t: Translated, w: Whole) -> Outcome {
        let status = w.status;
        if !status.is_success() {
            if let Some(d) = self.take_draft() {
                let code = status.as_u16();
                d.finish(code, None, Some(w.ttft), Tokens::default(), Some(&w.body));
            }
            let (headers, body) =
                self.client_error(Some(t), status, w.headers, Bytes::from(w.body));
            let mut out = Response::new(Body::from(body));
            *out.status_mut() = status;
            self.decorate(&mut out, headers, &up.name, Some(target), false);
            return Outcome::Done(out);
        }
        if t.embed.is_some() {
            return self.embeddings(up, target, t, w);
        }
        let answer = match translate::codec(t.upstream).decode_response(&w.body) {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("upstream answer could not be read: {e}");
                return Outcome::Failed(Failed::upstream(reason));
            }
        };
        self.capture_translated(&t, target, &answer);
        let (content_type, bytes) = if t.stream {
            // The client asked for a stream but the upstream answered whole: replay it as events.
            let mut encoder =
                ingress_encoder(self.endpoint, self.gemini_sse, t.op, t.include_usage);
            let mut out = Vec::new();
            for event in answer_events(&answer) {
                encoder.encode(&event, &mut out);
            }
            encoder.finish(&mut out);
            (encoder.content_type(), out)
        } else {
            let json = self.endpoint.codec().encode_response(t.op, &answer);
            ("application/json", json)
        };
        self.log_translated(up, target, status, &answer);
        if let Some(mut d) = self.take_draft() {
            if !answer.model.is_empty() {
                let m = accounting::cap(&answer.model, accounting::MAX_CLIENT_STRING);
                d.record.reported_model = Some(m.to_string());
            }
            let tokens =
                accounting::from_canonical(Some(answer.usage), d.request_bytes, bytes.len() as u64);
            d.finish(status.as_u16(), None, Some(w.ttft), tokens, Some(&bytes));
        }
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        let headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
        self.decorate(&mut out, headers, &up.name, Some(target), true);
        Outcome::Done(out)
    }

    /// The metrics and the call line of a translated whole answer.
    fn log_translated(&self, up: &Upstream, target: &str, status: StatusCode, a: &ChatResponse) {
        let elapsed = self.started.elapsed();
        let ok = crate::metrics::Outcome::Ok;
        up.metrics.call(self.endpoint, ok, elapsed, elapsed);
        up.metrics
            .tokens(a.usage.input_tokens, a.usage.output_tokens);
        tracing::info!(
            request_id = %self.request_id,
            endpoint = self.endpoint.as_str(),
            model = %target,
            upstream = %up.name,
            status = status.as_u16(),
            attempts = self.attempts,
            input_tokens = a.usage.input_tokens,
            output_tokens = a.usage.output_tokens,
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = "ok",
            "call"
        );
    }

    /// An upstream's embeddings answer, in the client's dialect.
    fn embeddings(&mut self, up: &Upstream, target: &str, t: Translated, w: Whole) -> Outcome {
        let bytes = match self.translate_embeddings(t, target, &w.body) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("upstream answer could not be read: {e}");
                return Outcome::Failed(Failed::upstream(reason));
            }
        };
        if let Some(d) = self.take_draft() {
            let mut tap = accounting::UsageTap::new(None);
            tap.feed(&Bytes::from(w.body));
            let mut tokens = tap.finish(d.request_bytes);
            if tokens.estimated {
                // Embeddings produce no text: only the input counts.
                tokens.output = 0;
            }
            d.finish(w.status.as_u16(), None, Some(w.ttft), tokens, None);
        }
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = w.status;
        let headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        self.decorate(&mut out, headers, &up.name, Some(target), false);
        Outcome::Done(out)
    }

    fn translate_embeddings(
        &self,
        t: Translated,
        target: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, TranslateError> {
        let mut resp = match t.upstream {
            Dialect::OpenAi => embed::decode_openai_response(body),
            Dialect::Ollama => embed::decode_ollama_response(body),
            Dialect::Gemini => embed::decode_gemini_batch_response(body),
            Dialect::Anthropic => Err(TranslateError::new("", "Anthropic has no embeddings API")),
        }?;
        // Gemini's answer names no model and (outside Vertex) counts no tokens: the client
        // still gets the model it was served by and an estimate of its input.
        if resp.model.is_empty() {
            resp.model = target.to_string();
        }
        if resp.input_tokens == 0 {
            if let Some(d) = self.draft.as_ref() {
                resp.input_tokens = accounting::estimate_tokens(d.request_bytes);
            }
        }
        Ok(match self.endpoint {
            super::Endpoint::Embeddings => {
                embed::encode_openai_response(&resp, t.embed.unwrap_or_default())
            }
            super::Endpoint::OllamaEmbed => embed::encode_ollama_response(&resp),
            super::Endpoint::OllamaEmbeddings => embed::encode_ollama_legacy_response(&resp),
            super::Endpoint::GeminiEmbed => embed::encode_gemini_response(&resp),
            _ => embed::encode_gemini_batch_response(&resp),
        })
    }

    /// An upstream error body as the client's dialect spells it (unchanged on passthrough).
    pub(super) fn client_error(
        &self,
        translated: Option<Translated>,
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> (Vec<(HeaderName, HeaderValue)>, Bytes) {
        let Some(t) = translated else {
            return (headers, body);
        };
        let message = translate::codec(t.upstream)
            .error_message(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
        let kind = kind_for_status(status);
        let rendered = self.dialect().error_body(kind, &message);
        let mut out = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        out.extend(
            headers
                .into_iter()
                .filter(|(n, _)| n == header::RETRY_AFTER),
        );
        (out, Bytes::from(rendered))
    }
}

/// The client-side stream encoder; OpenAI's needs to know whether usage was asked for, and
/// Gemini's is a JSON array unless the client asked for `alt=sse`.
pub(super) fn ingress_encoder(
    endpoint: super::Endpoint,
    gemini_sse: bool,
    op: Op,
    include_usage: bool,
) -> Box<dyn StreamEncoder> {
    match endpoint.dialect() {
        Dialect::OpenAi if endpoint != super::Endpoint::Responses => {
            translate::openai::OpenAiCodec.stream_encoder_with(op, include_usage)
        }
        Dialect::Gemini if !gemini_sse => Box::new(translate::json_array::JsonArrayEncoder::new(
            endpoint.codec().stream_encoder(op),
        )),
        _ => endpoint.codec().stream_encoder(op),
    }
}

/// A whole answer as the events a stream of it would have carried.
pub(super) fn answer_events(a: &ChatResponse) -> Vec<StreamEvent> {
    use StreamEvent as E;
    let mut events = vec![E::Start {
        id: a.id.clone(),
        model: a.model.clone(),
    }];
    if !a.text.is_empty() {
        events.push(E::Text(a.text.clone()));
    }
    for (index, call) in a.tool_calls.iter().enumerate() {
        events.push(E::ToolCallStart {
            index,
            id: call.id.clone(),
            name: call.name.clone(),
        });
        events.push(E::ToolCallArgs {
            index,
            fragment: call.arguments.clone(),
        });
    }
    events.push(E::Finish(a.finish.clone()));
    events.push(E::Usage(a.usage));
    events
}

/// The error kind whose status is `status`, for re-rendering an upstream error.
fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        402 | 403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::ModelNotFound,
        413 => ErrorKind::PayloadTooLarge,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Unavailable,
        504 => ErrorKind::Timeout,
        500..=599 => ErrorKind::BadGateway,
        _ => ErrorKind::InvalidRequest,
    }
}

/// The streaming format of a response, judged by what the upstream actually sent.
fn stream_format(headers: &[(HeaderName, HeaderValue)]) -> Option<Dialect> {
    let ct = headers
        .iter()
        .find(|(n, _)| n == header::CONTENT_TYPE)
        .and_then(|(_, v)| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        Some(Dialect::OpenAi)
    } else if ct.starts_with("application/x-ndjson") {
        Some(Dialect::Ollama)
    } else {
        None
    }
}

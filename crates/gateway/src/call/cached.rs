//! The cache stage (`[cache]`, docs/cache.md), around the plan: a call the cache covers is
//! answered from it when it can be (whole, or replayed as a stream in the caller's dialect),
//! joins an identical whole call in flight (coalescing), or goes upstream and leaves its whole
//! answer behind. A call the cache does not cover goes straight to the plan: nothing here
//! decodes or hashes it.

use super::prepare::Translated;
use super::respond::{answer_events, ingress_encoder};
use super::send::Sent;
use super::{Call, Endpoint, Outcome as Attempt, Shown};
use crate::accounting::{self, Tokens};
use crate::cache::{self, Cache, Directive, Entry, Flight, Found, Outcome, X_LLMUX_CACHE};
use crate::upstream::Upstream;
use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

impl Call {
    /// The plan, through the cache when `[cache]` covers this call.
    pub(super) async fn run_cached(
        &mut self,
        model: &str,
        targets: &[String],
        directive: Directive,
    ) -> Response<Body> {
        let routes = Arc::clone(&self.routes);
        let config = &routes.config.cache;
        if !config.covers(model) || self.endpoint.op().is_none() {
            return self.run(model, targets).await;
        }
        let Some(key) = cache::key_for(self.endpoint, model, &self.body) else {
            return self.run(model, targets).await;
        };
        let stream = self.wants_stream();
        let cache = &self.gw.cache;
        if directive.no_read {
            let fill = !directive.no_write && !stream;
            return self
                .upstream(model, targets, key, fill, Outcome::Bypass)
                .await;
        }
        match cache.get(config, &key).await {
            Found::Hit(entry) => return self.hit(&entry, stream),
            Found::Unavailable => {
                return self
                    .upstream(model, targets, key, false, Outcome::Bypass)
                    .await
            }
            Found::Miss => {}
        }
        if stream || !config.coalesce {
            // A streamed miss is relayed as it comes and not kept (docs/cache.md).
            return self
                .upstream(model, targets, key, !stream, Outcome::Miss)
                .await;
        }
        match Cache::flight(&self.gw, key) {
            Flight::Follower(rx) => match cache::follow(rx).await {
                Some(entry) => self.hit(&entry, false),
                // The leader had no answer to share: this call asks the upstream itself.
                None => {
                    self.upstream(model, targets, key, true, Outcome::Miss)
                        .await
                }
            },
            Flight::Leader(leader) => {
                // An identical call may have filled the cache since the lookup above.
                if let Found::Hit(entry) = cache.get(config, &key).await {
                    leader.publish(Some(Arc::clone(&entry)));
                    return self.hit(&entry, false);
                }
                let resp = self
                    .upstream(model, targets, key, true, Outcome::Miss)
                    .await;
                leader.publish(self.stored.take());
                resp
            }
        }
    }

    /// Whether the client asked for a streamed answer.
    fn wants_stream(&self) -> bool {
        self.endpoint == Endpoint::GeminiStream
            || self
                .peek
                .stream
                .unwrap_or(self.endpoint.streams_by_default())
    }

    /// The call goes to the plan; with `fill`, its whole successful answer is kept under `key`
    /// (and left in `self.stored` for the followers of a coalesced call).
    async fn upstream(
        &mut self,
        model: &str,
        targets: &[String],
        key: [u8; 32],
        fill: bool,
        outcome: Outcome,
    ) -> Response<Body> {
        self.gw.cache.count(outcome);
        self.capture = fill;
        let mut resp = self.run(model, targets).await;
        self.capture = false;
        let captured = self.captured.take().filter(|e| {
            resp.status() == StatusCode::OK && cache::cacheable_finish(&e.answer.finish)
        });
        if let Some(entry) = captured {
            let entry = Arc::new(entry);
            let routes = Arc::clone(&self.routes);
            self.gw
                .cache
                .put(&routes.config.cache, &key, Arc::clone(&entry))
                .await;
            self.stored = Some(entry);
        }
        resp.headers_mut()
            .insert(X_LLMUX_CACHE, HeaderValue::from_static(outcome.as_str()));
        resp
    }

    /// The answer from the cache, in the caller's dialect: whole, or as the events a stream of
    /// it would have carried. Free: its record has no upstream, no tokens and no cost.
    fn hit(&mut self, entry: &Entry, stream: bool) -> Response<Body> {
        self.gw.cache.count(Outcome::Hit);
        let op = self
            .endpoint
            .op()
            .unwrap_or(llmux_wire::canonical::Op::Chat);
        let (content_type, bytes) = if stream {
            let include_usage = self.peek.include_usage;
            let mut encoder = ingress_encoder(self.endpoint, self.gemini_sse, op, include_usage);
            let mut out = Vec::new();
            for event in answer_events(&entry.answer) {
                encoder.encode(&event, &mut out);
            }
            encoder.finish(&mut out);
            (encoder.content_type(), out)
        } else {
            let json = self.endpoint.codec().encode_response(op, &entry.answer);
            ("application/json", json)
        };
        if let Some(mut d) = self.draft.take() {
            d.record.cache_hit = true;
            d.record.attempts = 0;
            if !entry.answer.model.is_empty() {
                let m = accounting::cap(&entry.answer.model, accounting::MAX_CLIENT_STRING);
                d.record.reported_model = Some(m.to_string());
            }
            let ttft = Some(self.started.elapsed());
            d.finish(200, None, ttft, Tokens::default(), Some(&bytes));
        }
        tracing::debug!(request_id = %self.request_id, model = %entry.model, stream, "answered from the response cache");
        let mut out = Response::new(Body::from(bytes));
        if stream {
            out.extensions_mut().insert(crate::compress::AsStream);
        }
        let h = out.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&entry.model) {
            h.insert(crate::X_LLMUX_MODEL, v);
        }
        h.insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(0u32));
        h.insert(X_LLMUX_CACHE, HeaderValue::from_static("hit"));
        self.shown = Shown {
            model: Some(entry.model.clone()),
            upstream: None,
            attempts: 0,
        };
        out
    }

    /// A passthrough answer the cache wants to keep: read whole (never a stream), kept in
    /// `self.captured` when it reads as a chat answer, and handed to the client as it came.
    pub(super) async fn pass_whole(
        &mut self,
        up: &Arc<Upstream>,
        target: &str,
        sent: Sent,
        ttft: Duration,
    ) -> Attempt {
        let w = match self.read_answer(up, target, sent, ttft).await {
            Ok(w) => w,
            Err(outcome) => return outcome,
        };
        let decoded = self.endpoint.codec().decode_response(&w.body).ok();
        let elapsed = self.started.elapsed();
        up.metrics
            .call(self.endpoint, crate::metrics::Outcome::Ok, elapsed, w.ttft);
        // The upstream's own usage report, as the relay would have read it.
        let mut tap = accounting::UsageTap::new(None);
        tap.feed(&Bytes::copy_from_slice(&w.body));
        let tokens = tap.finish(self.body.len() as u64);
        up.metrics.tokens(tokens.input, tokens.output);
        if let Some(mut d) = self.take_draft() {
            d.record.reported_model = tap.reported_model().map(str::to_string);
            d.finish(w.status.as_u16(), None, Some(w.ttft), tokens, Some(&w.body));
        }
        if let Some(answer) = decoded {
            self.captured = Some(Entry {
                model: target.to_string(),
                answer,
            });
        }
        let mut out = Response::new(Body::from(w.body));
        *out.status_mut() = w.status;
        self.decorate(&mut out, w.headers, &up.name, Some(target), false);
        Attempt::Done(out)
    }

    /// Notes a translated whole answer for the cache, when this call fills it.
    pub(super) fn capture_translated(
        &mut self,
        t: &Translated,
        target: &str,
        answer: &llmux_wire::canonical::ChatResponse,
    ) {
        if self.capture && !t.stream && t.embed.is_none() {
            self.captured = Some(Entry {
                model: target.to_string(),
                answer: answer.clone(),
            });
        }
    }
}

//! The `call` log line: one per finished call, written by whoever answered it — the relay when
//! a streamed body ends, the whole-answer path, or [`CallLine`] for every other answer.

use super::Endpoint;
use crate::RequestId;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Response;
use std::time::Instant;

/// Marks a response whose call line is logged elsewhere (by the relay when its body ends, or by
/// the whole-answer path): every other answer of a model call is logged by [`CallLine`].
#[derive(Clone, Copy)]
pub(super) struct CallLogged;

/// What an answer's `x-llmux-*` headers say (the model and upstream only when they were set).
#[derive(Debug, Default)]
pub(super) struct Shown {
    pub model: Option<String>,
    pub upstream: Option<String>,
    pub attempts: u64,
}

/// The `call` line of a call refused before its handler ran (a missing or wrong key, a per-IP,
/// global or key-concurrency limit): every finished call logs one line, these too.
pub(crate) fn log_refused(req: &Request, resp: &Response<Body>) {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map_or("", |r| r.0.as_str());
    tracing::info!(
        request_id,
        endpoint = req.uri().path(),
        model = "",
        upstream = "",
        status = resp.status().as_u16(),
        attempts = 0u64,
        duration_ms = 0u64,
        outcome = "refused",
        "call"
    );
}

/// The `call` line of a call answered by the handler (not by the relay): written when the
/// answer is ready, or on drop as `client_closed` when the client went away before that.
pub(super) struct CallLine {
    request_id: String,
    endpoint: Endpoint,
    started: Instant,
    /// The model asked for, once it was read and checked.
    pub model: Option<String>,
    pending: bool,
}

impl CallLine {
    pub fn new(req: &Request, endpoint: Endpoint) -> CallLine {
        CallLine {
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            endpoint,
            started: Instant::now(),
            model: None,
            pending: true,
        }
    }

    /// The call has its answer: logs it unless the answer logs its own line.
    pub fn answered(&mut self, resp: &mut Response<Body>, shown: &Shown, cut: bool) {
        self.pending = false;
        if resp.extensions_mut().remove::<CallLogged>().is_some() {
            return;
        }
        let status = resp.status().as_u16();
        let outcome = match status {
            _ if cut && status == 503 => "shutdown",
            0..=399 => "ok",
            400..=499 => "refused",
            _ => "upstream_error",
        };
        // The model that answered, else the one asked for (a refused call has no upstream).
        let model = shown.model.as_deref().or(self.model.as_deref());
        let upstream = shown.upstream.as_deref().unwrap_or("");
        self.log(
            model.unwrap_or(""),
            upstream,
            status,
            shown.attempts,
            outcome,
        );
    }

    fn log(&self, model: &str, upstream: &str, status: u16, attempts: u64, outcome: &str) {
        macro_rules! call_line {
            ($level:ident) => {
                tracing::$level!(
                    request_id = %self.request_id,
                    endpoint = self.endpoint.as_str(),
                    model,
                    upstream,
                    status,
                    attempts,
                    duration_ms = self.started.elapsed().as_millis() as u64,
                    outcome,
                    "call"
                )
            };
        }
        if status >= 500 {
            call_line!(warn);
        } else {
            call_line!(info);
        }
    }
}

impl Drop for CallLine {
    fn drop(&mut self) {
        if self.pending {
            let model = self.model.as_deref().unwrap_or("");
            self.log(
                model,
                "",
                crate::accounting::CLIENT_CLOSED_STATUS,
                0,
                "client_closed",
            );
        }
    }
}

//! The hooks stage (docs/hooks.md): after the model's permission, before the key's rate limits
//! and routing, every `[[hooks]]` entry whose scope matches runs in file order. Built-ins may
//! refuse the call (`deny`, `deny_pattern`), change it (`set`), add upstream headers or mask
//! what the call log keeps; an external hook is asked over HTTP. A changed request replaces the
//! call's canonical form and, for calls passed through untranslated, its body.

use super::{error, Call};
use crate::hooks::{self, rewrite, Hook, HookOutcome, Verdict};
use axum::body::Body;
use axum::http::Response;
use llmux_config::HookFail;
use llmux_wire::canonical::{ChatRequest, Op, TranslateError};
use llmux_wire::{ErrorKind, Peek};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// What one hook made of the call.
enum Step {
    Pass,
    Changed,
    Refused(Response<Body>),
}

impl Call {
    /// Runs the hooks in scope of this call for `model`; `Err` is the refusal (its record
    /// settled, naming the hook). Costs a length check when the config has no hooks, and
    /// decodes the request only when a hook in scope reads it.
    pub(super) async fn hook(&mut self, model: &str) -> Result<(), Response<Body>> {
        let config = Arc::clone(&self.routes.config);
        if config.hooks.is_empty() || !self.endpoint.generates() {
            return Ok(());
        }
        let Some(active) = self.gw.hooks.active(&config) else {
            return Ok(());
        };
        let identity = self.identity.as_ref();
        let scoped: Vec<&Hook> = active
            .hooks
            .iter()
            .filter(|h| h.applies(model, identity))
            .collect();
        if scoped.is_empty() {
            return Ok(());
        }
        self.take_masks_and_headers(&scoped);
        let reads = scoped.iter().find(|h| h.cfg.reads_request());
        let (mut req, lossless) = match (reads, self.endpoint.op()) {
            (Some(h), Some(op)) => match self.read_for_hooks(op) {
                Ok((r, lossless)) => (Some(r), lossless),
                Err(e) => {
                    let message = format!(
                        "hook '{}' must read this request, and it cannot be read: {e}",
                        h.cfg.name
                    );
                    let resp = error(self.dialect(), ErrorKind::InvalidRequest, message);
                    return Err(self.refused(None, resp));
                }
            },
            _ => (None, true),
        };
        // What the hooks saw first: the changes are what differs from it.
        let original = req.clone();
        let mut changed = false;
        for hook in scoped {
            match self.run_hook(hook, model, req.as_mut()).await {
                Step::Pass => {}
                Step::Changed => changed = true,
                Step::Refused(resp) => return Err(self.refused(Some(hook), resp)),
            }
        }
        match (original, req.filter(|_| changed)) {
            (Some(original), Some(req)) => match self.replace_request(&original, req, lossless) {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The request in canonical form for the hooks, and whether that form holds all of it.
    /// Top-level fields the canonical form refuses (OpenAI's `logprobs`, `reasoning_effort`,
    /// …: they cannot be translated, but pass through untouched) are left out of what the
    /// hooks see rather than refusing the call; a call that needs translating still fails on
    /// them later, as without hooks.
    fn read_for_hooks(&mut self, op: Op) -> Result<(ChatRequest, bool), TranslateError> {
        let first = match self.canonical_request(op) {
            Ok(r) => return Ok((r.clone(), true)),
            Err(e) => e,
        };
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&self.body) else {
            return Err(first);
        };
        let codec = self.endpoint.codec();
        let mut err = first;
        // Each refused field is removed in turn; a handful at most in any real request.
        for _ in 0..16 {
            if body.remove(&err.field).is_none() {
                return Err(err);
            }
            let bytes =
                serde_json::to_vec(&body).map_err(|e| TranslateError::new("", e.to_string()))?;
            match codec.decode_request(op, &bytes) {
                Ok(mut r) => {
                    if self.model_in_path {
                        r.model = self.peek.model.clone().unwrap_or_default();
                    }
                    if self.endpoint == super::Endpoint::GeminiStream {
                        r.stream = true;
                    }
                    return Ok((r, false));
                }
                Err(e) => err = e,
            }
        }
        Err(err)
    }

    /// One hook's turn: its built-in actions in order (deny, deny_pattern, set), or its
    /// external service. Headers and masks were taken already.
    async fn run_hook(&self, hook: &Hook, model: &str, req: Option<&mut ChatRequest>) -> Step {
        let name = hook.cfg.name.as_str();
        let deny = |why: &str| {
            let message = hook
                .cfg
                .message
                .clone()
                .unwrap_or_else(|| format!("{why} by hook '{name}'"));
            hook.metrics.count(HookOutcome::Deny);
            Step::Refused(error(self.dialect(), ErrorKind::HookDenied, message))
        };
        if hook.cfg.deny {
            return deny("this call is refused");
        }
        let Some(req) = req else {
            // Nothing to read: an embeddings call, or a hook that only adds headers or masks.
            hook.metrics.count(HookOutcome::Allow);
            return Step::Pass;
        };
        if let Some(re) = &hook.deny_re {
            if re.is_match(&rewrite::prompt_text(req)) {
                return deny("the prompt was refused");
            }
        }
        if let Some(ext) = &hook.cfg.external {
            return self.ask_external(hook, ext, model, req).await;
        }
        let outcome = if rewrite::apply_set(req, &hook.cfg.set) {
            HookOutcome::Modify
        } else {
            HookOutcome::Allow
        };
        hook.metrics.count(outcome);
        match outcome {
            HookOutcome::Modify => Step::Changed,
            _ => Step::Pass,
        }
    }

    async fn ask_external(
        &self,
        hook: &Hook,
        ext: &llmux_config::ExternalHook,
        model: &str,
        req: &mut ChatRequest,
    ) -> Step {
        let name = hook.cfg.name.as_str();
        let caller = hooks::Caller {
            hook: name,
            model,
            app: self.identity.as_ref().map(|i| i.app_id.as_str()),
            key_id: self.identity.as_ref().map(|i| i.key_id.as_str()),
        };
        let started = Instant::now();
        let verdict = hooks::ask(&self.gw.hooks, ext, &caller, req).await;
        hook.metrics.duration.observe(started.elapsed());
        match verdict {
            Ok(Verdict::Allow) => {
                hook.metrics.count(HookOutcome::Allow);
                Step::Pass
            }
            Ok(Verdict::Deny(message)) => {
                hook.metrics.count(HookOutcome::Deny);
                let message = if message.is_empty() {
                    format!("this call was refused by hook '{name}'")
                } else {
                    message
                };
                Step::Refused(error(self.dialect(), ErrorKind::HookDenied, message))
            }
            Ok(Verdict::Modify(new)) => {
                hook.metrics.count(HookOutcome::Modify);
                *req = *new;
                Step::Changed
            }
            Err(why) => {
                hook.metrics.count(HookOutcome::Error);
                match ext.fail {
                    HookFail::Open => {
                        tracing::warn!(request_id = %self.request_id, hook = name, reason = %why,
                            "hook failed; the call goes on unchecked (fail = \"open\")");
                        Step::Pass
                    }
                    HookFail::Closed => {
                        let message = format!(
                            "hook '{name}' {why}; the call was refused (fail = \"closed\"): retry later"
                        );
                        Step::Refused(error(self.dialect(), ErrorKind::Unavailable, message))
                    }
                }
            }
        }
    }

    /// The masks of the hooks in scope go to the call's record (its request body, already
    /// kept, is masked now); their headers to every upstream request of the call.
    fn take_masks_and_headers(&mut self, scoped: &[&Hook]) {
        for h in scoped {
            self.hook_headers.extend(h.headers.iter().cloned());
        }
        let masks: Vec<_> = scoped
            .iter()
            .flat_map(|h| h.masks.iter().cloned())
            .collect();
        if masks.is_empty() {
            return;
        }
        if let Some(d) = self.draft.as_mut() {
            if let Some(b) = d.record.request_body.take() {
                d.record.request_body = Some(hooks::mask(&masks, &b));
            }
            d.masks = Some(Arc::new(masks));
        }
    }

    /// The changed request becomes the call's: its canonical form for translated attempts, and
    /// its body re-encoded in the client's dialect for passthrough ones.
    /// `original`: the request as the hooks first saw it; `lossless`: whether that is all of
    /// the request (else the canonical form is decoded again from the new body when an
    /// attempt needs translating, and refuses what it refused before). `Some` is the refusal
    /// of a changed request that cannot be written in the client's dialect.
    fn replace_request(
        &mut self,
        original: &ChatRequest,
        mut req: ChatRequest,
        lossless: bool,
    ) -> Option<Response<Body>> {
        rewrite::keep_call_shape(&mut req, original);
        let written = rewrite::reencode(self.endpoint, &self.body, original, &req).and_then(|b| {
            Peek::parse(&b)
                .map(|p| (b, p))
                .map_err(|e| TranslateError::new("", e.to_string()))
        });
        let (body, peek) = match written {
            Ok(w) => w,
            Err(e) => {
                let message = format!(
                    "the request as changed by a hook cannot be written as a {} request: {e}",
                    self.endpoint.as_str()
                );
                let resp = error(self.dialect(), ErrorKind::InvalidRequest, message);
                return Some(self.refused(None, resp));
            }
        };
        if let Some(d) = self.draft.as_mut() {
            if d.record.request_body.is_some() {
                let text = crate::accounting::redact(&String::from_utf8_lossy(&body));
                d.record.request_body = Some(match &d.masks {
                    Some(m) => hooks::mask(m, &text),
                    None => text,
                });
            }
        }
        self.body = body;
        self.peek = peek;
        self.canonical = lossless.then_some(Ok(req));
        None
    }

    /// Settles the record of a call a hook refused (or whose request could not be read),
    /// naming the hook; hands the refusal back.
    fn refused(&mut self, hook: Option<&Hook>, resp: Response<Body>) -> Response<Body> {
        if let Some(mut d) = self.draft.take() {
            d.record.hook = hook.map(|h| h.cfg.name.clone());
            let class = match resp.status().as_u16() {
                403 => Some("hook_denied"),
                503 => Some("hook_failed"),
                _ => None,
            };
            d.finish(
                resp.status().as_u16(),
                class,
                None,
                Default::default(),
                None,
            );
        }
        resp
    }
}

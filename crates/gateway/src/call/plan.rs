//! The plan stage: the call's targets in order (the model or its alias's targets, then their
//! fallbacks), each target's candidates as routing orders them, and the attempts at them as
//! the failover machine directs — until one answers or every option failed.

use super::failover::{Failover, KeyChoice, Pick, Reaction, Step};
use super::prepare::Unprepared;
use super::{error, Call, Failed, Outcome};
use crate::accounting::AttemptRecord;
use crate::breaker::Admission;
use crate::keys::KeyPick;
use crate::routing::{Candidate, RouteError};
use crate::telemetry::{Span, SpanKind};
use crate::upstream::Upstream;
use crate::Gateway;
use axum::body::Body;
use axum::http::{HeaderValue, Response};
use llmux_wire::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often a call waiting for the start-up probe round looks whether its model is ready.
const DISCOVERY_POLL: Duration = Duration::from_millis(5);

impl Call {
    /// The requested model's targets in order, each with up to `max_attempts` attempts.
    pub(super) async fn run(&mut self, model: &str, targets: &[String]) -> Response<Body> {
        self.gw.retry_budget.deposit();
        if !*self.gw.discovered.borrow() {
            self.await_discovery(targets).await;
        }
        let routes = Arc::clone(&self.routes);
        let mut route_error = None;
        let mut limited = None;
        for target in targets {
            let target = target.as_str();
            let endpoint = self.endpoint;
            let pricing = (routes.strategy == llmux_config::Strategy::Cheapest)
                .then(|| self.gw.accounting.pricing());
            let accepts = |k| endpoint.accepts(k);
            let cands = match routes.plan_with(target, accepts, self.affinity, pricing.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    route_error.get_or_insert(e);
                    continue;
                }
            };
            // The requested name's own limits were checked at admission; a target's apply
            // when the call reaches it, and one that is spent is skipped.
            if !llmux_wire::model::same_model(target, model) {
                if let Err(refused) = self.admit_target(target).await {
                    self.failures
                        .push(format!("{target}: this API key's limit for it is reached"));
                    limited.get_or_insert(refused);
                    continue;
                }
            }
            if let Some(resp) = self.try_target(target, &cands).await {
                return resp;
            }
            if self.out_of_budget {
                break;
            }
        }
        if let Some(refused) = limited.filter(|_| self.attempts == 0) {
            return refused;
        }
        self.give_up(model, route_error)
    }

    /// During the start-up probe round, a call none of whose targets has a probed, ready
    /// candidate yet waits — until one has (its upstream's probe answered), or for the round
    /// (at most `health.timeout` and a little): a model a node is about to list is not refused
    /// as unknown, nor sent to a node not yet known to answer when a probed one will serve
    /// it, and a node that never answers does not hold calls another node can serve.
    async fn await_discovery(&self, targets: &[String]) {
        let endpoint = self.endpoint;
        let ready = || {
            targets.iter().any(|t| {
                self.routes
                    .plan_with(t, |k| endpoint.accepts(k), self.affinity, None)
                    .is_ok_and(|c| c.first().is_some_and(|c| c.tier == 0))
            })
        };
        let settled = self.gw.discovery_settled();
        tokio::pin!(settled);
        // Each upstream's probe result lands on its own as it comes; the first round is short,
        // so looking again every few milliseconds costs nothing worth a signal of its own.
        while !ready() {
            tokio::select! {
                () = &mut settled => return,
                () = tokio::time::sleep(DISCOVERY_POLL) => {}
            }
        }
    }

    /// The key's per-model limits of a fallback `target`; its token grant joins the call's.
    async fn admit_target(&mut self, target: &str) -> Result<(), Response<Body>> {
        let (id, dialect) = (self.identity.as_ref(), self.endpoint.dialect());
        let admitted =
            crate::limits::admit_model(&self.gw, id, target, &self.body, dialect).await?;
        self.rates.extend(admitted.decisions);
        if let Some(d) = self.draft.as_mut() {
            d.grant.absorb(admitted.grant);
        }
        Ok(())
    }

    /// Tries the candidates for one target: another key of the same upstream after a key's
    /// failure, the next upstream after the upstream's failure.
    async fn try_target(&mut self, target: &str, cands: &[Candidate]) -> Option<Response<Body>> {
        let mut machine = Failover::new(
            cands.len(),
            self.routes.config.routing.max_attempts as usize,
        );
        loop {
            let affinity = self.affinity;
            let keys = |i: usize, tried: &[usize], last_resort: bool| {
                choose_key(&cands[i].upstream, affinity, tried, last_resort)
            };
            let pick = match machine.next(self.attempts, keys) {
                Step::Exhausted => return None,
                Step::NoKey(i) => {
                    let name = &cands[i].upstream.name;
                    self.failures.push(format!("{name}: no usable key"));
                    continue;
                }
                Step::Try(pick) => pick,
            };
            let cand = &cands[pick.idx];
            let up = Arc::clone(&cand.upstream);
            let prepared = match self.prepare(cand).await {
                Ok(p) => p,
                Err(Unprepared::Invalid(e)) => {
                    let kind = ErrorKind::InvalidRequest;
                    return Some(error(self.dialect(), kind, e.to_string()));
                }
                Err(Unprepared::Inexpressible(e)) => {
                    self.failures
                        .push(format!("{}: cannot express the request: {e}", up.name));
                    self.inexpressible.get_or_insert(e);
                    machine.skip(pick.idx);
                    continue;
                }
            };
            let admission = up.breaker.admit();
            if admission == Admission::Rejected {
                let others = cands[pick.idx + 1..]
                    .iter()
                    .any(|c| c.upstream.breaker.is_available());
                if Failover::circuit_skips(others, self.attempts) {
                    self.failures.push(format!("{}: circuit open", up.name));
                    machine.skip(pick.idx);
                    continue;
                }
            }
            let trial = TrialGuard((admission == Admission::Trial).then(|| Arc::clone(&up)));
            let budget = &self.gw.retry_budget;
            if !Failover::within_budget(self.attempts, || budget.try_withdraw()) {
                self.failures.push("retry budget exhausted".into());
                self.out_of_budget = true;
                return None;
            }
            if let Some(retry) = machine.begin(pick) {
                tokio::time::sleep(crate::retry::backoff(retry)).await;
            }
            self.attempts += 1;
            self.note_attempt(cand, pick.key);
            let started = Instant::now();
            match self.attempt(cand, pick.key, target, prepared).await {
                Outcome::Done(resp) => {
                    machine.answered();
                    trial.disarm();
                    return Some(self.answered(resp, &up, pick.key, started.elapsed()));
                }
                Outcome::Failed(failed) => {
                    let took = started.elapsed();
                    let (reaction, reason) = self.failed(&mut machine, &up, pick, failed, took);
                    apply(&self.gw, &up, reaction, &reason, trial);
                }
            }
        }
    }

    /// One attempt: sent, then answered (or failed), recorded as a child span of the call's.
    async fn attempt(
        &mut self,
        cand: &Candidate,
        key: Option<KeyPick>,
        target: &str,
        prepared: super::prepare::Prepared,
    ) -> Outcome {
        let trace = self.trace.map(|t| t.child());
        let start = SystemTime::now();
        let outcome = match self.send(cand, key, prepared, trace).await {
            Ok(sent) => self.respond(cand, key, target, sent).await,
            Err(failed) => Outcome::Failed(failed),
        };
        if let (Some(ctx), Some(parent)) = (trace, self.trace) {
            crate::telemetry::record(Span {
                name: "llmux.attempt",
                ctx,
                parent: Some(parent.span_id),
                kind: SpanKind::Client,
                start,
                end: SystemTime::now(),
                attributes: vec![
                    ("llmux.upstream", cand.upstream.name.clone().into()),
                    ("llmux.attempt", self.attempts.into()),
                    (
                        crate::telemetry::GEN_AI_REQUEST_MODEL,
                        cand.model.clone().into(),
                    ),
                ],
                error: match &outcome {
                    Outcome::Done(_) => None,
                    Outcome::Failed(f) => Some(f.reason.clone()),
                },
            });
        }
        outcome
    }

    /// An attempt's answer is on its way to the client.
    fn answered(
        &self,
        resp: Response<Body>,
        up: &Upstream,
        key: Option<KeyPick>,
        took: Duration,
    ) -> Response<Body> {
        if let Some(k) = key.and_then(|k| up.keys.get(k)) {
            k.answered(took);
        }
        if self.attempts > 1 {
            self.gw.metrics.retried(true);
        }
        resp
    }

    /// A failed attempt: logged, counted, and handed to the failover machine, whose reaction
    /// is applied to the upstream.
    fn failed(
        &mut self,
        machine: &mut Failover,
        up: &Arc<Upstream>,
        pick: Pick,
        failed: Failed,
        took: Duration,
    ) -> (Reaction, String) {
        let Failed {
            failure,
            reason,
            reply,
        } = failed;
        let used_key = pick.key.and_then(|k| up.keys.get(k));
        tracing::info!(
            request_id = %self.request_id,
            upstream = %up.name,
            key = used_key.map_or("", |k| k.id.as_str()),
            reason,
            class = ?failure.class,
            "attempt failed"
        );
        up.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(k) = used_key {
            k.failed();
        }
        let status = reply.as_ref().map(|r| r.status.as_u16());
        self.log_attempt(|| AttemptRecord {
            upstream: up.name.clone(),
            key_id: used_key.map(|k| k.id.clone()),
            status,
            error_class: Some(failure.log_class(status).to_string()),
            ms: took.as_millis().try_into().unwrap_or(u64::MAX),
        });
        up.metrics.attempt_failed(failure.class);
        up.update(|s| s.last_error = Some(reason.clone()));
        self.failures.push(format!("{}: {reason}", up.name));
        let routing = &self.routes.config.routing;
        let (cooldown, max_cooldown) = (routing.cooldown, routing.max_cooldown);
        let reaction = machine.failed(pick, failure, reply.is_some(), cooldown, max_cooldown);
        // A key's 401 is no answer for the client (it did not send that key).
        if failure.class != super::failure::FailureClass::BadKey && reply.is_some() {
            self.last_reply = reply;
        }
        (reaction, reason)
    }

    /// Notes on the call's record where the prompt is about to go, before it is sent: a call
    /// dropped while it waits (client gone, shutdown) is charged for a prompt an upstream has.
    fn note_attempt(&mut self, cand: &Candidate, key: Option<KeyPick>) {
        if let Some(d) = self.draft.as_mut() {
            let up = &cand.upstream;
            d.record.upstream = Some(up.name.clone());
            d.record.upstream_model = Some(cand.model.clone());
            d.record.provider_key_id = key.and_then(|k| up.keys.get(k)).map(|k| k.id.clone());
            d.record.attempts = self.attempts as u32;
        }
    }

    /// Adds a failed attempt to the record's log; an attempt whose answer was being read (and
    /// then broke, stalled or could not be translated) is replaced by its failure.
    /// (`failed` is built only when there is a record to keep it.)
    fn log_attempt(&mut self, failed: impl FnOnce() -> AttemptRecord) {
        let Some(d) = self.draft.as_mut() else {
            return;
        };
        let log = &mut d.record.attempt_log;
        if std::mem::take(&mut self.answering) {
            log.pop();
        }
        log.push(failed());
    }

    /// Every option failed before a byte reached the client.
    fn give_up(&mut self, model: &str, route_error: Option<RouteError>) -> Response<Body> {
        let dialect = self.dialect();
        if self.attempts > 1 {
            self.gw.metrics.retried(false);
        }
        if self.attempts == 0 {
            if let Some(e) = route_error.filter(|_| self.failures.is_empty()) {
                let kind = match e {
                    RouteError::Incompatible { .. } => ErrorKind::InvalidRequest,
                    RouteError::Drained { .. } => ErrorKind::Unavailable,
                    _ => ErrorKind::ModelNotFound,
                };
                return error(dialect, kind, e.to_string());
            }
            if let Some(e) = &self.inexpressible {
                // No upstream serving the model can express the request: the client must change it.
                let e = llmux_wire::translate::in_client_words(dialect, e);
                return error(dialect, ErrorKind::InvalidRequest, e.to_string());
            }
        }
        let summary = self.failures.join("; ");
        tracing::warn!(request_id = %self.request_id, model, attempts = self.attempts, failures = %summary, "no upstream could serve the call");
        if let Some(reply) = self.last_reply.take() {
            // The upstream's own answer (a 5xx or a 429 with Retry-After) says more than a generic 502.
            let mut out = Response::new(Body::from(reply.body));
            *out.status_mut() = reply.status;
            self.decorate(&mut out, reply.headers, &reply.upstream, None, false);
            return out;
        }
        let kind = if self.attempts == 0 {
            ErrorKind::Unavailable
        } else {
            ErrorKind::BadGateway
        };
        let message = format!("no upstream could serve model '{model}': {summary}");
        let mut out = error(dialect, kind, message);
        out.headers_mut()
            .insert(crate::X_LLMUX_ATTEMPTS, HeaderValue::from(self.attempts));
        self.shown.attempts = self.attempts as u64;
        out
    }
}

/// A key of `up` other than `tried`; with `last_resort`, the one that rests least rather than
/// none when every key rests.
fn choose_key(
    up: &Upstream,
    affinity: Option<u64>,
    tried: &[usize],
    last_resort: bool,
) -> KeyChoice {
    if up.keys.is_empty() {
        return KeyChoice::Keyless;
    }
    let pick = up.keys.pick(affinity, tried).or_else(|| {
        last_resort
            .then(|| up.keys.soonest_cooling(tried))
            .flatten()
    });
    pick.map_or(KeyChoice::NoneUsable, KeyChoice::Key)
}

/// Applies the failover's reaction to the upstream's breaker, keys and rest, and announces
/// it to the other instances of a cluster (a no-op on a single instance).
fn apply(gw: &Gateway, up: &Upstream, reaction: Reaction, reason: &str, trial: TrialGuard) {
    use crate::peers::signals::{announce, SignalKind};
    match reaction {
        Reaction::Breaker => {
            if let Some(open_for) = up.breaker.failure() {
                tracing::warn!(upstream = %up.name, ?open_for, "circuit opened: upstream ejected");
                announce(gw, up, None, SignalKind::BreakerOpened(open_for), reason);
            }
            trial.disarm();
        }
        Reaction::Cool { key, rest } => {
            up.mark_throttled(rest);
            if let Some(k) = key {
                up.keys.cool(k, rest);
            }
            announce(gw, up, key, SignalKind::KeyCooled(rest), reason);
        }
        Reaction::Disable(key) => {
            let key = key.and_then(|k| up.keys.get(k).map(|kk| (k, kk)));
            if let Some((k, kk)) = key {
                if up.keys.disable(k, reason) {
                    tracing::warn!(upstream = %up.name, key = %kk.id, reason, "key disabled");
                    announce(gw, up, Some(k), SignalKind::KeyDisabled, reason);
                }
            }
        }
    }
}

/// Holds a half-open breaker's trial claim; dropping it without a verdict (hang-up, a key's
/// error) frees the trial for the next call instead of leaving the breaker stuck.
struct TrialGuard(Option<Arc<Upstream>>);

impl TrialGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TrialGuard {
    fn drop(&mut self) {
        if let Some(up) = self.0.take() {
            up.breaker.release_trial();
        }
    }
}

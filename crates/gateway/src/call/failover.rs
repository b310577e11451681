//! The failover stage as a plain, synchronous state machine: which candidate and key to try
//! next for one target model, and how to react to a failed attempt (retry elsewhere, rest or
//! disable a key, count against a breaker). It does no I/O and reads no clock: the caller
//! (`plan.rs`) applies its reactions to the upstreams and sends the attempts.

use super::failure::{Failure, FailureClass};
use crate::keys::KeyPick;
use std::time::Duration;

/// The attempts at one target model's candidates (in plan order), at most `max` of them.
pub(crate) struct Failover {
    max: usize,
    made: usize,
    /// The next candidate to try in plan order.
    next: usize,
    count: usize,
    /// (candidate, key) of every attempt made.
    tried: Vec<(usize, Option<usize>)>,
    /// Candidates that answered a transient 5xx: retried (after a backoff) only once no other
    /// candidate is left.
    again: Vec<(usize, Option<KeyPick>)>,
    /// An answer reached the client: nothing is retried after that.
    answered: bool,
}

/// The attempt the machine asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pick {
    /// The candidate's position in the plan.
    pub idx: usize,
    pub key: Option<KeyPick>,
    /// A retry of a candidate that already failed this call (after a backoff).
    pub again: bool,
}

/// How a candidate's keys answer the machine's question "which key now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyChoice {
    /// The upstream takes no key.
    Keyless,
    Key(KeyPick),
    /// Every key was tried, is resting or is disabled.
    NoneUsable,
}

/// What the machine says next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Try(Pick),
    /// Candidate `idx` has no usable key: it is skipped (the caller notes why).
    NoKey(usize),
    /// Nothing left to try for this target: the call moves on to its fallback, if any.
    Exhausted,
}

/// The reaction to a failed attempt, applied by the caller to the upstream's runtime state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// The upstream failed: a breaker failure (and the half-open trial, if any, is spent).
    Breaker,
    /// Rest the upstream for `rest`, and the key if one was used.
    Cool {
        key: Option<KeyPick>,
        rest: Duration,
    },
    /// Disable the key (a keyless upstream is just left for the next candidate).
    Disable(Option<KeyPick>),
}

impl Failover {
    pub fn new(count: usize, max: usize) -> Failover {
        Failover {
            max,
            made: 0,
            next: 0,
            count,
            tried: Vec::new(),
            again: Vec::new(),
            answered: false,
        }
    }

    /// The next attempt. `keys(idx, tried, last_resort)` picks a key of candidate `idx` other
    /// than `tried`; `last_resort` allows a resting key (better than no answer) when the
    /// candidate is the last and the call has made no attempt yet.
    pub fn next(
        &mut self,
        attempts: usize,
        mut keys: impl FnMut(usize, &[usize], bool) -> KeyChoice,
    ) -> Step {
        if self.answered || self.made >= self.max {
            return Step::Exhausted;
        }
        if self.next < self.count {
            let ci = self.next;
            let keys_tried: Vec<usize> = self
                .tried
                .iter()
                .filter(|(c, _)| *c == ci)
                .filter_map(|(_, k)| *k)
                .collect();
            let last_resort = ci + 1 >= self.count && attempts == 0;
            let key = match keys(ci, &keys_tried, last_resort) {
                KeyChoice::Keyless => None,
                KeyChoice::Key(k) => Some(k),
                KeyChoice::NoneUsable => {
                    self.next += 1;
                    return Step::NoKey(ci);
                }
            };
            return Step::Try(Pick {
                idx: ci,
                key,
                again: false,
            });
        }
        match self.again.pop() {
            Some((idx, key)) => Step::Try(Pick {
                idx,
                key,
                again: true,
            }),
            None => Step::Exhausted,
        }
    }

    /// Leaves candidate `idx` for the ones after it (it cannot express the request, or its
    /// circuit is open).
    pub fn skip(&mut self, idx: usize) {
        self.next = idx + 1;
    }

    /// Whether an open circuit skips its candidate: only when another candidate's is closed or
    /// the call already made an attempt. The only candidate left is never ejected — a slow
    /// answer beats none.
    pub fn circuit_skips(others_available: bool, attempts: usize) -> bool {
        others_available || attempts > 0
    }

    /// Whether the attempt may be made: the first attempt of a call always, a retry only
    /// when the shared retry budget grants it.
    pub fn within_budget(attempts: usize, try_withdraw: impl FnOnce() -> bool) -> bool {
        attempts == 0 || try_withdraw()
    }

    /// Counts `pick` as made; `Some(n)`: back off before it, as the `n`-th retry.
    pub fn begin(&mut self, pick: Pick) -> Option<u32> {
        let backoff = pick.again.then_some(self.made as u32);
        self.tried.push((pick.idx, pick.key.map(|k| k.0)));
        self.made += 1;
        backoff
    }

    /// An answer (success or the client's own error) is on its way to the client.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Reacts to the failure of `pick`. `replied`: the upstream sent an HTTP answer (a 5xx is
    /// worth a retry on the same candidate; a timeout or a broken connection is not).
    pub fn failed(
        &mut self,
        pick: Pick,
        failure: Failure,
        replied: bool,
        cooldown: Duration,
        max_cooldown: Duration,
    ) -> Reaction {
        let move_on = |s: &mut Failover| s.next = s.next.max(pick.idx + 1);
        match failure.class {
            FailureClass::OtherUpstream => {
                if replied && !pick.again {
                    self.again.insert(0, (pick.idx, pick.key));
                }
                move_on(self);
                Reaction::Breaker
            }
            FailureClass::Throttled => {
                let rest = crate::retry::rest(failure.retry_after, cooldown, max_cooldown);
                if pick.key.is_none() {
                    move_on(self);
                }
                Reaction::Cool {
                    key: pick.key,
                    rest,
                }
            }
            FailureClass::BadKey => {
                if pick.key.is_none() {
                    move_on(self);
                }
                Reaction::Disable(pick.key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    const COOL: Duration = Duration::from_secs(60);
    const MAX_COOL: Duration = Duration::from_secs(300);

    fn fail(class: FailureClass) -> Failure {
        Failure {
            class,
            retry_after: None,
        }
    }

    fn keyless(_: usize, _: &[usize], _: bool) -> KeyChoice {
        KeyChoice::Keyless
    }

    /// Candidates with `n` keys each: the first key not tried yet.
    fn keys(n: usize) -> impl FnMut(usize, &[usize], bool) -> KeyChoice {
        move |_, tried, _| match (0..n).find(|k| !tried.contains(k)) {
            Some(k) => KeyChoice::Key(KeyPick(k)),
            None => KeyChoice::NoneUsable,
        }
    }

    /// Takes the machine's next step, which must be an attempt, and begins it.
    fn go(
        f: &mut Failover,
        attempts: usize,
        keys: impl FnMut(usize, &[usize], bool) -> KeyChoice,
    ) -> Pick {
        match f.next(attempts, keys) {
            Step::Try(p) => {
                f.begin(p);
                p
            }
            other => panic!("expected an attempt, got {other:?}"),
        }
    }

    #[test]
    fn a_5xx_moves_on_then_retries_the_same_candidate_after_a_backoff() {
        let mut f = Failover::new(2, 3);
        let a = go(&mut f, 0, keyless);
        assert_eq!(a.idx, 0);
        let r = f.failed(a, fail(FailureClass::OtherUpstream), true, COOL, MAX_COOL);
        assert_eq!(r, Reaction::Breaker);
        let b = go(&mut f, 1, keyless);
        assert_eq!((b.idx, b.again), (1, false));
        f.failed(b, fail(FailureClass::OtherUpstream), true, COOL, MAX_COOL);
        // No fresh candidate left: the first 5xx is retried, after a backoff.
        let Step::Try(c) = f.next(2, keyless) else {
            panic!("a retry")
        };
        assert_eq!((c.idx, c.again), (0, true));
        assert_eq!(f.begin(c), Some(2), "backs off as the second retry");
        // A retried candidate that fails again is not queued a third time; `max` is spent too.
        f.failed(c, fail(FailureClass::OtherUpstream), true, COOL, MAX_COOL);
        assert_eq!(f.next(3, keyless), Step::Exhausted);
    }

    #[test]
    fn a_timeout_before_the_first_byte_moves_on_without_a_same_candidate_retry() {
        let mut f = Failover::new(2, 5);
        let a = go(&mut f, 0, keyless);
        let r = f.failed(a, fail(FailureClass::OtherUpstream), false, COOL, MAX_COOL);
        assert_eq!(r, Reaction::Breaker, "a timeout counts against the breaker");
        let b = go(&mut f, 1, keyless);
        assert_eq!(b.idx, 1);
        f.failed(b, fail(FailureClass::OtherUpstream), false, COOL, MAX_COOL);
        assert_eq!(f.next(2, keyless), Step::Exhausted);
    }

    #[test]
    fn a_429_rests_the_key_and_tries_another_key_of_the_same_upstream() {
        let mut f = Failover::new(2, 5);
        let a = go(&mut f, 0, keys(2));
        assert_eq!(a.key, Some(KeyPick(0)));
        let throttled = Failure {
            class: FailureClass::Throttled,
            retry_after: Some(Duration::from_secs(7)),
        };
        let r = f.failed(a, throttled, true, COOL, MAX_COOL);
        assert_eq!(
            r,
            Reaction::Cool {
                key: Some(KeyPick(0)),
                rest: Duration::from_secs(7)
            }
        );
        let b = go(&mut f, 1, keys(2));
        assert_eq!((b.idx, b.key), (0, Some(KeyPick(1))));
        // Retry-After is capped at max_cooldown; without it the key rests `cooldown`.
        let long = Failure {
            retry_after: Some(Duration::from_secs(86_400)),
            ..throttled
        };
        let r = f.failed(b, long, true, COOL, MAX_COOL);
        assert_eq!(
            r,
            Reaction::Cool {
                key: Some(KeyPick(1)),
                rest: MAX_COOL
            }
        );
        // Both keys tried: the upstream is skipped for the next one.
        assert_eq!(f.next(2, keys(2)), Step::NoKey(0));
        let c = go(&mut f, 2, keys(2));
        assert_eq!((c.idx, c.key), (1, Some(KeyPick(0))));
    }

    #[test]
    fn a_keyless_429_moves_to_the_next_upstream() {
        let mut f = Failover::new(2, 5);
        let a = go(&mut f, 0, keyless);
        let r = f.failed(a, fail(FailureClass::Throttled), true, COOL, MAX_COOL);
        assert_eq!(
            r,
            Reaction::Cool {
                key: None,
                rest: COOL
            }
        );
        assert_eq!(go(&mut f, 1, keyless).idx, 1);
    }

    #[test]
    fn a_401_disables_the_key_and_tries_the_next_key() {
        let mut f = Failover::new(1, 5);
        let a = go(&mut f, 0, keys(2));
        let r = f.failed(a, fail(FailureClass::BadKey), true, COOL, MAX_COOL);
        assert_eq!(r, Reaction::Disable(Some(KeyPick(0))));
        let b = go(&mut f, 1, keys(2));
        assert_eq!((b.idx, b.key), (0, Some(KeyPick(1))));
        // A key's 401 is no 5xx: not retried on the same candidate.
        f.failed(b, fail(FailureClass::BadKey), true, COOL, MAX_COOL);
        assert_eq!(f.next(2, keys(2)), Step::NoKey(0));
        assert_eq!(f.next(2, keys(2)), Step::Exhausted);
    }

    #[test]
    fn an_open_circuit_is_skipped_unless_it_is_the_only_hope() {
        assert!(
            Failover::circuit_skips(true, 0),
            "another upstream is closed"
        );
        assert!(
            Failover::circuit_skips(false, 1),
            "an attempt was already made"
        );
        assert!(
            !Failover::circuit_skips(false, 0),
            "a slow answer beats none"
        );
        let mut f = Failover::new(3, 5);
        let Step::Try(a) = f.next(0, keyless) else {
            panic!("an attempt")
        };
        f.skip(a.idx);
        assert_eq!(go(&mut f, 0, keyless).idx, 1);
    }

    #[test]
    fn the_last_candidate_may_use_a_resting_key_on_the_first_attempt_only() {
        let mut f = Failover::new(2, 5);
        let mut seen = Vec::new();
        let mut record = |i: usize, _: &[usize], last: bool| {
            seen.push((i, last));
            KeyChoice::Keyless
        };
        let a = go(&mut f, 0, &mut record);
        f.failed(a, fail(FailureClass::OtherUpstream), false, COOL, MAX_COOL);
        let _ = f.next(1, &mut record);
        let mut g = Failover::new(1, 5);
        let _ = g.next(0, &mut record);
        assert_eq!(seen, [(0, false), (1, false), (0, true)]);
    }

    #[test]
    fn the_retry_budget_guards_retries_not_first_attempts() {
        assert!(Failover::within_budget(0, || panic!("not consulted")));
        assert!(Failover::within_budget(1, || true));
        assert!(!Failover::within_budget(1, || false), "budget exhausted");
    }

    #[test]
    fn an_exhausted_target_hands_the_call_to_its_fallback_model() {
        // The plan runs one machine per target model: an exhausted one moves the call on.
        let mut primary = Failover::new(1, 5);
        let a = go(&mut primary, 0, keyless);
        primary.failed(a, fail(FailureClass::OtherUpstream), false, COOL, MAX_COOL);
        assert_eq!(primary.next(1, keyless), Step::Exhausted);
        let mut fallback = Failover::new(1, 5);
        assert_eq!(
            fallback.next(1, keyless),
            Step::Try(Pick {
                idx: 0,
                key: None,
                again: false
            })
        );
    }

    #[test]
    fn nothing_is_retried_once_an_answer_reached_the_client() {
        let mut f = Failover::new(3, 5);
        let _ = go(&mut f, 0, keyless);
        f.answered();
        assert_eq!(f.next(1, keyless), Step::Exhausted);
    }

    #[test]
    fn max_attempts_bounds_the_target() {
        let mut f = Failover::new(5, 2);
        for n in 0..2 {
            let p = go(&mut f, n, keyless);
            f.failed(p, fail(FailureClass::OtherUpstream), false, COOL, MAX_COOL);
        }
        assert_eq!(f.next(2, keyless), Step::Exhausted);
    }
}

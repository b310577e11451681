//! A circuit breaker per upstream: ejects an upstream that keeps failing and lets it back in through one trial call.

use llmux_config::BreakerConfig;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may go to the upstream now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The one call that tests a half-open upstream; its outcome closes or re-opens the breaker.
    Trial,
    Rejected,
}

struct Inner {
    state: BreakerState,
    open_until: Instant,
    consecutive: u32,
    times_opened: u32,
    trial_out: bool,
    /// (when, failed) of recent calls within the window, oldest first.
    window: VecDeque<(Instant, bool)>,
}

pub struct Breaker {
    cfg: BreakerConfig,
    /// Mirrors `state != Closed` so the common case admits without taking the lock.
    tripped: AtomicBool,
    inner: Mutex<Inner>,
}

/// Bound on remembered outcomes: the rate needs only `min_calls` of them, and memory must stay flat under load.
const WINDOW_CAP: usize = 512;

/// Fewest recent outcomes a success rate is read from: one failure among two calls says little.
pub const MIN_RATE_CALLS: usize = 5;

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            tripped: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                open_until: Instant::now(),
                consecutive: 0,
                times_opened: 0,
                trial_out: false,
                window: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        if !self.tripped.load(Ordering::Relaxed) {
            return BreakerState::Closed;
        }
        let inner = self.lock();
        if inner.state == BreakerState::Open && Instant::now() >= inner.open_until {
            BreakerState::HalfOpen
        } else {
            inner.state
        }
    }

    /// Would a call be admitted now? Does not claim the half-open trial.
    pub fn is_available(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.lock().trial_out,
        }
    }

    /// Admits a call, claiming the half-open trial when it is free.
    pub fn admit(&self) -> Admission {
        if !self.tripped.load(Ordering::Relaxed) {
            return Admission::Allowed;
        }
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open if Instant::now() < inner.open_until => Admission::Rejected,
            BreakerState::Open | BreakerState::HalfOpen => {
                inner.state = BreakerState::HalfOpen;
                if inner.trial_out {
                    Admission::Rejected
                } else {
                    inner.trial_out = true;
                    Admission::Trial
                }
            }
        }
    }

    /// The upstream answered (any status that is not its own failure).
    pub fn success(&self) {
        let now = Instant::now();
        if !self.tripped.load(Ordering::Relaxed) {
            let mut inner = self.lock();
            inner.consecutive = 0;
            push(&mut inner.window, now, false, self.cfg.window);
            return;
        }
        let mut inner = self.lock();
        inner.consecutive = 0;
        inner.trial_out = false;
        push(&mut inner.window, now, false, self.cfg.window);
        if inner.state != BreakerState::Closed {
            inner.state = BreakerState::Closed;
            inner.times_opened = 0;
            inner.window.clear();
            self.tripped.store(false, Ordering::Relaxed);
        }
    }

    /// The upstream failed (connect, reset, timeout, 5xx). Returns `Some(open_for)` when this opened the breaker.
    pub fn failure(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.consecutive += 1;
        push(&mut inner.window, now, true, self.cfg.window);
        let trip = match inner.state {
            // A failed trial re-opens at once, for longer.
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
            BreakerState::Closed => {
                let total = inner.window.len();
                let failed = inner.window.iter().filter(|(_, f)| *f).count();
                inner.consecutive >= self.cfg.consecutive_failures
                    || (total >= self.cfg.min_calls as usize
                        && failed as f64 >= self.cfg.failure_rate * total as f64)
            }
        };
        inner.trial_out = false;
        if !trip {
            return None;
        }
        inner.times_opened += 1;
        let base = self.cfg.open_for.as_secs_f64() * f64::from(inner.times_opened);
        let capped = base.min(self.cfg.max_open_for.as_secs_f64());
        // ±10 % so breakers opened together do not all probe at the same instant. Config bounds
        // every duration, but a breaker built from a hand-made config must not panic either.
        let open_for = Duration::try_from_secs_f64(capped * crate::retry::jitter(0.9, 1.1))
            .unwrap_or(self.cfg.max_open_for);
        inner.state = BreakerState::Open;
        inner.open_until = crate::deadline::after_tokio(now, open_for);
        inner.window.clear();
        self.tripped.store(true, Ordering::Relaxed);
        Some(open_for)
    }

    /// Opens the breaker for `open_for` because another instance of the cluster saw the
    /// upstream fail (its breaker opened). An already open breaker keeps the later deadline;
    /// when it expires, one trial call decides as for a breaker opened here. Returns whether
    /// this closed breaker opened.
    pub fn open_remotely(&self, open_for: Duration) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let until = crate::deadline::after_tokio(now, open_for.min(self.cfg.max_open_for));
        let was_closed = inner.state == BreakerState::Closed;
        if inner.state != BreakerState::Open || inner.open_until < until {
            inner.open_until = until;
        }
        inner.state = BreakerState::Open;
        inner.trial_out = false;
        inner.window.clear();
        self.tripped.store(true, Ordering::Relaxed);
        was_closed
    }

    /// The share of recent calls (within `window`, at least [`MIN_RATE_CALLS`] of them) that
    /// succeeded; `None` with fewer. `lowest_latency` weighs latency by it.
    pub fn success_rate(&self) -> Option<f64> {
        let now = Instant::now();
        let inner = self.lock();
        let (mut calls, mut ok) = (0usize, 0usize);
        for (_, failed) in inner
            .window
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= self.cfg.window)
        {
            calls += 1;
            ok += usize::from(!*failed);
        }
        (calls >= MIN_RATE_CALLS).then(|| ok as f64 / calls as f64)
    }

    /// Frees a half-open trial whose call ended without a verdict on the upstream.
    pub fn release_trial(&self) {
        if self.tripped.load(Ordering::Relaxed) {
            self.lock().trial_out = false;
        }
    }

    /// Seconds until an open breaker lets a trial through (0 when not open).
    pub fn open_remaining(&self) -> Duration {
        if !self.tripped.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        self.lock()
            .open_until
            .saturating_duration_since(Instant::now())
    }
}

fn push(window: &mut VecDeque<(Instant, bool)>, now: Instant, failed: bool, span: Duration) {
    while window
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > span)
    {
        window.pop_front();
    }
    if window.len() >= WINDOW_CAP {
        window.pop_front();
    }
    window.push_back((now, failed));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_recovers_through_one_trial() {
        let b = breaker();
        for _ in 0..4 {
            assert_eq!(b.failure(), None);
        }
        b.success();
        for _ in 0..4 {
            assert_eq!(b.failure(), None, "a success resets the run");
        }
        let open_for = b.failure().unwrap_or_default();
        assert!(open_for >= Duration::from_secs(27) && open_for <= Duration::from_secs(33));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admission::Rejected);

        tokio::time::advance(Duration::from_secs(34)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admission::Trial);
        assert_eq!(b.admit(), Admission::Rejected, "only one trial at a time");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_for_longer_up_to_the_cap() {
        let b = breaker();
        for _ in 0..5 {
            b.failure();
        }
        let mut last = Duration::ZERO;
        for round in 2..=12u32 {
            tokio::time::advance(Duration::from_secs(400)).await;
            assert_eq!(b.admit(), Admission::Trial);
            let open_for = b.failure().unwrap_or_default();
            let expected = (30.0 * f64::from(round)).min(300.0);
            assert!(
                (open_for.as_secs_f64() - expected).abs() <= expected * 0.1 + 0.001,
                "round {round}: {open_for:?}"
            );
            assert!(open_for >= last.mul_f64(0.8));
            last = open_for;
        }
        assert!(last <= Duration::from_secs(330));
    }

    #[tokio::test(start_paused = true)]
    async fn an_enormous_open_time_does_not_panic() {
        let b = Breaker::new(BreakerConfig {
            open_for: Duration::MAX,
            max_open_for: Duration::MAX,
            ..BreakerConfig::default()
        });
        for _ in 0..4 {
            b.failure();
        }
        assert!(b.failure().is_some());
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.open_remaining() > Duration::from_secs(86_400 * 365));
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(b.admit(), Admission::Rejected);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_over_enough_calls() {
        let b = breaker();
        // Alternate: never 5 in a row, but 50 % over 20 calls.
        for i in 0..19 {
            if i % 2 == 0 {
                assert_eq!(b.failure(), None);
            } else {
                b.success();
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.success();
        assert!(b.failure().is_some(), "10 of 21 failed → open");
    }

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_leave_the_window() {
        let b = breaker();
        for _ in 0..15 {
            b.failure();
            b.success();
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        for _ in 0..4 {
            assert_eq!(b.failure(), None);
            b.success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// Another instance's breaker opened: this one opens too, keeps the later deadline, and
    /// lets one trial through when it expires.
    #[tokio::test(start_paused = true)]
    async fn a_remote_opening_opens_until_its_deadline_then_trials() {
        let b = breaker();
        assert!(b.open_remotely(Duration::from_secs(10)));
        assert_eq!(b.admit(), Admission::Rejected);
        assert!(!b.open_remotely(Duration::from_secs(2)), "already open");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::Open, "the later deadline holds");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.admit(), Admission::Trial);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}

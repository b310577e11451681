//! Retry pacing: `Retry-After` parsing, how long a throttled key rests, the retry budget,
//! backoff and jitter (what a failure *is* lives in `call::failure`).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// `Retry-After` as seconds: the one parser of that header (attempts and health probes alike).
///
/// The header comes from the network, so anything goes: garbage (text, negative, NaN, inf,
/// the HTTP-date form — rare from LLM providers) is treated as absent, and a number too large
/// for any clock (`1e20`) is clamped to [`llmux_config::MAX_DURATION`]. Callers cap the result
/// further at `routing.max_cooldown` (see [`rest`]).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let parsed = match v.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 => {
                // Finite and not negative: only "too large" can fail here.
                Some(Duration::try_from_secs_f64(f).unwrap_or(llmux_config::MAX_DURATION))
            }
            _ => None,
        },
    };
    parsed.map(|d| d.min(llmux_config::MAX_DURATION))
}

/// How long a throttled key (or upstream) rests: `Retry-After` when given, else `cooldown`,
/// never longer than `max_cooldown`.
pub fn rest(retry_after: Option<Duration>, cooldown: Duration, max_cooldown: Duration) -> Duration {
    retry_after.unwrap_or(cooldown).min(max_cooldown)
}

/// Bounds retries to a fraction of calls plus a small floor, over a sliding 10 s window, so a
/// failing upstream cannot multiply the load on the others.
pub struct RetryBudget {
    ratio: f64,
    inner: Mutex<Window>,
}

/// Retries always allowed per second of window, whatever the call volume, so a quiet gateway can still retry.
const FLOOR_PER_SEC: f64 = 10.0;
const SLOTS: usize = 10;

struct Window {
    start: Instant,
    /// (second index, calls, retries) per slot.
    slots: [(u64, u64, u64); SLOTS],
}

impl RetryBudget {
    pub fn new(ratio: f64) -> RetryBudget {
        RetryBudget {
            ratio,
            inner: Mutex::new(Window {
                start: Instant::now(),
                slots: [(u64::MAX, 0, 0); SLOTS],
            }),
        }
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut Window, usize, u64) -> R) -> R {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let sec = w.start.elapsed().as_secs();
        let i = (sec % SLOTS as u64) as usize;
        if w.slots[i].0 != sec {
            w.slots[i] = (sec, 0, 0);
        }
        f(&mut w, i, sec)
    }

    /// Counts a call (not a retry).
    pub fn deposit(&self) {
        self.with_slot(|w, i, _| w.slots[i].1 += 1);
    }

    /// Asks to retry; counts the retry when allowed.
    pub fn try_withdraw(&self) -> bool {
        let ratio = self.ratio;
        self.with_slot(|w, i, sec| {
            let live =
                |s: &&(u64, u64, u64)| s.0 != u64::MAX && sec.saturating_sub(s.0) < SLOTS as u64;
            let calls: u64 = w.slots.iter().filter(live).map(|s| s.1).sum();
            let retries: u64 = w.slots.iter().filter(live).map(|s| s.2).sum();
            let allowed = ratio * calls as f64 + FLOOR_PER_SEC * SLOTS as f64;
            if (retries as f64) < allowed {
                w.slots[i].2 += 1;
                true
            } else {
                false
            }
        })
    }
}

/// A factor in `[lo, hi)` from rand's thread-local generator, for spreading timers.
pub fn jitter(lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rand::random::<f64>()
}

/// Backoff before retrying the very same target: 50 ms, 100 ms, 200 ms … (±50 %), at most 1 s.
pub fn backoff(retry: u32) -> Duration {
    let base = 0.05 * f64::from(1u32 << retry.min(5));
    Duration::from_secs_f64(base.min(1.0) * jitter(0.5, 1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_retry_after_values_are_clamped_or_ignored() {
        let s = |v: &str| parse_retry_after(v);
        assert_eq!(s("1e20"), Some(llmux_config::MAX_DURATION));
        assert_eq!(s("18446744073709551616"), Some(llmux_config::MAX_DURATION));
        assert_eq!(s("18446744073709551615"), Some(llmux_config::MAX_DURATION));
        assert_eq!(s("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(s(" 30 "), Some(Duration::from_secs(30)));
        for garbage in [
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "",
            "soon",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "1e400",
        ] {
            // "1e400" parses as f64 infinity: not a number of seconds either.
            assert_eq!(s(garbage), None, "{garbage:?}");
        }
        let (cooldown, max) = (Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(rest(s("1e20"), cooldown, max), max);
        assert_eq!(rest(s("garbage"), cooldown, max), cooldown);
        assert_eq!(rest(s("7"), cooldown, max), Duration::from_secs(7));
    }

    /// Random and edge-case header values: never a panic, always within bounds.
    #[test]
    fn retry_after_fuzz() {
        const PARTS: [&str; 16] = [
            "0",
            "1",
            "9",
            ".",
            "e",
            "E",
            "+",
            "-",
            "20",
            "308",
            "400",
            " ",
            "inf",
            "NaN",
            "18446744073709551615",
            "x",
        ];
        let mut x: u64 = 0x5eed_0f2e_72ab_1e01;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (cooldown, max) = (Duration::from_secs(60), Duration::from_secs(300));
        for _ in 0..50_000 {
            let n = 1 + (next() % 6) as usize;
            let text: String = (0..n)
                .map(|_| PARTS[(next() % PARTS.len() as u64) as usize])
                .collect();
            let float = f64::from_bits(next()).to_string();
            for v in [text, float, (next() >> (next() % 64)).to_string()] {
                if let Some(d) = parse_retry_after(&v) {
                    assert!(d <= llmux_config::MAX_DURATION, "{v:?} gave {d:?}");
                }
                assert!(rest(parse_retry_after(&v), cooldown, max) <= max);
                let _ = crate::call::failure::classify_status(
                    reqwest::StatusCode::TOO_MANY_REQUESTS,
                    Some(&v),
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_floor_then_a_fraction_of_calls() {
        let b = RetryBudget::new(0.2);
        let mut granted = 0;
        for _ in 0..1000 {
            if b.try_withdraw() {
                granted += 1;
            }
        }
        assert_eq!(granted, 100, "the floor: 10/s over a 10 s window");
        for _ in 0..500 {
            b.deposit();
        }
        let mut more = 0;
        while b.try_withdraw() {
            more += 1;
        }
        assert_eq!(more, 100, "20 % of 500 calls");
        // The window slides: after 10 s the old retries no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.try_withdraw());
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = jitter(0.9, 1.1);
            assert!((0.9..1.1).contains(&j));
        }
        assert!(backoff(0) <= Duration::from_millis(75));
        assert!(backoff(10) <= Duration::from_millis(1500));
    }
}

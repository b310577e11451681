//! The in-process limiter: GCRA per key in sharded maps, and concurrent-call counters.

use super::{Check, Decision};
use llmux_config::Rate;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Shards spread the lock traffic of unrelated keys (IPs, virtual keys) over many mutexes, each
/// held for a few arithmetic operations.
const SHARDS: usize = 32;
/// Below this many keys a shard is never swept. Above it, a sweep drops the keys whose state
/// has fully drained (they equal a fresh key) once the shard has taken in half its size in new
/// keys since the last sweep: a sweep costs O(len) and comes once per len/2 inserts, so each
/// insert pays O(1) amortised, however many live keys a flood of addresses leaves behind.
const SWEEP_AT: usize = 4096;
/// Most keys a shard holds (about 520k over all shards, some tens of MB).
const CAP: usize = 16_384;
/// Keys whose number a client controls (one per source address). Only these are evicted.
const EVICTABLE_PREFIX: &str = "ip:";
/// How many keys an eviction looks at.
const EVICT_SAMPLE: usize = 32;

/// One GCRA step. `tat` is the key's theoretical arrival time (ns since the limiter's epoch);
/// a rate of `count` per `per` lets `count` calls through at once, then one per `per / count`.
/// Returns the decision and, when allowed, the new `tat`.
///
/// A cost above the whole limit is charged as the whole limit: a large request passes when the
/// key is idle instead of never, and reconciliation charges the rest afterwards.
pub(crate) fn gcra(now: u64, tat: u64, rate: Rate, cost: u64) -> (Decision, Option<u64>) {
    let period = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
    let interval = (period / rate.count.max(1)).max(1);
    let cost = cost.min(rate.count);
    let base = tat.max(now);
    let new_tat = base.saturating_add(cost.saturating_mul(interval));
    let allow_at = new_tat.saturating_sub(period);
    if allow_at <= now {
        let used = new_tat - now;
        let d = Decision {
            allowed: true,
            limit: rate.count,
            remaining: period.saturating_sub(used) / interval,
            reset: Duration::from_nanos(used),
            retry_after: Duration::ZERO,
        };
        (d, Some(new_tat))
    } else {
        let used = base - now;
        let d = Decision {
            allowed: false,
            limit: rate.count,
            remaining: period.saturating_sub(used) / interval,
            reset: Duration::from_nanos(used),
            retry_after: Duration::from_nanos(allow_at - now),
        };
        (d, None)
    }
}

/// One shard's counters: key → its theoretical arrival time (ns since the limiter's epoch).
#[derive(Default)]
struct Shard {
    tats: HashMap<Box<str>, u64>,
    /// New keys taken in since the last sweep.
    inserted: usize,
    #[cfg(test)]
    sweeps: usize,
}

impl Shard {
    fn get(&self, key: &str) -> Option<u64> {
        self.tats.get(key).copied()
    }

    fn insert(&mut self, key: &str, tat: u64, now: u64) {
        if let Some(t) = self.tats.get_mut(key) {
            *t = tat;
            return;
        }
        let len = self.tats.len();
        if len >= SWEEP_AT && self.inserted >= len / 2 {
            self.tats.retain(|_, t| *t > now);
            self.inserted = 0;
            #[cfg(test)]
            {
                self.sweeps += 1;
            }
        }
        if self.tats.len() >= CAP {
            self.evict_one(now);
        }
        self.inserted += 1;
        self.tats.insert(key.into(), tat);
    }

    /// Full of live keys: makes room by dropping, among a bounded sample of per-address keys,
    /// the one closest to drained. Refusing the new address instead would let a flood of
    /// addresses lock every newcomer out; evicting costs at most the early return of a small
    /// burst to the evicted address, and the global limit still holds. Keys a client cannot
    /// mint (virtual keys, the global counter) are never evicted: the shard may exceed its cap
    /// for them, but their number is bounded by the key store.
    fn evict_one(&mut self, now: u64) {
        let victim = self
            .tats
            .iter()
            .filter(|(k, _)| k.starts_with(EVICTABLE_PREFIX))
            .take(EVICT_SAMPLE)
            .min_by_key(|(_, t)| **t)
            .map(|(k, t)| (k.clone(), *t));
        if let Some((key, tat)) = victim {
            if tat > now {
                note_eviction();
            }
            self.tats.remove(&key);
        }
    }
}

/// Live per-address counters evicted because a shard was full (logged at most once a minute).
fn note_eviction() {
    static LAST_LOG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = crate::upstream::unix_now();
    let last = LAST_LOG.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + 60
        && LAST_LOG
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(
            "per-address rate-limit table full: evicting live counters of the least active addresses"
        );
    }
}

/// Rates kept in this process.
pub struct MemoryLimiter {
    epoch: Instant,
    shards: Box<[Mutex<Shard>]>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves plain integers behind: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryLimiter {
    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    fn shard(key: &str) -> usize {
        (crate::routing::fnv1a(key.as_bytes()) % SHARDS as u64) as usize
    }

    /// Checks every rate and charges them all only when all allow the call, so a call refused
    /// by its token limit does not use up a request.
    pub fn check(&self, checks: &[Check]) -> Vec<Decision> {
        let now = self.now();
        // Lock every shard involved, in index order (no deadlock between two checks), so the
        // all-or-nothing update is atomic.
        let mut idx: Vec<usize> = checks.iter().map(|c| Self::shard(&c.key)).collect();
        let order = {
            let mut o = idx.clone();
            o.sort_unstable();
            o.dedup();
            o
        };
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            order.iter().map(|&i| lock(&self.shards[i])).collect();
        for i in &mut idx {
            *i = order.iter().position(|o| o == i).unwrap_or(0);
        }
        let mut decisions = Vec::with_capacity(checks.len());
        let mut updates = Vec::with_capacity(checks.len());
        for (c, &g) in checks.iter().zip(&idx) {
            let tat = guards[g].get(c.key.as_str()).unwrap_or(0);
            let (d, new_tat) = gcra(now, tat, c.rate, c.cost);
            decisions.push(d);
            updates.push(new_tat);
        }
        if decisions.iter().all(|d| d.allowed) {
            for ((c, &g), tat) in checks.iter().zip(&idx).zip(updates) {
                if let Some(tat) = tat {
                    guards[g].insert(c.key.as_str(), tat, now);
                }
            }
        }
        decisions
    }

    /// Charges (or refunds, when negative) `delta` units of `check`'s rate without refusing
    /// anything: reconciling an estimate with what was really used.
    pub fn adjust(&self, check: &Check, delta: i64) {
        let now = self.now();
        let period = u64::try_from(check.rate.per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / check.rate.count.max(1)).max(1);
        let mut map = lock(&self.shards[Self::shard(&check.key)]);
        let tat = map.get(check.key.as_str()).unwrap_or(0).max(now);
        let step = delta.unsigned_abs().saturating_mul(interval);
        let new_tat = if delta >= 0 {
            // Debt is capped at one period so a huge overrun blocks a key for a window, not forever.
            tat.saturating_add(step).min(now.saturating_add(period * 2))
        } else {
            tat.saturating_sub(step).max(now)
        };
        map.insert(check.key.as_str(), new_tat, now);
    }
}

/// Calls in flight per key, in this process.
#[derive(Default)]
pub struct Concurrency {
    slots: Mutex<HashMap<Box<str>, u32>>,
}

/// Holds one concurrent-call slot of a key; dropping it frees the slot.
pub struct ConcurrencyGuard {
    owner: Arc<Concurrency>,
    key: Box<str>,
}

impl std::fmt::Debug for ConcurrencyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyGuard")
            .field("key", &self.key)
            .finish()
    }
}

impl Concurrency {
    /// A slot of `key` when fewer than `limit` are taken; otherwise how many are.
    pub fn acquire(self: &Arc<Self>, key: &str, limit: u32) -> Result<ConcurrencyGuard, u32> {
        let mut slots = lock(&self.slots);
        let n = slots.entry(key.into()).or_insert(0);
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(ConcurrencyGuard {
            owner: Arc::clone(self),
            key: key.into(),
        })
    }

    /// Slots of `key` taken now.
    pub fn in_use(&self, key: &str) -> u32 {
        lock(&self.slots).get(key).copied().unwrap_or(0)
    }
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        let mut slots = lock(&self.owner.slots);
        if let Some(n) = slots.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(key: &str, rate: &str, cost: u64) -> Check {
        Check {
            key: key.into(),
            rate: rate.parse().unwrap(),
            cost,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_per_minute_then_one_every_twelve_seconds() {
        let l = MemoryLimiter::default();
        let c = [check("k", "5/min", 1)];
        for left in (0..5).rev() {
            let d = l.check(&c)[0];
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = l.check(&c)[0];
        assert!(!d.allowed);
        assert_eq!(d.limit, 5);
        assert_eq!(d.retry_after, Duration::from_secs(12));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!l.check(&c)[0].allowed);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.check(&c)[0].allowed);
        assert!(!l.check(&c)[0].allowed);
        // A full minute idle: the whole burst again.
        tokio::time::advance(Duration::from_secs(60)).await;
        let ok = (0..10).filter(|_| l.check(&c)[0].allowed).count();
        assert_eq!(ok, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn all_or_nothing_and_keys_are_independent() {
        let l = MemoryLimiter::default();
        let rpm = check("k:rpm", "10/min", 1);
        let tpm = check("k:tpm", "100/min", 60);
        assert!(l
            .check(&[rpm.clone(), tpm.clone()])
            .iter()
            .all(|d| d.allowed));
        // The token limit refuses: the request is not charged.
        let d = l.check(&[rpm.clone(), tpm.clone()]);
        assert!(d[0].allowed && !d[1].allowed);
        assert_eq!(l.check(std::slice::from_ref(&rpm))[0].remaining, 8);
        assert!(l.check(&[check("other", "1/min", 1)])[0].allowed);
        // Reconciled: the call used 10 tokens, not 60, so another 60-token call fits.
        l.adjust(&tpm, -50);
        assert!(l.check(std::slice::from_ref(&tpm))[0].allowed);
        // Overrun charged afterwards.
        l.adjust(&tpm, 500);
        assert!(!l.check(&[check("k:tpm", "100/min", 1)])[0].allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cost_above_the_limit_passes_when_idle() {
        let l = MemoryLimiter::default();
        let d = l.check(&[check("t", "100/min", 1000)])[0];
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!l.check(&[check("t", "100/min", 1)])[0].allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn drained_keys_are_swept() {
        let l = MemoryLimiter::default();
        for i in 0..(SHARDS * SWEEP_AT * 2) {
            l.check(&[check(&format!("ip:old:{i}"), "1/s", 1)]);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // A sweep comes once a shard took in half its size in new keys.
        for i in 0..(SHARDS * SWEEP_AT * 3) {
            l.check(&[check(&format!("ip:new:{i}"), "1/s", 1)]);
        }
        let old: usize = l
            .shards
            .iter()
            .map(|s| {
                lock(s)
                    .tats
                    .keys()
                    .filter(|k| k.starts_with("ip:old"))
                    .count()
            })
            .sum();
        assert_eq!(old, 0);
    }

    /// A strict rate and a flood of distinct addresses: every counter stays live, yet the table
    /// stays under its cap, sweeps stay rare (not one per insert), and counters a client cannot
    /// mint are never evicted.
    #[tokio::test(start_paused = true)]
    async fn a_flood_of_live_addresses_is_capped_and_sweeps_stay_rare() {
        let l = MemoryLimiter::default();
        assert!(l.check(&[check("global", "1/h", 1)])[0].allowed);
        let n = SHARDS * CAP * 3 / 2;
        for i in 0..n {
            assert!(l.check(&[check(&format!("ip:{i}"), "1/h", 1)])[0].allowed);
        }
        let (total, sweeps) = l.shards.iter().fold((0, 0), |(t, s), sh| {
            let sh = lock(sh);
            (t + sh.tats.len(), s + sh.sweeps)
        });
        assert!(total <= SHARDS * CAP + 1, "{total} keys");
        assert!(sweeps * 1000 < n, "{sweeps} sweeps for {n} inserts");
        assert!(
            !l.check(&[check("global", "1/h", 1)])[0].allowed,
            "the global counter survived"
        );
        // The newest addresses are still limited.
        assert!(!l.check(&[check(&format!("ip:{}", n - 1), "1/h", 1)])[0].allowed);
    }

    #[test]
    fn concurrency_slots_free_on_drop() {
        let c = Arc::new(Concurrency::default());
        let a = c.acquire("k", 2).unwrap();
        let _b = c.acquire("k", 2).unwrap();
        assert_eq!(c.acquire("k", 2).unwrap_err(), 2);
        drop(a);
        assert_eq!(c.in_use("k"), 1);
        assert!(c.acquire("k", 2).is_ok());
        assert!(c.acquire("other", 1).is_ok());
    }

    /// The limiter runs on every call: it must cost well under a microsecond or two.
    #[test]
    fn cheap_enough_for_every_call() {
        let l = MemoryLimiter::default();
        let checks = [
            check("ip:10.0.0.1", "1000000/s", 1),
            check("global", "1000000/s", 1),
        ];
        let n = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(l.check(&checks));
        }
        let per = t.elapsed() / n;
        eprintln!("in-memory limiter: {per:?} per check of two counters");
        // Generous for an unoptimized test build on a shared 2-core machine.
        assert!(per < Duration::from_micros(20), "{per:?} per check");
    }
}

//! A provider's key pool: each key is `ok`, `cooling` until an instant, or `disabled` with a reason.
//!
//! The state of a key is one atomic word, so picking a key on the hot path takes no lock:
//! `0` = ok, `u64::MAX` = disabled, anything else = cooling until that many ms after `base`.

use llmux_config::Secret;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const OK: u64 = 0;
const DISABLED: u64 = u64::MAX;

/// What the admin API shows of a key.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyState {
    Ok,
    Cooling { remaining: Duration },
    Disabled { reason: String, since: SystemTime },
}

impl KeyState {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyState::Ok => "ok",
            KeyState::Cooling { .. } => "cooling",
            KeyState::Disabled { .. } => "disabled",
        }
    }
}

pub struct Key {
    /// Stable within a config: `k0`, `k1`, … in the order the keys are listed.
    pub id: String,
    pub secret: Secret,
    state: AtomicU64,
    /// Why and when the key was disabled; read by the admin API and the re-checker only.
    disabled: Mutex<Option<(String, SystemTime, Instant)>>,
    /// Disabled by hand (admin API): the re-checker leaves it alone; only `enable` revives it.
    by_hand: AtomicBool,
    /// Attempts made with this key: answered, failed, and the answered ones' total time to
    /// the first byte (µs) — the admin API's per-key success rate and latency.
    answered: AtomicU64,
    failed: AtomicU64,
    latency_us: AtomicU64,
}

impl Key {
    /// An attempt with this key got an answer after `latency` (to the first byte).
    pub fn answered(&self, latency: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_us.fetch_add(us, Ordering::Relaxed);
    }

    /// An attempt with this key failed (throttled, refused, or the upstream failed).
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// `(success_rate, mean latency in ms)` of the attempts made with this key; `None` before any.
    pub fn stats(&self) -> (Option<f64>, Option<f64>) {
        let ok = self.answered.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let rate = (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64);
        let latency =
            (ok > 0).then(|| self.latency_us.load(Ordering::Relaxed) as f64 / ok as f64 / 1000.0);
        (rate, latency)
    }
}

pub struct KeyPool {
    /// The upstream's name, for alerts.
    owner: String,
    keys: Vec<Key>,
    cursor: AtomicUsize,
    base: Instant,
}

/// A key chosen for one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPick(pub usize);

impl KeyPool {
    pub fn new(owner: &str, secrets: &[Secret]) -> KeyPool {
        KeyPool {
            owner: owner.to_string(),
            keys: secrets
                .iter()
                .enumerate()
                .map(|(i, s)| Key {
                    id: format!("k{i}"),
                    secret: s.clone(),
                    state: AtomicU64::new(OK),
                    disabled: Mutex::new(None),
                    by_hand: AtomicBool::new(false),
                    answered: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    latency_us: AtomicU64::new(0),
                })
                .collect(),
            cursor: AtomicUsize::new(0),
            base: Instant::now(),
        }
    }

    /// Takes over the state (ok, cooling, disabled and why) of every key of `old` whose secret
    /// is also in this pool, after a reload rebuilt the upstream. New keys start ok.
    pub fn carry_over(&mut self, old: &KeyPool) {
        // Cooling deadlines count from `base`: share the old one so they keep their meaning.
        self.base = old.base;
        self.cursor = AtomicUsize::new(old.cursor.load(Ordering::Relaxed));
        for k in &mut self.keys {
            let Some(prev) = old
                .keys
                .iter()
                .find(|o| o.secret.expose() == k.secret.expose())
            else {
                continue;
            };
            k.state = AtomicU64::new(prev.state.load(Ordering::Relaxed));
            let disabled = prev.disabled.lock().map(|d| d.clone()).unwrap_or(None);
            k.disabled = Mutex::new(disabled);
            k.by_hand = AtomicBool::new(prev.by_hand.load(Ordering::Relaxed));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn get(&self, pick: KeyPick) -> Option<&Key> {
        self.keys.get(pick.0)
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn find(&self, id: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.id == id)
    }

    fn now_ms(&self) -> u64 {
        // +1 so that "cooling until base" is never the OK sentinel.
        self.base
            .elapsed()
            .as_millis()
            .min(u128::from(u64::MAX - 2)) as u64
            + 1
    }

    fn usable(&self, i: usize, now_ms: u64) -> bool {
        match self.keys.get(i).map(|k| k.state.load(Ordering::Relaxed)) {
            Some(OK) => true,
            Some(DISABLED) | None => false,
            Some(until) => until <= now_ms,
        }
    }

    /// Whether any key can be used now.
    pub fn has_usable(&self) -> bool {
        let now = self.now_ms();
        (0..self.keys.len()).any(|i| self.usable(i, now))
    }

    /// The next usable key in rotation, skipping `tried`. With `affinity` the choice is fixed by
    /// the session, so calls of one session keep their key while the set of usable keys holds.
    pub fn pick(&self, affinity: Option<u64>, tried: &[usize]) -> Option<KeyPick> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms();
        let ok = |i: &usize| !tried.contains(i) && self.usable(*i, now);
        let usable = (0..n).filter(ok).count();
        if usable == 0 {
            return None;
        }
        // Rotate over the usable keys only, so each good key gets an equal share.
        let turn = match affinity {
            Some(h) => h,
            None => self.cursor.fetch_add(1, Ordering::Relaxed) as u64,
        };
        let nth = (turn % usable as u64) as usize;
        (0..n).filter(ok).nth(nth).map(KeyPick)
    }

    /// When no key is usable: the cooling key that comes back first (disabled keys are never used).
    pub fn soonest_cooling(&self, tried: &[usize]) -> Option<KeyPick> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, _)| !tried.contains(i))
            .filter_map(|(i, k)| match k.state.load(Ordering::Relaxed) {
                OK | DISABLED => None,
                until => Some((until, i)),
            })
            .min()
            .map(|(_, i)| KeyPick(i))
    }

    /// Rests a rate-limited key for `for_`.
    pub fn cool(&self, pick: KeyPick, for_: Duration) {
        if let Some(k) = self.keys.get(pick.0) {
            let until = self.now_ms() + for_.as_millis().min(u128::from(u32::MAX)) as u64;
            // A disabled key stays disabled; a longer cooldown is not shortened.
            let _ = k
                .state
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                    (cur != DISABLED && (cur == OK || cur < until)).then_some(until)
                });
        }
    }

    /// Takes a key out of rotation until it is re-checked or re-enabled. Returns true if this call disabled it.
    pub fn disable(&self, pick: KeyPick, reason: &str) -> bool {
        let Some(k) = self.keys.get(pick.0) else {
            return false;
        };
        if !self.disable_quietly(pick, reason) {
            return false;
        }
        crate::alerts::emit(crate::alerts::Alert::KeyDisabled {
            upstream: self.owner.clone(),
            key_id: k.id.clone(),
            reason: reason.to_string(),
        });
        true
    }

    /// [`KeyPool::disable`] without the alert: another instance of the cluster disabled the
    /// key and alerted already. Returns true if this call disabled it.
    pub fn disable_quietly(&self, pick: KeyPick, reason: &str) -> bool {
        let Some(k) = self.keys.get(pick.0) else {
            return false;
        };
        if k.state.swap(DISABLED, Ordering::Relaxed) == DISABLED {
            return false;
        }
        if let Ok(mut d) = k.disabled.lock() {
            *d = Some((reason.to_string(), SystemTime::now(), Instant::now()));
        }
        true
    }

    /// Re-enables key `i` because its re-check passed elsewhere (the cluster's prober), unless
    /// it is not disabled or was disabled by hand here. Returns true if it was re-enabled.
    pub fn enable_rechecked(&self, i: usize) -> bool {
        let Some(k) = self.keys.get(i) else {
            return false;
        };
        if k.state.load(Ordering::Relaxed) != DISABLED || k.by_hand.load(Ordering::Relaxed) {
            return false;
        }
        self.enable(i)
    }

    pub fn enable(&self, i: usize) -> bool {
        let Some(k) = self.keys.get(i) else {
            return false;
        };
        if let Ok(mut d) = k.disabled.lock() {
            *d = None;
        }
        k.by_hand.store(false, Ordering::Relaxed);
        k.state.store(OK, Ordering::Relaxed);
        true
    }

    /// Takes key `i` out of rotation by hand (an operator's decision, so no alert): it stays
    /// disabled — the re-checker skips it — until [`KeyPool::enable`].
    pub fn disable_by_hand(&self, i: usize, reason: &str) -> bool {
        let Some(k) = self.keys.get(i) else {
            return false;
        };
        if let Ok(mut d) = k.disabled.lock() {
            *d = Some((reason.to_string(), SystemTime::now(), Instant::now()));
        }
        k.by_hand.store(true, Ordering::Relaxed);
        k.state.store(DISABLED, Ordering::Relaxed);
        true
    }

    pub fn state(&self, i: usize) -> KeyState {
        let Some(k) = self.keys.get(i) else {
            return KeyState::Ok;
        };
        match k.state.load(Ordering::Relaxed) {
            OK => KeyState::Ok,
            DISABLED => {
                let (reason, since) = k
                    .disabled
                    .lock()
                    .ok()
                    .and_then(|d| d.as_ref().map(|(r, s, _)| (r.clone(), *s)))
                    .unwrap_or_else(|| (String::new(), SystemTime::now()));
                KeyState::Disabled { reason, since }
            }
            until => {
                let now = self.now_ms();
                if until <= now {
                    KeyState::Ok
                } else {
                    KeyState::Cooling {
                        remaining: Duration::from_millis(until - now),
                    }
                }
            }
        }
    }

    /// Disabled keys whose last check is at least `every` old, due for a re-check.
    pub fn due_for_recheck(&self, every: Duration) -> Vec<usize> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.state.load(Ordering::Relaxed) == DISABLED)
            .filter(|(_, k)| !k.by_hand.load(Ordering::Relaxed))
            .filter(|(_, k)| {
                k.disabled
                    .lock()
                    .ok()
                    .and_then(|d| d.as_ref().map(|(_, _, at)| at.elapsed() >= every))
                    .unwrap_or(true)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// A re-check failed: keep the key disabled and restart its re-check clock.
    pub fn recheck_failed(&self, i: usize, reason: &str) {
        if let Some(k) = self.keys.get(i) {
            if let Ok(mut d) = k.disabled.lock() {
                let since = d.as_ref().map_or_else(SystemTime::now, |(_, s, _)| *s);
                *d = Some((reason.to_string(), since, Instant::now()));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(n: usize) -> KeyPool {
        let secrets: Vec<Secret> = (0..n).map(|i| Secret::new(format!("sk-{i}"))).collect();
        KeyPool::new("test", &secrets)
    }

    #[tokio::test(start_paused = true)]
    async fn rotation_skips_cooling_and_disabled_keys() {
        let p = pool(4);
        p.disable(KeyPick(1), "HTTP 401");
        p.cool(KeyPick(2), Duration::from_secs(30));
        let picks: Vec<usize> = (0..6).map(|_| p.pick(None, &[]).unwrap().0).collect();
        assert!(picks.iter().all(|&i| i == 0 || i == 3), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&3));
        assert_eq!(p.state(1).as_str(), "disabled");
        assert_eq!(p.state(2).as_str(), "cooling");

        // The cooldown ends by itself; the disabled key stays out.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(p.state(2), KeyState::Ok);
        let picks: Vec<usize> = (0..8).map(|_| p.pick(None, &[]).unwrap().0).collect();
        assert!(picks.contains(&2));
        assert!(!picks.contains(&1));
        p.enable(1);
        let picks: Vec<usize> = (0..8).map(|_| p.pick(None, &[]).unwrap().0).collect();
        assert!(picks.contains(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn tried_keys_are_not_picked_again_in_one_call() {
        let p = pool(3);
        assert_eq!(p.pick(Some(0), &[0, 1]).unwrap().0, 2);
        assert_eq!(p.pick(Some(0), &[0, 1, 2]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn affinity_keeps_a_key_while_usable() {
        let p = pool(5);
        let first = p.pick(Some(42), &[]).unwrap();
        for _ in 0..5 {
            assert_eq!(p.pick(Some(42), &[]).unwrap(), first);
        }
        p.cool(first, Duration::from_secs(5));
        assert_ne!(p.pick(Some(42), &[]).unwrap(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn soonest_cooling_and_recheck_schedule() {
        let p = pool(2);
        p.cool(KeyPick(0), Duration::from_secs(50));
        p.cool(KeyPick(1), Duration::from_secs(10));
        assert!(!p.has_usable());
        assert_eq!(p.soonest_cooling(&[]), Some(KeyPick(1)));

        let p = pool(2);
        assert!(p.disable(KeyPick(0), "HTTP 401"));
        assert!(
            !p.disable(KeyPick(0), "again"),
            "disabling twice reports once"
        );
        assert!(p.due_for_recheck(Duration::from_secs(300)).is_empty());
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(p.due_for_recheck(Duration::from_secs(300)), vec![0]);
        p.recheck_failed(0, "still 401");
        assert!(p.due_for_recheck(Duration::from_secs(300)).is_empty());
        // A cooldown never revives a disabled key.
        p.cool(KeyPick(0), Duration::from_secs(1));
        assert_eq!(p.state(0).as_str(), "disabled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_disabled_by_hand_is_never_rechecked_and_survives_a_reload_until_enabled() {
        let p = pool(2);
        assert!(p.disable_by_hand(1, "disabled by ann"));
        assert!(
            matches!(p.state(1), KeyState::Disabled { ref reason, .. } if reason == "disabled by ann")
        );
        let picks: Vec<usize> = (0..6).map(|_| p.pick(None, &[]).unwrap().0).collect();
        assert!(picks.iter().all(|&i| i == 0), "{picks:?}");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(p.due_for_recheck(Duration::from_secs(300)).is_empty());
        let mut reloaded = pool(2);
        reloaded.carry_over(&p);
        assert!(reloaded
            .due_for_recheck(Duration::from_secs(300))
            .is_empty());
        assert_eq!(reloaded.state(1).as_str(), "disabled");
        reloaded.enable(1);
        assert_eq!(reloaded.state(1), KeyState::Ok);
        // Disabled again by an upstream's 401, it is re-checked as usual.
        reloaded.disable(KeyPick(1), "HTTP 401");
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(reloaded.due_for_recheck(Duration::from_secs(300)), vec![1]);
    }

    /// A cluster's re-enable announcement revives a key disabled after a refusal, not one an
    /// operator disabled by hand, and a quiet disable (another instance's) disables as usual.
    #[test]
    fn a_rechecked_key_comes_back_unless_disabled_by_hand() {
        let p = pool(2);
        assert!(p.disable_quietly(KeyPick(0), "401 seen elsewhere"));
        assert!(!p.disable_quietly(KeyPick(0), "again"), "already disabled");
        assert_eq!(p.state(0).as_str(), "disabled");
        assert!(p.disable_by_hand(1, "operator"));
        assert!(p.enable_rechecked(0));
        assert_eq!(p.state(0), KeyState::Ok);
        assert!(!p.enable_rechecked(1), "an operator's decision stands");
        assert!(!p.enable_rechecked(0), "not disabled");
    }
}

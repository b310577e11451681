//! Virtual keys on the data plane: an `Authenticator` over the store with a short-lived cache.
//!
//! Every data-plane call would otherwise cost a database round trip. Positive answers are kept
//! for [`POSITIVE_TTL`] and dropped at once when the admin API revokes, deletes or edits the
//! key ([`KeyCache::invalidate`]); unknown keys are remembered for [`NEGATIVE_TTL`] in a map of
//! their own (bounded by [`MAX_NEGATIVE`]), so that a flood of garbage tokens cannot evict the
//! valid keys. Expiry is checked on every hit, so a cached key stops working the moment it
//! expires.
//!
//! A revoke always wins: every invalidation bumps a generation counter, and a store answer
//! whose read began before the latest bump is used for that one call but not cached as valid.
//!
//! The store is asked once per key at a time (concurrent calls with the same key wait for that
//! one read), for at most [`STORE_TIMEOUT`]; after a failure it is left alone for a backoff,
//! during which a key seen valid within [`STALE_GRACE`] keeps working and others are refused
//! at once (503, "cannot check the API key right now") instead of each waiting on the store.
//! Once a read has failed, the store counts as down until a read or the `last_used_at` write
//! succeeds: meanwhile a key seen valid is let in on what is known without a read (which
//! would only wait for the timeout), and the write, every [`TOUCH_EVERY`], notices the store's
//! return.
//!
//! The cache also notes which keys are used; [`run_touch`] writes `last_used_at` for them in
//! one transaction every [`TOUCH_EVERY`] and at shutdown, off the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmux_gateway::auth::{AuthError, AuthFuture, Authenticator, Identity};
use llmux_store::{KeyStatus, Store};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// How long a verified key is trusted without asking the store.
pub const POSITIVE_TTL: Duration = Duration::from_secs(10);
/// How long an unknown or wrong key is refused without asking the store.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// How long a key seen valid keeps working while the store cannot be asked. Long enough to
/// ride out a database outage (the data plane serves on its last state meanwhile; a key can
/// be revoked only through the store, and a revoke made here drops the key at once).
pub const STALE_GRACE: Duration = Duration::from_secs(3600);
/// How long a call waits for the store to check its key.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The first pause after a failed store read (doubling up to [`BACKOFF_MAX`]).
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Bound on cached valid keys (only real keys get here: garbage cannot fill it).
const MAX_POSITIVE: usize = 100_000;
/// Bound on remembered unknown keys; when full, only these are forgotten.
pub const MAX_NEGATIVE: usize = 10_000;
/// How often `last_used_at` is written.
pub const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// How long that write may take (a store behind a dead link never answers).
const TOUCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Known {
    identity: Identity,
    expires_at: Option<i64>,
    status: KeyStatus,
}

struct Entry {
    until: Instant,
    value: Known,
}

#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    wait: Duration,
}

/// The data-plane authenticator. Entries are keyed by the SHA-256 of the presented key, so the
/// cache holds no usable secret and a map lookup reveals nothing about a secret's bytes; the
/// secret itself is compared in constant time by the store.
pub struct KeyCache {
    store: Arc<dyn KeySource>,
    positive: Mutex<HashMap<[u8; 32], Entry>>,
    negative: Mutex<HashMap<[u8; 32], Instant>>,
    /// Bumped by every invalidation; see the module doc.
    generation: AtomicU64,
    /// One store read per key at a time.
    inflight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    backoff: Mutex<Backoff>,
    /// Whether the store failed last time it was asked (see the module doc).
    down: AtomicBool,
    /// Key id → last use (unix ms), not written yet.
    used: Mutex<HashMap<String, i64>>,
}

fn identity_of(v: &llmux_store::VerifiedKey) -> Known {
    let k = &v.key;
    Known {
        identity: Identity {
            key_id: k.id.clone(),
            app_id: k.app_id.clone(),
            key_name: k.name.clone(),
            models: k.models.clone().unwrap_or_default(),
            limits: Arc::new(llmux_gateway::limits::KeyLimits {
                rpm: k.limits.rpm,
                tpm: k.limits.tpm,
                concurrency: k.limits.concurrency,
                models: k
                    .limits
                    .models
                    .iter()
                    .map(|(m, l)| {
                        let l = llmux_gateway::limits::ModelLimits {
                            rpm: l.rpm,
                            tpm: l.tpm,
                        };
                        (m.clone(), l)
                    })
                    .collect(),
            }),
        },
        expires_at: k.expires_at,
        status: v.status,
    }
}

type StoreFuture<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, llmux_store::StoreError>> + Send + 'a>,
>;

/// Where keys are checked and their use recorded: the store (a trait so that tests can stand
/// in a store that hangs).
pub trait KeySource: Send + Sync {
    fn verify<'a>(&'a self, token: &'a str) -> StoreFuture<'a, Option<llmux_store::VerifiedKey>>;
    fn touch<'a>(&'a self, used: &'a [(String, i64)]) -> StoreFuture<'a, ()>;
}

impl KeySource for Store {
    fn verify<'a>(&'a self, token: &'a str) -> StoreFuture<'a, Option<llmux_store::VerifiedKey>> {
        Box::pin(self.verify_virtual_key(token))
    }
    fn touch<'a>(&'a self, used: &'a [(String, i64)]) -> StoreFuture<'a, ()> {
        Box::pin(self.touch_virtual_keys(used))
    }
}

/// What a store read found, and whether the store could be asked at all.
enum Read {
    Found(Known),
    Unknown,
    Failed(String),
}

impl KeyCache {
    /// A cache in front of `store`.
    pub fn new(store: Store) -> KeyCache {
        KeyCache::with_source(Arc::new(store))
    }

    /// A cache in front of `source`.
    pub fn with_source(store: Arc<dyn KeySource>) -> KeyCache {
        KeyCache {
            store,
            positive: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            inflight: Mutex::new(HashMap::new()),
            backoff: Mutex::new(Backoff::default()),
            down: AtomicBool::new(false),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets key `key_id` (after a revoke, delete or update through the admin API), and every
    /// negative entry (a key may just have been created with a public id that was unknown).
    pub fn invalidate(&self, key_id: &str) {
        // Bumped first: a read in flight that began before this cannot cache the key as valid.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.positive.lock() {
            entries.retain(|_, e| e.value.identity.key_id != key_id);
        }
        if let Ok(mut negative) = self.negative.lock() {
            negative.clear();
        }
    }

    /// Forgets everything (e.g. after an app was deleted with its keys, or another instance's
    /// change was missed). Every caller has just heard from the store (it wrote, or read the
    /// change counter), so the store also stops counting as down: with nothing cached left to
    /// ride on, keys must be read again at once rather than refused until a backoff ends.
    pub fn clear(&self) {
        self.note_store(true);
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.positive.lock() {
            entries.clear();
        }
        if let Ok(mut negative) = self.negative.lock() {
            negative.clear();
        }
    }

    /// A cached answer: `Some(Ok)` a valid entry, `Some(Err(()))` a remembered unknown key.
    fn lookup(&self, digest: &[u8; 32]) -> Option<Result<Known, ()>> {
        let now = Instant::now();
        if let Some(e) = self.positive.lock().ok()?.get(digest) {
            if e.until > now {
                return Some(Ok(e.value.clone()));
            }
        }
        let negative = self.negative.lock().ok()?;
        negative
            .get(digest)
            .filter(|until| **until > now)
            .map(|_| Err(()))
    }

    /// A valid entry past its TTL but within [`STALE_GRACE`]: used while the store is down.
    fn stale(&self, digest: &[u8; 32]) -> Option<Known> {
        let entries = self.positive.lock().ok()?;
        let e = entries.get(digest)?;
        (e.until + STALE_GRACE > Instant::now()).then(|| e.value.clone())
    }

    fn remember(&self, digest: [u8; 32], read: &Read, generation: u64) {
        let now = Instant::now();
        match read {
            Read::Found(known) => {
                let Ok(mut entries) = self.positive.lock() else {
                    return;
                };
                // Checked under the lock that `invalidate` takes after bumping: a revoke that
                // landed after this read began wins.
                if self.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                if entries.len() >= MAX_POSITIVE {
                    entries.retain(|_, e| e.until + STALE_GRACE > now);
                    if entries.len() >= MAX_POSITIVE {
                        entries.clear();
                    }
                }
                entries.insert(
                    digest,
                    Entry {
                        until: now + POSITIVE_TTL,
                        value: known.clone(),
                    },
                );
            }
            Read::Unknown => {
                if let Ok(mut negative) = self.negative.lock() {
                    if negative.len() >= MAX_NEGATIVE {
                        negative.retain(|_, until| *until > now);
                        if negative.len() >= MAX_NEGATIVE {
                            negative.clear();
                        }
                    }
                    negative.insert(digest, now + NEGATIVE_TTL);
                }
            }
            Read::Failed(_) => {}
        }
    }

    fn backing_off(&self) -> bool {
        self.backoff
            .lock()
            .ok()
            .and_then(|b| b.until)
            .is_some_and(|until| Instant::now() < until)
    }

    fn note_store(&self, ok: bool) {
        self.down.store(!ok, Ordering::SeqCst);
        if let Ok(mut b) = self.backoff.lock() {
            if ok {
                *b = Backoff::default();
            } else {
                b.wait = (b.wait * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
                b.until = Some(Instant::now() + b.wait);
            }
        }
    }

    /// Asks the store about `token`, at most one read per key at a time.
    async fn read(&self, token: &str, digest: [u8; 32]) -> Read {
        let gate = match self.inflight.lock() {
            Ok(mut m) => Arc::clone(m.entry(digest).or_default()),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        };
        let _one_reader = gate.lock().await;
        // Whoever held the gate before may have answered for this key meanwhile.
        let answer = match self.lookup(&digest) {
            Some(Ok(known)) => Read::Found(known),
            Some(Err(())) => Read::Unknown,
            None if self.backing_off() => Read::Failed("the key store is not answering".into()),
            None => {
                let generation = self.generation.load(Ordering::SeqCst);
                let found = tokio::time::timeout(STORE_TIMEOUT, self.store.verify(token)).await;
                let read = match found {
                    Ok(Ok(Some(v))) => Read::Found(identity_of(&v)),
                    Ok(Ok(None)) => Read::Unknown,
                    Ok(Err(e)) => Read::Failed(e.to_string()),
                    Err(_) => Read::Failed(format!("no answer within {STORE_TIMEOUT:?}")),
                };
                self.note_store(!matches!(read, Read::Failed(_)));
                self.remember(digest, &read, generation);
                read
            }
        };
        if let Ok(mut m) = self.inflight.lock() {
            // The last one out removes the gate (the map's reference and this one remain).
            if Arc::strong_count(&gate) <= 2 {
                m.remove(&digest);
            }
        }
        answer
    }

    async fn check(&self, token: &str) -> Result<Identity, AuthError> {
        if !llmux_gateway::auth::is_virtual_key(token) {
            // Not even shaped like an llmux key: no store read, nothing cached.
            return Err(AuthError::Invalid);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // The store is down: a key seen valid goes on without waiting for a read that fails.
        let known_while_down = || {
            self.down
                .load(Ordering::SeqCst)
                .then(|| self.stale(&digest))
                .flatten()
        };
        let known = match self.lookup(&digest) {
            Some(Ok(known)) => known,
            Some(Err(())) => return Err(AuthError::Invalid),
            None => match known_while_down() {
                Some(known) => known,
                None => match self.read(token, digest).await {
                    Read::Found(known) => known,
                    Read::Unknown => return Err(AuthError::Invalid),
                    Read::Failed(why) => match self.stale(&digest) {
                        Some(known) => known,
                        None => return Err(AuthError::Unavailable(why)),
                    },
                },
            },
        };
        match known {
            Known {
                status: KeyStatus::Revoked,
                ..
            } => Err(AuthError::Revoked),
            Known {
                status, expires_at, ..
            } if status == KeyStatus::Expired
                || expires_at.is_some_and(|at| at <= llmux_store::now_ms()) =>
            {
                Err(AuthError::Expired)
            }
            Known { identity, .. } => {
                self.note_use(&identity.key_id);
                Ok(identity)
            }
        }
    }

    fn note_use(&self, key_id: &str) {
        let now = llmux_store::now_ms();
        if let Ok(mut used) = self.used.lock() {
            match used.get_mut(key_id) {
                Some(at) => *at = now,
                None => {
                    used.insert(key_id.to_owned(), now);
                }
            }
        }
    }

    /// Writes the noted uses as `last_used_at` (one transaction); kept for the next try when
    /// the store fails.
    pub async fn flush_uses(&self) {
        let used: Vec<(String, i64)> = match self.used.lock() {
            Ok(mut u) => u.drain().collect(),
            Err(_) => return,
        };
        if used.is_empty() {
            return;
        }
        let written = match tokio::time::timeout(TOUCH_TIMEOUT, self.store.touch(&used)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {TOUCH_TIMEOUT:?}")),
        };
        // The store's health as this write found it: while it is down, known keys skip the
        // reads and unknown ones get their 503 at once (the backoff); once it is back, keys
        // are read again.
        match &written {
            Ok(()) if self.down.load(Ordering::SeqCst) => self.note_store(true),
            Ok(()) => {}
            Err(_) => self.note_store(false),
        }
        if let Err(e) = written {
            tracing::warn!(error = %e, keys = used.len(), "cannot record when keys were last used; retrying later");
            if let Ok(mut u) = self.used.lock() {
                for (id, at) in used {
                    let slot = u.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
        }
    }
}

/// Writes `last_used_at` every [`TOUCH_EVERY`], and once more when `stop` is cancelled.
pub async fn run_touch(cache: Arc<KeyCache>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(TOUCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => cache.flush_uses().await,
        }
    }
    cache.flush_uses().await;
}

impl Authenticator for KeyCache {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.check(token))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use llmux_store::{NewApp, NewVirtualKey};

    async fn store_with_key() -> (Store, llmux_store::VirtualKey, String) {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let app = store
            .create_app(&NewApp {
                name: "a".into(),
                credits: None,
                daily_budget: None,
                monthly_budget: None,
            })
            .await
            .unwrap();
        let (key, full) = store
            .create_virtual_key(&NewVirtualKey {
                app_id: app.id,
                name: "k".into(),
                models: None,
                limits: Default::default(),
                expires_at: None,
            })
            .await
            .unwrap();
        (store, key, full)
    }

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    #[tokio::test]
    async fn a_revoke_during_a_store_read_is_not_cached_as_valid() {
        let (store, key, full) = store_with_key().await;
        let cache = KeyCache::new(store.clone());
        // A call reads the key (still valid)...
        let generation = cache.generation.load(Ordering::SeqCst);
        let read = store.verify_virtual_key(&full).await.unwrap().unwrap();
        // ...the admin revokes it before that call caches its answer...
        store.revoke_virtual_key(&key.id).await.unwrap();
        cache.invalidate(&key.id);
        cache.remember(digest(&full), &Read::Found(identity_of(&read)), generation);
        // ...and the next call is not let in on the stale answer.
        assert_eq!(cache.check(&full).await, Err(AuthError::Revoked));
    }

    #[tokio::test]
    async fn a_flood_of_garbage_keys_does_not_evict_valid_ones() {
        let (store, key, full) = store_with_key().await;
        let cache = KeyCache::new(store.clone());
        assert!(cache.check(&full).await.is_ok());
        for i in 0..MAX_NEGATIVE + 10 {
            cache.remember(digest(&format!("sk-llmux-x{i}-y")), &Read::Unknown, 0);
        }
        assert!(cache.negative.lock().unwrap().len() <= MAX_NEGATIVE);
        // Still served from the cache: revoked behind its back, the key is not re-read.
        store.revoke_virtual_key(&key.id).await.unwrap();
        assert!(cache.check(&full).await.is_ok());
    }

    #[tokio::test]
    async fn a_store_outage_keeps_known_keys_and_refuses_others_at_once() {
        let (store, key, full) = store_with_key().await;
        let cache = KeyCache::new(store.clone());
        assert!(cache.check(&full).await.is_ok());
        // The entry's TTL is over and the store is gone.
        if let Some(e) = cache.positive.lock().unwrap().get_mut(&digest(&full)) {
            e.until = Instant::now();
        }
        store.close().await;
        assert_eq!(cache.check(&full).await.unwrap().key_id, key.id);
        assert!(cache.backing_off());
        let started = std::time::Instant::now();
        assert!(matches!(
            cache.check("sk-llmux-other-secret").await,
            Err(AuthError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    /// A key store that never answers, counting the questions.
    #[derive(Default)]
    struct Hanging {
        asked: AtomicU64,
    }

    impl KeySource for Hanging {
        fn verify<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<llmux_store::VerifiedKey>> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Box::pin(std::future::pending())
        }
        fn touch<'a>(&'a self, _: &'a [(String, i64)]) -> StoreFuture<'a, ()> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_is_asked_once_and_each_call_waits_at_most_the_timeout() {
        let source = Arc::new(Hanging::default());
        let cache = Arc::new(KeyCache::with_source(
            Arc::clone(&source) as Arc<dyn KeySource>
        ));
        let started = Instant::now();
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let c = Arc::clone(&cache);
                tokio::spawn(async move { c.check("sk-llmux-abc-secret").await })
            })
            .collect();
        for c in calls {
            assert!(matches!(c.await.unwrap(), Err(AuthError::Unavailable(_))));
        }
        assert_eq!(source.asked.load(Ordering::Relaxed), 1);
        assert!(started.elapsed() <= STORE_TIMEOUT + Duration::from_millis(10));
        // Backing off: other keys are refused at once, without asking.
        let started = Instant::now();
        assert!(matches!(
            cache.check("sk-llmux-def-secret").await,
            Err(AuthError::Unavailable(_))
        ));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(source.asked.load(Ordering::Relaxed), 1);
        tokio::time::advance(BACKOFF_FIRST).await;
        let _ = cache.check("sk-llmux-def-secret").await;
        assert_eq!(source.asked.load(Ordering::Relaxed), 2);
    }

    /// A store that can be switched off (then it never answers), counting the reads.
    struct Switch {
        key: llmux_store::VerifiedKey,
        up: std::sync::atomic::AtomicBool,
        asked: AtomicU64,
    }

    impl KeySource for Switch {
        fn verify<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<llmux_store::VerifiedKey>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let up = self.up.load(Ordering::SeqCst);
            let key = self.key.clone();
            Box::pin(async move {
                if !up {
                    std::future::pending::<()>().await;
                }
                Ok(Some(key))
            })
        }
        fn touch<'a>(&'a self, _: &'a [(String, i64)]) -> StoreFuture<'a, ()> {
            let up = self.up.load(Ordering::SeqCst);
            Box::pin(async move {
                if !up {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn while_the_store_is_down_known_keys_do_not_wait_and_its_return_is_noticed() {
        let (store, _, full) = store_with_key().await;
        let source = Arc::new(Switch {
            key: store.verify_virtual_key(&full).await.unwrap().unwrap(),
            up: std::sync::atomic::AtomicBool::new(true),
            asked: AtomicU64::new(0),
        });
        // Paused only now: SQLite (above) works on threads that paused time does not wait for.
        tokio::time::pause();
        let cache = KeyCache::with_source(Arc::clone(&source) as Arc<dyn KeySource>);
        let expire = || {
            if let Some(e) = cache.positive.lock().unwrap().get_mut(&digest(&full)) {
                e.until = Instant::now();
            }
        };
        assert!(cache.check(&full).await.is_ok());
        source.up.store(false, Ordering::SeqCst);
        expire();
        // The first call to find the store gone waits for its read...
        let started = Instant::now();
        assert!(cache.check(&full).await.is_ok());
        assert!(
            started.elapsed() >= STORE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(source.asked.load(Ordering::SeqCst), 2);
        // ...the next ones, even after the backoff, do not.
        tokio::time::advance(BACKOFF_MAX * 2).await;
        let started = Instant::now();
        assert!(cache.check(&full).await.is_ok());
        assert!(started.elapsed() < Duration::from_millis(10));
        assert_eq!(source.asked.load(Ordering::SeqCst), 2);
        // The `last_used_at` write finds the store still down, then back: keys are read again.
        cache.flush_uses().await;
        assert!(cache.down.load(Ordering::SeqCst));
        source.up.store(true, Ordering::SeqCst);
        cache.flush_uses().await;
        assert!(!cache.down.load(Ordering::SeqCst));
        assert!(cache.check(&full).await.is_ok());
        assert_eq!(source.asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_cleared_cache_reads_keys_again_at_once_after_an_outage() {
        let (store, _, full) = store_with_key().await;
        let source = Arc::new(Switch {
            key: store.verify_virtual_key(&full).await.unwrap().unwrap(),
            up: std::sync::atomic::AtomicBool::new(false),
            asked: AtomicU64::new(0),
        });
        tokio::time::pause();
        let cache = KeyCache::with_source(Arc::clone(&source) as Arc<dyn KeySource>);
        // The store is down: the key was never seen, so it is refused, and then refused at
        // once during the backoff.
        assert!(matches!(
            cache.check(&full).await,
            Err(AuthError::Unavailable(_))
        ));
        assert!(cache.down.load(Ordering::SeqCst));
        // The store is back and another instance's change makes this one forget everything
        // (cluster sync heard from the store): the key is read at once, not after the backoff.
        source.up.store(true, Ordering::SeqCst);
        cache.clear();
        assert!(cache.check(&full).await.is_ok());
        assert_eq!(source.asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn uses_are_written_as_last_used_at() {
        let (store, key, full) = store_with_key().await;
        let cache = KeyCache::new(store.clone());
        assert_eq!(
            store.get_virtual_key(&key.id).await.unwrap().last_used_at,
            None
        );
        let before = llmux_store::now_ms();
        cache.check(&full).await.unwrap();
        cache.check(&full).await.unwrap();
        cache.flush_uses().await;
        let at = store.get_virtual_key(&key.id).await.unwrap().last_used_at;
        assert!(at.is_some_and(|at| at >= before), "{at:?}");
        assert!(cache.used.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn cached_until_invalidated_and_unknown_keys_refused() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let app = store
            .create_app(&NewApp {
                name: "a".into(),
                credits: None,
                daily_budget: None,
                monthly_budget: None,
            })
            .await
            .unwrap();
        let (key, full) = store
            .create_virtual_key(&NewVirtualKey {
                app_id: app.id,
                name: "k".into(),
                models: Some(vec!["llama3".into()]),
                limits: Default::default(),
                expires_at: None,
            })
            .await
            .unwrap();
        let cache = KeyCache::new(store.clone());
        let id = cache.check(&full).await.unwrap();
        assert_eq!(id.key_id, key.id);
        assert_eq!(id.models, ["llama3"]);
        assert_eq!(
            cache.check("sk-llmux-nope-nope").await,
            Err(AuthError::Invalid)
        );
        assert_eq!(cache.check("garbage").await, Err(AuthError::Invalid));
        // Revoked behind the cache's back: still trusted until the TTL or an invalidation...
        store.revoke_virtual_key(&key.id).await.unwrap();
        assert!(cache.check(&full).await.is_ok());
        // ...which the admin API does on every change.
        cache.invalidate(&key.id);
        assert_eq!(cache.check(&full).await, Err(AuthError::Revoked));
    }
}

//! The response cache (`[cache]`, docs/cache.md): exact-match answers of chat calls, keyed by
//! the request as the client sent it (minus what does not change the answer), kept as the
//! canonical answer so a hit is rendered whole or as a stream in the caller's dialect; in this
//! instance's memory or in a Redis shared by a cluster (a [`SharedCache`] the binary installs);
//! and the coalescing of identical whole calls in flight. The call stage that uses it is
//! `call/cached.rs`.

mod entry;
mod key;
mod memory;

pub use entry::{cacheable_finish, Entry};
pub use key::{key_for, Directive};

use crate::limits::BoxFuture;
use llmux_config::{CacheBackend, CacheConfig};
use memory::{Key, Memory};
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `x-llmux-cache`, on every answer of a call the cache covers: `hit`, `miss` or `bypass`.
pub const X_LLMUX_CACHE: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-llmux-cache");

/// A cache shared by several instances (Redis). Keys are hex digests; values [`Entry`] bytes.
pub trait SharedCache: Send + Sync {
    /// The value under `key`; `Ok(None)` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    /// Stores `value` under `key` for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// What a lookup found.
pub enum Found {
    Hit(Arc<Entry>),
    Miss,
    /// The backend could not be asked (Redis down): the call goes upstream and is not stored.
    Unavailable,
}

/// How a call met the cache, as `x-llmux-cache` and the metric say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Hit, Outcome::Miss, Outcome::Bypass];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

/// What the followers of an in-flight call are told when it ends: its answer, or `None`.
type Published = Option<Arc<Entry>>;

/// The cache's state on the gateway: the memory backend, the shared one when installed, the
/// calls in flight (for coalescing) and the counters.
#[derive(Default)]
pub struct Cache {
    memory: Memory,
    shared: OnceLock<Arc<dyn SharedCache>>,
    inflight: Mutex<HashMap<Key, watch::Receiver<Published>>>,
    requests: [Counter; 3],
    /// Lookups and stores the shared backend failed.
    errors: Counter,
    /// Set while the shared backend fails, so its outage is logged once.
    down: AtomicBool,
}

/// The role of a whole call in coalescing.
pub enum Flight {
    /// First of its kind: goes upstream, and tells the others through its [`Leader`] guard.
    Leader(Leader),
    /// Another identical call is in flight: wait for its answer.
    Follower(watch::Receiver<Published>),
}

/// Held by the call that went upstream for its identical followers; publishes its answer (or,
/// dropped without one — failed, or its client hung up — `None`) and leaves the in-flight map.
pub struct Leader {
    gw: Arc<crate::Gateway>,
    key: Key,
    tx: watch::Sender<Published>,
}

impl Leader {
    pub fn publish(self, entry: Option<Arc<Entry>>) {
        let _ = self.tx.send(Some(entry).flatten());
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self.gw.cache.lock_inflight();
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

impl Cache {
    /// Installs the shared backend (once; the binary does, when `limits.redis_url` is set).
    pub fn set_shared(&self, shared: Arc<dyn SharedCache>) {
        let _ = self.shared.set(shared);
    }

    pub fn count(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Receiver<Published>>> {
        // The map is consistent after every single insert or remove: a poisoned lock is usable.
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer under `key` in the configured backend.
    pub async fn get(&self, config: &CacheConfig, key: &Key) -> Found {
        match config.backend {
            CacheBackend::Memory => match self.memory.get(key, Instant::now()) {
                Some(e) => Found::Hit(e),
                None => Found::Miss,
            },
            CacheBackend::Redis => {
                let Some(shared) = self.shared.get() else {
                    return Found::Unavailable;
                };
                match shared.get(&hex(key)).await {
                    Ok(v) => {
                        self.recovered();
                        match v.as_deref().and_then(Entry::from_bytes) {
                            Some(e) => Found::Hit(Arc::new(e)),
                            None => Found::Miss,
                        }
                    }
                    Err(e) => {
                        self.failed("read", &e);
                        Found::Unavailable
                    }
                }
            }
        }
    }

    /// Keeps `entry` under `key` for `cache.ttl`, unless it is larger than `max_entry_bytes`.
    pub async fn put(&self, config: &CacheConfig, key: &Key, entry: Arc<Entry>) {
        let bytes = entry.to_bytes();
        if bytes.len() > config.max_entry_bytes {
            tracing::debug!(
                size = bytes.len(),
                "answer larger than cache.max_entry_bytes: not cached"
            );
            return;
        }
        match config.backend {
            CacheBackend::Memory => {
                let expires = Instant::now() + config.ttl;
                self.memory.put(*key, entry, expires, config.max_entries);
            }
            CacheBackend::Redis => {
                let Some(shared) = self.shared.get() else {
                    return;
                };
                match shared.put(&hex(key), bytes, config.ttl).await {
                    Ok(()) => self.recovered(),
                    Err(e) => self.failed("write", &e),
                }
            }
        }
    }

    /// Joins the identical call in flight under `key`, or leads one.
    pub fn flight(gw: &Arc<crate::Gateway>, key: Key) -> Flight {
        let mut map = gw.cache.lock_inflight();
        if let Some(rx) = map.get(&key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key, rx);
        Flight::Leader(Leader {
            gw: Arc::clone(gw),
            key,
            tx,
        })
    }

    /// Answers in the memory backend now.
    pub fn entries(&self) -> usize {
        self.memory.len()
    }

    /// The cache was switched off or moved to another backend: what memory holds goes.
    pub fn reconfigured(&self, config: &CacheConfig) {
        if !config.enabled || config.backend != CacheBackend::Memory {
            self.memory.clear();
        }
    }

    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome as usize].get()
    }

    pub fn errors(&self) -> u64 {
        self.errors.get()
    }

    fn failed(&self, what: &str, error: &str) {
        self.errors.inc();
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error,
                op = what,
                "response cache backend unavailable: calls bypass the cache until it is back"
            );
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("response cache backend reachable again");
        }
    }
}

/// Lower-case hex of a key (the shared backend's key text).
pub fn hex(key: &Key) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in key {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Waits for the leader of an identical call: its answer, or `None` when it had none to share
/// (it failed, its answer was not cacheable, or its client hung up).
pub async fn follow(mut rx: watch::Receiver<Published>) -> Option<Arc<Entry>> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

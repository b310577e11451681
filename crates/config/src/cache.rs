//! `[cache]`: the response cache's settings (docs/cache.md); parsed in `raw/cache.rs`.

use std::time::Duration;

/// Where `[cache]` keeps its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheBackend {
    /// This instance's memory, least recently used evicted past `max_entries`.
    #[default]
    Memory,
    /// The Redis of `limits.redis_url`, shared by every instance using it (expiry by Redis).
    Redis,
}

impl CacheBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheBackend::Memory => "memory",
            CacheBackend::Redis => "redis",
        }
    }
}

/// `[cache]`: the opt-in response cache (docs/cache.md).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    pub enabled: bool,
    /// How long an answer is served from the cache.
    pub ttl: Duration,
    pub backend: CacheBackend,
    /// Most answers the memory backend holds (least recently used evicted first).
    pub max_entries: usize,
    /// Largest answer kept (its canonical form, serialised); larger ones are not cached.
    pub max_entry_bytes: usize,
    /// Only calls for these requested models (names or aliases) are cached; empty: all.
    pub models: Vec<String>,
    /// Identical whole (non-streamed) calls in flight at once share one upstream call.
    pub coalesce: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: Duration::from_secs(600),
            backend: CacheBackend::Memory,
            max_entries: 10_000,
            max_entry_bytes: 1024 * 1024,
            models: Vec::new(),
            coalesce: true,
        }
    }
}

impl CacheConfig {
    /// Whether calls for `model` (as requested) go through the cache.
    pub fn covers(&self, model: &str) -> bool {
        self.enabled && (self.models.is_empty() || self.models.iter().any(|m| m == model))
    }
}

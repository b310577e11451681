//! `[cache]`: the opt-in response cache (docs/cache.md).

use std::time::Duration;

use serde::Deserialize;

use super::de::{Dur, Size};
use crate::error::{join_index, ConfigError};
use crate::{CacheBackend, CacheConfig};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCache {
    enabled: Option<bool>,
    ttl: Option<Dur>,
    backend: Option<String>,
    max_entries: Option<i64>,
    max_entry_bytes: Option<Size>,
    models: Option<Vec<String>>,
    coalesce: Option<bool>,
}

/// The longest `cache.ttl`, as for every duration in the file.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

impl RawCache {
    /// `has_redis`: whether `limits.redis_url` is set (the Redis backend needs it).
    pub(super) fn into_config(self, has_redis: bool) -> Result<CacheConfig, ConfigError> {
        let default = CacheConfig::default();
        let ttl = match self.ttl {
            None => default.ttl,
            Some(Dur(d)) if d >= Duration::from_secs(1) && d <= MAX_TTL => d,
            Some(Dur(d)) => {
                return Err(ConfigError::new(
                    "cache.ttl",
                    format!("must be between 1s and 24h (got {d:?})"),
                ))
            }
        };
        let backend = match self.backend.as_deref() {
            None | Some("memory") => CacheBackend::Memory,
            Some("redis") => CacheBackend::Redis,
            Some(other) => {
                return Err(ConfigError::new(
                    "cache.backend",
                    format!("unknown backend {other:?}: use \"memory\" or \"redis\""),
                ))
            }
        };
        let enabled = self.enabled.unwrap_or(default.enabled);
        if enabled && backend == CacheBackend::Redis && !has_redis {
            return Err(ConfigError::new(
                "cache.backend",
                "\"redis\" needs limits.redis_url (the Redis the cache shares with the limits)",
            ));
        }
        let max_entries = match self.max_entries {
            None => default.max_entries,
            Some(n) if (1..=10_000_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::new(
                    "cache.max_entries",
                    format!("must be between 1 and 10000000 (got {n})"),
                ))
            }
        };
        let max_entry_bytes = match self.max_entry_bytes {
            None => default.max_entry_bytes,
            Some(Size(n)) if (1..=64 * 1024 * 1024).contains(&n) => n,
            Some(Size(n)) => {
                return Err(ConfigError::new(
                    "cache.max_entry_bytes",
                    format!("must be between 1 byte and 64MiB (got {n})"),
                ))
            }
        };
        let models = self.models.unwrap_or_default();
        for (i, m) in models.iter().enumerate() {
            if m.trim().is_empty() {
                return Err(ConfigError::new(
                    join_index("cache.models", i),
                    "must not be empty",
                ));
            }
        }
        Ok(CacheConfig {
            enabled,
            ttl,
            backend,
            max_entries,
            max_entry_bytes,
            models,
            coalesce: self.coalesce.unwrap_or(default.coalesce),
        })
    }
}

//! Virtual keys on the data plane: an `Authenticator` over the store with a short-lived cache.
//!
//! Every data-plane call would otherwise cost a database round trip. Positive answers are kept
//! for [`POSITIVE_TTL`] and dropped at once when the admin API revokes, deletes or edits the
//! key ([`KeyCache::invalidate`]); unknown keys are remembered for [`NEGATIVE_TTL`] so that a
//! client hammering with a bad key does not hammer the database. Expiry is checked on every
//! hit, so a cached key stops working the moment it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gateway::auth::{AuthError, AuthFuture, Authenticator, Identity};
use sha2::{Digest as _, Sha256};
use store::{KeyStatus, Store};
use tokio::time::Instant;

/// How long a verified key is trusted without asking the store.
pub const POSITIVE_TTL: Duration = Duration::from_secs(10);
/// How long an unknown or wrong key is refused without asking the store.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Bound on cached entries; the cache is cleared when it is full (simple, and a flood of
/// random keys cannot grow memory).
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
enum Cached {
    Known {
        identity: Identity,
        expires_at: Option<i64>,
        status: KeyStatus,
    },
    Unknown,
}

struct Entry {
    until: Instant,
    value: Cached,
}

/// The data-plane authenticator. Entries are keyed by the SHA-256 of the presented key, so the
/// cache holds no usable secret and a map lookup reveals nothing about a secret's bytes; the
/// secret itself is compared in constant time by the store.
pub struct KeyCache {
    store: Store,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl KeyCache {
    /// A cache in front of `store`.
    pub fn new(store: Store) -> KeyCache {
        KeyCache {
            store,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets key `key_id` (after a revoke, delete or update through the admin API), and every
    /// negative entry (a key may just have been created with a public id that was unknown).
    pub fn invalidate(&self, key_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| match &e.value {
                Cached::Known { identity, .. } => identity.key_id != key_id,
                Cached::Unknown => false,
            });
        }
    }

    /// Forgets everything (e.g. after an app was deleted with its keys).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    fn lookup(&self, digest: &[u8; 32]) -> Option<Cached> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(digest)?;
        (entry.until > Instant::now()).then(|| entry.value.clone())
    }

    fn remember(&self, digest: [u8; 32], value: Cached) {
        let ttl = match value {
            Cached::Known { .. } => POSITIVE_TTL,
            Cached::Unknown => NEGATIVE_TTL,
        };
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                digest,
                Entry {
                    until: Instant::now() + ttl,
                    value,
                },
            );
        }
    }

    async fn check(&self, token: &str) -> Result<Identity, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = match self.lookup(&digest) {
            Some(c) => c,
            None => {
                let found = self
                    .store
                    .verify_virtual_key(token)
                    .await
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?;
                let value = match found {
                    None => Cached::Unknown,
                    Some(v) => Cached::Known {
                        identity: Identity {
                            key_id: v.key.id.clone(),
                            app_id: v.key.app_id.clone(),
                            key_name: v.key.name.clone(),
                            models: v.key.models.clone().unwrap_or_default(),
                            limits: std::sync::Arc::new(gateway::limits::KeyLimits {
                                rpm: v.key.limits.rpm,
                                tpm: v.key.limits.tpm,
                                concurrency: v.key.limits.concurrency,
                                models: v
                                    .key
                                    .limits
                                    .models
                                    .iter()
                                    .map(|(m, l)| {
                                        let l = gateway::limits::ModelLimits {
                                            rpm: l.rpm,
                                            tpm: l.tpm,
                                        };
                                        (m.clone(), l)
                                    })
                                    .collect(),
                            }),
                        },
                        expires_at: v.key.expires_at,
                        status: v.status,
                    },
                };
                self.remember(digest, value.clone());
                value
            }
        };
        match cached {
            Cached::Unknown => Err(AuthError::Invalid),
            Cached::Known {
                status: KeyStatus::Revoked,
                ..
            } => Err(AuthError::Revoked),
            Cached::Known {
                status, expires_at, ..
            } if status == KeyStatus::Expired
                || expires_at.is_some_and(|at| at <= store::now_ms()) =>
            {
                Err(AuthError::Expired)
            }
            Cached::Known { identity, .. } => Ok(identity),
        }
    }
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
    use store::{NewApp, NewVirtualKey};

    #[tokio::test]
    async fn cached_until_invalidated_and_unknown_keys_refused() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let app = store
            .create_app(&NewApp {
                name: "a".into(),
                credits: 0.0,
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

//! Virtual keys (`sk-llmux-<public id>-<secret>`): creation, verification, salted-hash storage.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::db::{
    impl_from_row, json_column, json_column_opt, on_pool, to_json, to_json_opt, write_tx,
};
use crate::ids::{new_id, now_ms, random_alphanumeric, random_bytes};
use crate::{Store, StoreError};

/// Every virtual key starts with this.
pub const VIRTUAL_KEY_PREFIX: &str = "sk-llmux-";
/// Alphanumerics in the public id (≈ 71 bits: unique without coordination).
const PUBLIC_ID_LEN: usize = 12;
/// Alphanumerics in the secret (≈ 190 bits).
const SECRET_LEN: usize = 32;
/// Tag of the hash format below.
const HASH_V1: &str = "v1";

// Hash choice: SHA-256(salt || secret) with a 16-byte random salt per row, stored as
// `v1$<base64 salt>$<base64 digest>`. Verification runs on every request, so it must cost
// microseconds, not the tens of milliseconds of a password hash. Key stretching (argon2) is
// only needed for low-entropy secrets such as passwords; these secrets are 190 random bits, so
// inverting one SHA-256 is out of reach. The salt makes identical secrets hash differently
// and rules out precomputed tables. An HMAC with a server pepper would add a second secret
// to manage whose loss or rotation would invalidate every key, for no gain at this entropy.
fn hash_secret(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

fn new_secret_hash(secret: &str) -> String {
    let salt = random_bytes::<16>();
    format!(
        "{HASH_V1}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash_secret(&salt, secret))
    )
}

/// Whether `secret` matches a stored `v1$salt$digest`, comparing digests in constant time.
fn secret_matches(stored: &str, secret: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(HASH_V1), Some(salt), Some(digest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(salt), Ok(digest)) = (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(digest))
    else {
        return false;
    };
    bool::from(hash_secret(&salt, secret).as_slice().ct_eq(&digest))
}

/// Splits `sk-llmux-<public id>-<secret>`; `None` when malformed.
fn parse_full_key(full_key: &str) -> Option<(&str, &str)> {
    let (public_id, secret) = full_key.strip_prefix(VIRTUAL_KEY_PREFIX)?.split_once('-')?;
    let well_formed = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (well_formed(public_id) && well_formed(secret)).then_some((public_id, secret))
}

/// Per-key rate limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Limits of one model within the key, by model name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub models: std::collections::BTreeMap<String, ModelLimits>,
}

/// A model's rate limits within a key; `None` means only the key's own limits apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// A stored virtual key (without its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualKey {
    /// `vk_…` (row id, for the admin API).
    pub id: String,
    /// The public part of the key (`sk-llmux-<public_id>-…`), safe to show and log.
    pub public_id: String,
    /// Owning app.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// Models the key may use, `None` for all.
    pub models: Option<Vec<String>>,
    /// Rate limits.
    pub limits: KeyLimits,
    /// Unix milliseconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// Unix milliseconds when it was revoked.
    pub revoked_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last use recorded with [`Store::touch_virtual_key`].
    pub last_used_at: Option<i64>,
}

impl VirtualKey {
    /// The key's status at `now` (unix milliseconds); revocation wins over expiry.
    pub fn status_at(&self, now: i64) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// Whether a key whose secret matched may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past `expires_at`.
    Expired,
    /// Revoked.
    Revoked,
}

/// A key whose secret matched, with its status (the caller refuses anything but `Active` and
/// can say why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedKey {
    /// The key.
    pub key: VirtualKey,
    /// Active, expired or revoked.
    pub status: KeyStatus,
}

impl VerifiedKey {
    /// Whether the request may proceed.
    pub fn is_active(&self) -> bool {
        self.status == KeyStatus::Active
    }
}

/// The fields of a new virtual key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVirtualKey {
    /// Owning app.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// Allowed models, `None` for all.
    pub models: Option<Vec<String>>,
    /// Rate limits.
    #[serde(default)]
    pub limits: KeyLimits,
    /// Expiry, unix milliseconds.
    pub expires_at: Option<i64>,
}

/// The editable fields of a virtual key (full replacement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualKeyUpdate {
    /// Display name.
    pub name: String,
    /// Allowed models, `None` for all.
    pub models: Option<Vec<String>>,
    /// Rate limits.
    #[serde(default)]
    pub limits: KeyLimits,
    /// Expiry, unix milliseconds.
    pub expires_at: Option<i64>,
}

impl_from_row!(VirtualKey, |row| {
    Ok(VirtualKey {
        id: row.try_get("id")?,
        public_id: row.try_get("public_id")?,
        app_id: row.try_get("app_id")?,
        name: row.try_get("name")?,
        models: json_column_opt(row.try_get("models")?, "models")?,
        limits: json_column(row.try_get("limits")?, "limits")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
});

/// A key with its stored hash (crate-internal).
struct HashedKey {
    key: VirtualKey,
    secret_hash: String,
}

impl_from_row!(HashedKey, |row| {
    Ok(HashedKey {
        key: sqlx::FromRow::from_row(row)?,
        secret_hash: row.try_get("secret_hash")?,
    })
});

macro_rules! cols {
    () => {
        "id, public_id, app_id, name, models, limits, expires_at, revoked_at, created_at, \
         last_used_at"
    };
}

impl Store {
    /// Creates a key for `new.app_id` (`MissingReference` when the app does not exist) and
    /// returns it with the full key `sk-llmux-<public id>-<secret>`, which is shown once and
    /// cannot be recovered later.
    pub async fn create_virtual_key(
        &self,
        new: &NewVirtualKey,
    ) -> Result<(VirtualKey, String), StoreError> {
        let id = new_id("vk");
        let public_id = random_alphanumeric(PUBLIC_ID_LEN);
        let secret = random_alphanumeric(SECRET_LEN);
        let secret_hash = new_secret_hash(&secret);
        let models = to_json_opt(new.models.as_ref())?;
        let limits = to_json(&new.limits)?;
        let key: VirtualKey = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO virtual_keys (",
                cols!(),
                ", secret_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, NULL, $9) \
                 RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(&public_id)
            .bind(&new.app_id)
            .bind(&new.name)
            .bind(&models)
            .bind(&limits)
            .bind(new.expires_at)
            .bind(now_ms())
            .bind(&secret_hash)
            .fetch_one(&mut *tx)
            .await?
        });
        Ok((key, format!("{VIRTUAL_KEY_PREFIX}{public_id}-{secret}")))
    }

    /// Checks a full key presented by a client. `None` when it is malformed, unknown or its
    /// secret does not match; otherwise the key with its status (expired and revoked keys are
    /// returned so that the caller can say why it refuses them).
    pub async fn verify_virtual_key(
        &self,
        full_key: &str,
    ) -> Result<Option<VerifiedKey>, StoreError> {
        self.verify_virtual_key_at(full_key, now_ms()).await
    }

    /// [`Store::verify_virtual_key`] with an explicit current time (unix milliseconds).
    pub async fn verify_virtual_key_at(
        &self,
        full_key: &str,
        now: i64,
    ) -> Result<Option<VerifiedKey>, StoreError> {
        let Some((public_id, secret)) = parse_full_key(full_key) else {
            return Ok(None);
        };
        let found: Option<HashedKey> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                ", secret_hash FROM virtual_keys WHERE public_id = $1"
            ))
            .bind(public_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(found
            .filter(|row| secret_matches(&row.secret_hash, secret))
            .map(|row| VerifiedKey {
                status: row.key.status_at(now),
                key: row.key,
            }))
    }

    /// The key with this row id.
    pub async fn get_virtual_key(&self, id: &str) -> Result<VirtualKey, StoreError> {
        let found: Option<VirtualKey> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM virtual_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// Keys of one app (`Some`) or of all apps (`None`), oldest first.
    pub async fn list_virtual_keys(
        &self,
        app_id: Option<&str>,
    ) -> Result<Vec<VirtualKey>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM virtual_keys WHERE ($1 IS NULL OR app_id = $1) ORDER BY created_at, id"
            ))
            .bind(app_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Replaces the editable fields of key `id`.
    pub async fn update_virtual_key(
        &self,
        id: &str,
        update: &VirtualKeyUpdate,
    ) -> Result<VirtualKey, StoreError> {
        let models = to_json_opt(update.models.as_ref())?;
        let limits = to_json(&update.limits)?;
        let updated: Option<VirtualKey> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE virtual_keys SET name = $2, models = $3, limits = $4, expires_at = $5 \
                 WHERE id = $1 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(&update.name)
            .bind(&models)
            .bind(&limits)
            .bind(update.expires_at)
            .fetch_optional(&mut *tx)
            .await?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Revokes key `id` now (a key already revoked keeps its first revocation time).
    pub async fn revoke_virtual_key(&self, id: &str) -> Result<VirtualKey, StoreError> {
        let updated: Option<VirtualKey> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE virtual_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Revokes every key in `ids` in one transaction: all or none (a key already revoked keeps
    /// its time). An unknown id is `Invalid`, naming it, and nothing changes.
    pub async fn revoke_virtual_keys(&self, ids: &[String]) -> Result<Vec<VirtualKey>, StoreError> {
        let now = now_ms();
        Ok(write_tx!(self, |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<VirtualKey> = sqlx::query_as(concat!(
                    "UPDATE virtual_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                     RETURNING ",
                    cols!()
                ))
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                out.push(row.ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "ids: no virtual key with id {id:?}; nothing was changed"
                    ))
                })?);
            }
            out
        }))
    }

    /// Deletes every key in `ids` in one transaction: all or none. An unknown id is `Invalid`,
    /// naming it, and nothing is deleted. Answers the keys as they were.
    pub async fn delete_virtual_keys(&self, ids: &[String]) -> Result<Vec<VirtualKey>, StoreError> {
        Ok(write_tx!(self, |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<VirtualKey> = sqlx::query_as(concat!(
                    "DELETE FROM virtual_keys WHERE id = $1 RETURNING ",
                    cols!()
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                out.push(row.ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "ids: no virtual key with id {id:?}; nothing was deleted"
                    ))
                })?);
            }
            out
        }))
    }

    /// Records that key `id` was used at `at` (unix milliseconds; never moves backwards).
    pub async fn touch_virtual_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let touched = write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE virtual_keys SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if touched == 0 {
            // Either unknown, or already used later: only the former is an error.
            self.get_virtual_key(id).await?;
        }
        Ok(())
    }

    /// Records many keys' last use at once (`(id, unix ms)`), in one transaction; like
    /// [`Store::touch_virtual_key`], a time never moves backwards, and unknown ids (a key
    /// deleted meanwhile) are skipped.
    pub async fn touch_virtual_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        write_tx!(self, |tx| {
            for (id, at) in used {
                sqlx::query(
                    "UPDATE virtual_keys SET last_used_at = $2 WHERE id = $1 \
                     AND (last_used_at IS NULL OR last_used_at < $2)",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    /// Deletes key `id`.
    pub async fn delete_virtual_key(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM virtual_keys WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn hash_round_trip_and_parse() {
        let stored = new_secret_hash("abc");
        assert!(secret_matches(&stored, "abc"));
        assert!(!secret_matches(&stored, "abd"));
        assert!(!secret_matches("garbage", "abc"));
        assert_ne!(stored, new_secret_hash("abc"));
        assert_eq!(
            parse_full_key("sk-llmux-AbC123-xyz9"),
            Some(("AbC123", "xyz9"))
        );
        assert_eq!(parse_full_key("sk-llmux-AbC123"), None);
        assert_eq!(parse_full_key("sk-other-AbC123-xyz"), None);
        assert_eq!(parse_full_key("sk-llmux-AbC-1-2"), None);
    }
}

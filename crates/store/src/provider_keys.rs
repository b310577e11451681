//! Provider API keys of an upstream, encrypted at rest, and their rotation to a new master key.

use llmux_config::Secret;
use serde::{Deserialize, Serialize};

use crate::db::{enum_column, impl_from_row, on_pool, text_enum, write_tx, BackendKind};
use crate::ids::{new_id, now_ms};
use crate::{MasterKeys, Store, StoreError};

text_enum! {
    /// Whether the gateway may use a provider key.
    KeyState {
        /// Usable.
        Ok = "ok",
        /// Taken out of rotation (see `disabled_reason`).
        Disabled = "disabled",
    }
}

/// A stored provider key, without its plaintext (see [`Store::reveal_provider_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderKey {
    /// `pk_…`
    pub id: String,
    /// The upstream it belongs to.
    pub upstream_id: String,
    /// Display hint, e.g. `…1234` ([`Secret::masked`]).
    pub masked: String,
    /// Usable or disabled.
    pub state: KeyState,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl_from_row!(ProviderKey, |row| {
    Ok(ProviderKey {
        id: row.try_get("id")?,
        upstream_id: row.try_get("upstream_id")?,
        masked: row.try_get("masked")?,
        state: enum_column(row.try_get("state")?, "state")?,
        disabled_reason: row.try_get("disabled_reason")?,
        created_at: row.try_get("created_at")?,
    })
});

/// A provider key row with its ciphertext (crate-internal).
pub(crate) struct SealedKey {
    pub(crate) key: ProviderKey,
    pub(crate) ciphertext: String,
}

impl_from_row!(SealedKey, |row| {
    Ok(SealedKey {
        key: sqlx::FromRow::from_row(row)?,
        ciphertext: row.try_get("ciphertext")?,
    })
});

macro_rules! cols {
    () => {
        "id, upstream_id, masked, state, disabled_reason, created_at"
    };
}

/// The associated data that binds a ciphertext to its row: moving the ciphertext to another
/// key id or upstream makes decryption fail.
fn aad(key_id: &str, upstream_id: &str) -> Vec<u8> {
    format!("provider_key:{key_id}:{upstream_id}").into_bytes()
}

fn open(keys: &MasterKeys, sealed: &SealedKey) -> Result<Secret, StoreError> {
    let plain = keys.decrypt(
        &sealed.ciphertext,
        &aad(&sealed.key.id, &sealed.key.upstream_id),
    )?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| StoreError::Decrypt("plaintext is not UTF-8".to_owned()))
}

/// Opens a stored provider key's ciphertext (of key `key_id` on upstream `upstream_id`).
pub fn open_provider_key(
    keys: &MasterKeys,
    key_id: &str,
    upstream_id: &str,
    ciphertext: &str,
) -> Result<Secret, StoreError> {
    let plain = keys.decrypt(ciphertext, &aad(key_id, upstream_id))?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| StoreError::Decrypt("plaintext is not UTF-8".to_owned()))
}

/// Seals a provider key for row `key_id` of upstream `upstream_id` under the current master key.
pub fn seal_provider_key(
    keys: &MasterKeys,
    key_id: &str,
    upstream_id: &str,
    secret: &Secret,
) -> Result<String, StoreError> {
    keys.encrypt(secret.expose().as_bytes(), &aad(key_id, upstream_id))
}

impl Store {
    /// Encrypts `secret` under the current master key and stores it for `upstream_id`
    /// (`MissingReference` when the upstream does not exist).
    pub async fn create_provider_key(
        &self,
        keys: &MasterKeys,
        upstream_id: &str,
        secret: &Secret,
    ) -> Result<ProviderKey, StoreError> {
        let id = new_id("pk");
        let ciphertext = keys.encrypt(secret.expose().as_bytes(), &aad(&id, upstream_id))?;
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO provider_keys \
                 (id, upstream_id, ciphertext, masked, state, disabled_reason, created_at) \
                 VALUES ($1, $2, $3, $4, 'ok', NULL, $5) RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(upstream_id)
            .bind(&ciphertext)
            .bind(secret.masked())
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?
        }))
    }

    /// The provider key with this id (no plaintext).
    pub async fn get_provider_key(&self, id: &str) -> Result<ProviderKey, StoreError> {
        let found: Option<ProviderKey> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM provider_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// The keys of one upstream (`Some`) or of all upstreams (`None`), oldest first.
    pub async fn list_provider_keys(
        &self,
        upstream_id: Option<&str>,
    ) -> Result<Vec<ProviderKey>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM provider_keys WHERE ($1 IS NULL OR upstream_id = $1) \
                 ORDER BY created_at, id"
            ))
            .bind(upstream_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The plaintext of provider key `id` (for the gateway; never log it).
    pub async fn reveal_provider_key(
        &self,
        keys: &MasterKeys,
        id: &str,
    ) -> Result<Secret, StoreError> {
        let found: Option<SealedKey> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                ", ciphertext FROM provider_keys WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        open(keys, &found.ok_or(StoreError::NotFound)?)
    }

    /// Every key of one upstream (`Some`) or of all upstreams (`None`) with its plaintext, for
    /// building the gateway's routing table. Fails if any key cannot be decrypted.
    pub async fn reveal_provider_keys(
        &self,
        keys: &MasterKeys,
        upstream_id: Option<&str>,
    ) -> Result<Vec<(ProviderKey, Secret)>, StoreError> {
        let rows: Vec<SealedKey> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                ", ciphertext FROM provider_keys WHERE ($1 IS NULL OR upstream_id = $1) \
                 ORDER BY created_at, id"
            ))
            .bind(upstream_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|row| open(keys, &row).map(|secret| (row.key, secret)))
            .collect()
    }

    /// Marks a key usable (`reason` is cleared) or disabled with a reason.
    pub async fn set_provider_key_state(
        &self,
        id: &str,
        state: KeyState,
        reason: Option<&str>,
    ) -> Result<ProviderKey, StoreError> {
        let reason = match state {
            KeyState::Ok => None,
            KeyState::Disabled => reason,
        };
        let updated: Option<ProviderKey> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE provider_keys SET state = $2, disabled_reason = $3 WHERE id = $1 \
                 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(state.as_str())
            .bind(reason)
            .fetch_optional(&mut *tx)
            .await?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Deletes provider key `id`.
    pub async fn delete_provider_key(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM provider_keys WHERE id = $1")
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

    /// Re-encrypts every provider key under `keys.current()` (decrypting with whichever of
    /// `keys` sealed it) in one transaction that blocks other writers of the table; returns
    /// how many were re-encrypted. Afterwards the previous master keys are no longer needed.
    /// If any key cannot be decrypted nothing is changed.
    pub async fn rotate_secrets(&self, keys: &MasterKeys) -> Result<u64, StoreError> {
        Ok(write_tx!(self, |tx, kind, _Db| {
            if kind == BackendKind::Postgres {
                // SQLite's BEGIN IMMEDIATE already excludes other writers.
                sqlx::query("LOCK TABLE provider_keys IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let rows: Vec<SealedKey> = sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                ", ciphertext FROM provider_keys ORDER BY id"
            ))
            .fetch_all(&mut *tx)
            .await?;
            let mut count = 0u64;
            for row in &rows {
                let secret = open(keys, row)?;
                let ciphertext = keys.encrypt(
                    secret.expose().as_bytes(),
                    &aad(&row.key.id, &row.key.upstream_id),
                )?;
                sqlx::query("UPDATE provider_keys SET ciphertext = $2 WHERE id = $1")
                    .bind(&row.key.id)
                    .bind(&ciphertext)
                    .execute(&mut *tx)
                    .await?;
                count += 1;
            }
            count
        }))
    }
}

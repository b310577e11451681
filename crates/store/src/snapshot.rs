//! The API-managed routing state as one value: saved with every config revision, restored by a rollback.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{to_json, to_json_opt, write_tx};
use crate::provider_keys::SealedKey;
use crate::{Alias, Model, ProviderKey, Store, StoreError, Upstream};

/// A provider key as stored: its ciphertext, never its plaintext (a snapshot is written into
/// the revisions table, which must hold no secret in the clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedProviderKey {
    /// The key's row.
    #[serde(flatten)]
    pub key: ProviderKey,
    /// `v1:<master key id>:…`, bound to the key's id and upstream.
    pub ciphertext: String,
}

/// Everything the admin API manages that decides routing: API upstreams with their (sealed)
/// keys, models, aliases and setting overrides. Apps, virtual keys and users are not part of
/// it: rolling back routing must not resurrect a revoked key or a deleted user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingSnapshot {
    /// Upstreams created through the API.
    pub upstreams: Vec<Upstream>,
    /// Their keys, sealed.
    pub provider_keys: Vec<SealedProviderKey>,
    /// Models (declared or discovered, with their enabled flag).
    pub models: Vec<Model>,
    /// Aliases.
    pub aliases: Vec<Alias>,
    /// Setting overrides.
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// Inserts the snapshot's API upstreams and their provider keys (sealed, with their original
/// ids) within the transaction `$tx`; a macro so one body serves both backends.
macro_rules! insert_api_upstreams {
    ($tx:ident, $snapshot:expr) => {
        for u in &$snapshot.upstreams {
            sqlx::query(
                "INSERT INTO upstreams (id, name, kind, url, weight, models, timeouts, \
                 enabled, source, created_at, updated_at, api_version, options) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&u.id)
            .bind(&u.name)
            .bind(&u.kind)
            .bind(&u.url)
            .bind(u.weight)
            .bind(to_json_opt(u.models.as_ref())?)
            .bind(to_json(&u.timeouts)?)
            .bind(u.enabled)
            .bind(u.source.as_str())
            .bind(u.created_at)
            .bind(u.updated_at)
            .bind(&u.api_version)
            .bind($crate::upstreams::options_json(&u.options)?)
            .execute(&mut *$tx)
            .await?;
        }
        for k in &$snapshot.provider_keys {
            sqlx::query(
                "INSERT INTO provider_keys (id, upstream_id, ciphertext, masked, state, \
                 disabled_reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&k.key.id)
            .bind(&k.key.upstream_id)
            .bind(&k.ciphertext)
            .bind(&k.key.masked)
            .bind(k.key.state.as_str())
            .bind(&k.key.disabled_reason)
            .bind(k.key.created_at)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

impl Store {
    /// Reads the routing state in one consistent view: one transaction (a write transaction,
    /// so that on SQLite no writer can slip in between the five reads).
    pub async fn routing_snapshot(&self) -> Result<RoutingSnapshot, StoreError> {
        Ok(write_tx!(self, |tx| {
            let upstreams: Vec<Upstream> = sqlx::query_as(
                "SELECT id, name, kind, url, weight, models, timeouts, enabled, source, \
                 created_at, updated_at, api_version, options FROM upstreams \
                 WHERE source = 'api' \
                 ORDER BY name",
            )
            .fetch_all(&mut *tx)
            .await?;
            let keys: Vec<SealedKey> = sqlx::query_as(
                "SELECT id, upstream_id, masked, state, disabled_reason, created_at, ciphertext \
                 FROM provider_keys ORDER BY created_at, id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let models: Vec<Model> = sqlx::query_as(
                "SELECT id, name, upstream_id, enabled, origin, created_at, original_name FROM models \
                 ORDER BY name, id",
            )
            .fetch_all(&mut *tx)
            .await?;
            let aliases: Vec<Alias> = sqlx::query_as(
                "SELECT id, name, targets, created_at, updated_at FROM aliases ORDER BY name",
            )
            .fetch_all(&mut *tx)
            .await?;
            let settings: Vec<(String, String)> =
                // Runtime switches (drains) are not configuration: not recorded.
                sqlx::query_as(
                    "SELECT key, value FROM settings WHERE key NOT LIKE 'runtime.%' ORDER BY key",
                )
                    .fetch_all(&mut *tx)
                    .await?;
            let settings = settings
                .into_iter()
                .map(|(k, v)| {
                    serde_json::from_str(&v)
                        .map(|v| (k, v))
                        .map_err(|e| StoreError::Invalid(format!("setting value: {e}")))
                })
                .collect::<Result<_, _>>()?;
            RoutingSnapshot {
                upstreams,
                provider_keys: keys
                    .into_iter()
                    .map(|k| SealedProviderKey {
                        key: k.key,
                        ciphertext: k.ciphertext,
                    })
                    .collect(),
                models,
                aliases,
                settings,
            }
        }))
    }

    /// Replaces the routing state with `snapshot` in one transaction: API upstreams (and their
    /// keys), models, aliases and settings are deleted and the snapshot's rows inserted with
    /// their original ids, so sealed keys still decrypt (their ciphertext is bound to the ids).
    pub async fn restore_routing_snapshot(
        &self,
        snapshot: &RoutingSnapshot,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            for sql in [
                "DELETE FROM models",
                "DELETE FROM aliases",
                // Runtime switches (drains) outlive a rollback.
                "DELETE FROM settings WHERE key NOT LIKE 'runtime.%'",
                "DELETE FROM upstreams WHERE source = 'api'",
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            insert_api_upstreams!(tx, snapshot);
            for m in &snapshot.models {
                sqlx::query(
                    "INSERT INTO models (id, name, upstream_id, enabled, origin, created_at, \
                     original_name) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&m.id)
                .bind(&m.name)
                .bind(&m.upstream_id)
                .bind(m.enabled)
                .bind(m.origin.as_str())
                .bind(m.created_at)
                .bind(&m.original_name)
                .execute(&mut *tx)
                .await?;
            }
            for a in &snapshot.aliases {
                sqlx::query(
                    "INSERT INTO aliases (id, name, targets, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&a.id)
                .bind(&a.name)
                .bind(to_json(&a.targets)?)
                .bind(a.created_at)
                .bind(a.updated_at)
                .execute(&mut *tx)
                .await?;
            }
            for (key, value) in &snapshot.settings {
                if key.starts_with(crate::RUNTIME_PREFIX) {
                    continue;
                }
                sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)")
                    .bind(key)
                    .bind(to_json(value)?)
                    .bind(crate::ids::now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }
}

//! Settings overridden through the admin API (`key` → JSON value), e.g. the routing strategy.

use crate::db::{json_column, on_pool, to_json, write_tx};
use crate::ids::now_ms;
use crate::{Store, StoreError};

impl Store {
    /// The value of setting `key`, `None` when it is not set.
    pub async fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let raw: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        });
        Ok(raw.map(|raw| json_column(&raw, "value")).transpose()?)
    }

    /// Every setting, by key.
    pub async fn list_settings(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT key, value FROM settings ORDER BY key")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(key, raw)| Ok((key, json_column(&raw, "value")?)))
            .collect()
    }

    /// Sets `key` to `value` (insert or replace).
    pub async fn set_setting(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let value = to_json(value)?;
        write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(&value)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Removes `key` (no error when it was not set).
    pub async fn delete_setting(&self, key: &str) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("DELETE FROM settings WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }
}

/// Settings under this prefix are runtime switches (e.g. drains), not configuration: routing
/// snapshots (revisions, rollback) neither record nor replace them.
pub const RUNTIME_PREFIX: &str = "runtime.";
/// One row per drained upstream: `runtime.drain.NAME` → `{"since": ms, "actor": …}`, so two
/// instances draining different upstreams at once never overwrite each other.
const DRAIN_PREFIX: &str = "runtime.drain.";

/// An upstream taken out of rotation for maintenance (`POST /upstreams/{name}/drain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drain {
    pub upstream: String,
    /// When it was drained (ms since the Unix epoch).
    pub since: i64,
    pub actor: String,
}

impl Store {
    /// Every drained upstream, by name.
    pub async fn list_drains(&self) -> Result<Vec<Drain>, StoreError> {
        let mut out = Vec::new();
        for (key, value) in self.list_settings().await? {
            if let Some(name) = key.strip_prefix(DRAIN_PREFIX) {
                out.push(Drain {
                    upstream: name.to_string(),
                    since: value["since"].as_i64().unwrap_or_default(),
                    actor: value["actor"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        Ok(out)
    }

    /// Marks `upstream` drained by `actor`; draining a drained one keeps its first record.
    /// Returns whether it was newly drained.
    pub async fn set_drain(&self, upstream: &str, actor: &str) -> Result<bool, StoreError> {
        let key = format!("{DRAIN_PREFIX}{upstream}");
        let value = to_json(&serde_json::json!({ "since": now_ms(), "actor": actor }))?;
        let inserted = write_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key)
            .bind(&value)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(inserted > 0)
    }

    /// Puts `upstream` back into rotation. Returns whether it was drained.
    pub async fn clear_drain(&self, upstream: &str) -> Result<bool, StoreError> {
        let key = format!("{DRAIN_PREFIX}{upstream}");
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM settings WHERE key = $1")
                .bind(&key)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(deleted > 0)
    }
}

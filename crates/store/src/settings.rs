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

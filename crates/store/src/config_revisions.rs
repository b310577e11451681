//! Config revisions: every full configuration snapshot applied, from the file or the API.

use serde::{Deserialize, Serialize};

use crate::db::{enum_column, impl_from_row, on_pool, write_tx};
use crate::ids::now_ms;
use crate::{Source, Store, StoreError};

/// A stored configuration snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigRevision {
    /// Increasing id (the revision number).
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who applied it.
    pub actor: String,
    /// File or API.
    pub source: Source,
    /// The full configuration (JSON or TOML; secrets as the caller chose to store them).
    pub content: String,
    /// Free-form note.
    pub note: Option<String>,
}

/// A revision to record (stamped with the current time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewConfigRevision {
    /// Who applied it.
    pub actor: String,
    /// File or API.
    pub source: Source,
    /// The full configuration.
    pub content: String,
    /// Free-form note.
    pub note: Option<String>,
}

impl_from_row!(ConfigRevision, |row| {
    Ok(ConfigRevision {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        source: enum_column(row.try_get("source")?, "source")?,
        content: row.try_get("content")?,
        note: row.try_get("note")?,
    })
});

macro_rules! cols {
    () => {
        "id, at, actor, source, content, note"
    };
}

impl Store {
    /// Appends a revision.
    pub async fn create_config_revision(
        &self,
        new: &NewConfigRevision,
    ) -> Result<ConfigRevision, StoreError> {
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO config_revisions (at, actor, source, content, note) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING ",
                cols!()
            ))
            .bind(now_ms())
            .bind(&new.actor)
            .bind(new.source.as_str())
            .bind(&new.content)
            .bind(&new.note)
            .fetch_one(&mut *tx)
            .await?
        }))
    }

    /// Revision `id`.
    pub async fn get_config_revision(&self, id: i64) -> Result<ConfigRevision, StoreError> {
        let found: Option<ConfigRevision> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM config_revisions WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// The newest revision, `None` when there is none.
    pub async fn latest_config_revision(&self) -> Result<Option<ConfigRevision>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM config_revisions ORDER BY id DESC LIMIT 1"
            ))
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Up to `limit` revisions, newest first; `before_id` pages like the audit log.
    pub async fn list_config_revisions(
        &self,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<ConfigRevision>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM config_revisions WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
            ))
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}

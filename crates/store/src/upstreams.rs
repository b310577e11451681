//! Upstreams (the LLM providers llmux forwards to): `Upstream` and its CRUD on `Store`.

use serde::{Deserialize, Serialize};

use crate::db::{
    enum_column, impl_from_row, json_column, json_column_opt, on_pool, text_enum, to_json,
    to_json_opt, write_tx,
};
use crate::ids::{new_id, now_ms};
use crate::{Store, StoreError};

text_enum! {
    /// Where a row came from: the config file or the admin API.
    Source {
        /// Loaded from the configuration file.
        File = "file",
        /// Created through the admin API.
        Api = "api",
    }
}

/// A stored upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    /// `up_…`
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Provider kind (`openai`, `anthropic`, … as the config crate spells it).
    pub kind: String,
    /// Base url.
    pub url: String,
    /// Routing weight.
    pub weight: i64,
    /// Models served; `None` means "whatever the upstream reports".
    pub models: Option<Vec<String>>,
    /// Timeouts as JSON (shape owned by the caller).
    pub timeouts: serde_json::Value,
    /// Whether the gateway routes to it.
    pub enabled: bool,
    /// Where it came from.
    pub source: Source,
    /// API version for kinds that want one (Azure's `api-version`, `anthropic-version`).
    pub api_version: Option<String>,
    /// Translation options (`max_tokens_field`, `max_output_tokens`) as a JSON object with the
    /// config file's keys; `Null` when none is set.
    #[serde(default)]
    pub options: serde_json::Value,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// The fields of an upstream, for create and (full replacement) update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewUpstream {
    /// Unique name.
    pub name: String,
    /// Provider kind.
    pub kind: String,
    /// Base url.
    pub url: String,
    /// Routing weight.
    pub weight: i64,
    /// Models served, `None` for all.
    pub models: Option<Vec<String>>,
    /// Timeouts as JSON.
    pub timeouts: serde_json::Value,
    /// Whether the gateway routes to it.
    pub enabled: bool,
    /// Where it came from.
    pub source: Source,
    /// API version for kinds that want one.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Translation options, as [`Upstream::options`].
    #[serde(default)]
    pub options: serde_json::Value,
}

impl_from_row!(Upstream, |row| {
    Ok(Upstream {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        url: row.try_get("url")?,
        weight: row.try_get("weight")?,
        models: json_column_opt(row.try_get("models")?, "models")?,
        timeouts: json_column(row.try_get("timeouts")?, "timeouts")?,
        enabled: row.try_get("enabled")?,
        source: enum_column(row.try_get("source")?, "source")?,
        api_version: row.try_get("api_version")?,
        options: json_column_opt::<serde_json::Value>(row.try_get("options")?, "options")?
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
});

/// The selected columns, in one place for every statement (`concat!` keeps the SQL static).
macro_rules! cols {
    () => {
        "id, name, kind, url, weight, models, timeouts, enabled, source, created_at, updated_at, \
         api_version, options"
    };
}

/// The `options` column: `NULL` for none (`Null` or an empty object), else the JSON text.
pub(crate) fn options_json(options: &serde_json::Value) -> Result<Option<String>, StoreError> {
    match options {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Object(o) if o.is_empty() => Ok(None),
        other => to_json(other).map(Some),
    }
}

impl Store {
    /// Creates an upstream; `Conflict` when the name is taken.
    pub async fn create_upstream(&self, new: &NewUpstream) -> Result<Upstream, StoreError> {
        let id = new_id("up");
        let now = now_ms();
        let models = to_json_opt(new.models.as_ref())?;
        let timeouts = to_json(&new.timeouts)?;
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO upstreams (",
                cols!(),
                ") \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12) RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(&new.name)
            .bind(&new.kind)
            .bind(&new.url)
            .bind(new.weight)
            .bind(&models)
            .bind(&timeouts)
            .bind(new.enabled)
            .bind(new.source.as_str())
            .bind(now)
            .bind(&new.api_version)
            .bind(options_json(&new.options)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("upstream {:?} already exists", new.name)
            }))?
        }))
    }

    /// The upstream with this id.
    pub async fn get_upstream(&self, id: &str) -> Result<Upstream, StoreError> {
        let found: Option<Upstream> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM upstreams WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// The upstream with this name.
    pub async fn get_upstream_by_name(&self, name: &str) -> Result<Upstream, StoreError> {
        let found: Option<Upstream> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM upstreams WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// All upstreams, by name.
    pub async fn list_upstreams(&self) -> Result<Vec<Upstream>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM upstreams ORDER BY name"))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Replaces every field of upstream `id` (keeps id and created_at); `NotFound` or
    /// `Conflict` (name taken).
    pub async fn update_upstream(
        &self,
        id: &str,
        new: &NewUpstream,
    ) -> Result<Upstream, StoreError> {
        let models = to_json_opt(new.models.as_ref())?;
        let timeouts = to_json(&new.timeouts)?;
        let updated: Option<Upstream> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE upstreams SET name = $2, kind = $3, url = $4, weight = $5, models = $6, \
                 timeouts = $7, enabled = $8, source = $9, updated_at = $10, api_version = $11, \
                 options = $12 WHERE id = $1 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(&new.name)
            .bind(&new.kind)
            .bind(&new.url)
            .bind(new.weight)
            .bind(&models)
            .bind(&timeouts)
            .bind(new.enabled)
            .bind(new.source.as_str())
            .bind(now_ms())
            .bind(&new.api_version)
            .bind(options_json(&new.options)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("upstream {:?} already exists", new.name)
            }))?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Deletes upstream `id` and (cascade) its provider keys and models.
    pub async fn delete_upstream(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM upstreams WHERE id = $1")
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

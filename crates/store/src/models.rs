//! Models known to the gateway (declared by an operator or discovered from an upstream).

use serde::{Deserialize, Serialize};

use crate::db::{enum_column, impl_from_row, on_pool, text_enum, write_tx};
use crate::ids::{new_id, now_ms};
use crate::{Store, StoreError};

text_enum! {
    /// How a model became known.
    ModelOrigin {
        /// Declared by an operator (config file or admin API).
        Declared = "declared",
        /// Reported by the upstream's model list.
        Discovered = "discovered",
    }
}

/// A stored model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// `md_…`
    pub id: String,
    /// Model name as clients request it.
    pub name: String,
    /// The upstream serving it, `None` for a model not tied to one upstream.
    pub upstream_id: Option<String>,
    /// Whether the gateway offers it.
    pub enabled: bool,
    /// Declared or discovered.
    pub origin: ModelOrigin,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The name the upstream knows it by, when it was renamed (`name` is then the new name).
    #[serde(default)]
    pub original_name: Option<String>,
}

/// The fields of a model, for create and (full replacement) update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewModel {
    /// Model name; unique per upstream (and among models without an upstream).
    pub name: String,
    /// The upstream serving it.
    pub upstream_id: Option<String>,
    /// Whether the gateway offers it.
    pub enabled: bool,
    /// Declared or discovered.
    pub origin: ModelOrigin,
    /// The name the upstream knows it by, when renamed.
    pub original_name: Option<String>,
}

impl_from_row!(Model, |row| {
    Ok(Model {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        upstream_id: row.try_get("upstream_id")?,
        enabled: row.try_get("enabled")?,
        origin: enum_column(row.try_get("origin")?, "origin")?,
        created_at: row.try_get("created_at")?,
        original_name: row.try_get("original_name")?,
    })
});

macro_rules! cols {
    () => {
        "id, name, upstream_id, enabled, origin, created_at, original_name"
    };
}

const UPDATE_MODEL: &str = concat!(
    "UPDATE models SET name = $2, upstream_id = $3, enabled = $4, origin = $5, \
     original_name = $6 WHERE id = $1 RETURNING ",
    cols!()
);

fn conflict(new: &NewModel) -> impl FnOnce() -> String + '_ {
    move || match &new.upstream_id {
        Some(upstream) => format!(
            "model {:?} already exists for upstream {upstream}",
            new.name
        ),
        None => format!("model {:?} already exists", new.name),
    }
}

impl Store {
    /// Creates a model; `Conflict` when (name, upstream) exists, `MissingReference` when the
    /// upstream does not.
    pub async fn create_model(&self, new: &NewModel) -> Result<Model, StoreError> {
        let id = new_id("md");
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO models (",
                cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(&new.name)
            .bind(&new.upstream_id)
            .bind(new.enabled)
            .bind(new.origin.as_str())
            .bind(now_ms())
            .bind(&new.original_name)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(conflict(new)))?
        }))
    }

    /// The model with this id.
    pub async fn get_model(&self, id: &str) -> Result<Model, StoreError> {
        let found: Option<Model> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM models WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// Models of one upstream (`Some`) or all models (`None`), by name.
    pub async fn list_models(&self, upstream_id: Option<&str>) -> Result<Vec<Model>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM models WHERE ($1 IS NULL OR upstream_id = $1) ORDER BY name, id"
            ))
            .bind(upstream_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Replaces every field of model `id`.
    pub async fn update_model(&self, id: &str, new: &NewModel) -> Result<Model, StoreError> {
        self.update_model_with(id, new, None).await
    }

    /// [`Store::update_model`] for a rename that keeps the old name answering: model `id`
    /// becomes `new`, and `alias` (its old name) becomes an alias of `new.name`, in one
    /// transaction. A taken alias name (or model name) is `Conflict` and changes nothing.
    pub async fn rename_model_keeping_alias(
        &self,
        id: &str,
        new: &NewModel,
        alias: &str,
    ) -> Result<Model, StoreError> {
        self.update_model_with(id, new, Some(alias)).await
    }

    async fn update_model_with(
        &self,
        id: &str,
        new: &NewModel,
        alias: Option<&str>,
    ) -> Result<Model, StoreError> {
        let alias_row = match alias {
            Some(name) => Some((
                new_id("al"),
                name,
                crate::db::to_json(std::slice::from_ref(&new.name))?,
            )),
            None => None,
        };
        let now = now_ms();
        let updated: Option<Model> = write_tx!(self, |tx| {
            let model: Option<Model> = sqlx::query_as(UPDATE_MODEL)
                .bind(id)
                .bind(&new.name)
                .bind(&new.upstream_id)
                .bind(new.enabled)
                .bind(new.origin.as_str())
                .bind(&new.original_name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::conflict_as(conflict(new)))?;
            if let (Some(_), Some((alias_id, name, targets))) = (&model, &alias_row) {
                sqlx::query(
                    "INSERT INTO aliases (id, name, targets, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(alias_id)
                .bind(*name)
                .bind(targets)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::conflict_as(|| {
                    format!("alias {name:?} already exists")
                }))?;
            }
            model
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Deletes model `id`.
    pub async fn delete_model(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM models WHERE id = $1")
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

    /// Switches every model in `ids` on or off in one transaction: all or none. An unknown id
    /// is `Invalid`, naming it, and nothing changes.
    pub async fn set_models_enabled(
        &self,
        ids: &[String],
        enabled: bool,
    ) -> Result<Vec<Model>, StoreError> {
        Ok(write_tx!(self, |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<Model> = sqlx::query_as(concat!(
                    "UPDATE models SET enabled = $2 WHERE id = $1 RETURNING ",
                    cols!()
                ))
                .bind(id)
                .bind(enabled)
                .fetch_optional(&mut *tx)
                .await?;
                out.push(row.ok_or_else(|| unknown_model(id))?);
            }
            out
        }))
    }

    /// Deletes every model in `ids` in one transaction: all or none. An unknown id is
    /// `Invalid`, naming it, and nothing is deleted.
    pub async fn delete_models(&self, ids: &[String]) -> Result<Vec<Model>, StoreError> {
        Ok(write_tx!(self, |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<Model> = sqlx::query_as(concat!(
                    "DELETE FROM models WHERE id = $1 RETURNING ",
                    cols!()
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                out.push(row.ok_or_else(|| unknown_model(id))?);
            }
            out
        }))
    }
}

fn unknown_model(id: &str) -> StoreError {
    StoreError::Invalid(format!("ids: no model with id {id:?}; nothing was changed"))
}

//! Model aliases: a name that resolves to an ordered list of target models.

use serde::{Deserialize, Serialize};

use crate::db::{impl_from_row, json_column, on_pool, to_json, write_tx};
use crate::ids::{new_id, now_ms};
use crate::{Store, StoreError};

/// A stored alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    /// `al_…`
    pub id: String,
    /// Unique alias name.
    pub name: String,
    /// Target models, in order of preference.
    pub targets: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl_from_row!(Alias, |row| {
    Ok(Alias {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        targets: json_column(row.try_get("targets")?, "targets")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
});

macro_rules! cols {
    () => {
        "id, name, targets, created_at, updated_at"
    };
}

impl Store {
    /// Creates an alias; `Conflict` when the name is taken.
    pub async fn create_alias(&self, name: &str, targets: &[String]) -> Result<Alias, StoreError> {
        let id = new_id("al");
        let targets = to_json(targets)?;
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO aliases (",
                cols!(),
                ") VALUES ($1, $2, $3, $4, $4) RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(name)
            .bind(&targets)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("alias {name:?} already exists")
            }))?
        }))
    }

    /// The alias with this id.
    pub async fn get_alias(&self, id: &str) -> Result<Alias, StoreError> {
        let found: Option<Alias> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM aliases WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// The alias with this name.
    pub async fn get_alias_by_name(&self, name: &str) -> Result<Alias, StoreError> {
        let found: Option<Alias> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM aliases WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// All aliases, by name.
    pub async fn list_aliases(&self) -> Result<Vec<Alias>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM aliases ORDER BY name"))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Renames alias `id` and replaces its targets.
    pub async fn update_alias(
        &self,
        id: &str,
        name: &str,
        targets: &[String],
    ) -> Result<Alias, StoreError> {
        let targets = to_json(targets)?;
        let updated: Option<Alias> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE aliases SET name = $2, targets = $3, updated_at = $4 WHERE id = $1 \
                 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(name)
            .bind(&targets)
            .bind(now_ms())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("alias {name:?} already exists")
            }))?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Deletes alias `id`.
    pub async fn delete_alias(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM aliases WHERE id = $1")
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

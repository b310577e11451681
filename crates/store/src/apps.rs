//! Apps: the tenants that own virtual keys, with credits and optional budgets.

use serde::{Deserialize, Serialize};

use crate::db::{impl_from_row, on_pool, write_tx};
use crate::ids::{new_id, now_ms};
use crate::{Store, StoreError};

/// A stored app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct App {
    /// `app_…`
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Remaining credits.
    pub credits: f64,
    /// Spending limit per day, `None` for no limit.
    pub daily_budget: Option<f64>,
    /// Spending limit per month, `None` for no limit.
    pub monthly_budget: Option<f64>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The fields of an app, for create and (full replacement) update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewApp {
    /// Unique name.
    pub name: String,
    /// Credits.
    pub credits: f64,
    /// Spending limit per day.
    pub daily_budget: Option<f64>,
    /// Spending limit per month.
    pub monthly_budget: Option<f64>,
}

impl_from_row!(App, |row| {
    Ok(App {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        credits: row.try_get("credits")?,
        daily_budget: row.try_get("daily_budget")?,
        monthly_budget: row.try_get("monthly_budget")?,
        created_at: row.try_get("created_at")?,
    })
});

macro_rules! cols {
    () => {
        "id, name, credits, daily_budget, monthly_budget, created_at"
    };
}

impl Store {
    /// Creates an app; `Conflict` when the name is taken.
    pub async fn create_app(&self, new: &NewApp) -> Result<App, StoreError> {
        let id = new_id("app");
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO apps (",
                cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(&new.name)
            .bind(new.credits)
            .bind(new.daily_budget)
            .bind(new.monthly_budget)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("app {:?} already exists", new.name)
            }))?
        }))
    }

    /// The app with this id.
    pub async fn get_app(&self, id: &str) -> Result<App, StoreError> {
        let found: Option<App> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM apps WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// The app with this name.
    pub async fn get_app_by_name(&self, name: &str) -> Result<App, StoreError> {
        let found: Option<App> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM apps WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// All apps, by name.
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM apps ORDER BY name"))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Replaces every field of app `id`.
    pub async fn update_app(&self, id: &str, new: &NewApp) -> Result<App, StoreError> {
        let updated: Option<App> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE apps SET name = $2, credits = $3, daily_budget = $4, monthly_budget = $5 \
                 WHERE id = $1 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(&new.name)
            .bind(new.credits)
            .bind(new.daily_budget)
            .bind(new.monthly_budget)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("app {:?} already exists", new.name)
            }))?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Adds `delta` (negative to spend) to the app's credits atomically; returns the new
    /// balance.
    pub async fn add_app_credits(&self, id: &str, delta: f64) -> Result<f64, StoreError> {
        let balance: Option<f64> = write_tx!(self, |tx| {
            sqlx::query_scalar(
                "UPDATE apps SET credits = credits + $2 WHERE id = $1 RETURNING credits",
            )
            .bind(id)
            .bind(delta)
            .fetch_optional(&mut *tx)
            .await?
        });
        balance.ok_or(StoreError::NotFound)
    }

    /// Deletes app `id` and (cascade) its virtual keys; its call-log rows stay.
    pub async fn delete_app(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM apps WHERE id = $1")
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

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
    /// Remaining credits (USD); `None`: the app is not metered (its budgets still apply).
    pub credits: Option<f64>,
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
    /// Credits; `None`: not metered.
    pub credits: Option<f64>,
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

/// Which fields of an app to change: `None` leaves a field alone; for the optional ones,
/// `Some(None)` clears it (no budget; credits not metered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppPatch {
    pub name: Option<String>,
    pub credits: Option<Option<f64>>,
    pub daily_budget: Option<Option<f64>>,
    pub monthly_budget: Option<Option<f64>>,
}

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

    /// Changes only the fields `patch` names, in one statement, so that a charge committed
    /// meanwhile (`credits = credits - cost`) is not overwritten with a balance read earlier.
    pub async fn patch_app(&self, id: &str, patch: &AppPatch) -> Result<App, StoreError> {
        let updated: Option<App> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE apps SET \
                 name = CASE WHEN $2 THEN $3 ELSE name END, \
                 credits = CASE WHEN $4 THEN $5 ELSE credits END, \
                 daily_budget = CASE WHEN $6 THEN $7 ELSE daily_budget END, \
                 monthly_budget = CASE WHEN $8 THEN $9 ELSE monthly_budget END \
                 WHERE id = $1 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(patch.name.is_some())
            .bind(patch.name.as_deref())
            .bind(patch.credits.is_some())
            .bind(patch.credits.flatten())
            .bind(patch.daily_budget.is_some())
            .bind(patch.daily_budget.flatten())
            .bind(patch.monthly_budget.is_some())
            .bind(patch.monthly_budget.flatten())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!(
                    "app {:?} already exists",
                    patch.name.as_deref().unwrap_or("")
                )
            }))?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Adds `add` to the app's credits atomically and returns the app; an app that was not
    /// metered starts metering from `add`.
    pub async fn top_up_app(&self, id: &str, add: f64) -> Result<App, StoreError> {
        let updated: Option<App> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE apps SET credits = COALESCE(credits, 0.0) + $2 WHERE id = $1 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(add)
            .fetch_optional(&mut *tx)
            .await?
        });
        updated.ok_or(StoreError::NotFound)
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
    /// balance (an app that was not metered starts from 0).
    pub async fn add_app_credits(&self, id: &str, delta: f64) -> Result<f64, StoreError> {
        let balance: Option<f64> = write_tx!(self, |tx| {
            sqlx::query_scalar(
                "UPDATE apps SET credits = COALESCE(credits, 0.0) + $2 WHERE id = $1 \
                 RETURNING credits",
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

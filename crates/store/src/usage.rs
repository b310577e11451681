//! Usage rollups (hour and day × app × model × upstream), kept by `Store::record_calls`, and the
//! queries over them: usage reports and what an app spent since a given time.

use serde::Serialize;
use sqlx::QueryBuilder;

use crate::db::{impl_from_row, on_pool};
use crate::{Store, StoreError};

/// Which dimensions a usage report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageGroup {
    pub app: bool,
    pub model: bool,
    pub upstream: bool,
    /// One row per hour (or per day with `day`) instead of one for the whole range.
    pub time: bool,
}

/// A usage report's query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageQuery {
    /// Unix ms, inclusive; rounded down to the bucket.
    pub from: Option<i64>,
    /// Unix ms, exclusive.
    pub to: Option<i64>,
    /// Day buckets rather than hour buckets.
    pub day: bool,
    pub group: UsageGroup,
    /// Only this app.
    pub app_id: Option<String>,
}

/// One row of a usage report; the grouped-away dimensions are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub calls: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: f64,
}

impl_from_row!(UsageRow, |row| {
    Ok(UsageRow {
        start: row.try_get("start")?,
        app_id: row.try_get("app_id")?,
        model: row.try_get("model")?,
        upstream: row.try_get("upstream")?,
        calls: row.try_get("calls")?,
        errors: row.try_get("errors")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cost: row.try_get("cost")?,
    })
});

impl Store {
    /// Sums of calls, errors, tokens and cost over the rollups, grouped as asked.
    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let g = q.group;
        let col = |on: bool, name: &str, ty: &str| {
            if on {
                name.to_owned()
            } else {
                format!("CAST(NULL AS {ty}) AS {name}")
            }
        };
        let select = format!(
            "SELECT {}, {}, {}, {}, CAST(SUM(calls) AS BIGINT) AS calls, \
             CAST(SUM(errors) AS BIGINT) AS errors, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(cost) AS DOUBLE PRECISION) AS cost FROM usage_rollup WHERE bucket = ",
            col(g.time, "start", "BIGINT"),
            col(g.app, "app_id", "TEXT"),
            col(g.model, "model", "TEXT"),
            col(g.upstream, "upstream", "TEXT"),
        );
        let mut groups: Vec<&str> = Vec::new();
        for (on, name) in [
            (g.time, "start"),
            (g.app, "app_id"),
            (g.model, "model"),
            (g.upstream, "upstream"),
        ] {
            if on {
                groups.push(name);
            }
        }
        let bucket_len: i64 = if q.day { 86_400_000 } else { 3_600_000 };
        Ok(on_pool!(self, |pool, Db| {
            let mut query = QueryBuilder::<Db>::new(select.clone());
            query.push_bind(if q.day { "day" } else { "hour" });
            if let Some(from) = q.from {
                query
                    .push(" AND start >= ")
                    .push_bind(from.div_euclid(bucket_len) * bucket_len);
            }
            if let Some(to) = q.to {
                query.push(" AND start < ").push_bind(to);
            }
            if let Some(app) = &q.app_id {
                query.push(" AND app_id = ").push_bind(app.clone());
            }
            // Without any group there is one row of totals; SUM over no rows is NULL, so only
            // groups that have rows are returned (a total over nothing is filtered by HAVING).
            if !groups.is_empty() {
                query.push(" GROUP BY ").push(groups.join(", "));
            }
            query.push(" HAVING COUNT(*) > 0");
            if !groups.is_empty() {
                query.push(" ORDER BY ").push(groups.join(", "));
            }
            query.build_query_as().fetch_all(pool).await?
        }))
    }

    /// What `app_id` spent (USD) in the day buckets starting at or after `since` (unix ms,
    /// the start of a UTC day).
    pub async fn app_spent_since(&self, app_id: &str, since: i64) -> Result<f64, StoreError> {
        let spent: Option<f64> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT CAST(SUM(cost) AS DOUBLE PRECISION) FROM usage_rollup \
                 WHERE bucket = 'day' AND app_id = $1 AND start >= $2",
            )
            .bind(app_id)
            .bind(since)
            .fetch_one(pool)
            .await?
        });
        Ok(spent.unwrap_or(0.0))
    }
}

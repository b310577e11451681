//! The call log: one row per gateway request, written in batches by the call-log writer.

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use crate::db::{impl_from_row, on_pool, write_tx};
use crate::{Store, StoreError};

/// One gateway request, as the call-log writer records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unix milliseconds when the request arrived.
    pub created_at: i64,
    /// The request id (also sent to the client).
    pub request_id: String,
    /// App of the virtual key, if any.
    pub app_id: Option<String>,
    /// Virtual key row id, if any.
    pub virtual_key_id: Option<String>,
    /// API dialect of the request (`openai`, `anthropic`, ...).
    pub dialect: String,
    /// Model the client asked for.
    pub requested_model: String,
    /// Upstream name that answered (last attempt).
    pub upstream: Option<String>,
    /// Model name sent upstream.
    pub upstream_model: Option<String>,
    /// Provider key used (last attempt).
    pub provider_key_id: Option<String>,
    /// HTTP status returned to the client.
    pub status: i64,
    /// Error class when it failed (`timeout`, `rate_limited`, ...).
    pub error_class: Option<String>,
    /// Upstream attempts made.
    pub attempts: i64,
    /// Total latency.
    pub latency_ms: i64,
    /// Time to first token (streaming).
    pub ttft_ms: Option<i64>,
    /// Prompt tokens.
    pub input_tokens: Option<i64>,
    /// Completion tokens.
    pub output_tokens: Option<i64>,
    /// Whether the token counts are estimates (upstream did not report usage).
    pub tokens_estimated: bool,
    /// Cost in credits.
    pub cost: Option<f64>,
    /// Client address.
    pub client_ip: Option<String>,
}

/// A call-log row: its id plus the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCall {
    /// Increasing id.
    pub id: i64,
    /// The record.
    #[serde(flatten)]
    pub record: CallRecord,
}

/// Which calls [`Store::list_calls`] returns (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallFilter {
    /// Only this app.
    pub app_id: Option<String>,
    /// `created_at >= since`.
    pub since: Option<i64>,
    /// `created_at < until`.
    pub until: Option<i64>,
    /// At most this many rows (default 100).
    pub limit: Option<i64>,
}

impl_from_row!(CallRecord, |row| {
    Ok(CallRecord {
        created_at: row.try_get("created_at")?,
        request_id: row.try_get("request_id")?,
        app_id: row.try_get("app_id")?,
        virtual_key_id: row.try_get("virtual_key_id")?,
        dialect: row.try_get("dialect")?,
        requested_model: row.try_get("requested_model")?,
        upstream: row.try_get("upstream")?,
        upstream_model: row.try_get("upstream_model")?,
        provider_key_id: row.try_get("provider_key_id")?,
        status: row.try_get("status")?,
        error_class: row.try_get("error_class")?,
        attempts: row.try_get("attempts")?,
        latency_ms: row.try_get("latency_ms")?,
        ttft_ms: row.try_get("ttft_ms")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        tokens_estimated: row.try_get("tokens_estimated")?,
        cost: row.try_get("cost")?,
        client_ip: row.try_get("client_ip")?,
    })
});

impl_from_row!(StoredCall, |row| {
    Ok(StoredCall {
        id: row.try_get("id")?,
        record: sqlx::FromRow::from_row(row)?,
    })
});

macro_rules! cols {
    () => {
        "created_at, request_id, app_id, virtual_key_id, dialect, requested_model, upstream, \
         upstream_model, provider_key_id, status, error_class, attempts, latency_ms, ttft_ms, \
         input_tokens, output_tokens, tokens_estimated, cost, client_ip"
    };
}

/// Rows per INSERT statement: 19 parameters each stays below SQLite's 32 766 and
/// PostgreSQL's 65 535 bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 1000;

impl Store {
    /// Inserts `calls` in one transaction with multi-row INSERTs; returns the rows written.
    pub async fn insert_calls(&self, calls: &[CallRecord]) -> Result<u64, StoreError> {
        if calls.is_empty() {
            return Ok(0);
        }
        Ok(write_tx!(self, |tx, _kind, Db| {
            let mut written = 0;
            for chunk in calls.chunks(ROWS_PER_STATEMENT) {
                let mut insert =
                    QueryBuilder::<Db>::new(concat!("INSERT INTO call_log (", cols!(), ") "));
                insert.push_values(chunk, |mut row, call| {
                    row.push_bind(call.created_at)
                        .push_bind(call.request_id.clone())
                        .push_bind(call.app_id.clone())
                        .push_bind(call.virtual_key_id.clone())
                        .push_bind(call.dialect.clone())
                        .push_bind(call.requested_model.clone())
                        .push_bind(call.upstream.clone())
                        .push_bind(call.upstream_model.clone())
                        .push_bind(call.provider_key_id.clone())
                        .push_bind(call.status)
                        .push_bind(call.error_class.clone())
                        .push_bind(call.attempts)
                        .push_bind(call.latency_ms)
                        .push_bind(call.ttft_ms)
                        .push_bind(call.input_tokens)
                        .push_bind(call.output_tokens)
                        .push_bind(call.tokens_estimated)
                        .push_bind(call.cost)
                        .push_bind(call.client_ip.clone());
                });
                written += insert.build().execute(&mut *tx).await?.rows_affected();
            }
            written
        }))
    }

    /// Calls matching `filter`, newest first.
    pub async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<StoredCall>, StoreError> {
        Ok(on_pool!(self, |pool, Db| {
            let mut query = QueryBuilder::<Db>::new(concat!(
                "SELECT id, ",
                cols!(),
                " FROM call_log WHERE TRUE"
            ));
            if let Some(app_id) = &filter.app_id {
                query.push(" AND app_id = ").push_bind(app_id.clone());
            }
            if let Some(since) = filter.since {
                query.push(" AND created_at >= ").push_bind(since);
            }
            if let Some(until) = filter.until {
                query.push(" AND created_at < ").push_bind(until);
            }
            query
                .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(filter.limit.unwrap_or(100));
            query.build_query_as().fetch_all(pool).await?
        }))
    }

    /// Number of rows in the call log.
    pub async fn count_calls(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM call_log")
                .fetch_one(pool)
                .await?
        }))
    }
}

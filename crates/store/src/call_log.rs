//! The call log: one row per gateway request, written in batches by the call-log writer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use crate::db::{impl_from_row, on_pool, write_tx};
use crate::{Store, StoreError};

/// One gateway request, as the call-log writer records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unix milliseconds when the request arrived.
    pub created_at: i64,
    /// The request id (also sent to the client; a client may choose it, so it is not unique).
    pub request_id: String,
    /// The call's own unique id ([`new_call_id`]), given when the record is made and kept in
    /// `call_log_ids`: a batch written again (after a timeout whose commit did land, or from
    /// the spill file) skips the records that are in already. `None` in records from older
    /// versions (always written), and in rows read back from the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
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
    /// The prompt, secrets redacted (`[logs] bodies = true` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// The answer, secrets redacted (`[logs] bodies = true` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// Data chunks the upstream streamed (`None` for a whole answer or no answer).
    #[serde(default)]
    pub chunks: Option<i64>,
    /// The model the upstream named in its answer.
    #[serde(default)]
    pub reported_model: Option<String>,
    /// Every attempt the call made, in order (stored as a JSON array).
    #[serde(default)]
    pub attempt_log: Vec<Attempt>,
    /// Whether the client asked for a streamed answer (`None`: not known, older rows).
    #[serde(default)]
    pub stream: Option<bool>,
    /// The hook (`[[hooks]]`) that refused the call, if one did.
    #[serde(default)]
    pub hook: Option<String>,
    /// Answered from the response cache (`[cache]`): no upstream, tokens or cost.
    #[serde(default)]
    pub cache_hit: bool,
    /// Of `input_tokens`: read from the provider's prompt cache (`None`: older rows).
    #[serde(default)]
    pub cached_tokens: Option<i64>,
    /// Of `input_tokens`: written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: Option<i64>,
    /// Of `output_tokens`: spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: Option<i64>,
}

/// One attempt of a call at an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The upstream tried.
    pub upstream: String,
    /// The provider key id it used, if the upstream has keys.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The upstream's HTTP status; `None` when no answer came (connect error, timeout).
    #[serde(default)]
    pub status: Option<u16>,
    /// Why the attempt failed (`None`: it answered the call).
    #[serde(default)]
    pub error_class: Option<String>,
    /// Milliseconds from sending the request to the answer's first byte or the failure.
    pub ms: u64,
}

/// A new unique call id: `call_`, the time, then 16 random alphanumerics (about 95 bits).
///
/// Time-ordered: the unix milliseconds in 11 hex digits come before the random part, so each
/// batch's ids go to the end of `call_log_ids`' primary-key index. Random ids landed all over
/// it, and once the index outgrew SQLite's page cache every insert read and rewrote pages
/// across the whole file (the writer's share of the CPU under load grew with the log).
pub fn new_call_id() -> String {
    let ms = u64::try_from(crate::ids::now_ms()).unwrap_or(0);
    format!("call_{ms:011x}{}", crate::ids::random_alphanumeric(16))
}

/// Attempts a record keeps (`routing.max_attempts` per target bounds them well below this).
const MAX_ATTEMPTS_KEPT: usize = 64;

/// The attempt log as stored: a JSON array, or NULL for none.
fn attempt_log_json(log: &[Attempt]) -> Option<String> {
    if log.is_empty() {
        return None;
    }
    serde_json::to_string(log).ok()
}

/// Longest text a sanitised record keeps in a short field (ids, names, models).
const SANITISED_FIELD: usize = 256;
/// Longest text a sanitised record keeps of a request or answer body.
const SANITISED_BODY: usize = 64 * 1024;

impl CallRecord {
    /// The record with every text field made storable: NUL and other control characters
    /// removed, short fields cut to 256 bytes and bodies to 64 KiB. What the call-log writer
    /// stores instead of a record the database refused for its data.
    pub fn sanitised(&self) -> CallRecord {
        fn clean(s: &str, max: usize) -> String {
            let mut out: String = s
                .chars()
                .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
                .collect();
            if out.len() > max {
                let mut end = max;
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
            }
            out
        }
        let short = |s: &String| clean(s, SANITISED_FIELD);
        let opt = |s: &Option<String>| s.as_deref().map(|s| clean(s, SANITISED_FIELD));
        let body = |s: &Option<String>| s.as_deref().map(|s| clean(s, SANITISED_BODY));
        CallRecord {
            request_id: short(&self.request_id),
            call_id: opt(&self.call_id),
            app_id: opt(&self.app_id),
            virtual_key_id: opt(&self.virtual_key_id),
            dialect: short(&self.dialect),
            requested_model: short(&self.requested_model),
            upstream: opt(&self.upstream),
            upstream_model: opt(&self.upstream_model),
            provider_key_id: opt(&self.provider_key_id),
            error_class: opt(&self.error_class),
            client_ip: opt(&self.client_ip),
            reported_model: opt(&self.reported_model),
            hook: opt(&self.hook),
            request_body: body(&self.request_body),
            response_body: body(&self.response_body),
            attempt_log: self
                .attempt_log
                .iter()
                .take(MAX_ATTEMPTS_KEPT)
                .map(|a| Attempt {
                    upstream: short(&a.upstream),
                    key_id: opt(&a.key_id),
                    error_class: opt(&a.error_class),
                    ..a.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
}

impl StoreError {
    /// Whether the database refused the statement for the data it carried (a NUL byte in
    /// text, a value too large for an index, a violated constraint) rather than being
    /// unavailable: retrying the same data can never succeed.
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Conflict(_) | StoreError::MissingReference(_) | StoreError::Invalid(_) => {
                true
            }
            StoreError::Database(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                if code.len() == 5 {
                    // PostgreSQL SQLSTATE: 22 data exception (22021: a NUL byte), 23 integrity
                    // constraint, 54 program limit exceeded (54000: index row too large).
                    matches!(&code[..2], "22" | "23" | "54")
                } else {
                    // SQLite result codes: 18 SQLITE_TOOBIG, 19 SQLITE_CONSTRAINT (extended
                    // codes keep the primary code in the low byte), 20 SQLITE_MISMATCH.
                    code.parse::<u32>()
                        .is_ok_and(|c| matches!(c & 0xff, 18..=20))
                }
            }
            StoreError::Database(
                sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_),
            ) => true,
            _ => false,
        }
    }
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
    /// Only this virtual key.
    pub virtual_key_id: Option<String>,
    /// Only calls that asked for this model.
    pub model: Option<String>,
    /// Only calls answered by this upstream.
    pub upstream: Option<String>,
    /// Only calls answered with this HTTP status.
    pub status: Option<i64>,
    /// Only calls that failed with this error class.
    #[serde(default)]
    pub error_class: Option<String>,
    /// Only streamed (`true`) or whole (`false`) answers.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Only calls answered from the response cache (`true`) or not (`false`).
    #[serde(default)]
    pub cache_hit: Option<bool>,
    /// Only rows after this cursor (`(created_at, id)` of the last row of the previous page).
    pub after: Option<(i64, i64)>,
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
        call_id: None,
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
        request_body: row.try_get("request_body")?,
        response_body: row.try_get("response_body")?,
        chunks: row.try_get("chunks")?,
        reported_model: row.try_get("reported_model")?,
        // A log that does not parse (hand-edited row) shows as none rather than failing the page.
        attempt_log: row
            .try_get::<Option<String>, _>("attempt_log")?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        stream: row.try_get("stream")?,
        hook: row.try_get("hook")?,
        cache_hit: row.try_get("cache_hit")?,
        cached_tokens: row.try_get("cached_tokens")?,
        cache_write_tokens: row.try_get("cache_write_tokens")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
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
         input_tokens, output_tokens, tokens_estimated, cost, client_ip, request_body, \
         response_body, chunks, reported_model, attempt_log, stream, hook, cache_hit, \
         cached_tokens, cache_write_tokens, reasoning_tokens"
    };
}

/// Inserts `$calls` into `call_log` within the transaction `$tx` of backend `$db`, with
/// multi-row INSERTs (the values in [`cols!`] order), skipping every record whose `call_id`
/// is in `call_log_ids` already; evaluates to the records written.
macro_rules! insert_call_rows {
    ($tx:ident, $db:ident, $calls:expr) => {{
        let mut new_ids: Vec<String> = Vec::new();
        let with_ids: Vec<(&str, i64)> = $calls
            .iter()
            .filter_map(|c| c.call_id.as_deref().map(|id| (id, c.created_at)))
            .collect();
        for chunk in fixed_chunks(&with_ids) {
            let mut ids =
                QueryBuilder::<$db>::new("INSERT INTO call_log_ids (call_id, created_at) ");
            ids.push_values(chunk, |mut row, (id, at)| {
                row.push_bind(*id).push_bind(*at);
            });
            ids.push(" ON CONFLICT (call_id) DO NOTHING RETURNING call_id");
            new_ids.extend(
                ids.build_query_scalar::<String>()
                    .fetch_all(&mut *$tx)
                    .await?,
            );
        }
        let fresh = only_new($calls, with_ids.len(), new_ids);
        for chunk in fixed_chunks(&fresh) {
            let mut insert =
                QueryBuilder::<$db>::new(concat!("INSERT INTO call_log (", cols!(), ") "));
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
                    .push_bind(call.client_ip.clone())
                    .push_bind(call.request_body.clone())
                    .push_bind(call.response_body.clone())
                    .push_bind(call.chunks)
                    .push_bind(call.reported_model.clone())
                    .push_bind(attempt_log_json(&call.attempt_log))
                    .push_bind(call.stream)
                    .push_bind(call.hook.clone())
                    .push_bind(call.cache_hit)
                    .push_bind(call.cached_tokens)
                    .push_bind(call.cache_write_tokens)
                    .push_bind(call.reasoning_tokens);
            });
            insert.build().execute(&mut *$tx).await?;
        }
        fresh
    }};
}

/// The row counts a multi-row INSERT is built with, largest first: 30 parameters per row
/// stays below SQLite's 32 766 and PostgreSQL's 65 535 bind-parameter limits. A batch is cut
/// into chunks of these sizes only, so each table sees at most five statement texts, which stay
/// in the connection's prepared-statement cache: a statement built for every batch size was
/// parsed and planned again for nearly every batch (`sqlite3RunParser` and its helpers were
/// a fifth of the writer thread's samples at 7,000 calls/s).
const ROWS_PER_STATEMENT: [usize; 5] = [256, 64, 16, 4, 1];

/// `items` cut into consecutive chunks whose lengths are all in [`ROWS_PER_STATEMENT`]
/// (greedily, largest first: 500 rows are 256 + 3 × 64 + 3 × 16 + 4).
fn fixed_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = ROWS_PER_STATEMENT.into_iter().find(|&n| n <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

impl Store {
    /// Inserts `calls` in one transaction with multi-row INSERTs; returns the rows written
    /// (a record whose `call_id` is in the log already is skipped).
    pub async fn insert_calls(&self, calls: &[CallRecord]) -> Result<u64, StoreError> {
        if calls.is_empty() {
            return Ok(0);
        }
        let written = write_tx!(self, |tx, _kind, Db| {
            insert_call_rows!(tx, Db, calls).len()
        });
        Ok(u64::try_from(written).unwrap_or(u64::MAX))
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
            if let Some(key) = &filter.virtual_key_id {
                query.push(" AND virtual_key_id = ").push_bind(key.clone());
            }
            if let Some(model) = &filter.model {
                query
                    .push(" AND requested_model = ")
                    .push_bind(model.clone());
            }
            if let Some(upstream) = &filter.upstream {
                query.push(" AND upstream = ").push_bind(upstream.clone());
            }
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status);
            }
            if let Some(class) = &filter.error_class {
                query.push(" AND error_class = ").push_bind(class.clone());
            }
            if let Some(stream) = filter.stream {
                query.push(" AND stream = ").push_bind(stream);
            }
            if let Some(hit) = filter.cache_hit {
                query.push(" AND cache_hit = ").push_bind(hit);
            }
            if let Some((at, id)) = filter.after {
                query
                    .push(" AND (created_at < ")
                    .push_bind(at)
                    .push(" OR (created_at = ")
                    .push_bind(at)
                    .push(" AND id < ")
                    .push_bind(id)
                    .push("))");
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

/// One usage rollup key and its sums (what [`Store::record_calls`] adds per batch).
#[derive(Debug, Clone, Default, PartialEq)]
struct Sums {
    calls: i64,
    errors: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost: f64,
}

/// Rollup buckets, by name and length in milliseconds (UTC days).
const BUCKETS: [(&str, i64); 2] = [("hour", 3_600_000), ("day", 86_400_000)];

/// A rollup row's key: bucket, bucket start, app id, model, upstream (`""` for none).
type RollupKey<'a> = (&'a str, i64, &'a str, &'a str, &'a str);

/// What a batch adds to each rollup row, and what it costs each app.
fn batch_sums<'a>(
    calls: &[&'a CallRecord],
) -> (Vec<(RollupKey<'a>, Sums)>, BTreeMap<&'a str, f64>) {
    let mut rollups: BTreeMap<RollupKey<'_>, Sums> = BTreeMap::new();
    let mut charges: BTreeMap<&str, f64> = BTreeMap::new();
    for &c in calls {
        let cost = c.cost.unwrap_or(0.0);
        let app = c.app_id.as_deref().unwrap_or("");
        for (bucket, len) in BUCKETS {
            let start = c.created_at.div_euclid(len) * len;
            let s = rollups
                .entry((
                    bucket,
                    start,
                    app,
                    c.requested_model.as_str(),
                    c.upstream.as_deref().unwrap_or(""),
                ))
                .or_default();
            s.calls += 1;
            s.errors += i64::from(c.status >= 400);
            s.input_tokens += c.input_tokens.unwrap_or(0);
            s.output_tokens += c.output_tokens.unwrap_or(0);
            s.cost += cost;
        }
        if let Some(app) = c.app_id.as_deref() {
            if cost > 0.0 {
                *charges.entry(app).or_default() += cost;
            }
        }
    }
    (rollups.into_iter().collect(), charges)
}

/// The records of `calls` to write: those whose id was new (in `new_ids`, out of `with_ids`
/// records that had one), and every one without an id (nothing tells those apart).
fn only_new(calls: &[CallRecord], with_ids: usize, new_ids: Vec<String>) -> Vec<&CallRecord> {
    if new_ids.len() == with_ids {
        return calls.iter().collect();
    }
    let new_ids: std::collections::HashSet<String> = new_ids.into_iter().collect();
    calls
        .iter()
        .filter(|c| c.call_id.as_ref().is_none_or(|id| new_ids.contains(id)))
        .collect()
}

impl Store {
    /// Writes a batch of calls the way the call-log writer needs it, in ONE transaction: the
    /// rows, their hourly and daily usage rollups, and each app's credit decremented by the
    /// batch's cost. Either all of it lands or none (the writer then retries the same batch).
    /// Idempotent by `call_id`: records in the log already are neither written nor counted nor
    /// charged again, so a batch may be retried after a commit whose answer was lost.
    /// Returns the new credit balance of every app that was charged.
    pub async fn record_calls(
        &self,
        calls: &[CallRecord],
    ) -> Result<Vec<(String, f64)>, StoreError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        Ok(write_tx!(self, |tx, _kind, Db| {
            // Only the rows written now count: a record already in the log was counted and
            // charged by the transaction that wrote it.
            let fresh = insert_call_rows!(tx, Db, calls);
            let (rollups, charges) = batch_sums(&fresh);
            for chunk in fixed_chunks(&rollups) {
                let mut upsert = QueryBuilder::<Db>::new(
                    "INSERT INTO usage_rollup (bucket, start, app_id, model, upstream, calls, \
                     errors, input_tokens, output_tokens, cost) ",
                );
                upsert.push_values(
                    chunk,
                    |mut row, ((bucket, start, app, model, upstream), s)| {
                        row.push_bind(*bucket)
                            .push_bind(*start)
                            .push_bind(*app)
                            .push_bind(*model)
                            .push_bind(*upstream)
                            .push_bind(s.calls)
                            .push_bind(s.errors)
                            .push_bind(s.input_tokens)
                            .push_bind(s.output_tokens)
                            .push_bind(s.cost);
                    },
                );
                upsert.push(
                    " ON CONFLICT (bucket, start, app_id, model, upstream) DO UPDATE SET \
                     calls = usage_rollup.calls + excluded.calls, \
                     errors = usage_rollup.errors + excluded.errors, \
                     input_tokens = usage_rollup.input_tokens + excluded.input_tokens, \
                     output_tokens = usage_rollup.output_tokens + excluded.output_tokens, \
                     cost = usage_rollup.cost + excluded.cost",
                );
                upsert.build().execute(&mut *tx).await?;
            }
            let mut balances = Vec::with_capacity(charges.len());
            for (app, cost) in charges {
                let balance: Option<Option<f64>> = sqlx::query_scalar(
                    "UPDATE apps SET credits = credits - $2 WHERE id = $1 RETURNING credits",
                )
                .bind(app)
                .bind(cost)
                .fetch_optional(&mut *tx)
                .await?;
                // A deleted app's calls are still logged; there is no balance to charge. An
                // app that is not metered (NULL credits) stays so.
                if let Some(Some(b)) = balance {
                    balances.push((app.to_owned(), b));
                }
            }
            balances
        }))
    }

    /// Deletes up to `batch` call rows older than `before` (unix ms), oldest first, and as many
    /// of their ids (`call_log_ids`); returns how many calls went. Small batches keep each
    /// transaction (and its lock) short.
    pub async fn delete_calls_before(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        Ok(write_tx!(self, |tx| {
            let calls = sqlx::query(
                "DELETE FROM call_log WHERE id IN \
                 (SELECT id FROM call_log WHERE created_at < $1 ORDER BY id LIMIT $2)",
            )
            .bind(before)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Their ids go with them (there are never more ids than calls in a time range, so
            // these keep up with the rounds of the caller).
            sqlx::query(
                "DELETE FROM call_log_ids WHERE call_id IN \
                 (SELECT call_id FROM call_log_ids WHERE created_at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(batch)
            .execute(&mut *tx)
            .await?;
            calls
        }))
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::fixed_chunks;

    #[test]
    fn batches_are_cut_into_a_few_fixed_statement_sizes() {
        let sizes = |n: usize| -> Vec<usize> {
            let v: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = fixed_chunks(&v).collect();
            // Every row once, in order.
            assert_eq!(chunks.concat(), v);
            chunks.iter().map(|c| c.len()).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 1, 1, 1]);
        assert_eq!(sizes(500), [256, 64, 64, 64, 16, 16, 16, 4]);
        assert_eq!(sizes(1000).len(), 3 + 3 + 2 + 2);
    }
}

//! `Store`: the SQLite/PostgreSQL pool, connect, migrate, and the per-backend dispatch macros.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::SqlStr;

use crate::StoreError;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite (a file, or in memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The pool of one backend.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The persistence layer: a connection pool over SQLite or PostgreSQL plus the repository
/// functions (in the other modules of this crate). Cheap to clone (the pool is shared).
///
/// Both backends run the same SQL (SQLite understands `$1` placeholders too); where the syntax
/// differs, the code picks a statement per [`BackendKind`]. Every write runs in a transaction:
/// on SQLite it starts with `BEGIN IMMEDIATE` (sqlx's `Pool::begin_with`), which takes the write
/// lock up front so that two writers queue on `busy_timeout` instead of failing with
/// `SQLITE_BUSY` when a deferred read transaction tries to upgrade; on PostgreSQL a plain
/// `BEGIN` (row locks and constraint checks do the rest).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
}

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connects to `url`: `sqlite://path/to/file.db` (relative) or `sqlite:///abs/file.db`
    /// (the parent directories and the file are created when missing), `sqlite::memory:`, or
    /// `postgres://…` / `postgresql://…`. Does not run the migrations: call [`Store::migrate`].
    ///
    /// SQLite connections use WAL, `busy_timeout` 5 s, `foreign_keys = ON` and
    /// `synchronous = NORMAL`. An in-memory database lives in one connection that the pool
    /// keeps open (several connections to one shared-cache memory database would fail with
    /// "table is locked" instead of waiting).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            check_reachable(&options).await?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            return Ok(Store {
                backend: Backend::Postgres(pool),
            });
        }
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Url(redact_url(url)));
        }
        let database = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let in_memory = database.starts_with(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            if let Some(parent) = options.get_filename().parent() {
                if !parent.as_os_str().is_empty() {
                    tokio::fs::create_dir_all(parent).await?;
                }
            }
            create_private(options.get_filename()).await?;
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?
        };
        Ok(Store {
            backend: Backend::Sqlite(pool),
        })
    }

    /// Applies the migrations that have not run yet (idempotent; safe to call on every start).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlite_migrator().run(pool).await?,
            Backend::Postgres(pool) => postgres_migrator().run(pool).await?,
        }
        Ok(())
    }

    /// Which database this store uses.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Closes every connection of the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// How long a query waits for a PostgreSQL connection (sqlx's default is 30 s). While the
/// server refuses connections, sqlx retries within this time with a backoff of up to a fifth
/// of it: 5 s keeps a store that comes back from waiting up to 6 s for the next try, and an
/// admin request from hanging 30 s on a store that is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the start-up waits for PostgreSQL to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one connection, within [`CONNECT_TIMEOUT`], before the pool is built: an unreachable
/// server then fails the start in seconds with its host and port, instead of the pool retrying
/// for its 30-second acquire timeout and ending in a bare "pool timed out".
async fn check_reachable(options: &PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::ConnectOptions as _;
    let target = format!(
        "PostgreSQL at {}:{}",
        options.get_host(),
        options.get_port()
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Err(_) => Err(StoreError::Connect(format!(
            "{target}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(err)) => Err(StoreError::Connect(format!("{target}: {err}"))),
        Ok(Ok(conn)) => {
            use sqlx::Connection as _;
            let _ = conn.close().await;
            Ok(())
        }
    }
}

/// Creates the SQLite database file with mode 0600 when it is missing: it holds the audit log,
/// password hashes and sealed keys, and SQLite gives its `-wal` and `-shm` files the database
/// file's mode, so the three stay private to llmux's user. An existing file keeps its mode.
async fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    let mut open = tokio::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    open.mode(0o600);
    match open.open(path).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The url without its password, for error messages.
/// The folder for llmux's own files beside its store (the master key, the call-log spill file):
/// the SQLite database's folder, or `llmux-data/` (relative to the working directory) for
/// PostgreSQL. `None` for an in-memory database, whose state dies with the process anyway.
pub fn data_dir(url: &str) -> Option<std::path::PathBuf> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Some(std::path::PathBuf::from("llmux-data"));
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.starts_with(":memory:") || url.contains("mode=memory") {
        return None;
    }
    Some(
        std::path::Path::new(path)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
    )
}

/// The url without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

// Migration rules (both directories):
// - Files are `NNNN_description.sql`, listed below in order; an applied migration is never
//   edited (sqlx stores its checksum and refuses to start when it changes).
// - The call_log table grows without bound. A later migration must not rewrite a big table:
//   no SQLite rebuild (create-copy-drop-rename) of a big table (0004 rebuilt `apps`, one row
//   per tenant), no PostgreSQL `ALTER COLUMN … TYPE` or
//   `ADD COLUMN` with a volatile default. Only add nullable columns or columns with a constant
//   default, new tables and new indexes (PostgreSQL: `CREATE INDEX CONCURRENTLY` in a
//   migration of its own, marked no-transaction), so that `migrate` stays fast.
// - SQLite and PostgreSQL get the same schema; types differ only where the SQL must
//   (INTEGER/BIGINT, autoincrement/identity, BOOLEAN, REAL/DOUBLE PRECISION).

/// One embedded migration (what `sqlx::migrate!` would generate, without the proc-macro
/// dependency).
fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(description),
        MigrationType::Simple,
        SqlStr::from_static(sql),
        false,
    )
}

/// The newest migration version this build carries (both backends carry the same ones).
pub(crate) fn latest_migration() -> i64 {
    sqlite_migrator()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

fn sqlite_migrator() -> Migrator {
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
        ),
        migration(
            2,
            "control plane",
            include_str!("../migrations/sqlite/0002_control_plane.sql"),
        ),
        migration(
            3,
            "usage",
            include_str!("../migrations/sqlite/0003_usage.sql"),
        ),
        // Rebuilds the (small) apps table with foreign keys off: runs outside sqlx's
        // transaction and opens its own (see the file).
        Migration::new(
            4,
            Cow::Borrowed("optional credits"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../migrations/sqlite/0004_optional_credits.sql"
            )),
            true,
        ),
        migration(
            5,
            "user session epoch",
            include_str!("../migrations/sqlite/0005_user_session_epoch.sql"),
        ),
        migration(
            6,
            "call signals",
            include_str!("../migrations/sqlite/0006_call_signals.sql"),
        ),
        migration(
            7,
            "call attempts",
            include_str!("../migrations/sqlite/0007_call_attempts.sql"),
        ),
        migration(
            8,
            "change counter",
            include_str!("../migrations/sqlite/0008_change_counter.sql"),
        ),
        migration(
            9,
            "call ids",
            include_str!("../migrations/sqlite/0009_call_ids.sql"),
        ),
        migration(
            10,
            "model rename",
            include_str!("../migrations/sqlite/0010_model_rename.sql"),
        ),
        migration(
            11,
            "call hook",
            include_str!("../migrations/sqlite/0011_call_hook.sql"),
        ),
        migration(
            12,
            "call cache hit",
            include_str!("../migrations/sqlite/0012_call_cache_hit.sql"),
        ),
        migration(
            15,
            "call token details",
            include_str!("../migrations/sqlite/0015_call_token_details.sql"),
        ),
        migration(
            16,
            "upstream options",
            include_str!("../migrations/sqlite/0016_upstream_options.sql"),
        ),
    ])
}

fn postgres_migrator() -> Migrator {
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../migrations/postgres/0001_init.sql"),
        ),
        migration(
            2,
            "control plane",
            include_str!("../migrations/postgres/0002_control_plane.sql"),
        ),
        migration(
            3,
            "usage",
            include_str!("../migrations/postgres/0003_usage.sql"),
        ),
        Migration::new(
            4,
            Cow::Borrowed("optional credits"),
            MigrationType::Simple,
            SqlStr::from_static(include_str!(
                "../migrations/postgres/0004_optional_credits.sql"
            )),
            false,
        ),
        migration(
            5,
            "user session epoch",
            include_str!("../migrations/postgres/0005_user_session_epoch.sql"),
        ),
        migration(
            6,
            "call signals",
            include_str!("../migrations/postgres/0006_call_signals.sql"),
        ),
        migration(
            7,
            "call attempts",
            include_str!("../migrations/postgres/0007_call_attempts.sql"),
        ),
        migration(
            8,
            "change counter",
            include_str!("../migrations/postgres/0008_change_counter.sql"),
        ),
        migration(
            9,
            "call ids",
            include_str!("../migrations/postgres/0009_call_ids.sql"),
        ),
        migration(
            10,
            "model rename",
            include_str!("../migrations/postgres/0010_model_rename.sql"),
        ),
        migration(
            11,
            "call hook",
            include_str!("../migrations/postgres/0011_call_hook.sql"),
        ),
        migration(
            12,
            "call cache hit",
            include_str!("../migrations/postgres/0012_call_cache_hit.sql"),
        ),
        migration(
            15,
            "call token details",
            include_str!("../migrations/postgres/0015_call_token_details.sql"),
        ),
        migration(
            16,
            "upstream options",
            include_str!("../migrations/postgres/0016_upstream_options.sql"),
        ),
    ])
}

/// Runs `$body` with `$pool` bound to the backend's pool (`&SqlitePool` or `&PgPool`); the
/// body is compiled once per backend, so it may use any sqlx API generic over the database.
/// The optional `$db` names a local type alias for the backend's `sqlx::Database`.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Sqlite($pool) => $body,
            $crate::db::Backend::Postgres($pool) => $body,
        }
    };
    ($store:expr, |$pool:ident, $db:ident| $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Sqlite($pool) => {
                type $db = ::sqlx::Sqlite;
                $body
            }
            $crate::db::Backend::Postgres($pool) => {
                type $db = ::sqlx::Postgres;
                $body
            }
        }
    };
}

/// Runs `$body` inside a write transaction bound to `$tx` and commits it when the body
/// completes (an early `?` return drops the transaction, which rolls it back). SQLite: `BEGIN
/// IMMEDIATE` (takes the write lock first, see [`Store`]); PostgreSQL: `BEGIN`.
/// `$kind` is bound to the [`BackendKind`] for the few statements whose syntax differs, and
/// `$db` to a local alias of the backend's `sqlx::Database` type.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        write_tx!($store, |$tx, _kind, _Db| $body)
    };
    ($store:expr, |$tx:ident, $kind:ident, $db:ident| $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Sqlite(pool) => {
                #[allow(dead_code)]
                type $db = ::sqlx::Sqlite;
                #[allow(unused_variables)]
                let $kind = $crate::db::BackendKind::Sqlite;
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::db::Backend::Postgres(pool) => {
                #[allow(dead_code)]
                type $db = ::sqlx::Postgres;
                #[allow(unused_variables)]
                let $kind = $crate::db::BackendKind::Postgres;
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Implements `sqlx::FromRow` for both `SqliteRow` and `PgRow` with the same body (`$row` is
/// the row; `sqlx::Row` is in scope for `try_get`).
macro_rules! impl_from_row {
    ($ty:ty, |$row:ident| $body:block) => {
        impl<'r> ::sqlx::FromRow<'r, ::sqlx::sqlite::SqliteRow> for $ty {
            fn from_row($row: &'r ::sqlx::sqlite::SqliteRow) -> Result<Self, ::sqlx::Error> {
                #[allow(unused_imports)]
                use ::sqlx::Row as _;
                $body
            }
        }
        impl<'r> ::sqlx::FromRow<'r, ::sqlx::postgres::PgRow> for $ty {
            fn from_row($row: &'r ::sqlx::postgres::PgRow) -> Result<Self, ::sqlx::Error> {
                #[allow(unused_imports)]
                use ::sqlx::Row as _;
                $body
            }
        }
    };
}

/// Declares a public enum stored as one word of text, with `as_str`, `FromStr`, `Display` and
/// serde using the same words.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::db::UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::db::UnknownWord(s.to_owned())),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A word that is not one of an enum's stored words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownWord(pub String);

pub(crate) use {impl_from_row, on_pool, text_enum, write_tx};

/// Decodes a JSON text column (`column` names it in the error).
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    raw: &str,
    column: &str,
) -> Result<T, sqlx::Error> {
    serde_json::from_str(raw).map_err(|err| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(err),
    })
}

/// Decodes a nullable JSON text column.
pub(crate) fn json_column_opt<T: serde::de::DeserializeOwned>(
    raw: Option<String>,
    column: &str,
) -> Result<Option<T>, sqlx::Error> {
    raw.map(|raw| json_column(&raw, column)).transpose()
}

/// Decodes a text column that holds one of a fixed set of words.
pub(crate) fn enum_column<T: FromStr>(raw: &str, column: &str) -> Result<T, sqlx::Error> {
    raw.parse().map_err(|_| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value {raw:?}").into(),
    })
}

/// Encodes a value for a JSON text column.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Invalid(err.to_string()))
}

/// Encodes an optional value for a nullable JSON text column.
pub(crate) fn to_json_opt<T: serde::Serialize>(
    value: Option<&T>,
) -> Result<Option<String>, StoreError> {
    value.map(to_json).transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::redact_url;

    #[test]
    fn redact_url_hides_the_password() {
        assert_eq!(
            redact_url("mysql://u:secret@host/db"),
            "mysql://***@host/db"
        );
        assert_eq!(redact_url("nonsense"), "nonsense");
    }
}

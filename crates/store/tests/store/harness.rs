//! Test harness: migrated stores on a temp SQLite file and, if configured, a fresh Postgres schema.

use llmux_store::{BackendKind, Store};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};
use tempfile::TempDir;

/// The environment variable naming a PostgreSQL database for the tests.
pub const POSTGRES_ENV: &str = "LLMUX_TEST_POSTGRES_URL";

/// One backend under test.
pub struct TestDb {
    /// The migrated store.
    pub store: Store,
    /// The url `store` was opened with (reconnects use it).
    pub url: String,
    /// For SQLite: the database file.
    pub sqlite_file: Option<std::path::PathBuf>,
    /// For PostgreSQL: (url without schema, schema) to drop on drop.
    pg_schema: Option<(String, String)>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// `sqlite` or `postgres`, for assertion messages.
    pub fn label(&self) -> &'static str {
        match self.store.kind() {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }

    /// Closes the store and opens (and migrates) a new one on the same database.
    pub async fn reconnect(&mut self) {
        self.store.close().await;
        self.store = Store::connect(&self.url).await.unwrap();
        self.store.migrate().await.unwrap();
    }

    /// Runs raw SQL returning `(text, text)` rows, bypassing the store (to inspect or tamper
    /// with what is really stored).
    pub async fn raw_pairs(&self, sql: &'static str) -> Vec<(String, String)> {
        match self.store.kind() {
            BackendKind::Sqlite => {
                let pool = SqlitePool::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
            BackendKind::Postgres => {
                let pool = PgPool::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
        }
    }

    /// Runs a raw statement with two text parameters.
    pub async fn raw_exec(&self, sql: &'static str, a: &str, b: &str) {
        match self.store.kind() {
            BackendKind::Sqlite => {
                let pool = SqlitePool::connect(&self.url).await.unwrap();
                sqlx::query(sql)
                    .bind(a)
                    .bind(b)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            BackendKind::Postgres => {
                let pool = PgPool::connect(&self.url).await.unwrap();
                sqlx::query(sql)
                    .bind(a)
                    .bind(b)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
    }

    /// Runs a raw query returning one integer.
    pub async fn raw_count(&self, sql: &'static str) -> i64 {
        match self.store.kind() {
            BackendKind::Sqlite => {
                let pool = SqlitePool::connect(&self.url).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
            BackendKind::Postgres => {
                let pool = PgPool::connect(&self.url).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base_url, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop may run while a test panics, outside any runtime: use a private one.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&base_url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    // A subdirectory that does not exist yet: connect must create it.
    let file = dir.path().join("nested").join("llmux.db");
    let url = format!("sqlite://{}", file.display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    TestDb {
        store,
        url,
        sqlite_file: Some(file),
        pg_schema: None,
        _dir: Some(dir),
    }
}

async fn postgres_db(base_url: &str) -> TestDb {
    let schema = format!("llmux_test_{}", store_test_suffix().to_ascii_lowercase());
    let mut conn = PgConnection::connect(base_url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let separator = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{separator}options=-csearch_path%3D{schema}");
    let db = TestDb {
        store: Store::connect(&url).await.unwrap(),
        url,
        sqlite_file: None,
        pg_schema: Some((base_url.to_owned(), schema)),
        _dir: None,
    };
    db.store.migrate().await.unwrap();
    db
}

fn store_test_suffix() -> String {
    use rand::RngExt as _;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// A migrated SQLite store, plus a PostgreSQL one when `LLMUX_TEST_POSTGRES_URL` is set.
pub async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db().await];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => dbs.push(postgres_db(&url).await),
        _ => eprintln!("note: {POSTGRES_ENV} is unset, skipping the PostgreSQL half of this test"),
    }
    dbs
}

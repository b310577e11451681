//! Whole-store copies through the store, for `llmux backup` / `restore` / `export` / `import`:
//! tables read as typed JSON rows in one consistent read ([`Store::dump_tables`]), loaded into
//! an empty store in one transaction ([`Store::load_tables`]), rows inserted or updated in one
//! transaction ([`Store::apply_rows`]), and SQLite's `VACUUM INTO` ([`Store::vacuum_into`]).
//!
//! Rows are JSON values (null, integer, real, text, boolean) converted on the way in to the
//! target column's type, so a dump moves between SQLite and PostgreSQL (SQLite's 0/1 booleans
//! become PostgreSQL booleans). The migrations table and the change counter are never copied:
//! the target's own migrations made its schema, and its counter keeps counting.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Row as _, TypeInfo as _, ValueRef as _};

use crate::db::{write_tx, Backend, BackendKind};
use crate::{Store, StoreError};

/// Tables that a copy never holds.
const SKIPPED: &[&str] = &["_sqlx_migrations", "change_counter", "sqlite_sequence"];

/// The order tables are loaded in (referenced tables first); tables not listed (added by a
/// later migration) follow in name order.
const ORDER: &[&str] = &[
    "users",
    "apps",
    "upstreams",
    "provider_keys",
    "models",
    "aliases",
    "virtual_keys",
    "settings",
    "audit_events",
    "config_revisions",
    "call_log",
    "call_log_ids",
    "usage_rollup",
];

/// One table's rows, each a list of values in `columns` order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableDump {
    /// The table.
    pub name: String,
    /// Its columns, in the order of every row's values.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Value>>,
}

/// One row to write with [`Store::apply_rows`].
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    /// The table.
    pub table: String,
    /// The key column (`id`, or `key` for settings) and its value.
    pub key: (String, Value),
    /// Columns and values (the key included for an insert).
    pub values: Vec<(String, Value)>,
    /// Update the row with this key instead of inserting one.
    pub update: bool,
}

/// What a target column holds, for converting values into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColKind {
    Bool,
    Int,
    Float,
    Text,
}

fn col_kind(declared: &str) -> ColKind {
    let t = declared.to_ascii_lowercase();
    if t.contains("bool") {
        ColKind::Bool
    } else if t.contains("int") {
        ColKind::Int
    } else if t.contains("real") || t.contains("double") || t.contains("float") {
        ColKind::Float
    } else {
        ColKind::Text
    }
}

/// A value converted for a column of `kind`.
enum Bound {
    Bool(Option<bool>),
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
}

fn convert(value: &Value, kind: ColKind, what: &str) -> Result<Bound, StoreError> {
    let bad = || StoreError::Invalid(format!("{what}: {value} does not fit the column"));
    Ok(match (kind, value) {
        (ColKind::Bool, Value::Null) => Bound::Bool(None),
        (ColKind::Int, Value::Null) => Bound::Int(None),
        (ColKind::Float, Value::Null) => Bound::Float(None),
        (ColKind::Text, Value::Null) => Bound::Text(None),
        (ColKind::Bool, Value::Bool(b)) => Bound::Bool(Some(*b)),
        (ColKind::Bool, Value::Number(n)) => Bound::Bool(Some(n.as_i64().ok_or_else(bad)? != 0)),
        (ColKind::Int, Value::Number(n)) => Bound::Int(Some(n.as_i64().ok_or_else(bad)?)),
        (ColKind::Int, Value::Bool(b)) => Bound::Int(Some(i64::from(*b))),
        (ColKind::Float, Value::Number(n)) => Bound::Float(Some(n.as_f64().ok_or_else(bad)?)),
        (ColKind::Text, Value::String(s)) => Bound::Text(Some(s.clone())),
        (ColKind::Text, Value::Number(n)) => Bound::Text(Some(n.to_string())),
        _ => return Err(bad()),
    })
}

/// Binds a [`Bound`] to a query (a macro: the query type differs per backend).
macro_rules! bind_bound {
    ($q:expr, $b:expr) => {
        match $b {
            Bound::Bool(v) => $q.bind(v),
            Bound::Int(v) => $q.bind(v),
            Bound::Float(v) => $q.bind(v),
            Bound::Text(v) => $q.bind(v),
        }
    };
}

/// A table or column name as read from the catalog: only `[a-z0-9_]` is accepted, so that it
/// can be spliced into SQL.
fn ident(name: &str) -> Result<&str, StoreError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(name)
    } else {
        Err(StoreError::Invalid(format!("unexpected name {name:?}")))
    }
}

fn order(mut tables: Vec<String>) -> Vec<String> {
    tables.retain(|t| !SKIPPED.contains(&t.as_str()));
    tables.sort_by_key(|t| {
        (
            ORDER.iter().position(|o| o == t).unwrap_or(ORDER.len()),
            t.clone(),
        )
    });
    tables
}

const SQLITE_TABLES: &str = "SELECT name FROM sqlite_master WHERE type = 'table'";
const PG_TABLES: &str = "SELECT table_name::text FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'";
const SQLITE_COLUMNS: &str = "SELECT name, type FROM pragma_table_info($1) ORDER BY cid";
const PG_COLUMNS: &str = "SELECT column_name::text, data_type::text \
     FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 \
     ORDER BY ordinal_position";

/// Reads one value of a row as JSON (a trait so the dump body serves both backends).
trait ReadValue {
    fn value_at(&self, i: usize) -> Result<Value, StoreError>;
}

impl ReadValue for sqlx::sqlite::SqliteRow {
    fn value_at(&self, i: usize) -> Result<Value, StoreError> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let name = raw.type_info().name().to_owned();
        Ok(match name.as_str() {
            "INTEGER" | "BOOLEAN" => Value::from(self.try_get_unchecked::<i64, _>(i)?),
            "REAL" => Value::from(self.try_get_unchecked::<f64, _>(i)?),
            "BLOB" => {
                return Err(StoreError::Invalid(format!(
                    "column {i} holds a BLOB, which no llmux table has"
                )))
            }
            _ => Value::from(self.try_get_unchecked::<String, _>(i)?),
        })
    }
}

impl ReadValue for sqlx::postgres::PgRow {
    fn value_at(&self, i: usize) -> Result<Value, StoreError> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let name = raw.type_info().name().to_owned();
        Ok(match name.as_str() {
            "BOOL" => Value::from(self.try_get::<bool, _>(i)?),
            "INT2" => Value::from(self.try_get::<i16, _>(i)?),
            "INT4" => Value::from(self.try_get::<i32, _>(i)?),
            "INT8" => Value::from(self.try_get::<i64, _>(i)?),
            "FLOAT4" => Value::from(self.try_get::<f32, _>(i)?),
            "FLOAT8" => Value::from(self.try_get::<f64, _>(i)?),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::from(self.try_get::<String, _>(i)?),
            other => {
                return Err(StoreError::Invalid(format!(
                    "column {i} has type {other}, which a copy cannot carry"
                )))
            }
        })
    }
}

/// Reads `specs` (table, SQL condition) within the open transaction `$tx`.
macro_rules! dump_in {
    ($tx:ident, $columns_sql:expr, $specs:expr) => {{
        let mut out = Vec::new();
        for (table, filter) in $specs {
            let cols: Vec<(String, String)> = sqlx::query_as($columns_sql)
                .bind(table.as_str())
                .fetch_all(&mut *$tx)
                .await?;
            let names = cols
                .iter()
                .map(|(c, _)| ident(c).map(|c| format!("\"{c}\"")))
                .collect::<Result<Vec<_>, _>>()?;
            let sql = format!(
                "SELECT {} FROM \"{}\" WHERE {filter}",
                names.join(", "),
                ident(table)?
            );
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *$tx).await?;
            let rows = rows
                .iter()
                .map(|row| (0..cols.len()).map(|i| row.value_at(i)).collect())
                .collect::<Result<Vec<Vec<Value>>, StoreError>>()?;
            out.push(TableDump {
                name: table.clone(),
                columns: cols.into_iter().map(|(c, _)| c).collect(),
                rows,
            });
        }
        out
    }};
}

/// The column kinds of `table` in the target, read within `$tx`.
macro_rules! column_kinds {
    ($tx:ident, $kind:expr, $table:expr) => {{
        let sql = match $kind {
            BackendKind::Sqlite => SQLITE_COLUMNS,
            BackendKind::Postgres => PG_COLUMNS,
        };
        let cols: Vec<(String, String)> = sqlx::query(sql)
            .bind($table)
            .fetch_all(&mut *$tx)
            .await?
            .iter()
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, _>>()?;
        if cols.is_empty() {
            return Err(StoreError::Invalid(format!(
                "table {} is not in this store's schema",
                $table
            )));
        }
        cols.into_iter()
            .map(|(c, t)| (c, col_kind(&t)))
            .collect::<BTreeMap<String, ColKind>>()
    }};
}

/// Writes one row (insert or update) within `$tx`; `$kinds` are the table's column kinds.
macro_rules! write_row {
    ($tx:ident, $kinds:expr, $table:expr, $values:expr, $update:expr) => {{
        let table = ident($table)?;
        let mut names = Vec::new();
        let mut bound = Vec::new();
        for (column, value) in $values {
            let kind = *$kinds.get(column.as_str()).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "column {table}.{column} is not in this store's schema"
                ))
            })?;
            names.push(ident(column)?);
            bound.push(convert(value, kind, &format!("{table}.{column}"))?);
        }
        let sql = match $update {
            Some(key) => format!(
                "UPDATE \"{table}\" SET {} WHERE \"{}\" = ${}",
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("\"{n}\" = ${}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", "),
                ident(key)?,
                names.len() + 1
            ),
            None => format!(
                "INSERT INTO \"{table}\" ({}) VALUES ({})",
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                (1..=names.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in bound {
            q = bind_bound!(q, b);
        }
        q
    }};
}

/// The latest migration this build knows: the schema version of a store it made.
pub fn schema_version() -> i64 {
    crate::db::latest_migration()
}

impl Store {
    /// The newest migration applied to this store (0 before the first).
    pub async fn applied_schema_version(&self) -> Result<i64, StoreError> {
        Ok(crate::db::on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
            )
            .fetch_one(pool)
            .await?
            .unwrap_or(0)
        }))
    }

    /// The llmux tables of this store, in load order (the migrations table and the change
    /// counter left out).
    pub async fn table_names(&self) -> Result<Vec<String>, StoreError> {
        let names: Vec<String> = match &self.backend {
            Backend::Sqlite(pool) => sqlx::query_scalar(SQLITE_TABLES).fetch_all(pool).await?,
            Backend::Postgres(pool) => sqlx::query_scalar(PG_TABLES).fetch_all(pool).await?,
        };
        Ok(order(names))
    }

    /// Reads `specs` (table, SQL condition; `None`: every table, every row) in one consistent
    /// view: a read transaction on SQLite (WAL: a snapshot), `REPEATABLE READ, READ ONLY` on
    /// PostgreSQL. The conditions are SQL written by the caller, never user input.
    pub async fn dump_tables(
        &self,
        specs: Option<&[(&str, &str)]>,
    ) -> Result<Vec<TableDump>, StoreError> {
        let specs: Vec<(String, String)> = match specs {
            Some(s) => s
                .iter()
                .map(|(t, f)| ((*t).to_owned(), (*f).to_owned()))
                .collect(),
            None => self
                .table_names()
                .await?
                .into_iter()
                .map(|t| (t, "TRUE".to_owned()))
                .collect(),
        };
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let out = dump_in!(tx, SQLITE_COLUMNS, &specs);
                tx.rollback().await?;
                out
            }
            Backend::Postgres(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                let out = dump_in!(tx, PG_COLUMNS, &specs);
                tx.rollback().await?;
                out
            }
        })
    }

    /// Row counts per llmux table.
    pub async fn row_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for table in self.table_names().await? {
            let sql = format!("SELECT COUNT(*) FROM \"{}\"", ident(&table)?);
            let n: i64 = crate::db::on_pool!(self, |pool| {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await?
            });
            out.insert(table, n);
        }
        Ok(out)
    }

    /// A consistent copy of this SQLite store into a new file at `path` (`VACUUM INTO`: safe
    /// while other connections and processes write). PostgreSQL: an error.
    pub async fn vacuum_into(&self, path: &Path) -> Result<(), StoreError> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(StoreError::Invalid(
                "VACUUM INTO is for SQLite stores".to_owned(),
            ));
        };
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::Invalid("the snapshot path is not UTF-8".to_owned()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Opens a SQLite file written by [`Store::vacuum_into`] (no WAL, not created when missing,
    /// no migrations run): for reading its tables.
    pub async fn open_sqlite_copy(path: &Path) -> Result<Store, StoreError> {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .foreign_keys(false);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
        })
    }

    /// The first llmux table that holds a row, with its row count; `None` for an empty store
    /// (a fresh `llmux migrate` is empty).
    pub async fn first_nonempty_table(&self) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self.row_counts().await?.into_iter().find(|(_, n)| *n > 0))
    }

    /// Loads `tables` into this store in one transaction, refusing (and changing nothing) when
    /// any llmux table already holds a row. Returns the rows written. PostgreSQL's identity
    /// sequences are moved past the loaded ids.
    pub async fn load_tables(&self, tables: &[TableDump]) -> Result<u64, StoreError> {
        let names = self.table_names().await?;
        let mut written = 0u64;
        write_tx!(self, |tx, kind, _Db| {
            if kind == BackendKind::Sqlite {
                sqlx::query("PRAGMA defer_foreign_keys = ON")
                    .execute(&mut *tx)
                    .await?;
            }
            for table in &names {
                let sql = format!("SELECT COUNT(*) FROM \"{}\"", ident(table)?);
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&mut *tx)
                    .await?;
                if n > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the target store is not empty (table {table} has {n} row(s)); \
                         restore only into an empty store"
                    )));
                }
            }
            let by_name: BTreeMap<&str, &TableDump> =
                tables.iter().map(|t| (t.name.as_str(), t)).collect();
            for table in order(tables.iter().map(|t| t.name.clone()).collect()) {
                let Some(dump) = by_name.get(table.as_str()) else {
                    continue;
                };
                let kinds = column_kinds!(tx, kind, table.as_str());
                for row in &dump.rows {
                    let values = dump.columns.iter().cloned().zip(row.iter().cloned());
                    let values: Vec<(String, Value)> = values.collect();
                    write_row!(tx, kinds, &table, &values, None::<&str>)
                        .execute(&mut *tx)
                        .await?;
                    written += 1;
                }
            }
            if kind == BackendKind::Postgres {
                // Identity sequences move past the loaded ids.
                let cols: Vec<(String, String)> =
                    sqlx::query_as(PG_IDENTITIES).fetch_all(&mut *tx).await?;
                for (table, column) in cols {
                    sqlx::query(AssertSqlSafe(identity_reset(&table, &column)?))
                        .fetch_all(&mut *tx)
                        .await?;
                }
            }
        });
        Ok(written)
    }

    /// Inserts or updates `writes` in one transaction (all or nothing).
    pub async fn apply_rows(&self, writes: &[RowWrite]) -> Result<(), StoreError> {
        write_tx!(self, |tx, kind, _Db| {
            let mut kinds_of: BTreeMap<String, BTreeMap<String, ColKind>> = BTreeMap::new();
            for w in writes {
                if !kinds_of.contains_key(&w.table) {
                    let kinds = column_kinds!(tx, kind, w.table.as_str());
                    kinds_of.insert(w.table.clone(), kinds);
                }
                let kinds = kinds_of.get(&w.table).ok_or(StoreError::NotFound)?;
                let key_kind = *kinds.get(w.key.0.as_str()).ok_or(StoreError::NotFound)?;
                let key = convert(&w.key.1, key_kind, &w.key.0)?;
                let update = w.update.then_some(w.key.0.as_str());
                let q = write_row!(tx, kinds, &w.table, &w.values, update);
                let q = if w.update { bind_bound!(q, key) } else { q };
                q.execute(&mut *tx).await?;
            }
        });
        Ok(())
    }
}

const PG_IDENTITIES: &str = "SELECT table_name::text, column_name::text \
     FROM information_schema.columns WHERE table_schema = current_schema() AND is_identity = 'YES'";

/// SQL that moves the identity sequence of `table.column` past the column's largest value.
fn identity_reset(table: &str, column: &str) -> Result<String, StoreError> {
    Ok(format!(
        "SELECT setval(pg_get_serial_sequence('\"{t}\"', '{c}'), \
         COALESCE((SELECT MAX(\"{c}\") FROM \"{t}\"), 0) + 1, false)",
        t = ident(table)?,
        c = ident(column)?
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    #[test]
    fn values_convert_to_the_target_column() {
        assert_eq!(col_kind("BOOLEAN"), ColKind::Bool);
        assert_eq!(col_kind("bigint"), ColKind::Int);
        assert_eq!(col_kind("double precision"), ColKind::Float);
        assert_eq!(col_kind("TEXT"), ColKind::Text);
        // SQLite's 0/1 into a PostgreSQL boolean, and back.
        assert!(matches!(
            convert(&json!(1), ColKind::Bool, "t.c"),
            Ok(Bound::Bool(Some(true)))
        ));
        assert!(matches!(
            convert(&json!(true), ColKind::Int, "t.c"),
            Ok(Bound::Int(Some(1)))
        ));
        assert!(
            matches!(convert(&json!(3), ColKind::Float, "t.c"), Ok(Bound::Float(Some(f))) if f == 3.0)
        );
        assert!(matches!(
            convert(&Value::Null, ColKind::Text, "t.c"),
            Ok(Bound::Text(None))
        ));
        let err = convert(&json!("x"), ColKind::Int, "apps.credits")
            .err()
            .unwrap();
        assert!(err.to_string().contains("apps.credits"), "{err}");
    }

    #[test]
    fn tables_load_referenced_first_and_names_are_checked() {
        let got = order(vec![
            "call_log".into(),
            "zeta".into(),
            "virtual_keys".into(),
            "_sqlx_migrations".into(),
            "apps".into(),
            "change_counter".into(),
        ]);
        assert_eq!(got, ["apps", "virtual_keys", "call_log", "zeta"]);
        assert!(ident("call_log").is_ok());
        assert!(ident("x\"; DROP TABLE apps; --").is_err());
    }
}

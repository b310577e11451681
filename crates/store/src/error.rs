//! `StoreError`: every way a store operation can fail, with unique/foreign-key violations mapped.

use thiserror::Error;

/// An error from the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A unique constraint was violated (a name or id is already taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A referenced row (foreign key) does not exist.
    #[error("referenced row does not exist: {0}")]
    MissingReference(String),
    /// The input cannot be stored (bad value, malformed key, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database url is not `sqlite:…` or `postgres://…`.
    #[error("unsupported database url: {0}")]
    Url(String),
    /// A stored secret could not be decrypted (wrong master key, tampered or moved row).
    #[error("cannot decrypt secret: {0}")]
    Decrypt(String),
    /// The master key is missing or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// Password hashing failed.
    #[error("password hash: {0}")]
    Password(String),
    /// The database server cannot be reached or refused the connection at start (names where).
    #[error("cannot connect to {0}")]
    Connect(String),
    /// Any other database error.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// Running the migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// File system error (creating the database directory or the master key file).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::MissingReference(db.message().to_owned())
            }
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    /// Replaces the database's wording of a unique violation with `message` (e.g. "upstream
    /// \"x\" already exists"); other errors are converted unchanged.
    pub(crate) fn conflict_as(
        message: impl FnOnce() -> String,
    ) -> impl FnOnce(sqlx::Error) -> Self {
        move |err| match StoreError::from(err) {
            StoreError::Conflict(_) => StoreError::Conflict(message()),
            other => other,
        }
    }
}

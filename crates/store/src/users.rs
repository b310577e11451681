//! Admin-UI users with argon2id password hashes and a role.

use std::sync::{Arc, OnceLock};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use llmux_config::Secret;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::db::{enum_column, impl_from_row, on_pool, text_enum, write_tx};
use crate::ids::{new_id, now_ms, random_bytes};
use crate::{Store, StoreError};

text_enum! {
    /// What a user may do in the admin UI/API.
    Role {
        /// Everything.
        Admin = "admin",
        /// Read only.
        Viewer = "viewer",
    }
}

/// A stored user (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// Admin or viewer.
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Bumped whenever the password or the role changes: a login token carries the epoch it
    /// was issued under and stops working once it moves on (never shown by the API).
    #[serde(skip)]
    pub session_epoch: i64,
}

impl_from_row!(User, |row| {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: enum_column(row.try_get("role")?, "role")?,
        created_at: row.try_get("created_at")?,
        session_epoch: row.try_get("session_epoch")?,
    })
});

struct UserWithHash {
    user: User,
    password_hash: String,
}

impl_from_row!(UserWithHash, |row| {
    Ok(UserWithHash {
        user: sqlx::FromRow::from_row(row)?,
        password_hash: row.try_get("password_hash")?,
    })
});

macro_rules! cols {
    () => {
        "id, username, role, created_at, session_epoch"
    };
}

/// How many argon2id computations may run at once: each takes 19 MiB and tens of ms of CPU,
/// so a burst of logins must queue here rather than occupy the blocking pool (up to 512
/// threads) and starve the data plane of CPU and the process of memory. Half the cores,
/// at least one.
pub fn hashing_permits() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .clamp(1, 4)
}

fn hashing() -> Arc<Semaphore> {
    static HASHING: OnceLock<Arc<Semaphore>> = OnceLock::new();
    Arc::clone(HASHING.get_or_init(|| Arc::new(Semaphore::new(hashing_permits()))))
}

/// Runs `work` on the blocking pool once a hashing permit is free. The permit moves into the
/// blocking task, so a caller that gives up (a client hanging up) does not free it early.
async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    let permit = hashing()
        .acquire_owned()
        .await
        .map_err(|err| StoreError::Password(err.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|err| StoreError::Password(err.to_string()))
}

/// argon2id (default parameters: 19 MiB, 2 passes) PHC string of `password`. CPU-heavy: runs
/// on the blocking thread pool, at most [`hashing_permits`] at a time.
async fn hash_password(password: &Secret) -> Result<String, StoreError> {
    let password = password.clone();
    bounded(move || {
        let salt = random_bytes::<16>();
        Argon2::default()
            .hash_password_with_salt(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|err| StoreError::Password(err.to_string()))
    })
    .await?
}

/// Whether `password` matches the PHC string `hash` (blocking pool, bounded like
/// [`hash_password`]; false on a malformed hash).
async fn password_matches(hash: String, password: &Secret) -> Result<bool, StoreError> {
    let password = password.clone();
    bounded(move || {
        Argon2::default()
            .verify_password(password.expose().as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
}

/// A hash to verify against when the user does not exist, so that a login for an unknown
/// name takes as long as one with a wrong password (no username probing by timing).
async fn dummy_hash() -> Result<String, StoreError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash.clone());
    }
    let hash = hash_password(&Secret::new("llmux-dummy-password")).await?;
    Ok(DUMMY.get_or_init(|| hash).clone())
}

impl Store {
    /// Creates a user with an argon2id hash of `password`; `Conflict` when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password: &Secret,
        role: Role,
    ) -> Result<User, StoreError> {
        let id = new_id("usr");
        let password_hash = hash_password(password).await?;
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO users (",
                cols!(),
                ", password_hash) VALUES ($1, $2, $3, $4, 0, $5) RETURNING ",
                cols!()
            ))
            .bind(&id)
            .bind(username)
            .bind(role.as_str())
            .bind(now_ms())
            .bind(&password_hash)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::conflict_as(|| {
                format!("user {username:?} already exists")
            }))?
        }))
    }

    /// The user if `username` exists and `password` matches; `None` otherwise (same cost
    /// either way).
    pub async fn verify_password(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<Option<User>, StoreError> {
        let found: Option<UserWithHash> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                ", password_hash FROM users WHERE username = $1"
            ))
            .bind(username)
            .fetch_optional(pool)
            .await?
        });
        match found {
            Some(row) => Ok(password_matches(row.password_hash, password)
                .await?
                .then_some(row.user)),
            None => {
                password_matches(dummy_hash().await?, password).await?;
                Ok(None)
            }
        }
    }

    /// The user with this id.
    pub async fn get_user(&self, id: &str) -> Result<User, StoreError> {
        let found: Option<User> = on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// The user with this name.
    pub async fn get_user_by_username(&self, username: &str) -> Result<User, StoreError> {
        let found: Option<User> = on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM users WHERE username = $1"
            ))
            .bind(username)
            .fetch_optional(pool)
            .await?
        });
        found.ok_or(StoreError::NotFound)
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM users ORDER BY username"))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Replaces the password of user `id`, ending its sessions (the epoch moves on).
    pub async fn set_user_password(&self, id: &str, password: &Secret) -> Result<(), StoreError> {
        let password_hash = hash_password(password).await?;
        let updated = write_tx!(self, |tx| {
            sqlx::query(
                "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&password_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Changes the role of user `id`; a real change ends its sessions (the epoch moves on).
    pub async fn set_user_role(&self, id: &str, role: Role) -> Result<User, StoreError> {
        let updated: Option<User> = write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "UPDATE users SET session_epoch = session_epoch + \
                 (CASE WHEN role = $2 THEN 0 ELSE 1 END), role = $2 WHERE id = $1 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(role.as_str())
            .fetch_optional(&mut *tx)
            .await?
        });
        updated.ok_or(StoreError::NotFound)
    }

    /// Deletes user `id`.
    pub async fn delete_user(&self, id: &str) -> Result<(), StoreError> {
        let deleted = write_tx!(self, |tx| {
            sqlx::query("DELETE FROM users WHERE id = $1")
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

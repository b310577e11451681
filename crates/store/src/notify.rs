//! Change notifications between instances on one PostgreSQL store: [`Store::notify`] bumps the
//! change counter and sends a `NOTIFY` in one transaction; [`ChangeListener`] (a reconnecting
//! `LISTEN`) hears the others'.
//!
//! The channel is named from the connection's `current_schema()` (`llmux_changes_<schema>`), so
//! two deployments on two schemas of one database never hear each other. The counter
//! (`change_counter.seq`, one row) is the version of the shared state: it grows by one with
//! every notification, in the same transaction, so an instance that reads a `seq` it has not
//! heard of knows it missed a notification and re-reads everything ([`Store::change_seq`]).
//! SQLite has no other instances to tell: `notify` does nothing there.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use crate::db::{on_pool, text_enum, Backend};
use crate::{Store, StoreError};

text_enum! {
    /// What a change touched, so that a listener re-reads only that.
    ChangeKind {
        /// Routing config: upstreams, provider keys, models, aliases, strategy, prices.
        Config = "config",
        /// A virtual key (`id`: the key's id; none: every key).
        Key = "key",
        /// An app's credits or budgets (`id`: the app's id; none: every app).
        App = "app",
        /// An admin user.
        User = "user",
        /// Anything: re-read everything.
        All = "all",
    }
}

/// One published change: the payload of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The publishing process (an instance ignores its own changes).
    pub from: String,
    /// The change counter after this change.
    pub seq: i64,
    /// What changed.
    pub kind: ChangeKind,
    /// Which entity, when one (a key's or an app's id).
    #[serde(default)]
    pub id: Option<String>,
}

/// What a [`ChangeListener`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A change published by some instance (possibly this one).
    Change(Change),
    /// The listener (re)connected: notifications sent before may have been lost, so the caller
    /// should re-read everything.
    Connected,
    /// A notification on the channel that is not a change (the text says why).
    Unreadable(String),
}

/// The channel's name as SQL: `llmux_changes_<schema>`, or `llmux_changes_<md5 of schema>` when
/// that would pass PostgreSQL's 63-byte limit for names.
macro_rules! channel_sql {
    () => {
        "CASE WHEN octet_length(current_schema()) <= 49 \
         THEN 'llmux_changes_' || current_schema() \
         ELSE 'llmux_changes_' || md5(current_schema()) END"
    };
}

/// How long the listener waits to connect and `LISTEN` before it reports an error.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Publishes `kind` (about entity `id`) to the other instances: bumps the change counter and
    /// sends the notification in one transaction, so that a counter past the last notification
    /// heard always means a lost one. Returns the new counter; `None` on SQLite (nothing to tell).
    pub async fn notify(
        &self,
        from: &str,
        kind: ChangeKind,
        id: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let mut tx = pool.begin().await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq",
        )
        .fetch_one(&mut *tx)
        .await?;
        let payload = serde_json::to_string(&Change {
            from: from.to_owned(),
            seq,
            kind,
            id: id.map(str::to_owned),
        })
        .map_err(|err| StoreError::Invalid(err.to_string()))?;
        sqlx::query(concat!("SELECT pg_notify(", channel_sql!(), ", $1)"))
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(seq))
    }

    /// The change counter: how many changes were published on this store (see [`Store::notify`]).
    pub async fn change_seq(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT seq FROM change_counter WHERE id = 1")
                .fetch_one(pool)
                .await?
        }))
    }

    /// The name of this store's change channel (PostgreSQL only).
    pub async fn change_channel(&self) -> Result<String, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Invalid(
                "change notifications need a PostgreSQL store (SQLite has no other instances)"
                    .into(),
            ));
        };
        Ok(sqlx::query_scalar(concat!("SELECT ", channel_sql!()))
            .fetch_one(pool)
            .await?)
    }

    /// A listener for the changes published on this store, on a connection of its own (not
    /// taken from the store's pool). It connects at its first [`ChangeListener::next`].
    pub async fn listen_changes(&self) -> Result<ChangeListener, StoreError> {
        let channel = self.change_channel().await?;
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Invalid("not a PostgreSQL store".into()));
        };
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(LISTEN_CONNECT_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        Ok(ChangeListener {
            pool: own,
            channel,
            listener: None,
        })
    }
}

/// A `LISTEN` on the store's change channel that reconnects: after any reconnection it says
/// [`Heard::Connected`] first, since notifications sent meanwhile are lost.
pub struct ChangeListener {
    pool: PgPool,
    channel: String,
    listener: Option<PgListener>,
}

impl ChangeListener {
    /// The next thing heard: [`Heard::Connected`] once the `LISTEN` is in place (at the first
    /// call, and after a lost connection), then the notifications. An error (the server cannot
    /// be reached, the connection broke) drops the connection: call again, after a pause, to
    /// reconnect. A call cancelled mid-way may lose the notification it was reading: after
    /// cancelling one, call [`ChangeListener::reset`] (the next call then says `Connected`).
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        let Some(listener) = self.listener.as_mut() else {
            let connect = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.eager_reconnect(false);
                listener.listen(&self.channel).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let listener = tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    StoreError::Connect(format!(
                        "PostgreSQL for LISTEN {}: no answer within {} s",
                        self.channel,
                        LISTEN_CONNECT_TIMEOUT.as_secs()
                    ))
                })??;
            self.listener = Some(listener);
            return Ok(Heard::Connected);
        };
        match listener.try_recv().await {
            Ok(Some(notification)) => Ok(
                match serde_json::from_str::<Change>(notification.payload()) {
                    Ok(change) => Heard::Change(change),
                    Err(err) => Heard::Unreadable(format!(
                        "notification {:?} on {}: {err}",
                        notification.payload(),
                        self.channel
                    )),
                },
            ),
            Ok(None) => {
                self.listener = None;
                Err(StoreError::Connect(format!(
                    "PostgreSQL for LISTEN {}: the connection was lost",
                    self.channel
                )))
            }
            Err(err) => {
                self.listener = None;
                Err(err.into())
            }
        }
    }

    /// Drops the connection: the next [`ChangeListener::next`] connects afresh (and says
    /// [`Heard::Connected`]). For a connection that may be dead without the socket knowing.
    pub fn reset(&mut self) {
        self.listener = None;
    }

    /// The channel listened to.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

//! The audit trail: who changed what, with before/after snapshots (secrets masked by caller).

use serde::{Deserialize, Serialize};

use crate::db::{impl_from_row, json_column_opt, on_pool, to_json_opt, write_tx};
use crate::ids::now_ms;
use crate::{Store, StoreError};

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Increasing id.
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Who: a username, `token`, `config-file`, ...
    pub actor: String,
    /// What, e.g. `upstream.update`.
    pub action: String,
    /// Kind of the changed object, e.g. `upstream`.
    pub target_type: String,
    /// Id of the changed object.
    pub target_id: Option<String>,
    /// The object before the change (secrets masked).
    pub before: Option<serde_json::Value>,
    /// The object after the change (secrets masked).
    pub after: Option<serde_json::Value>,
}

/// An audit event to record (stamped with the current time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Kind of the changed object.
    pub target_type: String,
    /// Id of the changed object.
    pub target_id: Option<String>,
    /// Before (secrets masked by the caller).
    pub before: Option<serde_json::Value>,
    /// After (secrets masked by the caller).
    pub after: Option<serde_json::Value>,
}

impl_from_row!(AuditEvent, |row| {
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target_type: row.try_get("target_type")?,
        target_id: row.try_get("target_id")?,
        before: json_column_opt(row.try_get("before")?, "before")?,
        after: json_column_opt(row.try_get("after")?, "after")?,
    })
});

macro_rules! cols {
    () => {
        "id, at, actor, action, target_type, target_id, before, after"
    };
}

impl Store {
    /// Appends an audit event.
    pub async fn record_audit_event(
        &self,
        event: &NewAuditEvent,
    ) -> Result<AuditEvent, StoreError> {
        let before = to_json_opt(event.before.as_ref())?;
        let after = to_json_opt(event.after.as_ref())?;
        Ok(write_tx!(self, |tx| {
            sqlx::query_as(concat!(
                "INSERT INTO audit_events (at, actor, action, target_type, target_id, before, after) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                cols!()
            ))
            .bind(now_ms())
            .bind(&event.actor)
            .bind(&event.action)
            .bind(&event.target_type)
            .bind(&event.target_id)
            .bind(&before)
            .bind(&after)
            .fetch_one(&mut *tx)
            .await?
        }))
    }

    /// Up to `limit` events, newest first; pass the smallest id seen as `before_id` for the
    /// next page.
    pub async fn list_audit_events(
        &self,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM audit_events WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
            ))
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}

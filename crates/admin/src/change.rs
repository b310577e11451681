//! What every admin-API write does around its store change: apply it to the running config
//! under the change lock (recording a revision), and record it in the audit log.

use std::future::Future;

use axum::http::StatusCode;
use llmux_store::Source;
use serde_json::Value;

use crate::error::ApiResult;
use crate::session::Caller;
use crate::ControlPlane;

/// Runs `change` (a store write to API-managed routing) under the change lock, then applies the
/// running config and records a revision noted `note(&result)`.
pub(crate) async fn apply<T>(
    cp: &ControlPlane,
    caller: &Caller,
    change: impl Future<Output = ApiResult<T>>,
    note: impl FnOnce(&T) -> String,
) -> ApiResult<T> {
    let fs = cp.lock().await;
    let out = change.await?;
    cp.apply_locked(&fs, &caller.actor, Source::Api, Some(&note(&out)))
        .await?;
    Ok(out)
}

/// Records `action` on `target` (type, id) with its views before and after in the audit log,
/// and returns `after`, which the handler answers.
pub(crate) async fn audited(
    cp: &ControlPlane,
    caller: &Caller,
    action: &str,
    (target_type, target_id): (&str, &str),
    before: Option<Value>,
    after: Value,
) -> Value {
    cp.audit(
        &caller.actor,
        action,
        target_type,
        Some(target_id),
        before,
        Some(after.clone()),
    )
    .await;
    after
}

/// [`audited`] for a deletion: nothing after, answered with 204.
pub(crate) async fn audited_delete(
    cp: &ControlPlane,
    caller: &Caller,
    action: &str,
    (target_type, target_id): (&str, &str),
    before: Value,
) -> StatusCode {
    cp.audit(
        &caller.actor,
        action,
        target_type,
        Some(target_id),
        Some(before),
        None,
    )
    .await;
    StatusCode::NO_CONTENT
}

//! The entities the admin API manages in the store: `/models` and `/aliases` ([`models`]),
//! `/apps` ([`apps`]), `/keys` (virtual keys, [`keys`]) and `/users` ([`users`]).

mod apps;
mod catalog;
mod keys;
mod models;
mod users;

pub use apps::{add_credits, create_app, delete_app, get_app, list_apps, patch_app};
pub use catalog::{batch_keys, batch_models, collisions};
pub use keys::{create_key, delete_key, get_key, list_keys, patch_key, revoke_key};
pub use models::{
    create_alias, create_model, delete_alias, delete_model, list_aliases, list_models, patch_alias,
    patch_model,
};
pub use users::{create_user, delete_user, list_users, patch_user};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// Maps the store's "not found" to a 404 naming the entity (`no key "…"`).
fn not_found(what: &str, id: &str) -> impl FnOnce(llmux_store::StoreError) -> ApiError {
    let (what, id) = (what.to_owned(), id.to_owned());
    move |e| match e {
        llmux_store::StoreError::NotFound => ApiError::NotFound(format!("no {what} {id:?}")),
        other => other.into(),
    }
}

fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::field(field, "must be 1 to 200 characters"));
    }
    // PostgreSQL cannot store a NUL byte (a 500 there), and a model name with a control
    // character is refused on the data plane anyway.
    if name.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Names the admin API stores (apps, keys, aliases and their targets, models) carry no
    /// control characters: PostgreSQL refuses a NUL byte with a 500.
    #[test]
    fn names_with_control_characters_are_refused() {
        assert!(check_name("name", "gpt-4o").is_ok());
        assert!(check_name("name", "a\u{0}b").is_err());
        assert!(check_name("name", "a\nb").is_err());
        assert!(
            models::check_targets(&["llama3".into(), "ll\u{0}ama3".into()])
                .unwrap_err()
                .to_string()
                .starts_with("targets[1]: ")
        );
    }
}

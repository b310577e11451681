//! llmux control plane: the admin REST API (`/admin/v1`) over the store, the web console, and
//! the live config (file + API) with revisions, rollback and hot reload.
//!
//! - [`ControlPlane`] composes the file's config with API-managed state and drives
//!   `Gateway::apply`; every change is a stored revision ([`plane`]).
//! - [`router`] is the admin API; [`openapi`] its OpenAPI document, built from the same route
//!   table ([`routes`]).
//! - The data-plane services it wires into the gateway (key cache, ledger, call-log writer,
//!   retention) live in `llmux_hub`.
//! - [`cluster_api`] answers `GET /admin/v1/cluster` from the view the binary sets.
//! - [`watch::spawn`] polls the config file, listens for SIGHUP, and (on PostgreSQL) starts
//!   [`sync::spawn`], which applies the changes other instances on the same store publish.

mod accounting_api;
mod change;
pub mod cluster_api;
mod drain;
mod entities;
pub mod error;
pub mod jwt;
mod login;
pub mod logring;
mod ops;
pub mod plane;
mod pricing;
mod routes;
pub mod session;
pub mod ssrf;
pub mod sync;
pub mod time;
mod ui;
mod upstreams;
pub mod watch;

pub use plane::{initial_config, record_revision_offline, ControlPlane, Env, ReloadStatus};
pub use routes::openapi;

use std::sync::Arc;

use error::ApiError;

/// The admin router for `cp`, to be nested at `/admin/v1` by `Gateway::serve`.
pub fn router(cp: &Arc<ControlPlane>) -> axum::Router {
    routes::router(cp)
}

/// The web console's routes (`/ui/...`, absolute), to be merged beside the gateway's own.
pub fn console_router<S: Clone + Send + Sync + 'static>(cp: &Arc<ControlPlane>) -> axum::Router<S> {
    ui::router(cp)
}

/// Parses a JSON request body; a 400 whose message names the field when it does not fit.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "missing JSON body (content-type: application/json)".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde says e.g. "missing field `name` at line 1 column 2": the field is named.
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ApiError::BadRequest(format!("invalid JSON body: {message}"))
    })
}

//! llmux persistence: one `Store` over SQLite or PostgreSQL with migrations and repositories.
//!
//! - [`Store::connect`] / [`Store::migrate`] open the database and apply the embedded,
//!   versioned migrations (`migrations/sqlite`, `migrations/postgres`).
//! - Repository functions are methods of [`Store`], one module per entity.
//! - Provider keys are encrypted at rest with [`MasterKeys`] (XChaCha20-Poly1305, the row's
//!   identity bound as associated data); virtual keys and passwords are stored as hashes only.

mod aliases;
mod apps;
mod audit;
mod call_log;
mod config_revisions;
mod crypto;
mod db;
mod dump;
mod error;
mod ids;
mod models;
mod notify;
mod provider_keys;
mod sealing;
mod settings;
mod snapshot;
mod upstreams;
mod usage;
mod users;
mod virtual_keys;

pub use aliases::Alias;
pub use apps::{App, AppPatch, NewApp};
pub use audit::{AuditEvent, NewAuditEvent};
pub use call_log::{new_call_id, Attempt, CallFilter, CallRecord, StoredCall};
pub use config_revisions::{ConfigRevision, NewConfigRevision};
pub use crypto::{sealed_key_id, MasterKey, MasterKeys, MASTER_KEY_ENV};
pub use db::{data_dir, redact_url, BackendKind, Store, UnknownWord};
pub use dump::{schema_version, RowWrite, TableDump};
pub use error::StoreError;
pub use ids::now_ms;
pub use models::{Model, ModelOrigin, NewModel};
pub use notify::{Change, ChangeKind, ChangeListener, Heard};
pub use provider_keys::{open_provider_key, seal_provider_key, KeyState, ProviderKey};
pub use sealing::{open_archive, seal_archive, KdfParams, PassphraseKey};
pub use settings::{Drain, RUNTIME_PREFIX};
pub use snapshot::{RoutingSnapshot, SealedProviderKey};
pub use upstreams::{NewUpstream, Source, Upstream};
pub use usage::{UsageGroup, UsageQuery, UsageRow};
pub use users::{hashing_permits, Role, User};
pub use virtual_keys::{
    KeyLimits, KeyStatus, NewVirtualKey, VerifiedKey, VirtualKey, VirtualKeyUpdate,
    VIRTUAL_KEY_PREFIX,
};

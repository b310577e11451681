//! Store-backed services the data plane calls on every request, kept apart from the admin API
//! that configures them.
//!
//! - [`keycache::KeyCache`] authenticates virtual keys (the gateway's `Authenticator`).
//! - [`ledger::Ledger`] admits priced calls against credits and budgets (the `Accountant`) and
//!   hands every call's record to the call-log writer.
//! - [`calllog`] writes those records to the store in batches, off the request path.
//! - [`sharedbook::SharedBook`] lets the ledgers of a cluster's instances see each other's
//!   reservations and spending.
//! - [`retention::run`] deletes call-log rows older than `[logs] retention_days`.

pub mod calllog;
pub mod keycache;
pub mod ledger;
pub mod retention;
pub mod sharedbook;

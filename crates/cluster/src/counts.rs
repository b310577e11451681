//! Cluster-wide in-flight counts per upstream (for `least_active`) and per-key concurrency, held under each instance's lease.

use crate::Ctx;

/// Starts this part on `ctx.tasks`.
pub(crate) fn start(_ctx: &Ctx) {}

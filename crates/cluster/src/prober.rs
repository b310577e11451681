//! One prober per cluster: a lease elects the instance that runs active health checks and model discovery; the others take its results.

use crate::Ctx;

/// Starts this part on `ctx.tasks`.
pub(crate) fn start(_ctx: &Ctx) {}

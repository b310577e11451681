//! Passive signals shared: a provider key disabled or cooled, a breaker opened, announced to every instance.

use crate::Ctx;

/// Starts this part on `ctx.tasks`.
pub(crate) fn start(_ctx: &Ctx) {}

//! Credit reservations and spending shared by every instance, so a cluster cannot overspend an app's balance.

use crate::Ctx;

/// Starts this part on `ctx.tasks`.
pub(crate) fn start(_ctx: &Ctx) {}

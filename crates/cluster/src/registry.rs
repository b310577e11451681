//! The instance registry: each instance's heartbeat record (id, address, version, started, last heartbeat, in-flight, calls/s, prober) and `GET /admin/v1/cluster`.

use crate::Ctx;

/// Starts this part on `ctx.tasks`.
pub(crate) fn start(_ctx: &Ctx) {}

//! Cluster-wide counts as the gateway sees them.
//!
//! The other instances' in-flight calls per upstream need no hook: the cluster writes them on
//! each [`crate::upstream::Upstream`] (`set_remote_active_requests`) and `least_active` adds
//! them to the local count. Key concurrency needs an answer per call, so it is a hook.

use crate::limits::BoxFuture;

/// What the cluster said about one concurrent-call slot of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedSlot {
    /// Taken cluster-wide: release it with [`SharedCounts::release`] when the call ends.
    Granted,
    /// The key's limit is reached across the cluster: this many slots are held.
    Refused(u32),
    /// The shared state did not answer in time: count locally (or refuse, per
    /// `limits.fail_open`); nothing to release.
    Unavailable,
}

/// Concurrency shared across instances.
pub trait SharedCounts: Send + Sync {
    /// Takes one of the `limit` concurrent slots of virtual key `key` across the cluster.
    fn acquire<'a>(&'a self, key: &'a str, limit: u32) -> BoxFuture<'a, SharedSlot>;
    /// Gives back a slot [`SharedCounts::acquire`] granted. Must not block: called from a drop.
    fn release(&self, key: &str);
}

//! Hooks through which other instances of a cluster share what this gateway learns and decides
//! (`llmux-cluster` implements them over Redis). Each is unset on a single instance, and the
//! gateway then behaves exactly as before: every hook is asked with a cheap `get()` on a
//! `OnceLock`, never on the hot path's critical section.

pub mod counts;
pub mod probe;
pub mod signals;

use std::sync::{Arc, OnceLock};

/// The cluster's hooks, set once at start-up by the binary when cluster mode is on.
#[derive(Default)]
pub struct Peers {
    /// Who probes: this instance, or another whose results this one takes.
    pub probe: OnceLock<Arc<dyn probe::ProbeCoordinator>>,
    /// Passive signals (key disabled or cooled, breaker opened) to and from other instances.
    pub signals: OnceLock<Arc<dyn signals::SignalBus>>,
    /// In-flight calls of the other instances, for `least_active`, and shared key concurrency.
    pub counts: OnceLock<Arc<dyn counts::SharedCounts>>,
}

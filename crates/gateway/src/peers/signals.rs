//! Passive signals as the gateway sees them: what live calls (and the prober) learn about a
//! provider key or an upstream's breaker, announced to the other instances of a cluster.
//!
//! Announcing never blocks a call: the bus queues the signal and sends it from its own task.
//! A signal applied because another instance announced it is applied directly (not through
//! [`announce`]), so it is never announced again: no echo loops.

use crate::keys::KeyPick;
use crate::upstream::Upstream;
use crate::Gateway;
use std::time::Duration;

/// What one instance learned that every other instance should act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// The key was refused (401/403) and is out of rotation until re-checked.
    KeyDisabled,
    /// The key was throttled (429) and rests for this long.
    KeyCooled(Duration),
    /// A disabled key passed its re-check and is back in rotation.
    KeyEnabled,
    /// The upstream's breaker opened for this long.
    BreakerOpened(Duration),
}

/// Announces what live calls learned about keys and breakers to the other instances.
pub trait SignalBus: Send + Sync {
    /// Queues `kind` about `up` (and `key`, for key signals) for the other instances. The bus
    /// identifies the key by a hash of its secret, never the secret. Must not block.
    fn announce(&self, up: &Upstream, key: Option<KeyPick>, kind: SignalKind, reason: &str);
}

/// Announces `kind` through the gateway's signal bus when cluster mode set one.
pub fn announce(gw: &Gateway, up: &Upstream, key: Option<KeyPick>, kind: SignalKind, reason: &str) {
    if let Some(bus) = gw.peers.signals.get() {
        bus.announce(up, key, kind, reason);
    }
}

/// Announces through `peers` when given (the health prober's variant of [`announce`]).
pub fn announce_to(
    peers: Option<&super::Peers>,
    up: &Upstream,
    key: Option<KeyPick>,
    kind: SignalKind,
    reason: &str,
) {
    if let Some(bus) = peers.and_then(|p| p.signals.get()) {
        bus.announce(up, key, kind, reason);
    }
}

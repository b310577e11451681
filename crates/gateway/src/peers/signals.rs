//! Passive signals as the gateway sees them.

/// Announces what live calls learned about keys and breakers to the other instances.
pub trait SignalBus: Send + Sync {}

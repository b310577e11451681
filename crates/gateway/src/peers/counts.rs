//! Cluster-wide counts as the gateway sees them.

/// The other instances' in-flight calls, and concurrency shared across instances.
pub trait SharedCounts: Send + Sync {}

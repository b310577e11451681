//! The prober lease as the gateway sees it.

/// Decides whether this instance runs the active health checks now.
pub trait ProbeCoordinator: Send + Sync {
    /// Whether this instance holds the cluster's prober lease (shown in the registry).
    fn is_prober(&self) -> bool;
}

//! The ledger's view of the other instances of a cluster: what they hold and have spent for an
//! app, so that together they cannot spend past its balance (implemented by `llmux-cluster`
//! over Redis; unset on a single instance).
//!
//! Each instance publishes its *outstanding* per app — reserved by calls still running plus
//! settled but not yet written to the store — and a flush moves its cost from outstanding to a
//! cluster-wide running total of what was written (`flushed`). A ledger reads that total (its
//! [`Mark`]) *before* it reads the store, so the store's figures include at least every cost
//! counted in the mark; what was spent since is `flushed_now - mark` plus every live
//! instance's outstanding. A cost is at worst counted twice (conservative), never missed.

use std::future::Future;
use std::pin::Pin;

use llmux_gateway::accounting::Refusal;

pub type BookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The cluster's running total of an app's flushed costs when the ledger read the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// In nano-USD.
    pub flushed: i64,
    /// Which life of the shared record the total belongs to (a Redis restart starts a new one).
    pub epoch: String,
}

/// One admission as this instance sees it; amounts in USD.
#[derive(Clone, Debug)]
pub struct Admission {
    pub app: String,
    pub mark: Mark,
    /// The store's balance at the mark; `None`: not metered.
    pub credits: Option<f64>,
    /// `(cap, spent in the store at the mark)` of the daily and monthly budgets.
    pub daily: Option<(f64, f64)>,
    pub monthly: Option<(f64, f64)>,
    /// This instance's outstanding before this call, and with its reservation.
    pub outstanding: f64,
    pub after: f64,
    /// Orders this instance's writes of its outstanding (a later one never loses to an older).
    pub seq: u64,
}

/// The cluster's answer to an [`Admission`].
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Admitted; the reservation is recorded cluster-wide.
    Admit,
    Refuse(Refusal),
    /// The mark belongs to an earlier life of the shared record: read the figures again.
    Stale,
}

/// Credit reservations and spending shared by the instances of a cluster.
pub trait SharedBook: Send + Sync {
    /// The app's [`Mark`] now; `None` when the shared state does not answer (in bounded time).
    fn mark<'a>(&'a self, app: &'a str) -> BookFuture<'a, Option<Mark>>;
    /// Admits against the whole cluster's spending; `None` when the shared state does not
    /// answer (in bounded time): the ledger then decides on its own figures.
    fn admit(&self, admission: Admission) -> BookFuture<'_, Option<Verdict>>;
    /// This instance's outstanding for `app` is now `outstanding` (USD). Must not block.
    fn publish(&self, app: &str, outstanding: f64, seq: u64);
    /// `cost` (USD) of `app` was written to the store; `left` is this instance's outstanding
    /// after it, with its sequence number (`None`: this instance holds nothing for `app`, e.g.
    /// records of an earlier run replayed). Must not block.
    fn flushed(&self, app: &str, cost: f64, left: Option<(f64, u64)>);
}

/// USD → nano-USD, the unit shared records count in (integers: exact sums across instances).
pub fn nano(usd: f64) -> i64 {
    let n = (usd * 1e9).round();
    if n.is_finite() {
        n.clamp(i64::MIN as f64, i64::MAX as f64) as i64
    } else {
        0
    }
}

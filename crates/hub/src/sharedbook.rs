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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::calllog::{Flushed, Queue};
    use crate::ledger::{FigureSource, Figures, FiguresFuture, Ledger};
    use llmux_gateway::accounting::{Accountant, CallRecord};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// What Redis would hold for one app, kept in memory.
    #[derive(Default)]
    struct Shared {
        flushed: i64,
        epoch: String,
        /// Instance → (outstanding, seq).
        out: HashMap<String, (i64, u64)>,
    }

    impl Shared {
        fn put(&mut self, id: &str, out: i64, seq: u64) {
            if self.out.get(id).is_none_or(|(_, s)| seq >= *s) {
                self.out.insert(id.to_owned(), (out, seq));
            }
        }
    }

    /// One instance's view of [`Shared`], as the Lua scripts compute it.
    struct FakeBook {
        id: String,
        shared: Arc<Mutex<Shared>>,
        up: AtomicBool,
    }

    impl SharedBook for FakeBook {
        fn mark<'a>(&'a self, _: &'a str) -> BookFuture<'a, Option<Mark>> {
            let up = self.up.load(Ordering::Relaxed);
            let mut s = self.shared.lock().unwrap();
            if s.epoch.is_empty() {
                s.epoch = format!("e-{}", self.id);
            }
            let mark = Mark {
                flushed: s.flushed,
                epoch: s.epoch.clone(),
            };
            Box::pin(async move { up.then_some(mark) })
        }

        fn admit(&self, a: Admission) -> BookFuture<'_, Option<Verdict>> {
            let up = self.up.load(Ordering::Relaxed);
            let verdict = {
                let mut s = self.shared.lock().unwrap();
                let others: i64 = s
                    .out
                    .iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(_, (o, _))| *o)
                    .sum();
                let used = (s.flushed - a.mark.flushed).max(0) + others + nano(a.outstanding);
                if s.epoch != a.mark.epoch {
                    Verdict::Stale
                } else if a.credits.is_some_and(|c| nano(c) - used <= 0) {
                    Verdict::Refuse(Refusal::OutOfCredit)
                } else if a.daily.is_some_and(|(cap, d)| nano(d) + used >= nano(cap)) {
                    Verdict::Refuse(Refusal::DailyBudget)
                } else {
                    s.put(&self.id, nano(a.after), a.seq);
                    Verdict::Admit
                }
            };
            Box::pin(async move { up.then_some(verdict) })
        }

        fn publish(&self, _: &str, outstanding: f64, seq: u64) {
            let mut s = self.shared.lock().unwrap();
            s.put(&self.id, nano(outstanding), seq);
        }

        fn flushed(&self, _: &str, cost: f64, left: Option<(f64, u64)>) {
            let mut s = self.shared.lock().unwrap();
            s.flushed += nano(cost);
            if let Some((o, seq)) = left {
                s.put(&self.id, nano(o), seq);
            }
        }
    }

    /// The store: one app's credits, lowered by what the instances flush.
    struct Store {
        credits: Mutex<f64>,
        daily_budget: Option<f64>,
        spent: Mutex<f64>,
    }

    impl FigureSource for Store {
        fn figures<'a>(&'a self, _: &'a str, _: i64, _: i64) -> FiguresFuture<'a> {
            let spent = *self.spent.lock().unwrap();
            let f = Figures {
                credits: Some(*self.credits.lock().unwrap()),
                daily_budget: self.daily_budget,
                monthly_budget: None,
                spent_day: spent,
                spent_month: spent,
            };
            Box::pin(async move { Ok(f) })
        }
    }

    struct Instance {
        ledger: Arc<Ledger>,
        book: Arc<FakeBook>,
    }

    fn cluster(n: usize, credits: f64, daily_budget: Option<f64>) -> (Vec<Instance>, Arc<Store>) {
        let store = Arc::new(Store {
            credits: Mutex::new(credits),
            daily_budget,
            spent: Mutex::new(0.0),
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        let nodes = (0..n)
            .map(|i| {
                let (queue, _rx) = Queue::new();
                let ledger =
                    Ledger::with_source(Arc::clone(&store) as Arc<dyn FigureSource>, queue);
                let book = Arc::new(FakeBook {
                    id: format!("i{i}"),
                    shared: Arc::clone(&shared),
                    up: AtomicBool::new(true),
                });
                ledger.set_shared(Arc::clone(&book) as Arc<dyn SharedBook>);
                Instance { ledger, book }
            })
            .collect();
        (nodes, store)
    }

    async fn admitted(i: &Instance, n: usize, reserve: f64) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            if i.ledger.admit("app", reserve, true).await.is_ok() {
                ok += 1;
            }
        }
        ok
    }

    /// Settles `n` calls of `cost` each (reserved `reserve`) and writes them to the store.
    fn settle_and_flush(i: &Instance, store: &Store, n: usize, reserve: f64, cost: f64) {
        for _ in 0..n {
            i.ledger.record(CallRecord {
                app_id: Some("app".into()),
                reserved: reserve,
                cost,
                ..CallRecord::default()
            });
        }
        let total = cost * n as f64;
        *store.credits.lock().unwrap() -= total;
        *store.spent.lock().unwrap() += total;
        let balance = *store.credits.lock().unwrap();
        i.ledger
            .flushed(&[("app".into(), total)], &[("app".into(), balance)]);
    }

    #[tokio::test]
    async fn three_instances_share_one_balance() {
        // 1.0 USD, calls reserving 0.3: one instance alone admits 4 (it admits while any
        // credit is left), and so do three together — not 12.
        let (nodes, _) = cluster(3, 1.0, None);
        let mut total = 0;
        for node in &nodes {
            total += admitted(node, 4, 0.3).await;
        }
        assert_eq!(total, 4);
        let (alone, _) = cluster(1, 1.0, None);
        assert_eq!(admitted(&alone[0], 10, 0.3).await, 4);
    }

    #[tokio::test]
    async fn flushed_spending_counts_once_and_refunds_free_room() {
        let (nodes, store) = cluster(2, 1.0, None);
        let (a, b) = (&nodes[0], &nodes[1]);
        assert_eq!(admitted(a, 2, 0.3).await, 2);
        // The calls cost less than reserved: settled and written, 0.2 of 1.0 are spent.
        settle_and_flush(a, &store, 2, 0.3, 0.1);
        // B loaded nothing yet: it reads the mark, then the store (0.8 left): 0.8 / 0.3 → 3.
        assert_eq!(admitted(b, 5, 0.3).await, 3);
        // A's view: the flushed 0.2 is in `flushed`, not also in A's outstanding, and B holds
        // 0.9: nothing left.
        assert_eq!(admitted(a, 1, 0.3).await, 0);
        // B's calls end cheaper than reserved: room again for A.
        settle_and_flush(b, &store, 3, 0.3, 0.1);
        // Spent 0.5 of 1.0: A admits while headroom is above zero (0.5 → 0.2 → -0.1).
        assert_eq!(admitted(a, 5, 0.3).await, 2);
    }

    #[tokio::test]
    async fn daily_budgets_are_shared_too() {
        let (nodes, _) = cluster(2, 100.0, Some(1.0));
        let total = admitted(&nodes[0], 2, 0.3).await + admitted(&nodes[1], 4, 0.3).await;
        assert_eq!(total, 4);
    }

    #[tokio::test]
    async fn unreachable_shared_state_falls_back_to_local_figures() {
        let (nodes, _) = cluster(2, 1.0, None);
        assert_eq!(admitted(&nodes[0], 4, 0.3).await, 4);
        nodes[1].book.up.store(false, Ordering::Relaxed);
        // Without the shared state, B decides on its own figures (as a single instance).
        assert_eq!(admitted(&nodes[1], 10, 0.3).await, 4);
    }

    #[tokio::test]
    async fn a_new_epoch_makes_the_ledger_read_the_store_again() {
        let (nodes, store) = cluster(1, 1.0, None);
        let a = &nodes[0];
        assert_eq!(admitted(a, 1, 0.3).await, 1);
        // Redis restarted: a new epoch, `flushed` back to zero.
        {
            let mut s = a.book.shared.lock().unwrap();
            *s = Shared {
                epoch: "after-restart".into(),
                ..Shared::default()
            };
        }
        *store.credits.lock().unwrap() = 0.25;
        // The stale mark is admitted on local figures once, then the figures are re-read.
        assert_eq!(admitted(a, 1, 0.3).await, 1);
        assert_eq!(admitted(a, 1, 0.3).await, 0);
    }

    #[test]
    fn usd_to_nano() {
        assert_eq!(nano(0.000_000_001), 1);
        assert_eq!(nano(1.5), 1_500_000_000);
        assert_eq!(nano(f64::NAN), 0);
    }
}

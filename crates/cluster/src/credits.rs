//! Credit reservations and spending shared by every instance, so a cluster cannot overspend an app's balance.
//!
//! Per app one hash `{ns}:credit:{app}`: `flushed` (nano-USD written to the store by any
//! instance, a running total), `epoch` (which life of the hash: a Redis restart starts a new
//! one, and ledgers whose mark is from an older one re-read the store), and per instance
//! `o:{id}` (its outstanding: reserved + settled-but-unwritten, plus costs whose flush Redis has
//! not confirmed yet) with `s:{id}` (the sequence number of that value: an older write never
//! replaces a newer one). See `llmux_hub::sharedbook` for why the sums are conservative.
//!
//! Admission is one script (one round trip, only for metered apps on priced models); publishes
//! and flushes go through a worker, coalesced per app, retried until Redis takes them, and
//! re-asserted every heartbeat so a Redis restart loses no instance's outstanding for long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmux_gateway::accounting::Refusal;
use llmux_hub::sharedbook::{nano, Admission, BookFuture, Mark, SharedBook, Verdict};
use redis::Script;
use tokio::sync::Notify;

use crate::{Cluster, Ctx};

/// A shared admission or mark waits this long for Redis before the ledger decides alone.
const TIMEOUT: Duration = Duration::from_millis(400);
/// A failed write is retried after this long.
const RETRY: Duration = Duration::from_millis(100);
/// An app's hash outlives its last write by this long.
const TTL_MS: u64 = 86_400_000;

/// `ARGV[1]`: a fresh epoch, kept only if the hash has none. Returns `{flushed, epoch}`.
const MARK: &str = r"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {tonumber(redis.call('HGET', KEYS[1], 'flushed') or '0'), redis.call('HGET', KEYS[1], 'epoch')}
";

/// Admission (amounts in nano-USD). ARGV: 1 instance id, 2 lease-key prefix, 3 epoch of the
/// mark, 4 flushed at the mark, 5 credits at the mark or '', 6 daily cap or '', 7 spent today at
/// the mark, 8 monthly cap or '', 9 spent this month at the mark, 10 this instance's
/// outstanding before the call, 11 with it, 12 its sequence number, 13 ttl ms.
/// Returns `{code, used}`: 0 admitted, 1 out of credit, 2 daily budget, 3 stale mark, 4 monthly.
const ADMIT: &str = r"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[3] then
  return {3, 0}
end
local flushed = tonumber(redis.call('HGET', KEYS[1], 'flushed') or '0')
local used = math.max(0, flushed - tonumber(ARGV[4])) + tonumber(ARGV[10])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'o:' then
    local id = string.sub(f, 3)
    if id ~= ARGV[1] then
      if redis.call('EXISTS', ARGV[2] .. id) == 1 then
        used = used + tonumber(all[i + 1])
      else
        redis.call('HDEL', KEYS[1], f, 's:' .. id)
      end
    end
  end
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) - used <= 0 then
  return {1, used}
end
if ARGV[6] ~= '' and tonumber(ARGV[7]) + used >= tonumber(ARGV[6]) then
  return {2, used}
end
if ARGV[8] ~= '' and tonumber(ARGV[9]) + used >= tonumber(ARGV[8]) then
  return {4, used}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 's:' .. ARGV[1]) or '-1')
if tonumber(ARGV[12]) >= seq then
  redis.call('HSET', KEYS[1], 'o:' .. ARGV[1], ARGV[11], 's:' .. ARGV[1], ARGV[12])
end
redis.call('PEXPIRE', KEYS[1], ARGV[13])
return {0, used}
";

/// Moves `ARGV[2]` nano-USD to `flushed` and sets instance `ARGV[1]`'s outstanding to
/// `ARGV[3]` ('' : unchanged) at sequence `ARGV[4]` unless a newer one is there; `ARGV[5]` ttl.
const PUT: &str = r"
if tonumber(ARGV[2]) ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'flushed', ARGV[2])
end
if ARGV[3] ~= '' then
  local seq = tonumber(redis.call('HGET', KEYS[1], 's:' .. ARGV[1]) or '-1')
  if tonumber(ARGV[4]) >= seq then
    redis.call('HSET', KEYS[1], 'o:' .. ARGV[1], ARGV[3], 's:' .. ARGV[1], ARGV[4])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// What this instance still has to tell Redis about one app.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    /// Flushed costs not yet added to `flushed` (nano-USD).
    flush: i64,
    /// The newest outstanding (nano-USD, without `flush`) and its sequence number.
    out: Option<(i64, u64)>,
}

impl Pending {
    fn merge(&mut self, other: Pending) {
        self.flush = self.flush.saturating_add(other.flush);
        if let Some((o, s)) = other.out {
            if self.out.is_none_or(|(_, mine)| s >= mine) {
                self.out = Some((o, s));
            }
        }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// The last outstanding published per app, re-asserted every heartbeat while above zero.
    last: HashMap<String, (i64, u64)>,
}

/// The ledger's [`SharedBook`] over Redis.
struct RedisBook {
    cluster: Arc<Cluster>,
    mark: Script,
    admit: Script,
    put: Script,
    state: Mutex<State>,
    wake: Notify,
}

/// Starts this part on `ctx.tasks`: the ledger admits against the whole cluster.
pub(crate) fn start(ctx: &Ctx) {
    let book = Arc::new(RedisBook {
        cluster: Arc::clone(&ctx.cluster),
        mark: Script::new(MARK),
        admit: Script::new(ADMIT),
        put: Script::new(PUT),
        state: Mutex::new(State::default()),
        wake: Notify::new(),
    });
    ctx.cp
        .ledger()
        .set_shared(Arc::clone(&book) as Arc<dyn SharedBook>);
    ctx.tasks.spawn(run(book, ctx.cancel.clone()));
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| nano(x).to_string()).unwrap_or_default()
}

impl RedisBook {
    fn key(&self, app: &str) -> String {
        self.cluster.key(&format!("credit:{app}"))
    }

    /// Records `p` for `app` and wakes the worker.
    fn queue(&self, app: &str, p: Pending) {
        if let Ok(mut st) = self.state.lock() {
            st.pending.entry(app.to_owned()).or_default().merge(p);
            if let Some(out) = p.out {
                st.last.insert(app.to_owned(), out);
            }
        }
        self.wake.notify_one();
    }

    /// Flushed costs of `app` Redis has not confirmed: still counted as this instance's.
    fn unconfirmed(&self, app: &str) -> i64 {
        self.state
            .lock()
            .ok()
            .and_then(|st| st.pending.get(app).map(|p| p.flush))
            .unwrap_or(0)
    }

    async fn read_mark(&self, app: &str) -> Option<Mark> {
        if !self.cluster.reachable() {
            return None;
        }
        let epoch = format!("{}-{:016x}", self.cluster.id, rand::random::<u64>());
        let mut conn = self.cluster.conn.clone();
        let mut call = self.mark.key(self.key(app));
        call.arg(epoch).arg(TTL_MS);
        match tokio::time::timeout(TIMEOUT, call.invoke_async::<(i64, String)>(&mut conn)).await {
            Ok(Ok((flushed, epoch))) => Some(Mark { flushed, epoch }),
            _ => None,
        }
    }

    async fn decide(&self, a: Admission) -> Option<Verdict> {
        if !self.cluster.reachable() {
            return None;
        }
        let extra = self.unconfirmed(&a.app);
        let mut conn = self.cluster.conn.clone();
        let mut call = self.admit.key(self.key(&a.app));
        call.arg(&self.cluster.id)
            .arg(self.cluster.live_key(""))
            .arg(&a.mark.epoch)
            .arg(a.mark.flushed)
            .arg(opt(a.credits))
            .arg(opt(a.daily.map(|d| d.0)))
            .arg(nano(a.daily.map_or(0.0, |d| d.1)))
            .arg(opt(a.monthly.map(|m| m.0)))
            .arg(nano(a.monthly.map_or(0.0, |m| m.1)))
            .arg(nano(a.outstanding).saturating_add(extra))
            .arg(nano(a.after).saturating_add(extra))
            .arg(a.seq)
            .arg(TTL_MS);
        let answer = tokio::time::timeout(TIMEOUT, call.invoke_async::<(i64, i64)>(&mut conn));
        let verdict = match answer.await {
            Ok(Ok((0, _))) => Verdict::Admit,
            Ok(Ok((1, _))) => Verdict::Refuse(Refusal::OutOfCredit),
            Ok(Ok((2, _))) => Verdict::Refuse(Refusal::DailyBudget),
            Ok(Ok((4, _))) => Verdict::Refuse(Refusal::MonthlyBudget),
            Ok(Ok(_)) => Verdict::Stale,
            _ => return None,
        };
        if verdict == Verdict::Admit {
            if let Ok(mut st) = self.state.lock() {
                let newer = st.last.get(&a.app).is_none_or(|(_, s)| a.seq >= *s);
                if newer {
                    st.last.insert(a.app.clone(), (nano(a.after), a.seq));
                }
            }
        }
        Some(verdict)
    }

    /// Sends what is pending; what Redis did not take stays pending. `true` when all went.
    async fn send_pending(&self) -> bool {
        let batch: Vec<(String, Pending)> = match self.state.lock() {
            Ok(mut st) => st.pending.drain().collect(),
            Err(_) => return true,
        };
        let mut all = true;
        for (app, p) in batch {
            let sent = self.cluster.reachable() && self.send(&app, p).await;
            if !sent {
                all = false;
                if let Ok(mut st) = self.state.lock() {
                    let mut back = p;
                    if let Some(newer) = st.pending.remove(&app) {
                        back.merge(newer);
                    }
                    st.pending.insert(app, back);
                }
            }
        }
        all
    }

    async fn send(&self, app: &str, p: Pending) -> bool {
        let mut conn = self.cluster.conn.clone();
        let mut call = self.put.key(self.key(app));
        let (out, seq) = match p.out {
            Some((o, s)) => (o.to_string(), s),
            None => (String::new(), 0),
        };
        call.arg(&self.cluster.id)
            .arg(p.flush)
            .arg(out)
            .arg(seq)
            .arg(TTL_MS);
        matches!(
            tokio::time::timeout(TIMEOUT, call.invoke_async::<i64>(&mut conn)).await,
            Ok(Ok(1))
        )
    }

    /// Queues the last outstanding of every app this instance holds something for (after a
    /// Redis restart the hash is gone; this puts this instance's share back).
    fn reassert(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.last.retain(|_, (o, _)| *o > 0);
            let last: Vec<(String, (i64, u64))> =
                st.last.iter().map(|(a, v)| (a.clone(), *v)).collect();
            for (app, out) in last {
                st.pending.entry(app).or_default().merge(Pending {
                    flush: 0,
                    out: Some(out),
                });
            }
        }
    }
}

impl SharedBook for RedisBook {
    fn mark<'a>(&'a self, app: &'a str) -> BookFuture<'a, Option<Mark>> {
        Box::pin(self.read_mark(app))
    }

    fn admit(&self, admission: Admission) -> BookFuture<'_, Option<Verdict>> {
        Box::pin(self.decide(admission))
    }

    fn publish(&self, app: &str, outstanding: f64, seq: u64) {
        self.queue(
            app,
            Pending {
                flush: 0,
                out: Some((nano(outstanding), seq)),
            },
        );
    }

    fn flushed(&self, app: &str, cost: f64, left: Option<(f64, u64)>) {
        self.queue(
            app,
            Pending {
                flush: nano(cost),
                out: left.map(|(o, s)| (nano(o), s)),
            },
        );
    }
}

/// Sends publishes and flushes as they come (retrying failures), and re-asserts every heartbeat.
async fn run(book: Arc<RedisBook>, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(book.cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = book.wake.notified() => {}
            _ = tick.tick() => book.reassert(),
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
        failed = !book.send_pending().await;
    }
    // What the last calls settled and flushed, before the lease goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), book.send_pending()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_keeps_the_newest_outstanding_and_sums_flushes() {
        let mut p = Pending {
            flush: 5,
            out: Some((10, 3)),
        };
        p.merge(Pending {
            flush: 2,
            out: Some((7, 2)),
        });
        assert_eq!((p.flush, p.out), (7, Some((10, 3))));
        p.merge(Pending {
            flush: 0,
            out: Some((1, 4)),
        });
        assert_eq!((p.flush, p.out), (7, Some((1, 4))));
    }
}

//! The call-log writer: records arrive from the data plane through a bounded channel (never
//! blocking a request), and one background task writes them in batches — rows, usage rollups
//! and credit charges in one transaction — retrying with backoff while the store is down.
//!
//! When the channel is full, records wait in a bounded overflow buffer
//! (`llmux_call_log_overflow_total`); only when that is full too is a record dropped, counted
//! (`llmux_call_log_dropped_total`) and logged. On shutdown the writer drains everything queued
//! before it returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::accounting::LOG_METRICS;
use store::{CallRecord, Store};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records the channel holds before the overflow buffer takes over.
pub const CHANNEL_CAPACITY: usize = 10_000;
/// Records the overflow buffer holds (about 1 KB each) before records are dropped.
pub const OVERFLOW_LIMIT: usize = 200_000;
/// A batch is written when it has this many records…
pub const BATCH_MAX: usize = 500;
/// …or this long after its first record arrived.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Retry backoff while the store fails: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// On shutdown, how long the writer keeps retrying a store that is down before giving up.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(15);

pub type WriteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(String, f64)>, String>> + Send + 'a>>;

/// Where batches go: the store in production, a fake in tests.
pub trait BatchSink: Send + Sync {
    /// Writes the whole batch or nothing; returns the new balance of every app charged.
    fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a>;
}

impl BatchSink for Store {
    fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a> {
        Box::pin(async move { self.record_calls(batch).await.map_err(|e| e.to_string()) })
    }
}

/// Told about every batch written: the cost charged per app and the new balances.
pub trait Flushed: Send + Sync {
    fn flushed(&self, charged: &[(String, f64)], balances: &[(String, f64)]);
}

/// The sending side, shared by every call.
pub struct Queue {
    tx: mpsc::Sender<CallRecord>,
    overflow: Mutex<VecDeque<CallRecord>>,
    wake: Notify,
}

impl Queue {
    /// A queue and the receiver its writer reads.
    pub fn new() -> (Arc<Queue>, mpsc::Receiver<CallRecord>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        (
            Arc::new(Queue {
                tx,
                overflow: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
            }),
            rx,
        )
    }

    /// Queues one record without blocking.
    pub fn push(&self, record: CallRecord) {
        LOG_METRICS.queue_depth.fetch_add(1, Relaxed);
        let record = match self.tx.try_send(record) {
            Ok(()) => return,
            Err(TrySendError::Full(r) | TrySendError::Closed(r)) => r,
        };
        let kept = match self.overflow.lock() {
            Ok(mut o) if o.len() < OVERFLOW_LIMIT => {
                o.push_back(record);
                true
            }
            _ => false,
        };
        if kept {
            LOG_METRICS.overflowed.fetch_add(1, Relaxed);
            self.wake.notify_one();
        } else {
            LOG_METRICS.queue_depth.fetch_sub(1, Relaxed);
            let n = LOG_METRICS.dropped.fetch_add(1, Relaxed);
            // One line per 1000 drops: a log flood would only make the overload worse.
            if n.is_multiple_of(1000) {
                tracing::error!(
                    dropped = n + 1,
                    "call log overflow buffer full: call records dropped"
                );
            }
        }
    }

    fn take_overflow(&self, batch: &mut Vec<CallRecord>) {
        if let Ok(mut o) = self.overflow.lock() {
            while batch.len() < BATCH_MAX {
                match o.pop_front() {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
        }
    }

    fn overflow_is_empty(&self) -> bool {
        self.overflow.lock().map_or(true, |o| o.is_empty())
    }
}

/// The writer task: runs until `stop` is cancelled, then drains the queue and returns.
pub async fn run(
    queue: Arc<Queue>,
    mut rx: mpsc::Receiver<CallRecord>,
    sink: Arc<dyn BatchSink>,
    flushed: Arc<dyn Flushed>,
    stop: CancellationToken,
) {
    let mut batch: Vec<CallRecord> = Vec::with_capacity(BATCH_MAX);
    let mut backoff = BACKOFF.0;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        let stopping = stop.is_cancelled();
        if batch.is_empty() {
            // The overflow first: its records are waiting already, and no wake-up may be left
            // for them (a `Notify` keeps one permit however many records were pushed).
            queue.take_overflow(&mut batch);
        }
        if batch.is_empty() && !stopping {
            // Wait for the first record of the next batch.
            tokio::select! {
                r = rx.recv() => if let Some(r) = r { batch.push(r) },
                () = queue.wake.notified() => {}
                () = stop.cancelled() => {}
            }
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => {
                    batch.push(r);
                    continue;
                }
                Err(_) if stop.is_cancelled() => break,
                Err(_) => {}
            }
            queue.take_overflow(&mut batch);
            if batch.len() >= BATCH_MAX || batch.is_empty() {
                break;
            }
            tokio::select! {
                r = rx.recv() => match r { Some(r) => batch.push(r), None => break },
                () = tokio::time::sleep_until(deadline) => break,
                () = stop.cancelled() => {}
            }
        }
        queue.take_overflow(&mut batch);
        if batch.is_empty() {
            if stop.is_cancelled() && rx.is_empty() && queue.overflow_is_empty() {
                return;
            }
            continue;
        }
        match sink.write(&batch).await {
            Ok(balances) => {
                LOG_METRICS
                    .queue_depth
                    .fetch_sub(batch.len() as u64, Relaxed);
                flushed.flushed(&charges(&batch), &balances);
                batch.clear();
                backoff = BACKOFF.0;
                give_up_at = None;
            }
            Err(e) => {
                LOG_METRICS.write_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, records = batch.len(), retry_in = ?backoff, "call log write failed; keeping the batch");
                if stop.is_cancelled() {
                    let at = *give_up_at
                        .get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_RETRY);
                    if tokio::time::Instant::now() >= at {
                        let mut lost = batch.len() + rx.len();
                        lost += queue.overflow.lock().map_or(0, |o| o.len());
                        tracing::error!(
                            records = lost,
                            "shutting down with the store unavailable: call records lost"
                        );
                        return;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Cost per app in a batch.
fn charges(batch: &[CallRecord]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for r in batch {
        let (Some(app), Some(cost)) = (&r.app_id, r.cost) else {
            continue;
        };
        match out.iter_mut().find(|(a, _)| a == app) {
            Some((_, c)) => *c += cost,
            None => out.push((app.clone(), cost)),
        }
    }
    out
}

/// A gateway record in the store's shape.
pub fn to_store(r: gateway::accounting::CallRecord) -> CallRecord {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    CallRecord {
        created_at: r.created_at,
        request_id: r.request_id,
        app_id: r.app_id,
        virtual_key_id: r.virtual_key_id,
        dialect: r.dialect,
        requested_model: r.requested_model,
        upstream: r.upstream,
        upstream_model: r.upstream_model,
        provider_key_id: r.provider_key_id,
        status: i64::from(r.status),
        error_class: r.error_class,
        attempts: i64::from(r.attempts),
        latency_ms: i(r.latency_ms),
        ttft_ms: r.ttft_ms.map(i),
        input_tokens: Some(i(r.tokens.input)),
        output_tokens: Some(i(r.tokens.output)),
        tokens_estimated: r.tokens.estimated,
        cost: Some(r.cost),
        client_ip: r.client_ip,
        request_body: r.request_body,
        response_body: r.response_body,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails its first `fail` writes, then keeps every batch.
    struct Flaky {
        fail: AtomicUsize,
        written: Mutex<Vec<CallRecord>>,
    }

    impl BatchSink for Flaky {
        fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a> {
            Box::pin(async move {
                if self
                    .fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err("store unavailable".into());
                }
                self.written.lock().unwrap().extend_from_slice(batch);
                Ok(Vec::new())
            })
        }
    }

    struct Nobody;
    impl Flushed for Nobody {
        fn flushed(&self, _: &[(String, f64)], _: &[(String, f64)]) {}
    }

    fn record(i: usize) -> CallRecord {
        to_store(gateway::accounting::CallRecord {
            request_id: format!("req-{i}"),
            requested_model: "m".into(),
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn survives_a_store_that_is_down_for_a_while_and_loses_nothing() {
        let (queue, rx) = Queue::new();
        let sink = Arc::new(Flaky {
            fail: AtomicUsize::new(6),
            written: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop.clone(),
        ));
        // More than the channel holds, while the store is down: the overflow takes the rest.
        let n = CHANNEL_CAPACITY + 2_345;
        for i in 0..n {
            queue.push(record(i));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(sink.written.lock().unwrap().len(), n);
        for i in n..n + 10 {
            queue.push(record(i));
        }
        stop.cancel();
        task.await.unwrap();
        let written = sink.written.lock().unwrap();
        assert_eq!(written.len(), n + 10);
        let mut ids: Vec<&str> = written.iter().map(|r| r.request_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n + 10, "no record written twice");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_what_is_queued() {
        let (queue, rx) = Queue::new();
        let sink = Arc::new(Flaky {
            fail: AtomicUsize::new(2),
            written: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        for i in 0..1234 {
            queue.push(record(i));
        }
        stop.cancel();
        run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop,
        )
        .await;
        assert_eq!(sink.written.lock().unwrap().len(), 1234);
    }
}

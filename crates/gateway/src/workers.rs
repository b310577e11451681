//! Connection workers: one current-thread tokio runtime per core, each on its own thread.
//!
//! A call through a gateway is two connections (the client's and the upstream's) and the tasks
//! that drive them. On a multi-thread runtime those tasks wake each other across threads:
//! every hand-off is a futex wake-up and a cache miss. Here a client connection is handed to
//! one worker when it is accepted and stays there — its socket is registered with that
//! worker's reactor, its calls run there, and the upstream connections they open belong to that
//! worker's own pool (see [`crate::upstream::Upstream::client`]) — so a call never leaves its
//! thread, like a worker process of nginx. The control plane (probes, the call-log writer, the
//! admin API's background work) stays on the main runtime.
//!
//! Only the `llmux` binary starts workers ([`start`]); without them (the library's tests, on
//! paused time) connections are served on the runtime that accepts them.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::runtime::Handle;

struct Workers {
    handles: Vec<Handle>,
    /// Connections handed out so far (round robin).
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    /// This thread's worker index, on a worker thread.
    static INDEX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Starts `n` workers (at most once per process; later calls change nothing). Each runs until
/// the process exits, so tasks a call spawned are still driven while the server drains.
pub fn start(n: usize) -> io::Result<()> {
    if WORKERS.get().is_some() || n == 0 {
        return Ok(());
    }
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(rt.handle().clone());
        std::thread::Builder::new()
            .name(format!("llmux-worker-{i}"))
            .spawn(move || {
                INDEX.with(|c| c.set(Some(i)));
                rt.block_on(std::future::pending::<()>());
            })?;
    }
    let _ = WORKERS.set(Workers {
        handles,
        next: AtomicUsize::new(0),
    });
    Ok(())
}

/// How many workers run (0 when connections are served where they are accepted).
pub fn count() -> usize {
    WORKERS.get().map_or(0, |w| w.handles.len())
}

/// The worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    INDEX.with(|c| c.get())
}

/// The worker the next accepted connection goes to, if workers run.
pub(crate) fn next() -> Option<&'static Handle> {
    let w = WORKERS.get()?;
    let i = w.next.fetch_add(1, Ordering::Relaxed) % w.handles.len();
    w.handles.get(i)
}

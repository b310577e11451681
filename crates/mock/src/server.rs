//! Listening and lifecycle: an axum server whose connections can all be cut at once, like a killed process.
//
// axum's `serve` spawns each connection as its own task, so dropping the accept loop alone
// would leave open streams running. Instead every accepted socket is wrapped in [`CutIo`],
// which fails all I/O as soon as the server's cut signal fires; hyper then drops the
// connection (and with it the handler and body stream) on its next poll. hyper polls the
// read side even while a response is pending or streaming (to notice client EOF), so a
// hung handler or a stalled stream is cut too.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::state::Shared;
use crate::{handler, Faults, MockConfig, Stats};

/// How long `stop` waits for cut connections to be torn down before giving up.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Open-connection bookkeeping so `stop` can return only once sockets are really closed.
#[derive(Default)]
struct Conns {
    open: AtomicUsize,
    closed: Notify,
}

/// A running mock node. Dropping it stops it abruptly, like [`MockServer::stop`].
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cut: watch::Sender<bool>,
    conns: Arc<Conns>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a node on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener, cfg).await
    }

    /// Starts a node on an already bound listener.
    pub async fn start_on(listener: TcpListener, cfg: MockConfig) -> io::Result<MockServer> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let (cut, cut_rx) = watch::channel(false);
        let conns = Arc::new(Conns::default());
        let listener = CutListener {
            inner: listener,
            cut: cut_rx,
            conns: conns.clone(),
        };
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "mock server stopped with an error");
            }
        });
        Ok(MockServer {
            addr,
            shared,
            cut,
            conns,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.shared.snapshot()
    }

    /// Replaces the fault settings; the `fail_rate` call numbering restarts at 0.
    pub fn set_faults(&self, f: Faults) {
        self.shared.set_faults(f);
    }

    /// Changes which keys the node accepts, refuses as revoked, or answers as rate-limited.
    pub fn set_keys(&self, rules: crate::KeyRules) {
        self.shared.set_keys(rules);
    }

    /// Queues answers for the next generation calls (an empty list clears the queue).
    pub fn script(&self, replies: Vec<crate::Scripted>) {
        self.shared.script.push(replies);
    }

    /// Changes the served (and listed) models.
    pub fn set_models(&self, models: Vec<String>) {
        self.shared.set_models(models);
    }

    /// Abrupt stop: the port stops accepting and every open connection is cut, in-flight
    /// streams included. Returns once the listener is closed and the connections are gone.
    pub async fn stop(mut self) {
        self.cut.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
            // Awaiting the aborted task guarantees the listener socket has been dropped.
            let _ = task.await;
        }
        let conns = self.conns.clone();
        let _ = tokio::time::timeout(STOP_GRACE, async move {
            loop {
                let closed = conns.closed.notified();
                tokio::pin!(closed);
                // Register before checking so a close between the check and the await is not missed.
                closed.as_mut().enable();
                if conns.open.load(Ordering::Acquire) == 0 {
                    break;
                }
                closed.await;
            }
        })
        .await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs a node on `listener` until the process ends (the `llmux mock` command).
pub async fn serve(listener: TcpListener, cfg: MockConfig) -> io::Result<()> {
    let shared = Arc::new(Shared::new(cfg));
    // Kept alive for the whole call: a dropped sender counts as "cut".
    let (_cut, cut_rx) = watch::channel(false);
    let listener = CutListener {
        inner: listener,
        cut: cut_rx,
        conns: Arc::new(Conns::default()),
    };
    axum::serve(listener, router(shared)).await
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handler::handle).with_state(shared)
}

struct CutListener {
    inner: TcpListener,
    cut: watch::Receiver<bool>,
    conns: Arc<Conns>,
}

impl Listener for CutListener {
    type Io = CutIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CutIo, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Token-sized writes must leave immediately, not wait for Nagle.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    return (CutIo::new(stream, self.cut.clone(), &self.conns), addr);
                }
                Err(e) => {
                    // Per-connection errors are transient; others (e.g. EMFILE) need a pause
                    // or the loop would spin.
                    tracing::debug!(error = %e, "accept failed");
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                    ) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

type CutSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A TCP stream whose every operation fails once the server is cut.
struct CutIo {
    inner: TcpStream,
    /// None once fired, so the finished future is never polled again.
    cut: Option<CutSignal>,
    conns: Arc<Conns>,
}

impl CutIo {
    fn new(inner: TcpStream, mut cut: watch::Receiver<bool>, conns: &Arc<Conns>) -> Self {
        conns.open.fetch_add(1, Ordering::AcqRel);
        let signal: CutSignal = Box::pin(async move {
            // An error means the sender is gone, which also means "stop".
            let _ = cut.wait_for(|c| *c).await;
        });
        Self {
            inner,
            cut: Some(signal),
            conns: conns.clone(),
        }
    }

    /// Registers interest in the cut signal and fails if it has fired.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let fired = match &mut self.cut {
            None => true,
            Some(f) => f.as_mut().poll(cx).is_ready(),
        };
        if fired {
            self.cut = None;
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock server stopped",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for CutIo {
    fn drop(&mut self) {
        if self.conns.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conns.closed.notify_waiters();
        }
    }
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

//! Accepting client connections: the connection cap, the header and idle timeouts, HTTP/1 and h2c,
//! and with `[server.tls]` HTTPS (the handshake within the header timeout; see `tls.rs`).
//!
//! `axum::serve` cannot bound how long a client takes to send its headers or how long an idle
//! connection stays, so a few thousand connections sending a byte a second could hold every
//! descriptor. Each connection's socket is wrapped in `Watched`, which fails the read (and
//! so closes the connection) when a deadline passes while no call is in progress: the header
//! deadline from connecting or from the first byte of a request, the idle deadline from the
//! end of the last call (on h2c, where clients send frames between calls, only the latter).
//! Calls in progress are counted by the service, through the response body, so a long stream
//! or a slow first token is never cut.

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// What bounds the connections of one listener (`[server]` keys).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl From<&llmux_config::ServerConfig> for ConnLimits {
    fn from(s: &llmux_config::ServerConfig) -> Self {
        ConnLimits {
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            max_connections: s.max_connections,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// connection finish its calls (idle ones close at once), and returns. Once `abandon` is
/// cancelled, connections still open are dropped with their calls (each call's record settles
/// as it drops), so the caller can bound the drain and still collect every record.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    abandon: CancellationToken,
) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut shutdown = pin!(shutdown);
    let mut refused = Throttled::default();
    let mut failed = Throttled::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    if is_per_connection(&e) {
                        continue;
                    }
                    // Out of descriptors or memory: retrying at once would spin; what is
                    // open frees as calls end and timeouts fire.
                    if let Some(skipped) = failed.due() {
                        tracing::warn!(error = %e, skipped, "cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            // Closed at once: a prompt refusal beats a slot in the kernel's backlog that may
            // outlive the client's patience.
            drop(tcp);
            if let Some(skipped) = refused.due() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    skipped,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        }
        // Small SSE chunks must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let slot = Slot::take(&open);
        let state = Arc::new(ConnState::default());
        let conn = Conn {
            builder: Arc::clone(&builder),
            service: CallService {
                app: app.clone(),
                peer,
                conn: Arc::clone(&state),
            },
            state,
            limits,
            stop: stop.clone(),
            abandon: abandon.clone(),
        };
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        hand_off(&tasks, conn, tcp, acceptor, peer, slot);
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Serves `tcp` on a connection worker (see [`crate::workers`]), or here when none runs.
fn hand_off(
    tasks: &TaskTracker,
    conn: Conn,
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    peer: SocketAddr,
    slot: Slot,
) {
    let Some(worker) = crate::workers::next() else {
        tasks.spawn(async move {
            let _slot = slot;
            conn.run(tcp, acceptor, peer).await;
        });
        return;
    };
    // The socket moves to the worker's reactor, so its wake-ups happen on that thread.
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            return tracing::debug!(%peer, error = %e, "cannot hand the connection to a worker")
        }
    };
    tasks.spawn_on(
        async move {
            let _slot = slot;
            match TcpStream::from_std(tcp) {
                Ok(tcp) => conn.run(tcp, acceptor, peer).await,
                Err(e) => tracing::debug!(%peer, error = %e, "cannot register the connection"),
            }
        },
        worker,
    );
}

/// What serving one accepted connection needs, whatever its transport.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: CallService,
    state: Arc<ConnState>,
    limits: ConnLimits,
    stop: CancellationToken,
    abandon: CancellationToken,
}

impl Conn {
    /// Serves the connection, after the TLS handshake when there is an acceptor.
    async fn run(self, tcp: TcpStream, acceptor: Option<TlsAcceptor>, peer: SocketAddr) {
        let ended = match acceptor {
            None => self.serve(tcp).await,
            Some(acceptor) => {
                // The handshake counts as the first request's headers: it gets their timeout.
                let handshake =
                    tokio::time::timeout(self.limits.header_timeout, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => self.serve(stream).await,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        return tracing::debug!(
                            %peer,
                            "TLS handshake not done within server.header_timeout"
                        )
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended");
        }
    }

    /// Serves HTTP/1 or HTTP/2 on `io` (a TCP or TLS stream) until it ends or is stopped.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self,
        io: S,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let io = TokioIo::new(Watched::new(io, self.state, self.limits));
        let served = self.builder.serve_connection(io, self.service);
        finish_on_stop(served, self.stop, self.abandon).await
    }
}

/// Serves one connection to its end; once `stop` is cancelled, lets its calls finish (an idle
/// connection closes at once) unless `abandon` is cancelled first.
async fn finish_on_stop<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    served: auto::Connection<'_, TokioIo<Watched<S>>, CallService, TokioExecutor>,
    stop: CancellationToken,
    abandon: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut served = pin!(served);
    tokio::select! {
        r = served.as_mut() => r,
        _ = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            tokio::select! {
                r = served.as_mut() => r,
                _ = abandon.cancelled() => Ok(()),
            }
        }
    }
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Logging at most once per 10 s: `due` says whether to log now, and how many were skipped.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttled {
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(at) if now.duration_since(at) < Duration::from_secs(10) => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

/// One open connection counted against `max_connections` until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(Arc::clone(open))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the service tells the socket about calls on this connection.
#[derive(Default)]
struct ConnState {
    /// Calls in progress: from the request's head until its response body ends or is dropped.
    calls: AtomicUsize,
    /// Calls finished so far, so the socket sees that one ended even if it never saw it run.
    finished: AtomicU64,
    /// The socket waiting for the last call to end, to start its idle deadline.
    reader: AtomicWaker,
}

/// Counts one call in progress while alive.
struct CallGuard(Arc<ConnState>);

impl CallGuard {
    fn new(conn: &Arc<ConnState>) -> CallGuard {
        conn.calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(conn))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        if self.0.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// The router as hyper sees it: the peer in each request's extensions (per-IP limits and the
/// call log need it) and a [`CallGuard`] carried by the response body.
#[derive(Clone)]
struct CallService {
    app: axum::Router,
    peer: SocketAddr,
    conn: Arc<ConnState>,
}

impl hyper::service::Service<http::Request<Incoming>> for CallService {
    type Response = http::Response<CallBody>;
    type Error = Infallible;
    type Future = CallFuture<<axum::Router as Service<http::Request<Body>>>::Future>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let guard = CallGuard::new(&self.conn);
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // A router is always ready: `poll_ready` would answer at once.
        CallFuture {
            inner: self.app.clone().call(req),
            guard: Some(guard),
        }
    }
}

struct CallFuture<F> {
    inner: F,
    guard: Option<CallGuard>,
}

impl<F> Future for CallFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<http::Response<CallBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let resp = ready!(Pin::new(&mut this.inner).poll(cx));
        let guard = this.guard.take();
        Poll::Ready(resp.map(|r| {
            r.map(|inner| CallBody {
                inner,
                _guard: guard,
            })
        }))
    }
}

/// A response body that keeps its call counted until it ends or is dropped.
struct CallBody {
    inner: Body,
    _guard: Option<CallGuard>,
}

impl http_body::Body for CallBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Waiting for a request's headers: since connecting, or since the first byte after idle.
    Head,
    /// A call is in progress: no deadline.
    Busy,
    /// Between calls, nothing received yet.
    Idle,
}

/// A client socket whose reads fail once the connection's deadline passes with no call in
/// progress, which makes hyper close it.
struct Watched<S> {
    tcp: S,
    conn: Arc<ConnState>,
    phase: Phase,
    /// Calls finished when the socket last looked.
    seen_finished: u64,
    deadline: Pin<Box<Sleep>>,
    limits: ConnLimits,
    /// `None` until the first bytes arrive; then whether they are the h2c preface. HTTP/2
    /// clients send frames between calls (window updates, pings), so on h2 bytes after a
    /// call do not start a header deadline: the idle deadline bounds the connection.
    h2: Option<bool>,
}

impl<S> Watched<S> {
    fn new(tcp: S, conn: Arc<ConnState>, limits: ConnLimits) -> Watched<S> {
        Watched {
            tcp,
            conn,
            phase: Phase::Head,
            seen_finished: 0,
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            limits,
            h2: None,
        }
    }

    /// Nothing to read now: the connection lives on while a call runs, else until its deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.conn.calls.load(Ordering::Acquire) > 0 {
            self.conn.reader.register(cx.waker());
            // The last call may have ended between the load and the registration.
            if self.conn.calls.load(Ordering::Acquire) > 0 {
                self.phase = Phase::Busy;
                return Poll::Pending;
            }
        }
        let finished = self.conn.finished.load(Ordering::Acquire);
        if self.phase == Phase::Busy || finished != self.seen_finished {
            self.seen_finished = finished;
            self.phase = Phase::Idle;
            let at = Instant::now() + self.limits.idle_timeout;
            self.deadline.as_mut().reset(at);
        }
        ready!(self.deadline.as_mut().poll(cx));
        let why = match self.phase {
            Phase::Head => "request headers not complete in time (server.header_timeout)",
            _ => "idle connection (server.idle_timeout)",
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if this.h2.is_none() && !fresh.is_empty() {
                    this.h2 = Some(fresh.starts_with(b"PRI "));
                }
                if this.phase == Phase::Idle && !fresh.is_empty() && this.h2 == Some(false) {
                    // The first bytes of the next request: its headers get the header timeout.
                    this.phase = Phase::Head;
                    let at = Instant::now() + this.limits.header_timeout;
                    this.deadline.as_mut().reset(at);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_deadline(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files to the hard one, so the connection cap rather than a
/// default of 1024 descriptors decides how many clients are served. Returns the limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: ConnLimits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            None,
            async move { s.cancelled().await },
            CancellationToken::new(),
        ));
        (addr, stop)
    }

    /// Reads until the server closes the connection; `None` if it is still open after `within`.
    async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn get_root(tcp: &mut TcpStream) -> String {
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Slowloris: connections that never finish their headers — silent ones and ones sending a
    /// byte at a time — are closed after the header timeout; a keep-alive connection between
    /// calls lives until the idle timeout instead.
    #[tokio::test]
    async fn unfinished_headers_are_cut_and_idle_connections_live_until_idle_timeout() {
        let (addr, stop) = start(ConnLimits {
            header_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(1500),
            max_connections: 100,
        })
        .await;
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut dribbling = TcpStream::connect(addr).await.unwrap();
        let drip = async {
            for b in b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaa" {
                if dribbling.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            closed_within(&mut dribbling, Duration::from_secs(3)).await
        };
        let (silent_end, dribble_end) =
            tokio::join!(closed_within(&mut silent, Duration::from_secs(3)), drip);
        assert_eq!(silent_end, Some(Vec::new()), "silent connection closed");
        assert!(dribble_end.is_some(), "dribbling connection closed");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");

        // A served connection is idle, not late with headers: it outlives the header timeout.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        assert!(get_root(&mut kept).await.starts_with("HTTP/1.1 200"));
        let idle_from = Instant::now();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let again = get_root(&mut kept).await;
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        assert!(
            again.contains("127.0.0.1:"),
            "the peer is in the request: {again}"
        );
        let idle_from_2 = Instant::now();
        assert!(closed_within(&mut kept, Duration::from_secs(4))
            .await
            .is_some());
        let idle = idle_from_2.elapsed();
        assert!(
            idle >= Duration::from_millis(1300)
                && idle_from.elapsed() > Duration::from_millis(2000),
            "closed after {idle:?} idle"
        );
        stop.cancel();
    }

    /// Beyond `max_connections` new connections are closed at once, while the open ones are
    /// still served; a slot frees when a connection ends.
    #[tokio::test]
    async fn the_connection_cap_refuses_beyond_max_and_serves_the_rest() {
        let (addr, stop) = start(ConnLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 3,
        })
        .await;
        let mut slow: Vec<TcpStream> = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTT").await.unwrap();
            slow.push(c);
        }
        let mut normal = TcpStream::connect(addr).await.unwrap();
        assert!(get_root(&mut normal).await.starts_with("HTTP/1.1 200"));
        let mut over = TcpStream::connect(addr).await.unwrap();
        let _ = over.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(
            closed_within(&mut over, Duration::from_secs(2)).await,
            Some(Vec::new()),
            "the fourth connection is closed unanswered"
        );
        // The three admitted ones still work.
        assert!(get_root(&mut normal).await.starts_with("HTTP/1.1 200"));
        slow[0]
            .write_all(b"P/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        slow[0].read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        // One closes: a new connection gets its slot.
        drop(slow.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = TcpStream::connect(addr).await.unwrap();
        assert!(get_root(&mut next).await.starts_with("HTTP/1.1 200"));
        stop.cancel();
    }

    /// h2c with prior knowledge still works.
    #[tokio::test]
    async fn serves_h2c() {
        let (addr, stop) = start(ConnLimits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 10,
        })
        .await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let resp = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.text().await.unwrap().starts_with("127.0.0.1:"));
        stop.cancel();
    }
}

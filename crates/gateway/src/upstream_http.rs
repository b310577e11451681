//! The HTTP client model calls are sent with: hyper-util's pooled client driven directly,
//! HTTP/1.1 with keep-alive and TCP_NODELAY, TLS by rustls with the webpki roots, names
//! resolved through the upstream's SSRF guard, redirects never followed (hyper does not follow
//! them; the send stage treats a 3xx as a failed attempt). An upstream that the environment's
//! `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (less `NO_PROXY`) sends through a proxy is reached
//! through an HTTP `CONNECT` tunnel there, as reqwest does for the probes; the target's name is
//! then resolved by the proxy.
//!
//! reqwest (still used for probes, model management, hooks and image fetches, none of them
//! per-token work) wraps the same hyper-util client in layers a proxy does not need on every
//! call: a client clone, a redirect and retry policy, a header map copy, a boxed body and
//! timeout wrapper per response. Here a call is one `Request` built in place and one
//! `Incoming` body read as it arrives.

use crate::ssrf_dns::{GuardedResolver, PolicyCell};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use llmux_config::UpstreamConfig;
use reqwest::dns::Resolve;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

pub type Connector = hyper_rustls::HttpsConnector<Egress>;
/// An upstream's pooled client for calls.
pub type CallClient = Client<Connector, Full<Bytes>>;
/// An upstream answer's body, chunk by chunk as it arrives.
pub type BodyStream = BoxStream<'static, Result<Bytes, BodyError>>;

/// Idle pooled connections are closed after this long (as the probes' reqwest client does).
const POOL_IDLE: Duration = Duration::from_secs(90);
/// TCP keep-alive on upstream connections, so a dead peer behind a NAT is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The pooled client of one upstream (or of one connection worker for it).
pub fn build(cfg: &UpstreamConfig, policy: &Arc<PolicyCell>) -> CallClient {
    let mut http = HttpConnector::new_with_resolver(GuardedDns(Arc::new(GuardedResolver::new(
        Arc::clone(policy),
    ))));
    tcp_options(&mut http, cfg);
    let egress = match proxy_for(&cfg.url) {
        None => Egress::Direct(http),
        Some(proxy) => {
            // The proxy is the operator's own (from the environment): its name is resolved by
            // the system's resolver, not held to the SSRF guard of admin-made upstreams.
            let mut to_proxy = HttpConnector::new_with_resolver(GuardedDns(Arc::new(
                GuardedResolver::new(PolicyCell::new(crate::ssrf_dns::Policy::Trusted)),
            )));
            tcp_options(&mut to_proxy, cfg);
            let mut tunnel = Tunnel::new(proxy.uri().clone(), to_proxy);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            Egress::Tunnel(tunnel)
        }
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config().clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(egress);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

fn tcp_options<R>(http: &mut HttpConnector<R>, cfg: &UpstreamConfig) {
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.timeouts.connect));
    http.set_keepalive(Some(TCP_KEEPALIVE));
}

/// The proxy the environment names for calls to `url` (read once per process, as curl reads
/// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`), if any.
pub fn proxy_for(url: &str) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    static MATCHER: OnceLock<Matcher> = OnceLock::new();
    let uri: http::Uri = url.parse().ok()?;
    MATCHER.get_or_init(Matcher::from_env).intercept(&uri)
}

/// How a call's connection reaches the upstream: directly, or through a proxy's tunnel.
#[derive(Clone)]
pub enum Egress {
    Direct(HttpConnector<GuardedDns>),
    Tunnel(Tunnel<HttpConnector<GuardedDns>>),
}

type Connected =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio::net::TcpStream>, DnsError>> + Send>>;

impl tower_service::Service<http::Uri> for Egress {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = DnsError;
    type Future = Connected;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        match self {
            Egress::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Egress::Tunnel(t) => t.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: http::Uri) -> Connected {
        match self {
            Egress::Direct(c) => {
                let connecting = c.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Egress::Tunnel(t) => {
                let connecting = t.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
    }
}

/// One TLS configuration for every upstream: rustls with ring and the webpki roots, ALPN
/// `http/1.1` (set by the connector).
fn tls_config() -> &'static rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b
                .with_root_certificates(webpki_roots_store())
                .with_no_client_auth(),
            // ring supports the default versions; should it not, rustls' own defaults serve.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(webpki_roots_store())
                .with_no_client_auth(),
        }
    })
}

fn webpki_roots_store() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// hyper-util's resolver interface over the upstream's guarded resolver (the SSRF policy).
#[derive(Clone)]
pub struct GuardedDns(Arc<GuardedResolver>);

type DnsError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for GuardedDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DnsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str();
            let name: reqwest::dns::Name = host
                .parse()
                .map_err(|_| DnsError::from(format!("{host}: not a host name")))?;
            let addrs = resolver.resolve(name).await?;
            Ok(addrs.collect::<Vec<_>>().into_iter())
        })
    }
}

/// Why an answer's body could not be read to its end.
#[derive(Debug)]
pub struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl From<reqwest::Error> for BodyError {
    fn from(e: reqwest::Error) -> BodyError {
        BodyError(root_cause(&e))
    }
}

/// `body` as a stream of chunks; with `total`, the stream fails at that instant
/// (`timeouts.total`) whatever it is doing.
pub fn body_stream(body: Incoming, total: Option<(tokio::time::Instant, Duration)>) -> BodyStream {
    let data = body
        .into_data_stream()
        .map(|r| r.map_err(|e| BodyError(root_cause(&e))));
    match total {
        None => data.boxed(),
        Some((at, limit)) => Deadline {
            inner: data,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            limit,
            over: false,
        }
        .boxed(),
    }
}

/// A body stream cut at an instant.
struct Deadline<S> {
    inner: S,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    over: bool,
}

impl<S: Stream<Item = Result<Bytes, BodyError>> + Unpin> Stream for Deadline<S> {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.over {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.over = true;
            let message = format!("timed out after {:?} (timeouts.total)", self.limit);
            return Poll::Ready(Some(Err(BodyError(message))));
        }
        self.inner.poll_next_unpin(cx)
    }
}

/// A failed send in words an operator can act on, without the URL (it may carry a key in a
/// query): what failed, then the innermost cause.
pub fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let cause = root_cause(e);
    if cause.is_empty() || cause == e.to_string() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

/// The innermost error's message.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

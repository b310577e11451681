//! Fetches an image given by URL, for upstreams that take only inline bytes (Gemini, Ollama):
//! through the same SSRF guard as upstreams made through the admin API, under a size cap and a
//! timeout, checked to be an image (`[translation]` in the config).

use crate::ssrf_dns::{GuardedResolver, Policy, PolicyCell};
use base64::Engine as _;
use futures_util::StreamExt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Redirects followed at most (each hop is checked by the guard again).
const MAX_REDIRECTS: usize = 5;

/// What one fetch may do.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// How long the image may take to arrive whole.
    pub timeout: Duration,
    /// `admin.allow_private_upstreams`: whether loopback and private addresses may be fetched.
    pub allow_private: bool,
}

/// A fetched image: its media type (from the answer's `content-type`) and base64 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub media_type: String,
    pub data: String,
}

/// Why an image could not be fetched; the text of the client's 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("only http and https URLs are fetched")]
    Scheme,
    #[error("invalid URL: {0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("the image is larger than {max} bytes (translation.image_fetch_max)")]
    TooBig { max: usize },
    #[error("not an image: content-type {0:?}")]
    NotImage(String),
    #[error("no whole answer within {0:?} (translation.image_fetch_timeout)")]
    Timeout(Duration),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(String),
}

/// The results `llmux_image_fetches_total` counts, in the order of [`RESULTS`].
pub const RESULTS: [&str; 7] = [
    "ok",
    "refused",
    "too_big",
    "not_image",
    "timeout",
    "http_status",
    "failed",
];

static COUNTS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Fetches since start, by result (as [`RESULTS`] names them), for `/metrics`.
pub fn counts() -> [u64; 7] {
    std::array::from_fn(|i| COUNTS[i].load(Relaxed))
}

fn count(result: &Result<Fetched, FetchError>) {
    let i = match result {
        Ok(_) => 0,
        Err(FetchError::Refused(_)) => 1,
        Err(FetchError::TooBig { .. }) => 2,
        Err(FetchError::NotImage(_)) => 3,
        Err(FetchError::Timeout(_)) => 4,
        Err(FetchError::Status(_)) => 5,
        Err(_) => 6,
    };
    COUNTS[i].fetch_add(1, Relaxed);
}

/// The fetching client and the guard policy it reads on every lookup. One per process: its
/// policy follows `admin.allow_private_upstreams`, set before each fetch (a reload changes it).
struct Fetcher {
    client: reqwest::Client,
    policy: Arc<PolicyCell>,
}

static FETCHER: OnceLock<Result<Fetcher, String>> = OnceLock::new();

fn fetcher() -> Result<&'static Fetcher, FetchError> {
    FETCHER
        .get_or_init(|| {
            let policy = PolicyCell::new(Policy::Guarded {
                allow_private: false,
            });
            let hops = Arc::clone(&policy);
            let redirects = reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                let allow_private = matches!(
                    hops.get(),
                    Policy::Guarded {
                        allow_private: true
                    }
                );
                match literal_refusal(attempt.url(), allow_private) {
                    Some(why) => attempt.error(why),
                    None => attempt.follow(),
                }
            });
            reqwest::Client::builder()
                .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))))
                // A proxy would resolve the name itself, out of the guard's sight.
                .no_proxy()
                .redirect(redirects)
                .user_agent(concat!("llmux/", env!("CARGO_PKG_VERSION")))
                .build()
                .map(|client| Fetcher { client, policy })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| FetchError::Transport(format!("no HTTP client: {e}")))
}

/// Why a URL whose host is a literal IP address may not be fetched (names are checked by the
/// resolver at connect time).
fn literal_refusal(url: &reqwest::Url, allow_private: bool) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    crate::ssrf_dns::refusal(ip, allow_private)
}

/// Whether `url` is one llmux fetches (http or https).
pub fn is_fetchable(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Fetches `url` under `limits` (counted in `llmux_image_fetches_total`).
pub async fn fetch(url: &str, limits: FetchLimits) -> Result<Fetched, FetchError> {
    let result = fetch_uncounted(url, limits).await;
    count(&result);
    result
}

async fn fetch_uncounted(url: &str, limits: FetchLimits) -> Result<Fetched, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::Invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::Scheme);
    }
    if let Some(why) = literal_refusal(&parsed, limits.allow_private) {
        return Err(FetchError::Refused(why));
    }
    let fetcher = fetcher()?;
    fetcher.policy.set(Policy::Guarded {
        allow_private: limits.allow_private,
    });
    let whole = async {
        let resp = fetcher
            .client
            .get(parsed)
            .header(reqwest::header::ACCEPT, "image/*")
            .send()
            .await
            .map_err(transport)?;
        read_image(resp, limits.max_bytes).await
    };
    tokio::time::timeout(limits.timeout, whole)
        .await
        .map_err(|_| FetchError::Timeout(limits.timeout))?
}

/// The answer's bytes, if it is a successful image answer no larger than `max`.
async fn read_image(resp: reqwest::Response, max: usize) -> Result<Fetched, FetchError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !media_type.starts_with("image/") || media_type.len() <= "image/".len() {
        return Err(FetchError::NotImage(content_type.to_string()));
    }
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(FetchError::TooBig { max });
    }
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(transport)?;
        if body.len() + chunk.len() > max {
            return Err(FetchError::TooBig { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        media_type,
        data: base64::engine::general_purpose::STANDARD.encode(&body),
    })
}

/// A transport error in words, without the URL; the guard's refusal is named as such.
fn transport(e: reqwest::Error) -> FetchError {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.contains("refused:") {
        FetchError::Refused(cause)
    } else if e.is_connect() {
        FetchError::Transport(format!("connection failed: {cause}"))
    } else {
        FetchError::Transport(cause)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::http::header::CONTENT_TYPE;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nfake";

    /// A server for `/png`, `/html`, `/big`, `/slow`, `/missing` and `/hop` (a redirect).
    async fn server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route(
                "/png",
                axum::routing::get(|| async { ([(CONTENT_TYPE, "image/png; q=1")], PNG) }),
            )
            .route(
                "/html",
                axum::routing::get(|| async { ([(CONTENT_TYPE, "text/html")], "<p>") }),
            )
            .route(
                "/big",
                axum::routing::get(|| async { ([(CONTENT_TYPE, "image/jpeg")], vec![7u8; 4096]) }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    ([(CONTENT_TYPE, "image/png")], PNG)
                }),
            )
            .route(
                "/hop",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, "/png")],
                    )
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://127.0.0.1:{port}")
    }

    fn limits(allow_private: bool) -> FetchLimits {
        FetchLimits {
            max_bytes: 1024,
            timeout: Duration::from_secs(20),
            allow_private,
        }
    }

    #[tokio::test]
    async fn fetches_checks_and_refuses() {
        let base = server().await;
        let ok = fetch(&format!("{base}/png"), limits(true)).await.unwrap();
        assert_eq!(ok.media_type, "image/png");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(ok.data)
            .unwrap();
        assert_eq!(bytes, PNG);
        let hop = fetch(&format!("{base}/hop"), limits(true)).await.unwrap();
        assert_eq!(hop.media_type, "image/png");
        let err = fetch(&format!("{base}/html"), limits(true)).await;
        assert_eq!(err, Err(FetchError::NotImage("text/html".into())));
        let err = fetch(&format!("{base}/big"), limits(true)).await;
        assert_eq!(err, Err(FetchError::TooBig { max: 1024 }));
        let err = fetch(&format!("{base}/missing"), limits(true)).await;
        assert_eq!(err, Err(FetchError::Status(404)));
        let short = FetchLimits {
            timeout: Duration::from_millis(200),
            ..limits(true)
        };
        let err = fetch(&format!("{base}/slow"), short).await;
        assert_eq!(err, Err(FetchError::Timeout(Duration::from_millis(200))));
        // Loopback without allow_private: refused, by literal address and by name.
        let err = fetch(&format!("{base}/png"), limits(false))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("allow_private_upstreams"), "{err}");
        let by_name = base.replace("127.0.0.1", "localhost");
        let err = fetch(&format!("{by_name}/png"), limits(false))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Refused(_)), "{err:?}");
        // Metadata: never, even with private addresses allowed.
        let err = fetch("http://169.254.169.254/latest", limits(true))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("link-local"), "{err}");
        assert_eq!(
            fetch("ftp://example.com/x.png", limits(true)).await,
            Err(FetchError::Scheme)
        );
        assert!(is_fetchable("HTTPS://x/y.png") && !is_fetchable("gs://b/x.png"));
        let n = counts();
        assert!(n[0] >= 2 && n[1] >= 3 && n[2] >= 1 && n[3] >= 1 && n[4] >= 1 && n[5] >= 1);
    }
}

//! SSRF guard for upstream URLs set through the admin API: resolve the host, refuse addresses an
//! admin must never make the gateway call (metadata, link-local), and private ones unless allowed.

use std::net::IpAddr;

pub use llmux_gateway::ssrf_dns::{classify, Class};

/// Why an upstream URL is refused; the message of a 400 on the `url` field.
#[derive(Debug, thiserror::Error)]
pub enum UrlRefused {
    #[error("invalid URL: {0}")]
    Invalid(#[from] url::ParseError),
    #[error("the URL has no host")]
    NoHost,
    #[error("cannot resolve host {host:?}: {source}")]
    Unresolved {
        host: String,
        source: std::io::Error,
    },
    #[error("the host resolves to no address")]
    NoAddress,
    /// An address the gateway must not call (metadata, link-local, private when not allowed).
    #[error("{0}")]
    Address(String),
}

/// Resolves the host of `url` and checks every address it resolves to.
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), UrlRefused> {
    let parsed = url::Url::parse(url)?;
    let host = parsed.host().ok_or(UrlRefused::NoHost)?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(v4) => vec![IpAddr::V4(v4)],
        url::Host::Ipv6(v6) => vec![IpAddr::V6(v6)],
        url::Host::Domain(name) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|source| UrlRefused::Unresolved {
                host: name.to_owned(),
                source,
            })?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(UrlRefused::NoAddress);
    }
    for ip in addrs {
        if let Some(why) = llmux_gateway::ssrf_dns::refusal(ip, allow_private) {
            return Err(UrlRefused::Address(why));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn urls() {
        assert!(check_url("http://127.0.0.1:9/v1", true).await.is_ok());
        let err = check_url("http://127.0.0.1:9/v1", false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_private_upstreams"), "{err}");
        let err = check_url("http://169.254.169.254/latest", true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("link-local"), "{err}");
        assert!(check_url("http://[::1]:80", false).await.is_err());
        assert!(check_url("http://localhost:80", false).await.is_err());
        for embedded in [
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let err = check_url(embedded, false).await.unwrap_err().to_string();
            assert!(err.contains("loopback"), "{embedded}: {err}");
        }
    }
}

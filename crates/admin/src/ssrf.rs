//! SSRF guard for upstream URLs set through the admin API: resolve the host, refuse addresses an
//! admin must never make the gateway call (metadata, link-local), and private ones unless allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How an address may be used as an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A public address.
    Public,
    /// Loopback or a private range: allowed only with `admin.allow_private_upstreams`.
    Private(&'static str),
    /// Never: cloud metadata, link-local, unspecified, multicast, broadcast.
    Forbidden(&'static str),
}

/// Classifies one address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as the
/// IPv4 address they carry, so they cannot smuggle a private target past the check.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(100, 100, 100, 200) {
        Class::Forbidden("a cloud metadata address")
    } else if a == 169 && b == 254 {
        Class::Forbidden("link-local (cloud metadata lives there)")
    } else if ip.is_unspecified() || a == 0 {
        Class::Forbidden("unspecified")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Class::Forbidden("multicast, broadcast or reserved")
    } else if a == 127 {
        Class::Private("loopback")
    } else if a == 10 || (a == 172 && (16..=31).contains(&b)) || (a == 192 && b == 168) {
        Class::Private("private")
    } else if a == 100 && (64..=127).contains(&b) {
        Class::Private("shared address space (100.64.0.0/10)")
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let first = ip.segments()[0];
    // AWS's IPv6 metadata endpoint sits inside fc00::/7, so it is checked first.
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        Class::Forbidden("a cloud metadata address")
    } else if first & 0xffc0 == 0xfe80 {
        Class::Forbidden("link-local")
    } else if ip.is_unspecified() {
        Class::Forbidden("unspecified")
    } else if ip.is_multicast() {
        Class::Forbidden("multicast")
    } else if ip.is_loopback() {
        Class::Private("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        Class::Private("unique local (fc00::/7)")
    } else {
        Class::Public
    }
}

/// Resolves the host of `url` and checks every address it resolves to. `Err` is the message
/// for a 400 on the `url` field.
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let host = parsed.host().ok_or("the URL has no host")?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(v4) => vec![IpAddr::V4(v4)],
        url::Host::Ipv6(v6) => vec![IpAddr::V6(v6)],
        url::Host::Domain(name) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| format!("cannot resolve host {name:?}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err("the host resolves to no address".to_owned());
    }
    for ip in addrs {
        match classify(ip) {
            Class::Public => {}
            Class::Forbidden(what) => {
                return Err(format!(
                    "refused: {ip} is {what}; upstreams may never point there"
                ))
            }
            Class::Private(what) if !allow_private => {
                return Err(format!(
                    "refused: {ip} is {what}; set admin.allow_private_upstreams = true in the \
                     config file to allow loopback and private addresses"
                ))
            }
            Class::Private(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn c(s: &str) -> Class {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ranges() {
        for s in [
            "169.254.169.254",
            "100.100.100.200",
            "fe80::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(matches!(c(s), Class::Forbidden(_)), "{s}");
        }
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(matches!(c(s), Class::Private(_)), "{s}");
        }
        for s in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:4860::8888"] {
            assert_eq!(c(s), Class::Public, "{s}");
        }
    }

    #[tokio::test]
    async fn urls() {
        assert!(check_url("http://127.0.0.1:9/v1", true).await.is_ok());
        let err = check_url("http://127.0.0.1:9/v1", false).await.unwrap_err();
        assert!(err.contains("allow_private_upstreams"), "{err}");
        let err = check_url("http://169.254.169.254/latest", true)
            .await
            .unwrap_err();
        assert!(err.contains("link-local"), "{err}");
        assert!(check_url("http://[::1]:80", false).await.is_err());
        assert!(check_url("http://localhost:80", false).await.is_err());
    }
}

//! SSRF guard at connect time: which addresses the gateway may call, and a DNS resolver for
//! the HTTP clients that drops the refused ones on every lookup, so a hostname re-pointed at a
//! private or metadata address after it was checked (DNS rebinding) is still refused.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

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

impl Class {
    fn severity(self) -> u8 {
        match self {
            Class::Public => 0,
            Class::Private(_) => 1,
            Class::Forbidden(_) => 2,
        }
    }

    /// The stricter of two classes.
    fn max(self, other: Class) -> Class {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

/// Classifies one address. An IPv6 address that carries an IPv4 address (IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
/// Teredo `2001::/32`) is judged by the IPv4 address too, so it cannot smuggle a private
/// target past the check: the stricter class wins.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            let own = classify_v6(v6);
            if own != Class::Public {
                return own;
            }
            embedded_v4(v6)
                .into_iter()
                .flatten()
                .fold(own, |class, v4| class.max(classify_v4(v4)))
        }
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

/// The IPv4 addresses an IPv6 address carries by a standard translation or tunnel scheme.
fn embedded_v4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated), ::ffff:0:a.b.c.d (SIIT)
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0, 0, hi, lo]
        | [0, 0, 0, 0, 0xffff, 0, hi, lo] => [v4(hi, lo), None],
        // NAT64 well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48 (RFC 8215)
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 1, _, _, _, hi, lo] => {
            [v4(hi, lo), None]
        }
        // 6to4: 2002:AABB:CCDD::/48
        [0x2002, hi, lo, ..] => [v4(hi, lo), None],
        // Teredo: 2001:0:SERVER:…:~CLIENT (the client address is stored inverted)
        [0x2001, 0, shi, slo, _, _, chi, clo] => [v4(shi, slo), v4(!chi, !clo)],
        _ => [None, None],
    }
}

/// Why `ip` may not be called under these rules (`None`: it may). The message fits a 400 on an
/// upstream's `url` field and a refused connection alike.
pub fn refusal(ip: IpAddr, allow_private: bool) -> Option<String> {
    match classify(ip) {
        Class::Public => None,
        Class::Forbidden(what) => Some(format!(
            "refused: {ip} is {what}; upstreams may never point there"
        )),
        Class::Private(what) if !allow_private => Some(format!(
            "refused: {ip} is {what}; set admin.allow_private_upstreams = true in the config \
             file to allow loopback and private addresses"
        )),
        Class::Private(_) => None,
    }
}

/// Which addresses a client's connections may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Whatever the name resolves to (upstreams from the config file: the operator wrote them).
    Trusted,
    /// Every resolved address is classified; refused ones are dropped (upstreams made through
    /// the admin API, alert webhooks).
    Guarded {
        /// Whether loopback and private ranges are allowed (metadata and link-local never are).
        allow_private: bool,
    },
}

/// A policy that can change while the client lives (an upstream kept across a reload can go
/// from the file to the API), read on every lookup.
#[derive(Debug)]
pub struct PolicyCell(AtomicU8);

impl PolicyCell {
    pub fn new(policy: Policy) -> Arc<PolicyCell> {
        Arc::new(PolicyCell(AtomicU8::new(Self::encode(policy))))
    }

    fn encode(policy: Policy) -> u8 {
        match policy {
            Policy::Trusted => 0,
            Policy::Guarded {
                allow_private: true,
            } => 1,
            Policy::Guarded {
                allow_private: false,
            } => 2,
        }
    }

    pub fn set(&self, policy: Policy) {
        self.0.store(Self::encode(policy), Ordering::Relaxed);
    }

    pub fn get(&self) -> Policy {
        match self.0.load(Ordering::Relaxed) {
            0 => Policy::Trusted,
            1 => Policy::Guarded {
                allow_private: true,
            },
            _ => Policy::Guarded {
                allow_private: false,
            },
        }
    }
}

/// The operating system's resolver (`getaddrinfo` on the blocking pool, as reqwest's default).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves with `inner`, then keeps only the addresses `policy` allows; a name left with none
/// fails the connection. Literal IPs in a URL never reach a resolver: they are checked when the
/// URL is set (`admin::ssrf::check_url`).
pub struct GuardedResolver {
    inner: Arc<dyn Resolve>,
    policy: Arc<PolicyCell>,
}

impl GuardedResolver {
    /// Over the system resolver.
    pub fn new(policy: Arc<PolicyCell>) -> GuardedResolver {
        GuardedResolver::with_inner(Arc::new(SystemResolver), policy)
    }

    pub fn with_inner(inner: Arc<dyn Resolve>, policy: Arc<PolicyCell>) -> GuardedResolver {
        GuardedResolver { inner, policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.get();
        let host = name.as_str().to_owned();
        let resolving = self.inner.resolve(name);
        Box::pin(async move {
            let addrs = resolving.await?;
            let Policy::Guarded { allow_private } = policy else {
                return Ok(addrs);
            };
            let mut kept = Vec::new();
            let mut refused = None;
            for addr in addrs {
                match refusal(addr.ip(), allow_private) {
                    None => kept.push(addr),
                    Some(why) => refused = Some(why),
                }
            }
            if let Some(why) = refused {
                if kept.is_empty() {
                    tracing::warn!(host, reason = %why, "connection refused by the SSRF guard");
                    return Err(format!("{host}: {why}").into());
                }
                tracing::warn!(host, reason = %why, "SSRF guard dropped a resolved address");
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::Mutex;

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
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
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
        for s in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860::8888",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(c(s), Class::Public, "{s}");
        }
    }

    #[test]
    fn loopback_embedded_in_ipv6_is_loopback() {
        for s in [
            "64:ff9b::7f00:1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:7f00:1",
            // Teredo with a loopback client (stored inverted) and with a private server
            "2001:0:808:808::80ff:fffe",
            "2001:0:a00:1::f7f7:f7f7",
        ] {
            assert!(matches!(c(s), Class::Private(_)), "{s}: {:?}", c(s));
        }
    }

    /// Answers each lookup with the next address of a script (a name that changes its mind).
    struct Script(Mutex<Vec<IpAddr>>);

    impl Resolve for Script {
        fn resolve(&self, _name: Name) -> Resolving {
            let ip = self.0.lock().unwrap().remove(0);
            Box::pin(async move { Ok(Box::new(std::iter::once(SocketAddr::new(ip, 0))) as Addrs) })
        }
    }

    fn script(ips: &[&str]) -> Arc<Script> {
        Arc::new(Script(Mutex::new(
            ips.iter().map(|s| s.parse().unwrap()).collect(),
        )))
    }

    #[tokio::test]
    async fn a_name_that_turns_private_is_refused_at_the_next_connect() {
        let policy = PolicyCell::new(Policy::Guarded {
            allow_private: false,
        });
        let guard = GuardedResolver::with_inner(script(&["93.184.216.34", "127.0.0.1"]), policy);
        let first: Vec<SocketAddr> = guard
            .resolve("api.example.com".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(first, ["93.184.216.34:0".parse().unwrap()]);
        let second = guard.resolve("api.example.com".parse().unwrap()).await;
        let err = second.err().expect("the rebinding answer must be refused");
        assert!(err.to_string().contains("127.0.0.1 is loopback"), "{err}");
    }

    #[tokio::test]
    async fn metadata_is_refused_even_when_private_is_allowed_and_trusted_passes() {
        let allow = PolicyCell::new(Policy::Guarded {
            allow_private: true,
        });
        let guard = GuardedResolver::with_inner(
            script(&["10.0.0.5", "169.254.169.254"]),
            Arc::clone(&allow),
        );
        assert!(guard.resolve("n.example".parse().unwrap()).await.is_ok());
        assert!(guard.resolve("n.example".parse().unwrap()).await.is_err());
        allow.set(Policy::Trusted);
        let trusted = GuardedResolver::with_inner(script(&["169.254.169.254"]), allow);
        assert!(trusted.resolve("n.example".parse().unwrap()).await.is_ok());
    }

    /// `Gateway::apply` guards the upstreams the admin API made, and only those: `localhost`
    /// resolves to loopback, which an API upstream may not reach without
    /// `allow_private_upstreams`.
    #[tokio::test]
    async fn apply_guards_api_upstreams_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let toml = format!(
            "[health]\ntimeout = \"1s\"\n\
             [[upstreams]]\nname = \"file\"\nkind = \"openai\"\nurl = \"http://localhost:{port}/v1\"\nmodels = [\"m\"]\n\
             [[upstreams]]\nname = \"api\"\nkind = \"openai\"\nurl = \"http://localhost:{port}/v2\"\nmodels = [\"m\"]\n"
        );
        let config = llmux_config::Config::from_toml_str(&toml, &|_| None).unwrap();
        let gw = crate::Gateway::new(config.clone()).unwrap();
        let mut overlay = crate::routing::Overlay::default();
        overlay.api_upstreams.insert("api".into());
        gw.apply(config, overlay).await.unwrap();
        let routes = gw.routes();
        let url = format!("http://localhost:{port}/");
        let file = routes.upstream("file").unwrap();
        assert_eq!(file.dns_policy.get(), Policy::Trusted);
        assert!(file.client.get(&url).send().await.is_ok());
        let api = routes.upstream("api").unwrap();
        assert_eq!(
            api.dns_policy.get(),
            Policy::Guarded {
                allow_private: false
            }
        );
        assert!(api.client.get(&url).send().await.is_err());
    }

    /// End to end through reqwest: a name that resolves to a listening loopback server is
    /// reached by a trusted client and refused by a guarded one.
    #[tokio::test]
    async fn a_guarded_client_does_not_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = |policy| {
            reqwest::Client::builder()
                .dns_resolver(Arc::new(GuardedResolver::with_inner(
                    script(&["127.0.0.1"]),
                    PolicyCell::new(policy),
                )))
                .build()
                .unwrap()
        };
        let url = format!("http://rebound.example:{port}/");
        let ok = client(Policy::Trusted).get(&url).send().await.unwrap();
        assert_eq!(ok.text().await.unwrap(), "hi");
        let refused = client(Policy::Guarded {
            allow_private: false,
        })
        .get(&url)
        .send()
        .await;
        assert!(refused.is_err());
    }
}

//! Rate-limit counters in Redis, shared by every llmux instance that points at the same server.
//!
//! Each check is one `EVALSHA` of a versioned Lua script ([`SCRIPT`]) that reads Redis's own
//! clock (`TIME`) and charges every counter of the call or none, so instances with skewed
//! clocks still share one limit exactly. Keys live under [`KEY_PREFIX`]; a change to their
//! meaning or to the script's arguments bumps the version in both. The client is the `redis`
//! crate's [`ConnectionManager`]: one multiplexed connection, reconnected when it drops, with
//! the script reloaded when the server lost it (`NOSCRIPT`).

pub mod cache;

use llmux_gateway::limits::{BackendError, BoxFuture, Check, Decision, SharedBackend};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script};
use std::future::Future;
use std::time::Duration;

/// The script run for every check and reconciliation (version 1: see the prefix).
pub const SCRIPT: &str = include_str!("script.lua");
/// Every key this backend writes starts with this.
pub const KEY_PREFIX: &str = "llmux:v1:rl:";
/// Connect, and each command's round trip, give up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_millis(200);

/// Checks `url` and makes its client and a lazily connected, self-reconnecting multiplexed
/// connection with [`IO_TIMEOUT`] bounds: what every Redis user in llmux (limits, cluster)
/// builds on.
///
/// `rediss://` connects over TLS (rustls, on the `ring` provider the rest of llmux already
/// uses). The server's certificate is checked against the system's trust store, which
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` replace (a private CA); `rediss://host/#insecure` is
/// refused, since it would skip the check.
pub fn connect(url: &str) -> Result<(redis::Client, ConnectionManager), String> {
    let u = url::Url::parse(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
    match u.scheme() {
        "redis" => {}
        "rediss" if u.fragment() == Some("insecure") => {
            return Err(
                "rediss://…#insecure would not check the server's certificate: give llmux the \
                 CA instead (SSL_CERT_FILE=/path/to/ca.pem)"
                    .into(),
            )
        }
        "rediss" => {}
        other => {
            return Err(format!(
                "a Redis URL starts with redis:// or rediss:// (TLS), not {other}://"
            ))
        }
    }
    match u.path().trim_start_matches('/') {
        "" => {}
        d if d.parse::<u32>().is_ok() => {}
        d => return Err(format!("invalid Redis database {d:?}")),
    }
    let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT))
        .set_number_of_retries(1);
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
    Ok((client, conn))
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

/// Counters in one Redis server.
pub struct RedisBackend {
    client: redis::Client,
    conn: ConnectionManager,
    script: Script,
}

impl RedisBackend {
    /// Parses `url` (`redis://[user:password@]host[:port][/db]`); connects lazily, on the
    /// first call. Needs a Tokio runtime.
    pub fn new(url: &str) -> Result<RedisBackend, String> {
        let (client, conn) = connect(url)?;
        Ok(RedisBackend {
            client,
            conn,
            script: Script::new(SCRIPT),
        })
    }

    /// Runs `op` on the shared connection, within [`IO_TIMEOUT`] per try. A connection that
    /// died with a Redis restart gets one retry on the manager's fresh one, so a restart does
    /// not look like an outage to the next few calls.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, BackendError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = || async {
            match tokio::time::timeout(IO_TIMEOUT * 2, op(self.conn.clone())).await {
                Ok(r) => r.map_err(Failure::Redis),
                Err(_) => Err(Failure::TimedOut),
            }
        };
        match attempt().await {
            Err(Failure::Redis(e)) if e.is_connection_dropped() || e.is_io_error() => {
                attempt().await.map_err(Failure::into_backend)
            }
            r => r.map_err(Failure::into_backend),
        }
    }

    /// Runs the script in `mode` over `checks`, with one cost (or delta) per check.
    async fn eval(
        &self,
        mode: &str,
        checks: &[Check],
        costs: &[i64],
    ) -> Result<Vec<i64>, BackendError> {
        let mut invocation = self.script.prepare_invoke();
        for c in checks {
            invocation.key(format!("{KEY_PREFIX}{}", c.key));
        }
        invocation.arg(mode);
        for (c, cost) in checks.iter().zip(costs) {
            let period = u64::try_from(c.rate.per.as_micros()).unwrap_or(u64::MAX);
            invocation.arg(period).arg(c.rate.count).arg(*cost);
        }
        let invocation = &invocation;
        self.run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }
}

/// Why one try failed.
enum Failure {
    Redis(RedisError),
    TimedOut,
}

impl Failure {
    fn into_backend(self) -> BackendError {
        match self {
            Failure::Redis(e) => err(e),
            Failure::TimedOut => err("Redis did not answer in time"),
        }
    }
}

fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

fn int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SharedBackend for RedisBackend {
    fn check<'a>(
        &'a self,
        checks: &'a [Check],
    ) -> BoxFuture<'a, Result<Vec<Decision>, BackendError>> {
        Box::pin(async move {
            let costs: Vec<i64> = checks
                .iter()
                .map(|c| i64::try_from(c.cost).unwrap_or(i64::MAX))
                .collect();
            let items = self.eval("check", checks, &costs).await?;
            if items.len() != 1 + 4 * checks.len() {
                return Err(err("the script answered in an unexpected shape"));
            }
            Ok(checks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let r = &items[1 + 4 * i..5 + 4 * i];
                    Decision {
                        allowed: r[0] == 1,
                        limit: c.rate.count,
                        remaining: int(r[1]),
                        reset: micros(r[2]),
                        retry_after: micros(r[3]),
                    }
                })
                .collect())
        })
    }

    fn adjust<'a>(
        &'a self,
        check: &'a Check,
        delta: i64,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.eval("adjust", std::slice::from_ref(check), &[delta])
                .await
                .map(drop)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            // A fresh connection: proves the server is back (the shared one reconnects on its
            // own, and reloads the script on the first NOSCRIPT).
            let fresh = async {
                let mut conn = self.client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            match tokio::time::timeout(IO_TIMEOUT * 2, fresh).await {
                Ok(Ok(pong)) if pong == "PONG" => Ok(()),
                Ok(Ok(other)) => Err(err(format!("unexpected PING reply {other:?}"))),
                Ok(Err(e)) => Err(err(e)),
                Err(_) => Err(err("Redis did not answer in time")),
            }
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
    use super::*;

    fn redis_url() -> Option<String> {
        let url = std::env::var("LLMUX_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("LLMUX_TEST_REDIS_URL is not set: skipping the Redis test");
        }
        url
    }

    fn check(key: &str, rate: &str, cost: u64) -> Check {
        Check {
            key: key.into(),
            rate: rate.parse().unwrap(),
            cost,
        }
    }

    fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("test:{name}:{nanos}:{}", std::process::id())
    }

    #[tokio::test]
    async fn urls() {
        let b = RedisBackend::new("redis://u:p%40ss@example.com:6380/2").unwrap();
        let info = b.client.get_connection_info();
        assert_eq!(info.addr().to_string(), "example.com:6380");
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p@ss"));
        assert_eq!(info.redis_settings().db(), 2);
        let b = RedisBackend::new("redis://[::1]").unwrap();
        assert_eq!(
            b.client.get_connection_info().addr().to_string(),
            "::1:6379"
        );
        let b = RedisBackend::new("rediss://u:secret@redis.example:6380/1").unwrap();
        let info = b.client.get_connection_info();
        assert!(
            matches!(info.addr(), redis::ConnectionAddr::TcpTls { host, port: 6380, insecure: false, .. } if host == "redis.example"),
            "{:?}",
            info.addr()
        );
        assert_eq!(info.redis_settings().db(), 1);
        let e = RedisBackend::new("rediss://redis.example/#insecure")
            .err()
            .unwrap();
        assert!(e.contains("SSL_CERT_FILE"), "{e}");
        assert!(RedisBackend::new("http://x").is_err());
        assert!(RedisBackend::new("redis://x/abc").is_err());
    }

    #[tokio::test]
    async fn two_backends_share_exactly_one_limit() {
        let Some(url) = redis_url() else { return };
        let (a, b) = (
            RedisBackend::new(&url).unwrap(),
            RedisBackend::new(&url).unwrap(),
        );
        let c = [check(&unique("shared"), "10/min", 1)];
        let mut admitted = 0;
        for i in 0..30 {
            let backend = if i % 2 == 0 { &a } else { &b };
            if backend.check(&c).await.unwrap()[0].allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10);
        let d = a.check(&c).await.unwrap()[0];
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(d.retry_after > Duration::from_secs(5) && d.retry_after <= Duration::from_secs(6));
    }

    #[tokio::test]
    async fn all_or_nothing_and_adjust() {
        let Some(url) = redis_url() else { return };
        let r = RedisBackend::new(&url).unwrap();
        let rpm = check(&unique("rpm"), "10/min", 1);
        let tpm = check(&unique("tpm"), "100/min", 60);
        assert!(r
            .check(&[rpm.clone(), tpm.clone()])
            .await
            .unwrap()
            .iter()
            .all(|d| d.allowed));
        let d = r.check(&[rpm.clone(), tpm.clone()]).await.unwrap();
        assert!(d[0].allowed && !d[1].allowed);
        // Not charged: 9 left after this one.
        assert_eq!(
            r.check(std::slice::from_ref(&rpm)).await.unwrap()[0].remaining,
            8
        );
        r.adjust(&tpm, -50).await.unwrap();
        assert!(r.check(std::slice::from_ref(&tpm)).await.unwrap()[0].allowed);
        assert!(r.ping().await.is_ok());
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error_not_a_hang() {
        // A port nobody listens on (bound, then closed).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let r = RedisBackend::new(&format!("redis://127.0.0.1:{port}")).unwrap();
        assert!(r.check(&[check("x", "1/s", 1)]).await.is_err());
        assert!(r.ping().await.is_err());
    }
}

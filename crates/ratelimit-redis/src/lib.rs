//! Rate-limit counters in Redis, shared by every llmux instance that points at the same server.
//!
//! Each check is one `EVALSHA` of a versioned Lua script ([`SCRIPT`]) that reads Redis's own
//! clock (`TIME`) and charges every counter of the call or none, so instances with skewed
//! clocks still share one limit exactly. Keys live under [`KEY_PREFIX`]; a change to their
//! meaning or to the script's arguments bumps the version in both. The client is a minimal
//! RESP one (a few commands, a small connection pool) to keep a full Redis client library out
//! of the build.

use llmux_gateway::limits::{BackendError, BoxFuture, Check, Decision, SharedBackend};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// The script run for every check and reconciliation (version 1: see the prefix).
pub const SCRIPT: &str = include_str!("script.lua");
/// Every key this backend writes starts with this.
pub const KEY_PREFIX: &str = "llmux:v1:rl:";
/// Connections kept open; calls spread over them round-robin.
const POOL: usize = 4;
/// Connect, and each command's round trip, give up after this long.
const IO_TIMEOUT: Duration = Duration::from_millis(200);

/// Where the server is, from a `redis://[user:password@]host[:port][/db]` URL.
#[derive(Clone)]
struct Target {
    addr: String,
    username: Option<String>,
    password: Option<String>,
    db: Option<u32>,
}

struct Conn {
    io: BufReader<TcpStream>,
    /// SHA-1 of [`SCRIPT`] as this server loaded it.
    sha: String,
}

/// A RESP reply (arrays of scalars only: all this backend needs).
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

/// Counters in one Redis server.
pub struct RedisBackend {
    target: Target,
    pool: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

impl RedisBackend {
    /// Parses `url`; connects lazily, on the first call.
    pub fn new(url: &str) -> Result<RedisBackend, String> {
        let u = url::Url::parse(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        if u.scheme() != "redis" {
            return Err("only redis:// URLs are supported".into());
        }
        let host = u.host_str().ok_or("the Redis URL has no host")?;
        let port = u.port().unwrap_or(6379);
        let db = match u.path().trim_start_matches('/') {
            "" => None,
            d => Some(
                d.parse()
                    .map_err(|_| format!("invalid Redis database {d:?}"))?,
            ),
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let password = u.password().map(decode);
        let username = Some(u.username()).filter(|n| !n.is_empty()).map(decode);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(RedisBackend {
            target: Target {
                addr,
                username,
                password,
                db,
            },
            pool: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    async fn connect(&self) -> Result<Conn, BackendError> {
        let t = &self.target;
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&t.addr))
            .await
            .map_err(|_| err("connect timed out"))?
            .map_err(err)?;
        let _ = tcp.set_nodelay(true);
        let mut io = BufReader::new(tcp);
        if let Some(pass) = &t.password {
            let mut args = vec!["AUTH".as_bytes()];
            if let Some(user) = &t.username {
                args.push(user.as_bytes());
            }
            args.push(pass.as_bytes());
            expect_ok(roundtrip(&mut io, &args).await?)?;
        }
        if let Some(db) = t.db {
            expect_ok(roundtrip(&mut io, &[b"SELECT", db.to_string().as_bytes()]).await?)?;
        }
        let sha = load_script(&mut io).await?;
        Ok(Conn { io, sha })
    }

    /// Runs `f` on a pooled connection (connecting when needed). The connection is taken out
    /// of the pool while in use and put back only after a clean round trip, so a call that
    /// fails or is cancelled half-way never leaves a half-read reply for the next one.
    async fn with_conn(&self, script_args: &[Vec<u8>]) -> Result<Reply, BackendError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % POOL;
        let mut slot = self.pool[i].lock().await;
        if let Some(conn) = slot.take() {
            // A pooled connection may have died with a Redis restart: one fresh retry, so a
            // restart does not look like an outage to the next few calls.
            if let Ok((conn, reply)) = self.eval_on(conn, script_args).await {
                *slot = Some(conn);
                return Ok(reply);
            }
        }
        let conn = self.connect().await?;
        let (conn, reply) = self.eval_on(conn, script_args).await?;
        *slot = Some(conn);
        Ok(reply)
    }

    async fn eval_on(
        &self,
        mut conn: Conn,
        script_args: &[Vec<u8>],
    ) -> Result<(Conn, Reply), BackendError> {
        let eval = |sha: &str| {
            let mut args: Vec<Vec<u8>> = vec![b"EVALSHA".to_vec(), sha.as_bytes().to_vec()];
            args.extend(script_args.iter().cloned());
            args
        };
        let args = eval(&conn.sha);
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut reply = roundtrip(&mut conn.io, &refs).await?;
        if matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) {
            // The server lost its scripts (SCRIPT FLUSH, a restart behind a proxy): load again.
            conn.sha = load_script(&mut conn.io).await?;
            let args = eval(&conn.sha);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            reply = roundtrip(&mut conn.io, &refs).await?;
        }
        Ok((conn, reply))
    }

    fn script_args(mode: &str, checks: &[Check], costs: &[i64]) -> Vec<Vec<u8>> {
        let mut a = Vec::with_capacity(2 + checks.len() * 4);
        a.push(checks.len().to_string().into_bytes());
        for c in checks {
            a.push(format!("{KEY_PREFIX}{}", c.key).into_bytes());
        }
        a.push(mode.as_bytes().to_vec());
        for (c, cost) in checks.iter().zip(costs) {
            a.push(c.rate.per.as_micros().to_string().into_bytes());
            a.push(c.rate.count.to_string().into_bytes());
            a.push(cost.to_string().into_bytes());
        }
        a
    }
}

fn micros(v: &Reply) -> Duration {
    match v {
        Reply::Int(n) => Duration::from_micros(u64::try_from(*n).unwrap_or(0)),
        _ => Duration::ZERO,
    }
}

fn int(v: &Reply) -> u64 {
    match v {
        Reply::Int(n) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
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
            let reply = self
                .with_conn(&Self::script_args("check", checks, &costs))
                .await?;
            let Reply::Array(items) = reply else {
                return Err(err(format!("unexpected script reply {reply:?}")));
            };
            if items.len() != 1 + 4 * checks.len() {
                return Err(err("the script answered in an unexpected shape"));
            }
            Ok(checks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let r = &items[1 + 4 * i..5 + 4 * i];
                    Decision {
                        allowed: int(&r[0]) == 1,
                        limit: c.rate.count,
                        remaining: int(&r[1]),
                        reset: micros(&r[2]),
                        retry_after: micros(&r[3]),
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
            let args = Self::script_args("adjust", std::slice::from_ref(check), &[delta]);
            match self.with_conn(&args).await? {
                Reply::Error(e) => Err(err(e)),
                _ => Ok(()),
            }
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            // A fresh connection: proves the server is back and reloads the script there.
            let mut conn = self.connect().await?;
            match roundtrip(&mut conn.io, &[b"PING"]).await? {
                Reply::Simple(s) if s == "PONG" => Ok(()),
                other => Err(err(format!("unexpected PING reply {other:?}"))),
            }
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

fn expect_ok(r: Reply) -> Result<(), BackendError> {
    match r {
        Reply::Simple(_) => Ok(()),
        Reply::Error(e) => Err(err(e)),
        other => Err(err(format!("unexpected reply {other:?}"))),
    }
}

async fn load_script(io: &mut BufReader<TcpStream>) -> Result<String, BackendError> {
    match roundtrip(io, &[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await? {
        Reply::Bulk(Some(sha)) => String::from_utf8(sha).map_err(err),
        other => Err(err(format!("cannot load the rate-limit script: {other:?}"))),
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends one command and reads its reply, within [`IO_TIMEOUT`].
async fn roundtrip(io: &mut BufReader<TcpStream>, args: &[&[u8]]) -> Result<Reply, BackendError> {
    let send_and_read = async {
        io.get_mut().write_all(&encode(args)).await.map_err(err)?;
        read_reply(io, true).await
    };
    tokio::time::timeout(IO_TIMEOUT, send_and_read)
        .await
        .map_err(|_| err("Redis did not answer in time"))?
}

async fn read_line(io: &mut BufReader<TcpStream>) -> Result<String, BackendError> {
    let mut line = Vec::new();
    io.read_until(b'\n', &mut line).await.map_err(err)?;
    if !line.ends_with(b"\r\n") {
        return Err(err("connection closed"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(err)
}

async fn read_reply(io: &mut BufReader<TcpStream>, nested: bool) -> Result<Reply, BackendError> {
    let line = read_line(io).await?;
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| err("empty reply"))?;
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| err(format!("bad reply {line:?}")))
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(number()?)),
        "$" => {
            let Ok(n) = usize::try_from(number()?) else {
                return Ok(Reply::Bulk(None));
            };
            let mut buf = vec![0; n + 2];
            io.read_exact(&mut buf).await.map_err(err)?;
            buf.truncate(n);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" if nested => {
            let n = usize::try_from(number()?).unwrap_or(0);
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(Box::pin(read_reply(io, false)).await?);
            }
            Ok(Reply::Array(items))
        }
        _ => Err(err(format!("unexpected reply {line:?}"))),
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

    #[test]
    fn urls() {
        let b = RedisBackend::new("redis://u:p%40ss@example.com:6380/2").unwrap();
        assert_eq!(b.target.addr, "example.com:6380");
        assert_eq!(b.target.username.as_deref(), Some("u"));
        assert_eq!(b.target.password.as_deref(), Some("p@ss"));
        assert_eq!(b.target.db, Some(2));
        assert_eq!(
            RedisBackend::new("redis://[::1]").unwrap().target.addr,
            "[::1]:6379"
        );
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

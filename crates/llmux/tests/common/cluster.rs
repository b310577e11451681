//! Several `llmux serve` processes as one cluster: one fresh PostgreSQL schema, one Redis with
//! a key prefix of the test's own, and one master key, so that each test is alone on the
//! shared servers. Skipped (with a note) when `LLMUX_TEST_POSTGRES_URL` or
//! `LLMUX_TEST_REDIS_URL` is unset.

use super::{Llmux, Opts, PgSchema};
use std::time::{Duration, Instant};

/// The master key every instance of a test cluster shares (64 hex digits).
pub const MASTER_KEY: &str = "5f1d3c7a9b2e4f6081726354a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

/// A running cluster; every instance is killed, and the schema dropped, on drop.
pub struct TestCluster {
    pub nodes: Vec<Llmux>,
    pub pg: PgSchema,
    pub redis_url: String,
    /// `cluster.prefix` of this test: its Redis keys start with `{prefix}:`.
    pub prefix: String,
    /// The config after `[server]`, `[admin]` and `[store]`, as every instance has it.
    pub body: String,
    /// Extra environment variables of every instance.
    pub env: Vec<(String, String)>,
    /// One cluster test at a time: each runs three or more processes and measures timings
    /// on a machine of two cores. Last, so that the next test starts only once these
    /// processes are gone and the schema is dropped.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// How to start a cluster.
#[derive(Clone)]
pub struct Spec {
    /// Instances to start.
    pub n: usize,
    /// Config tables (upstreams, `[auth]`, `[routing]`, `[health]`, …) but not `[limits]` or
    /// `[cluster]`: those are written from the fields below.
    pub body: String,
    /// Extra lines of `[limits]` (the Redis URL is added).
    pub limits_extra: String,
    /// Extra lines of `[cluster]` (the prefix, a 500ms heartbeat and a 3s lease are set unless
    /// given here).
    pub cluster_extra: String,
    /// `limits.redis_url`; default: `LLMUX_TEST_REDIS_URL`.
    pub redis_url: Option<String>,
    /// Extra lines of `[admin]`.
    pub admin_extra: String,
    /// Extra environment variables of every instance (e.g. `SSL_CERT_FILE` for `rediss://`).
    pub env: Vec<(String, String)>,
}

impl Spec {
    pub fn new(n: usize, body: &str) -> Spec {
        Spec {
            n,
            body: body.to_string(),
            limits_extra: String::new(),
            cluster_extra: String::new(),
            redis_url: None,
            admin_extra: "allow_private_upstreams = true".to_string(),
            env: Vec::new(),
        }
    }
}

/// The PostgreSQL and Redis URLs of the test environment, or `None` (printed) to skip.
pub fn servers() -> Option<(String, String)> {
    let pg = std::env::var("LLMUX_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let redis = std::env::var("LLMUX_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    match (pg, redis) {
        (Some(pg), Some(redis)) => Some((pg, redis)),
        _ => {
            eprintln!(
                "note: cluster tests need LLMUX_TEST_POSTGRES_URL and LLMUX_TEST_REDIS_URL: skipping"
            );
            None
        }
    }
}

impl TestCluster {
    /// Starts `spec.n` instances (the first alone, so that it runs the migrations; the rest
    /// then). `None` when PostgreSQL or Redis is not configured.
    pub async fn start(spec: Spec) -> Option<TestCluster> {
        static TURN: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
            std::sync::OnceLock::new();
        let (_, default_redis) = servers()?;
        let turn = std::sync::Arc::clone(TURN.get_or_init(Default::default))
            .lock_owned()
            .await;
        let pg = PgSchema::create("llmux_cl").await?;
        let redis_url = spec.redis_url.clone().unwrap_or(default_redis);
        let prefix = pg.name.replace('_', "-");
        let mut cluster = format!("prefix = \"{prefix}\"\n");
        if !spec.cluster_extra.contains("heartbeat") {
            cluster.push_str("heartbeat = \"500ms\"\n");
        }
        if !spec.cluster_extra.contains("lease") {
            cluster.push_str("lease = \"3s\"\n");
        }
        cluster.push_str(&spec.cluster_extra);
        let body = format!(
            "{}\n[limits]\nredis_url = \"{redis_url}\"\n{}\n[cluster]\n{cluster}",
            spec.body, spec.limits_extra
        );
        let mut c = TestCluster {
            nodes: Vec::new(),
            _turn: turn,
            pg,
            redis_url,
            prefix,
            body,
            env: spec.env.clone(),
        };
        c.nodes.push(c.spawn(&spec.admin_extra));
        for _ in 1..spec.n {
            let node = c.spawn(&spec.admin_extra);
            c.nodes.push(node);
        }
        Some(c)
    }

    fn spawn(&self, admin_extra: &str) -> Llmux {
        Llmux::start_opts(Opts {
            body: self.body.clone(),
            admin_extra: admin_extra.to_string(),
            store_url: Some(self.pg.url.clone()),
            env: [("LLMUX_MASTER_KEY".to_string(), MASTER_KEY.to_string())]
                .into_iter()
                .chain(self.env.iter().cloned())
                .collect(),
            ..Opts::default()
        })
    }

    /// Starts one more instance of this cluster.
    pub fn add(&mut self) -> &Llmux {
        let node = self.spawn("allow_private_upstreams = true");
        self.nodes.push(node);
        self.nodes.last().unwrap()
    }

    /// Kills instance `i` with SIGKILL (no clean shutdown: its leases must expire by
    /// themselves) and removes it from `nodes`.
    pub fn kill9(&mut self, i: usize) -> Llmux {
        let mut node = self.nodes.remove(i);
        let _ = node.child.kill();
        let _ = node.child.wait();
        node
    }

    /// A Redis connection to the cluster's Redis, for looking at what the instances share.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns how long it took, or
/// `None` when it never held.
pub async fn time_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `redis-server` on a free port of its own, with no persistence, for tests that stop
/// and restart Redis (never the shared one). `None` when `redis-server` is not installed.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub fn start() -> Option<OwnRedis> {
        let dir = tempfile::tempdir().unwrap();
        let mut r = OwnRedis {
            port: 0,
            child: None,
            dir,
        };
        for _ in 0..20 {
            let port = 20000 + (rand_u16() % 20000);
            if r.start_on(port) {
                return Some(r);
            }
        }
        None
    }

    /// Starts (or restarts) the server on `port`; `true` once it answers.
    fn start_on(&mut self, port: u16) -> bool {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return false };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // port taken
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                self.port = port;
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.start_on(self.port), "redis-server did not restart");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ (std::process::id() << 7)) as u16
}

//! Outages (docs/cluster.md, "Outages"): Redis stopped and restarted under load, and
//! PostgreSQL cut off (through a TCP proxy the test runs) and back — calls keep succeeding on
//! every instance, and every call that completed is found exactly once in the call log.

use crate::common::cluster::{time_until, OwnRedis, Spec, TestCluster, MASTER_KEY};
use crate::common::{chat, client, node, Llmux, Opts, ADMIN};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the calls of one phase got.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    slowest_ms: AtomicU64,
    /// `x-request-id` of every 200.
    ids: Mutex<Vec<String>>,
}

impl Tally {
    fn failed(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }
}

/// Calls `/v1/chat/completions` on every address, one caller per instance, until `stop`.
async fn load(addrs: Vec<String>, key: Option<String>, stop: Arc<AtomicBool>) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let mut callers = Vec::new();
    for (i, base) in addrs.into_iter().enumerate() {
        let (tally, stop, key) = (Arc::clone(&tally), Arc::clone(&stop), key.clone());
        callers.push(tokio::spawn(async move {
            let http = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut req = http
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&chat("m1", n.is_multiple_of(2)));
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                let started = Instant::now();
                let outcome = match req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let id = crate::common::header(&r, "x-request-id");
                        match r.bytes().await {
                            Ok(_) if status == 200 => Ok(id),
                            Ok(body) => Err(format!("{status} {}", String::from_utf8_lossy(&body))),
                            Err(e) => Err(format!("{status}, body cut: {e}")),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap();
                tally.slowest_ms.fetch_max(ms, Ordering::Relaxed);
                match outcome {
                    Ok(id) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tally.ids.lock().unwrap().push(id);
                    }
                    Err(e) => tally
                        .failed
                        .lock()
                        .unwrap()
                        .push(format!("instance {i}: {e}")),
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    tally
}

/// Runs [`load`] for `how_long`, then returns what it got.
async fn load_for(addrs: &[String], key: Option<&str>, how_long: Duration) -> Arc<Tally> {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(load(
        addrs.to_vec(),
        key.map(str::to_string),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(how_long).await;
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap()
}

fn addrs(nodes: &[Llmux]) -> Vec<String> {
    nodes.iter().map(|n| format!("http://{}", n.addr)).collect()
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// How many of `ids` are live keys (`{prefix}:c1:live:*`) in the Redis at `url`.
async fn live_instances(url: &str, prefix: &str) -> usize {
    let Ok(client) = redis::Client::open(url) else {
        return 0;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return 0;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:c1:live:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    keys.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_calls_keep_flowing_and_instances_rejoin() {
    if crate::common::cluster::servers().is_none() {
        return;
    }
    let Some(mut own) = OwnRedis::start() else {
        eprintln!("note: redis-server is not installed: skipping the Redis outage test");
        return;
    };
    let mock = llmux_mock::MockServer::start(node("n1", &["m1"]))
        .await
        .unwrap();
    let body = format!(
        "[health]\ninterval = \"2s\"\n[[upstreams]]\nname = \"n1\"\nkind = \"ollama\"\nurl = \"{}\"\nmodels = [\"m1\"]\n",
        mock.url()
    );
    let mut spec = Spec::new(3, &body);
    spec.redis_url = Some(own.url());
    // Every call goes through the shared limiter (the global limit is checked on each).
    spec.limits_extra = "backend = \"redis\"\nglobal = \"100000/s\"\nfail_open = true\n".into();
    let Some(c) = TestCluster::start(spec).await else {
        return;
    };
    let addrs = addrs(&c.nodes);
    let joined = time_until(Duration::from_secs(10), async || {
        live_instances(&c.redis_url, &c.prefix).await == 3
    })
    .await;
    assert!(
        joined.is_some(),
        "the three instances never showed in Redis"
    );

    let before = load_for(&addrs, None, Duration::from_secs(2)).await;
    assert!(before.failed().is_empty(), "{:?}", before.failed());

    own.stop();
    let during = load_for(&addrs, None, Duration::from_secs(6)).await;
    let slowest = during.slowest_ms.load(Ordering::Relaxed);
    println!(
        "redis outage: {} calls during 6 s without Redis, {} failed, slowest {slowest} ms",
        during.ok.load(Ordering::Relaxed),
        during.failed().len()
    );
    assert!(during.failed().is_empty(), "{:?}", during.failed());
    assert!(during.ok.load(Ordering::Relaxed) >= 30);
    assert!(
        slowest < 1000,
        "a call waited {slowest} ms on the Redis outage"
    );

    own.restart();
    let stop = Arc::new(AtomicBool::new(false));
    let after = tokio::spawn(load(addrs.clone(), None, Arc::clone(&stop)));
    let back = time_until(Duration::from_secs(10), async || {
        live_instances(&c.redis_url, &c.prefix).await == 3
    })
    .await;
    // The limiter is back on the shared counters too.
    let limiter_back = time_until(Duration::from_secs(15), async || {
        let mut all = true;
        for a in &addrs {
            let m = client().get(format!("{a}/metrics")).send().await;
            let text = match m {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            all &= text.contains("llmux_ratelimit_backend_up{backend=\"redis\"} 1");
        }
        all
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let after = after.await.unwrap();
    println!(
        "redis back: instances live again in Redis after {back:?}, limiter shared again after {limiter_back:?}; {} calls after, {} failed",
        after.ok.load(Ordering::Relaxed),
        after.failed().len()
    );
    assert!(back.is_some_and(|t| t < Duration::from_secs(5)), "{back:?}");
    assert!(
        limiter_back.is_some(),
        "the limiter stayed on local counters"
    );
    assert!(after.failed().is_empty(), "{:?}", after.failed());
    // The outage and the recovery are logged once each per instance, not once per call.
    for (i, n) in c.nodes.iter().enumerate() {
        let log = n.log_text();
        assert_eq!(
            count(&log, "cluster: Redis unreachable; serving on local state"),
            1,
            "instance {i}: {log}"
        );
        assert!(count(&log, "cluster: Redis reachable") >= 1, "instance {i}");
        assert!(
            count(&log, "rate-limit backend unreachable") <= 2,
            "instance {i}: {log}"
        );
    }
}

/// A TCP proxy to PostgreSQL that the test can cut: while cut, its port is closed (new
/// connections are refused) and the open connections are closed too, as when the server is
/// down; or freeze: nothing moves, as in a network partition. Armed
/// with [`PgProxy::lose_next_commit_answer`], it lets the next COMMIT of a call-log batch
/// through and cuts that connection before the server's answer reaches llmux: the batch is
/// in the database, and the writer, which saw its connection fail, writes it again.
struct PgProxy {
    port: u16,
    target: String,
    /// The accept loop; `None` while the port is closed.
    listening: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// While set, nothing is forwarded and new connections get no answer: a network partition
    /// (no reset, no refusal: every read waits).
    frozen: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    trap: Arc<AtomicBool>,
    sprung: Arc<AtomicU64>,
}

/// How the test takes PostgreSQL away.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    /// Connections closed and refused: a server that is down.
    Cut,
    /// Connections silent: a partition, where every query waits.
    Freeze,
}

/// Waits while `frozen` is set.
async fn thawed(frozen: &AtomicBool) {
    while frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Relays one connection both ways until either side closes or the proxy is cut.
async fn pipe(
    inbound: tokio::net::TcpStream,
    outbound: tokio::net::TcpStream,
    (trap, sprung, frozen): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicBool>),
    mut cut: tokio::sync::watch::Receiver<u64>,
) {
    let ice = Arc::clone(&frozen);
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_server, mut to_server) = outbound.into_split();
    let hold = Arc::new(AtomicBool::new(false));
    let held = Arc::clone(&hold);
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut in_batch = false;
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            thawed(&frozen).await;
            let chunk = &buf[..n];
            in_batch |= contains(chunk, b"INSERT INTO call_log (");
            let commit = contains(chunk, b"COMMIT");
            let spring = in_batch
                && commit
                && trap
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if spring {
                held.store(true, Ordering::SeqCst);
            }
            if to_server.write_all(chunk).await.is_err() {
                return;
            }
            if spring {
                sprung.fetch_add(1, Ordering::SeqCst);
                // Time for the server to commit; then the connection goes, answer unsent.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            in_batch &= !commit;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            thawed(&ice).await;
            if !hold.load(Ordering::SeqCst) && to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = cut.changed() => {}
    }
}

impl PgProxy {
    async fn start(target: String) -> PgProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let proxy = PgProxy {
            port: listener.local_addr().unwrap().port(),
            target,
            listening: Mutex::new(None),
            frozen: Arc::new(AtomicBool::new(false)),
            cut,
            trap: Arc::new(AtomicBool::new(false)),
            sprung: Arc::new(AtomicU64::new(0)),
        };
        proxy.serve(listener);
        proxy
    }

    /// Accepts connections on `listener` until [`PgProxy::fail`] closes it.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let cuts = self.cut.clone();
        let target = self.target.clone();
        let shared = (
            Arc::clone(&self.trap),
            Arc::clone(&self.sprung),
            Arc::clone(&self.frozen),
        );
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                let (target, shared) = (target.clone(), shared.clone());
                tokio::spawn(async move {
                    // A partition: the connection is taken and never answered until the end.
                    tokio::select! {
                        () = thawed(&shared.2) => {}
                        _ = cut.changed() => return,
                    }
                    if let Ok(outbound) = tokio::net::TcpStream::connect(&target).await {
                        pipe(inbound, outbound, shared, cut).await;
                    }
                });
            }
        });
        *self.listening.lock().unwrap() = Some(task);
    }

    /// Takes PostgreSQL away, the way `how` says.
    fn fail(&self, how: Outage) {
        match how {
            Outage::Cut => {
                // The port closes (new connections are refused) and open ones are cut.
                if let Some(task) = self.listening.lock().unwrap().take() {
                    task.abort();
                }
                self.cut.send_modify(|n| *n += 1);
            }
            Outage::Freeze => self.frozen.store(true, Ordering::SeqCst),
        }
    }

    /// Brings it back; the connections of a partition are gone by then (as TCP keepalive or
    /// the server would have ended them), so llmux opens new ones.
    async fn heal(&self) {
        self.cut.send_modify(|n| *n += 1);
        self.frozen.store(false, Ordering::SeqCst);
        if self.listening.lock().unwrap().is_none() {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                .await
                .unwrap();
            self.serve(listener);
        }
    }

    fn lose_next_commit_answer(&self) {
        self.trap.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a `postgres://user@host:port/db?…` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hp = rest.split(['/', '?']).next().unwrap();
    if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:5432")
    }
}

async fn admin(gw: &Llmux, path: &str, body: Value) -> Value {
    let r = client()
        .post(gw.url(&format!("/admin/v1{path}")))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Request id → rows in the call log, read from PostgreSQL directly.
async fn call_log(url: &str) -> HashMap<String, i64> {
    use sqlx::Connection as _;
    let Ok(mut c) = sqlx::PgConnection::connect(url).await else {
        return HashMap::new();
    };
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT request_id, COUNT(*) FROM call_log GROUP BY request_id")
            .fetch_all(&mut c)
            .await
            .unwrap_or_default();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_and_back_every_completed_call_is_logged_exactly_once() {
    postgres_outage(Outage::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partitioned_and_back_calls_do_not_hang_and_are_logged_exactly_once() {
    postgres_outage(Outage::Freeze).await;
}

async fn postgres_outage(how: Outage) {
    let mock = llmux_mock::MockServer::start(node("n1", &["m1"]))
        .await
        .unwrap();
    let body = format!(
        "[auth]\nrequired = true\n[health]\ninterval = \"2s\"\n[[upstreams]]\nname = \"n1\"\nkind = \"ollama\"\nurl = \"{}\"\nmodels = [\"m1\"]\n[[pricing]]\nmodel = \"m1\"\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\n",
        mock.url()
    );
    // The first instance migrates the schema directly; the three under test reach PostgreSQL
    // through the proxy only.
    let Some(mut c) = TestCluster::start(Spec::new(1, &body)).await else {
        return;
    };
    let proxy = PgProxy::start(host_port(&c.pg.url)).await;
    let via_proxy = c.pg.url.replacen(
        &host_port(&c.pg.url),
        &format!("127.0.0.1:{}", proxy.port),
        1,
    );
    for _ in 0..3 {
        let n = Llmux::start_opts(Opts {
            body: c.body.clone(),
            admin_extra: "allow_private_upstreams = true".into(),
            store_url: Some(via_proxy.clone()),
            env: vec![("LLMUX_MASTER_KEY".into(), MASTER_KEY.into())],
            ..Opts::default()
        });
        c.nodes.push(n);
    }
    c.kill9(0);
    let nodes = &c.nodes;
    admin(
        &nodes[0],
        "/apps",
        json!({"name": "team", "credits": 1000.0}),
    )
    .await;
    let key = admin(&nodes[0], "/keys", json!({"name": "k", "app": "team"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let addrs = addrs(nodes);

    // Before: every instance has seen the key and the app.
    let before = load_for(&addrs, Some(&key), Duration::from_secs(2)).await;
    assert!(before.failed().is_empty(), "{:?}", before.failed());

    proxy.fail(how);
    let cut_at = Instant::now();
    // Longer than the key cache's 10 s: the key is then served from its last known state.
    let during = load_for(&addrs, Some(&key), Duration::from_secs(12)).await;
    // A key never seen gets a quick 503 in the caller's dialect, not a hang or a 401.
    let unknown = format!("sk-llmux-neverissued01-{}", "x".repeat(40));
    let asked = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", addrs[1]))
        .bearer_auth(&unknown)
        .json(&chat("m1", false))
        .send()
        .await
        .unwrap();
    let unknown_ms = asked.elapsed().as_millis();
    let unknown_status = r.status().as_u16();
    let unknown_body: Value = r.json().await.unwrap_or(Value::Null);
    let outage = cut_at.elapsed();
    // The first batch written when the store is back commits, but its answer is lost.
    proxy.lose_next_commit_answer();
    proxy.heal().await;
    let slowest = during.slowest_ms.load(Ordering::Relaxed);
    println!(
        "postgres outage ({how:?}): {:.1} s; {} calls succeeded, {} failed, slowest {slowest} ms; unknown key: {unknown_status} in {unknown_ms} ms",
        outage.as_secs_f64(),
        during.ok.load(Ordering::Relaxed),
        during.failed().len()
    );
    assert!(during.failed().is_empty(), "{:?}", during.failed());
    assert!(during.ok.load(Ordering::Relaxed) >= 60);
    assert!(slowest < 3000, "a call waited {slowest} ms on the store");
    assert_eq!(unknown_status, 503, "{unknown_body}");
    assert!(unknown_ms < 3000, "{unknown_ms} ms");
    assert!(
        unknown_body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot check the API key"),
        "{unknown_body}"
    );

    let mut made: Vec<String> = Vec::new();
    for t in [&before, &during] {
        made.extend(t.ids.lock().unwrap().iter().cloned());
    }
    // Calls go on while the records that waited are written.
    let stop = Arc::new(AtomicBool::new(false));
    let after = tokio::spawn(load(addrs.clone(), Some(key.clone()), Arc::clone(&stop)));
    let caught_up = time_until(Duration::from_secs(40), async || {
        let log = call_log(&c.pg.url).await;
        made.iter().all(|id| log.contains_key(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let after = after.await.unwrap();
    assert!(after.failed().is_empty(), "{:?}", after.failed());
    made.extend(after.ids.lock().unwrap().iter().cloned());
    let settled = time_until(Duration::from_secs(20), async || {
        let log = call_log(&c.pg.url).await;
        made.iter().all(|id| log.contains_key(id))
    })
    .await;
    let log = call_log(&c.pg.url).await;
    let recorded = made.iter().filter(|id| log.contains_key(*id)).count();
    let lost = made.len() - recorded;
    let duplicates = log.values().filter(|n| **n > 1).count();
    let sprung = proxy.sprung.load(Ordering::SeqCst);
    println!(
        "call log after the outage ({how:?}): calls made {} / recorded {recorded} / duplicates {duplicates} / lost {lost}; \
         the records of the outage all written {caught_up:?} after the store came back; \
         batches committed with their answer lost (and written again): {sprung}",
        made.len(),
    );
    assert!(caught_up.is_some(), "records of the outage still missing");
    assert!(settled.is_some(), "records still missing: {lost}");
    assert!(
        caught_up.is_some_and(|t| t < Duration::from_secs(5)),
        "{caught_up:?}"
    );
    assert_eq!(sprung, 1, "the lost-answer trap never caught a batch");
    assert_eq!(lost, 0);
    assert_eq!(duplicates, 0, "request ids logged more than once");
    let mut unique = made.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        made.len(),
        "the gateway gave two calls one id"
    );
    // The writer logs the outage once when it starts and once when it ends, not at each of
    // its retries (the instance whose answer was lost saw a second, short one).
    let mut logged = 0;
    for (i, n) in nodes.iter().enumerate() {
        let log = n.log_text();
        let down = count(&log, "call log: the store is unavailable");
        assert!(down <= 2, "instance {i}: {log}");
        assert_eq!(
            down,
            count(&log, "call log: the store is back"),
            "instance {i}"
        );
        logged += down;
    }
    assert!(logged >= 1, "no instance logged the outage");
}

//! The instance registry (`GET /admin/v1/cluster`): three instances each list all three, live,
//! with one prober; one killed with SIGKILL is marked lost after three heartbeats (and still
//! listed); one stopped cleanly leaves the list. And `rediss://`: a cluster on a Redis that
//! speaks only TLS shares its registry and its limits through it.

use crate::common::cluster::{time_until, OwnRedis, Spec, TestCluster, MASTER_KEY};
use crate::common::{client, Llmux, Opts, ADMIN};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the prober part is on this branch: with it exactly one instance probes; without a
/// coordinator every instance probes for itself and says so.
async fn cluster_view(node: &Llmux) -> Value {
    let resp = client()
        .get(node.url("/admin/v1/cluster"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// `(id, state)` of every instance `node` lists.
async fn states(node: &Llmux) -> Vec<(String, String)> {
    let v = cluster_view(node).await;
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until every node lists exactly `ids`, all live.
async fn all_list(c: &TestCluster, ids: &[String], limit: Duration) -> Option<Duration> {
    time_until(limit, || async {
        for node in &c.nodes {
            let mut seen = states(node).await;
            seen.sort();
            let mut want: Vec<(String, String)> = ids
                .iter()
                .map(|i| (i.clone(), "live".to_string()))
                .collect();
            want.sort();
            if seen != want {
                return false;
            }
        }
        true
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_listed_by_each_then_one_lost_after_three_heartbeats() {
    let Some(mut c) = TestCluster::start(Spec::new(3, "")).await else {
        return;
    };
    let mut ids = Vec::new();
    for node in &c.nodes {
        let v = cluster_view(node).await;
        assert_eq!(v["mode"], "cluster", "{v}");
        ids.push(v["instance"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct ids: {ids:?}");
    let took = all_list(&c, &ids, Duration::from_secs(5)).await;
    println!("registry: all 3 instances listed live by each of the 3 after {took:?}");
    assert!(took.is_some(), "each instance lists all three, live");

    // The prober lease is claimed just after an instance's first registry record is written,
    // so the flag shows from the next heartbeat on: within a few, every view has one prober.
    let one_prober = time_until(Duration::from_secs(3), || async {
        for node in &c.nodes {
            let v = cluster_view(node).await;
            let rows = v["instances"].as_array().cloned().unwrap_or_default();
            if rows.iter().filter(|r| r["prober"] == true).count() != 1 {
                return false;
            }
        }
        true
    })
    .await;
    println!("registry: every view shows exactly one prober after {one_prober:?}");
    assert!(one_prober.is_some(), "one prober in every view");

    // Every row, as each instance sees it: the documented fields, and one prober.
    for node in &c.nodes {
        let v = cluster_view(node).await;
        let rows = v["instances"].as_array().unwrap();
        for r in rows {
            for f in [
                "id",
                "address",
                "version",
                "started",
                "last_heartbeat",
                "state",
            ] {
                assert!(r[f].is_string(), "{f} in {r}");
            }
            assert!(
                r["in_flight"].is_u64() && r["calls_per_s"].is_number() && r["prober"].is_boolean(),
                "{r}"
            );
            assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
        }
        let addresses: Vec<String> = c.nodes.iter().map(|n| n.addr.to_string()).collect();
        let me = rows.iter().find(|r| r["id"] == v["instance"]).unwrap();
        assert_eq!(me["address"], node.addr.to_string());
        assert!(
            rows.iter()
                .all(|r| addresses.contains(&r["address"].as_str().unwrap().to_string())),
            "{v}"
        );
        let probers = rows.iter().filter(|r| r["prober"] == true).count();
        println!("registry: {} lists {probers} prober(s)", node.addr);
        assert_eq!(probers, 1, "{v}");
    }

    // SIGKILL one: no clean stop, so its record stays until three heartbeats (1.5 s) pass.
    let victim = cluster_view(&c.nodes[2]).await["instance"]
        .as_str()
        .unwrap()
        .to_string();
    c.kill9(2);
    let lost = time_until(Duration::from_secs(10), || async {
        for node in &c.nodes {
            if !states(node)
                .await
                .contains(&(victim.clone(), "lost".to_string()))
            {
                return false;
            }
        }
        true
    })
    .await;
    println!(
        "registry: instance killed with SIGKILL marked lost by both others after {lost:?} (heartbeat 500 ms: bound 3 heartbeats + 1 heartbeat + 500 ms)"
    );
    let lost = lost.expect("the killed instance is marked lost");
    assert!(lost <= Duration::from_millis(2500), "{lost:?}");
    // Not before three heartbeats have passed since its last one (which was at most one
    // heartbeat before the kill).
    assert!(lost >= Duration::from_millis(1000), "{lost:?}");

    // A clean stop (SIGTERM) takes the instance off the list at once.
    let leaving = cluster_view(&c.nodes[1]).await["instance"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = c.nodes[1].child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let gone = time_until(Duration::from_secs(10), || async {
        !states(&c.nodes[0])
            .await
            .iter()
            .any(|(id, _)| *id == leaving)
    })
    .await;
    println!("registry: instance stopped with SIGTERM gone from the list after {gone:?}");
    assert!(gone.is_some());
    let left = states(&c.nodes[0]).await;
    assert!(left.contains(&(victim, "lost".to_string())), "{left:?}");
}

/// A `redis-server` that speaks only TLS, with a certificate made for the test (openssl CLI).
struct TlsRedis {
    port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    /// `None` (printed) when openssl or a TLS-capable redis-server is missing.
    fn start() -> Option<TlsRedis> {
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f).display().to_string();
        // A CA, and a server certificate for 127.0.0.1 that it signs (rustls refuses a CA
        // certificate used as the server's own).
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=llmux-test-ca",
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &p("key.pem"),
                "-out",
                &p("server.csr"),
            ],
            &[
                "x509",
                "-req",
                "-in",
                &p("server.csr"),
                "-CA",
                &p("ca.pem"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &p("ext.cnf"),
                "-out",
                &p("cert.pem"),
            ],
        ];
        for args in steps {
            let made = Command::new("openssl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(made, Ok(s) if s.success()) {
                eprintln!(
                    "note: openssl {args:?} failed (no openssl CLI?): skipping the rediss:// test"
                );
                return None;
            }
        }
        for attempt in 0..10u16 {
            let port = 21000 + (std::process::id() as u16 % 9000) + attempt * 7;
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args([
                    "--tls-cert-file",
                    &p("cert.pem"),
                    "--tls-key-file",
                    &p("key.pem"),
                ])
                .args([
                    "--tls-ca-cert-file",
                    &p("cert.pem"),
                    "--tls-auth-clients",
                    "no",
                ])
                .args(["--save", "", "--appendonly", "no", "--dir", &p("")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken, or a build without TLS
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(TlsRedis { port, child, dir });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        eprintln!("note: redis-server did not start with --tls-port: skipping the rediss:// test");
        None
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_a_tls_only_redis_shares_its_registry_and_limits() {
    if crate::common::cluster::servers().is_none() {
        return;
    }
    let Some(tls) = TlsRedis::start() else { return };
    let mut spec = Spec::new(2, "");
    spec.redis_url = Some(format!("rediss://127.0.0.1:{}", tls.port));
    // Three calls a minute for the whole cluster: counted in the TLS Redis or not at all.
    spec.limits_extra = "global = \"3/min\"\nfail_open = false\n".to_string();
    // The test's own CA, through the variable rustls-native-certs reads.
    spec.env = vec![("SSL_CERT_FILE".to_string(), tls.ca())];
    let Some(c) = TestCluster::start(spec).await else {
        return;
    };
    let mut ids: Vec<String> = Vec::new();
    for node in &c.nodes {
        ids.push(
            cluster_view(node).await["instance"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let took = all_list(&c, &ids, Duration::from_secs(5)).await;
    println!("rediss://: both instances listed by each other through TLS after {took:?}");
    assert!(took.is_some(), "{}", c.nodes[0].log_text());
    // Alternating instances: two calls each would pass limits counted per instance; the
    // shared limit refuses the fourth.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = client()
            .post(c.nodes[i % 2].url("/v1/chat/completions"))
            .json(&crate::common::chat("nothing-serves-this", false))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    println!("rediss://: statuses of 4 calls across 2 instances under a 3/min global limit: {statuses:?}");
    assert!(statuses[..3].iter().all(|s| *s != 429), "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    for node in &c.nodes {
        assert!(
            !node.log_text().contains("Redis unreachable"),
            "{}",
            node.log_text()
        );
    }
    // The certificate is checked: an instance without the CA cannot join.
    let stranger = Llmux::start_opts(Opts {
        body: c.body.clone(),
        store_url: Some(c.pg.url.clone()),
        env: vec![("LLMUX_MASTER_KEY".into(), MASTER_KEY.into())],
        ..Opts::default()
    });
    let refused = time_until(Duration::from_secs(5), || async {
        stranger.log_text().contains("invalid peer certificate")
    })
    .await;
    assert!(refused.is_some(), "{}", stranger.log_text());
    assert_eq!(states(&c.nodes[0]).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_the_list_answers_at_once_with_this_instance_and_recovers() {
    let Some(mut redis) = OwnRedis::start() else {
        eprintln!("note: no redis-server: skipping");
        return;
    };
    let mut spec = Spec::new(2, "");
    spec.redis_url = Some(redis.url());
    let Some(c) = TestCluster::start(spec).await else {
        return;
    };
    let mut ids: Vec<String> = Vec::new();
    for node in &c.nodes {
        ids.push(
            cluster_view(node).await["instance"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(all_list(&c, &ids, Duration::from_secs(5)).await.is_some());

    redis.stop();
    let asked = Instant::now();
    let v = cluster_view(&c.nodes[0]).await;
    let took = asked.elapsed();
    println!("registry: with Redis stopped, /admin/v1/cluster answered in {took:?}: {v}");
    // Every Redis call is bounded (2 × 200 ms): the route never hangs on an outage.
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(
        v["warning"].as_str().unwrap().contains("Redis unreachable"),
        "{v}"
    );
    let rows = v["instances"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["id"], v["instance"]);
    assert_eq!(rows[0]["state"], "live");

    // Back (empty): the next heartbeats write the records again.
    redis.restart();
    let back = all_list(&c, &ids, Duration::from_secs(10)).await;
    println!("registry: Redis restarted empty; both instances listed again after {back:?}");
    assert!(back.is_some());
    assert!(cluster_view(&c.nodes[0]).await.get("warning").is_none());
}

/// The row of instance `id` as `node` lists it.
async fn row(node: &Llmux, id: &str) -> Option<Value> {
    let v = cluster_view(node).await;
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_calls_and_calls_per_second_of_one_instance_are_seen_by_another() {
    // Each reply takes about 1.5 s: long enough for a heartbeat to catch the calls in flight.
    let up = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        ttft: Duration::from_millis(1500),
        ..crate::common::node("gpu", &["llama3:latest"])
    })
    .await
    .unwrap();
    let body = crate::common::ollama("gpu", &up.url());
    let Some(c) = TestCluster::start(Spec::new(2, &body)).await else {
        return;
    };
    let a = cluster_view(&c.nodes[0]).await["instance"]
        .as_str()
        .unwrap()
        .to_string();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = c.nodes[0].url("/v1/chat/completions");
            tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .json(&crate::common::chat("llama3", false))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    let seen = time_until(Duration::from_secs(5), || async {
        row(&c.nodes[1], &a)
            .await
            .is_some_and(|r| r["in_flight"] == 4)
    })
    .await;
    println!("registry: 4 calls in flight on A seen by B after {seen:?}");
    assert!(seen.is_some());
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    // The heartbeat after the calls ended: none in flight, and 4 calls over one interval.
    let peak = std::sync::Mutex::new(0.0_f64);
    let settled = time_until(Duration::from_secs(5), || async {
        let r = row(&c.nodes[1], &a).await.unwrap();
        let mut peak = peak.lock().unwrap();
        *peak = r["calls_per_s"].as_f64().unwrap().max(*peak);
        r["in_flight"] == 0 && *peak > 0.0
    })
    .await;
    let rate = *peak.lock().unwrap();
    println!("registry: after the calls, A's calls/s as B sees it peaked at {rate} (4 calls, heartbeat 500 ms)");
    assert!(settled.is_some());
    // 4 calls finished within one or two heartbeat intervals of 0.5 s: 4 to 8 calls/s.
    assert!((3.5..=8.5).contains(&rate), "{rate}");
}

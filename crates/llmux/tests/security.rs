//! End-to-end: the security properties of the real binary — admin sessions end with the
//! password, sign-in is rate-limited and cannot starve the process, the admin API does not
//! depend on the rate-limit backend, and an unreachable store fails the start fast.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn admin(gw: &Llmux, method: &str, path: &str, token: &str, body: Option<Value>) -> u16 {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(&format!("/admin/v1{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn login(gw: &Llmux, user: &str, password: &str) -> (u16, Value) {
    let r = client()
        .post(gw.url("/admin/v1/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn create_user(gw: &Llmux, user: &str, password: &str) {
    let s = admin(
        gw,
        "POST",
        "/users",
        ADMIN,
        Some(json!({"username": user, "password": password, "role": "admin"})),
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_the_password_changes_or_the_user_is_replaced() {
    let gw = Llmux::start("");
    create_user(&gw, "ann", "first password").await;
    let (s, v) = login(&gw, "ann", "first password").await;
    assert_eq!(s, 200, "{v}");
    let old = v["token"].as_str().unwrap().to_string();
    assert_eq!(admin(&gw, "GET", "/apps", &old, None).await, 200);

    // A new password ends the sessions opened with the old one, at once.
    let s = admin(
        &gw,
        "PATCH",
        "/users/ann",
        ADMIN,
        Some(json!({"password": "second password"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(admin(&gw, "GET", "/apps", &old, None).await, 401);
    let (_, v) = login(&gw, "ann", "second password").await;
    let current = v["token"].as_str().unwrap().to_string();
    assert_eq!(admin(&gw, "GET", "/apps", &current, None).await, 200);

    // So does a role change.
    let s = admin(
        &gw,
        "PATCH",
        "/users/ann",
        ADMIN,
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(admin(&gw, "GET", "/apps", &current, None).await, 401);
    let (_, v) = login(&gw, "ann", "second password").await;
    let viewer = v["token"].as_str().unwrap().to_string();

    // A user deleted and created again under the same name and password is someone else.
    assert_eq!(admin(&gw, "DELETE", "/users/ann", ADMIN, None).await, 204);
    let s = admin(
        &gw,
        "POST",
        "/users",
        ADMIN,
        Some(json!({"username": "ann", "password": "second password", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(admin(&gw, "GET", "/apps", &viewer, None).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_failures_are_limited_per_user_with_retry_after() {
    let gw = Llmux::start("");
    create_user(&gw, "bob", "right password").await;
    for _ in 0..10 {
        assert_eq!(login(&gw, "bob", "wrong password").await.0, 401);
    }
    let r = client()
        .post(gw.url("/admin/v1/login"))
        .json(&json!({"username": "bob", "password": "right password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "even the right password waits");
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another user is not affected; this address has made 12 attempts of its 30.
    create_user(&gw, "carl", "right password").await;
    assert_eq!(login(&gw, "carl", "right password").await.0, 200);
}

/// Resident set size of process `pid` now and at its peak, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Median of sequential data-plane calls over `window`, in ms.
async fn data_plane_p50(gw: &Llmux, window: Duration) -> f64 {
    let http = client();
    let mut samples = Vec::new();
    let until = Instant::now() + window;
    while Instant::now() < until || samples.len() < 5 {
        let started = Instant::now();
        let r = http
            .post(gw.url("/v1/chat/completions"))
            .json(&chat("llama3", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// 256 parallel sign-ins, each from its own (forwarded) address so that the per-IP limit does
/// not absorb them: password hashing is bounded, so memory stays flat and the data plane keeps
/// its latency. Prints the figures (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_neither_grows_memory_nor_slows_the_data_plane() {
    let node = llmux_mock::MockServer::start(node("gpu", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "{}[limits]\ntrust_forwarded_for = true\n",
        ollama("gpu", &node.url())
    ));
    create_user(&gw, "dora", "right password").await;
    let pid = gw.child.id();
    let idle_p50 = data_plane_p50(&gw, Duration::from_secs(2)).await;
    let (rss_before, _) = rss_mib(pid);

    // Unoptimized argon2 (a debug build) is slow: the queued sign-ins take a while.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let flood: Vec<_> = (0..256u32)
        .map(|i| {
            let url = gw.url("/admin/v1/login");
            let http = http.clone();
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("x-forwarded-for", format!("198.51.{}.{}", i / 250, i % 250))
                    .json(&json!({"username": format!("user{i}"), "password": "guess"}))
                    .send()
                    .await;
                r.map_or(0, |r| r.status().as_u16())
            })
        })
        .collect();
    let flood_p50 = data_plane_p50(&gw, Duration::from_secs(2)).await;
    let mut statuses = std::collections::BTreeMap::new();
    for f in flood {
        *statuses.entry(f.await.unwrap()).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    let (rss_after, rss_peak) = rss_mib(pid);
    eprintln!(
        "login flood: statuses {statuses:?} in {elapsed:?}; RSS {rss_before} MiB before, \
         {rss_after} MiB after, peak {rss_peak} MiB; data-plane p50 {idle_p50:.2} ms idle, \
         {flood_p50:.2} ms during the flood"
    );
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "the hashing queue turned some away: {statuses:?}"
    );
    assert!(rss_peak < 400, "peak RSS {rss_peak} MiB");
    assert!(
        flood_p50 < idle_p50 * 10.0 + 50.0,
        "data-plane p50 {flood_p50:.2} ms during the flood, {idle_p50:.2} ms idle"
    );
    // And sign-in works again right after.
    assert_eq!(login(&gw, "dora", "right password").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_and_probes_work_while_the_limit_backend_is_down() {
    let node = llmux_mock::MockServer::start(node("gpu", &["llama3:latest"]))
        .await
        .unwrap();
    // Nothing listens on port 1: every rate-limit check fails, and fail_open = false refuses.
    let gw = Llmux::start(&format!(
        "{}[limits]\nip = \"100/min\"\nglobal = \"1000/s\"\nbackend = \"redis\"\n\
         redis_url = \"redis://127.0.0.1:1\"\nfail_open = false\n",
        ollama("gpu", &node.url())
    ));
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("llama3", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the data plane fails closed");
    assert_eq!(admin(&gw, "GET", "/upstreams", ADMIN, None).await, 200);
    create_user(&gw, "eve", "right password").await;
    assert_eq!(login(&gw, "eve", "right password").await.0, 200);
    for path in ["/healthz", "/metrics"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_the_start_fast_without_binding_the_port() {
    // A "database" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_port = silent.local_addr().unwrap().port();
    // The port to serve on is held by this test all along: binding it would fail at once, so
    // llmux ending with the store's error (not a bind error) shows it never tried.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llmux.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\n[store]\nurl = \"postgres://llmux:pw@127.0.0.1:{db_port}/llmux\"\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll_until(Duration::from_secs(20), async || child.try_wait().unwrap()).await;
    let Some(status) = exited else {
        let _ = child.kill();
        panic!("llmux still waits for the store after 20 s");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        !err.contains("cannot listen") && !err.contains("in use"),
        "the port was bound before the store was ready: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(12), "{err}");
    assert!(
        err.contains(&format!("PostgreSQL at 127.0.0.1:{db_port}")),
        "{err}"
    );
    assert!(!err.contains(":pw@"), "{err}");
    drop((silent, held));
}

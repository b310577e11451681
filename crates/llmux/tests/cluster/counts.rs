//! Items 4 and 5 of cluster mode: in-flight counts shared for `least_active` (and gone within
//! the lease once an instance is killed), one key-concurrency limit across the instances, and
//! credits that three instances cannot together overspend.

use crate::common::cluster::{time_until, Spec, TestCluster};
use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A virtual key of a new app `app` (`app_fields` added to the app), with `limits`.
async fn key_for(gw: &Llmux, app: &str, app_fields: Value, limits: Value) -> String {
    let mut body = json!({ "name": app });
    if let (Some(b), Some(extra)) = (body.as_object_mut(), app_fields.as_object()) {
        b.extend(extra.clone());
    }
    let (s, a) = admin(gw, "POST", "/apps", Some(body)).await;
    assert_eq!(s, 201, "{a}");
    let (s, k) = admin(
        gw,
        "POST",
        "/keys",
        Some(json!({ "name": format!("{app}-key"), "app": app, "limits": limits })),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    k["key"].as_str().unwrap().to_string()
}

async fn post(gw: &Llmux, key: Option<&str>, model: &str) -> reqwest::Response {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(model, false));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// `remote_active_requests` of upstream `name` as instance `gw` sees it.
async fn remote_active(gw: &Llmux, name: &str) -> u64 {
    gw.upstreams()
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .and_then(|u| u["remote_active_requests"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_concurrency_five_admits_five_across_three_instances() {
    let mut cfg = node("slow", &["llama3:latest"]);
    cfg.ttft = Duration::from_secs(3);
    let slow = llmux_mock::MockServer::start(cfg).await.unwrap();
    let body = format!("[auth]\nrequired = true\n{}", ollama("slow", &slow.url()));
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let key = key_for(&c.nodes[0], "five", json!({}), json!({ "concurrency": 5 })).await;
    // 15 calls at once, five on each instance.
    let calls: Vec<_> = (0..15)
        .map(|i| {
            let (url, key) = (c.nodes[i % 3].url("/v1/chat/completions"), key.clone());
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(key)
                    .json(&chat("llama3", false))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "key concurrency 5, 15 simultaneous calls over 3 instances: {admitted} admitted, {refused} refused (429)"
    );
    assert_eq!((admitted, refused), (5, 10), "{statuses:?}");
    // Every slot is given back (the releases reach Redis off the call path): five more fit,
    // wherever they land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again: Vec<_> = (0..5)
        .map(|i| {
            let (url, key) = (c.nodes[i % 3].url("/v1/chat/completions"), key.clone());
            tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .bearer_auth(key)
                    .json(&chat("llama3", false))
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            })
        })
        .collect();
    for call in again {
        assert_eq!(call.await.unwrap(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_active_sees_other_instances_calls_until_a_killed_one_is_gone() {
    let mut cfg = node("busy", &["llama3:latest"]);
    cfg.ttft = Duration::from_secs(60);
    let busy = llmux_mock::MockServer::start(cfg).await.unwrap();
    let idle = llmux_mock::MockServer::start(node("idle", &["llama3:latest"]))
        .await
        .unwrap();
    let body = format!(
        "[routing]\nstrategy = \"least_active\"\n{}{}",
        ollama("busy", &busy.url()),
        ollama("idle", &idle.url())
    );
    let Some(mut c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    // Three calls hang on `busy` through A.
    let url = c.nodes[0].url("/v1/chat/completions");
    let hanging: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let _ = client()
                    .post(url)
                    .json(&chat("busy/llama3", false))
                    .send()
                    .await;
            })
        })
        .collect();
    c.nodes[0].wait_in_flight(3).await;
    let seen = time_until(Duration::from_secs(5), || async {
        remote_active(&c.nodes[1], "busy").await == 3
    })
    .await;
    println!("B sees A's 3 in-flight calls after {seen:?}");
    assert!(seen.is_some_and(|t| t < Duration::from_secs(1)), "{seen:?}");
    // Alone, B would alternate between two idle-looking upstreams; it sends every call to
    // the one that is idle cluster-wide.
    for _ in 0..6 {
        let resp = post(&c.nodes[1], None, "llama3").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-llmux-upstream"), "idle");
    }
    // A is killed: its calls stop counting once its lease (3 s here) is over.
    let killed = Instant::now();
    c.kill9(0);
    let gone = time_until(Duration::from_secs(15), || async {
        remote_active(&c.nodes[0], "busy").await == 0
    })
    .await;
    let gone = gone.map(|_| killed.elapsed());
    println!("A killed with SIGKILL: its 3 in-flight calls vanished from B after {gone:?} (lease 3 s, bound 10 s)");
    assert!(
        gone.is_some_and(|t| t <= Duration::from_secs(4)),
        "{gone:?}"
    );
    for h in hanging {
        h.abort();
    }
}

/// The costs of `app`'s calls in the call log (every page).
async fn costs_of(gw: &Llmux, app: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = admin(
            gw,
            "GET",
            &format!("/calls?app={app}&limit=100&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        out.extend(
            page["calls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["status"] == 200)
                .map(|c| c["cost"].as_f64().unwrap_or(0.0)),
        );
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = next.to_string(),
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_overspend_credits_by_at_most_the_calls_in_flight() {
    let mut cfg = node("paid", &["gpt-4o-mini"]);
    cfg.ttft = Duration::from_millis(150);
    let paid = llmux_mock::MockServer::start(cfg).await.unwrap();
    let body = format!(
        "[auth]\nrequired = true\n{}models = [\"gpt-4o-mini\"]\n\n[[pricing]]\nmodel = \"gpt-4o-mini\"\ninput_per_mtok = 1000.0\noutput_per_mtok = 2000.0\n",
        openai("paid", &paid.url(), "k-paid")
    );
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let balance = 2.0;
    let key = key_for(
        &c.nodes[0],
        "metered",
        json!({ "credits": balance }),
        json!({}),
    )
    .await;
    // Two callers per instance, each calling until it is refused for credit.
    let workers = 6;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (url, key) = (c.nodes[i % 3].url("/v1/chat/completions"), key.clone());
            tokio::spawn(async move {
                let mut ok = 0u32;
                for _ in 0..500 {
                    let resp = client()
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&chat("gpt-4o-mini", false))
                        .send()
                        .await
                        .unwrap();
                    match resp.status().as_u16() {
                        200 => ok += 1,
                        429 => return ok,
                        s => panic!("unexpected status {s}: {}", resp.text().await.unwrap()),
                    }
                }
                ok
            })
        })
        .collect();
    let mut served = 0;
    for t in tasks {
        served += t.await.unwrap();
    }
    println!(
        "credits: {served} calls served over 3 instances in {:?}",
        started.elapsed()
    );
    // Every served call is written (once) before the spending is measured.
    let costs = time_until(Duration::from_secs(15), || async {
        costs_of(&c.nodes[1], "metered").await.len() == served as usize
    })
    .await;
    assert!(
        costs.is_some(),
        "the call log lacks some of the {served} served calls"
    );
    let costs = costs_of(&c.nodes[1], "metered").await;
    let spent: f64 = costs.iter().sum();
    let max_cost = costs.iter().cloned().fold(0.0, f64::max);
    let (_, app) = admin(&c.nodes[2], "GET", "/apps/metered", None).await;
    let left = app["credits"].as_f64().unwrap();
    assert!(
        (balance - spent - left).abs() < 1e-6,
        "the balance ({left}) is the credits minus the call log's costs ({spent})"
    );
    let overspend = (spent - balance).max(0.0);
    // At most one call per caller was in flight when the balance ran out.
    let bound = workers as f64 * max_cost;
    println!(
        "credits: balance {balance:.4} USD, spent {spent:.4} USD over {} calls (each ≤ {max_cost:.4}): overspend {overspend:.4} USD, bound {bound:.4} USD ({workers} calls in flight at most)",
        costs.len()
    );
    assert!(spent > balance * 0.5, "the balance was used: {spent}");
    assert!(overspend <= bound + 1e-9, "overspend {overspend} > {bound}");
}

/// `n` calls of `key` at once, spread over the instances; how many were admitted (200) and
/// refused (429).
async fn burst(c: &TestCluster, key: &str, n: usize) -> (usize, usize) {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (url, key) = (
                c.nodes[i % c.nodes.len()].url("/v1/chat/completions"),
                key.to_string(),
            );
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(key)
                    .json(&chat("llama3", false))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, n, "{statuses:?}");
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_slots_are_put_back_after_a_redis_restart() {
    let Some(mut redis) = crate::common::cluster::OwnRedis::start() else {
        eprintln!("note: redis-server is not installed: skipping");
        return;
    };
    let mut cfg = node("slow", &["llama3:latest"]);
    cfg.ttft = Duration::from_secs(8);
    let slow = llmux_mock::MockServer::start(cfg).await.unwrap();
    let body = format!("[auth]\nrequired = true\n{}", ollama("slow", &slow.url()));
    let mut spec = Spec::new(3, &body);
    spec.redis_url = Some(redis.url());
    let Some(c) = TestCluster::start(spec).await else {
        return;
    };
    let key = key_for(&c.nodes[0], "kept", json!({}), json!({ "concurrency": 5 })).await;
    // Three slots held, one on each instance.
    let held: Vec<_> = (0..3)
        .map(|i| {
            let (url, key) = (c.nodes[i].url("/v1/chat/completions"), key.clone());
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(key)
                    .json(&chat("llama3", false))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for node in &c.nodes {
        node.wait_in_flight(1).await;
    }
    // Redis comes back empty: each instance writes its held slots back at its next heartbeat.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (ok, refused) = burst(&c, &key, 5).await;
    println!("after a Redis restart with 3 slots held: 5 more calls → {ok} admitted, {refused} refused (limit 5)");
    assert_eq!((ok, refused), (2, 3));
    for h in held {
        assert_eq!(h.await.unwrap().unwrap(), 200);
    }
}

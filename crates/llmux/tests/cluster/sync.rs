//! See main.rs. Item 1 of docs/cluster.md: an admin change made on instance A is live on B and
//! C within 1 s (PostgreSQL LISTEN/NOTIFY), and a change that was never notified is picked up
//! by the periodic re-read of the change counter.

use std::time::{Duration, Instant};

use llmux_mock::MockServer;
use serde_json::json;

use crate::common::cluster::{Spec, TestCluster};
use crate::common::{admin, chat, client, node, ollama, Llmux};

/// The bound for a change to reach the other instances.
const BOUND: Duration = Duration::from_secs(1);
/// How long a check polls before it fails (well past the bound, to print the real figure).
const LIMIT: Duration = Duration::from_secs(10);

/// A chat call with virtual key `key`: its status.
async fn call(n: &Llmux, key: &str, model: &str) -> u16 {
    let resp = client()
        .post(n.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

async fn strategy(n: &Llmux) -> String {
    let (_, v) = admin(n, "GET", "/routing", None).await;
    v["strategy"].as_str().unwrap_or_default().to_string()
}

/// Where the price in force for `model` comes from (`default`, `file` or `api`).
async fn price_source(n: &Llmux, model: &str) -> String {
    let (_, v) = admin(n, "GET", "/pricing", None).await;
    v.as_array()
        .into_iter()
        .flatten()
        .find(|p| p["model"] == model)
        .and_then(|p| p["source"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn login(n: &Llmux, username: &str, password: &str) -> u16 {
    client()
        .post(n.url("/admin/v1/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `$check` (with `$n` bound to each of `$nodes`) every 10 ms until it holds on all of
/// them; prints and returns how long that took, and asserts it is within `$bound`.
macro_rules! seen {
    ($nodes:expr, $bound:expr, $what:expr, |$n:ident| $check:expr) => {{
        let start = Instant::now();
        loop {
            let mut all = true;
            for $n in $nodes {
                if !$check {
                    all = false;
                    break;
                }
            }
            if all {
                break;
            }
            assert!(
                start.elapsed() < LIMIT,
                "{}: not seen after {LIMIT:?}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = start.elapsed();
        println!(
            "sync: {:<44} seen after {:>4} ms (bound {} ms)",
            $what,
            took.as_millis(),
            $bound.as_millis()
        );
        assert!(
            took < $bound,
            "{}: took {took:?}, bound {:?}",
            $what,
            $bound
        );
        took
    }};
}

fn body(base: &MockServer) -> String {
    format!(
        "[auth]\nrequired = true\n[health]\ninterval = \"60s\"\n{}\n[[pricing]]\nmodel = \"gpt-extra\"\ninput_per_mtok = 1000.0\noutput_per_mtok = 2000.0\n",
        ollama("base", &base.url())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_change_on_a_is_live_on_b_and_c_within_a_second() {
    let base = MockServer::start(node("base", &["llama3"])).await.unwrap();
    let extra = MockServer::start(node("extra", &["gpt-extra"]))
        .await
        .unwrap();
    let Some(c) = TestCluster::start(Spec::new(3, &body(&base))).await else {
        return;
    };
    let a = &c.nodes[0];
    let bc = &c.nodes[1..3];
    let mut took = Vec::new();

    // A virtual key created on A works on B and C.
    let (s, _) = admin(a, "POST", "/apps", Some(json!({"name": "team"}))).await;
    assert_eq!(s, 201);
    let (s, k) = admin(
        a,
        "POST",
        "/keys",
        Some(json!({"name": "main", "app": "team"})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    took.push(seen!(bc, BOUND, "virtual key created", |n| call(
        n, &key, "llama3"
    )
    .await
        == 200));

    // An upstream added on A serves on B and C.
    let (s, up) = admin(
        a,
        "POST",
        "/upstreams",
        Some(
            json!({"name": "extra", "kind": "openai", "url": format!("{}/v1", extra.url()),
                    "keys": ["sk-extra"], "models": ["gpt-extra"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{up}");
    took.push(seen!(bc, BOUND, "upstream added", |n| call(
        n,
        &key,
        "gpt-extra"
    )
    .await
        == 200));

    // A model switched off, then on again.
    let (s, m) = admin(
        a,
        "POST",
        "/models",
        Some(json!({"name": "gpt-extra", "upstream": "extra", "enabled": false})),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    took.push(seen!(bc, BOUND, "model disabled", |n| call(
        n,
        &key,
        "gpt-extra"
    )
    .await
        != 200));
    let path = format!("/models/{}", m["id"].as_str().unwrap());
    let (s, _) = admin(a, "PATCH", &path, Some(json!({"enabled": true}))).await;
    assert_eq!(s, 200);
    took.push(seen!(bc, BOUND, "model enabled", |n| call(
        n,
        &key,
        "gpt-extra"
    )
    .await
        == 200));
    let (_, config) = admin(a, "GET", "/config", None).await;
    let before_alias = config["revision"].as_i64().unwrap();

    // An alias.
    let (s, _) = admin(
        a,
        "POST",
        "/aliases",
        Some(json!({"name": "fast", "targets": ["gpt-extra"]})),
    )
    .await;
    assert_eq!(s, 201);
    took.push(seen!(bc, BOUND, "alias added", |n| call(n, &key, "fast")
        .await
        == 200));

    // The routing strategy.
    let (s, _) = admin(
        a,
        "PUT",
        "/routing",
        Some(json!({"strategy": "round_robin"})),
    )
    .await;
    assert_eq!(s, 200);
    took.push(seen!(bc, BOUND, "routing strategy set", |n| strategy(n)
        .await
        == "round_robin"));

    // A price override.
    let price = json!({"input_per_mtok": 7.0, "output_per_mtok": 9.0});
    let (s, _) = admin(a, "PUT", "/pricing/gpt-extra", Some(price)).await;
    assert_eq!(s, 200);
    took.push(seen!(bc, BOUND, "price overridden", |n| price_source(
        n,
        "gpt-extra"
    )
    .await
        == "api"));

    // A second key, used on B and C (so that they cache it), then revoked on A.
    let (_, k2) = admin(
        a,
        "POST",
        "/keys",
        Some(json!({"name": "k2", "app": "team"})),
    )
    .await;
    let key2 = k2["key"].as_str().unwrap().to_string();
    seen!(bc, LIMIT, "second key created", |n| call(
        n, &key2, "llama3"
    )
    .await
        == 200);
    let path = format!("/keys/{}/revoke", k2["id"].as_str().unwrap());
    let (s, _) = admin(a, "POST", &path, None).await;
    assert_eq!(s, 200);
    took.push(seen!(bc, BOUND, "virtual key revoked", |n| call(
        n,
        &key2,
        "gpt-extra"
    )
    .await
        == 401));

    // An app without credit: refused on B and C; a top-up on A admits it again; credits set to
    // zero refuse it again.
    let (s, _) = admin(
        a,
        "POST",
        "/apps",
        Some(json!({"name": "metered", "credits": 0.0})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, k3) = admin(
        a,
        "POST",
        "/keys",
        Some(json!({"name": "k3", "app": "metered"})),
    )
    .await;
    let key3 = k3["key"].as_str().unwrap().to_string();
    seen!(bc, LIMIT, "metered app refused", |n| call(
        n,
        &key3,
        "gpt-extra"
    )
    .await
        == 429);
    let (s, _) = admin(
        a,
        "POST",
        "/apps/metered/credits",
        Some(json!({"add": 100.0})),
    )
    .await;
    assert_eq!(s, 200);
    took.push(seen!(bc, BOUND, "credits topped up", |n| call(
        n,
        &key3,
        "gpt-extra"
    )
    .await
        == 200));
    let (s, _) = admin(a, "PATCH", "/apps/metered", Some(json!({"credits": 0.0}))).await;
    assert_eq!(s, 200);
    took.push(seen!(bc, BOUND, "credits set to zero", |n| call(
        n,
        &key3,
        "gpt-extra"
    )
    .await
        == 429));

    // A user created on A logs in on B and C.
    let user = json!({"username": "ops", "password": "correct-horse-42", "role": "viewer"});
    let (s, _) = admin(a, "POST", "/users", Some(user)).await;
    assert_eq!(s, 201);
    took.push(seen!(bc, BOUND, "user created", |n| admin(
        n, "GET", "/users", None
    )
    .await
    .1
    .to_string()
    .contains("\"ops\"")));
    for n in bc {
        let start = Instant::now();
        assert_eq!(login(n, "ops", "correct-horse-42").await, 200);
        // The password hash (argon2id) takes most of it, not the propagation.
        println!(
            "sync: the user logs in on {} in {} ms",
            n.addr,
            start.elapsed().as_millis()
        );
    }

    // A rollback to the revision before the alias: gone on B and C, the upstream stays.
    let (s, v) = admin(
        a,
        "POST",
        "/config/rollback",
        Some(json!({"revision": before_alias})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    took.push(seen!(bc, BOUND, "rollback", |n| call(n, &key, "fast")
        .await
        != 200
        && call(n, &key, "gpt-extra").await == 200
        && strategy(n).await == "least_active"));

    let worst = took.iter().max().unwrap();
    println!(
        "sync: {} kinds of change, slowest seen on B and C after {} ms (bound 1000 ms)",
        took.len(),
        worst.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_nobody_announced_is_picked_up_by_the_counter_check() {
    let base = MockServer::start(node("base", &["llama3"])).await.unwrap();
    let Some(c) = TestCluster::start(Spec::new(3, &body(&base))).await else {
        return;
    };
    // Every instance has synced once (its listener connected and re-read everything).
    seen!(&c.nodes, LIMIT, "started", |n| strategy(n).await
        == "least_active");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written by hand, as a lost notification would leave it: the row changed and the counter
    // moved, but nobody heard of it.
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&c.pg.url).await.unwrap();
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES ('routing.strategy', '\"weighted\"', 0)",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("UPDATE change_counter SET seq = seq + 1")
        .execute(&mut db)
        .await
        .unwrap();
    // The counter is read every 2 s; re-reading everything takes a little more (1 s of slack
    // for a machine of two busy cores).
    let bound = llmux_admin::sync::RECHECK_EVERY + Duration::from_secs(1);
    seen!(
        &c.nodes,
        bound,
        "unannounced change (all three)",
        |n| strategy(n).await == "weighted"
    );

    // The server cuts every listener's session; a change made on A right then is not lost: the
    // listeners reconnect and re-read.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
    )
    .bind(format!("LISTEN \"llmux_changes_{}\"", c.pg.name))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(killed, 3, "one listener per instance");
    let body = Some(json!({"strategy": "round_robin"}));
    let (s, _) = admin(&c.nodes[0], "PUT", "/routing", body).await;
    assert_eq!(s, 200);
    seen!(
        &c.nodes[1..3],
        BOUND,
        "change while the listeners were cut",
        |n| strategy(n).await == "round_robin"
    );
}

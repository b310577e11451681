//! One prober per cluster, and passive signals shared (#13, items 2 and 3): three instances
//! with a 1 s health interval send one instance's worth of probes to a node; the others show
//! the prober's models and pool states; a prober killed with SIGKILL is replaced within two
//! intervals; a key refused on one instance and a breaker opened on one instance are known to
//! the other two within 1 s.

use std::time::{Duration, Instant};

use llmux_mock::{Faults, KeyRules, MockServer};
use serde_json::Value;

use crate::common::cluster::{time_until, OwnRedis, Spec, TestCluster};
use crate::common::{chat, client, node, ollama, openai, Llmux};

/// `[health]` of these tests: a round every second.
const HEALTH: &str = "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n";

/// Probes (model listings) `mock` received so far.
fn probes(mock: &MockServer, path: &str) -> u64 {
    mock.stats().by_path.get(path).copied().unwrap_or(0)
}

/// The instance id holding the prober lease, if any.
async fn prober_id(c: &TestCluster) -> Option<String> {
    let mut redis = c.redis().await;
    let key = format!("{}:c1:prober", c.prefix);
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<String>>(&mut redis)
        .await
        .unwrap()
}

/// Waits until a prober is elected and every instance has settled (it leads or follows);
/// returns the index of the prober in `c.nodes`.
pub(crate) async fn settled(c: &TestCluster) -> usize {
    let ready = time_until(Duration::from_secs(10), || async {
        let Some(id) = prober_id(c).await else {
            return false;
        };
        c.nodes.iter().all(|n| {
            let log = n.log_text();
            log.contains("cluster: following the prober") || log.contains("is the prober now")
        }) && c.nodes.iter().any(|n| is_instance(n, &id))
    })
    .await;
    assert!(ready.is_some(), "no prober elected within 10 s");
    let id = prober_id(c).await.unwrap();
    c.nodes.iter().position(|n| is_instance(n, &id)).unwrap()
}

/// Whether `n` is the instance `id` (its start-up line names it).
fn is_instance(n: &Llmux, id: &str) -> bool {
    n.log_text()
        .lines()
        .any(|l| l.contains("cluster mode") && l.contains(id))
}

/// `upstream` as instance `n` shows it in `/admin/v1/upstreams`.
pub(crate) async fn upstream(n: &Llmux, upstream: &str) -> Value {
    let all = n.upstreams().await;
    all.as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == upstream)
        .cloned()
        .unwrap_or(Value::Null)
}

/// How long until B and C (every instance but the first) show `name` as `ok` says; `None`
/// past 3 s.
async fn on_followers(
    c: &TestCluster,
    name: &str,
    ok: impl Fn(&Value) -> bool,
) -> Option<Duration> {
    time_until(Duration::from_secs(3), || async {
        for node in &c.nodes[1..] {
            if !ok(&upstream(node, name).await) {
                return false;
            }
        }
        true
    })
    .await
}

#[tokio::test]
async fn one_instance_probes_and_the_others_take_its_results() {
    let a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let b = MockServer::start(node("gpu-b", &["qwen2:7b"]))
        .await
        .unwrap();
    let body = format!(
        "{}{}{HEALTH}",
        ollama("gpu-a", &a.url()),
        ollama("gpu-b", &b.url())
    );
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let prober = settled(&c).await;
    let leaders = c
        .nodes
        .iter()
        .filter(|n| n.log_text().contains("is the prober now"))
        .count();
    assert_eq!(leaders, 1, "exactly one instance says it is the prober");

    // Start-up probes (one per instance) are behind us: count ten intervals.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = probes(&a, "/api/tags");
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let n = probes(&a, "/api/tags") - before;
    let per_interval = n as f64 / window.elapsed().as_secs_f64();
    println!(
        "probes of gpu-a over 10 s with 3 instances, 1 s interval: {n} ({per_interval:.2} per interval; 3 probers would send ~30)"
    );
    assert!(
        (6..=12).contains(&n),
        "one instance's worth of probes is 6..=12 in 10 s, got {n}"
    );

    // A model appears on the node: the prober discovers it, the followers take it.
    a.set_models(vec!["llama3:latest".into(), "mistral:7b".into()]);
    let seen = time_until(Duration::from_secs(5), || async {
        for node in &c.nodes {
            let models = upstream(node, "gpu-a").await["models"].clone();
            if !models.as_array().unwrap().iter().any(|m| m == "mistral:7b") {
                return false;
            }
        }
        true
    })
    .await
    .expect("the followers did not show the prober's model list within 5 s");
    println!("new model on gpu-a shown by all 3 instances after {seen:?} (interval 1 s)");
    assert!(seen <= Duration::from_secs(3), "{seen:?}");

    // A node goes down: every instance shows it standby, with the prober's reason.
    b.stop().await;
    let down = time_until(Duration::from_secs(5), || async {
        for node in &c.nodes {
            let u = upstream(node, "gpu-b").await;
            if u["pool"] != "standby" || u["last_error"].is_null() {
                return false;
            }
        }
        true
    })
    .await
    .expect("the followers did not show gpu-b standby within 5 s");
    println!("gpu-b down: standby on all 3 instances after {down:?}");
    assert!(down <= Duration::from_secs(3), "{down:?}");
    // Followers did not probe for themselves all along.
    for (i, node) in c.nodes.iter().enumerate() {
        if i != prober {
            let log = node.log_text();
            assert!(!log.contains("probing for itself"), "{log}");
        }
    }
}

#[tokio::test]
async fn a_killed_prober_is_replaced_within_two_intervals() {
    let a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let body = format!("{}{HEALTH}", ollama("gpu-a", &a.url()));
    let Some(mut c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let prober = settled(&c).await;
    let old = prober_id(&c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    c.kill9(prober);
    let killed = Instant::now();
    // A probe the dead prober had on the wire may still land: count from a moment later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = probes(&a, "/api/tags");
    let resumed = time_until(Duration::from_secs(6), || async {
        probes(&a, "/api/tags") > before
    })
    .await
    .expect("probing did not resume within 6 s of the prober's death");
    let gap = killed.elapsed().min(resumed + Duration::from_millis(100));
    let new = prober_id(&c).await.unwrap_or_default();
    println!(
        "prober {old} killed with SIGKILL: {new} probing after {gap:?} (interval 1 s, bound 2 s)"
    );
    assert_ne!(new, old);
    assert!(
        gap <= Duration::from_secs(2),
        "probing resumed after {gap:?}"
    );

    // And again only one prober.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = probes(&a, "/api/tags");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = probes(&a, "/api/tags") - before;
    println!("after the takeover: {n} probes in 5 s");
    assert!((3..=6).contains(&n), "{n} probes in 5 s");
}

#[tokio::test]
async fn a_refused_key_and_an_open_breaker_reach_every_instance_within_a_second() {
    let keyed = MockServer::start(llmux_mock::MockConfig {
        models: vec!["gpt-4o-mini".into()],
        api_key: Some("sk-good".into()),
        extra_keys: vec!["sk-bad".into(), "sk-slow".into()],
        ..node("keyed", &[])
    })
    .await
    .unwrap();
    let flaky = MockServer::start(node("flaky", &["flaky-model"]))
        .await
        .unwrap();
    // Long health interval: only live calls learn anything here.
    let body = format!(
        "{}keys = [\"sk-bad\", \"sk-good\", \"sk-slow\"]\n{}[routing.breaker]\nconsecutive_failures = 2\nopen_for = \"30s\"\n[health]\ninterval = \"60s\"\n",
        openai("keyed", &keyed.url(), "unused").replace("keys = [\"unused\"]\n", ""),
        openai("flaky", &flaky.url(), "x"),
    );
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    settled(&c).await;

    // sk-bad is revoked at the provider; A's next calls meet the 401.
    keyed.set_keys(KeyRules {
        valid: vec!["sk-good".into(), "sk-slow".into()],
        revoked: vec!["sk-bad".into()],
        limited: Vec::new(),
    });
    let bad = |m: &MockServer| m.stats().by_key.get("sk-bad").copied().unwrap_or(0);
    // Times count from the start of A's call that met the 401: an upper bound of the
    // propagation (it includes A's call and each poll of B's and C's admin API).
    let first = bad(&keyed);
    let mut refused = Instant::now();
    for _ in 0..6 {
        refused = Instant::now();
        let r = send(&c.nodes[0], "gpt-4o-mini").await;
        assert_eq!(r, 200, "A fails over to the good key");
        if bad(&keyed) > first {
            break;
        }
    }
    assert!(bad(&keyed) > first, "A never used sk-bad");
    let known = on_followers(&c, "keyed", |u| u["keys"][0]["state"] == "disabled")
        .await
        .expect("B and C did not disable the key within 3 s");
    let known = refused.elapsed().max(known);
    println!("key refused (401) on A: disabled on B and C after {known:?} (from the start of A's call; bound 1 s)");
    assert!(known < Duration::from_secs(1), "{known:?}");
    let after = bad(&keyed);
    for node in &c.nodes[1..] {
        for _ in 0..4 {
            assert_eq!(send(node, "gpt-4o-mini").await, 200);
        }
    }
    assert_eq!(bad(&keyed), after, "B and C skip the disabled key");

    // sk-slow is rate-limited at the provider (429, Retry-After 20 s): A cools it, B and C too.
    keyed.set_keys(KeyRules {
        valid: vec!["sk-good".into()],
        revoked: vec!["sk-bad".into()],
        limited: vec!["sk-slow".into()],
    });
    let slow = |m: &MockServer| m.stats().by_key.get("sk-slow").copied().unwrap_or(0);
    let first = slow(&keyed);
    let mut throttled = Instant::now();
    for _ in 0..6 {
        throttled = Instant::now();
        assert_eq!(send(&c.nodes[0], "gpt-4o-mini").await, 200);
        if slow(&keyed) > first {
            break;
        }
    }
    assert!(slow(&keyed) > first, "A never used sk-slow");
    let cooled = on_followers(&c, "keyed", |u| u["keys"][2]["state"] == "cooling")
        .await
        .expect("B and C did not cool the key within 3 s");
    let cooled = throttled.elapsed().max(cooled);
    println!("key throttled (429) on A: cooling on B and C after {cooled:?} (from the start of A's call; bound 1 s)");
    assert!(cooled < Duration::from_secs(1), "{cooled:?}");
    let after = slow(&keyed);
    for node in &c.nodes[1..] {
        for _ in 0..4 {
            assert_eq!(send(node, "gpt-4o-mini").await, 200);
        }
    }
    assert_eq!(slow(&keyed), after, "B and C skip the cooling key");

    // flaky fails every call: A's breaker opens and B and C open theirs.
    flaky.set_faults(Faults {
        fail_rate: 1.0,
        fail_status: 500,
        ..Faults::default()
    });
    let mut at = Instant::now();
    let (mut open, mut calls) = (false, 0);
    for _ in 0..50 {
        at = Instant::now();
        calls += 1;
        let _ = send(&c.nodes[0], "flaky-model").await;
        open = upstream(&c.nodes[0], "flaky").await["breaker"] == "open";
        if open {
            break;
        }
    }
    assert!(open, "A's breaker did not open");
    let announced = on_followers(&c, "flaky", |u| u["breaker"] == "open")
        .await
        .expect("B and C did not open their breakers within 3 s");
    let announced = at.elapsed().max(announced);
    println!("breaker opened on A by failing call {calls}: open on B and C after {announced:?} (from the start of A's call; bound 1 s)");
    assert!(announced < Duration::from_secs(1), "{announced:?}");
    assert!(c.nodes[1].log_text().contains("applied a signal"));
}

/// A non-streaming chat call for `model` to `n`; its status.
async fn send(n: &Llmux, model: &str) -> u16 {
    client()
        .post(n.url("/v1/chat/completions"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn without_redis_every_instance_probes_for_itself_and_one_prober_returns() {
    let Some(mut own) = OwnRedis::start() else {
        eprintln!("note: redis-server is not installed: skipping");
        return;
    };
    let a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let body = format!("{}{HEALTH}", ollama("gpu-a", &a.url()));
    let mut spec = Spec::new(3, &body);
    spec.redis_url = Some(own.url());
    let Some(c) = TestCluster::start(spec).await else {
        return;
    };
    settled(&c).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    own.stop();
    let alone = time_until(Duration::from_secs(5), || async {
        c.nodes.iter().all(|n| {
            n.log_text()
                .contains("Redis unreachable: probing for itself")
        })
    })
    .await
    .expect("the instances did not say they probe for themselves within 5 s");
    let before = probes(&a, "/api/tags");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = probes(&a, "/api/tags") - before;
    println!(
        "Redis down: all 3 instances probing for themselves after {alone:?}; {n} probes in 5 s"
    );
    assert!(
        n >= 10,
        "3 instances probing for themselves send ~15 probes in 5 s, got {n}"
    );

    own.restart();
    let back = time_until(Duration::from_secs(10), || async {
        prober_id(&c).await.is_some()
    })
    .await
    .expect("no prober elected within 10 s of Redis returning");
    // Followers settle once the new prober's first results arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = probes(&a, "/api/tags");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = probes(&a, "/api/tags") - before;
    println!("Redis back: prober elected after {back:?}; then {n} probes in 5 s");
    assert!((3..=7).contains(&n), "one prober again: {n} probes in 5 s");

    // The followers take the prober's results again (resubscribed, or through the hash).
    a.set_models(vec!["llama3:latest".into(), "mistral:7b".into()]);
    let seen = time_until(Duration::from_secs(5), || async {
        for node in &c.nodes {
            let models = upstream(node, "gpu-a").await["models"].clone();
            if !models.as_array().unwrap().iter().any(|m| m == "mistral:7b") {
                return false;
            }
        }
        true
    })
    .await
    .expect("the followers did not take the prober's model list after the outage");
    println!("after the outage, a new model is shown by all 3 instances in {seen:?}");
}

//! End-to-end: what the binary's admin API shows of a self-healing key pool, and re-enabling a
//! key through it. The failover itself (key cooldowns and re-checks, retries, breakers,
//! timeouts, fallbacks, stream endings) runs in process on paused time:
//! crates/gateway/tests/failover.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{Faults, KeyRules, MockConfig, MockServer};
use serde_json::Value;

async fn post(gw: &Llmux, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}

fn upstream<'a>(ups: &'a Value, name: &str) -> &'a Value {
    ups.as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap()
}

fn hits(up: &MockServer, key: &str) -> u64 {
    up.stats().by_key.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_a_healing_key_pool_and_re_enables_keys() {
    // One provider with four keys: one revoked, one rate-limited, two good.
    let up = MockServer::start(MockConfig {
        name: "provider".into(),
        models: vec!["gpt-4o-mini".into()],
        api_key: Some("sk-good-1".into()),
        extra_keys: vec!["sk-good-2".into()],
        revoked_keys: vec!["sk-revoked".into()],
        limited_keys: vec!["sk-limited".into()],
        faults: Faults {
            retry_after: Some(120),
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "[health]\ninterval = \"60s\"\n[[upstreams]]\nname = \"provider\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-revoked\", \"sk-limited\", \"sk-good-1\", \"sk-good-2\"]\n",
        up.url()
    ));
    for i in 0..8 {
        let r = post(
            &gw,
            "/v1/chat/completions",
            &chat("gpt-4o-mini", i % 2 == 0),
        )
        .await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert!(hits(&up, "sk-revoked") >= 1 && hits(&up, "sk-limited") >= 1);

    let ups = gw.upstreams().await;
    let provider = upstream(&ups, "provider");
    assert_eq!(provider["breaker"], "closed");
    let keys = provider["keys"].as_array().unwrap().clone();
    let state = |id: &str| keys.iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(state("k0")["state"], "disabled");
    assert!(state("k0")["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("401"));
    assert_eq!(state("k1")["state"], "cooling");
    assert!(
        state("k1")["cooling_for_s"].as_f64().unwrap() > 60.0,
        "Retry-After honoured"
    );
    assert_eq!(state("k2")["state"], "ok");
    // Never the secret: only a masked suffix.
    let text = ups.to_string();
    assert!(!text.contains("sk-revoked") && !text.contains("sk-good-1"));

    // The key gets fixed upstream; the admin re-enables it at once, and traffic uses it again.
    up.set_keys(KeyRules {
        valid: vec!["sk-good-1".into(), "sk-good-2".into(), "sk-revoked".into()],
        revoked: vec![],
        limited: vec!["sk-limited".into()],
    });
    let r = client()
        .post(gw.url("/admin/v1/upstreams/provider/keys/k0/enable"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = hits(&up, "sk-revoked");
    for _ in 0..6 {
        let r = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    assert!(hits(&up, "sk-revoked") > before);
    let r = client()
        .post(gw.url("/admin/v1/upstreams/provider/keys/k9/enable"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A node that accepts connections and never answers (a hung host, not a refused port).
fn silent_node() -> (std::net::TcpListener, String) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    (silent, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_upstream_neither_delays_start_up_nor_takes_calls_before_it_is_probed() {
    let (_silent, hung) = silent_node();
    let live = MockServer::start(node("live", &["llama3:latest", "phi3:latest"]))
        .await
        .unwrap();
    // The hung node declares the model both serve, so it is a candidate from the start.
    let body = format!(
        "[health]\ninterval = \"60s\"\ntimeout = \"5s\"\n\
         [[upstreams]]\nname = \"hung\"\nkind = \"ollama\"\nurl = \"{hung}\"\nmodels = [\"llama3:latest\"]\n{}",
        ollama("live", &live.url())
    );
    let started = std::time::Instant::now();
    let gw = Llmux::start(&body);
    let listening = started.elapsed();
    eprintln!("listening {listening:?} after the spawn, with a node that never answers (health.timeout 5s)");
    // Before: the start-up probe held the listener back for the whole health.timeout (5 s).
    assert!(
        listening < std::time::Duration::from_secs(2),
        "start-up waited for the hung node: {listening:?}"
    );
    // Calls made at once: each goes to the probed node, never to the one not yet probed; a
    // model only discovery names (phi3) is served too, not refused as unknown; and none waits
    // for the hung node's probe to time out (a call that came before the live node's probe
    // answered used to wait out the whole round).
    for model in ["llama3", "phi3", "llama3"] {
        let t = std::time::Instant::now();
        let r = client()
            .post(gw.url("/api/chat"))
            .json(&serde_json::json!({"model": model, "stream": false,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(header(&r, "x-llmux-upstream"), "live", "{model}");
        eprintln!("{model}: served by live in {:?}", t.elapsed());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{model} waited for the hung node's probe: {:?}",
            t.elapsed()
        );
    }
    // Once its probe times out the hung node is in standby, as before.
    eventually(
        std::time::Duration::from_secs(10),
        "the hung node in standby",
        async || {
            let ups = gw.upstreams().await;
            upstream(&ups, "hung")["pool"] == "standby"
        },
    )
    .await;
}

/// A stop during the start-up round does not wait out a node that never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_first_probe_round_is_prompt() {
    let (_silent, hung) = silent_node();
    let mut gw = Llmux::start(&format!(
        "[health]\ninterval = \"60s\"\ntimeout = \"10s\"\n\
         [[upstreams]]\nname = \"hung\"\nkind = \"ollama\"\nurl = \"{hung}\"\n"
    ));
    let t = std::time::Instant::now();
    gw.signal("TERM");
    let status = gw.child.wait().unwrap();
    eprintln!(
        "stopped {:?} after SIGTERM, with the hung node's probe in flight",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", gw.log_text());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "the stop waited for the probe: {:?}",
        t.elapsed()
    );
}

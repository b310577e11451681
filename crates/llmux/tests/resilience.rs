//! End-to-end: self-healing key pools, failover before the first byte, breakers, fallbacks, honest stream endings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use llmux_mock::{Faults, KeyRules, MockConfig, MockServer};
use serde_json::Value;
use std::time::{Duration, Instant};

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

/// One provider with four keys: one revoked, one rate-limited, two good.
async fn four_key_provider() -> (MockServer, Llmux) {
    let cfg = MockConfig {
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
    };
    let up = MockServer::start(cfg).await.unwrap();
    let gw = Llmux::start(&format!(
        "[health]\ninterval = \"60s\"\n[[upstreams]]\nname = \"provider\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-revoked\", \"sk-limited\", \"sk-good-1\", \"sk-good-2\"]\n",
        up.url()
    ));
    (up, gw)
}

fn hits(up: &MockServer, key: &str) -> u64 {
    up.stats().by_key.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pool_heals_itself_and_serves_every_call() {
    let (up, gw) = four_key_provider().await;
    let concurrency = 8;
    let mut ok = 0;
    let gw_ref = &gw;
    for _ in 0..(200 / concurrency) {
        let calls = (0..concurrency).map(|i| async move {
            let r = post(
                gw_ref,
                "/v1/chat/completions",
                &chat("gpt-4o-mini", i % 2 == 0),
            )
            .await;
            let status = r.status();
            r.bytes().await.unwrap();
            status
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
    // The revoked key is tried at most once per concurrent call (plus the start-up probe), then never again.
    let revoked = hits(&up, "sk-revoked");
    assert!(
        revoked <= concurrency as u64 + 1,
        "revoked key tried {revoked} times"
    );
    let limited = hits(&up, "sk-limited");
    assert!(
        limited <= concurrency as u64 + 1,
        "rate-limited key tried {limited} times"
    );
    assert!(hits(&up, "sk-good-1") > 50 && hits(&up, "sk-good-2") > 50);

    let ups = gw.upstreams().await;
    let keys = upstream(&ups, "provider")["keys"]
        .as_array()
        .unwrap()
        .clone();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_keys_are_rechecked_and_come_back() {
    let up = MockServer::start(MockConfig {
        name: "provider".into(),
        models: vec!["m".into()],
        api_key: Some("sk-good".into()),
        revoked_keys: vec!["sk-flaky".into()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\nkey_recheck = \"1s\"\n[[upstreams]]\nname = \"p\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-flaky\", \"sk-good\"]\n",
        up.url()
    ));
    for _ in 0..4 {
        assert_eq!(
            post(&gw, "/v1/chat/completions", &chat("m", false))
                .await
                .status(),
            200
        );
    }
    let key_state = |ups: &Value| upstream(ups, "p")["keys"][0]["state"].clone();
    assert_eq!(key_state(&gw.upstreams().await), "disabled");
    up.set_keys(KeyRules {
        valid: vec!["sk-good".into(), "sk-flaky".into()],
        ..KeyRules::default()
    });
    let until = Instant::now() + Duration::from_secs(8);
    while key_state(&gw.upstreams().await) != "ok" {
        assert!(Instant::now() < until, "the key never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_upstream_does_not_fail_calls() {
    let flaky = MockServer::start(MockConfig {
        faults: Faults {
            fail_rate: 0.3,
            ..Faults::default()
        },
        ..node("flaky", &["llama3:latest"])
    })
    .await
    .unwrap();
    let good = MockServer::start(node("good", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("flaky", &flaky.url()),
        ollama("good", &good.url())
    ));
    let mut ok = 0;
    let mut retried = 0;
    for _ in 0..50 {
        let calls = (0..10).map(|_| async {
            let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
            let attempts: u32 = header(&r, "x-llmux-attempts").parse().unwrap_or(0);
            (r.status(), attempts)
        });
        for (status, attempts) in futures_util::future::join_all(calls).await {
            if status == 200 {
                ok += 1;
            }
            if attempts > 1 {
                retried += 1;
            }
        }
    }
    assert!(ok >= 498, "only {ok} of 500 calls succeeded");
    assert!(
        flaky.stats().failed > 0 && retried > 0,
        "the fault never fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_abandoned_at_first_byte_timeout() {
    let hung = MockServer::start(MockConfig {
        faults: Faults {
            hang: true,
            ..Faults::default()
        },
        ..node("hung", &["llama3:latest"])
    })
    .await
    .unwrap();
    let good = MockServer::start(node("good", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}timeouts = {{ first_byte = \"2s\" }}\n{}",
        ollama("hung", &hung.url()),
        ollama("good", &good.url())
    ));
    for stream in [false, true] {
        for _ in 0..2 {
            let started = Instant::now();
            let r = post(&gw, "/v1/chat/completions", &chat("llama3", stream)).await;
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "x-llmux-upstream"), "good");
            r.bytes().await.unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "took {:?}",
                started.elapsed()
            );
        }
    }
    assert!(
        hung.stats().generations >= 1,
        "the hung node was never tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_ejected_by_its_breaker() {
    let bad = MockServer::start(MockConfig {
        faults: Faults {
            fail_rate: 1.0,
            fail_status: 503,
            ..Faults::default()
        },
        ..node("bad", &["llama3:latest"])
    })
    .await
    .unwrap();
    let good = MockServer::start(node("good", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("bad", &bad.url()),
        ollama("good", &good.url())
    ));
    for _ in 0..40 {
        let r = post(&gw, "/api/chat", &chat("llama3", false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // Five failures open the breaker; after that the bad node sees no more calls.
    assert_eq!(bad.stats().generations, 5);
    let ups = gw.upstreams().await;
    assert_eq!(upstream(&ups, "bad")["breaker"], "open");
    assert_eq!(upstream(&ups, "good")["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_candidate_is_never_ejected() {
    let only = MockServer::start(MockConfig {
        faults: Faults {
            fail_rate: 1.0,
            fail_status: 500,
            ..Faults::default()
        },
        ..node("only", &["llama3:latest"])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&ollama("only", &only.url()));
    for _ in 0..8 {
        let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
        // The upstream's own 500 comes back, in the same dialect, not a breaker refusal.
        assert_eq!(r.status(), 500);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("mock"));
    }
    only.set_faults(Faults::default());
    let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
    assert_eq!(
        r.status(),
        200,
        "the open breaker still let the only candidate be tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_chains_serve_another_model_and_say_so() {
    let big = MockServer::start(MockConfig {
        faults: Faults {
            fail_rate: 1.0,
            fail_status: 503,
            ..Faults::default()
        },
        ..node("big", &["llama3:70b"])
    })
    .await
    .unwrap();
    let small = MockServer::start(node("small", &["llama3:8b"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[routing]\nfallbacks = {{ \"llama3:70b\" = [\"no-such-model\", \"llama3:8b\"] }}\n{}{}",
        ollama("big", &big.url()),
        ollama("small", &small.url())
    ));
    for (path, stream) in [("/v1/chat/completions", true), ("/api/chat", false)] {
        let r = post(&gw, path, &chat("llama3:70b", stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), "small");
        assert_eq!(header(&r, "x-llmux-model"), "llama3:8b");
        let text = r.text().await.unwrap();
        assert!(text.contains("\"model\":\"llama3:8b\""), "{text}");
    }
    assert_eq!(small.stats().last_body.unwrap()["model"], "llama3:8b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_ends_with_an_error_event_at_the_idle_timeout() {
    let up = MockServer::start(MockConfig {
        chunks: 20,
        faults: Faults {
            stall_after: Some(3),
            ..Faults::default()
        },
        ..node("staller", &["llama3:latest"])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "{}timeouts = {{ idle = \"1s\" }}\n",
        ollama("staller", &up.url())
    ));
    for (path, marker) in [
        ("/v1/chat/completions", "data: {\"error\""),
        ("/api/chat", "{\"error\""),
    ] {
        let started = Instant::now();
        let text = post(&gw, path, &chat("llama3", true))
            .await
            .text()
            .await
            .unwrap();
        let last = text.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with(marker), "{path}: {last}");
        assert!(last.contains("stalled"));
        assert!(!text.contains("[DONE]"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
    assert!(gw.wait_idle(Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sticks_to_one_node() {
    let a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let b = MockServer::start(node("gpu-b", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "{}{}",
        ollama("gpu-a", &a.url()),
        ollama("gpu-b", &b.url())
    ));
    let mut seen = std::collections::HashSet::new();
    for session in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut nodes = std::collections::HashSet::new();
        for _ in 0..6 {
            let r = client()
                .post(gw.url("/v1/chat/completions"))
                .header("x-llmux-session", session)
                .json(&chat("llama3", false))
                .send()
                .await
                .unwrap();
            nodes.insert(header(&r, "x-llmux-upstream"));
        }
        assert_eq!(nodes.len(), 1, "session {session} moved between nodes");
        seen.extend(nodes);
        // The OpenAI `user` field works the same way.
        let mut body = chat("llama3", false);
        body["user"] = session.into();
        let mut by_user = std::collections::HashSet::new();
        for _ in 0..4 {
            let r = post(&gw, "/v1/chat/completions", &body).await;
            by_user.insert(header(&r, "x-llmux-upstream"));
        }
        assert_eq!(by_user.len(), 1);
    }
    assert_eq!(seen.len(), 2, "sessions should spread over both nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hang_up_mid_stream_frees_its_count_within_a_second() {
    let mut c = node("gpu-a", &["llama3:latest"]);
    c.chunks = 100;
    c.chunk_delay = Duration::from_millis(30);
    let a = MockServer::start(c).await.unwrap();
    let gw = Llmux::start(&ollama("gpu-a", &a.url()));
    let r = post(&gw, "/v1/chat/completions", &chat("llama3", true)).await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    s.next().await.unwrap().unwrap();
    assert_eq!(gw.in_flight().await, 1);
    drop(s);
    let hung_up = Instant::now();
    assert!(gw.wait_idle(Duration::from_secs(1)).await);
    assert!(hung_up.elapsed() < Duration::from_secs(1));
    let until = Instant::now() + Duration::from_secs(1);
    while a.stats().in_flight > 0 {
        assert!(
            Instant::now() < until,
            "the upstream call was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

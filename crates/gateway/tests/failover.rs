//! Failover on paused time: key pools that heal, breakers that eject and recover, first-byte,
//! idle and total timeouts, fallback chains, and streams that end honestly. The gateway and
//! its mock upstreams run in the test's runtime, so every wait here is virtual: these tests
//! take milliseconds and measure durations exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use llmux_gateway::keys::KeyState;
use llmux_mock::{Faults, KeyRules, MockConfig};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

fn failing(status: u16) -> Faults {
    Faults {
        fail_rate: 1.0,
        fail_status: status,
        ..Faults::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_pool_heals_itself_and_serves_every_call() {
    // One provider with four keys: one revoked, one rate-limited, two good.
    let up = mock(MockConfig {
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
    .await;
    // No probe in the virtual minutes below: only calls touch the keys.
    let gw = Gw::start(&format!(
        "[health]\ninterval = \"1h\"\n{}",
        openai(
            "provider",
            &up,
            &["sk-revoked", "sk-limited", "sk-good-1", "sk-good-2"]
        )
    ))
    .await;
    let concurrency = 8;
    let gw_ref = &gw;
    for _ in 0..(200 / concurrency) {
        let calls = (0..concurrency).map(|i| async move {
            let r = gw_ref
                .post("/v1/chat/completions", &chat("gpt-4o-mini", i % 2 == 0))
                .await;
            let status = r.status();
            r.bytes().await.unwrap();
            status
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
    }
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

    match gw.key("provider", 0) {
        KeyState::Disabled { reason, .. } => assert!(reason.contains("401"), "{reason}"),
        other => panic!("k0: {other:?}"),
    }
    match gw.key("provider", 1) {
        KeyState::Cooling { remaining } => {
            assert!(remaining > Duration::from_secs(60), "Retry-After honoured")
        }
        other => panic!("k1: {other:?}"),
    }
    assert_eq!(gw.key_state("provider", 2), "ok");

    // The scenario: the provider's Retry-After (120 s) runs out, and the key is tried again.
    tokio::time::sleep(Duration::from_secs(121)).await;
    assert_eq!(gw.key_state("provider", 1), "ok");
    let before = hits(&up, "sk-limited");
    for _ in 0..8 {
        let r = gw
            .post("/v1/chat/completions", &chat("gpt-4o-mini", false))
            .await;
        assert_eq!(r.status(), 200);
    }
    assert!(hits(&up, "sk-limited") > before, "the rested key came back");
    assert_eq!(gw.key_state("provider", 1), "cooling", "and rests again");

    // The key gets fixed upstream; the admin re-enables it, and traffic uses it again.
    up.set_keys(KeyRules {
        valid: vec!["sk-good-1".into(), "sk-good-2".into(), "sk-revoked".into()],
        revoked: vec![],
        limited: vec!["sk-limited".into()],
    });
    assert!(gw.upstream("provider").keys.enable(0));
    let before = hits(&up, "sk-revoked");
    for _ in 0..6 {
        let r = gw
            .post("/v1/chat/completions", &chat("gpt-4o-mini", false))
            .await;
        assert_eq!(r.status(), 200);
    }
    assert!(hits(&up, "sk-revoked") > before);
}

#[tokio::test(start_paused = true)]
async fn disabled_keys_are_rechecked_and_come_back() {
    let up = mock(MockConfig {
        name: "provider".into(),
        models: vec!["m".into()],
        api_key: Some("sk-good".into()),
        revoked_keys: vec!["sk-flaky".into()],
        ..MockConfig::default()
    })
    .await;
    let gw = Gw::start(&format!(
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\nkey_recheck = \"1s\"\n{}",
        openai("p", &up, &["sk-flaky", "sk-good"])
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("m", false))
                .await
                .status(),
            200
        );
    }
    assert_eq!(gw.key_state("p", 0), "disabled");
    // The scenario: several re-checks while the key is still revoked keep it out.
    let rechecks = hits(&up, "sk-flaky");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(hits(&up, "sk-flaky") > rechecks, "the key was re-checked");
    assert_eq!(gw.key_state("p", 0), "disabled");

    up.set_keys(KeyRules {
        valid: vec!["sk-good".into(), "sk-flaky".into()],
        ..KeyRules::default()
    });
    eventually(Duration::from_secs(8), "the key comes back", || async {
        gw.key_state("p", 0) == "ok"
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_flaky_upstream_does_not_fail_calls() {
    let flaky = mock(MockConfig {
        faults: Faults {
            fail_rate: 0.3,
            ..Faults::default()
        },
        ..node("flaky", &["llama3:latest"])
    })
    .await;
    let good = mock(node("good", &["llama3:latest"])).await;
    let gw = Gw::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("flaky", &flaky, ""),
        ollama("good", &good, "")
    ))
    .await;
    let mut ok = 0;
    let mut retried = 0;
    for _ in 0..50 {
        let calls = (0..10).map(|_| async {
            let r = gw
                .post("/v1/chat/completions", &chat("llama3", false))
                .await;
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

#[tokio::test(start_paused = true)]
async fn an_upstream_that_never_answers_is_abandoned_at_first_byte_timeout() {
    let hung = mock(MockConfig {
        faults: Faults {
            hang: true,
            ..Faults::default()
        },
        ..node("hung", &["llama3:latest"])
    })
    .await;
    let good = mock(node("good", &["llama3:latest"])).await;
    let gw = Gw::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("hung", &hung, "timeouts = { first_byte = \"2s\" }"),
        ollama("good", &good, "")
    ))
    .await;
    let mut abandoned = 0;
    for stream in [false, true] {
        for _ in 0..2 {
            let started = Instant::now();
            let r = gw
                .post("/v1/chat/completions", &chat("llama3", stream))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "x-llmux-upstream"), "good");
            let attempts = header(&r, "x-llmux-attempts");
            r.bytes().await.unwrap();
            let took = started.elapsed();
            assert!(took < Duration::from_secs(3), "took {took:?}");
            if attempts == "2" {
                // Abandoned exactly at the deadline, not before.
                assert!(took >= Duration::from_secs(2), "took {took:?}");
                abandoned += 1;
            }
        }
    }
    assert!(abandoned >= 1, "the hung node was never tried");
    assert!(hung.stats().generations >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_is_ejected_by_its_breaker_and_comes_back() {
    let bad = mock(MockConfig {
        faults: failing(503),
        ..node("bad", &["llama3:latest"])
    })
    .await;
    let good = mock(node("good", &["llama3:latest"])).await;
    let gw = Gw::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("bad", &bad, ""),
        ollama("good", &good, "")
    ))
    .await;
    for _ in 0..40 {
        let r = gw.post("/api/chat", &chat("llama3", false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // Five failures open the breaker; after that the bad node sees no more calls.
    assert_eq!(bad.stats().generations, 5);
    assert_eq!(gw.breaker("bad"), "open");
    assert_eq!(gw.breaker("good"), "closed");

    // The node recovers; once the ejection (breaker.open_for, 30 s ± 10 %) has run out, a
    // trial call reaches it and closes the breaker. The sleeps are the scenario.
    bad.set_faults(Faults::default());
    let left = gw.upstream("bad").breaker.open_remaining();
    assert!(
        left >= Duration::from_secs(26) && left <= Duration::from_secs(33),
        "{left:?}"
    );
    tokio::time::sleep(left - Duration::from_millis(100)).await;
    assert_eq!(gw.breaker("bad"), "open");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.breaker("bad"), "half_open");
    let mut served = HashSet::new();
    for _ in 0..6 {
        let r = gw.post("/api/chat", &chat("llama3", false)).await;
        assert_eq!(r.status(), 200);
        served.insert(header(&r, "x-llmux-upstream"));
    }
    assert!(served.contains("bad"), "{served:?}");
    assert_eq!(gw.breaker("bad"), "closed");
}

#[tokio::test(start_paused = true)]
async fn the_last_candidate_is_never_ejected() {
    let only = mock(MockConfig {
        faults: failing(500),
        ..node("only", &["llama3:latest"])
    })
    .await;
    let gw = Gw::start(&ollama("only", &only, "")).await;
    for _ in 0..8 {
        let r = gw
            .post("/v1/chat/completions", &chat("llama3", false))
            .await;
        // The upstream's own 500 comes back, in the same dialect, not a breaker refusal.
        assert_eq!(r.status(), 500);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("mock"));
    }
    only.set_faults(Faults::default());
    let r = gw
        .post("/v1/chat/completions", &chat("llama3", false))
        .await;
    assert_eq!(
        r.status(),
        200,
        "the open breaker still let the only candidate be tried"
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_chains_serve_another_model_and_say_so() {
    let big = mock(MockConfig {
        faults: failing(503),
        ..node("big", &["llama3:70b"])
    })
    .await;
    let small = mock(node("small", &["llama3:8b"])).await;
    let gw = Gw::start(&format!(
        "[routing]\nfallbacks = {{ \"llama3:70b\" = [\"no-such-model\", \"llama3:8b\"] }}\n{}{}",
        ollama("big", &big, ""),
        ollama("small", &small, "")
    ))
    .await;
    for (path, stream) in [("/v1/chat/completions", true), ("/api/chat", false)] {
        let r = gw.post(path, &chat("llama3:70b", stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), "small");
        assert_eq!(header(&r, "x-llmux-model"), "llama3:8b");
        let text = r.text().await.unwrap();
        assert!(text.contains("\"model\":\"llama3:8b\""), "{text}");
    }
    assert_eq!(small.stats().last_body.unwrap()["model"], "llama3:8b");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_ends_with_an_error_event_at_the_idle_timeout() {
    let up = mock(MockConfig {
        chunks: 20,
        faults: Faults {
            stall_after: Some(3),
            ..Faults::default()
        },
        ..node("staller", &["llama3:latest"])
    })
    .await;
    let gw = Gw::start(&ollama("staller", &up, "timeouts = { idle = \"1s\" }")).await;
    for (path, marker) in [
        ("/v1/chat/completions", "data: {\"error\""),
        ("/api/chat", "{\"error\""),
    ] {
        let started = Instant::now();
        let text = gw
            .post(path, &chat("llama3", true))
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
            took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
            "{took:?}"
        );
    }
    eventually(Duration::from_secs(1), "no call in flight", || async {
        gw.in_flight() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_total_timeout_ends_a_long_call() {
    let mut c = node("slow", &["llama3:latest"]);
    c.chunks = 100;
    c.chunk_delay = Duration::from_millis(100);
    let up = mock(c).await;
    let gw = Gw::start(&ollama("slow", &up, "timeouts = { total = \"3s\" }")).await;

    // A stream that would take 10 s is cut at 3 s with an error event, never [DONE].
    let started = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("llama3", true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let took = started.elapsed();
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("data: {\"error\""), "{last}");
    assert!(!text.contains("[DONE]"));
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3200),
        "{took:?}"
    );

    // A whole answer that cannot be ready in time fails at the same bound.
    up.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let started = Instant::now();
    let r = gw
        .post("/v1/chat/completions", &chat("llama3", false))
        .await;
    let took = started.elapsed();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3200),
        "{took:?}"
    );
    eventually(Duration::from_secs(1), "no call in flight", || async {
        gw.in_flight() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_the_first_byte_is_never_retried() {
    let mut ca = node("gpu-a", &["llama3:latest"]);
    ca.faults.drop_after = Some(3);
    let a = mock(ca).await;
    let b = mock(node("gpu-b", &["llama3:latest"])).await;
    let gw = Gw::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("gpu-a", &a, ""),
        ollama("gpu-b", &b, "")
    ))
    .await;
    let mut cut = 0;
    for (path, marker) in [
        ("/v1/chat/completions", "data: {\"error\""),
        ("/api/chat", "{\"error\""),
        ("/v1/chat/completions", "data: {\"error\""),
        ("/api/chat", "{\"error\""),
    ] {
        let served_before = b.stats().generations;
        let r = gw.post(path, &chat("llama3", true)).await;
        assert_eq!(r.status(), 200);
        let node = header(&r, "x-llmux-upstream");
        assert_eq!(header(&r, "x-llmux-attempts"), "1");
        let text = r.text().await.unwrap_or_default();
        if node == "gpu-a" {
            cut += 1;
            let last = text.trim_end().lines().last().unwrap_or_default();
            assert!(last.starts_with(marker), "{path}: {text}");
            assert!(!text.contains("[DONE]"));
            // The client already had bytes: the call ends here, not on gpu-b.
            assert_eq!(b.stats().generations, served_before);
        }
    }
    assert_eq!(cut, 2);
}

#[tokio::test(start_paused = true)]
async fn a_session_sticks_to_one_node() {
    let a = mock(node("gpu-a", &["llama3:latest"])).await;
    let b = mock(node("gpu-b", &["llama3:latest"])).await;
    let gw = Gw::start(&format!(
        "{}{}",
        ollama("gpu-a", &a, ""),
        ollama("gpu-b", &b, "")
    ))
    .await;
    let mut seen = HashSet::new();
    for session in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut nodes = HashSet::new();
        for _ in 0..6 {
            let r = gw
                .request("/v1/chat/completions")
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
        let mut by_user = HashSet::new();
        for _ in 0..4 {
            let r = gw.post("/v1/chat/completions", &body).await;
            by_user.insert(header(&r, "x-llmux-upstream"));
        }
        assert_eq!(by_user.len(), 1);
    }
    assert_eq!(seen.len(), 2, "sessions should spread over both nodes");
}

#[tokio::test(start_paused = true)]
async fn a_client_hang_up_mid_stream_frees_its_count_within_a_second() {
    let mut c = node("gpu-a", &["llama3:latest"]);
    c.chunks = 100;
    c.chunk_delay = Duration::from_millis(30);
    let a = mock(c).await;
    let gw = Gw::start(&ollama("gpu-a", &a, "")).await;
    let r = gw.post("/v1/chat/completions", &chat("llama3", true)).await;
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    s.next().await.unwrap().unwrap();
    assert_eq!(gw.in_flight(), 1);
    drop(s);
    eventually(Duration::from_secs(1), "the count is freed", || async {
        gw.in_flight() == 0
    })
    .await;
    eventually(
        Duration::from_secs(1),
        "the upstream call is cancelled",
        || async { a.stats().in_flight == 0 },
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn least_active_spreads_concurrent_slow_calls_evenly() {
    let mut ca = node("gpu-a", &["llama3:latest"]);
    ca.ttft = Duration::from_millis(600);
    let mut cb = node("gpu-b", &["llama3:latest"]);
    cb.ttft = Duration::from_millis(600);
    let a = mock(ca).await;
    let b = mock(cb).await;
    let gw = Gw::start(&format!(
        "{}{}",
        ollama("gpu-a", &a, ""),
        ollama("gpu-b", &b, "")
    ))
    .await;

    let calls = (0..20).map(|_| async {
        let r = gw
            .post("/v1/chat/completions", &chat("llama3", false))
            .await;
        assert_eq!(r.status(), 200);
        header(&r, "x-llmux-upstream")
    });
    let served = futures_util::future::join_all(calls).await;
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in served {
        *count.entry(s).or_default() += 1;
    }
    let (na, nb) = (
        count.get("gpu-a").copied().unwrap_or(0),
        count.get("gpu-b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 20);
    assert!(
        na.abs_diff(nb) <= 2,
        "uneven spread: gpu-a {na}, gpu-b {nb}"
    );
    eventually(Duration::from_secs(1), "no call in flight", || async {
        gw.in_flight() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn first_chunk_arrives_long_before_the_stream_ends() {
    let mut c = node("slow", &["llama3:latest"]);
    c.chunks = 10;
    c.chunk_delay = Duration::from_millis(200);
    let up = mock(c).await;
    let gw = Gw::start(&ollama("slow", &up, "")).await;

    for path in ["/v1/chat/completions", "/api/chat"] {
        let started = Instant::now();
        let r = gw.post(path, &chat("llama3", true)).await;
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        let ttft = started.elapsed();
        assert!(!first.is_empty());
        let mut rest = 0;
        while let Some(chunk) = stream.next().await {
            rest += chunk.unwrap().len();
        }
        let total = started.elapsed();
        assert!(rest > 0);
        assert!(
            total >= Duration::from_millis(1800),
            "{path}: stream took {total:?}"
        );
        assert!(
            ttft < Duration::from_millis(200),
            "{path}: first chunk after {ttft:?} of {total:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn killing_a_node_loses_only_its_open_streams() {
    let mut ca = node("gpu-a", &["llama3:latest"]);
    ca.chunks = 20;
    ca.chunk_delay = Duration::from_millis(100);
    let mut cb = ca.clone();
    cb.name = "gpu-b".into();
    let a = mock(ca).await;
    let b = mock(cb).await;
    // Probes far apart: only the failed live call can move gpu-a to standby.
    let gw = Gw::start(&format!(
        "[health]\ninterval = \"60s\"\n{}{}",
        ollama("gpu-a", &a, ""),
        ollama("gpu-b", &b, "")
    ))
    .await;

    // Open 6 streams (spread over both nodes), read their first chunk, then kill gpu-a.
    let mut open = Vec::new();
    for _ in 0..6 {
        let r = gw.post("/v1/chat/completions", &chat("llama3", true)).await;
        assert_eq!(r.status(), 200);
        let node = header(&r, "x-llmux-upstream");
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        open.push((node, s));
    }
    assert!(open.iter().any(|(n, _)| n == "gpu-a"));
    a.stop().await;

    for (node, mut s) in open {
        let mut body = Vec::new();
        let mut failed = false;
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&body);
        if node == "gpu-a" {
            // Cut streams end with an error event (or a cut connection), never with [DONE].
            assert!(failed || text.contains("\"error\""), "gpu-a stream: {text}");
            assert!(!text.contains("[DONE]"));
        } else {
            assert!(
                text.trim_end().ends_with("data: [DONE]"),
                "gpu-b stream: {text}"
            );
        }
    }

    // Later calls all succeed: the first one that hits gpu-a fails over before any byte is sent.
    for _ in 0..10 {
        let r = gw
            .post("/v1/chat/completions", &chat("llama3", false))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), "gpu-b");
        r.bytes().await.unwrap();
    }
    let state = gw.upstream("gpu-a").state().clone();
    assert_eq!(state.pool.as_str(), "standby");
    assert!(state.last_error.is_some());
    eventually(
        Duration::from_secs(1),
        "in-flight counts return to zero",
        || async { gw.in_flight() == 0 },
    )
    .await;
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn in_flight_counts_return_to_zero_after_hang_ups_and_failures() {
    let mut c = node("gpu-a", &["llama3:latest"]);
    c.chunks = 50;
    c.chunk_delay = Duration::from_millis(50);
    let a = mock(c).await;
    let gw = Gw::start(&ollama("gpu-a", &a, "")).await;

    // Clients that hang up mid-stream.
    for path in ["/v1/chat/completions", "/api/chat"] {
        let r = gw.post(path, &chat("llama3", true)).await;
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        assert_eq!(gw.in_flight(), 1);
        drop(s);
        eventually(
            Duration::from_secs(1),
            "a hang-up frees the count",
            || async { gw.in_flight() == 0 },
        )
        .await;
    }
    // The upstream saw the hang-up too: its streams were cancelled, not left running.
    eventually(
        Duration::from_secs(1),
        "the upstream streams are cancelled",
        || async { a.stats().in_flight == 0 },
    )
    .await;

    // Upstream failures (injected 500s and a stream cut mid-way).
    a.set_faults(failing(0));
    let r = gw
        .post("/v1/chat/completions", &chat("llama3", false))
        .await;
    assert_eq!(r.status(), 500);
    a.set_faults(Faults {
        drop_after: Some(3),
        ..Faults::default()
    });
    let text = gw
        .post("/api/chat", &chat("llama3", true))
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(
        text.lines()
            .last()
            .unwrap_or_default()
            .contains("\"error\""),
        "{text}"
    );
    a.set_faults(Faults::default());

    // Many concurrent calls finishing normally.
    let calls = (0..16).map(|_| async {
        gw.post("/v1/chat/completions", &chat("llama3", true))
            .await
            .bytes()
            .await
            .unwrap()
    });
    futures_util::future::join_all(calls).await;
    eventually(Duration::from_secs(1), "no call in flight", || async {
        gw.in_flight() == 0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_node_does_not_hold_up_start_or_calls() {
    // A port from the OS that refuses connections: bound, not listening (yet).
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let b = mock(node("gpu-b", &["llama3:latest"])).await;
    let started = Instant::now();
    let gw = Gw::start(&format!(
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n[[upstreams]]\nname = \"dead\"\nkind = \"ollama\"\nurl = \"http://{dead_addr}\"\nmodels = [\"llama3:latest\"]\n{}",
        ollama("gpu-b", &b, "")
    ))
    .await;
    assert!(started.elapsed() <= Duration::from_secs(1));
    assert_eq!(gw.upstream("dead").state().pool.as_str(), "standby");
    for _ in 0..4 {
        let r = gw.post("/api/chat", &chat("llama3", false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), "gpu-b");
        r.bytes().await.unwrap();
    }

    // The node comes back on that port: the prober returns it to the active pool.
    let back = llmux_mock::MockServer::start_on(
        dead.listen(1024).unwrap(),
        node("dead", &["llama3:latest"]),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "the node comes back", || async {
        let state = gw.upstream("dead").state().clone();
        state.pool.as_str() == "active" && state.latency_ms.is_some()
    })
    .await;
    drop(back);
}

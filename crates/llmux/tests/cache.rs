//! End-to-end: the response cache (`[cache]`, docs/cache.md) against the real binary and mock
//! upstreams that count the calls they get: a repeated call is a hit (free, marked in the call
//! log), other parameters miss, entries expire, `cache-control` bypasses, a hit replays as a
//! stream in the caller's dialect (OpenAI and Anthropic SSE), identical calls in flight share
//! one upstream call, two instances share answers through Redis, an unreachable Redis is
//! bypassed, and bad `[cache]` settings are refused naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{MockConfig, MockServer};
use serde_json::{json, Value};
use std::time::Duration;

/// The mock's count of generation calls.
fn generations(m: &MockServer) -> u64 {
    m.stats().generations
}

/// A call to `path` with `body` and extra headers: (status, `x-llmux-cache`, request id, body).
async fn call(
    gw: &Llmux,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String, String, String) {
    let mut req = client().post(gw.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let cache = header(&r, "x-llmux-cache");
    let id = header(&r, "x-request-id");
    let status = r.status().as_u16();
    (status, cache, id, r.text().await.unwrap())
}

fn answer_text(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {v}"))
        .to_string()
}

/// The `data:` JSON events of an SSE body.
fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// Call-log rows, once `n` of them are written.
async fn rows(gw: &Llmux, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), "call-log rows", async || {
        let (s, v) = admin(gw, "GET", "/calls?limit=100", None).await;
        let calls = v["calls"].as_array().cloned().unwrap_or_default();
        (s == 200 && calls.len() >= n).then_some(calls)
    })
    .await
}

const PRICING: &str = r#"
[[pricing]]
model = "gpt-4o"
input_per_mtok = 5.0
output_per_mtok = 15.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_bypasses_and_replays_streams_for_free() {
    let m = MockServer::start(node("m", &["gpt-4o"])).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}{PRICING}\n[cache]\nenabled = true\n",
        openai("oai", &m.url(), "sk-1")
    ));
    let ask = json!({"model": "gpt-4o", "temperature": 0,
        "messages": [{"role": "user", "content": "what is the cache?"}]});
    let (s, c, miss_id, first) = call(&gw, "/v1/chat/completions", &ask, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"), "{first}");
    assert_eq!(generations(&m), 1);

    let (s, c, hit_id, again) = call(&gw, "/v1/chat/completions", &ask, &[]).await;
    assert_eq!((s, c.as_str()), (200, "hit"), "{again}");
    assert_eq!(generations(&m), 1, "a hit does not reach the upstream");
    assert_eq!(answer_text(&again), answer_text(&first));
    eprintln!("hit answered: {}", answer_text(&again));

    // Fields that do not change the answer are not part of the key.
    let mut same = ask.clone();
    same["user"] = json!("someone-else");
    let (_, c, _, _) = call(&gw, "/v1/chat/completions", &same, &[]).await;
    assert_eq!(c, "hit");

    // Another temperature is another question.
    let mut other = ask.clone();
    other["temperature"] = json!(0.7);
    let (s, c, _, _) = call(&gw, "/v1/chat/completions", &other, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"));
    assert_eq!(generations(&m), 2);

    let no_cache = [("cache-control", "no-cache")];
    let (s, c, _, _) = call(&gw, "/v1/chat/completions", &ask, &no_cache).await;
    assert_eq!((s, c.as_str()), (200, "bypass"));
    assert_eq!(generations(&m), 3, "no-cache goes upstream");

    // The same question streamed: replayed from the cache as a complete OpenAI stream.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (s, c, _, text) = call(&gw, "/v1/chat/completions", &streamed, &[]).await;
    assert_eq!((s, c.as_str()), (200, "hit"), "{text}");
    assert_eq!(generations(&m), 3);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let events = sse_events(&text);
    let replayed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(replayed, answer_text(&first));
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "stop"),
        "{text}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["usage"]["completion_tokens"].as_u64() > Some(0)),
        "{text}"
    );

    // The call log: the miss cost something, the hit nothing, and says it was a hit.
    let log = rows(&gw, 6).await;
    let row = |id: &str| log.iter().find(|r| r["request_id"] == id).cloned().unwrap();
    let (miss, hit) = (row(&miss_id), row(&hit_id));
    eprintln!("miss cost {} / hit cost {}", miss["cost"], hit["cost"]);
    assert_eq!(miss["cache_hit"], false, "{miss}");
    assert!(miss["cost"].as_f64().unwrap() > 0.0, "{miss}");
    assert_eq!(hit["cache_hit"], true, "{hit}");
    assert_eq!(hit["cost"].as_f64(), Some(0.0), "{hit}");
    assert_eq!(hit["upstream"], Value::Null, "{hit}");
    assert_eq!(hit["input_tokens"].as_i64(), Some(0), "{hit}");
    let (_, only_hits) = admin(&gw, "GET", "/calls?cache_hit=true", None).await;
    assert_eq!(
        only_hits["calls"].as_array().unwrap().len(),
        3,
        "{only_hits}"
    );

    let metrics = metrics_text(&gw).await;
    for line in [
        "llmux_cache_requests_total{result=\"hit\"} 3",
        "llmux_cache_requests_total{result=\"miss\"} 2",
        "llmux_cache_requests_total{result=\"bypass\"} 1",
        "llmux_cache_entries 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_hits_replay_as_anthropic_streams_and_no_store_keeps_nothing() {
    let m = MockServer::start(node("m", &["gpt-4o"])).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}\n[cache]\nenabled = true\n",
        openai("oai", &m.url(), "sk-1")
    ));
    let ask = json!({"model": "gpt-4o", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello from claude land"}]});
    let no_store = [("cache-control", "no-store")];
    let (s, c, _, _) = call(&gw, "/v1/messages", &ask, &no_store).await;
    assert_eq!((s, c.as_str()), (200, "bypass"));
    let (s, c, _, whole) = call(&gw, "/v1/messages", &ask, &[]).await;
    assert_eq!(
        (s, c.as_str()),
        (200, "miss"),
        "no-store kept nothing: {whole}"
    );
    assert_eq!(generations(&m), 2);
    let v: Value = serde_json::from_str(&whole).unwrap();
    let text = v["content"][0]["text"].as_str().unwrap().to_string();

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (s, c, _, sse) = call(&gw, "/v1/messages", &streamed, &[]).await;
    assert_eq!((s, c.as_str()), (200, "hit"), "{sse}");
    assert_eq!(generations(&m), 2);
    let events = sse_events(&sse);
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"message_start"), "{sse}");
    assert_eq!(types.last(), Some(&"message_stop"), "{sse}");
    let replayed: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(replayed, text);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "message_delta" && e["usage"]["output_tokens"].as_u64() > Some(0)),
        "{sse}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_passthrough_answers_are_kept_and_replayed_as_ndjson() {
    let m = MockServer::start(node("gpu", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "{}\n[cache]\nenabled = true\n",
        ollama("gpu", &m.url())
    ));
    let whole = chat("llama3", false);
    let (s, c, _, body) = call(&gw, "/api/chat", &whole, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let text = v["message"]["content"].as_str().unwrap().to_string();
    // Ollama streams by default: the same question without `stream` is replayed as NDJSON.
    let mut streamed = whole.clone();
    streamed.as_object_mut().unwrap().remove("stream");
    let (s, c, _, ndjson) = call(&gw, "/api/chat", &streamed, &[]).await;
    assert_eq!((s, c.as_str()), (200, "hit"), "{ndjson}");
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replayed: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(replayed, text);
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{ndjson}");
    assert!(last["eval_count"].as_u64() > Some(0), "{ndjson}");
    assert_eq!(generations(&m), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_ttl() {
    let m = MockServer::start(node("m", &["gpt-4o"])).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}\n[cache]\nenabled = true\nttl = \"1s\"\n",
        openai("oai", &m.url(), "sk-1")
    ));
    let ask = chat("gpt-4o", false);
    let started = std::time::Instant::now();
    let (_, c, _, _) = call(&gw, "/v1/chat/completions", &ask, &[]).await;
    assert_eq!(c, "miss");
    let (_, c, _, _) = call(&gw, "/v1/chat/completions", &ask, &[]).await;
    // On a loaded machine the second call may already come after the TTL.
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(c, "hit");
    }
    eventually(
        Duration::from_secs(20),
        "a miss once the entry expired",
        async || {
            let (_, c, _, _) = call(&gw, "/v1/chat/completions", &ask, &[]).await;
            (c == "miss").then_some(())
        },
    )
    .await;
    let waited = started.elapsed();
    eprintln!("expired after {waited:?} (ttl 1s)");
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert_eq!(generations(&m), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_calls_in_flight_share_one_upstream_call() {
    let m = MockServer::start(MockConfig {
        // Slow enough that the ten calls are all in flight before the first answer comes.
        ttft: Duration::from_millis(1500),
        ..node("m", &["gpt-4o"])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "{}\n[cache]\nenabled = true\n",
        openai("oai", &m.url(), "sk-1")
    ));
    let ask = chat("gpt-4o", false);
    let calls = (0..10).map(|_| {
        let (gw, ask) = (&gw, ask.clone());
        async move { call(gw, "/v1/chat/completions", &ask, &[]).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let texts: Vec<String> = answers.iter().map(|a| answer_text(&a.3)).collect();
    let misses = answers.iter().filter(|a| a.1 == "miss").count();
    let hits = answers.iter().filter(|a| a.1 == "hit").count();
    eprintln!(
        "10 identical calls: {misses} miss, {hits} hit, upstream calls {}",
        generations(&m)
    );
    assert!(answers.iter().all(|a| a.0 == 200));
    assert_eq!((misses, hits), (1, 9));
    assert!(texts.iter().all(|t| *t == texts[0]));
    assert_eq!(generations(&m), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_lets_its_followers_ask_the_upstream_themselves() {
    let m = MockServer::start(node("m", &["gpt-4o"])).await.unwrap();
    // Every call hangs: the leader gives up after the first-byte timeout, with no answer to share.
    m.set_faults(llmux_mock::Faults {
        hang: true,
        ..Default::default()
    });
    let gw = Llmux::start(&format!(
        "{}timeouts = {{ first_byte = \"1s\" }}\n\n[cache]\nenabled = true\n",
        openai("oai", &m.url(), "sk-1")
    ));
    let ask = chat("gpt-4o", false);
    let started = std::time::Instant::now();
    let calls = (0..3).map(|_| {
        let (gw, ask) = (&gw, ask.clone());
        async move { call(gw, "/v1/chat/completions", &ask, &[]).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let took = started.elapsed();
    eprintln!(
        "3 identical calls against a hanging upstream: statuses {:?}, upstream calls {}, {took:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>(),
        generations(&m)
    );
    // Nobody was told a hit, and nobody failed silently: each call made its own attempt after
    // the leader's failed, and got the gateway's error.
    let first = answers[0].0;
    assert!(first >= 500, "{answers:?}");
    assert!(
        answers.iter().all(|a| a.0 == first && a.1 == "miss"),
        "{answers:?}"
    );
    assert_eq!(generations(&m), 3);
    assert!(
        took >= Duration::from_secs(2),
        "the followers waited for the leader: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_bypassed_and_calls_are_served() {
    let m = MockServer::start(node("m", &["gpt-4o"])).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}\n[limits]\nredis_url = \"redis://127.0.0.1:1\"\n[cache]\nenabled = true\nbackend = \"redis\"\n",
        openai("oai", &m.url(), "sk-1")
    ));
    for _ in 0..2 {
        let (s, c, _, body) = call(&gw, "/v1/chat/completions", &chat("gpt-4o", false), &[]).await;
        assert_eq!((s, c.as_str()), (200, "bypass"), "{body}");
    }
    assert_eq!(generations(&m), 2);
    let log = gw.log_text();
    assert_eq!(
        log.matches("response cache backend unavailable").count(),
        1,
        "logged once:\n{log}"
    );
    let metrics = metrics_text(&gw).await;
    assert!(metrics.contains("llmux_cache_errors_total "), "{metrics}");
    assert!(!metrics.contains("llmux_cache_errors_total 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_answers_through_redis() {
    let Ok(redis) = std::env::var("LLMUX_TEST_REDIS_URL") else {
        eprintln!("LLMUX_TEST_REDIS_URL is not set: skipping the shared Redis cache test");
        return;
    };
    let m = MockServer::start(node("m", &["gpt-4o"])).await.unwrap();
    let prefix = format!("cachetest{}x{}", std::process::id(), rand_suffix());
    let config = format!(
        "{}\n[limits]\nredis_url = \"{redis}\"\n[cluster]\nprefix = \"{prefix}\"\n[cache]\nenabled = true\nbackend = \"redis\"\nttl = \"1m\"\n",
        openai("oai", &m.url(), "sk-1")
    );
    let a = Llmux::start(&config);
    let b = Llmux::start(&config);
    let ask = json!({"model": "gpt-4o",
        "messages": [{"role": "user", "content": format!("shared question {prefix}")}]});
    let (s, c, _, first) = call(&a, "/v1/chat/completions", &ask, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"), "{first}");
    let (s, c, _, second) = call(&b, "/v1/chat/completions", &ask, &[]).await;
    assert_eq!((s, c.as_str()), (200, "hit"), "{second}");
    assert_eq!(answer_text(&first), answer_text(&second));
    assert_eq!(generations(&m), 1, "one upstream call for both instances");
    eprintln!("instance b served instance a's answer from Redis (prefix {prefix})");
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[test]
fn config_check_shows_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llmux.toml");
    std::fs::write(
        &path,
        "[cache]\nenabled = true\nttl = \"5m\"\nmodels = [\"gpt-4o\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("cache:     memory for 300s, at most 10000 answers; gpt-4o; coalescing on"),
        "{text}"
    );
}

#[test]
fn bad_cache_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[cache]\nenabled = true\nbackend = \"redis\"\n",
            "cache.backend",
            "limits.redis_url",
        ),
        ("[cache]\nbackend = \"disk\"\n", "cache.backend", "memory"),
        ("[cache]\nttl = \"0s\"\n", "cache.ttl", "between"),
        ("[cache]\nttl = \"soon\"\n", "cache.ttl", ""),
        ("[cache]\nmax_entries = 0\n", "cache.max_entries", "between"),
        (
            "[cache]\nmax_entry_bytes = \"1TiB\"\n",
            "cache.max_entry_bytes",
            "",
        ),
        ("[cache]\nmodels = [\"\"]\n", "cache.models[0]", "empty"),
        ("[cache]\nenable = true\n", "enable", ""),
    ];
    for (text, key, reason) in cases {
        let path = dir.path().join("llmux.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(err.contains(key) && err.contains(reason), "{text}: {err}");
    }
}

/// A hit replayed as Gemini's streamed JSON array (`:streamGenerateContent` without
/// `alt=sse`) is `application/json` of a known size, yet a stream: it is never compressed,
/// while the same answer asked for whole is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_gemini_stream_is_never_compressed() {
    let mut cfg = node("m", &["gpt-4o"]);
    cfg.chunks = 200; // a long answer: well over the 1 KiB compression threshold
    let m = MockServer::start(cfg).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}\n[cache]\nenabled = true\n",
        openai("oai", &m.url(), "sk-1")
    ));
    let ask = json!({"contents": [{"role": "user", "parts": [{"text": "a long story"}]}]});
    let gzip = [("accept-encoding", "gzip")];
    let send = async |path: &str| {
        let r = client()
            .post(gw.url(path))
            .header("accept-encoding", "gzip")
            .json(&ask)
            .send()
            .await
            .unwrap();
        let encoding = header(&r, "content-encoding");
        let cache = header(&r, "x-llmux-cache");
        let body = r.bytes().await.unwrap();
        (cache, encoding, body)
    };
    let (s, c, _, first) = call(&gw, "/v1beta/models/gpt-4o:generateContent", &ask, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"), "{first}");
    assert!(first.len() > 1024, "a long answer: {} bytes", first.len());

    let (cache, encoding, body) = send("/v1beta/models/gpt-4o:streamGenerateContent").await;
    assert_eq!(cache, "hit");
    assert_eq!(encoding, "", "a replayed stream is not compressed");
    let chunks: Value = serde_json::from_slice(&body).unwrap();
    assert!(chunks.as_array().is_some_and(|a| !a.is_empty()), "{chunks}");
    assert!(body.len() > 1024);

    let (cache, encoding, _) = send("/v1beta/models/gpt-4o:generateContent").await;
    assert_eq!((cache.as_str(), encoding.as_str()), ("hit", "gzip"));
    let _ = gzip;
}

//! End-to-end: the model catalogue — normalised names, switched-off models in every listing
//! and dialect, renames, batch operations (all or nothing), refresh, and discovery's
//! concurrency cap and minimum interval (docs/catalog.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::MockServer;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn post(gw: &Llmux, path: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(gw.url(path)).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(gw: &Llmux, path: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// The model names of each of the four listings: OpenAI, Anthropic, Ollama, Gemini.
async fn listings(gw: &Llmux) -> [Vec<String>; 4] {
    let names = |v: &Value, list: &str, field: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_str().unwrap().to_string())
            .collect()
    };
    let openai = get(gw, "/v1/models", &[]).await;
    let anthropic = get(gw, "/v1/models", &[("anthropic-version", "2023-06-01")]).await;
    // Anthropic's own list shape, not OpenAI's under another header.
    assert_eq!(anthropic["has_more"], false, "{anthropic}");
    assert!(anthropic.get("object").is_none(), "{anthropic}");
    if let Some(first) = anthropic["data"].as_array().and_then(|d| d.first()) {
        assert_eq!(first["type"], "model", "{anthropic}");
        assert_eq!(anthropic["first_id"], first["id"], "{anthropic}");
        assert!(anthropic["last_id"].is_string(), "{anthropic}");
    }
    assert_eq!(openai["object"], "list", "{openai}");
    let ollama = get(gw, "/api/tags", &[]).await;
    let gemini = get(gw, "/v1beta/models", &[]).await;
    [
        names(&openai, "data", "id"),
        names(&anthropic, "data", "id"),
        names(&ollama, "models", "name"),
        names(&gemini, "models", "name"),
    ]
}

async fn chat_status(gw: &Llmux, model: &str) -> (u16, Value) {
    post(gw, "/v1/chat/completions", &chat(model, false)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalised_names_route_and_collisions_are_reported() {
    let mock = MockServer::start(node(
        "oa",
        &["gpt-4o-2024-08-06", "gpt-4o-2024-05-13", "Mixed-Case-Model"],
    ))
    .await
    .unwrap();
    let cfg = format!(
        "{}models = [\"gpt-4o-2024-08-06\", \"gpt-4o-2024-05-13\", \"Mixed-Case-Model\"]\n",
        openai("oa", &mock.url(), "sk-1")
    );
    let gw = Llmux::start(&cfg);
    // Each requested name, and the name the upstream was sent.
    for (asked, sent) in [
        ("gpt-4o", "gpt-4o-2024-08-06"),
        ("openai/gpt-4o", "gpt-4o-2024-08-06"),
        ("models/gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("GPT-4O-2024-05-13", "gpt-4o-2024-05-13"),
        ("mixed-case-model", "Mixed-Case-Model"),
        ("oa/gpt-4o", "gpt-4o-2024-08-06"),
    ] {
        let (status, body) = chat_status(&gw, asked).await;
        assert_eq!(status, 200, "{asked}: {body}");
        assert_eq!(body["model"], sent, "{asked}");
    }
    let (status, body) = chat_status(&gw, "gpt-5").await;
    assert_eq!(status, 404, "{body}");

    // The two snapshots both answer to `gpt-4o`: reported, with where it goes.
    let (status, found) = admin(&gw, "GET", "/models/collisions", None).await;
    assert_eq!(status, 200);
    let c = found
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["normalized"] == "gpt-4o")
        .unwrap_or_else(|| panic!("{found}"));
    assert_eq!(c["rule"], "dated_snapshots");
    assert_eq!(c["routes_to"], "gpt-4o-2024-08-06");
    eprintln!("collisions reported by the admin API: {found}");
    let (ok, out, err) = gw.run_cli(&["config", "check", "llmux.toml"]);
    assert!(ok, "{err}");
    assert!(out.contains("catalog:   normalize case"), "{out}");
    assert!(
        err.contains("model name collision (dated_snapshots)") && err.contains("\"gpt-4o\""),
        "{err}"
    );

    // With the rules off only exact names (and Ollama's `:latest`) answer.
    let strict = Llmux::start(&format!("[catalog]\nnormalize = []\n{cfg}"));
    assert_eq!(chat_status(&strict, "gpt-4o").await.0, 404);
    assert_eq!(chat_status(&strict, "mixed-case-model").await.0, 404);
    assert_eq!(chat_status(&strict, "Mixed-Case-Model").await.0, 200);
}

/// The error shape each dialect answers a 404 with.
async fn assert_404_everywhere(gw: &Llmux, model: &str) {
    let (s, b) = chat_status(gw, model).await;
    assert_eq!(s, 404, "openai: {b}");
    assert_eq!(b["error"]["code"], "model_not_found", "{b}");
    let anthropic = json!({"model": model, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let (s, b) = post(gw, "/v1/messages", &anthropic).await;
    assert_eq!(s, 404, "anthropic: {b}");
    assert_eq!(b["type"], "error", "{b}");
    assert_eq!(b["error"]["type"], "not_found_error", "{b}");
    let ollama = json!({"model": model, "stream": false,
        "messages": [{"role": "user", "content": "hi"}]});
    let (s, b) = post(gw, "/api/chat", &ollama).await;
    assert_eq!(s, 404, "ollama: {b}");
    assert!(b["error"].as_str().unwrap().contains(model), "{b}");
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let path = format!("/v1beta/models/{model}:generateContent");
    let (s, b) = post(gw, &path, &gemini).await;
    assert_eq!(s, 404, "gemini: {b}");
    assert_eq!(b["error"]["status"], "NOT_FOUND", "{b}");
    // The single-model lookups too.
    for (path, what) in [
        (format!("/v1/models/{model}"), "openai"),
        (format!("/v1beta/models/{model}"), "gemini"),
    ] {
        let r = client().get(gw.url(&path)).send().await.unwrap();
        let status = r.status().as_u16();
        let b: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 404, "{what} {path}: {b}");
        assert!(b["error"].is_object(), "{what} {path}: {b}");
    }
}

async fn metric(gw: &Llmux, line_start: &str) -> String {
    let text = metrics_text(gw).await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switched_off_model_vanishes_from_every_listing_and_404s_in_every_dialect() {
    let mock = MockServer::start(node("n", &["llama3:latest", "mistral:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&ollama("n", &mock.url()));
    let lists = listings(&gw).await;
    for list in &lists {
        assert!(list.iter().any(|m| m.contains("mistral")), "{lists:?}");
    }
    assert_eq!(metric(&gw, "llmux_models ").await, "llmux_models 2");
    let (status, m) = admin(
        &gw,
        "POST",
        "/models",
        Some(json!({"name": "mistral", "enabled": false})),
    )
    .await;
    assert_eq!(status, 201, "{m}");
    let lists = listings(&gw).await;
    for list in &lists {
        assert!(!list.iter().any(|m| m.contains("mistral")), "{list:?}");
        assert!(list.iter().any(|m| m.contains("llama3")), "{list:?}");
    }
    eprintln!("listings with mistral switched off: {lists:?}");
    assert_404_everywhere(&gw, "mistral").await;
    assert_eq!(metric(&gw, "llmux_models ").await, "llmux_models 1");
    assert_eq!(
        metric(&gw, "llmux_upstream_models{").await,
        "llmux_upstream_models{upstream=\"n\"} 1"
    );
    // On again, through a batch.
    let id = m["id"].as_str().unwrap();
    let (status, b) = admin(
        &gw,
        "POST",
        "/models/batch",
        Some(json!({"ids": [id], "enabled": true})),
    )
    .await;
    assert_eq!((status, b["count"].as_u64()), (200, Some(1)), "{b}");
    assert_eq!(chat_status(&gw, "mistral").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_model_answers_by_its_new_name_only() {
    let mock = MockServer::start(node("n", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&ollama("n", &mock.url()));
    let (_, m) = admin(&gw, "POST", "/models", Some(json!({"name": "llama3"}))).await;
    let id = m["id"].as_str().unwrap().to_string();
    let (status, r) = admin(
        &gw,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "house-model"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["name"].as_str(), r["original_name"].as_str()),
        (Some("house-model"), Some("llama3"))
    );
    let (status, body) = chat_status(&gw, "house-model").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model"], "llama3:latest",
        "sent upstream by its own name"
    );
    assert_404_everywhere(&gw, "llama3").await;
    for list in listings(&gw).await {
        assert!(list.iter().any(|m| m.contains("house-model")), "{list:?}");
        assert!(!list.iter().any(|m| m.contains("llama3")), "{list:?}");
    }
    // Renamed again, keeping the previous name as an alias.
    let (status, r) = admin(
        &gw,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "house-2", "keep_alias": true})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["original_name"], "llama3");
    assert_eq!(chat_status(&gw, "house-2").await.0, 200);
    assert_eq!(chat_status(&gw, "house-model").await.0, 200);
    assert_eq!(chat_status(&gw, "llama3").await.0, 404);
    // Bad input changes nothing.
    for (bad, code) in [
        (json!({"keep_alias": true}), 400),
        (json!({"name": ""}), 400),
        (json!({"name": "x", "colour": "red"}), 400),
    ] {
        let (status, r) = admin(&gw, "PATCH", &format!("/models/{id}"), Some(bad.clone())).await;
        assert_eq!(status, code, "{bad}: {r}");
    }
    let (status, _) = admin(&gw, "PATCH", "/models/md_nope", Some(json!({"name": "y"}))).await;
    assert_eq!(status, 404);
    // A new name that an alias holds: refused (the alias would take its calls), nothing
    // changed; once the alias is gone the rename goes through.
    admin(
        &gw,
        "POST",
        "/aliases",
        Some(json!({"name": "house-2x", "targets": ["house-2"]})),
    )
    .await;
    let (status, r) = admin(
        &gw,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "house-2x"})),
    )
    .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("alias"), "{r}");
    assert_eq!(chat_status(&gw, "house-2").await.0, 200, "still house-2");
    admin(&gw, "DELETE", "/aliases/house-2x", None).await;
    let (status, r) = admin(
        &gw,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "house-2x"})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    admin(
        &gw,
        "POST",
        "/aliases",
        Some(json!({"name": "house-2x", "targets": ["elsewhere"]})),
    )
    .await;
    let (status, r) = admin(
        &gw,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "house-3", "keep_alias": true})),
    )
    .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("house-2x"), "{r}");
    let (_, m) = admin(&gw, "GET", "/models", None).await;
    assert!(
        m.to_string().contains("\"house-2x\""),
        "nothing half-applied: {m}"
    );
    // Renamed back: the original name answers again.
    let (status, r) = admin(
        &gw,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "llama3"})),
    )
    .await;
    assert_eq!((status, r["renamed"].as_bool()), (200, Some(false)), "{r}");
    assert_eq!(chat_status(&gw, "llama3").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_all_or_nothing() {
    let gw = Llmux::start("");
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let (_, m) = admin(&gw, "POST", "/models", Some(json!({"name": name}))).await;
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let enabled = async || -> Vec<bool> {
        let (_, all) = admin(&gw, "GET", "/models", None).await;
        all.as_array()
            .unwrap()
            .iter()
            .map(|m| m["enabled"].as_bool().unwrap())
            .collect()
    };
    let (status, b) = admin(
        &gw,
        "POST",
        "/models/batch",
        Some(json!({"ids": [ids[0], ids[1], "md_nope"], "enabled": false})),
    )
    .await;
    assert_eq!(status, 400, "{b}");
    assert!(b.to_string().contains("md_nope"), "{b}");
    assert_eq!(
        enabled().await,
        vec![true, true, true],
        "nothing switched off"
    );
    for bad in [
        json!({"ids": [], "enabled": false}),
        json!({"ids": [ids[0]], "enabled": false, "delete": true}),
        json!({"ids": [ids[0], ids[0]], "delete": true}),
        json!({"ids": [ids[0]]}),
    ] {
        let (status, b) = admin(&gw, "POST", "/models/batch", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {b}");
    }
    let (status, b) = admin(
        &gw,
        "POST",
        "/models/batch",
        Some(json!({"ids": [ids[0], ids[1]], "enabled": false})),
    )
    .await;
    assert_eq!((status, b["count"].as_u64()), (200, Some(2)), "{b}");
    assert_eq!(enabled().await, vec![false, false, true]);
    let (status, _) = admin(
        &gw,
        "POST",
        "/models/batch",
        Some(json!({"ids": [ids[2], "md_gone"], "delete": true})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(enabled().await.len(), 3, "nothing deleted");
    let (status, _) = admin(
        &gw,
        "POST",
        "/models/batch",
        Some(json!({"ids": ids, "delete": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(enabled().await.is_empty());

    // Keys.
    admin(&gw, "POST", "/apps", Some(json!({"name": "app"}))).await;
    let mut keys = Vec::new();
    for name in ["k1", "k2"] {
        let (_, k) = admin(
            &gw,
            "POST",
            "/keys",
            Some(json!({"name": name, "app": "app"})),
        )
        .await;
        keys.push(k["id"].as_str().unwrap().to_string());
    }
    let status_of = async |id: &str| {
        let (_, k) = admin(&gw, "GET", &format!("/keys/{id}"), None).await;
        k["status"].as_str().unwrap().to_string()
    };
    let (status, b) = admin(
        &gw,
        "POST",
        "/keys/batch",
        Some(json!({"ids": [keys[0], "vk_nope"], "revoke": true})),
    )
    .await;
    assert_eq!(status, 400, "{b}");
    assert!(b.to_string().contains("vk_nope"), "{b}");
    assert_eq!(status_of(&keys[0]).await, "active", "nothing revoked");
    let (status, b) = admin(
        &gw,
        "POST",
        "/keys/batch",
        Some(json!({"ids": keys, "revoke": true})),
    )
    .await;
    assert_eq!((status, b["count"].as_u64()), (200, Some(2)), "{b}");
    for id in &keys {
        assert_eq!(status_of(id).await, "revoked");
    }
    // Deleted in one batch: all or nothing too, and neither or both actions is a 400.
    for bad in [
        json!({"ids": keys}),
        json!({"ids": keys, "revoke": true, "delete": true}),
        json!({"ids": [keys[0], "vk_nope"], "delete": true}),
    ] {
        let (status, b) = admin(&gw, "POST", "/keys/batch", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {b}");
        let (status, _) = admin(&gw, "GET", &format!("/keys/{}", keys[0]), None).await;
        assert_eq!(status, 200, "{bad}: nothing deleted");
    }
    let (status, b) = admin(
        &gw,
        "POST",
        "/keys/batch",
        Some(json!({"ids": keys, "delete": true})),
    )
    .await;
    assert_eq!((status, b["deleted"].as_bool()), (200, Some(true)), "{b}");
    for id in &keys {
        let (status, _) = admin(&gw, "GET", &format!("/keys/{id}"), None).await;
        assert_eq!(status, 404, "{id} deleted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rediscovers_now() {
    let mock = MockServer::start(node("n", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[health]\ninterval = \"60s\"\n{}",
        ollama("n", &mock.url())
    ));
    // The start-up probe runs in the background now; the model list waits for it, so the
    // node's new model is added only after the first round has listed the old ones.
    let (status, models) = admin(&gw, "GET", "/models", None).await;
    assert_eq!(status, 200, "{models}");
    assert!(models.to_string().contains("llama3"), "{models}");
    mock.set_models(vec!["llama3:latest".into(), "qwen:latest".into()]);
    assert_eq!(chat_status(&gw, "qwen").await.0, 404, "not discovered yet");
    let (status, up) = admin(&gw, "POST", "/upstreams/n/refresh", None).await;
    assert_eq!(status, 200, "{up}");
    assert!(up["models"].to_string().contains("qwen"), "{up}");
    assert_eq!(chat_status(&gw, "qwen").await.0, 200);
    let (status, b) = admin(&gw, "POST", "/upstreams/nope/refresh", None).await;
    assert_eq!(status, 404, "{b}");
    assert!(b.to_string().contains("nope"), "{b}");
}

/// An Ollama node that answers `/api/tags` after `delay`, counting listings in progress (and
/// the most at once across every node sharing `gauge`) and listings in all.
struct CountingNode {
    url: String,
    listings: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

async fn counting_node(name: &str, delay: Duration, gauge: Arc<Gauge>) -> CountingNode {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listings = Arc::new(AtomicUsize::new(0));
    let (count, name) = (Arc::clone(&listings), name.to_string());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (gauge, count, name) = (Arc::clone(&gauge), Arc::clone(&count), name.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if head.starts_with("GET /api/tags") {
                    count.fetch_add(1, Ordering::SeqCst);
                    let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                    gauge.max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    gauge.now.fetch_sub(1, Ordering::SeqCst);
                    json!({"models": [{"name": format!("{name}:latest"), "model": format!("{name}:latest"),
                        "modified_at": "2024-05-01T00:00:00Z", "size": 1, "digest": "d",
                        "details": {"format": "gguf", "family": "llama"}}]})
                } else {
                    json!({"models": []})
                }
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    CountingNode { url, listings }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_at_most_n_upstreams_at_once() {
    let gauge = Arc::new(Gauge::default());
    let mut cfg =
        "[health]\ninterval = \"60s\"\ntimeout = \"10s\"\ndiscovery_concurrency = 3\n".to_string();
    for i in 0..12 {
        let n = counting_node(
            &format!("m{i}"),
            Duration::from_millis(300),
            Arc::clone(&gauge),
        )
        .await;
        cfg.push_str(&ollama(&format!("n{i}"), &n.url));
    }
    let gw = Llmux::start(&cfg);
    let names = eventually(Duration::from_secs(20), "every node listed", async || {
        let list = get(&gw, "/v1/models", &[]).await;
        let n = list["data"].as_array().map_or(0, Vec::len);
        (n == 12).then_some(n)
    })
    .await;
    let max = gauge.max.load(Ordering::SeqCst);
    eprintln!(
        "discovery_concurrency = 3: {names} models from 12 nodes, at most {max} listings at once"
    );
    assert!(
        (1..=3).contains(&max),
        "at most 3 listings at once, saw {max}"
    );
    // The cap holds across callers too: six admin refreshes at once (each its own probe)
    // still list at most 3 nodes at a time.
    gauge.max.store(0, Ordering::SeqCst);
    let refreshes = (0..6).map(|i| {
        let gw = &gw;
        async move {
            admin(gw, "POST", &format!("/upstreams/n{i}/refresh"), None)
                .await
                .0
        }
    });
    let statuses = futures_util::future::join_all(refreshes).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let max = gauge.max.load(Ordering::SeqCst);
    eprintln!("six refreshes at once: at most {max} listings at once");
    assert!(
        (1..=3).contains(&max),
        "at most 3 listings at once across refreshes, saw {max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_upstream_is_not_listed_more_often_than_the_minimum_interval() {
    let gauge = Arc::new(Gauge::default());
    let fast = counting_node("fast", Duration::ZERO, Arc::clone(&gauge)).await;
    let gw = Llmux::start(&format!(
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\nmin_discovery_interval = \"3s\"\n{}",
        ollama("n", &fast.url)
    ));
    eventually(Duration::from_secs(10), "node listed", async || {
        let list = get(&gw, "/v1/models", &[]).await;
        list["data"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    let start = fast.listings.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let listed = fast.listings.load(Ordering::SeqCst) - start;
    eprintln!("health.interval 1s, min_discovery_interval 3s: {listed} listings in 6.5 s");
    assert!((1..=3).contains(&listed), "{listed} listings in 6.5 s");
    // An admin refresh is not held back.
    let (status, _) = admin(&gw, "POST", "/upstreams/n/refresh", None).await;
    assert_eq!(status, 200);
    assert!(fast.listings.load(Ordering::SeqCst) - start > listed);
}

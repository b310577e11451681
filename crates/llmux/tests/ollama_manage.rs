//! End-to-end: Ollama model management through the gateway — `POST /api/pull` on every active
//! node or one pinned node (merged NDJSON progress, each line naming its upstream), the model
//! routable as soon as the pull ends, `DELETE /api/delete`, a model the registry lacks, and
//! admin-only access when auth is on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{MockConfig, MockServer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A node that pulls at `step` per progress line.
fn slow_puller(name: &str, step: Duration) -> MockConfig {
    MockConfig {
        pull_step: step,
        ..node(name, &["llama3:latest"])
    }
}

/// Two nodes, gpu-a and gpu-b, behind a gateway (`extra` appended to the config).
async fn two_nodes(extra: &str) -> (Llmux, MockServer, MockServer) {
    let step = Duration::from_millis(10);
    let a = MockServer::start(slow_puller("gpu-a", step)).await.unwrap();
    let b = MockServer::start(slow_puller("gpu-b", step)).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}{}{extra}",
        ollama("gpu-a", &a.url()),
        ollama("gpu-b", &b.url())
    ));
    (gw, a, b)
}

/// The lines of a streamed pull, each with when it arrived (since the request was sent).
async fn pull_lines(gw: &Llmux, model: &str, token: Option<&str>) -> (u16, Vec<(Duration, Value)>) {
    let mut req = client()
        .post(gw.url("/api/pull"))
        .json(&json!({"model": model}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let started = Instant::now();
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let v: Value = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("not JSON: {e}: {}", String::from_utf8_lossy(&line)));
            lines.push((started.elapsed(), v));
        }
    }
    assert!(
        buf.iter().all(u8::is_ascii_whitespace),
        "a partial last line"
    );
    (status, lines)
}

async fn chat_on(gw: &Llmux, model: &str) -> (u16, String) {
    let r = client()
        .post(gw.url("/api/chat"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), header(&r, "x-llmux-upstream"))
}

async fn tags(gw: &Llmux) -> Vec<String> {
    let v: Value = client()
        .get(gw.url("/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_streams_every_nodes_progress_and_the_model_routes_at_once() {
    let (gw, _a, _b) = two_nodes("").await;
    assert_eq!(chat_on(&gw, "mistral").await.0, 404, "not pulled yet");

    let (status, lines) = pull_lines(&gw, "mistral", None).await;
    assert_eq!(status, 200);
    let mut per_node: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for (_, l) in &lines {
        let node = l["upstream"]
            .as_str()
            .expect("every line names its upstream");
        per_node.entry(node.to_string()).or_default().push(l);
    }
    assert_eq!(per_node.keys().collect::<Vec<_>>(), ["gpu-a", "gpu-b"]);
    for (node, ls) in &per_node {
        let statuses: Vec<&str> = ls.iter().filter_map(|l| l["status"].as_str()).collect();
        assert_eq!(statuses.first(), Some(&"pulling manifest"), "{node}");
        assert_eq!(
            &statuses[statuses.len() - 3..],
            ["verifying sha256 digest", "writing manifest", "success"],
            "{node}"
        );
        // Layer progress as Ollama sends it: digest, total, and a growing `completed`.
        let layer: Vec<&&Value> = ls.iter().filter(|l| l.get("digest").is_some()).collect();
        assert!(layer.len() >= 5, "{node}: {layer:?}");
        let digest = layer[0]["digest"].as_str().unwrap();
        assert!(digest.starts_with("sha256:"));
        assert_eq!(layer[0]["status"], format!("pulling {}", &digest[7..19]));
        let done: Vec<u64> = layer
            .iter()
            .filter(|l| l["digest"] == digest)
            .map(|l| l["completed"].as_u64().unwrap_or(0))
            .collect();
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
        assert_eq!(Some(&layer[0]["total"].as_u64().unwrap()), done.last());
    }
    // The lines arrived as the nodes sent them, not all at the end.
    let first = lines.first().unwrap().0;
    let last = lines.last().unwrap().0;
    eprintln!(
        "pull of mistral on 2 nodes: {} lines, first after {first:?}, last after {last:?}",
        lines.len()
    );
    assert!(
        last - first >= Duration::from_millis(100),
        "{first:?} .. {last:?}"
    );

    // Routable right after the stream ended: no wait for the prober's next round.
    let (status, upstream) = chat_on(&gw, "mistral").await;
    assert_eq!(status, 200);
    assert!(["gpu-a", "gpu-b"].contains(&upstream.as_str()));
    let listed = tags(&gw).await;
    assert!(listed.iter().any(|m| m == "mistral:latest"), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_pull_and_delete_touch_one_node() {
    let (gw, _a, _b) = two_nodes("").await;
    let (status, lines) = pull_lines(&gw, "gpu-a/qwen2.5", None).await;
    assert_eq!(status, 200);
    assert!(
        lines.iter().all(|(_, l)| l["upstream"] == "gpu-a"),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap().1["status"], "success");
    assert_eq!(chat_on(&gw, "qwen2.5").await, (200, "gpu-a".to_string()));
    assert_eq!(chat_on(&gw, "gpu-b/qwen2.5").await.0, 404);

    // `"stream": false`: one answer.
    let r = client()
        .post(gw.url("/api/pull"))
        .json(&json!({"model": "gpu-b/phi3", "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(
        v["upstreams"],
        json!([{"upstream": "gpu-b", "status": "success"}])
    );
    assert_eq!(chat_on(&gw, "phi3").await, (200, "gpu-b".to_string()));

    let del = |model: &str| {
        client()
            .delete(gw.url("/api/delete"))
            .json(&json!({"model": model}))
            .send()
    };
    let r = del("gpu-a/qwen2.5").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(chat_on(&gw, "qwen2.5").await.0, 404, "gone at once");
    assert!(!tags(&gw).await.iter().any(|m| m.starts_with("qwen2.5")));
    // A bare name deletes on every node that has it; a name none has is Ollama's 404.
    let r = del("llama3").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["upstreams"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(chat_on(&gw, "llama3").await.0, 404);
    let r = del("llama3").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("'llama3' not found"),
        "{v}"
    );
    // Pinned to a node that lacks it: the node's own 404, named.
    let r = del("gpu-a/mistral").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("gpu-a"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_the_registry_lacks_gets_ollamas_error() {
    let (gw, _a, _b) = two_nodes("").await;
    let (status, lines) = pull_lines(&gw, "no-such-model", None).await;
    assert_eq!(
        status, 200,
        "streamed: the status went out before the nodes answered"
    );
    let errors: Vec<&Value> = lines
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 2, "{lines:?}");
    for e in errors {
        assert_eq!(e["error"], "pull model manifest: file does not exist");
        assert!(["gpu-a", "gpu-b"].contains(&e["upstream"].as_str().unwrap()));
        assert_eq!(e["model"], "no-such-model", "the line names the model");
    }
    let r = client()
        .post(gw.url("/api/pull"))
        .json(&json!({"model": "gpu-a/no-such-model", "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("gpu-a") && msg.contains("file does not exist"),
        "{msg}"
    );
    // Bad input names the thing.
    let r = client()
        .post(gw.url("/api/pull"))
        .json(&json!({"stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "model is required"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pin_to_a_hosted_upstream_is_refused_naming_it() {
    let hosted = MockServer::start(node("hosted", &["gpt-4o"]))
        .await
        .unwrap();
    let (gw, a, _b) = two_nodes(&openai("oai", &hosted.url(), "sk-1")).await;
    for (method, path) in [("POST", "/api/pull"), ("DELETE", "/api/delete")] {
        let r = client()
            .request(method.parse().unwrap(), gw.url(path))
            .json(&json!({"model": "oai/gpt-4o", "stream": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("'oai'") && msg.contains("Ollama nodes only"),
            "{method} {path}: {msg}"
        );
    }
    assert_eq!(
        a.stats().by_path.get("/api/pull"),
        None,
        "no node was asked"
    );
}

async fn login(gw: &Llmux, user: &str) -> String {
    let r = client()
        .post(gw.url("/admin/v1/login"))
        .json(&json!({"username": user, "password": "a long password 1"}))
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_on_only_administrators_manage_models() {
    let (gw, _a, _b) = two_nodes("[auth]\nrequired = true\n").await;
    let pull = |token: Option<String>| {
        let mut req = client()
            .post(gw.url("/api/pull"))
            .json(&json!({"model": "gpu-a/mistral", "stream": false}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let r = pull(None).await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("administrator"),
        "{v}"
    );

    let (s, _) = admin(&gw, "POST", "/apps", Some(json!({"name": "app"}))).await;
    assert_eq!(s, 201);
    let (s, key) = admin(
        &gw,
        "POST",
        "/keys",
        Some(json!({"name": "k", "app": "app"})),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let r = pull(key["key"].as_str().map(str::to_string)).await.unwrap();
    assert_eq!(r.status(), 401, "a virtual key is not an administrator");

    for (user, role) in [("viewer", "viewer"), ("boss", "admin")] {
        let (s, _) = admin(
            &gw,
            "POST",
            "/users",
            Some(json!({"username": user, "password": "a long password 1", "role": role})),
        )
        .await;
        assert_eq!(s, 201);
    }
    let r = pull(Some(login(&gw, "viewer").await)).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = pull(Some(login(&gw, "boss").await)).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = pull(Some(ADMIN.to_string())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw
        .log_text()
        .contains("model management by an administrator"));
    let (status, lines) = pull_lines(&gw, "gpu-b/mistral", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert_eq!(lines.last().unwrap().1["status"], "success");
}

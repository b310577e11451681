//! See main.rs. The model catalogue in a cluster (docs/catalog.md): a model switched off, a
//! rename and a batch made on one instance are live on the others within the sync bound.

use std::time::{Duration, Instant};

use llmux_mock::MockServer;
use serde_json::json;

use crate::common::cluster::{Spec, TestCluster};
use crate::common::{admin, chat, client, node, ollama, Llmux};

const LIMIT: Duration = Duration::from_secs(10);

async fn status(n: &Llmux, model: &str) -> u16 {
    let resp = client()
        .post(n.url("/v1/chat/completions"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let _ = resp.bytes().await;
    s
}

async fn listed(n: &Llmux) -> String {
    let v: serde_json::Value = client()
        .get(n.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.to_string()
}

/// Polls until `check` holds on every other instance; prints and returns how long it took.
async fn everywhere(nodes: &[Llmux], what: &str, check: impl AsyncFn(&Llmux) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for n in nodes {
            all &= check(n).await;
        }
        if all {
            let took = start.elapsed();
            println!("catalogue in a cluster: {what} on every other instance after {took:?}");
            return took;
        }
        assert!(start.elapsed() < LIMIT, "{what}: not seen after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_changes_reach_every_instance() {
    let mock = MockServer::start(node("n", &["llama3:latest", "mistral:latest"]))
        .await
        .unwrap();
    let body = format!("[health]\ninterval = \"2s\"\n{}", ollama("n", &mock.url()));
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let (a, others) = c.nodes.split_first().unwrap();
    let (s, m) = admin(
        a,
        "POST",
        "/models",
        Some(json!({"name": "mistral", "enabled": false})),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    let off = everywhere(others, "mistral switched off", async |n| {
        !listed(n).await.contains("mistral") && status(n, "mistral").await == 404
    })
    .await;
    let (_, l) = admin(a, "POST", "/models", Some(json!({"name": "llama3"}))).await;
    let id = l["id"].as_str().unwrap();
    let (s, r) = admin(
        a,
        "PATCH",
        &format!("/models/{id}"),
        Some(json!({"name": "house"})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let renamed = everywhere(others, "llama3 renamed to house", async |n| {
        status(n, "house").await == 200 && status(n, "llama3").await == 404
    })
    .await;
    let (s, b) = admin(
        a,
        "POST",
        "/models/batch",
        Some(json!({"ids": [m["id"], id], "delete": true})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let batch = everywhere(
        others,
        "batch delete (both back as discovered)",
        async |n| status(n, "mistral").await == 200 && status(n, "llama3").await == 200,
    )
    .await;
    for took in [off, renamed, batch] {
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

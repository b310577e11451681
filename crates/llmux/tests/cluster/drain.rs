//! See main.rs. A drain made on instance A (`POST /admin/v1/upstreams/{name}/drain`) is in
//! force on every instance within a second, and so is the undrain.

use std::time::{Duration, Instant};

use llmux_mock::MockServer;

use crate::common::cluster::{Spec, TestCluster};
use crate::common::{admin, chat, client, header, node, ollama, Llmux};

const BOUND: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(10);

/// A chat call for `model` on `n`: its status and the upstream that answered.
async fn answered_by(n: &Llmux, model: &str) -> (u16, String) {
    let r = client()
        .post(n.url("/v1/chat/completions"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), header(&r, "x-llmux-upstream"))
}

async fn drain_of(n: &Llmux) -> serde_json::Value {
    admin(n, "GET", "/upstreams/a", None).await.1["drain"].clone()
}

/// How long until every node in `nodes` satisfies the state; fails past `LIMIT`.
async fn until_all(nodes: &[Llmux], drained: bool) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for n in nodes {
            let pinned = answered_by(n, "a/llama3").await.0;
            let shown = drain_of(n).await;
            let ok = if drained {
                pinned == 503 && shown == "drained"
            } else {
                pinned == 200 && shown.is_null()
            };
            all &= ok;
        }
        if all {
            return start.elapsed();
        }
        assert!(start.elapsed() < LIMIT, "drained={drained}: not everywhere");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_on_one_instance_holds_on_every_instance() {
    let a = MockServer::start(node("a", &["llama3:latest"]))
        .await
        .unwrap();
    let b = MockServer::start(node("b", &["llama3:latest"]))
        .await
        .unwrap();
    let body = format!(
        "[health]\ninterval = \"60s\"\n{}{}",
        ollama("a", &a.url()),
        ollama("b", &b.url())
    );
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let (s, v) = admin(&c.nodes[0], "POST", "/upstreams/a/drain", None).await;
    assert_eq!(s, 200, "{v}");
    let took = until_all(&c.nodes[1..], true).await;
    println!("drain: seen on B and C after {} ms", took.as_millis());
    assert!(took < BOUND, "drain took {took:?}");
    for n in &c.nodes {
        for _ in 0..3 {
            assert_eq!(answered_by(n, "llama3").await, (200, "b".to_string()));
        }
    }
    let (s, _) = admin(&c.nodes[2], "POST", "/upstreams/a/undrain", None).await;
    assert_eq!(s, 200);
    let took = until_all(&c.nodes[..2], false).await;
    println!("undrain: seen on A and B after {} ms", took.as_millis());
    assert!(took < BOUND, "undrain took {took:?}");
}

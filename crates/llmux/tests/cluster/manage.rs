//! Ollama model management in cluster mode (#14, item 2): a model pulled through the
//! prober or through a follower is routable on every instance at once (the instance that
//! pulled shares its re-probe). The health interval is long (60 s) so no regular round can
//! help.

use std::time::Duration;

use llmux_mock::MockServer;
use serde_json::json;

use crate::common::cluster::{time_until, Spec, TestCluster};
use crate::common::{chat, client, node, ollama, Llmux};
use crate::probe::{settled, upstream};

async fn pull(n: &Llmux, model: &str) -> u16 {
    let r = client()
        .post(n.url("/api/pull"))
        .json(&json!({"model": model, "stream": false}))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn routes(n: &Llmux, model: &str) -> bool {
    let r = client()
        .post(n.url("/api/chat"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

fn lists(v: &serde_json::Value, model: &str) -> bool {
    v["models"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m == model))
}

#[tokio::test]
async fn a_pull_through_the_prober_or_a_follower_routes_on_every_instance_at_once() {
    let a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let body = format!(
        "{}[health]\ninterval = \"60s\"\n",
        ollama("gpu-a", &a.url())
    );
    let Some(c) = TestCluster::start(Spec::new(3, &body)).await else {
        return;
    };
    let prober = settled(&c).await;
    assert_eq!(pull(&c.nodes[prober], "mistral").await, 200);
    assert!(
        routes(&c.nodes[prober], "mistral").await,
        "at once where it was pulled"
    );
    let everywhere = time_until(Duration::from_secs(3), || async {
        for n in &c.nodes {
            if !lists(&upstream(n, "gpu-a").await, "mistral:latest") {
                return false;
            }
        }
        true
    })
    .await
    .expect("the other instances did not take the prober's re-probe within 3 s");
    println!("pulled through the prober: on all 3 instances after {everywhere:?} (interval 60 s)");
    for n in &c.nodes {
        assert!(routes(n, "mistral").await);
    }

    // Through a follower: routable there at once.
    let follower = (prober + 1) % c.nodes.len();
    assert_eq!(pull(&c.nodes[follower], "phi3").await, 200);
    assert!(
        routes(&c.nodes[follower], "phi3").await,
        "at once on the follower"
    );
    let everywhere = time_until(Duration::from_secs(3), || async {
        for n in &c.nodes {
            if !routes(n, "phi3").await {
                return false;
            }
        }
        true
    })
    .await
    .expect("the other instances did not take the follower's re-probe within 3 s");
    println!("pulled through a follower: on all 3 instances after {everywhere:?} (interval 60 s)");
}

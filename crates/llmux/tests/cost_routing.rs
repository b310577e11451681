//! End-to-end: `routing.strategy = "cheapest"` sends a model to its cheapest deployment (prices
//! per `upstream/model` in `[[pricing]]`), breaks a price tie by calls in flight, puts an
//! alias's cheapest target first, and charges the deployment's price.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{MockConfig, MockServer};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn provider(name: &str, models: &[&str]) -> MockConfig {
    MockConfig {
        // Streams stay open a while (8 chunks × 250 ms); whole answers come at once.
        chunk_delay: Duration::from_millis(250),
        ..node(name, models)
    }
}

async fn call(gw: &Llmux, model: &str) -> String {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    let upstream = header(&r, "x-llmux-upstream");
    let status = r.status();
    assert_eq!(status, 200, "{model}: {}", r.text().await.unwrap());
    upstream
}

#[tokio::test(flavor = "multi_thread")]
async fn cheapest_picks_the_cheaper_deployment_and_ties_go_to_the_less_busy() {
    let dear = MockServer::start(provider("dear", &["gpt-4o", "gpt-4o-mini"]))
        .await
        .unwrap();
    let cheap1 = MockServer::start(provider("cheap1", &["gpt-4o"]))
        .await
        .unwrap();
    let cheap2 = MockServer::start(provider("cheap2", &["gpt-4o"]))
        .await
        .unwrap();
    let pricing = r#"
[routing]
strategy = "cheapest"

[[pricing]]
model = "dear/gpt-4o"
input_per_mtok = 5.0
output_per_mtok = 15.0

[[pricing]]
model = "cheap1/gpt-4o"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[pricing]]
model = "cheap2/gpt-4o"
input_per_mtok = 1.0
output_per_mtok = 2.0
"#;
    let gw = Llmux::start(&format!(
        "{}{}{}{pricing}",
        openai("dear", &dear.url(), "sk-d"),
        openai("cheap1", &cheap1.url(), "sk-1"),
        openai("cheap2", &cheap2.url(), "sk-2"),
    ));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        *seen.entry(call(&gw, "gpt-4o").await).or_default() += 1;
    }
    eprintln!("cheapest, 10 idle calls: {seen:?}");
    assert!(!seen.contains_key("dear"), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 10);
    assert!(seen.len() == 2, "equals take turns: {seen:?}");

    // A stream holds one cheap deployment busy: the next calls go to the other one.
    let mut held = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("gpt-4o", true))
        .send()
        .await
        .unwrap();
    let busy = header(&held, "x-llmux-upstream");
    assert!(busy.starts_with("cheap"), "{busy}");
    let _first = held.chunk().await.unwrap();
    let idle = if busy == "cheap1" { "cheap2" } else { "cheap1" };
    for _ in 0..4 {
        assert_eq!(
            call(&gw, "gpt-4o").await,
            idle,
            "the tie goes to the less busy"
        );
    }
    while held.chunk().await.unwrap().is_some() {}

    // The call log charges the deployment's own price (cheap: 1 + 2 per Mtok, not dear's 5 + 15).
    let row = eventually(Duration::from_secs(10), "a logged call", async || {
        let (_, page) = admin(&gw, "GET", "/calls?limit=1", None).await;
        page["calls"]
            .get(0)
            .cloned()
            .filter(|r| r["cost"].as_f64().is_some())
    })
    .await;
    let cost = row["cost"].as_f64().unwrap();
    let (input, output) = (
        row["input_tokens"].as_f64().unwrap(),
        row["output_tokens"].as_f64().unwrap(),
    );
    eprintln!("last call: {input} in, {output} out, cost {cost}");
    assert!(
        (cost - (input * 1.0 + output * 2.0) / 1e6).abs() < 1e-12,
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_routes_to_its_cheapest_healthy_target() {
    let big = MockServer::start(provider("big", &["gpt-4o"]))
        .await
        .unwrap();
    let small = MockServer::start(provider("small", &["gpt-4o-mini"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "{}{}[routing]\nstrategy = \"cheapest\"\n",
        openai("big", &big.url(), "sk-b"),
        openai("small", &small.url(), "sk-s"),
    ));
    // Listed dearest first; the shipped prices make gpt-4o-mini the cheaper target.
    let (s, body) = admin(
        &gw,
        "POST",
        "/aliases",
        Some(json!({"name": "smart", "targets": ["gpt-4o", "gpt-4o-mini"]})),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {body}");
    let upstream = eventually(Duration::from_secs(5), "the alias routes", async || {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat("smart", false))
            .send()
            .await
            .unwrap();
        (r.status() == 200).then(|| header(&r, "x-llmux-upstream"))
    })
    .await;
    assert_eq!(upstream, "small");
    // The cheap target down: the alias goes on to the dearer one.
    small.stop().await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("smart", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "big");
}

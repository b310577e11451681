//! End-to-end: `POST /admin/v1/upstreams/{name}/drain` takes an upstream out of rotation while
//! its open stream finishes (`drain`: `draining`, then `drained`), `undrain` brings it back; the
//! drain holds across a file reload, a rollback and a restart; unknown names are 404s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{MockConfig, MockServer};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// A node whose streams stay open a while (20 chunks × 300 ms: ample time to drain and call
/// while one is open, even on a loaded machine).
fn slow(name: &str) -> MockConfig {
    MockConfig {
        chunk_delay: Duration::from_millis(300),
        chunks: 20,
        ..node(name, &["llama3:latest"])
    }
}

fn body(a: &MockServer, b: &MockServer) -> String {
    // A long health interval: the test's drains, not probes, decide where calls go.
    format!(
        "[health]\ninterval = \"60s\"\n{}{}",
        ollama("a", &a.url()),
        ollama("b", &b.url())
    )
}

/// A whole chat answer for `model`: (status, upstream that answered, body).
async fn call(gw: &Llmux, model: &str) -> (u16, String, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    let upstream = header(&r, "x-llmux-upstream");
    let status = r.status().as_u16();
    (status, upstream, r.json().await.unwrap_or(Value::Null))
}

/// The `drain` field of upstream `name` in `GET /admin/v1/upstreams` (and the single view).
async fn drain_of(gw: &Llmux, name: &str) -> Value {
    let list = gw.upstreams().await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))["drain"]
        .clone();
    let (s, one) = admin(gw, "GET", &format!("/upstreams/{name}"), None).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["drain"], listed, "list and single view agree");
    listed
}

async fn switch(gw: &Llmux, name: &str, action: &str) -> (u16, Value) {
    admin(gw, "POST", &format!("/upstreams/{name}/{action}"), None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_node_takes_no_new_call_while_its_stream_finishes() {
    let a = MockServer::start(slow("a")).await.unwrap();
    let b = MockServer::start(slow("b")).await.unwrap();
    let gw = Llmux::start(&body(&a, &b));
    assert_eq!(drain_of(&gw, "a").await, Value::Null);

    // A stream pinned to a, its first chunk read: a call is in flight there.
    let mut stream = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("a/llama3", true))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()).to_string();

    let (s, v) = switch(&gw, "a", "drain").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["drain"], "draining", "{v}");
    assert_eq!(v["active_requests"], 1, "{v}");
    assert_eq!(drain_of(&gw, "a").await, "draining");
    let generations_on_a = a.stats().generations;

    // New calls go to b, never to a; pinned to a, they get the dialect's 503.
    for _ in 0..6 {
        let (s, up, v) = call(&gw, "llama3").await;
        assert_eq!((s, up.as_str()), (200, "b"), "{v}");
    }
    let (s, up, v) = call(&gw, "a/llama3").await;
    assert_eq!(s, 503, "{v}");
    assert!(up.is_empty());
    assert_eq!(v["error"]["code"], "no_upstream_available", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("drained") && msg.contains("(a)"), "{msg}");
    assert_eq!(a.stats().generations, generations_on_a, "a got a new call");
    // b still serves: ready; b drained too: nothing left to serve, not ready.
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["active_upstreams"], 1, "{body}");
    let (s, _) = switch(&gw, "b", "drain").await;
    assert_eq!(s, 200);
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let (s, _, v) = call(&gw, "llama3").await;
    assert_eq!(s, 503, "{v}");
    assert!(v.to_string().contains("(a, b)"), "{v}");
    let (s, _) = switch(&gw, "b", "undrain").await;
    assert_eq!(s, 200);

    // The open stream runs to its end, whole.
    while let Some(chunk) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let pieces = text.matches("\"content\":\"").count();
    assert!(pieces >= 20, "every chunk arrived ({pieces}): {text}");
    eventually(LIMIT, "a drained once its stream ended", async || {
        drain_of(&gw, "a").await == "drained"
    })
    .await;

    // Idempotent; one audit entry per switch.
    let (s, v) = switch(&gw, "a", "drain").await;
    assert_eq!((s, v["drain"].as_str()), (200, Some("drained")), "{v}");

    let (s, v) = switch(&gw, "a", "undrain").await;
    assert_eq!((s, &v["drain"]), (200, &Value::Null), "{v}");
    let (s, v) = switch(&gw, "a", "undrain").await;
    assert_eq!((s, &v["drain"]), (200, &Value::Null), "{v}");
    let (s, up, v) = call(&gw, "a/llama3").await;
    assert_eq!((s, up.as_str()), (200, "a"), "{v}");
    let mut seen_a = false;
    for _ in 0..8 {
        seen_a |= call(&gw, "llama3").await.1 == "a";
    }
    assert!(seen_a, "a is back in rotation");

    let (_, audit) = admin(&gw, "GET", "/audit?limit=50", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .or_else(|| audit["events"].as_array())
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .filter(|e| e["target_id"] == "a")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["upstream.undrain", "upstream.drain"], "{audit}");
    let events = audit
        .as_array()
        .or_else(|| audit["events"].as_array())
        .unwrap();
    let drain = events
        .iter()
        .find(|e| e["action"] == "upstream.drain" && e["target_id"] == "a")
        .unwrap();
    assert_eq!(drain["before"]["drain"], Value::Null, "{drain}");
    assert_eq!(drain["after"]["drain"], "draining", "{drain}");
    assert_eq!(drain["actor"], "admin-token", "{drain}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_names_are_404_and_a_drain_outlives_reload_rollback_and_restart() {
    let a = MockServer::start(node("a", &["llama3:latest"]))
        .await
        .unwrap();
    let b = MockServer::start(node("b", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start_opts(Opts {
        body: body(&a, &b),
        admin_extra: "allow_private_upstreams = true".into(),
        ..Opts::default()
    });
    for action in ["drain", "undrain"] {
        let (s, v) = switch(&gw, "nope", action).await;
        assert_eq!(s, 404, "{v}");
        assert!(v.to_string().contains("nope"), "the error names it: {v}");
    }

    let (s, _) = switch(&gw, "a", "drain").await;
    assert_eq!(s, 200);
    let (_, cfg) = admin(&gw, "GET", "/config", None).await;
    let revision = cfg["revision"].as_i64().unwrap_or_else(|| panic!("{cfg}"));

    // The file changes (b gets a weight): the reload keeps a drained.
    gw.write_config(&body(&a, &b).replace(
        &format!("url = \"{}\"\n", b.url()),
        &format!("url = \"{}\"\nweight = 3\n", b.url()),
    ));
    eventually(LIMIT, "the edited file is applied", async || {
        let list = gw.upstreams().await;
        list.as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "b" && u["weight"] == 3)
    })
    .await;
    assert_eq!(drain_of(&gw, "a").await, "drained");
    for _ in 0..4 {
        assert_eq!(call(&gw, "llama3").await.1, "b");
    }

    // A rollback restores configuration, not runtime switches.
    let (s, v) = admin(
        &gw,
        "POST",
        "/config/rollback",
        Some(json!({ "revision": revision })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(drain_of(&gw, "a").await, "drained");

    // An API upstream drains like a file one.
    let (s, v) = admin(
        &gw,
        "POST",
        "/upstreams",
        Some(json!({"name": "c", "kind": "ollama", "url": a.url()})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = switch(&gw, "c", "drain").await;
    assert_eq!((s, v["drain"].as_str()), (200, Some("drained")), "{v}");
    assert_eq!(v["source"], "api");

    let gw = gw.restart(&[]);
    assert_eq!(drain_of(&gw, "a").await, "drained");
    assert_eq!(drain_of(&gw, "c").await, "drained");
    for _ in 0..4 {
        assert_eq!(call(&gw, "llama3").await.1, "b");
    }
    // Probes go on on a drained node: a refresh answers its models.
    let (s, v) = admin(&gw, "POST", "/upstreams/a/refresh", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pool"], "active", "{v}");
    assert_eq!(v["drain"], "drained", "{v}");

    // A deleted API upstream takes its drain with it.
    let (s, _) = admin(&gw, "DELETE", "/upstreams/c", None).await;
    assert_eq!(s, 204);
    let (s, v) = admin(
        &gw,
        "POST",
        "/upstreams",
        Some(json!({"name": "c", "kind": "ollama", "url": a.url()})),
    )
    .await;
    assert_eq!((s, &v["drain"]), (201, &Value::Null), "{v}");
}

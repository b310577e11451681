//! End-to-end: operator alerts reach the webhook — an upstream lost and back, a key disabled, an error rate past its threshold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{Faults, MockConfig, MockServer};
use serde_json::Value;
use std::time::Duration;

/// The first alert named `event` among those received after the first `from`.
async fn wait_for_event(hook: &Recorder, event: &str, from: usize) -> Value {
    eventually(
        Duration::from_secs(5),
        &format!("an {event} alert after the first {from}"),
        async || {
            hook.bodies()
                .into_iter()
                .skip(from)
                .find(|v| v["event"] == event)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook() {
    let hook = Recorder::start().await;
    // gpu-a's port is from the OS and stays ours: bound but not listening (down) at start,
    // listening (up) later, then stopped for good.
    let gpu_a = tokio::net::TcpSocket::new_v4().unwrap();
    gpu_a.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let gpu_a_url = format!("http://{}", gpu_a.local_addr().unwrap());
    let flaky = MockServer::start(MockConfig {
        faults: Faults {
            fail_rate: 1.0,
            fail_status: 500,
            ..Faults::default()
        },
        ..node("flaky", &["flaky-model:latest"])
    })
    .await
    .unwrap();
    let provider = MockServer::start(MockConfig {
        models: vec!["gpt-4o-mini".into()],
        api_key: Some("sk-good".into()),
        revoked_keys: vec!["sk-revoked".into()],
        ..node("provider", &[])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "[alerts]\nwebhook_url = \"{}\"\nerror_rate = 0.5\nwindow = \"1s\"\nmin_calls = 3\n[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n{}{}[[upstreams]]\nname = \"provider\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-revoked\", \"sk-good\"]\n",
        hook.url("/hook"),
        ollama("gpu-a", &gpu_a_url),
        ollama("flaky", &flaky.url()),
        provider.url()
    ));
    // A revoked provider key is disabled (by the start-up probe or the first call).
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = wait_for_event(&hook, "key_disabled", 0).await;
    assert_eq!(v["upstream"], "provider");
    assert!(v["text"].as_str().unwrap().contains("disabled"));
    assert!(!v.to_string().contains("sk-revoked"), "no secret in alerts");

    // An upstream failing every call passes the error-rate threshold.
    for _ in 0..6 {
        let _ = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat("flaky-model", false))
            .send()
            .await
            .unwrap();
    }
    let v = wait_for_event(&hook, "error_rate", 0).await;
    assert_eq!(v["upstream"], "flaky");
    assert!(v["error_rate"].as_f64().unwrap() >= 0.5);

    // The node comes up (alert), then dies and moves to standby (alert).
    let gpu_a = MockServer::start_on(
        gpu_a.listen(1024).unwrap(),
        node("gpu-a", &["llama3:latest"]),
    )
    .await
    .unwrap();
    let v = wait_for_event(&hook, "upstream_up", 0).await;
    assert_eq!(v["upstream"], "gpu-a");
    let seen = hook.bodies().len();
    gpu_a.stop().await;
    let v = wait_for_event(&hook, "upstream_down", seen).await;
    assert_eq!(v["upstream"], "gpu-a");

    let metrics = metrics_text(&gw).await;
    assert!(metrics.contains("llmux_alerts_total{result=\"sent\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_alerts_and_telemetry_on() {
    let hook = Recorder::start().await;
    // Another recorder serves as the OTLP collector: it keeps every JSON body posted to it.
    let spans = Recorder::start().await;
    let collector = spans.url("");
    let gpu_a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let base = format!(
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n{}",
        ollama("gpu-a", &gpu_a.url())
    );
    let gw = Llmux::start(&base);
    gw.write_config(&format!(
        "[alerts]\nwebhook_url = \"{}\"\n[telemetry]\notlp_endpoint = \"{collector}\"\n{base}",
        hook.url("/hook")
    ));
    let r = client()
        .post(gw.url("/admin/v1/reload"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let r = client()
        .post(gw.url("/api/chat"))
        .json(&chat("llama3", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(
        Duration::from_secs(5),
        "spans exported after the reload",
        async || {
            spans
                .bodies()
                .iter()
                .any(|v| v.to_string().contains("llmux.attempt"))
        },
    )
    .await;

    gpu_a.stop().await;
    let v = wait_for_event(&hook, "upstream_down", 0).await;
    assert_eq!(v["upstream"], "gpu-a");
}

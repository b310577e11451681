//! End-to-end: operator alerts reach the webhook — an upstream lost and back, a key disabled, an error rate past its threshold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{Faults, MockConfig, MockServer};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook that records every JSON body POSTed to it.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + len {
                        continue;
                    }
                    let body = &buf[head_end + 4..head_end + 4 + len];
                    if let Ok(v) = serde_json::from_slice::<Value>(body) {
                        sink.lock().unwrap().push(v);
                    }
                    let _ = sock
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    buf.drain(..head_end + 4 + len);
                }
            });
        }
    });
    (url, seen)
}

async fn wait_for_event(seen: &Arc<Mutex<Vec<Value>>>, event: &str, limit: Duration) -> Value {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = seen
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["event"] == event)
            .cloned()
        {
            return v;
        }
        assert!(
            Instant::now() < until,
            "no {event} alert; got {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook() {
    let (hook, seen) = webhook().await;
    let gpu_a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let node_addr = gpu_a.addr();
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
        "[alerts]\nwebhook_url = \"{hook}\"\nerror_rate = 0.5\nwindow = \"1s\"\nmin_calls = 3\n[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n{}{}[[upstreams]]\nname = \"provider\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-revoked\", \"sk-good\"]\n",
        ollama("gpu-a", &gpu_a.url()),
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
    let v = wait_for_event(&seen, "key_disabled", Duration::from_secs(5)).await;
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
    let v = wait_for_event(&seen, "error_rate", Duration::from_secs(5)).await;
    assert_eq!(v["upstream"], "flaky");
    assert!(v["error_rate"].as_f64().unwrap() >= 0.5);

    // A node that dies moves to standby (alert), and comes back (alert).
    gpu_a.stop().await;
    let v = wait_for_event(&seen, "upstream_down", Duration::from_secs(5)).await;
    assert_eq!(v["upstream"], "gpu-a");
    let back = MockServer::start_on(
        tokio::net::TcpListener::bind(node_addr).await.unwrap(),
        node("gpu-a", &["llama3:latest"]),
    )
    .await
    .unwrap();
    let v = wait_for_event(&seen, "upstream_up", Duration::from_secs(5)).await;
    assert_eq!(v["upstream"], "gpu-a");
    drop(back);

    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("llmux_alerts_total{result=\"sent\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_alerts_and_telemetry_on() {
    let (hook, seen) = webhook().await;
    // The same recorder serves as the OTLP collector: it keeps every JSON body posted to it.
    let (collector, spans) = webhook().await;
    let collector = collector.trim_end_matches("/hook").to_string();
    let gpu_a = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let base = format!(
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n{}",
        ollama("gpu-a", &gpu_a.url())
    );
    let gw = Llmux::start(&base);
    gw.write_config(&format!(
        "[alerts]\nwebhook_url = \"{hook}\"\n[telemetry]\notlp_endpoint = \"{collector}\"\n{base}"
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
    let until = Instant::now() + Duration::from_secs(5);
    while !spans
        .lock()
        .unwrap()
        .iter()
        .any(|v| v.to_string().contains("llmux.attempt"))
    {
        assert!(Instant::now() < until, "no spans exported after the reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    gpu_a.stop().await;
    let v = wait_for_event(&seen, "upstream_down", Duration::from_secs(5)).await;
    assert_eq!(v["upstream"], "gpu-a");
}

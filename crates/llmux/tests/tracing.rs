//! End-to-end: W3C traceparent in and out, and a span per call and per attempt exported over OTLP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{Faults, MockConfig, MockServer};
use serde_json::Value;
use std::time::Duration;

fn spans(collector: &Recorder) -> Vec<Value> {
    collector
        .bodies()
        .iter()
        .flat_map(|batch| {
            batch["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_traced_from_the_client_through_each_attempt_to_the_upstream() {
    let collector = Recorder::start().await;
    let collector_base = collector.url("");
    // The first node fails, so the call takes two attempts.
    let bad = MockServer::start(MockConfig {
        faults: Faults {
            fail_rate: 1.0,
            fail_status: 503,
            ..Faults::default()
        },
        ..node("bad", &["llama3:latest"])
    })
    .await
    .unwrap();
    let good = MockServer::start(node("good", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[telemetry]\notlp_endpoint = \"{collector_base}\"\nservice_name = \"llmux-test\"\n[routing]\nstrategy = \"round_robin\"\n{}{}",
        ollama("bad", &bad.url()),
        ollama("good", &good.url())
    ));
    // Both nodes probed first: a call during the start-up round is served by the first node
    // whose probe answered, which may be the failing one alone (then the call is its 503).
    // The admin list of upstreams waits for the round (and makes no call span).
    let (status, ups) = admin(&gw, "GET", "/upstreams", None).await;
    assert_eq!(status, 200, "{ups}");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut two_attempts = false;
    for _ in 0..2 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("traceparent", incoming)
            .json(&chat("llama3", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        two_attempts |= header(&r, "x-llmux-attempts") == "2";
        r.bytes().await.unwrap();
    }
    assert!(
        two_attempts,
        "round robin should have tried the failing node first once"
    );

    // The upstream got a traceparent in the client's trace, from an attempt span.
    let sent = good.stats().last_traceparent.unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );

    // The two client calls: spans in the client's trace (the admin request above has a trace
    // of its own).
    let in_client_trace =
        |s: &Value| s["name"] == "llmux.call" && s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736";
    let all = eventually(Duration::from_secs(5), "spans of both calls", async || {
        let all = spans(&collector);
        let calls = all.iter().filter(|s| in_client_trace(s)).count();
        (calls >= 2).then_some(all)
    })
    .await;
    let batch = collector.bodies()[0].clone();
    assert_eq!(
        batch["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
        "llmux-test"
    );
    let calls: Vec<&Value> = all.iter().filter(|s| in_client_trace(s)).collect();
    assert_eq!(
        calls.len(),
        2,
        "each client call is one span in the client's trace"
    );
    for call in &calls {
        assert_eq!(call["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(call["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(call["kind"], 2);
        // What the call's record settled, under OpenTelemetry's GenAI names.
        let attr = |key: &str| {
            call["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|kv| kv["key"] == key)
                .map(|kv| kv["value"].clone())
                .unwrap_or_else(|| panic!("{key} missing on {call}"))
        };
        assert_eq!(attr("gen_ai.request.model")["stringValue"], "llama3");
        for key in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
            let n: u64 = attr(key)["intValue"].as_str().unwrap().parse().unwrap();
            assert!(n > 0, "{key} = {n} on {call}");
        }
        let ttft = attr("gen_ai.server.time_to_first_token")["doubleValue"]
            .as_f64()
            .unwrap();
        assert!(ttft > 0.0 && ttft < 5.0, "time to first token {ttft} s");
    }
    let attempts: Vec<&Value> = all
        .iter()
        .filter(|s| s["name"] == "llmux.attempt")
        .collect();
    assert_eq!(attempts.len(), 3, "two calls, one of them retried");
    let call_ids: Vec<&Value> = calls.iter().map(|c| &c["spanId"]).collect();
    for a in &attempts {
        assert!(
            call_ids.contains(&&a["parentSpanId"]),
            "attempt parent: {a}"
        );
        assert_eq!(a["kind"], 3, "{a}");
        // The model under its OpenTelemetry GenAI name.
        let model = a["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv["key"] == "gen_ai.request.model");
        assert!(
            model.is_some_and(|kv| kv["value"]["stringValue"]
                .as_str()
                .is_some_and(|m| m.starts_with("llama3"))),
            "{a}"
        );
    }
    let failed: Vec<&&Value> = attempts
        .iter()
        .filter(|a| a["status"]["code"] == 2)
        .collect();
    assert_eq!(failed.len(), 1);
    // The upstream's traceparent names the successful attempt's span as its parent.
    let parent_in_header = sent.split('-').nth(2).unwrap();
    assert!(attempts.iter().any(|a| a["spanId"] == parent_in_header));
}

//! Cross-dialect fidelity of answers (issue #17, response side): usage details, finish
//! reasons, tool ids — what each dialect can say survives a trip through every other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

use crate::canonical::{ChatResponse, Op, StreamEvent, Usage};
use crate::testing::{encode_all, sse_events, try_decode};
use crate::translate::codec;
use crate::Dialect;

const ALL: [Dialect; 4] = [
    Dialect::OpenAi,
    Dialect::Anthropic,
    Dialect::Gemini,
    Dialect::Ollama,
];

fn detailed() -> Usage {
    Usage {
        input_tokens: 100,
        output_tokens: 50,
        cached_input_tokens: 30,
        cache_write_tokens: 10,
        reasoning_tokens: 20,
    }
}

/// What of [`detailed`] each dialect can say: the totals always.
fn expressible(d: Dialect) -> Usage {
    let u = detailed();
    match d {
        Dialect::OpenAi => Usage {
            cache_write_tokens: 0,
            ..u
        },
        Dialect::Anthropic => Usage {
            reasoning_tokens: 0,
            ..u
        },
        Dialect::Gemini => Usage {
            cache_write_tokens: 0,
            ..u
        },
        Dialect::Ollama => Usage {
            input_tokens: 100,
            output_tokens: 50,
            ..Usage::default()
        },
    }
}

#[test]
fn usage_details_survive_every_dialects_answer() {
    for d in ALL {
        let resp = ChatResponse {
            text: "hi".into(),
            usage: detailed(),
            ..ChatResponse::default()
        };
        let body = codec(d).encode_response(Op::Chat, &resp);
        let back = codec(d).decode_response(&body).unwrap();
        assert_eq!(
            back.usage,
            expressible(d),
            "{d:?}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn usage_details_survive_every_dialects_stream() {
    for d in ALL {
        let events = [
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::Text("hi".into()),
            StreamEvent::Finish(Default::default()),
            StreamEvent::Usage(detailed()),
        ];
        let enc = match d {
            Dialect::OpenAi => crate::openai::OpenAiCodec.stream_encoder_with(Op::Chat, true),
            _ => codec(d).stream_encoder(Op::Chat),
        };
        let mut enc = enc;
        let bytes = encode_all(enc.as_mut(), &events);
        let back = try_decode(codec(d).stream_decoder().as_mut(), &bytes, &[]).unwrap();
        let usage = back.iter().find_map(|e| match e {
            StreamEvent::Usage(u) => Some(*u),
            _ => None,
        });
        assert_eq!(usage, Some(expressible(d)), "{d:?}");
    }
}

#[test]
fn a_translated_anthropic_stream_reports_gemini_input_tokens_in_message_start() {
    let gemini = concat!(
        "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]}}],",
        "\"usageMetadata\":{\"promptTokenCount\":42,\"cachedContentTokenCount\":12},\"modelVersion\":\"g\"}\n\n",
        "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}],",
        "\"usageMetadata\":{\"promptTokenCount\":42,\"cachedContentTokenCount\":12,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":5}}\n\n",
    );
    let events = try_decode(
        codec(Dialect::Gemini).stream_decoder().as_mut(),
        gemini.as_bytes(),
        &[],
    )
    .unwrap();
    let mut enc = codec(Dialect::Anthropic).stream_encoder(Op::Chat);
    let out = encode_all(enc.as_mut(), &events);
    let sse = sse_events(&out);
    let start: Value = serde_json::from_str(&sse[0].data).unwrap();
    assert_eq!(start["type"], "message_start");
    let usage = &start["message"]["usage"];
    assert_eq!(usage["input_tokens"], 30, "{usage}");
    assert_eq!(usage["cache_read_input_tokens"], 12, "{usage}");
    let delta = sse
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .find(|v| v["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 7, "{delta}");
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 12, "{delta}");
}

#[test]
fn gemini_retry_info_gives_the_delay() {
    let body = br#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED","details":[
        {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
        {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"13s"}]}}"#;
    assert_eq!(crate::gemini::retry_delay(body), Some(13.0));
    let wrapped = br#"[{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"0.5s"}]}}]"#;
    assert_eq!(crate::gemini::retry_delay(wrapped), Some(0.5));
    for none in [
        &br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","retryDelay":"13s"}]}}"#[..],
        br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"-3s"}]}}"#,
        br#"{"error":{"message":"x"}}"#,
        b"not json",
    ] {
        assert_eq!(crate::gemini::retry_delay(none), None);
    }
}

#[test]
fn unfinished_turns_never_read_as_a_plain_stop() {
    use crate::canonical::FinishReason as F;
    // Upstream words → what each client dialect says.
    let gemini = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"MALFORMED_FUNCTION_CALL"}]}"#;
    let anthropic = br#"{"id":"m","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"partial"}],"stop_reason":"pause_turn"}"#;
    let malformed = codec(Dialect::Gemini).decode_response(gemini).unwrap();
    assert_eq!(malformed.finish, F::MalformedToolCall);
    let paused = codec(Dialect::Anthropic)
        .decode_response(anthropic)
        .unwrap();
    assert_eq!(paused.finish, F::Paused);
    let said = |d: Dialect, r: &ChatResponse| -> String {
        let v: Value = serde_json::from_slice(&codec(d).encode_response(Op::Chat, r)).unwrap();
        let at = match d {
            Dialect::OpenAi => "/choices/0/finish_reason",
            Dialect::Anthropic => "/stop_reason",
            Dialect::Gemini => "/candidates/0/finishReason",
            Dialect::Ollama => "/done_reason",
        };
        v.pointer(at)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for (d, for_malformed, for_paused) in [
        (Dialect::OpenAi, "length", "length"),
        (Dialect::Anthropic, "pause_turn", "pause_turn"),
        (Dialect::Gemini, "MALFORMED_FUNCTION_CALL", "MAX_TOKENS"),
        (Dialect::Ollama, "length", "length"),
    ] {
        assert_eq!(said(d, &malformed), for_malformed, "{d:?}");
        assert_eq!(said(d, &paused), for_paused, "{d:?}");
    }
}

#[test]
fn tool_arguments_cut_by_length_reach_every_dialect_as_the_partial_text() {
    use crate::canonical::{FinishReason, ToolCall};
    let partial = r#"{"location":"Par"#;
    let resp = ChatResponse {
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: partial.into(),
        }],
        finish: FinishReason::Length,
        ..ChatResponse::default()
    };
    for d in ALL {
        let body = codec(d).encode_response(Op::Chat, &resp);
        let text = String::from_utf8_lossy(&body).to_string();
        let v: Value = serde_json::from_slice(&body).unwrap();
        // The partial text is there (as OpenAI's string, or under `arguments` where the
        // dialect wants an object), never an empty `{}`.
        let escaped = serde_json::to_string(partial).unwrap();
        assert!(text.contains(escaped.trim_matches('"')), "{d:?}: {text}");
        let back = codec(d).decode_response(&body).unwrap();
        assert_eq!(back.finish, FinishReason::Length, "{d:?}: {v}");
        assert_ne!(back.tool_calls[0].arguments, "{}", "{d:?}");
    }
}

#[test]
fn gemini_embeddings_count_vertex_statistics() {
    let body = br#"{"embeddings":[{"values":[0.1],"statistics":{"token_count":3}},{"values":[0.2],"statistics":{"token_count":4}}]}"#;
    let r = crate::embed::decode_gemini_batch_response(body).unwrap();
    assert_eq!(r.input_tokens, 7);
    let plain = br#"{"embeddings":[{"values":[0.1]}]}"#;
    assert_eq!(
        crate::embed::decode_gemini_batch_response(plain)
            .unwrap()
            .input_tokens,
        0
    );
}

#[test]
fn gemini_call_ids_and_thought_signatures_survive_a_tool_turn_through_openai() {
    // Two parallel calls of the same function, each with Gemini's id and a signature.
    let answer = br#"{"candidates":[{"content":{"role":"model","parts":[
        {"functionCall":{"id":"fc_a","name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnLWE="},
        {"functionCall":{"id":"fc_b","name":"get_weather","args":{"city":"Rome"}},"thoughtSignature":"c2lnLWI="}
    ]},"finishReason":"STOP"}]}"#;
    let resp = codec(Dialect::Gemini).decode_response(answer).unwrap();
    let client: Value =
        serde_json::from_slice(&codec(Dialect::OpenAi).encode_response(Op::Chat, &resp)).unwrap();
    let calls = client["choices"][0]["message"]["tool_calls"].clone();
    let (a, b) = (
        calls[0]["id"].as_str().unwrap(),
        calls[1]["id"].as_str().unwrap(),
    );
    assert!(a.starts_with("fc_a") && b.starts_with("fc_b"), "{calls}");
    // The client answers in the other order, by id.
    let next = serde_json::json!({"model": "g", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": b, "content": "rainy"},
        {"role": "tool", "tool_call_id": a, "content": "sunny"}
    ]});
    let req = codec(Dialect::OpenAi)
        .decode_request(Op::Chat, next.to_string().as_bytes())
        .unwrap();
    let sent: Value =
        serde_json::from_slice(&codec(Dialect::Gemini).encode_request(&req).unwrap()).unwrap();
    let model_turn = &sent["contents"][1]["parts"];
    assert_eq!(model_turn[0]["functionCall"]["id"], "fc_a", "{sent}");
    assert_eq!(model_turn[0]["thoughtSignature"], "c2lnLWE=", "{sent}");
    assert_eq!(model_turn[1]["functionCall"]["id"], "fc_b", "{sent}");
    assert_eq!(model_turn[1]["thoughtSignature"], "c2lnLWI=", "{sent}");
    let results = &sent["contents"][2]["parts"];
    assert_eq!(results[0]["functionResponse"]["id"], "fc_b", "{sent}");
    assert_eq!(
        results[0]["functionResponse"]["response"]["result"],
        "rainy"
    );
    assert_eq!(results[1]["functionResponse"]["id"], "fc_a", "{sent}");
}

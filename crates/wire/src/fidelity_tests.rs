//! Cross-dialect fidelity of answers (issue #17, response side): usage details, finish
//! reasons, tool ids — what each dialect can say survives a trip through every other.

#![allow(clippy::unwrap_used)]

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

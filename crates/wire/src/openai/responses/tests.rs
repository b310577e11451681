//! Unit tests of the Responses API codec.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::canonical::{
    ChatResponse, Codec, FinishReason, Op, Part, ResponseFormat, Role, StreamEvent, ToolCall,
    ToolChoice, Usage,
};
use crate::stream::framing::SseEvent;
use crate::testing::{encode_all, sse_events as events};

use super::ResponsesCodec;

fn data(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap()
}

#[test]
fn decodes_string_input_and_instructions() {
    let body = br#"{"model":"gpt-4o","input":"hi there","instructions":"be brief","max_output_tokens":50,"temperature":0.2,"stream":true,"store":true,"metadata":{"a":"b"}}"#;
    let r = ResponsesCodec.decode_request(Op::Chat, body).unwrap();
    assert_eq!(r.model, "gpt-4o");
    assert_eq!(r.system.as_deref(), Some("be brief"));
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].role, Role::User);
    assert_eq!(r.messages[0].content, vec![Part::Text("hi there".into())]);
    assert_eq!(r.max_tokens, Some(50));
    assert_eq!(r.temperature, Some(0.2));
    assert!(r.stream);
    assert!(r.include_usage);
}

#[test]
fn decodes_items_with_tool_round_trip() {
    let body = json!({
        "model": "m",
        "input": [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "weather?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]}
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}
    });
    let r = ResponsesCodec
        .decode_request(Op::Chat, body.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.system.as_deref(), Some("rules"));
    assert_eq!(r.messages.len(), 4);
    assert_eq!(r.messages[0].content.len(), 2);
    assert_eq!(r.messages[1].role, Role::Assistant);
    assert_eq!(r.messages[1].tool_calls[0].name, "get_weather");
    assert_eq!(r.messages[2].role, Role::Tool);
    assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(r.messages[2].name.as_deref(), Some("get_weather"));
    assert_eq!(
        r.messages[3].content,
        vec![Part::Text("It is sunny.".into())]
    );
    assert_eq!(r.tools[0].name, "get_weather");
    assert_eq!(r.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
    assert!(matches!(
        r.response_format,
        Some(ResponseFormat::JsonSchema { strict: true, .. })
    ));
}

#[test]
fn refuses_what_cannot_be_translated_naming_the_field() {
    let cases = [
        (
            json!({"model":"m","input":"x","previous_response_id":"resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model":"m","input":"x","tools":[{"type":"web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model":"m","input":[{"type":"item_reference","id":"x"}]}),
            "input[0].type",
        ),
        (json!({"model":"m"}), "input"),
        (json!({"input":"x"}), "model"),
        (
            json!({"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}),
            "input[0].content[0].type",
        ),
    ];
    for (body, field) in cases {
        let e = ResponsesCodec
            .decode_request(Op::Chat, body.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.field, field, "{body}");
    }
}

#[test]
fn encodes_a_response_object_like_openai() {
    let resp = ChatResponse {
        id: "chatcmpl-1".into(),
        model: "llama3".into(),
        created: 7,
        text: "Hello".into(),
        tool_calls: vec![ToolCall {
            id: "call_9".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }],
        finish: FinishReason::ToolCalls,
        usage: Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Usage::default()
        },
    };
    let v: Value =
        serde_json::from_slice(&ResponsesCodec.encode_response(Op::Chat, &resp)).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["created_at"], 7);
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["role"], "assistant");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "call_9");
    assert_eq!(v["usage"]["input_tokens"], 3);
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 7);
    // And back.
    let back = ResponsesCodec
        .decode_response(v.to_string().as_bytes())
        .unwrap();
    assert_eq!(back.text, "Hello");
    assert_eq!(back.tool_calls, resp.tool_calls);
    assert_eq!(back.finish, FinishReason::ToolCalls);
    assert_eq!(back.usage, resp.usage);
    let cut = ChatResponse {
        finish: FinishReason::Length,
        ..ChatResponse::default()
    };
    let v: Value = serde_json::from_slice(&ResponsesCodec.encode_response(Op::Chat, &cut)).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
}

fn encode(events: &[StreamEvent]) -> Vec<u8> {
    encode_all(ResponsesCodec.stream_encoder(Op::Chat).as_mut(), events)
}

#[test]
fn stream_follows_openais_event_sequence() {
    let out = encode(&[
        StreamEvent::Start {
            id: "x".into(),
            model: "llama3".into(),
        },
        StreamEvent::Text("Hel".into()),
        StreamEvent::Text("lo".into()),
        StreamEvent::Finish(FinishReason::Stop),
        StreamEvent::Usage(Usage {
            input_tokens: 2,
            output_tokens: 5,
            ..Usage::default()
        }),
    ]);
    let evs = events(&out);
    let types: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in evs.iter().enumerate() {
        let d = data(e);
        assert_eq!(d["type"], e.event.as_deref().unwrap());
        assert_eq!(d["sequence_number"], i as u64);
    }
    assert_eq!(data(&evs[0])["response"]["status"], "in_progress");
    assert_eq!(data(&evs[4])["delta"], "Hel");
    assert_eq!(data(&evs[6])["text"], "Hello");
    let done = data(&evs[9]);
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["response"]["usage"]["total_tokens"], 7);
    assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
    // The decoder reads back what the encoder wrote.
    let mut dec = ResponsesCodec.stream_decoder();
    let mut got = Vec::new();
    for b in out.chunks(7) {
        dec.feed(b, &mut got).unwrap();
    }
    dec.finish(&mut got).unwrap();
    let text: String = got
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello");
    assert!(got.contains(&StreamEvent::Usage(Usage {
        input_tokens: 2,
        output_tokens: 5,
        ..Usage::default()
    })));
}

#[test]
fn streamed_tool_calls_and_errors() {
    let out = encode(&[
        StreamEvent::Start {
            id: String::new(),
            model: "m".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{\"city\"".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: ":\"Paris\"}".into(),
        },
        StreamEvent::Finish(FinishReason::ToolCalls),
    ]);
    let evs = events(&out);
    let types: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let added = data(&evs[2]);
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["call_id"], "call_1");
    assert_eq!(data(&evs[5])["arguments"], "{\"city\":\"Paris\"}");
    let last = data(&evs[7]);
    assert_eq!(last["response"]["output"][0]["name"], "get_weather");

    let out = encode(&[
        StreamEvent::Start {
            id: String::new(),
            model: "m".into(),
        },
        StreamEvent::Text("par".into()),
        StreamEvent::Error("upstream cut".into()),
    ]);
    let evs = events(&out);
    let n = evs.len();
    assert_eq!(evs[n - 2].event.as_deref(), Some("error"));
    assert_eq!(data(&evs[n - 2])["message"], "upstream cut");
    assert_eq!(evs[n - 1].event.as_deref(), Some("response.failed"));
    let failed = data(&evs[n - 1]);
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["message"], "upstream cut");
}

#[test]
fn request_encodes_for_a_responses_upstream() {
    let body = br#"{"model":"m","input":[{"role":"user","content":"q"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"r"}],"instructions":"s","max_output_tokens":9}"#;
    let req = ResponsesCodec.decode_request(Op::Chat, body).unwrap();
    let encoded = ResponsesCodec.encode_request(&req).unwrap();
    let again = ResponsesCodec.decode_request(Op::Chat, &encoded).unwrap();
    assert_eq!(again.messages, req.messages);
    assert_eq!(again.system, req.system);
    assert_eq!(again.max_tokens, Some(9));
}

#[test]
fn decoders_never_panic_on_garbage() {
    for body in [
        &b""[..],
        b"[]",
        b"{\"output\":5}",
        b"{\"output\":[1,{}]}",
        b"\xff",
    ] {
        let _ = ResponsesCodec.decode_response(body);
        let _ = ResponsesCodec.decode_request(Op::Chat, body);
    }
    let mut dec = ResponsesCodec.stream_decoder();
    let mut out = Vec::new();
    let _ = dec.feed(
        b"event: x\ndata: {\"type\":\"response.function_call_arguments.delta\"}\n\ndata: nope\n\n",
        &mut out,
    );
    let _ = dec.finish(&mut out);
}

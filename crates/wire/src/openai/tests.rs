//! Unit tests of the OpenAI codec, against the documented examples in `tests/fixtures/openai`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamEvent, ToolCall, ToolChoice, Usage,
};
use crate::ids::new_id;
use crate::testing::{
    decode_all, encode_all as encode_stream, exercise, prefixes, sse_events, stream_twice,
};

use super::response::usage_json;
use super::OpenAiCodec;

/// An upstream's absurd counts do not overflow the total (a panic is an outage).
#[test]
fn usage_total_saturates() {
    let u = Usage {
        input_tokens: u64::MAX,
        output_tokens: 5,
        ..Usage::default()
    };
    assert_eq!(usage_json(&u)["total_tokens"], u64::MAX);
}

const CHAT_REQUEST: &str = include_str!("../../tests/fixtures/openai/chat_request.json");
const CHAT_RESPONSE: &str = include_str!("../../tests/fixtures/openai/chat_response.json");
const CHAT_RESPONSE_TOOLS: &str =
    include_str!("../../tests/fixtures/openai/chat_response_tool_calls.json");
const CHAT_STREAM: &str = include_str!("../../tests/fixtures/openai/chat_stream.sse");
const CHAT_STREAM_TOOLS: &str =
    include_str!("../../tests/fixtures/openai/chat_stream_tool_calls.sse");
const COMPLETION_REQUEST: &str =
    include_str!("../../tests/fixtures/openai/completion_request.json");
const COMPLETION_RESPONSE: &str =
    include_str!("../../tests/fixtures/openai/completion_response.json");
const COMPLETION_STREAM: &str = include_str!("../../tests/fixtures/openai/completion_stream.sse");
const ERROR: &str = include_str!("../../tests/fixtures/openai/error.json");

fn decode_stream(bytes: &[u8]) -> Vec<StreamEvent> {
    decode_all(OpenAiCodec.stream_decoder().as_mut(), bytes, &[])
}

fn data_lines(bytes: &[u8]) -> Vec<String> {
    sse_events(bytes).into_iter().map(|e| e.data).collect()
}

#[test]
fn decodes_documented_chat_request() {
    let req = OpenAiCodec
        .decode_request(Op::Chat, CHAT_REQUEST.as_bytes())
        .unwrap();
    assert_eq!(req.model, "gpt-4o");
    assert_eq!(
        req.system.as_deref(),
        Some("You are a helpful assistant.\n\nAnswer briefly.")
    );
    assert_eq!(req.messages.len(), 4);
    assert_eq!(req.messages[0].role, Role::User);
    assert_eq!(
        req.messages[0].content,
        vec![
            Part::Text("What's in this image, and what's the weather in Paris?".into()),
            Part::Image(Image::Url(
                "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg".into()
            )),
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }),
        ]
    );
    let a = &req.messages[1];
    assert_eq!(a.role, Role::Assistant);
    assert!(a.content.is_empty());
    assert_eq!(
        a.tool_calls,
        vec![ToolCall {
            id: "call_abc123".into(),
            name: "get_current_weather".into(),
            arguments: "{\"location\":\"Paris, France\"}".into(),
        }]
    );
    let t = &req.messages[2];
    assert_eq!(t.role, Role::Tool);
    assert_eq!(t.tool_call_id.as_deref(), Some("call_abc123"));
    assert_eq!(t.name.as_deref(), Some("get_current_weather"));
    assert_eq!(t.content, vec![Part::Text("{\"temperature\":22}".into())]);
    assert_eq!(req.messages[3].role, Role::User);
    assert_eq!(req.max_tokens, Some(300));
    assert_eq!(req.temperature, Some(0.2));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.stop, vec!["\n\n".to_string()]);
    assert_eq!(req.seed, Some(42));
    assert_eq!(req.frequency_penalty, Some(0.5));
    assert_eq!(req.presence_penalty, Some(0.25));
    assert!(req.stream);
    assert!(req.include_usage);
    assert_eq!(req.tools.len(), 1);
    assert_eq!(req.tools[0].name, "get_current_weather");
    assert_eq!(
        req.tools[0].description.as_deref(),
        Some("Get the current weather in a given location")
    );
    assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "weather".into(),
            schema: json!({"type": "object", "properties": {"summary": {"type": "string"}}}),
            strict: true,
        })
    );
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert!(!req.legacy_prompt);
}

#[test]
fn decodes_request_variants() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],
            "max_tokens":10,"max_completion_tokens":20,"stop":["a","b"],
            "tool_choice":{"type":"function","function":{"name":"f"}},
            "response_format":{"type":"json_object"},"n":1,"logprobs":false,
            "store":true,"metadata":{"k":"v"},"service_tier":"auto","parallel_tool_calls":true}"#;
    let req = OpenAiCodec.decode_request(Op::Chat, body).unwrap();
    assert_eq!(req.max_tokens, Some(20));
    assert_eq!(req.stop, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(req.tool_choice, Some(ToolChoice::Tool("f".into())));
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    assert!(!req.stream && !req.include_usage);
    for (choice, want) in [
        ("\"none\"", ToolChoice::None),
        ("\"required\"", ToolChoice::Required),
    ] {
        let body = format!(r#"{{"model":"m","messages":[],"tool_choice":{choice}}}"#);
        let req = OpenAiCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap();
        assert_eq!(req.tool_choice, Some(want));
    }
}

#[test]
fn decodes_legacy_completion_request() {
    let req = OpenAiCodec
        .decode_request(Op::Completion, COMPLETION_REQUEST.as_bytes())
        .unwrap();
    assert!(req.legacy_prompt);
    assert_eq!(req.model, "gpt-3.5-turbo-instruct");
    assert_eq!(
        req.messages,
        vec![Message {
            role: Role::User,
            content: vec![Part::Text("Say this is a test".into())],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
            is_error: false,
        }]
    );
    assert_eq!(req.max_tokens, Some(7));
    assert_eq!(req.temperature, Some(0.0));
    let req = OpenAiCodec
        .decode_request(Op::Completion, br#"{"model":"m","prompt":["one"]}"#)
        .unwrap();
    assert_eq!(req.messages[0].content, vec![Part::Text("one".into())]);
    let err = OpenAiCodec
        .decode_request(Op::Completion, br#"{"model":"m","prompt":["a","b"]}"#)
        .unwrap_err();
    assert_eq!(err.field, "prompt");
    let err = OpenAiCodec
        .decode_request(Op::Completion, br#"{"model":"m","prompt":[1,2,3]}"#)
        .unwrap_err();
    assert_eq!(err.field, "prompt");
}

#[test]
fn inexpressible_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        (r#""n":2"#, "n"),
        (r#""logprobs":true"#, "logprobs"),
        (r#""top_logprobs":3"#, "top_logprobs"),
        (r#""audio":{"voice":"alloy","format":"wav"}"#, "audio"),
        (r#""modalities":["text","audio"]"#, "modalities"),
        (r#""logit_bias":{"50256":-100}"#, "logit_bias"),
        (r#""parallel_tool_calls":false"#, "parallel_tool_calls"),
        (r#""functions":[{"name":"f"}]"#, "functions"),
        (
            r#""prediction":{"type":"content","content":"x"}"#,
            "prediction",
        ),
        (r#""reasoning_effort":"extreme""#, "reasoning_effort"),
        (r#""stop":5"#, "stop"),
        (r#""temperature":"hot""#, "temperature"),
        (
            r#""tools":[{"type":"custom","custom":{"name":"x"}}]"#,
            "tools[0].type",
        ),
        (
            r#""response_format":{"type":"xml"}"#,
            "response_format.type",
        ),
    ];
    for (extra, field) in cases {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{extra}}}"#);
        let err = OpenAiCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, *field, "{extra}: {err}");
    }
    let msgs: &[(&str, &str)] = &[
        (
            r#"{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}"#,
            "messages[0].content[0]",
        ),
        (
            r#"{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}"#,
            "messages[0].content[0]",
        ),
        (
            r#"{"role":"function","name":"f","content":"x"}"#,
            "messages[0].role",
        ),
        (
            r#"{"role":"tool","content":"x"}"#,
            "messages[0].tool_call_id",
        ),
        (
            r#"{"role":"assistant","content":null,"audio":{"id":"a"}}"#,
            "messages[0].audio",
        ),
        (
            r#"{"role":"system","content":[{"type":"image_url","image_url":{"url":"u"}}]}"#,
            "messages[0].content[0]",
        ),
    ];
    for (m, field) in msgs {
        let body = format!(r#"{{"model":"m","messages":[{m}]}}"#);
        let err = OpenAiCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, *field, "{m}: {err}");
    }
    for (extra, field) in [
        (r#""echo":true"#, "echo"),
        (r#""suffix":"end""#, "suffix"),
        (r#""best_of":3"#, "best_of"),
        (r#""logprobs":2"#, "logprobs"),
        (r#""n":3"#, "n"),
    ] {
        let body = format!(r#"{{"model":"m","prompt":"p",{extra}}}"#);
        let err = OpenAiCodec
            .decode_request(Op::Completion, body.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, field, "{extra}");
    }
    let err = OpenAiCodec
        .encode_request(&ChatRequest {
            model: "m".into(),
            top_k: Some(40),
            ..ChatRequest::default()
        })
        .unwrap_err();
    assert_eq!(err.field, "top_k");
    let err = OpenAiCodec.decode_request(Op::Chat, b"[1]").unwrap_err();
    assert_eq!(err.field, "");
}

#[test]
fn request_round_trips_through_canonical() {
    let req = OpenAiCodec
        .decode_request(Op::Chat, CHAT_REQUEST.as_bytes())
        .unwrap();
    let body = OpenAiCodec.encode_request(&req).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["messages"][0],
        json!({"role": "system", "content": "You are a helpful assistant.\n\nAnswer briefly."})
    );
    assert_eq!(
        v["messages"][1]["content"][1]["image_url"]["url"],
        "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg"
    );
    assert_eq!(
        v["messages"][1]["content"][2]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    assert_eq!(v["messages"][2]["content"], Value::Null);
    assert_eq!(v["messages"][2]["tool_calls"][0]["id"], "call_abc123");
    assert_eq!(
        v["messages"][3],
        json!({"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\":22}"})
    );
    assert_eq!(v["max_completion_tokens"], 300);
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["response_format"]["json_schema"]["name"], "weather");
    let again = OpenAiCodec.decode_request(Op::Chat, &body).unwrap();
    assert_eq!(again, req);
}

#[test]
fn decodes_documented_responses() {
    let r = OpenAiCodec
        .decode_response(CHAT_RESPONSE.as_bytes())
        .unwrap();
    assert_eq!(r.id, "chatcmpl-123");
    assert_eq!(r.model, "gpt-4o-mini");
    assert_eq!(r.created, 1677652288);
    assert_eq!(r.text, "\n\nHello there, how may I assist you today?");
    assert_eq!(r.finish, FinishReason::Stop);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 9,
            output_tokens: 12,
            ..Usage::default()
        }
    );

    let r = OpenAiCodec
        .decode_response(CHAT_RESPONSE_TOOLS.as_bytes())
        .unwrap();
    assert_eq!(r.text, "");
    assert_eq!(r.finish, FinishReason::ToolCalls);
    assert_eq!(
        r.tool_calls,
        vec![ToolCall {
            id: "call_abc123".into(),
            name: "get_current_weather".into(),
            arguments: "{\n\"location\": \"Boston, MA\"\n}".into(),
        }]
    );
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 82,
            output_tokens: 17,
            ..Usage::default()
        }
    );

    let r = OpenAiCodec
        .decode_response(COMPLETION_RESPONSE.as_bytes())
        .unwrap();
    assert_eq!(r.text, "\n\nThis is indeed a test");
    assert_eq!(r.finish, FinishReason::Length);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 5,
            output_tokens: 7,
            ..Usage::default()
        }
    );
}

#[test]
fn encodes_responses_like_openai() {
    let resp = ChatResponse {
        id: String::new(),
        model: "gpt-4o".into(),
        created: 0,
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: "toolu_01".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into(),
        }],
        finish: FinishReason::ToolCalls,
        usage: Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Usage::default()
        },
    };
    let v: Value = serde_json::from_slice(&OpenAiCodec.encode_response(Op::Chat, &resp)).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 0);
    let m = &v["choices"][0]["message"];
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["refusal"], Value::Null);
    assert_eq!(m["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(m["tool_calls"][0]["type"], "function");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    assert_eq!(
        OpenAiCodec
            .decode_response(&serde_json::to_vec(&v).unwrap())
            .unwrap()
            .tool_calls,
        resp.tool_calls
    );

    let resp = ChatResponse {
        text: "hello".into(),
        finish: FinishReason::Length,
        ..ChatResponse::default()
    };
    let v: Value =
        serde_json::from_slice(&OpenAiCodec.encode_response(Op::Completion, &resp)).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "hello");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[test]
fn decodes_documented_streams() {
    let ev = decode_stream(CHAT_STREAM.as_bytes());
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "chatcmpl-123".into(),
                model: "gpt-4o-mini".into()
            },
            StreamEvent::Text("Hello".into()),
            StreamEvent::Text("!".into()),
            StreamEvent::Finish(FinishReason::Stop),
            StreamEvent::Usage(Usage {
                input_tokens: 9,
                output_tokens: 2,
                ..Usage::default()
            }),
        ]
    );
    let ev = decode_stream(CHAT_STREAM_TOOLS.as_bytes());
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "chatcmpl-9abc".into(),
                model: "gpt-4o-2024-08-06".into()
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "location".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "\":\"".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "Paris".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "\"}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_2".into(),
                name: "get_time".into()
            },
            StreamEvent::ToolCallArgs {
                index: 1,
                fragment: "{}".into()
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
        ]
    );
    let ev = decode_stream(COMPLETION_STREAM.as_bytes());
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe".into(),
                model: "gpt-3.5-turbo-instruct".into()
            },
            StreamEvent::Text("\n\n".into()),
            StreamEvent::Text("This".into()),
            StreamEvent::Text(" is a test".into()),
            StreamEvent::Finish(FinishReason::Length),
        ]
    );
}

#[test]
fn stream_split_at_every_byte_gives_the_same_events() {
    for sample in [CHAT_STREAM, CHAT_STREAM_TOOLS, COMPLETION_STREAM] {
        let bytes = sample.as_bytes();
        let whole = decode_stream(bytes);
        for cut in 0..bytes.len() {
            let ev = decode_all(OpenAiCodec.stream_decoder().as_mut(), bytes, &[cut]);
            assert_eq!(ev, whole, "cut at {cut}");
        }
        let cuts: Vec<usize> = (1..bytes.len()).step_by(7).collect();
        let ev = decode_all(OpenAiCodec.stream_decoder().as_mut(), bytes, &cuts);
        assert_eq!(ev, whole);
    }
}

#[test]
fn stream_error_and_servers_without_index() {
    let ev = decode_stream(
            b"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
              data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        );
    assert_eq!(ev.last(), Some(&StreamEvent::Error("overloaded".into())));
    // A whole call in one delta, no index; usage in the finishing chunk.
    let ev = decode_stream(
            b"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n\
              data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n\
              data: [DONE]\n\n",
        );
    assert_eq!(
        ev[1..],
        [
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{}".into()
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 1,
                output_tokens: 2,
                ..Usage::default()
            }),
        ]
    );
}

fn sample_events() -> Vec<StreamEvent> {
    vec![
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "m".into(),
        },
        StreamEvent::Text("Hel".into()),
        StreamEvent::Text("lo".into()),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{\"a\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "1}".into(),
        },
        StreamEvent::Finish(FinishReason::ToolCalls),
        StreamEvent::Usage(Usage {
            input_tokens: 5,
            output_tokens: 6,
            ..Usage::default()
        }),
    ]
}

#[test]
fn encoder_writes_chunks_and_done_and_usage_only_when_asked() {
    let events = sample_events();
    let bytes = encode_stream(
        OpenAiCodec.stream_encoder_with(Op::Chat, true).as_mut(),
        &events,
    );
    let data = data_lines(&bytes);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-1");
    }
    assert_eq!(
        chunks[3]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}})
    );
    assert_eq!(
        chunks[4]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index":0,"function":{"arguments":"{\"a\":"}})
    );
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["delta"], json!({}));
    assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 11);
    // Our own decoder reads it back.
    let back = decode_stream(&bytes);
    assert_eq!(back, events);

    let bytes = encode_stream(
        OpenAiCodec.stream_encoder_with(Op::Chat, false).as_mut(),
        &events,
    );
    let data = data_lines(&bytes);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.iter().all(|d| !d.contains("usage")), "{data:?}");
    assert_eq!(decode_stream(&bytes), events[..events.len() - 1]);

    // Usage before Finish is held until after the finish chunk.
    let mut reordered = events.clone();
    reordered.swap(6, 7);
    let bytes = encode_stream(OpenAiCodec.stream_encoder(Op::Chat).as_mut(), &reordered);
    assert_eq!(decode_stream(&bytes), events);
}

#[test]
fn encoder_completion_chunks_and_errors() {
    let events = vec![
        StreamEvent::Start {
            id: String::new(),
            model: "m".into(),
        },
        StreamEvent::Text("a".into()),
        StreamEvent::Finish(FinishReason::Stop),
    ];
    let bytes = encode_stream(
        OpenAiCodec
            .stream_encoder_with(Op::Completion, false)
            .as_mut(),
        &events,
    );
    let data = data_lines(&bytes);
    assert_eq!(data.len(), 3);
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert!(first["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(first["choices"][0]["text"], "a");
    let back = decode_stream(&bytes);
    assert_eq!(back[1..], events[1..]);

    let mut enc = OpenAiCodec.stream_encoder(Op::Chat);
    let mut out = Vec::new();
    enc.encode(
        &StreamEvent::Start {
            id: "x".into(),
            model: "m".into(),
        },
        &mut out,
    );
    enc.encode(&StreamEvent::Error("boom".into()), &mut out);
    enc.finish(&mut out);
    let data = data_lines(&out);
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let err: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(err["error"]["message"], "boom");
    assert_eq!(err["error"]["type"], "server_error");
    assert_eq!(
        decode_stream(&out).last(),
        Some(&StreamEvent::Error("boom".into()))
    );
}

#[test]
fn error_messages() {
    assert_eq!(
        OpenAiCodec.error_message(ERROR.as_bytes()).as_deref(),
        Some("The model `gpt-5-nope` does not exist or you do not have access to it.")
    );
    assert_eq!(
        OpenAiCodec
            .error_message(br#"{"error":"plain"}"#)
            .as_deref(),
        Some("plain")
    );
    assert_eq!(OpenAiCodec.error_message(b"not json"), None);
    assert_eq!(OpenAiCodec.error_message(br#"{"ok":1}"#), None);
    assert_eq!(
        OpenAiCodec
            .decode_response(ERROR.as_bytes())
            .unwrap_err()
            .field,
        "error"
    );
}

#[test]
fn ids_are_unique_and_prefixed() {
    let a = new_id("chatcmpl-");
    let b = new_id("chatcmpl-");
    assert_ne!(a, b);
    assert!(a.starts_with("chatcmpl-"));
    assert_eq!(a.len(), "chatcmpl-".len() + 24);
    assert!(a[9..].chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn decoders_never_panic_on_truncated_or_garbage_input() {
    let garbage: [&[u8]; 8] = [
            b"\xff\xfe\x00data: {",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615}]}}]}\n\n",
            b"data: {\"choices\":\"x\",\"usage\":5}\n\n",
            b"data: []\n\ndata: 12\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[null,1,{\"function\":7}]}}]}\n\n",
            b"\r\r\r\n\n:::\ndata\n\n",
            b"data: {\"error\":null,\"choices\":null}\n\n",
            b"data: [DONE]\n\ndata: garbage\n\n",
        ];
    let samples = [
        CHAT_STREAM,
        CHAT_STREAM_TOOLS,
        COMPLETION_STREAM,
        CHAT_REQUEST,
        CHAT_RESPONSE,
        CHAT_RESPONSE_TOOLS,
        COMPLETION_REQUEST,
        COMPLETION_RESPONSE,
        ERROR,
    ];
    for p in prefixes(&samples) {
        exercise(&OpenAiCodec, p);
    }
    for g in garbage {
        exercise(&OpenAiCodec, g);
        stream_twice(&OpenAiCodec, g);
    }
}

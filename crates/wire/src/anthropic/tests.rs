//! Unit tests of the Anthropic codec, against the documented examples in `tests/fixtures/anthropic`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamEncoder, StreamEvent, ToolCall, ToolChoice, Usage,
};
use crate::testing::{
    decode_all as decode_with, encode_all as encode, exercise, prefixes, sse_events, stream_twice,
};
use crate::translate::openai::OpenAiCodec;

use super::{AnthropicCodec, DEFAULT_MAX_OUTPUT_TOKENS};

const REQUEST: &str = include_str!("../../tests/fixtures/anthropic/messages_request.json");
const RESPONSE: &str = include_str!("../../tests/fixtures/anthropic/messages_response.json");
const RESPONSE_TOOL: &str =
    include_str!("../../tests/fixtures/anthropic/messages_response_tool_use.json");
const STREAM: &str = include_str!("../../tests/fixtures/anthropic/messages_stream.sse");
const STREAM_TOOL: &str =
    include_str!("../../tests/fixtures/anthropic/messages_stream_tool_use.sse");
const ERROR: &str = include_str!("../../tests/fixtures/anthropic/error.json");
const OPENAI_STREAM: &str = include_str!("../../tests/fixtures/openai/chat_stream.sse");
const OPENAI_STREAM_TOOLS: &str =
    include_str!("../../tests/fixtures/openai/chat_stream_tool_calls.sse");

fn decode(bytes: &[u8]) -> Vec<StreamEvent> {
    decode_with(AnthropicCodec.stream_decoder().as_mut(), bytes, &[])
}

/// (event name, data) of every SSE event.
fn sse(bytes: &[u8]) -> Vec<(String, Value)> {
    sse_events(bytes)
        .into_iter()
        .map(|e| {
            (
                e.event.unwrap_or_default(),
                serde_json::from_str(&e.data).unwrap(),
            )
        })
        .collect()
}

fn user(text: &str) -> Message {
    Message {
        role: Role::User,
        content: vec![Part::Text(text.into())],
        tool_calls: vec![],
        tool_call_id: None,
        name: None,
        is_error: false,
    }
}

#[test]
fn decodes_documented_request() {
    let req = AnthropicCodec
        .decode_request(Op::Chat, REQUEST.as_bytes())
        .unwrap();
    assert_eq!(req.model, "claude-sonnet-4-20250514");
    assert_eq!(req.max_tokens, Some(1024));
    assert_eq!(
        req.system.as_deref(),
        Some("You are a weather bot.\nBe brief.")
    );
    assert_eq!(req.messages.len(), 5);
    assert_eq!(
        req.messages[0].content,
        vec![
            Part::Image(Image::Base64 {
                media_type: "image/jpeg".into(),
                data: "/9j/4AAQSkZJRg==".into()
            }),
            Part::Image(Image::Url("https://upload.wikimedia.org/a.jpg".into())),
            Part::Text("Describe these, then check the weather in San Francisco.".into()),
        ]
    );
    let a = &req.messages[1];
    assert_eq!(a.role, Role::Assistant);
    assert_eq!(
        a.content,
        vec![Part::Text("I'll check the weather.".into())]
    );
    assert_eq!(
        a.tool_calls,
        vec![ToolCall {
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "get_weather".into(),
            arguments: r#"{"location":"San Francisco, CA","unit":"celsius"}"#.into(),
        }]
    );
    let t = &req.messages[2];
    assert_eq!(t.role, Role::Tool);
    assert_eq!(
        t.tool_call_id.as_deref(),
        Some("toolu_01A09q90qw90lq917835lq9")
    );
    assert_eq!(t.name.as_deref(), Some("get_weather"));
    assert_eq!(t.content, vec![Part::Text("15 degrees".into())]);
    assert_eq!(req.messages[3], user("And tomorrow?"));
    assert_eq!(req.messages[4].role, Role::Assistant);
    assert_eq!(req.temperature, Some(0.5));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.stop, vec!["\n\nHuman:".to_string()]);
    assert!(req.stream);
    assert!(req.include_usage);
    assert_eq!(req.tools.len(), 1);
    assert_eq!(req.tools[0].name, "get_weather");
    assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(
        req.user.as_deref(),
        Some("13803d75-b4b5-4c3e-b2a2-6f21399b021b")
    );
}

#[test]
fn request_round_trips_through_canonical() {
    let req = AnthropicCodec
        .decode_request(Op::Chat, REQUEST.as_bytes())
        .unwrap();
    let body = AnthropicCodec.encode_request(&req).unwrap();
    let again = AnthropicCodec.decode_request(Op::Chat, &body).unwrap();
    assert_eq!(again, req);
    let original: Value = serde_json::from_str(REQUEST).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["messages"][1], original["messages"][1]);
    assert_eq!(v["tools"], original["tools"]);
    assert_eq!(v["tool_choice"], original["tool_choice"]);
    assert_eq!(v["metadata"], original["metadata"]);
}

#[test]
fn tool_choices_and_tool_result_blocks() {
    for (tc, want) in [
        (r#"{"type":"any"}"#, ToolChoice::Required),
        (r#"{"type":"none"}"#, ToolChoice::None),
        (
            r#"{"type":"tool","name":"f"}"#,
            ToolChoice::Tool("f".into()),
        ),
    ] {
        let body = format!(r#"{{"model":"m","max_tokens":5,"messages":[],"tool_choice":{tc}}}"#);
        let req = AnthropicCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap();
        assert_eq!(req.tool_choice, Some(want.clone()));
        let v: Value =
            serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
        assert_eq!(v["tool_choice"], serde_json::from_str::<Value>(tc).unwrap());
    }
    let body = br#"{"model":"m","max_tokens":5,"messages":[
            {"role":"user","content":[
                {"type":"text","text":"before"},
                {"type":"tool_result","tool_use_id":"toolu_1","is_error":true,
                 "content":[{"type":"text","text":"boom"},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]},
                {"type":"text","text":"after","cache_control":{"type":"ephemeral"}}]}]}"#;
    let req = AnthropicCodec.decode_request(Op::Chat, body).unwrap();
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.messages[0], user("before"));
    assert_eq!(req.messages[1].role, Role::Tool);
    assert_eq!(req.messages[1].name, None);
    assert_eq!(
        req.messages[1].content,
        vec![
            Part::Text("boom".into()),
            Part::Image(Image::Url("https://x/y.png".into()))
        ]
    );
    assert_eq!(req.messages[2], user("after"));
    // Re-encoded: one user turn, the tool result first.
    let v: Value = serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
    let turns = v["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 1);
    let kinds: Vec<&str> = turns[0]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["tool_result", "text", "text"]);
    assert_eq!(
        turns[0]["content"][0]["content"][1]["source"]["type"],
        "url"
    );
}

#[test]
fn inexpressible_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        (r#""thinking":{"type":"sometimes"}"#, "thinking.type"),
        (
            r#""mcp_servers":[{"type":"url","url":"https://m","name":"m"}]"#,
            "mcp_servers",
        ),
        (r#""container":"c""#, "container"),
        (
            r#""tools":[{"type":"web_search_20250305","name":"web_search"}]"#,
            "tools[0].type",
        ),
        (
            r#""tool_choice":{"type":"auto","disable_parallel_tool_use":true}"#,
            "tool_choice.disable_parallel_tool_use",
        ),
        (r#""stop_sequences":[1]"#, "stop_sequences[0]"),
        (r#""system":[{"type":"image"}]"#, "system[0].type"),
    ];
    for (extra, field) in cases {
        let body = format!(
            r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}],{extra}}}"#
        );
        let err = AnthropicCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, *field, "{extra}: {err}");
    }
    let msgs: &[(&str, &str)] = &[
        (
            r#"{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"x"}}]}"#,
            "messages[0].content[0]",
        ),
        (
            r#"{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}"#,
            "messages[0].content[0].source.type",
        ),
        (r#"{"role":"system","content":"x"}"#, "messages[0].role"),
        (r#"{"role":"user"}"#, "messages[0].content"),
    ];
    for (m, field) in msgs {
        let body = format!(r#"{{"model":"m","max_tokens":5,"messages":[{m}]}}"#);
        let err = AnthropicCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, *field, "{m}: {err}");
    }
    let base = ChatRequest {
        model: "m".into(),
        messages: vec![user("hi")],
        ..ChatRequest::default()
    };
    let encode_err = |req: ChatRequest| AnthropicCodec.encode_request(&req).unwrap_err().field;
    assert_eq!(
        encode_err(ChatRequest {
            response_format: Some(ResponseFormat::JsonObject),
            ..base.clone()
        }),
        "response_format"
    );
    assert_eq!(
        encode_err(ChatRequest {
            seed: Some(1),
            ..base.clone()
        }),
        "seed"
    );
    assert_eq!(
        encode_err(ChatRequest {
            frequency_penalty: Some(0.5),
            ..base.clone()
        }),
        "frequency_penalty"
    );
    assert_eq!(
        encode_err(ChatRequest {
            presence_penalty: Some(-1.0),
            ..base.clone()
        }),
        "presence_penalty"
    );
    // Zero penalties and a text response format say nothing: accepted.
    let ok = ChatRequest {
        frequency_penalty: Some(0.0),
        presence_penalty: Some(0.0),
        response_format: Some(ResponseFormat::Text),
        ..base.clone()
    };
    assert!(AnthropicCodec.encode_request(&ok).is_ok());
    let mut bad_args = base.clone();
    bad_args.messages.push(Message {
        role: Role::Assistant,
        content: vec![],
        tool_calls: vec![ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: "{not json".into(),
        }],
        tool_call_id: None,
        name: None,
        is_error: false,
    });
    assert_eq!(
        encode_err(bad_args.clone()),
        "messages[1].tool_calls[0].arguments"
    );
    bad_args.messages[1].tool_calls[0].arguments = "[1,2]".into();
    assert_eq!(encode_err(bad_args), "messages[1].tool_calls[0].arguments");
    // The OpenAI fixture asks for a seed: Anthropic cannot.
    let openai = include_str!("../../tests/fixtures/openai/chat_request.json");
    let req = OpenAiCodec
        .decode_request(Op::Chat, openai.as_bytes())
        .unwrap();
    assert_eq!(
        AnthropicCodec.encode_request(&req).unwrap_err().field,
        "seed"
    );
}

#[test]
fn openai_request_to_anthropic() {
    let body = br#"{
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/map.png"}}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
                {"role": "user", "content": "Which is warmer?"},
                {"role": "developer", "content": "Use Celsius."}
            ],
            "temperature": 0.3,
            "stop": ["END"],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "user": "u-1",
            "stream": true,
            "frequency_penalty": 0
        }"#;
    let req = OpenAiCodec.decode_request(Op::Chat, body).unwrap();
    let v: Value = serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
    assert_eq!(v["max_tokens"], DEFAULT_MAX_OUTPUT_TOKENS);
    // The developer message after the conversation began keeps its place, as a user turn.
    assert_eq!(v["system"], "Be terse.");
    assert_eq!(v["temperature"], 0.3);
    assert_eq!(v["stop_sequences"], json!(["END"]));
    assert_eq!(v["stream"], true);
    assert_eq!(v["tool_choice"], json!({"type": "any"}));
    assert_eq!(v["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(
        v["tools"],
        json!([{"name": "weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    );
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                {"type": "text", "text": "Which is warmer?"},
                {"type": "text", "text": "<system>\nUse Celsius.\n</system>"}
            ]}
        ])
    );
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
    // max_tokens passes through when given.
    let req = ChatRequest {
        max_tokens: Some(77),
        ..req
    };
    let v: Value = serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
    assert_eq!(v["max_tokens"], 77);
}

#[test]
fn anthropic_request_to_openai() {
    let mut req = AnthropicCodec
        .decode_request(Op::Chat, REQUEST.as_bytes())
        .unwrap();
    assert_eq!(OpenAiCodec.encode_request(&req).unwrap_err().field, "top_k");
    req.top_k = None;
    let v: Value = serde_json::from_slice(&OpenAiCodec.encode_request(&req).unwrap()).unwrap();
    assert_eq!(v["model"], "claude-sonnet-4-20250514");
    assert_eq!(v["max_completion_tokens"], 1024);
    assert_eq!(v["stop"], json!(["\n\nHuman:"]));
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["user"], "13803d75-b4b5-4c3e-b2a2-6f21399b021b");
    assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        v["tools"][0]["function"]["parameters"]["required"],
        json!(["location"])
    );
    assert_eq!(
        v["messages"],
        json!([
            {"role": "system", "content": "You are a weather bot.\nBe brief."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
                {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
                {"type": "text", "text": "Describe these, then check the weather in San Francisco."}
            ]},
            {"role": "assistant", "content": "I'll check the weather.", "tool_calls": [
                {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": "Let me check."}
        ])
    );
    // And back: OpenAI → canonical gives the same conversation.
    let back = OpenAiCodec
        .decode_request(Op::Chat, &serde_json::to_vec(&v).unwrap())
        .unwrap();
    assert_eq!(back.messages, req.messages);
    assert_eq!(back.system, req.system);
}

#[test]
fn decodes_documented_responses() {
    let r = AnthropicCodec.decode_response(RESPONSE.as_bytes()).unwrap();
    assert_eq!(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(r.model, "claude-3-7-sonnet-20250219");
    assert_eq!(r.text, "Hi! My name is Claude.");
    assert_eq!(r.finish, FinishReason::Stop);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 2095,
            output_tokens: 503,
            ..Usage::default()
        }
    );
    assert!(r.tool_calls.is_empty());
    let r = AnthropicCodec
        .decode_response(RESPONSE_TOOL.as_bytes())
        .unwrap();
    assert_eq!(
        r.text,
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(r.finish, FinishReason::ToolCalls);
    assert_eq!(
        r.tool_calls,
        vec![ToolCall {
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "get_weather".into(),
            arguments: r#"{"location":"San Francisco, CA"}"#.into(),
        }]
    );
    // Cache reads and writes count as input.
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 472 + 100 + 20,
            output_tokens: 89,
            cached_input_tokens: 20,
            cache_write_tokens: 100,
            reasoning_tokens: 0,
        }
    );
    for (reason, want) in [
        ("max_tokens", FinishReason::Length),
        ("stop_sequence", FinishReason::Stop),
        ("end_turn", FinishReason::Stop),
        ("tool_use", FinishReason::ToolCalls),
    ] {
        let body = format!(
            r#"{{"id":"m","type":"message","role":"assistant","model":"c","content":[],"stop_reason":"{reason}","stop_sequence":null,"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
        );
        assert_eq!(
            AnthropicCodec
                .decode_response(body.as_bytes())
                .unwrap()
                .finish,
            want
        );
    }
}

#[test]
fn encodes_responses_like_anthropic() {
    let r = OpenAiCodec
        .decode_response(
            include_str!("../../tests/fixtures/openai/chat_response_tool_calls.json").as_bytes(),
        )
        .unwrap();
    let v: Value = serde_json::from_slice(&AnthropicCodec.encode_response(Op::Chat, &r)).unwrap();
    assert_eq!(v["id"], "chatcmpl-abc123");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather", "input": {"location": "Boston, MA"}}])
    );
    assert_eq!(v["usage"], json!({"input_tokens": 82, "output_tokens": 17}));
    let resp = ChatResponse {
        text: "hi".into(),
        finish: FinishReason::Length,
        tool_calls: vec![ToolCall {
            id: String::new(),
            name: "f".into(),
            arguments: String::new(),
        }],
        ..ChatResponse::default()
    };
    let v: Value =
        serde_json::from_slice(&AnthropicCodec.encode_response(Op::Chat, &resp)).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["content"][0], json!({"type": "text", "text": "hi"}));
    assert!(v["content"][1]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
    assert_eq!(v["content"][1]["input"], json!({}));
    assert_eq!(v["stop_reason"], "max_tokens");
    let back = AnthropicCodec
        .decode_response(&serde_json::to_vec(&v).unwrap())
        .unwrap();
    assert_eq!(back.text, "hi");
    assert_eq!(back.finish, FinishReason::Length);
}

#[test]
fn decodes_documented_streams() {
    assert_eq!(
        decode(STREAM.as_bytes()),
        vec![
            StreamEvent::Start {
                id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".into(),
                model: "claude-opus-4-20250514".into()
            },
            StreamEvent::Text("Hello".into()),
            StreamEvent::Text("!".into()),
            StreamEvent::Finish(FinishReason::Stop),
            StreamEvent::Usage(Usage {
                input_tokens: 25,
                output_tokens: 15,
                ..Usage::default()
            }),
        ]
    );
    assert_eq!(
        decode(STREAM_TOOL.as_bytes()),
        vec![
            StreamEvent::Start {
                id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
                model: "claude-opus-4-20250514".into()
            },
            StreamEvent::Text("Okay".into()),
            StreamEvent::Text(", let's check the weather for San Francisco, CA:".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"location\":".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: " \"San Fra".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "ncisco, CA\"".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: ", \"unit\": \"fahrenheit\"}".into()
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 472,
                output_tokens: 89,
                ..Usage::default()
            }),
        ]
    );
    let ev = decode(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
              event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        );
    assert_eq!(ev.last(), Some(&StreamEvent::Error("Overloaded".into())));
}

#[test]
fn stream_split_at_every_byte_gives_the_same_events() {
    for sample in [STREAM, STREAM_TOOL] {
        let bytes = sample.as_bytes();
        let whole = decode(bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_with(AnthropicCodec.stream_decoder().as_mut(), bytes, &[cut]),
                whole,
                "cut at {cut}"
            );
        }
        let cuts: Vec<usize> = (1..bytes.len()).step_by(5).collect();
        assert_eq!(
            decode_with(AnthropicCodec.stream_decoder().as_mut(), bytes, &cuts),
            whole
        );
    }
}

#[test]
fn encoder_writes_the_exact_event_sequence() {
    let events = vec![
        StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude".into(),
        },
        StreamEvent::Text("Let me ".into()),
        StreamEvent::Text("check.".into()),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{\"city\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "\"Paris\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: String::new(),
            name: "time".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 1,
            fragment: "{}".into(),
        },
        StreamEvent::Text("Done".into()),
        StreamEvent::Finish(FinishReason::ToolCalls),
        StreamEvent::Usage(Usage {
            input_tokens: 10,
            output_tokens: 20,
            ..Usage::default()
        }),
    ];
    let bytes = encode(AnthropicCodec.stream_encoder(Op::Chat).as_mut(), &events);
    let ev = sse(&bytes);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &ev {
        assert_eq!(data["type"], name.as_str());
    }
    let m = &ev[0].1["message"];
    assert_eq!(m["id"], "msg_1");
    assert_eq!(m["content"], json!([]));
    assert_eq!(m["stop_reason"], Value::Null);
    assert!(
        m["usage"]["input_tokens"].is_u64() && m["usage"]["output_tokens"].as_u64().unwrap() <= 1
    );
    assert_eq!(
        ev[2].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        ev[3].1["delta"],
        json!({"type": "text_delta", "text": "Let me "})
    );
    assert_eq!(
        ev[6].1,
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})
    );
    assert_eq!(
        ev[7].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":"})
    );
    assert_eq!(ev[10].1["index"], 2);
    assert!(ev[10].1["content_block"]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
    assert_eq!(ev[13].1["index"], 3);
    assert_eq!(ev[13].1["content_block"]["type"], "text");
    assert_eq!(
        ev[16].1["delta"],
        json!({"stop_reason": "tool_use", "stop_sequence": null})
    );
    assert_eq!(ev[16].1["usage"]["output_tokens"], 20);
    // Our decoder reads it back (the generated tool id aside).
    let mut back = decode(&bytes);
    if let StreamEvent::ToolCallStart { id, .. } = &mut back[6] {
        assert!(id.starts_with("toolu_"));
        id.clear();
    }
    assert_eq!(back, events);
}

#[test]
fn encoder_holds_message_delta_for_usage_but_not_text() {
    let mut enc = AnthropicCodec.stream_encoder(Op::Chat);
    let mut out = Vec::new();
    enc.encode(
        &StreamEvent::Start {
            id: "a".into(),
            model: "b".into(),
        },
        &mut out,
    );
    enc.encode(&StreamEvent::Text("x".into()), &mut out);
    assert!(sse(&out)
        .iter()
        .any(|(n, d)| n == "content_block_delta" && d["delta"]["text"] == "x"));
    enc.encode(&StreamEvent::Finish(FinishReason::Stop), &mut out);
    let names: Vec<String> = sse(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().map(String::as_str), Some("content_block_stop"));
    enc.encode(
        &StreamEvent::Usage(Usage {
            input_tokens: 7,
            output_tokens: 8,
            ..Usage::default()
        }),
        &mut out,
    );
    enc.finish(&mut out);
    let ev = sse(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(names.iter().filter(|n| **n == "message_stop").count(), 1);
    assert_eq!(
        ev[ev.len() - 2].1["usage"],
        json!({"input_tokens": 7, "output_tokens": 8})
    );

    // No usage at all: finish() still ends the message properly.
    let bytes = encode(
        AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
        &[
            StreamEvent::Text("y".into()),
            StreamEvent::Finish(FinishReason::Length),
        ],
    );
    let ev = sse(&bytes);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(ev[0].1["message"]["id"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    assert_eq!(ev[5].1["delta"]["stop_reason"], "max_tokens");

    // Errors: `event: error`, no message_stop after.
    let bytes = encode(
        AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
        &[
            StreamEvent::Start {
                id: "a".into(),
                model: "b".into(),
            },
            StreamEvent::Error("cut".into()),
        ],
    );
    let ev = sse(&bytes);
    assert_eq!(ev.last().unwrap().0, "error");
    assert_eq!(
        ev.last().unwrap().1,
        json!({"type": "error", "error": {"type": "api_error", "message": "cut"}})
    );
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
    assert_eq!(
        decode(&bytes).last(),
        Some(&StreamEvent::Error("cut".into()))
    );
}

/// Decodes `bytes` with `from` fed in pieces, encodes with `to`, decodes that with `back`.
fn transcode(
    from: &dyn Codec,
    to: &mut dyn StreamEncoder,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<StreamEvent>, Vec<u8>) {
    let mut dec = from.stream_decoder();
    let mut events = Vec::new();
    let mut wire = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let mut ev = Vec::new();
        dec.feed(&bytes[at..c], &mut ev).unwrap();
        for e in &ev {
            to.encode(e, &mut wire);
        }
        events.extend(ev);
        at = c;
    }
    let mut ev = Vec::new();
    dec.finish(&mut ev).unwrap();
    for e in &ev {
        to.encode(e, &mut wire);
    }
    events.extend(ev);
    to.finish(&mut wire);
    (events, wire)
}

#[test]
fn openai_stream_to_anthropic_stream() {
    for (sample, extra_usage) in [(OPENAI_STREAM, false), (OPENAI_STREAM_TOOLS, true)] {
        let bytes = sample.as_bytes();
        let (reference, reference_wire) = transcode(
            &OpenAiCodec,
            AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
            bytes,
            &[],
        );
        let mut expected = reference.clone();
        if extra_usage {
            // No usage upstream: the Anthropic stream still reports (zero) usage.
            expected.push(StreamEvent::Usage(Usage::default()));
        }
        assert_eq!(decode(&reference_wire), expected);
        let names: Vec<String> = sse(&reference_wire).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[..2], ["message_start", "ping"]);
        assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
        for cut in 0..bytes.len() {
            let (ev, wire) = transcode(
                &OpenAiCodec,
                AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
                bytes,
                &[cut],
            );
            assert_eq!(ev, reference, "cut at {cut}");
            assert_eq!(decode(&wire), expected, "cut at {cut}");
        }
        let cuts: Vec<usize> = (3..bytes.len()).step_by(11).collect();
        let (_, wire) = transcode(
            &OpenAiCodec,
            AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
            bytes,
            &cuts,
        );
        assert_eq!(decode(&wire), expected);
    }
}

#[test]
fn anthropic_stream_to_openai_stream() {
    let openai_decode = |b: &[u8]| {
        let mut d = OpenAiCodec.stream_decoder();
        let mut out = Vec::new();
        d.feed(b, &mut out).unwrap();
        d.finish(&mut out).unwrap();
        out
    };
    for sample in [STREAM, STREAM_TOOL] {
        let bytes = sample.as_bytes();
        let (reference, wire) = transcode(
            &AnthropicCodec,
            OpenAiCodec.stream_encoder_with(Op::Chat, true).as_mut(),
            bytes,
            &[],
        );
        assert_eq!(openai_decode(&wire), reference);
        assert!(wire.ends_with(b"data: [DONE]\n\n"));
        for cut in 0..bytes.len() {
            let (ev, wire) = transcode(
                &AnthropicCodec,
                OpenAiCodec.stream_encoder_with(Op::Chat, true).as_mut(),
                bytes,
                &[cut],
            );
            assert_eq!(ev, reference, "cut at {cut}");
            assert_eq!(openai_decode(&wire), reference, "cut at {cut}");
        }
        // Without include_usage the client sees everything but the usage.
        let (_, wire) = transcode(
            &AnthropicCodec,
            OpenAiCodec.stream_encoder_with(Op::Chat, false).as_mut(),
            bytes,
            &[],
        );
        let without: Vec<StreamEvent> = reference
            .iter()
            .filter(|e| !matches!(e, StreamEvent::Usage(_)))
            .cloned()
            .collect();
        assert_eq!(openai_decode(&wire), without);
    }
}

#[test]
fn error_messages() {
    assert_eq!(
        AnthropicCodec.error_message(ERROR.as_bytes()).as_deref(),
        Some("The requested resource could not be found.")
    );
    assert_eq!(AnthropicCodec.error_message(b"<html>"), None);
    assert_eq!(AnthropicCodec.error_message(br#"{"type":"message"}"#), None);
    let err = AnthropicCodec
        .decode_response(ERROR.as_bytes())
        .unwrap_err();
    assert_eq!(err.field, "error");
    assert!(err.message.contains("could not be found"));
}

#[test]
fn decoders_never_panic_on_truncated_or_garbage_input() {
    let garbage: [&[u8]; 8] = [
            b"\xff\xfe\x00event: x\ndata: {",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":5}}\n\n",
            b"data: {\"type\":\"message_start\",\"message\":7}\n\n",
            b"data: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"input\":[1]}}\n\n",
            b"data: {\"type\":\"message_delta\",\"delta\":null,\"usage\":{\"input_tokens\":\"x\"}}\n\n",
            b"data: [DONE]\n\n",
            b"event: error\ndata: {\"type\":\"error\",\"error\":42}\n\n",
            b"\r\r\n\n:\ndata\n\ndata: null\n\n",
        ];
    let samples = [STREAM, STREAM_TOOL, REQUEST, RESPONSE, RESPONSE_TOOL, ERROR];
    for p in prefixes(&samples) {
        exercise(&AnthropicCodec, p);
    }
    for g in garbage {
        exercise(&AnthropicCodec, g);
        stream_twice(&AnthropicCodec, g);
    }
    // Encoders accept any event order without panicking.
    let mut enc = AnthropicCodec.stream_encoder(Op::Chat);
    let mut out = Vec::new();
    for e in [
        StreamEvent::ToolCallArgs {
            index: 9,
            fragment: "x".into(),
        },
        StreamEvent::Usage(Usage::default()),
        StreamEvent::Finish(FinishReason::Stop),
        StreamEvent::Text("late".into()),
        StreamEvent::Start {
            id: "late".into(),
            model: String::new(),
        },
    ] {
        enc.encode(&e, &mut out);
    }
    enc.finish(&mut out);
    enc.finish(&mut out);
    assert_eq!(
        sse(&out)
            .iter()
            .filter(|(n, _)| n == "message_stop")
            .count(),
        1
    );
}

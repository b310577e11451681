//! Unit tests of the Ollama codec, against the documented examples in `tests/fixtures/ollama`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::testing::{encode_all, exercise, prefixes, try_decode};

use super::OllamaCodec;

const CHAT_REQUEST: &str = include_str!("../../tests/fixtures/ollama/chat_request.json");
const GENERATE_REQUEST: &str = include_str!("../../tests/fixtures/ollama/generate_request.json");
const CHAT_RESPONSE: &str = include_str!("../../tests/fixtures/ollama/chat_response.json");
const CHAT_RESPONSE_TOOLS: &str =
    include_str!("../../tests/fixtures/ollama/chat_response_tool_calls.json");
const GENERATE_RESPONSE: &str = include_str!("../../tests/fixtures/ollama/generate_response.json");
const CHAT_STREAM: &str = include_str!("../../tests/fixtures/ollama/chat_stream.ndjson");
const CHAT_STREAM_TOOLS: &str =
    include_str!("../../tests/fixtures/ollama/chat_stream_tool_calls.ndjson");
const GENERATE_STREAM: &str = include_str!("../../tests/fixtures/ollama/generate_stream.ndjson");
const ERROR: &str = include_str!("../../tests/fixtures/ollama/error.json");

fn text(s: &str) -> Part {
    Part::Text(s.to_string())
}

fn stream(bytes: &[u8], cut: Option<usize>) -> Result<Vec<StreamEvent>, TranslateError> {
    try_decode(OllamaCodec.stream_decoder().as_mut(), bytes, cut.as_slice())
}

/// Generated ids differ from decoder to decoder; the rest must not.
fn without_ids(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
    events
        .into_iter()
        .map(|e| match e {
            StreamEvent::Start { model, .. } => StreamEvent::Start {
                id: String::new(),
                model,
            },
            StreamEvent::ToolCallStart { index, name, .. } => StreamEvent::ToolCallStart {
                index,
                id: String::new(),
                name,
            },
            other => other,
        })
        .collect()
}

fn encode_events(op: Op, events: &[StreamEvent]) -> Vec<u8> {
    let mut e = OllamaCodec.stream_encoder(op);
    assert_eq!(e.content_type(), "application/x-ndjson");
    encode_all(e.as_mut(), events)
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn decodes_chat_request() {
    let req = OllamaCodec
        .decode_request(Op::Chat, CHAT_REQUEST.as_bytes())
        .unwrap();
    assert_eq!(req.model, "llama3.2");
    assert!(req.stream, "stream defaults to true");
    assert!(req.include_usage);
    assert!(!req.legacy_prompt);
    assert_eq!(req.system.as_deref(), Some("You are terse."));
    assert_eq!(req.temperature, Some(0.5));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.top_k, Some(20));
    assert_eq!(req.max_tokens, Some(128));
    assert_eq!(req.stop, ["\n\n"]);
    assert_eq!(req.seed, Some(42));
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    assert_eq!(req.messages.len(), 4);
    assert_eq!(
        req.messages[0].content,
        [text("What is the weather today in Paris?")]
    );
    let asst = &req.messages[1];
    assert_eq!(asst.role, Role::Assistant);
    assert!(asst.content.is_empty());
    assert_eq!(asst.tool_calls[0].id, "call_0");
    assert_eq!(asst.tool_calls[0].name, "get_current_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&asst.tool_calls[0].arguments).unwrap(),
        json!({"format": "celsius", "location": "Paris, FR"})
    );
    let tool = &req.messages[2];
    assert_eq!(tool.role, Role::Tool);
    assert_eq!(tool.tool_call_id.as_deref(), Some("call_0"));
    assert_eq!(tool.name.as_deref(), Some("get_current_weather"));
    assert_eq!(tool.content, [text("22 degrees celsius")]);
    assert_eq!(
        req.messages[3].content,
        [
            text("what is in this image?"),
            Part::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgoAAAANSUhEUgAAAG0AAABmCAYAAADBPx".into()
            })
        ]
    );
    assert_eq!(req.tools.len(), 1);
    assert_eq!(req.tools[0].name, "get_current_weather");
    assert_eq!(
        req.tools[0].parameters["required"],
        json!(["location", "format"])
    );
}

#[test]
fn decodes_generate_request() {
    let req = OllamaCodec
        .decode_request(Op::Completion, GENERATE_REQUEST.as_bytes())
        .unwrap();
    assert!(req.legacy_prompt);
    assert!(!req.stream);
    assert_eq!(req.system.as_deref(), Some("Answer briefly."));
    assert_eq!(req.messages.len(), 1);
    assert_eq!(req.messages[0].role, Role::User);
    assert_eq!(req.messages[0].content, [text("Why is the sky blue?")]);
    assert_eq!(req.max_tokens, Some(100));
    assert_eq!(req.temperature, Some(0.0));
    let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format else {
        unreachable!("a schema format: {:?}", req.response_format);
    };
    assert_eq!(schema["required"], json!(["age", "available"]));
    // Encoded back it is a generate body again.
    let v: Value = serde_json::from_slice(&OllamaCodec.encode_request(&req).unwrap()).unwrap();
    assert_eq!(v["prompt"], "Why is the sky blue?");
    assert_eq!(v["system"], "Answer briefly.");
    assert_eq!(v["stream"], false);
    assert_eq!(v["format"], *schema);
    assert_eq!(
        v["options"],
        json!({"num_predict": 100, "temperature": 0.0})
    );
    assert!(v.get("messages").is_none());
}

#[test]
fn decodes_responses() {
    let r = OllamaCodec
        .decode_response(CHAT_RESPONSE.as_bytes())
        .unwrap();
    assert_eq!(r.model, "llama3.2");
    assert_eq!(r.text, "Hello! How are you today?");
    assert_eq!(r.finish, FinishReason::Stop);
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 26,
            output_tokens: 298,
            ..Usage::default()
        }
    );
    assert_eq!(r.created, 1_702_390_423);

    let r = OllamaCodec
        .decode_response(CHAT_RESPONSE_TOOLS.as_bytes())
        .unwrap();
    assert_eq!(r.finish, FinishReason::ToolCalls);
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.tool_calls[0].name, "get_current_weather");
    assert!(r.tool_calls[0].id.starts_with("call_"));
    assert_eq!(
        serde_json::from_str::<Value>(&r.tool_calls[0].arguments).unwrap(),
        json!({"format": "celsius", "location": "Paris, FR"})
    );

    let r = OllamaCodec
        .decode_response(GENERATE_RESPONSE.as_bytes())
        .unwrap();
    assert_eq!(
        r.text,
        "The sky is blue because it is the color of the sky."
    );
    assert_eq!(r.finish, FinishReason::Length);
    assert_eq!(r.usage.output_tokens, 290);
    assert_eq!(r.created, 1_691_176_965);
}

#[test]
fn decodes_streams_split_anywhere() {
    let cases: [(&str, Vec<StreamEvent>); 3] = [
        (
            CHAT_STREAM,
            vec![
                StreamEvent::Start {
                    id: String::new(),
                    model: "llama3.2".into(),
                },
                StreamEvent::Text("The".into()),
                StreamEvent::Text(" sky".into()),
                StreamEvent::Finish(FinishReason::Stop),
                StreamEvent::Usage(Usage {
                    input_tokens: 26,
                    output_tokens: 282,
                    ..Usage::default()
                }),
            ],
        ),
        (
            CHAT_STREAM_TOOLS,
            vec![
                StreamEvent::Start {
                    id: String::new(),
                    model: "qwen3".into(),
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: String::new(),
                    name: "get_temperature".into(),
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: r#"{"city":"Toronto"}"#.into(),
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage {
                    input_tokens: 189,
                    output_tokens: 27,
                    ..Usage::default()
                }),
            ],
        ),
        (
            GENERATE_STREAM,
            vec![
                StreamEvent::Start {
                    id: String::new(),
                    model: "llama3.2".into(),
                },
                StreamEvent::Text("The".into()),
                StreamEvent::Text(" sky".into()),
                StreamEvent::Finish(FinishReason::Length),
                StreamEvent::Usage(Usage {
                    input_tokens: 26,
                    output_tokens: 259,
                    ..Usage::default()
                }),
            ],
        ),
    ];
    for (sample, expected) in cases {
        let bytes = sample.as_bytes();
        let whole = stream(bytes, None).unwrap();
        assert!(matches!(&whole[0], StreamEvent::Start { id, .. } if id.starts_with("ollama-")));
        assert_eq!(without_ids(whole), expected);
        for cut in 0..=bytes.len() {
            assert_eq!(
                without_ids(stream(bytes, Some(cut)).unwrap()),
                expected,
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn stream_encoder_chat() {
    let events = [
        StreamEvent::Start {
            id: "x".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::Text("Hel".into()),
        StreamEvent::Text("lo".into()),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{\"city\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "\"Paris\"}".into(),
        },
        StreamEvent::Finish(FinishReason::ToolCalls),
        StreamEvent::Usage(Usage {
            input_tokens: 7,
            output_tokens: 9,
            ..Usage::default()
        }),
    ];
    let out = encode_events(Op::Chat, &events);
    assert!(out.ends_with(b"\n"));
    let ls = lines(&out);
    assert_eq!(ls.len(), 4);
    for l in &ls[..3] {
        assert_eq!(l["model"], "gpt-4o");
        assert_eq!(l["done"], false);
        assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(l["message"]["role"], "assistant");
    }
    assert_eq!(ls[0]["message"]["content"], "Hel");
    assert_eq!(ls[1]["message"]["content"], "lo");
    assert_eq!(
        ls[2]["message"]["tool_calls"],
        json!([{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    );
    let done = &ls[3];
    assert_eq!(done["done"], true);
    assert_eq!(done["done_reason"], "stop");
    assert_eq!(done["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(done["prompt_eval_count"], 7);
    assert_eq!(done["eval_count"], 9);
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(done[k].is_u64(), "{k}");
    }

    let back = without_ids(stream(&out, None).unwrap());
    assert_eq!(
        back,
        [
            StreamEvent::Start {
                id: String::new(),
                model: "gpt-4o".into()
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: String::new(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: r#"{"city":"Paris"}"#.into()
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 7,
                output_tokens: 9,
                ..Usage::default()
            }),
        ]
    );
}

#[test]
fn stream_encoder_generate_and_endings() {
    let out = encode_events(
        Op::Completion,
        &[
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::Finish(FinishReason::Length),
        ],
    );
    let ls = lines(&out);
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0]["response"], "Hi");
    assert_eq!(ls[1]["done"], true);
    assert_eq!(ls[1]["done_reason"], "length");
    assert_eq!(ls[1]["response"], "");
    assert_eq!(ls[1]["context"], json!([]));
    assert_eq!(ls[1]["eval_count"], 0);

    // A stream that just stops still ends with a done line.
    let out = encode_events(
        Op::Chat,
        &[
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
        ],
    );
    assert_eq!(lines(&out).last().unwrap()["done"], true);

    // An error is the last line, and no done line follows.
    let out = encode_events(
        Op::Chat,
        &[
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::Error("upstream went away".into()),
            StreamEvent::Text("late".into()),
        ],
    );
    let ls = lines(&out);
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[1], json!({"error": "upstream went away"}));
    let back = stream(&out, None).unwrap();
    assert_eq!(
        back.last(),
        Some(&StreamEvent::Error("upstream went away".into()))
    );
}

fn canonical_request() -> ChatRequest {
    ChatRequest {
        model: "llama3.2".into(),
        system: Some("Be brief.".into()),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    text("Describe this, then get the weather."),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgoAAAANSUhEUg".into(),
                    }),
                ],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
                is_error: false,
            },
            Message {
                role: Role::Assistant,
                content: vec![text("A chart.")],
                tool_calls: vec![ToolCall {
                    id: "toolu_9".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into(),
                }],
                tool_call_id: None,
                name: None,
                is_error: false,
            },
            Message {
                role: Role::Tool,
                content: vec![text("-3C")],
                tool_calls: vec![],
                tool_call_id: Some("toolu_9".into()),
                name: None,
                is_error: false,
            },
        ],
        max_tokens: Some(64),
        temperature: Some(0.3),
        top_p: Some(0.5),
        top_k: Some(8),
        ollama: Default::default(),
        stop: vec!["###".into()],
        seed: Some(1234),
        frequency_penalty: Some(0.2),
        presence_penalty: Some(0.4),
        stream: false,
        include_usage: true,
        tools: vec![Tool {
            name: "get_weather".into(),
            description: Some("Weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Auto),
        response_format: Some(ResponseFormat::JsonObject),
        user: None,
        legacy_prompt: false,
        legacy_max_tokens: false,
    }
}

#[test]
fn request_round_trip() {
    let req = canonical_request();
    let body = OllamaCodec.encode_request(&req).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        v["messages"][1]["images"],
        json!(["iVBORw0KGgoAAAANSUhEUg"])
    );
    assert_eq!(
        v["messages"][2]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}])
    );
    assert_eq!(
        v["messages"][3],
        json!({"role": "tool", "content": "-3C", "tool_name": "get_weather"})
    );
    assert_eq!(v["format"], "json");
    assert_eq!(v["stream"], false);
    assert_eq!(v["options"]["num_predict"], 64);
    assert_eq!(v["tools"][0]["type"], "function");

    let back = OllamaCodec.decode_request(Op::Chat, &body).unwrap();
    assert_eq!(back.model, req.model);
    assert_eq!(back.system, req.system);
    assert_eq!(back.stream, req.stream);
    assert_eq!(back.max_tokens, req.max_tokens);
    assert_eq!(back.temperature, req.temperature);
    assert_eq!(back.top_p, req.top_p);
    assert_eq!(back.top_k, req.top_k);
    assert_eq!(back.stop, req.stop);
    assert_eq!(back.seed, req.seed);
    assert_eq!(back.frequency_penalty, req.frequency_penalty);
    assert_eq!(back.presence_penalty, req.presence_penalty);
    assert_eq!(back.tools, req.tools);
    assert_eq!(back.response_format, req.response_format);
    assert_eq!(back.messages.len(), 3);
    assert_eq!(back.messages[0], req.messages[0]);
    let asst = &back.messages[1];
    assert_eq!(asst.content, req.messages[1].content);
    assert_eq!(asst.tool_calls[0].name, "get_weather");
    assert_eq!(asst.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
    let tool = &back.messages[2];
    assert_eq!(tool.content, req.messages[2].content);
    assert_eq!(tool.tool_call_id.as_ref(), Some(&asst.tool_calls[0].id));
    assert_eq!(tool.name.as_deref(), Some("get_weather"));

    // JSON schema formats survive too.
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let req = ChatRequest {
        response_format: Some(ResponseFormat::JsonSchema {
            name: "x".into(),
            schema: schema.clone(),
            strict: true,
        }),
        ..canonical_request()
    };
    let back = OllamaCodec
        .decode_request(Op::Chat, &OllamaCodec.encode_request(&req).unwrap())
        .unwrap();
    assert!(
        matches!(back.response_format, Some(ResponseFormat::JsonSchema { schema: s, .. }) if s == schema)
    );
}

#[test]
fn response_round_trip() {
    for (finish, reason) in [
        (FinishReason::Stop, "stop"),
        (FinishReason::Length, "length"),
        (FinishReason::ToolCalls, "stop"),
    ] {
        let calls = if finish == FinishReason::ToolCalls {
            vec![ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: r#"{"x":1}"#.into(),
            }]
        } else {
            vec![]
        };
        let resp = ChatResponse {
            id: "id".into(),
            model: "gpt-4o".into(),
            created: 5,
            text: "hello".into(),
            tool_calls: calls.clone(),
            finish: finish.clone(),
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            },
        };
        let body = OllamaCodec.encode_response(Op::Chat, &resp);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["done"], true);
        assert_eq!(v["done_reason"], reason);
        assert_eq!(v["message"]["role"], "assistant");
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
        let back = OllamaCodec.decode_response(&body).unwrap();
        assert_eq!(back.text, "hello");
        assert_eq!(back.model, "gpt-4o");
        assert_eq!(back.finish, finish);
        assert_eq!(back.usage, resp.usage);
        assert_eq!(back.tool_calls.len(), calls.len());
        if let (Some(a), Some(b)) = (back.tool_calls.first(), calls.first()) {
            assert_eq!((&a.name, &a.arguments), (&b.name, &b.arguments));
        }
    }
    let resp = ChatResponse {
        text: "done".into(),
        finish: FinishReason::Length,
        ..ChatResponse::default()
    };
    let v: Value =
        serde_json::from_slice(&OllamaCodec.encode_response(Op::Completion, &resp)).unwrap();
    assert_eq!(v["response"], "done");
    assert_eq!(v["context"], json!([]));
    assert!(v.get("message").is_none());
    let back = OllamaCodec
        .decode_response(&OllamaCodec.encode_response(Op::Completion, &resp))
        .unwrap();
    assert_eq!(back.finish, FinishReason::Length);
}

#[test]
fn untranslatable_fields_are_named() {
    let gen = |body: &str| {
        OllamaCodec
            .decode_request(Op::Completion, body.as_bytes())
            .unwrap_err()
            .field
    };
    assert_eq!(gen(r#"{"model":"m","prompt":"a","suffix":"b"}"#), "suffix");
    assert_eq!(gen(r#"{"model":"m","prompt":"a","raw":true}"#), "raw");
    assert_eq!(
        gen(r#"{"model":"m","prompt":"a","template":"{{ .Prompt }}"}"#),
        "template"
    );
    assert_eq!(
        gen(r#"{"model":"m","prompt":"a","context":[1,2]}"#),
        "context"
    );
    assert_eq!(
        gen(r#"{"model":"m","prompt":"a","images":[5]}"#),
        "images[0]"
    );
    // Empty values of those fields are fine.
    assert!(OllamaCodec
        .decode_request(
            Op::Completion,
            br#"{"model":"m","prompt":"a","suffix":"","raw":false,"context":[],"template":""}"#
        )
        .is_ok());
    let chat = |body: &str| {
        OllamaCodec
            .decode_request(Op::Chat, body.as_bytes())
            .unwrap_err()
            .field
    };
    assert_eq!(
        chat(r#"{"model":"m","messages":[{"role":"bot","content":"a"}]}"#),
        "messages[0].role"
    );
    assert_eq!(
        chat(r#"{"model":"m","messages":[],"logprobs":true}"#),
        "logprobs"
    );
    assert_eq!(
        chat(r#"{"model":"m","messages":[],"format":"yaml"}"#),
        "format"
    );
    assert_eq!(
        chat(r#"{"model":"m","messages":[],"options":{"temperature":"hot"}}"#),
        "options.temperature"
    );
    assert_eq!(
        chat(
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":{}}}]}]}"#
        ),
        "messages[0].tool_calls[0].function.name"
    );

    let url_image = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![text("a"), Part::Image(Image::Url("https://x/y.png".into()))],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
            is_error: false,
        }],
        ..ChatRequest::default()
    };
    assert_eq!(
        OllamaCodec.encode_request(&url_image).unwrap_err().field,
        "messages[0].content[1]"
    );
    // A data URL is base64 all the same.
    let data_image = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Image(Image::Url("data:image/png;base64,AAAA".into()))],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
            is_error: false,
        }],
        ..ChatRequest::default()
    };
    let v: Value =
        serde_json::from_slice(&OllamaCodec.encode_request(&data_image).unwrap()).unwrap();
    assert_eq!(v["messages"][0]["images"], json!(["AAAA"]));

    for choice in [ToolChoice::Required, ToolChoice::Tool("get_weather".into())] {
        let req = ChatRequest {
            tool_choice: Some(choice),
            ..canonical_request()
        };
        assert_eq!(
            OllamaCodec.encode_request(&req).unwrap_err().field,
            "tool_choice"
        );
    }
    let req = ChatRequest {
        tool_choice: Some(ToolChoice::None),
        ..canonical_request()
    };
    let v: Value = serde_json::from_slice(&OllamaCodec.encode_request(&req).unwrap()).unwrap();
    assert!(v.get("tools").is_none());

    let req = ChatRequest {
        legacy_prompt: true,
        ..canonical_request()
    };
    assert_eq!(
        OllamaCodec.encode_request(&req).unwrap_err().field,
        "messages"
    );
    let mut req = canonical_request();
    req.messages[1].tool_calls[0].arguments = "not json".into();
    assert_eq!(
        OllamaCodec.encode_request(&req).unwrap_err().field,
        "messages[1].tool_calls[0].arguments"
    );
}

#[test]
fn lenient_shapes() {
    let req = OllamaCodec
            .decode_request(
                Op::Chat,
                br#"{"model":"m","stream":true,"messages":[
                    {"role":"system","content":"a"},{"role":"system","content":"b"},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"t1","function":{"name":"f","arguments":"{\"k\":2}"}}]},
                    {"role":"tool","content":"ok","tool_call_id":"t1"},
                    {"role":"user","images":["data:image/gif;base64,R0lGODlh"]}],
                    "options":{"num_predict":-1,"stop":"END","num_ctx":8192,"repeat_penalty":1.1},
                    "keep_alive":0,"think":true}"#,
            )
            .unwrap();
    assert_eq!(req.system.as_deref(), Some("a\nb"));
    assert_eq!(req.max_tokens, None);
    assert_eq!(req.stop, ["END"]);
    assert_eq!(req.messages[0].tool_calls[0].id, "t1");
    assert_eq!(req.messages[0].tool_calls[0].arguments, r#"{"k":2}"#);
    assert_eq!(req.messages[1].tool_call_id.as_deref(), Some("t1"));
    assert_eq!(
        req.messages[2].content,
        [Part::Image(Image::Base64 {
            media_type: "image/gif".into(),
            data: "R0lGODlh".into()
        })]
    );
}

#[test]
fn errors() {
    assert_eq!(
        OllamaCodec.error_message(ERROR.as_bytes()).as_deref(),
        Some("model 'llama9' not found, try pulling it first")
    );
    assert_eq!(
        OllamaCodec
            .error_message(br#"{"error":{"message":"nested"}}"#)
            .as_deref(),
        Some("nested")
    );
    assert_eq!(OllamaCodec.error_message(CHAT_RESPONSE.as_bytes()), None);
    assert_eq!(OllamaCodec.error_message(b"not json"), None);
    assert!(OllamaCodec.decode_response(ERROR.as_bytes()).is_err());
    let events = stream(b"{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"out of memory\"}\n", None).unwrap();
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Error("out of memory".into()))
    );
}

#[test]
fn never_panics_on_truncated_or_garbage_input() {
    let samples = [
        CHAT_REQUEST,
        GENERATE_REQUEST,
        CHAT_RESPONSE,
        CHAT_RESPONSE_TOOLS,
        GENERATE_RESPONSE,
        CHAT_STREAM,
        CHAT_STREAM_TOOLS,
        GENERATE_STREAM,
        ERROR,
    ];
    for p in prefixes(&samples) {
        exercise(&OllamaCodec, p);
    }
    let garbage: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"null",
            b"[1]",
            b"{\"messages\":{}}",
            b"{\"messages\":[null]}",
            b"{\"messages\":[{\"role\":5}]}",
            b"{\"messages\":[{\"role\":\"user\",\"images\":5}]}",
            b"{\"tools\":[{\"function\":5}]}",
            b"{\"options\":{\"top_k\":1e300,\"num_predict\":-1e300,\"seed\":1.5}}",
            b"{\"created_at\":\"9999-99-99T99:99:99Z\",\"message\":{\"tool_calls\":[5,{\"function\":{}}]}}",
            b"{\"created_at\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9-01-01T00:00:00Z\"}",
            b"{\"done\":true}\n{\"done\":true}\n5\n",
            b"\n\n{}\n",
        ];
    for g in garbage {
        exercise(&OllamaCodec, g);
    }
}

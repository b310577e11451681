//! Unit tests of the Gemini codec, against the documented examples in `tests/fixtures/gemini`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::testing::{encode_all, exercise, prefixes, sse_events, try_decode};

use super::request_encode::to_gemini_schema;
use super::response::usage_json;
use super::{models_list, GeminiCodec};

const REQUEST_SDK: &str = include_str!("../../tests/fixtures/gemini/request_sdk.json");
const REQUEST_SNAKE: &str = include_str!("../../tests/fixtures/gemini/request_rest_snake.json");
const RESPONSE_TEXT: &str = include_str!("../../tests/fixtures/gemini/response_text.json");
const RESPONSE_CALL: &str = include_str!("../../tests/fixtures/gemini/response_function_call.json");
const STREAM_TEXT: &str = include_str!("../../tests/fixtures/gemini/stream_text.sse");
const STREAM_CALL: &str = include_str!("../../tests/fixtures/gemini/stream_function_call.sse");
const ERROR: &str = include_str!("../../tests/fixtures/gemini/error.json");

fn text(s: &str) -> Part {
    Part::Text(s.to_string())
}

fn decode(body: &str) -> Result<ChatRequest, TranslateError> {
    GeminiCodec.decode_request(Op::Chat, body.as_bytes())
}

fn decode_err(body: &str) -> TranslateError {
    decode(body).expect_err("should not translate")
}

fn stream(bytes: &[u8], cut: Option<usize>) -> Result<Vec<StreamEvent>, TranslateError> {
    try_decode(GeminiCodec.stream_decoder().as_mut(), bytes, cut.as_slice())
}

fn encode_events(events: &[StreamEvent]) -> Vec<u8> {
    let mut e = GeminiCodec.stream_encoder(Op::Chat);
    encode_all(e.as_mut(), events)
}

fn sse_json(bytes: &[u8]) -> Vec<Value> {
    sse_events(bytes)
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

#[test]
fn decodes_sdk_request() {
    let req = decode(REQUEST_SDK).unwrap();
    assert_eq!(req.model, "");
    assert!(!req.stream);
    assert!(req.include_usage);
    assert_eq!(req.system.as_deref(), Some("You are a weather bot."));
    assert_eq!(req.temperature, Some(0.2));
    assert_eq!(req.top_p, Some(0.95));
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.max_tokens, Some(256));
    assert_eq!(req.stop, ["END"]);
    assert_eq!(req.seed, Some(7));
    assert_eq!(req.presence_penalty, Some(0.5));
    assert_eq!(req.frequency_penalty, Some(0.25));
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(req.messages.len(), 4);

    let user = &req.messages[0];
    assert_eq!(user.role, Role::User);
    assert_eq!(
        user.content,
        [text("What's the weather in Boston and in Paris?")]
    );

    let asst = &req.messages[1];
    assert_eq!(asst.role, Role::Assistant);
    assert!(asst.content.is_empty());
    assert_eq!(asst.tool_calls.len(), 2);
    assert_eq!(asst.tool_calls[0].id, "call_0");
    assert_eq!(asst.tool_calls[0].name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&asst.tool_calls[0].arguments).unwrap(),
        json!({"location": "Boston, MA"})
    );
    assert_eq!(asst.tool_calls[1].id, "call_1");

    // Same-named responses answer the calls in order.
    let r0 = &req.messages[2];
    assert_eq!(r0.role, Role::Tool);
    assert_eq!(r0.tool_call_id.as_deref(), Some("call_0"));
    assert_eq!(r0.name.as_deref(), Some("get_weather"));
    assert_eq!(r0.content, [text("72F and sunny")]);
    let r1 = &req.messages[3];
    assert_eq!(r1.tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(
        serde_json::from_str::<Value>(match &r1.content[0] {
            Part::Text(t) => t,
            Part::Image(_) => unreachable!("text expected"),
        })
        .unwrap(),
        json!({"temperature": 18, "unit": "C"})
    );

    assert_eq!(req.tools.len(), 1);
    let tool = &req.tools[0];
    assert_eq!(tool.name, "get_weather");
    assert_eq!(
        tool.description.as_deref(),
        Some("Get the current weather in a given location")
    );
    assert_eq!(
        tool.parameters,
        json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": ["string", "null"], "enum": ["C", "F"]}
            },
            "required": ["location"]
        })
    );
}

#[test]
fn decodes_snake_case_rest_request() {
    let req = decode(REQUEST_SNAKE).unwrap();
    assert_eq!(
        req.system.as_deref(),
        Some("You are a cat. Your name is Neko.")
    );
    assert_eq!(req.messages.len(), 1);
    assert_eq!(
        req.messages[0].content,
        [
            text("List a few popular cookie recipes shown in this picture."),
            Part::Image(Image::Base64 {
                media_type: "image/jpeg".into(),
                data: "/9j/4AAQSkZJRgABAQAAAQABAAD".into()
            })
        ]
    );
    assert_eq!(req.stop, ["Title"]);
    assert_eq!(req.temperature, Some(1.0));
    assert_eq!(req.max_tokens, Some(800));
    assert_eq!(req.top_p, Some(0.8));
    assert_eq!(req.top_k, Some(10));
    let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format else {
        unreachable!("schema expected: {:?}", req.response_format);
    };
    assert_eq!(
        *schema,
        json!({
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "recipe_name": {"type": "string"},
                    "ingredients": {"type": "array", "items": {"type": "string"}}
                }
            }
        })
    );
}

#[test]
fn decodes_responses() {
    let r = GeminiCodec
        .decode_response(RESPONSE_TEXT.as_bytes())
        .unwrap();
    assert_eq!(r.id, "mXNmaK-4Np6-nvgP0ZmH8Aw");
    assert_eq!(r.model, "gemini-2.5-flash");
    assert_eq!(r.text, "The sky is blue because of Rayleigh scattering.");
    assert!(r.tool_calls.is_empty());
    assert_eq!(r.finish, FinishReason::Stop);
    // Thinking tokens count as output.
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 6,
            output_tokens: 24,
            reasoning_tokens: 14,
            ..Usage::default()
        }
    );
    assert!(r.created > 1_700_000_000);

    let r = GeminiCodec
        .decode_response(RESPONSE_CALL.as_bytes())
        .unwrap();
    assert_eq!(r.finish, FinishReason::ToolCalls);
    assert_eq!(r.text, "");
    assert_eq!(
        r.tool_calls,
        [ToolCall {
            // The part's thought signature rides in the id.
            id: super::signature::with_signature("call_abc123_0", Some("CiQB0e2Kb6Yx")),
            name: "get_weather".into(),
            arguments: r#"{"location":"Boston, MA"}"#.into()
        }]
    );
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 40,
            output_tokens: 7,
            ..Usage::default()
        }
    );
}

#[test]
fn finish_reasons() {
    let body = |reason: &str| {
        format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}],"role":"model"}},"finishReason":"{reason}"}}]}}"#
        )
    };
    let finish = |reason: &str| {
        GeminiCodec
            .decode_response(body(reason).as_bytes())
            .unwrap()
            .finish
    };
    assert_eq!(finish("STOP"), FinishReason::Stop);
    assert_eq!(finish("MAX_TOKENS"), FinishReason::Length);
    for r in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
    ] {
        assert_eq!(finish(r), FinishReason::ContentFilter, "{r}");
    }
    let blocked =
        r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
    let r = GeminiCodec.decode_response(blocked.as_bytes()).unwrap();
    assert_eq!(r.finish, FinishReason::ContentFilter);
    assert_eq!(r.usage.input_tokens, 3);
    for (f, s) in [
        (FinishReason::Stop, "STOP"),
        (FinishReason::ToolCalls, "STOP"),
        (FinishReason::Length, "MAX_TOKENS"),
        (FinishReason::ContentFilter, "SAFETY"),
    ] {
        let resp = ChatResponse {
            finish: f,
            ..ChatResponse::default()
        };
        let v: Value =
            serde_json::from_slice(&GeminiCodec.encode_response(Op::Chat, &resp)).unwrap();
        assert_eq!(v["candidates"][0]["finishReason"], s);
    }
}

#[test]
fn decodes_text_stream_split_anywhere() {
    let bytes = STREAM_TEXT.as_bytes();
    let whole = stream(bytes, None).unwrap();
    assert_eq!(
        whole,
        [
            StreamEvent::Prompt(Usage {
                input_tokens: 5,
                ..Usage::default()
            }),
            StreamEvent::Start {
                id: "Yt7nZ4qVF5ul1MkPqv6W0Qg".into(),
                model: "gemini-2.0-flash".into()
            },
            StreamEvent::Text("The".into()),
            StreamEvent::Text(" sky is blue".into()),
            StreamEvent::Text(".".into()),
            StreamEvent::Finish(FinishReason::Stop),
            StreamEvent::Usage(Usage {
                input_tokens: 5,
                output_tokens: 8,
                ..Usage::default()
            }),
        ]
    );
    for cut in 0..=bytes.len() {
        assert_eq!(stream(bytes, Some(cut)).unwrap(), whole, "cut at {cut}");
    }
}

#[test]
fn decodes_function_call_stream_split_anywhere() {
    let bytes = STREAM_CALL.as_bytes();
    let whole = stream(bytes, None).unwrap();
    assert_eq!(
        whole,
        [
            StreamEvent::Start {
                id: "fc-stream-1".into(),
                model: "gemini-2.5-flash".into()
            },
            StreamEvent::Text("Let me check.".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_fc-stream-1_0".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: r#"{"location":"Boston, MA"}"#.into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_fc-stream-1_1".into(),
                name: "get_time".into()
            },
            StreamEvent::ToolCallArgs {
                index: 1,
                fragment: r#"{"tz":"America/New_York"}"#.into()
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 40,
                output_tokens: 12,
                ..Usage::default()
            }),
        ]
    );
    for cut in 0..=bytes.len() {
        assert_eq!(stream(bytes, Some(cut)).unwrap(), whole, "cut at {cut}");
    }
}

#[test]
fn stream_error_event() {
    let bytes = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"responseId\":\"r1\"}\n\ndata: {\"error\":{\"code\":500,\"message\":\"boom\",\"status\":\"INTERNAL\"}}\n\n";
    let events = stream(bytes, None).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1], StreamEvent::Text("Hi".into()));
    assert_eq!(events[2], StreamEvent::Error("boom".into()));

    let out = encode_events(&[
        StreamEvent::Start {
            id: "r1".into(),
            model: "m".into(),
        },
        StreamEvent::Text("Hi".into()),
        StreamEvent::Error("upstream died".into()),
        StreamEvent::Text("ignored".into()),
    ]);
    let chunks = sse_json(&out);
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[1],
        json!({"error": {"code": 500, "message": "upstream died", "status": "INTERNAL"}})
    );
    let back = stream(&out, None).unwrap();
    assert_eq!(
        back.last(),
        Some(&StreamEvent::Error("upstream died".into()))
    );
}

#[test]
fn stream_encoder_buffers_tool_calls_and_ends_with_usage() {
    let events = [
        StreamEvent::Start {
            id: "resp-9".into(),
            model: "gpt-4o".into(),
        },
        StreamEvent::Text("Checking".into()),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_x".into(),
            name: "get_weather".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{\"loc".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "ation\":\"Paris\"}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "call_y".into(),
            name: "no_args".into(),
        },
        StreamEvent::Finish(FinishReason::ToolCalls),
        StreamEvent::Usage(Usage {
            input_tokens: 11,
            output_tokens: 22,
            ..Usage::default()
        }),
    ];
    let out = encode_events(&events);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("data: {"));
    assert!(!text.contains("[DONE]"));
    let chunks = sse_json(&out);
    assert_eq!(chunks.len(), 3, "{text}");
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
        "Checking"
    );
    assert_eq!(chunks[0]["candidates"][0]["content"]["role"], "model");
    assert_eq!(chunks[0]["responseId"], "resp-9");
    assert_eq!(chunks[0]["modelVersion"], "gpt-4o");
    let parts = &chunks[1]["candidates"][0]["content"]["parts"];
    assert_eq!(
        *parts,
        json!([
            {"functionCall": {"id": "call_x", "name": "get_weather", "args": {"location": "Paris"}}},
            {"functionCall": {"id": "call_y", "name": "no_args", "args": {}}}
        ])
    );
    let last = &chunks[2];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 11, "candidatesTokenCount": 22, "totalTokenCount": 33})
    );

    // And it reads back.
    let back = stream(&out, None).unwrap();
    assert_eq!(
        back[0],
        StreamEvent::Start {
            id: "resp-9".into(),
            model: "gpt-4o".into()
        }
    );
    assert_eq!(back[1], StreamEvent::Text("Checking".into()));
    assert!(
        matches!(&back[2], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "get_weather")
    );
    assert_eq!(
        back[3],
        StreamEvent::ToolCallArgs {
            index: 0,
            fragment: r#"{"location":"Paris"}"#.into()
        }
    );
    assert!(
        matches!(&back[4], StreamEvent::ToolCallStart { index: 1, name, .. } if name == "no_args")
    );
    assert_eq!(
        &back[6..],
        [
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 11,
                output_tokens: 22,
                ..Usage::default()
            })
        ]
    );
}

#[test]
fn stream_encoder_finish_without_usage_still_reports_usage() {
    let out = encode_events(&[
        StreamEvent::Start {
            id: "a".into(),
            model: "b".into(),
        },
        StreamEvent::Text("hi".into()),
        StreamEvent::Finish(FinishReason::Length),
    ]);
    let chunks = sse_json(&out);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 0);
    // Usage before Finish (some upstreams) ends up in the same last chunk.
    let out = encode_events(&[
        StreamEvent::Start {
            id: "a".into(),
            model: "b".into(),
        },
        StreamEvent::Usage(Usage {
            input_tokens: 1,
            output_tokens: 2,
            ..Usage::default()
        }),
        StreamEvent::Finish(FinishReason::Stop),
    ]);
    let chunks = sse_json(&out);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["usageMetadata"]["candidatesTokenCount"], 2);
    assert_eq!(chunks[0]["candidatesTokenCount"], Value::Null);
}

fn canonical_request() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o".into(),
        system: Some("Be brief.".into()),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![
                    text("What is in this picture, and the weather?"),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgoAAAANSUhEUg".into(),
                    }),
                    Part::Image(Image::Url("https://example.com/cat.webp?x=1".into())),
                ],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
                is_error: false,
            },
            Message {
                role: Role::Assistant,
                content: vec![text("A cat. Checking the weather.")],
                tool_calls: vec![ToolCall {
                    id: "toolu_01".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                }],
                tool_call_id: None,
                name: None,
                is_error: false,
            },
            Message {
                role: Role::Tool,
                content: vec![text("sunny")],
                tool_calls: vec![],
                tool_call_id: Some("toolu_01".into()),
                name: None,
                is_error: false,
            },
            Message {
                role: Role::User,
                content: vec![text("Thanks. And tomorrow?")],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
                is_error: false,
            },
        ],
        max_tokens: Some(100),
        temperature: Some(0.7),
        top_p: Some(0.9),
        top_k: Some(5),
        ollama: Default::default(),
        stop: vec!["STOP".into()],
        seed: Some(-3),
        frequency_penalty: Some(0.1),
        presence_penalty: Some(-0.1),
        stream: true,
        include_usage: true,
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("Weather by city".into()),
                parameters: json!({
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "City"}},
                    "required": ["city"]
                }),
                strict: None,
            },
            Tool {
                name: "now".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
                strict: None,
            },
        ],
        tool_choice: Some(ToolChoice::Tool("get_weather".into())),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": false
            }),
            strict: true,
        }),
        user: Some("u1".into()),
        legacy_prompt: false,
        legacy_max_tokens: false,
    }
}

#[test]
fn request_round_trip() {
    let req = canonical_request();
    let body = GeminiCodec.encode_request(&req).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v.get("model").is_none());
    assert_eq!(
        v["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        v["contents"][0]["parts"][2],
        json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}})
    );
    assert_eq!(
        v["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"id": "toolu_01", "name": "get_weather", "response": {"result": "sunny"}}},
            {"text": "Thanks. And tomorrow?"}
        ]})
    );
    assert_eq!(
        v["tools"][0]["functionDeclarations"][0]["parameters"]["type"],
        "OBJECT"
    );
    assert!(v["tools"][0]["functionDeclarations"][1]
        .get("parameters")
        .is_none());
    assert_eq!(
        v["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    assert_eq!(
        v["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert!(v["generationConfig"]["responseSchema"].is_object());

    let back = decode(std::str::from_utf8(&body).unwrap()).unwrap();
    assert_eq!(back.system, req.system);
    assert_eq!(back.max_tokens, req.max_tokens);
    assert_eq!(back.temperature, req.temperature);
    assert_eq!(back.top_p, req.top_p);
    assert_eq!(back.top_k, req.top_k);
    assert_eq!(back.stop, req.stop);
    assert_eq!(back.seed, req.seed);
    assert_eq!(back.frequency_penalty, req.frequency_penalty);
    assert_eq!(back.presence_penalty, req.presence_penalty);
    assert_eq!(back.tools, req.tools);
    assert_eq!(back.tool_choice, req.tool_choice);
    let Some(ResponseFormat::JsonSchema { schema, .. }) = &back.response_format else {
        unreachable!("schema expected");
    };
    // `additionalProperties: false` is not in Gemini's subset; the rest survives.
    assert_eq!(
        *schema,
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
    );

    assert_eq!(back.messages.len(), 4);
    assert_eq!(back.messages[0], req.messages[0]);
    let asst = &back.messages[1];
    assert_eq!(asst.content, req.messages[1].content);
    assert_eq!(asst.tool_calls.len(), 1);
    assert_eq!(asst.tool_calls[0].name, "get_weather");
    assert_eq!(asst.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
    let tool = &back.messages[2];
    assert_eq!(tool.role, Role::Tool);
    assert_eq!(tool.content, [text("sunny")]);
    assert_eq!(tool.tool_call_id.as_ref(), Some(&asst.tool_calls[0].id));
    assert_eq!(tool.name.as_deref(), Some("get_weather"));
    assert_eq!(back.messages[3], req.messages[3]);
}

#[test]
fn tool_results_wrap_and_unwrap() {
    for (result, response, back) in [
        ("sunny", json!({"result": "sunny"}), "sunny"),
        ("42", json!({"result": 42}), "42"),
        ("[1,2]", json!({"result": [1, 2]}), "[1,2]"),
        (r#"{"t":1}"#, json!({"t": 1}), r#"{"t":1}"#),
        ("", json!({"result": ""}), ""),
    ] {
        let req = ChatRequest {
            messages: vec![Message {
                role: Role::Tool,
                content: vec![text(result)],
                tool_calls: vec![],
                tool_call_id: Some("c".into()),
                name: Some("f".into()),
                is_error: false,
            }],
            ..ChatRequest::default()
        };
        let v: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req).unwrap()).unwrap();
        assert_eq!(
            v["contents"][0]["parts"][0]["functionResponse"]["response"],
            response
        );
        let decoded = decode(&v.to_string()).unwrap();
        assert_eq!(decoded.messages[0].content, [text(back)]);
    }
}

#[test]
fn schemas_outside_the_subset_go_as_json_schema() {
    let schema = json!({
        "type": "object",
        "properties": {"node": {"$ref": "#/$defs/node"}},
        "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}}}}
    });
    let req = ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![text("hi")],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
            is_error: false,
        }],
        tools: vec![Tool {
            name: "t".into(),
            description: None,
            parameters: schema.clone(),
            strict: None,
        }],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "x".into(),
            schema: schema.clone(),
            strict: false,
        }),
        ..ChatRequest::default()
    };
    let v: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req).unwrap()).unwrap();
    let decl = &v["tools"][0]["functionDeclarations"][0];
    assert!(decl.get("parameters").is_none());
    assert_eq!(decl["parametersJsonSchema"], schema);
    assert_eq!(v["generationConfig"]["responseJsonSchema"], schema);
    let back = decode(&v.to_string()).unwrap();
    assert_eq!(back.tools[0].parameters, schema);

    // Nullable via type arrays, `const`, and dropped annotations.
    let s = json!({"type": ["string", "null"], "const": "a", "format": "uri", "$schema": "x"});
    assert_eq!(
        to_gemini_schema(&s),
        Some(json!({"type": "STRING", "nullable": true, "enum": ["a"]}))
    );
    assert_eq!(
        to_gemini_schema(&json!({"type": ["string", "integer"]})),
        None
    );
    assert_eq!(
        to_gemini_schema(&json!({"type": "object", "additionalProperties": {"type": "string"}})),
        None
    );
}

#[test]
fn response_round_trip() {
    let resp = ChatResponse {
        id: "chatcmpl-1".into(),
        model: "gpt-4o".into(),
        created: 1,
        text: "Let me look.".into(),
        tool_calls: vec![ToolCall {
            id: "call_a".into(),
            name: "search".into(),
            arguments: r#"{"q":"rust"}"#.into(),
        }],
        finish: FinishReason::ToolCalls,
        usage: Usage {
            input_tokens: 12,
            output_tokens: 34,
            ..Usage::default()
        },
    };
    let body = GeminiCodec.encode_response(Op::Chat, &resp);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["responseId"], "chatcmpl-1");
    assert_eq!(v["modelVersion"], "gpt-4o");
    assert_eq!(v["candidates"][0]["index"], 0);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 46);
    let back = GeminiCodec.decode_response(&body).unwrap();
    assert_eq!(back.id, resp.id);
    assert_eq!(back.model, resp.model);
    assert_eq!(back.text, resp.text);
    assert_eq!(back.tool_calls.len(), 1);
    assert_eq!(back.tool_calls[0].name, "search");
    assert_eq!(back.tool_calls[0].arguments, r#"{"q":"rust"}"#);
    assert_eq!(back.finish, FinishReason::ToolCalls);
    assert_eq!(back.usage, resp.usage);

    for finish in [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::ContentFilter,
    ] {
        let r = ChatResponse {
            text: "x".into(),
            finish: finish.clone(),
            ..ChatResponse::default()
        };
        let back = GeminiCodec
            .decode_response(&GeminiCodec.encode_response(Op::Chat, &r))
            .unwrap();
        assert_eq!(back.finish, finish);
    }
}

#[test]
fn untranslatable_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"contents":[],"generationConfig":{"candidateCount":2}}"#,
            "generationConfig.candidateCount",
        ),
        (
            r#"{"contents":[],"generation_config":{"response_logprobs":true}}"#,
            "generationConfig.responseLogprobs",
        ),
        (
            r#"{"contents":[],"cachedContent":"cachedContents/x"}"#,
            "cachedContent",
        ),
        (
            r#"{"contents":[],"tools":[{"codeExecution":{}}]}"#,
            "tools[0].codeExecution",
        ),
        (
            r#"{"contents":[{"parts":[{"text":"a"},{"inlineData":{"mimeType":"audio/wav","data":"AA"}}]}]}"#,
            "contents[0].parts[1].inlineData.mimeType",
        ),
        (
            r#"{"contents":[{"parts":[{"executableCode":{"code":"1"}}]}]}"#,
            "contents[0].parts[0].executableCode",
        ),
        (
            r#"{"contents":[{"role":"system","parts":[{"text":"a"}]}]}"#,
            "contents[0].role",
        ),
        (
            r#"{"contents":[{"role":"user","parts":[{"functionCall":{"name":"f"}}]}]}"#,
            "contents[0].parts[0].functionCall",
        ),
        (
            r#"{"contents":[],"generationConfig":{"responseModalities":["TEXT","IMAGE"]}}"#,
            "generationConfig.responseModalities[1]",
        ),
        (
            r#"{"contents":[],"tools":[{"functionDeclarations":[{"name":"a"},{"name":"b"},{"name":"c"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["a","b"]}}}"#,
            "toolConfig.functionCallingConfig.allowedFunctionNames",
        ),
        (
            r#"{"contents":[],"generationConfig":{"temperature":"hot"}}"#,
            "generationConfig.temperature",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(decode_err(body).field, *field, "{body}");
    }
    assert!(GeminiCodec
        .decode_request(Op::Completion, b"{\"contents\":[]}")
        .is_err());
    // Allowed names that cover every tool mean "any tool".
    let req = decode(r#"{"contents":[],"tools":[{"functionDeclarations":[{"name":"a"},{"name":"b"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["a","b"]}}}"#).unwrap();
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));

    let tool_msg = |id: &str, name: Option<&str>| Message {
        role: Role::Tool,
        content: vec![text("r")],
        tool_calls: vec![],
        tool_call_id: Some(id.into()),
        name: name.map(str::to_string),
        is_error: false,
    };
    let err = GeminiCodec
        .encode_request(&ChatRequest {
            messages: vec![tool_msg("nope", None)],
            ..ChatRequest::default()
        })
        .unwrap_err();
    assert_eq!(err.field, "messages[0].tool_call_id");
    let err = GeminiCodec
        .encode_request(&ChatRequest {
            messages: vec![Message {
                role: Role::Assistant,
                content: vec![],
                tool_calls: vec![ToolCall {
                    id: "a".into(),
                    name: "f".into(),
                    arguments: "[1]".into(),
                }],
                tool_call_id: None,
                name: None,
                is_error: false,
            }],
            ..ChatRequest::default()
        })
        .unwrap_err();
    assert_eq!(err.field, "messages[0].tool_calls[0].arguments");
    let err = GeminiCodec
        .encode_request(&ChatRequest {
            seed: Some(1 << 40),
            ..ChatRequest::default()
        })
        .unwrap_err();
    assert_eq!(err.field, "seed");
    let err = GeminiCodec
        .encode_request(&ChatRequest {
            messages: vec![Message {
                role: Role::Tool,
                content: vec![Part::Image(Image::Url("https://x/y.png".into()))],
                tool_calls: vec![],
                tool_call_id: Some("c".into()),
                name: Some("f".into()),
                is_error: false,
            }],
            ..ChatRequest::default()
        })
        .unwrap_err();
    assert_eq!(err.field, "messages[0].content[0]");
}

#[test]
fn snake_case_and_lenient_shapes() {
    let req = decode(
            r#"{"contents":[{"parts":[{"text":"hi"},{"file_data":{"file_uri":"gs://b/cat.png","mime_type":"image/png"}}]}],
                "system_instruction":"plain string",
                "tool_config":{"function_calling_config":{"mode":"none"}},
                "tools":[{"function_declarations":[{"name":"f","parameters_json_schema":{"type":"object","properties":{"a":{"type":"integer"}}}}]}],
                "generation_config":{"response_mime_type":"application/json","seed":null}}"#,
        )
        .unwrap();
    assert_eq!(req.system.as_deref(), Some("plain string"));
    assert_eq!(
        req.messages[0].content[1],
        Part::Image(Image::Url("gs://b/cat.png".into()))
    );
    assert_eq!(req.tool_choice, Some(ToolChoice::None));
    assert_eq!(
        req.tools[0].parameters["properties"]["a"]["type"],
        "integer"
    );
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    assert_eq!(req.seed, None);
    // Thought parts are not content.
    let req = decode(
            r#"{"contents":[{"role":"model","parts":[{"text":"hmm","thought":true},{"text":"Hel"},{"text":"lo"}]}]}"#,
        )
        .unwrap();
    assert_eq!(req.messages[0].content, [text("Hello")]);
    // A response that names its call by id.
    let req = decode(
            r#"{"contents":[{"role":"model","parts":[{"functionCall":{"name":"f","id":"x1"}},{"functionCall":{"name":"f","id":"x2"}}]},
                {"role":"user","parts":[{"functionResponse":{"name":"f","id":"x2","response":{"ok":true}}}]}]}"#,
        )
        .unwrap();
    assert_eq!(req.messages[0].tool_calls[0].arguments, "{}");
    assert_eq!(req.messages[1].tool_call_id.as_deref(), Some("x2"));
}

#[test]
fn errors_and_models() {
    assert_eq!(
        GeminiCodec.error_message(ERROR.as_bytes()).as_deref(),
        Some("Resource has been exhausted (e.g. check quota).")
    );
    assert_eq!(
        GeminiCodec
            .error_message(br#"[{"error":{"code":400,"message":"bad"}}]"#)
            .as_deref(),
        Some("bad")
    );
    assert_eq!(GeminiCodec.error_message(b"<html>"), None);
    assert_eq!(GeminiCodec.error_message(RESPONSE_TEXT.as_bytes()), None);
    let err = GeminiCodec.decode_response(ERROR.as_bytes()).unwrap_err();
    assert!(err.message.contains("exhausted"));

    let v = models_list(&[
        ("gemini-pro".into(), "google".into()),
        ("llama3".into(), "gpu-a".into()),
    ]);
    assert_eq!(v["models"][0]["name"], "models/gemini-pro");
    assert_eq!(v["models"][1]["displayName"], "llama3");
    assert_eq!(
        v["models"][1]["supportedGenerationMethods"],
        json!(["generateContent", "streamGenerateContent"])
    );
}

#[test]
fn never_panics_on_truncated_or_garbage_input() {
    let samples = [
        REQUEST_SDK,
        REQUEST_SNAKE,
        RESPONSE_TEXT,
        RESPONSE_CALL,
        STREAM_TEXT,
        STREAM_CALL,
        ERROR,
    ];
    for p in prefixes(&samples) {
        exercise(&GeminiCodec, p);
    }
    let garbage: &[&[u8]] = &[
        b"",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b"42",
        b"\"s\"",
        b"{\"contents\":5}",
        b"{\"contents\":[5]}",
        b"{\"contents\":[{\"parts\":[{\"text\":5}]}]}",
        b"{\"contents\":[{\"parts\":[{\"inlineData\":5}]}]}",
        b"{\"generationConfig\":{\"topK\":-1,\"maxOutputTokens\":1e40}}",
        b"{\"tools\":[{\"functionDeclarations\":[{}]}]}",
        b"{\"candidates\":5}",
        b"{\"candidates\":[{\"content\":{\"parts\":[5,{\"functionCall\":{}}]}}]}",
        b"data: {\"candidates\":[null]}\n\ndata: nope\n\n",
        b"data: [DONE]\n\ndata: 5\n\n",
        b"data: {\"error\":5}\n\n",
    ];
    for g in garbage {
        exercise(&GeminiCodec, g);
    }
}

/// An upstream's absurd counts do not overflow the total (a panic is an outage).
#[test]
fn usage_total_saturates() {
    let u = Usage {
        input_tokens: u64::MAX,
        output_tokens: 5,
        ..Usage::default()
    };
    assert_eq!(usage_json(u)["totalTokenCount"], u64::MAX);
}

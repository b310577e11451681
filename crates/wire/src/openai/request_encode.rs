//! The canonical form → an OpenAI chat completions request body for an upstream.

use serde_json::{json, Map, Value};

use crate::canonical::{
    image_to_url, ChatRequest, Message, Part, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
    TranslateError,
};
use crate::ids::new_id;
use crate::json::{put, strict_tool_object};

/// Text parts as a string when there is one, an array of text parts otherwise; `None` when there
/// are none. Images are refused (assistant and tool messages carry text only).
fn text_content(m: &Message, i: usize, who: &str) -> Result<Option<Value>, TranslateError> {
    let mut texts = Vec::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => texts.push(t.as_str()),
            Part::Image(_) => {
                return Err(TranslateError::new(
                    format!("messages[{i}].content[{j}]"),
                    format!("OpenAI {who} messages cannot carry images"),
                ))
            }
        }
    }
    Ok(match texts.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        many => Some(Value::Array(
            many.iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )),
    })
}

fn user_content(m: &Message) -> Value {
    match m.content.as_slice() {
        [] => json!(""),
        [Part::Text(t)] => json!(t),
        parts => Value::Array(
            parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::Image(img) => {
                        json!({"type": "image_url", "image_url": {"url": image_to_url(img)}})
                    }
                })
                .collect(),
        ),
    }
}

pub(super) fn tool_call_json(c: &ToolCall) -> Value {
    let id = if c.id.is_empty() {
        new_id("call_")
    } else {
        c.id.clone()
    };
    json!({
        "id": id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    })
}

fn encode_message(m: &Message, i: usize) -> Result<Value, TranslateError> {
    Ok(match m.role {
        Role::User => json!({"role": "user", "content": user_content(m)}),
        Role::Assistant => {
            let content = match text_content(m, i, "assistant")? {
                Some(c) => c,
                None if !m.tool_calls.is_empty() => Value::Null,
                None => json!(""),
            };
            let mut a = Map::new();
            a.insert("role".into(), json!("assistant"));
            a.insert("content".into(), content);
            if !m.tool_calls.is_empty() {
                a.insert(
                    "tool_calls".into(),
                    Value::Array(m.tool_calls.iter().map(tool_call_json).collect()),
                );
            }
            Value::Object(a)
        }
        Role::Tool => {
            let id = m.answered_call(i)?;
            let content = text_content(m, i, "tool")?.unwrap_or_else(|| json!(""));
            let content = if m.is_error {
                mark_tool_error(content)
            } else {
                content
            };
            json!({"role": "tool", "tool_call_id": id, "content": content})
        }
        Role::System => {
            let content = text_content(m, i, "system")?.unwrap_or_else(|| json!(""));
            json!({"role": "system", "content": content})
        }
    })
}

/// Marks a failed tool's result where the dialect has no error flag: the text (or its first
/// text part) starts with [`TOOL_ERROR_MARK`].
pub(crate) fn mark_tool_error(content: Value) -> Value {
    match content {
        Value::String(s) => json!(format!("{TOOL_ERROR_MARK}{s}")),
        Value::Array(mut parts) => {
            if let Some(Value::Object(p)) = parts.first_mut() {
                let text = p.get("text").and_then(Value::as_str).unwrap_or_default();
                let marked = format!("{TOOL_ERROR_MARK}{text}");
                p.insert("text".into(), json!(marked));
            }
            Value::Array(parts)
        }
        other => other,
    }
}

/// What starts the text of a failed tool's result in dialects without an error flag
/// (OpenAI and Ollama tool messages).
pub const TOOL_ERROR_MARK: &str = "[tool error] ";

fn tool_json(t: &Tool) -> Value {
    json!({"type": "function", "function": strict_tool_object(t, "parameters")})
}

/// `tool_choice`: `auto`, `none`, `required`, or the object `named` writes for a named function.
fn tool_choice_json(tc: &ToolChoice, named: fn(&str) -> Value) -> Value {
    match tc {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => named(name),
    }
}

/// `tools` and `tool_choice`: each tool written by `tool`, a named choice by `named` (chat
/// nests the function, the Responses API does not).
pub(super) fn put_tools(
    o: &mut Map<String, Value>,
    req: &ChatRequest,
    tool: fn(&Tool) -> Value,
    named: fn(&str) -> Value,
) {
    if !req.tools.is_empty() {
        o.insert("tools".into(), req.tools.iter().map(tool).collect());
    }
    let choice = req.tool_choice.as_ref();
    put(
        o,
        "tool_choice",
        choice.map(|tc| tool_choice_json(tc, named)),
    );
}

pub(super) fn response_format_json(rf: &ResponseFormat) -> Value {
    match rf {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => json!({
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": strict},
        }),
    }
}

pub(super) fn encode_chat_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    if let Some(s) = &req.system {
        msgs.push(json!({"role": "system", "content": s}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        msgs.push(encode_message(m, i)?);
    }
    if req.top_k.is_some() {
        return Err(TranslateError::new(
            "top_k",
            "OpenAI chat completions have no top_k",
        ));
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    o.insert("messages".into(), Value::Array(msgs));
    let limit_key = if req.legacy_max_tokens {
        "max_tokens"
    } else {
        "max_completion_tokens"
    };
    put(&mut o, limit_key, req.max_tokens);
    put(&mut o, "temperature", req.temperature);
    put(&mut o, "top_p", req.top_p);
    if !req.stop.is_empty() {
        o.insert("stop".into(), json!(req.stop));
    }
    put(&mut o, "seed", req.seed);
    put(&mut o, "frequency_penalty", req.frequency_penalty);
    put(&mut o, "presence_penalty", req.presence_penalty);
    if req.stream {
        o.insert("stream".into(), json!(true));
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let named = |name: &str| json!({"type": "function", "function": {"name": name}});
    put_tools(&mut o, req, tool_json, named);
    put(
        &mut o,
        "response_format",
        req.response_format.as_ref().map(response_format_json),
    );
    put(&mut o, "user", req.user.clone());
    Ok(Value::Object(o))
}

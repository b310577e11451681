//! The canonical form → an OpenAI chat completions request body for an upstream.

use crate::canonical::{
    image_to_url, ChatRequest, Message, Part, ResponseFormat, Role, ToolCall, ToolChoice,
    TranslateError,
};
use crate::ids::new_id;
use crate::json::empty_schema;
use serde_json::{json, Map, Value};

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

pub(super) fn encode_chat_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    if let Some(s) = &req.system {
        msgs.push(json!({"role": "system", "content": s}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let v = match m.role {
            Role::User => json!({"role": "user", "content": user_content(m)}),
            Role::Assistant => {
                let content = text_content(m, i, "assistant")?;
                let mut a = Map::new();
                a.insert("role".into(), json!("assistant"));
                a.insert(
                    "content".into(),
                    match content {
                        Some(c) => c,
                        None if !m.tool_calls.is_empty() => Value::Null,
                        None => json!(""),
                    },
                );
                if !m.tool_calls.is_empty() {
                    a.insert(
                        "tool_calls".into(),
                        Value::Array(m.tool_calls.iter().map(tool_call_json).collect()),
                    );
                }
                Value::Object(a)
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    TranslateError::new(
                        format!("messages[{i}].tool_call_id"),
                        "a tool result must name the call it answers",
                    )
                })?;
                let content = text_content(m, i, "tool")?.unwrap_or_else(|| json!(""));
                json!({"role": "tool", "tool_call_id": id, "content": content})
            }
        };
        msgs.push(v);
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
    if let Some(n) = req.max_tokens {
        o.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        o.insert("top_p".into(), json!(t));
    }
    if !req.stop.is_empty() {
        o.insert("stop".into(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        o.insert("seed".into(), json!(s));
    }
    if let Some(p) = req.frequency_penalty {
        o.insert("frequency_penalty".into(), json!(p));
    }
    if let Some(p) = req.presence_penalty {
        o.insert("presence_penalty".into(), json!(p));
    }
    if req.stream {
        o.insert("stream".into(), json!(true));
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    f.insert("description".into(), json!(d));
                }
                let params = if t.parameters.is_null() {
                    empty_schema()
                } else {
                    t.parameters.clone()
                };
                f.insert("parameters".into(), params);
                json!({"type": "function", "function": f})
            })
            .collect();
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(rf) = &req.response_format {
        let v = match rf {
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
        };
        o.insert("response_format".into(), v);
    }
    if let Some(u) = &req.user {
        o.insert("user".into(), json!(u));
    }
    Ok(Value::Object(o))
}

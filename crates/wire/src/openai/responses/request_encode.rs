//! The canonical form → a Responses API request body, for an upstream that speaks it.

use serde_json::{json, Map, Value};

use crate::canonical::{
    image_to_url, ChatRequest, Message, Part, ResponseFormat, Role, Tool, TranslateError,
};
use crate::json::{put, strict_tool_object};

use super::super::request_encode::{put_tools, response_format_json, TOOL_ERROR_MARK};

/// Refuses the sampling parameters the Responses API does not have.
fn reject_unsupported(req: &ChatRequest) -> Result<(), TranslateError> {
    let refused = [
        ("stop", !req.stop.is_empty()),
        ("seed", req.seed.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        ("top_k", req.top_k.is_some()),
    ];
    match refused.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(TranslateError::new(
            *field,
            "the Responses API has no such parameter",
        )),
        None => Ok(()),
    }
}

/// A message's parts as Responses content (`output_text` for the assistant's own words).
fn content(m: &Message, output: bool) -> Vec<Value> {
    m.content
        .iter()
        .map(|p| match p {
            Part::Text(t) if output => json!({"type": "output_text", "text": t}),
            Part::Text(t) => json!({"type": "input_text", "text": t}),
            Part::Image(img) => json!({"type": "input_image", "image_url": image_to_url(img)}),
        })
        .collect()
}

/// One canonical message → its input items.
fn input_items(m: &Message, input: &mut Vec<Value>) {
    match m.role {
        Role::User => input.push(json!({"role": "user", "content": content(m, false)})),
        Role::System => input.push(json!({"role": "system", "content": content(m, false)})),
        Role::Assistant => {
            if !m.content.is_empty() {
                input.push(json!({"role": "assistant", "content": content(m, true)}));
            }
            for c in &m.tool_calls {
                input.push(json!({
                    "type": "function_call",
                    "call_id": c.id,
                    "name": c.name,
                    "arguments": c.arguments,
                }));
            }
        }
        Role::Tool => {
            let text = m
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    Part::Image(_) => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            let text = if m.is_error {
                format!("{TOOL_ERROR_MARK}{text}")
            } else {
                text
            };
            input.push(json!({
                "type": "function_call_output",
                "call_id": m.tool_call_id.clone().unwrap_or_default(),
                "output": text,
            }));
        }
    }
}

fn tool_json(t: &Tool) -> Value {
    let mut f = strict_tool_object(t, "parameters");
    f.insert("type".into(), json!("function"));
    Value::Object(f)
}

/// `text.format`: flat, unlike chat's `response_format`.
fn text_json(rf: &ResponseFormat) -> Value {
    let format = match rf {
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => json!({"type": "json_schema", "name": name, "schema": schema, "strict": strict}),
        other => response_format_json(other),
    };
    json!({ "format": format })
}

pub(super) fn encode_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    reject_unsupported(req)?;
    let mut input = Vec::new();
    for m in &req.messages {
        input_items(m, &mut input);
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    put(&mut o, "instructions", req.system.clone());
    o.insert("input".into(), Value::Array(input));
    put(&mut o, "max_output_tokens", req.max_tokens);
    put(&mut o, "temperature", req.temperature);
    put(&mut o, "top_p", req.top_p);
    let named = |name: &str| json!({"type": "function", "name": name});
    put_tools(&mut o, req, tool_json, named);
    put(&mut o, "text", req.response_format.as_ref().map(text_json));
    put(&mut o, "user", req.user.clone());
    if req.stream {
        o.insert("stream".into(), json!(true));
    }
    o.insert("store".into(), json!(false));
    Ok(Value::Object(o))
}

//! The canonical form → a Responses API request body, for an upstream that speaks it.

use crate::canonical::{
    image_to_url, ChatRequest, Part, ResponseFormat, Role, ToolChoice, TranslateError,
};
use serde_json::{json, Map, Value};

pub(super) fn encode_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    let unsupported =
        |field: &str| TranslateError::new(field, "the Responses API has no such parameter");
    if !req.stop.is_empty() {
        return Err(unsupported("stop"));
    }
    if req.seed.is_some() {
        return Err(unsupported("seed"));
    }
    if req.frequency_penalty.is_some() {
        return Err(unsupported("frequency_penalty"));
    }
    if req.presence_penalty.is_some() {
        return Err(unsupported("presence_penalty"));
    }
    if req.top_k.is_some() {
        return Err(unsupported("top_k"));
    }
    let mut input = Vec::new();
    for m in &req.messages {
        let content = |output: bool| -> Vec<Value> {
            m.content
                .iter()
                .map(|p| match p {
                    Part::Text(t) if output => json!({"type": "output_text", "text": t}),
                    Part::Text(t) => json!({"type": "input_text", "text": t}),
                    Part::Image(img) => {
                        json!({"type": "input_image", "image_url": image_to_url(img)})
                    }
                })
                .collect()
        };
        match m.role {
            Role::User => input.push(json!({"role": "user", "content": content(false)})),
            Role::Assistant => {
                if !m.content.is_empty() {
                    input.push(json!({"role": "assistant", "content": content(true)}));
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
                input.push(json!({
                    "type": "function_call_output",
                    "call_id": m.tool_call_id.clone().unwrap_or_default(),
                    "output": text,
                }));
            }
        }
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    if let Some(s) = &req.system {
        o.insert("instructions".into(), json!(s));
    }
    o.insert("input".into(), Value::Array(input));
    if let Some(n) = req.max_tokens {
        o.insert("max_output_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        o.insert("top_p".into(), json!(t));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                })
            })
            .collect();
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(rf) = &req.response_format {
        let format = match rf {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => json!({"type": "json_schema", "name": name, "schema": schema, "strict": strict}),
        };
        o.insert("text".into(), json!({ "format": format }));
    }
    if let Some(u) = &req.user {
        o.insert("user".into(), json!(u));
    }
    if req.stream {
        o.insert("stream".into(), json!(true));
    }
    o.insert("store".into(), json!(false));
    Ok(Value::Object(o))
}

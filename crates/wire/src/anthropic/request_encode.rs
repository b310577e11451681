//! The canonical form → an Anthropic Messages request body for an upstream.

use serde_json::{json, Map, Value};

use crate::canonical::{
    system_turn_text, ChatRequest, Image, Part, ResponseFormat, Role, ToolChoice, TranslateError,
};
use crate::ids::new_id;
use crate::json::{arguments_object, put, strict_tool_object};

use super::max_output_tokens;

fn image_block(img: &Image) -> Value {
    match img {
        Image::Url(u) => json!({"type": "image", "source": {"type": "url", "url": u}}),
        Image::Base64 { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
    }
}

fn content_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) if t.is_empty() => None,
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Image(img) => Some(image_block(img)),
        })
        .collect()
}

pub(super) fn tool_use_id(id: &str) -> String {
    if id.is_empty() {
        new_id("toolu_")
    } else {
        id.to_string()
    }
}

fn encode_messages(req: &ChatRequest) -> Result<Vec<Value>, TranslateError> {
    // (role, blocks), consecutive same-role turns merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::User => ("user", content_blocks(&m.content)),
            Role::Assistant => {
                let mut blocks = Vec::new();
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => blocks.push(json!({"type": "text", "text": t})),
                        Part::Image(_) => {
                            return Err(TranslateError::new(
                                format!("messages[{i}].content[{j}]"),
                                "Anthropic assistant turns cannot carry images",
                            ))
                        }
                    }
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let input = arguments_object(&c.arguments).ok_or_else(|| {
                        TranslateError::new(
                            format!("messages[{i}].tool_calls[{j}].arguments"),
                            "tool call arguments must be a JSON object",
                        )
                    })?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tool_use_id(&c.id),
                        "name": c.name,
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = m.answered_call(i)?;
                let content = match m.content.as_slice() {
                    [] => json!(""),
                    [Part::Text(t)] => json!(t),
                    parts => Value::Array(content_blocks(parts)),
                };
                let mut block =
                    json!({"type": "tool_result", "tool_use_id": id, "content": content});
                if m.is_error {
                    block["is_error"] = json!(true);
                }
                ("user", vec![block])
            }
            Role::System => (
                "user",
                vec![json!({"type": "text", "text": system_turn_text(m)})],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, blocks)| {
            // Tool results must open a user turn.
            let (mut results, rest): (Vec<Value>, Vec<Value>) = blocks
                .into_iter()
                .partition(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
            results.extend(rest);
            json!({"role": role, "content": results})
        })
        .collect())
}

/// Refuses what Anthropic Messages cannot do: JSON without a schema, a seed, penalties.
fn reject_unsupported(req: &ChatRequest) -> Result<(), TranslateError> {
    let json_object = matches!(req.response_format, Some(ResponseFormat::JsonObject));
    let refused = [
        (
            json_object,
            "response_format",
            "Anthropic Messages has no schema-less JSON mode; give a JSON schema",
        ),
        (req.seed.is_some(), "seed", "Anthropic Messages has no seed"),
        (
            req.frequency_penalty.is_some_and(|p| p != 0.0),
            "frequency_penalty",
            "Anthropic Messages has no frequency penalty",
        ),
        (
            req.presence_penalty.is_some_and(|p| p != 0.0),
            "presence_penalty",
            "Anthropic Messages has no presence penalty",
        ),
    ];
    match refused.into_iter().find(|(set, ..)| *set) {
        Some((_, field, why)) => Err(TranslateError::new(field, why)),
        None => Ok(()),
    }
}

fn tool_choice_json(tc: &ToolChoice) -> Value {
    match tc {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    }
}

pub(super) fn encode_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    reject_unsupported(req)?;
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    // Anthropic requires a limit; a call without one means "as much as the model allows".
    let max_tokens = req
        .max_tokens
        .unwrap_or_else(|| max_output_tokens(&req.model));
    o.insert("max_tokens".into(), json!(max_tokens));
    if let Some(s) = req.system.as_deref().filter(|s| !s.is_empty()) {
        o.insert("system".into(), json!(s));
    }
    o.insert("messages".into(), Value::Array(encode_messages(req)?));
    put(&mut o, "temperature", req.temperature);
    put(&mut o, "top_p", req.top_p);
    put(&mut o, "top_k", req.top_k);
    if !req.stop.is_empty() {
        o.insert("stop_sequences".into(), json!(req.stop));
    }
    if req.stream {
        o.insert("stream".into(), json!(true));
    }
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .map(|t| strict_tool_object(t, "input_schema"));
        o.insert("tools".into(), tools.map(Value::Object).collect());
    }
    put(
        &mut o,
        "tool_choice",
        req.tool_choice.as_ref().map(tool_choice_json),
    );
    if let Some(u) = &req.user {
        o.insert("metadata".into(), json!({"user_id": u}));
    }
    // Plain text is Anthropic's only other output: nothing to say for `Text`.
    if let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format {
        let format = json!({"type": "json_schema", "schema": schema});
        o.insert("output_config".into(), json!({ "format": format }));
    }
    Ok(Value::Object(o))
}

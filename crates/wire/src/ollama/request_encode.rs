//! The canonical form → an Ollama `/api/chat` or `/api/generate` request body for an upstream.

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, Image, Message, Part, Role, Think, ToolChoice, TranslateError,
};
use crate::json::{arguments_object, bad};
use crate::openai::TOOL_ERROR_MARK;

fn image_data(img: &Image) -> Option<&str> {
    match img {
        Image::Base64 { data, .. } => Some(data),
        Image::Url(url) => url
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
            .map(|(_, d)| d),
    }
}

/// A message's text (parts joined by newlines) and base64 images.
pub(super) fn split_content(m: &Message, i: usize) -> Result<(String, Vec<Value>), TranslateError> {
    let mut texts: Vec<&str> = Vec::new();
    let mut images = Vec::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => texts.push(t),
            Part::Image(img) => match image_data(img) {
                Some(d) => images.push(Value::String(d.to_string())),
                None => {
                    return Err(bad(
                        format!("messages[{i}].content[{j}]"),
                        "Ollama takes images only as base64 data, not as URLs",
                    ))
                }
            },
        }
    }
    Ok((texts.join("\n"), images))
}

/// One of `tool_calls`. Answers to Ollama clients carry the call's `id` (newer Ollama servers
/// write one too, and llmux reads it back from the next turn): it is how a result finds its
/// call when one function is called twice, and how a Gemini thought signature comes back.
pub(super) fn tool_call_json(id: Option<&str>, name: &str, args: Value) -> Value {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => json!({"id": id, "function": {"name": name, "arguments": args}}),
        None => json!({"function": {"name": name, "arguments": args}}),
    }
}

pub(super) fn encode_messages(req: &ChatRequest) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::new();
    if let Some(s) = &req.system {
        out.push(json!({"role": "system", "content": s}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let (text, images) = split_content(m, i)?;
        let mut msg = Map::new();
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::System => "system",
        };
        let text = if m.is_error {
            format!("{TOOL_ERROR_MARK}{text}")
        } else {
            text
        };
        msg.insert("role".to_string(), json!(role));
        msg.insert("content".to_string(), json!(text));
        if !images.is_empty() {
            if m.role == Role::Tool {
                return Err(bad(
                    format!("messages[{i}].content"),
                    "Ollama tool results cannot hold images",
                ));
            }
            msg.insert("images".to_string(), Value::Array(images));
        }
        if !m.tool_calls.is_empty() {
            let mut calls = Vec::new();
            for (j, c) in m.tool_calls.iter().enumerate() {
                let args = arguments_object(&c.arguments).ok_or_else(|| {
                    bad(
                        format!("messages[{i}].tool_calls[{j}].arguments"),
                        "Ollama needs the arguments as a JSON object",
                    )
                })?;
                calls.push(tool_call_json(None, &c.name, args));
            }
            msg.insert("tool_calls".to_string(), Value::Array(calls));
        }
        if m.role == Role::Tool {
            if let Some(name) = req.tool_name(i) {
                msg.insert("tool_name".to_string(), json!(name));
            }
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

/// Ollama `options`: the runner options the client sent as they are, under the canonical fields.
pub(super) fn encode_options(req: &ChatRequest) -> Map<String, Value> {
    let mut o = req.ollama.options.clone();
    if let Some(t) = req.temperature {
        o.insert("temperature".to_string(), json!(t));
    }
    if let Some(p) = req.top_p {
        o.insert("top_p".to_string(), json!(p));
    }
    if let Some(k) = req.top_k {
        o.insert("top_k".to_string(), json!(k));
    }
    if let Some(n) = req.max_tokens {
        o.insert("num_predict".to_string(), json!(n));
    }
    if !req.stop.is_empty() {
        o.insert("stop".to_string(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        o.insert("seed".to_string(), json!(s));
    }
    if let Some(p) = req.frequency_penalty {
        o.insert("frequency_penalty".to_string(), json!(p));
    }
    if let Some(p) = req.presence_penalty {
        o.insert("presence_penalty".to_string(), json!(p));
    }
    o
}

pub(super) fn encode_tools(req: &ChatRequest) -> Result<Option<Value>, TranslateError> {
    match &req.tool_choice {
        Some(ToolChoice::Required) | Some(ToolChoice::Tool(_)) => {
            return Err(bad(
                "tool_choice",
                "Ollama cannot be made to call a tool; only `auto` and `none` translate",
            ))
        }
        Some(ToolChoice::None) => return Ok(None),
        Some(ToolChoice::Auto) | None => {}
    }
    if req.tools.is_empty() {
        return Ok(None);
    }
    let tools = req
        .tools
        .iter()
        .map(|t| {
            let mut f = Map::new();
            f.insert("name".to_string(), json!(t.name));
            if let Some(d) = &t.description {
                f.insert("description".to_string(), json!(d));
            }
            f.insert("parameters".to_string(), t.parameters.clone());
            json!({"type": "function", "function": Value::Object(f)})
        })
        .collect();
    Ok(Some(Value::Array(tools)))
}

/// Ollama `think` and `keep_alive`, when the client said them.
pub(super) fn encode_extras(req: &ChatRequest, body: &mut Map<String, Value>) {
    match &req.ollama.think {
        None => {}
        Some(Think::On) => {
            body.insert("think".to_string(), json!(true));
        }
        Some(Think::Off) => {
            body.insert("think".to_string(), json!(false));
        }
        Some(Think::Level(level)) => {
            body.insert("think".to_string(), json!(level));
        }
    }
    if let Some(k) = &req.ollama.keep_alive {
        body.insert("keep_alive".to_string(), k.clone());
    }
}

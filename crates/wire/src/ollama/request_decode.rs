//! Ollama `/api/chat` and `/api/generate` request bodies → the canonical form; refuses what it cannot carry.

use serde_json::{json, Value};

use crate::canonical::{
    ChatRequest, Image, Message, Part, ResponseFormat, Role, Tool, ToolCall, TranslateError,
};
use crate::ids::CallLedger;
use crate::json::{bad, Fields};

/// The image type a base64 payload starts with; Ollama sends no type. JPEG when unknown.
fn sniff_mime(b64: &str) -> &'static str {
    if b64.starts_with("iVBORw0KGgo") {
        "image/png"
    } else if b64.starts_with("R0lGOD") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

fn decode_images(o: &Fields, key: &str) -> Result<Vec<Part>, TranslateError> {
    let mut parts = Vec::new();
    for (i, data) in o.one_or_more_strings(key)?.into_iter().enumerate() {
        if data.is_empty() {
            return Err(bad(format!("{}[{i}]", o.at(key)), "empty image"));
        }
        // Some clients send data URLs; Ollama's own clients send bare base64.
        let img = match data
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
        {
            Some((mime, payload)) => Image::Base64 {
                media_type: mime.to_string(),
                data: payload.to_string(),
            },
            None => Image::Base64 {
                media_type: sniff_mime(&data).to_string(),
                data,
            },
        };
        parts.push(Part::Image(img));
    }
    Ok(parts)
}

/// Ollama tool-call arguments (an object; some clients send JSON text) → canonical JSON text.
fn arguments_text(v: Option<&Value>, path: &str) -> Result<String, TranslateError> {
    match v {
        None | Some(Value::Null) => Ok("{}".to_string()),
        Some(a @ Value::Object(_)) => Ok(a.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(path, "expected a JSON object")),
    }
}

/// One of an assistant message's `tool_calls` (at `cpath`).
fn decode_tool_call(
    c: &Value,
    cpath: &str,
    ledger: &mut CallLedger,
) -> Result<ToolCall, TranslateError> {
    let co = Fields::of(c, cpath)?;
    let f = co
        .get("function")
        .ok_or_else(|| bad(co.at("function"), "missing required field"))?;
    let fo = Fields::of(f, &co.at("function"))?;
    let name = fo.need_str("name")?.to_string();
    let arguments = arguments_text(fo.get("arguments"), &fo.at("arguments"))?;
    let id = co
        .str("id")?
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    Ok(ToolCall {
        id: ledger.call(id, &name),
        name,
        arguments,
    })
}

fn decode_assistant(
    mo: &Fields,
    text: String,
    images: Vec<Part>,
    ledger: &mut CallLedger,
) -> Result<Message, TranslateError> {
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(Part::Text(text));
    }
    content.extend(images);
    let mut msg = Message::new(Role::Assistant, content);
    for (j, c) in mo.array("tool_calls")?.iter().enumerate() {
        let cpath = format!("{}[{j}]", mo.at("tool_calls"));
        msg.tool_calls.push(decode_tool_call(c, &cpath, ledger)?);
    }
    if msg.content.is_empty() && msg.tool_calls.is_empty() {
        // An empty assistant turn still takes its place in the conversation.
        msg.content.push(Part::Text(String::new()));
    }
    Ok(msg)
}

fn decode_tool_result(
    mo: &Fields,
    text: String,
    ledger: &mut CallLedger,
) -> Result<Message, TranslateError> {
    let name = match mo.str("tool_name")? {
        Some(n) => Some(n),
        None => mo.str("name")?,
    }
    .map(str::to_string);
    let call_id = ledger.answer(mo.str("tool_call_id")?, name.as_deref());
    let mut msg = Message::new(Role::Tool, vec![Part::Text(text)]);
    msg.tool_call_id = Some(call_id);
    msg.name = name;
    Ok(msg)
}

pub(super) fn decode_messages(o: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let mut system: Vec<String> = Vec::new();
    let mut ledger = CallLedger::default();
    for (i, m) in o.array("messages")?.iter().enumerate() {
        let mo = Fields::of(m, &format!("messages[{i}]"))?;
        let role = mo.need_str("role")?;
        let text = mo.str("content")?.unwrap_or_default().to_string();
        let images = decode_images(&mo, "images")?;
        match role {
            "system" if !images.is_empty() => {
                return Err(bad(mo.at("images"), "a system message cannot hold images"))
            }
            "system" if req.messages.is_empty() => system.push(text),
            // A later system message keeps its place.
            "system" => req
                .messages
                .push(Message::new(Role::System, vec![Part::Text(text)])),
            "user" => {
                let mut content = Vec::new();
                if !text.is_empty() || images.is_empty() {
                    content.push(Part::Text(text));
                }
                content.extend(images);
                req.messages.push(Message::new(Role::User, content));
            }
            "assistant" => {
                let msg = decode_assistant(&mo, text, images, &mut ledger)?;
                req.messages.push(msg);
            }
            "tool" if !images.is_empty() => {
                return Err(bad(mo.at("images"), "tool results cannot hold images"))
            }
            "tool" => req
                .messages
                .push(decode_tool_result(&mo, text, &mut ledger)?),
            other => {
                return Err(bad(
                    mo.at("role"),
                    format!("unknown role `{other}` (expected system, user, assistant or tool)"),
                ))
            }
        }
    }
    if !system.is_empty() {
        req.system = Some(system.join("\n"));
    }
    Ok(())
}

pub(super) fn decode_tools(o: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    for (i, t) in o.array("tools")?.iter().enumerate() {
        let to = Fields::of(t, &format!("tools[{i}]"))?;
        if let Some(kind) = to.str("type")? {
            if kind != "function" {
                return Err(bad(
                    to.at("type"),
                    format!("`{kind}` tools cannot be translated"),
                ));
            }
        }
        let f = to
            .get("function")
            .ok_or_else(|| bad(to.at("function"), "missing required field"))?;
        let fo = Fields::of(f, &to.at("function"))?;
        req.tools.push(Tool {
            name: fo
                .str("name")?
                .ok_or_else(|| bad(fo.at("name"), "missing required field"))?
                .to_string(),
            description: fo.str("description")?.map(str::to_string),
            parameters: fo
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: None,
        });
    }
    Ok(())
}

pub(super) fn decode_format(o: &Fields) -> Result<Option<ResponseFormat>, TranslateError> {
    match o.get("format") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(ResponseFormat::JsonObject)),
        Some(Value::Object(_)) => Ok(Some(ResponseFormat::JsonSchema {
            name: "response".to_string(),
            schema: o.get("format").cloned().unwrap_or_default(),
            strict: false,
        })),
        Some(_) => Err(bad(
            o.at("format"),
            "expected \"json\" or a JSON schema object",
        )),
    }
}

pub(super) fn decode_options(o: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let Some(v) = o.get("options") else {
        return Ok(());
    };
    let opts = Fields::of(v, &o.at("options"))?;
    req.temperature = opts.f64("temperature")?;
    req.top_p = opts.f64("top_p")?;
    req.top_k = match opts.i64("top_k")? {
        Some(k) if k > 0 => Some(u32::try_from(k).unwrap_or(u32::MAX)),
        _ => None,
    };
    // Ollama: -1 generates until the model stops, -2 until the context is full.
    req.max_tokens = match opts.i64("num_predict")? {
        Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        _ => None,
    };
    req.stop = opts.one_or_more_strings("stop")?;
    req.seed = opts.i64("seed")?;
    req.frequency_penalty = opts.f64("frequency_penalty")?;
    req.presence_penalty = opts.f64("presence_penalty")?;
    Ok(())
}

pub(super) fn decode_generate(o: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    if o.str("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            o.at("suffix"),
            "fill-in-the-middle cannot be translated",
        ));
    }
    if o.str("template")?.is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            o.at("template"),
            "a prompt template cannot be translated",
        ));
    }
    if !o.array("context")?.is_empty() {
        return Err(bad(
            o.at("context"),
            "Ollama's token context cannot be translated",
        ));
    }
    if o.bool("raw")? == Some(true) {
        return Err(bad(o.at("raw"), "raw prompts cannot be translated"));
    }
    req.legacy_prompt = true;
    req.system = o.str("system")?.map(str::to_string);
    let text = o.str("prompt")?.unwrap_or_default().to_string();
    let images = decode_images(o, "images")?;
    let mut content = Vec::new();
    if !text.is_empty() || images.is_empty() {
        content.push(Part::Text(text));
    }
    content.extend(images);
    req.messages.push(Message::new(Role::User, content));
    Ok(())
}

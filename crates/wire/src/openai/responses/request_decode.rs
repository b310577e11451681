//! Responses API request bodies → the canonical form; refuses what a stateless translation cannot do.

use serde_json::Value;

use crate::canonical::{
    image_from_url, ChatRequest, Message, Part, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
    TranslateError,
};
use crate::ids::call_name;
use crate::json::{
    as_obj, decode_tool, each_object, field, opt_bool, opt_f64, opt_str, opt_u32, path, req_str,
    Obj,
};

use super::super::request_decode::{
    decode_parts, decode_tool_choice_by, json_schema_format, text_only,
};

/// Fields that need server-side state or features no other dialect has.
const REFUSED: [(&str, &str); 5] = [
    (
        "previous_response_id",
        "stored conversations cannot be translated; send the whole conversation in `input`",
    ),
    (
        "conversation",
        "stored conversations cannot be translated; send the whole conversation in `input`",
    ),
    ("prompt", "stored prompt templates cannot be translated"),
    ("reasoning", "reasoning options cannot be translated"),
    ("top_logprobs", "logprobs cannot be translated"),
];

fn reject_fields(o: &Obj) -> Result<(), TranslateError> {
    for (key, why) in REFUSED {
        if field(o, key).is_some() {
            return Err(TranslateError::new(key, why));
        }
    }
    if opt_bool(o, "", "background")? == Some(true) {
        return Err(TranslateError::new(
            "background",
            "background responses cannot be translated",
        ));
    }
    Ok(())
}

/// A message's `content`: a string or an array of `input_text` / `input_image` / `output_text` parts.
pub(super) fn decode_content(v: Option<&Value>, at: &str) -> Result<Vec<Part>, TranslateError> {
    let text_types = ["input_text", "output_text", "text"];
    decode_parts(v, at, &text_types, |po, pp, ty| match ty {
        "input_image" => match opt_str(po, pp, "image_url")? {
            Some(url) => Ok(Part::Image(image_from_url(&url))),
            None => Err(TranslateError::new(
                path(pp, "image_url"),
                "is required (images by `file_id` cannot be translated)",
            )),
        },
        other => Err(TranslateError::new(
            path(pp, "type"),
            format!("content part type `{other}` cannot be translated"),
        )),
    })
}

/// The assistant message that collects function calls: the last message when it is the
/// assistant's, else a new one.
fn assistant_turn(messages: &mut Vec<Message>) -> &mut Message {
    let reuse = messages.last().is_some_and(|m| m.role == Role::Assistant);
    if !reuse {
        messages.push(Message::new(Role::Assistant, Vec::new()));
    }
    let last = messages.len() - 1;
    &mut messages[last]
}

/// A `message` item: a system or developer message before any other joins the system
/// prompt; a later one stays in its place ([`Role::System`]).
fn decode_message_item(
    it: &Obj,
    p: &str,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let role = req_str(it, p, "role")?;
    let content = decode_content(field(it, "content"), &path(p, "content"))?;
    let role = match role.as_str() {
        "system" | "developer" if messages.is_empty() => {
            system.push(text_only(content, "\n"));
            return Ok(());
        }
        "system" | "developer" => {
            let text = Part::Text(text_only(content, "\n"));
            messages.push(Message::new(Role::System, vec![text]));
            return Ok(());
        }
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(TranslateError::new(
                path(p, "role"),
                format!("unknown role `{other}`"),
            ))
        }
    };
    messages.push(Message::new(role, content));
    Ok(())
}

/// The items of an array `input`.
fn decode_items(
    items: &[Value],
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    // Call id → function name, so outputs can carry the name (Gemini needs it).
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("input[{i}]");
        let it = as_obj(item, &p)?;
        let ty = opt_str(it, &p, "type")?.unwrap_or_else(|| "message".to_string());
        match ty.as_str() {
            "message" => decode_message_item(it, &p, system, messages)?,
            "function_call" => {
                let call = ToolCall {
                    id: req_str(it, &p, "call_id")?,
                    name: req_str(it, &p, "name")?,
                    arguments: opt_str(it, &p, "arguments")?.unwrap_or_else(|| "{}".into()),
                };
                names.push((call.id.clone(), call.name.clone()));
                assistant_turn(messages).tool_calls.push(call);
            }
            "function_call_output" => {
                let id = req_str(it, &p, "call_id")?;
                let content = decode_content(field(it, "output"), &path(&p, "output"))?;
                let mut m = Message::new(Role::Tool, content);
                m.name = call_name(&names, &id);
                m.tool_call_id = Some(id);
                messages.push(m);
            }
            // The model's hidden reasoning from an earlier turn: other dialects have no place for it.
            "reasoning" => {}
            other => {
                return Err(TranslateError::new(
                    path(&p, "type"),
                    format!("input item type `{other}` cannot be translated"),
                ))
            }
        }
    }
    Ok(())
}

fn decode_input(
    o: &Obj,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    match field(o, "input") {
        None => Err(TranslateError::new("input", "is required")),
        Some(Value::String(s)) => {
            messages.push(Message::new(Role::User, vec![Part::Text(s.clone())]));
            Ok(())
        }
        Some(Value::Array(items)) => decode_items(items, system, messages),
        Some(_) => Err(TranslateError::new(
            "input",
            "must be a string or an array of input items",
        )),
    }
}

fn decode_tools(o: &Obj) -> Result<Vec<Tool>, TranslateError> {
    each_object(o, "tools", |t, tp| {
        let ty = req_str(t, tp, "type")?;
        if ty != "function" {
            return Err(TranslateError::new(
                path(tp, "type"),
                format!("built-in tool `{ty}` cannot be translated; only function tools can"),
            ));
        }
        decode_tool(t, tp, "parameters")
    })
}

fn decode_tool_choice(o: &Obj) -> Result<Option<ToolChoice>, TranslateError> {
    decode_tool_choice_by(o, |tc| req_str(tc, "tool_choice", "name"))
}

/// `text.format`: `{"type":"text"}`, `{"type":"json_object"}` or
/// `{"type":"json_schema","name","schema","strict"}` (flat, unlike chat's `response_format`).
fn decode_text_format(o: &Obj) -> Result<Option<ResponseFormat>, TranslateError> {
    let Some(text) = field(o, "text") else {
        return Ok(None);
    };
    let text = as_obj(text, "text")?;
    let Some(format) = field(text, "format") else {
        return Ok(None);
    };
    let at = "text.format";
    let f = as_obj(format, at)?;
    match req_str(f, at, "type")?.as_str() {
        "text" => Ok(Some(ResponseFormat::Text)),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => json_schema_format(f, at).map(Some),
        other => Err(TranslateError::new(
            "text.format.type",
            format!("text format `{other}` cannot be translated"),
        )),
    }
}

pub(super) fn decode_request(o: &Obj) -> Result<ChatRequest, TranslateError> {
    reject_fields(o)?;
    let mut req = ChatRequest {
        model: req_str(o, "", "model")?,
        ..ChatRequest::default()
    };
    let mut system = Vec::new();
    if let Some(instructions) = opt_str(o, "", "instructions")? {
        system.push(instructions);
    }
    decode_input(o, &mut system, &mut req.messages)?;
    if !system.is_empty() {
        req.system = Some(system.join("\n\n"));
    }
    req.max_tokens = opt_u32(o, "", "max_output_tokens")?;
    req.temperature = opt_f64(o, "", "temperature")?;
    req.top_p = opt_f64(o, "", "top_p")?;
    req.stream = opt_bool(o, "", "stream")?.unwrap_or(false);
    // The Responses API always reports usage, streamed or not.
    req.include_usage = true;
    req.user = match opt_str(o, "", "user")? {
        Some(u) => Some(u),
        None => opt_str(o, "", "safety_identifier")?,
    };
    req.tools = decode_tools(o)?;
    req.tool_choice = decode_tool_choice(o)?;
    req.response_format = decode_text_format(o)?;
    Ok(req)
}

//! Gemini `generateContent` request bodies → the canonical form; refuses what it cannot carry.

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, Image, Message, Part, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
    TranslateError,
};
use crate::ids::CallLedger;
use crate::json::{bad, camel, Fields};

use super::only;

/// One part of a Gemini `Content`, as far as the canonical form can hold it.
enum GPart {
    Text(String),
    Image(Image),
    Call {
        id: Option<String>,
        name: String,
        args: String,
    },
    Response {
        id: Option<String>,
        name: String,
        text: String,
        /// The response is a lone `error` (a failed tool).
        error: bool,
    },
}

/// `None` for parts that carry nothing translatable (thoughts, empty parts).
fn decode_part(v: &Value, path: &str) -> Result<Option<GPart>, TranslateError> {
    let f = Fields::any_case(v, path)?;
    only(
        &f,
        &[
            "text",
            "inlineData",
            "fileData",
            "functionCall",
            "functionResponse",
        ],
        &[
            "thought",
            "thoughtSignature",
            "videoMetadata",
            "partMetadata",
            "mediaResolution",
        ],
    )?;
    if f.get("thought").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    if let Some(t) = f.str("text")? {
        return Ok(Some(GPart::Text(t.to_string())));
    }
    if let Some(d) = f.obj("inlineData")? {
        only(&d, &["mimeType", "data"], &["displayName"])?;
        let mime = d.need_str("mimeType")?;
        if !mime.starts_with("image/") {
            return Err(bad(
                d.at("mimeType"),
                format!("inline `{mime}` data cannot be translated; only images can"),
            ));
        }
        let data = d.need_str("data")?;
        return Ok(Some(GPart::Image(Image::Base64 {
            media_type: mime.to_string(),
            data: data.to_string(),
        })));
    }
    if let Some(d) = f.obj("fileData")? {
        only(&d, &["mimeType", "fileUri"], &["displayName"])?;
        if let Some(mime) = d.str("mimeType")? {
            if !mime.starts_with("image/") {
                return Err(bad(
                    d.at("mimeType"),
                    format!("`{mime}` files cannot be translated; only images can"),
                ));
            }
        }
        let uri = d.need_str("fileUri")?;
        return Ok(Some(GPart::Image(Image::Url(uri.to_string()))));
    }
    if let Some(c) = f.obj("functionCall")? {
        only(&c, &["name", "args", "id"], &[])?;
        let name = c.need_str("name")?.to_string();
        let args = match c.get("args") {
            None => "{}".to_string(),
            Some(a @ Value::Object(_)) => a.to_string(),
            Some(_) => return Err(bad(c.at("args"), "expected a JSON object")),
        };
        let id = c.str("id")?.map(str::to_string);
        return Ok(Some(GPart::Call { id, name, args }));
    }
    match f.obj("functionResponse")? {
        Some(r) => function_response(&r).map(Some),
        None => Ok(None),
    }
}

fn function_response(r: &Fields) -> Result<GPart, TranslateError> {
    only(
        r,
        &["name", "response", "id"],
        &["willContinue", "scheduling"],
    )?;
    let name = r.need_str("name")?.to_string();
    let (text, error) = r.get("response").map(tool_text).unwrap_or_default();
    let id = r.str("id")?.map(str::to_string);
    Ok(GPart::Response {
        id,
        name,
        text,
        error,
    })
}

/// The tool result text carried by a `functionResponse.response` (a lone `result` or `error`
/// is unwrapped) and whether it is a lone `error`.
fn tool_text(v: &Value) -> (String, bool) {
    if let Value::Object(m) = v {
        if m.len() == 1 {
            let lone = m.get("result").map(|r| (r, false));
            if let Some((r, error)) = lone.or_else(|| m.get("error").map(|r| (r, true))) {
                let text = match r {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return (text, error);
            }
        }
    }
    (v.to_string(), false)
}

pub(super) fn decode_system(v: &Value, path: &str) -> Result<Option<String>, TranslateError> {
    if let Value::String(s) = v {
        return Ok(Some(s.clone()));
    }
    let f = Fields::any_case(v, path)?;
    only(&f, &["parts", "role"], &[])?;
    let mut texts = Vec::new();
    for (j, p) in f.array("parts")?.iter().enumerate() {
        let ppath = format!("{}[{j}]", f.at("parts"));
        match decode_part(p, &ppath)? {
            Some(GPart::Text(t)) => texts.push(t),
            None => {}
            Some(_) => return Err(bad(ppath, "a system instruction can only hold text")),
        }
    }
    Ok(if texts.is_empty() {
        None
    } else {
        Some(texts.join("\n"))
    })
}

/// A turn's role: `true` for the model's.
fn is_model_turn(cf: &Fields) -> Result<bool, TranslateError> {
    match cf.str("role")?.unwrap_or("user") {
        "model" => Ok(true),
        "user" | "function" | "tool" => Ok(false),
        other => Err(bad(
            cf.at("role"),
            format!("unknown role `{other}` (expected `user` or `model`)"),
        )),
    }
}

/// One `Content` → canonical messages: a model turn is one assistant message; a user turn
/// splits around its function responses (each a tool message).
fn decode_turn(
    cf: &Fields,
    is_model: bool,
    ledger: &mut CallLedger,
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let mut content: Vec<Part> = Vec::new();
    let mut tool_calls: Vec<ToolCall> = Vec::new();
    for (j, p) in cf.array("parts")?.iter().enumerate() {
        let ppath = format!("{}[{j}]", cf.at("parts"));
        let Some(part) = decode_part(p, &ppath)? else {
            continue;
        };
        match part {
            GPart::Text(t) => match content.last_mut() {
                // The model's text arrives split in many parts; one string reads better.
                Some(Part::Text(prev)) if is_model => prev.push_str(&t),
                _ => content.push(Part::Text(t)),
            },
            GPart::Image(img) => content.push(Part::Image(img)),
            GPart::Call { id, name, args } => {
                if !is_model {
                    return Err(bad(
                        format!("{ppath}.functionCall"),
                        "only a `model` turn can hold a functionCall",
                    ));
                }
                tool_calls.push(ToolCall {
                    id: ledger.call(id, &name),
                    name,
                    arguments: args,
                });
            }
            GPart::Response {
                id,
                name,
                text,
                error,
            } => {
                if is_model {
                    return Err(bad(
                        format!("{ppath}.functionResponse"),
                        "a functionResponse belongs in a `user` turn",
                    ));
                }
                if !content.is_empty() {
                    out.push(Message::new(Role::User, std::mem::take(&mut content)));
                }
                let mut m = Message::new(Role::Tool, vec![Part::Text(text)]);
                m.is_error = error;
                m.tool_call_id = Some(ledger.answer(id.as_deref(), Some(&name)));
                m.name = Some(name);
                out.push(m);
            }
        }
    }
    if is_model {
        if !content.is_empty() || !tool_calls.is_empty() {
            let mut m = Message::new(Role::Assistant, content);
            m.tool_calls = tool_calls;
            out.push(m);
        }
    } else if !content.is_empty() {
        out.push(Message::new(Role::User, content));
    }
    Ok(())
}

pub(super) fn decode_contents(
    contents: &[Value],
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let mut ledger = CallLedger::default();
    for (i, c) in contents.iter().enumerate() {
        let cf = Fields::any_case(c, &format!("contents[{i}]"))?;
        only(&cf, &["role", "parts"], &[])?;
        let is_model = is_model_turn(&cf)?;
        decode_turn(&cf, is_model, &mut ledger, out)?;
    }
    Ok(())
}

pub(super) fn decode_generation_config(
    g: &Fields,
    req: &mut ChatRequest,
) -> Result<(), TranslateError> {
    only(
        g,
        &[
            "maxOutputTokens",
            "temperature",
            "topP",
            "topK",
            "stopSequences",
            "seed",
            "candidateCount",
            "responseMimeType",
            "responseSchema",
            "responseJsonSchema",
            "frequencyPenalty",
            "presencePenalty",
            "responseModalities",
        ],
        &["thinkingConfig", "mediaResolution"],
    )?;
    req.max_tokens = g.u32("maxOutputTokens")?;
    req.temperature = g.f64("temperature")?;
    req.top_p = g.f64("topP")?;
    req.top_k = g.u32("topK")?;
    req.stop = g.strings("stopSequences")?;
    req.seed = g.i64("seed")?;
    req.frequency_penalty = g.f64("frequencyPenalty")?;
    req.presence_penalty = g.f64("presencePenalty")?;
    if let Some(n) = g.u32("candidateCount")? {
        if n > 1 {
            return Err(bad(
                g.at("candidateCount"),
                "only one candidate can be translated",
            ));
        }
    }
    for (i, m) in g.strings("responseModalities")?.iter().enumerate() {
        if !m.eq_ignore_ascii_case("TEXT") {
            return Err(bad(
                format!("{}[{i}]", g.at("responseModalities")),
                format!("`{m}` output cannot be translated; only TEXT can"),
            ));
        }
    }
    let mime = g.str("responseMimeType")?;
    let schema = match (g.get("responseJsonSchema"), g.get("responseSchema")) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(s)) => Some(from_gemini_schema(s)),
        (None, None) => None,
    };
    req.response_format = match (mime, schema) {
        (Some(m), Some(_)) if m != "application/json" => {
            return Err(bad(
                g.at("responseMimeType"),
                "a response schema needs `application/json`",
            ))
        }
        (_, Some(schema)) => Some(ResponseFormat::JsonSchema {
            name: "response".to_string(),
            schema,
            strict: false,
        }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        (Some("text/plain"), None) => Some(ResponseFormat::Text),
        (Some(other), None) => {
            return Err(bad(
                g.at("responseMimeType"),
                format!("`{other}` cannot be translated (only text/plain and application/json)"),
            ))
        }
        (None, None) => None,
    };
    Ok(())
}

pub(super) fn decode_tools(top: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    for (i, t) in top.array("tools")?.iter().enumerate() {
        let tf = Fields::any_case(t, &format!("tools[{i}]"))?;
        only(&tf, &["functionDeclarations"], &[])?;
        for (j, d) in tf.array("functionDeclarations")?.iter().enumerate() {
            let df = Fields::any_case(d, &format!("tools[{i}].functionDeclarations[{j}]"))?;
            only(
                &df,
                &["name", "description", "parameters", "parametersJsonSchema"],
                &["response", "responseJsonSchema", "behavior"],
            )?;
            let parameters = match (df.get("parametersJsonSchema"), df.get("parameters")) {
                (Some(s), _) => s.clone(),
                (None, Some(s)) => from_gemini_schema(s),
                (None, None) => json!({"type": "object", "properties": {}}),
            };
            req.tools.push(Tool {
                name: df.need_str("name")?.to_string(),
                description: df.str("description")?.map(str::to_string),
                parameters,
                strict: None,
            });
        }
    }
    let Some(tc) = top.obj("toolConfig")? else {
        return Ok(());
    };
    only(&tc, &["functionCallingConfig"], &["retrievalConfig"])?;
    let Some(fc) = tc.obj("functionCallingConfig")? else {
        return Ok(());
    };
    only(&fc, &["mode", "allowedFunctionNames"], &[])?;
    let names = fc.strings("allowedFunctionNames")?;
    let mode = fc.str("mode")?.unwrap_or("AUTO").to_ascii_uppercase();
    req.tool_choice = Some(match mode.as_str() {
        "NONE" => ToolChoice::None,
        "AUTO" | "VALIDATED" | "MODE_UNSPECIFIED" if names.is_empty() => ToolChoice::Auto,
        "ANY" => match names.as_slice() {
            [] => ToolChoice::Required,
            [one] => ToolChoice::Tool(one.clone()),
            many if req.tools.iter().all(|t| many.contains(&t.name)) => ToolChoice::Required,
            _ => {
                return Err(bad(
                    fc.at("allowedFunctionNames"),
                    "a subset of several functions cannot be translated",
                ))
            }
        },
        "AUTO" | "VALIDATED" | "MODE_UNSPECIFIED" => {
            return Err(bad(
                fc.at("allowedFunctionNames"),
                "allowed function names without mode ANY cannot be translated",
            ))
        }
        other => return Err(bad(fc.at("mode"), format!("unknown mode `{other}`"))),
    });
    Ok(())
}

/// Gemini's OpenAPI-subset schema → plain JSON Schema: lower-case types, `nullable` as a `null` type.
fn from_gemini_schema(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    let mut nullable = false;
    for (k, val) in m {
        let key = camel(k).into_owned();
        match key.as_str() {
            "type" => match val {
                Value::String(t) if t.eq_ignore_ascii_case("TYPE_UNSPECIFIED") => {}
                Value::String(t) => {
                    out.insert(key, Value::String(t.to_ascii_lowercase()));
                }
                other => {
                    out.insert(key, other.clone());
                }
            },
            "nullable" => nullable = val.as_bool() == Some(true),
            "propertyOrdering" => {}
            "properties" => {
                let props = match val {
                    Value::Object(p) => Value::Object(
                        p.iter()
                            .map(|(name, s)| (name.clone(), from_gemini_schema(s)))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                out.insert(key, props);
            }
            "items" => {
                out.insert(key, from_gemini_schema(val));
            }
            "anyOf" => {
                let list = match val {
                    Value::Array(a) => Value::Array(a.iter().map(from_gemini_schema).collect()),
                    other => other.clone(),
                };
                out.insert(key, list);
            }
            _ => {
                out.insert(key, val.clone());
            }
        }
    }
    if nullable {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".to_string(), json!([t, "null"]));
        }
    }
    Value::Object(out)
}

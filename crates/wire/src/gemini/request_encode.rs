//! The canonical form → a Gemini `generateContent` request body for an upstream.

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, Image, Message, Part, ResponseFormat, ToolChoice, TranslateError,
};
use crate::json::{arguments_object, bad};

/// `type` in upper case; a `[t, "null"]` pair is `t` and `nullable`. `None` for any other list.
fn gemini_type(val: &Value, out: &mut Map<String, Value>) -> Option<()> {
    match val {
        Value::String(t) => {
            out.insert("type".into(), Value::String(t.to_ascii_uppercase()));
        }
        Value::Array(ts) => {
            let non_null: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            if non_null.len() + usize::from(non_null.len() < ts.len()) != ts.len() {
                return None;
            }
            let [one] = non_null.as_slice() else {
                return None;
            };
            out.insert("type".into(), Value::String(one.to_ascii_uppercase()));
            if non_null.len() < ts.len() {
                out.insert("nullable".to_string(), Value::Bool(true));
            }
        }
        _ => return None,
    }
    Some(())
}

/// JSON Schema → Gemini's OpenAPI subset, or `None` when the schema uses something the subset lacks.
pub(super) fn to_gemini_schema(v: &Value) -> Option<Value> {
    let m = v.as_object()?;
    let mut out = Map::new();
    for (k, val) in m {
        match k.as_str() {
            "type" => gemini_type(val, &mut out)?,
            "properties" => {
                let props = val.as_object()?;
                let conv: Option<Map<String, Value>> = props
                    .iter()
                    .map(|(name, s)| Some((name.clone(), to_gemini_schema(s)?)))
                    .collect();
                out.insert(k.clone(), Value::Object(conv?));
            }
            "items" => {
                out.insert(k.clone(), to_gemini_schema(val)?);
            }
            "anyOf" => {
                let list = val.as_array()?;
                let conv: Option<Vec<Value>> = list.iter().map(to_gemini_schema).collect();
                out.insert(k.clone(), Value::Array(conv?));
            }
            "enum" => {
                if !val.as_array()?.iter().all(Value::is_string) {
                    return None;
                }
                out.insert(k.clone(), val.clone());
            }
            "const" => {
                let s = val.as_str()?;
                out.insert("enum".to_string(), json!([s]));
            }
            "format" => {
                if matches!(
                    val.as_str(),
                    Some("enum" | "date-time" | "int32" | "int64" | "float" | "double")
                ) {
                    out.insert(k.clone(), val.clone());
                }
            }
            "additionalProperties" => {
                if !val.is_boolean() {
                    return None;
                }
            }
            "description" | "title" | "pattern" | "required" | "nullable" | "minimum"
            | "maximum" | "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" | "example" | "propertyOrdering" => {
                out.insert(k.clone(), val.clone());
            }
            "$schema" | "$id" | "$comment" | "strict" | "examples" | "default" | "readOnly"
            | "writeOnly" | "deprecated" | "exclusiveMinimum" | "exclusiveMaximum" => {}
            _ => return None,
        }
    }
    // Gemini rejects an OBJECT with no properties; plain JSON Schema says it the same way.
    let is_object = out.get("type").and_then(Value::as_str) == Some("OBJECT");
    let empty = out
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if is_object && empty {
        return None;
    }
    Some(Value::Object(out))
}

/// A tool taking no arguments: Gemini wants `parameters` left out rather than an empty object.
fn is_empty_schema(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => {
            m.keys().all(|k| {
                matches!(
                    k.as_str(),
                    "type" | "properties" | "$schema" | "additionalProperties" | "required"
                )
            }) && m.get("type").is_none_or(|t| t == "object")
                && m.get("properties")
                    .is_none_or(|p| p.as_object().is_some_and(Map::is_empty))
                && m.get("required")
                    .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
        }
        _ => false,
    }
}

/// `image/png` for `….png`, and so on; `image/jpeg` when the extension says nothing.
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        _ => "image/jpeg",
    }
}

fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((if mime.is_empty() { "image/jpeg" } else { mime }, data))
}

fn image_part(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Image::Url(url) => match parse_data_url(url) {
            Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
            None => json!({"fileData": {"mimeType": guess_mime(url), "fileUri": url}}),
        },
    }
}

/// `functionResponse.response`: the result's JSON object as is, other text under `result`; a
/// failed tool's result (whatever its form) under `error`, as Gemini's docs suggest.
fn tool_response_value(text: &str, is_error: bool) -> Value {
    let parsed = serde_json::from_str::<Value>(text);
    if is_error {
        return json!({ "error": parsed.unwrap_or_else(|_| json!(text)) });
    }
    match parsed {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    }
}

pub(super) fn encode_parts(m: &Message, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut parts = Vec::new();
    for p in &m.content {
        match p {
            Part::Text(t) if t.is_empty() => {}
            Part::Text(t) => parts.push(json!({ "text": t })),
            Part::Image(img) => parts.push(image_part(img)),
        }
    }
    for (j, c) in m.tool_calls.iter().enumerate() {
        let args = arguments_object(&c.arguments).ok_or_else(|| {
            bad(
                format!("messages[{i}].tool_calls[{j}].arguments"),
                "Gemini needs the arguments as a JSON object",
            )
        })?;
        parts.push(call_part(&c.id, &c.name, args));
    }
    Ok(parts)
}

/// A `functionCall` part: the call's id, and the thought signature its id carries (see
/// [`super::signature`]) back on the part, where Gemini wants it.
pub(super) fn call_part(id: &str, name: &str, args: Value) -> Value {
    let (id, signature) = super::signature::split(id);
    let mut call = json!({"name": name, "args": args});
    if !id.is_empty() {
        call["id"] = json!(id);
    }
    let mut part = json!({ "functionCall": call });
    if let Some(s) = signature {
        part["thoughtSignature"] = json!(s);
    }
    part
}

pub(super) fn encode_function_response(
    req: &ChatRequest,
    m: &Message,
    i: usize,
) -> Result<Value, TranslateError> {
    let name = req.tool_name(i).ok_or_else(|| {
        bad(
            format!("messages[{i}].tool_call_id"),
            "Gemini needs the tool's name and no earlier assistant tool call has this id",
        )
    })?;
    let mut text = String::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Image(_) => {
                return Err(bad(
                    format!("messages[{i}].content[{j}]"),
                    "Gemini tool results cannot hold images",
                ))
            }
        }
    }
    let mut response = json!({"name": name, "response": tool_response_value(&text, m.is_error)});
    // The id of the call it answers: Gemini matches parallel results by it, not by position.
    if let Some(id) = m.tool_call_id.as_deref() {
        let (id, _) = super::signature::split(id);
        if !id.is_empty() {
            response["id"] = json!(id);
        }
    }
    Ok(json!({ "functionResponse": response }))
}

pub(super) fn encode_generation_config(
    req: &ChatRequest,
) -> Result<Map<String, Value>, TranslateError> {
    let mut g = Map::new();
    let mut put = |k: &str, v: Value| {
        g.insert(k.to_string(), v);
    };
    if let Some(n) = req.max_tokens {
        put("maxOutputTokens", json!(n));
    }
    if let Some(t) = req.temperature {
        put("temperature", json!(t));
    }
    if let Some(p) = req.top_p {
        put("topP", json!(p));
    }
    if let Some(k) = req.top_k {
        put("topK", json!(k));
    }
    if !req.stop.is_empty() {
        put("stopSequences", json!(req.stop));
    }
    if let Some(s) = req.seed {
        let s = i32::try_from(s).map_err(|_| {
            bad(
                "seed",
                "Gemini takes a 32-bit seed; this one is out of range",
            )
        })?;
        put("seed", json!(s));
    }
    if let Some(p) = req.frequency_penalty {
        put("frequencyPenalty", json!(p));
    }
    if let Some(p) = req.presence_penalty {
        put("presencePenalty", json!(p));
    }
    match &req.response_format {
        None => {}
        Some(ResponseFormat::Text) => put("responseMimeType", json!("text/plain")),
        Some(ResponseFormat::JsonObject) => put("responseMimeType", json!("application/json")),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            put("responseMimeType", json!("application/json"));
            match to_gemini_schema(schema) {
                Some(s) => put("responseSchema", s),
                None => put("responseJsonSchema", schema.clone()),
            }
        }
    }
    Ok(g)
}

pub(super) fn encode_tools(req: &ChatRequest, body: &mut Map<String, Value>) {
    if req.tools.is_empty() {
        return;
    }
    let decls: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut d = Map::new();
            d.insert("name".to_string(), json!(t.name));
            if let Some(desc) = &t.description {
                d.insert("description".to_string(), json!(desc));
            }
            if !is_empty_schema(&t.parameters) {
                match to_gemini_schema(&t.parameters) {
                    Some(s) => d.insert("parameters".to_string(), s),
                    None => d.insert("parametersJsonSchema".to_string(), t.parameters.clone()),
                };
            }
            Value::Object(d)
        })
        .collect();
    body.insert(
        "tools".to_string(),
        json!([{ "functionDeclarations": decls }]),
    );
    let config = match &req.tool_choice {
        None => return,
        Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
        Some(ToolChoice::None) => json!({"mode": "NONE"}),
        Some(ToolChoice::Required) => json!({"mode": "ANY"}),
        Some(ToolChoice::Tool(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    body.insert(
        "toolConfig".to_string(),
        json!({ "functionCallingConfig": config }),
    );
}

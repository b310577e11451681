//! Embeddings ⇄ canonical for OpenAI `/v1/embeddings`, Ollama `/api/embed` and `/api/embeddings`, and Gemini `:embedContent` / `:batchEmbedContents`.
//!
//! Every dialect has `decode_X_request`, `encode_X_request`, `decode_X_response` and
//! `encode_X_response`, X being `openai`, `ollama` (`/api/embed`), `ollama_legacy` (`/api/embeddings`),
//! `gemini` (`:embedContent`) or `gemini_batch` (`:batchEmbedContents`).
//!
//! - OpenAI token-array inputs cannot be translated (another dialect takes text) and are rejected.
//!   A decoded OpenAI request returns its `encoding_format` so the answer can be written in it;
//!   encoded OpenAI requests always ask for floats.
//! - Ignored on decode: OpenAI `user`; Ollama `truncate`, `options`, `keep_alive`; Gemini `taskType`
//!   and `title` (hints that canonical has no field for).
//! - Gemini: the model is in the URL; a `model` in the body (`models/x`) is read without its prefix,
//!   else left empty for the gateway. Several text parts of one `content` are one input, joined by
//!   newlines. Gemini reports no token counts (they decode as 0).
//! - Vectors are `f32`, written in their shortest exact decimal form.

pub use crate::gemini::embed::{
    decode_gemini_batch_request, decode_gemini_batch_response, decode_gemini_request,
    decode_gemini_response, encode_gemini_batch_request, encode_gemini_batch_response,
    encode_gemini_request, encode_gemini_response,
};
pub use crate::ollama::embed::{
    decode_ollama_legacy_request, decode_ollama_legacy_response, decode_ollama_request,
    decode_ollama_response, encode_ollama_legacy_request, encode_ollama_legacy_response,
    encode_ollama_request, encode_ollama_response,
};
pub use crate::openai::embed::{
    decode_openai_request, decode_openai_response, encode_openai_request, encode_openai_response,
    EncodingFormat,
};

use serde::Serialize;
use serde_json::Value;

use crate::canonical::TranslateError;
use crate::json::{as_u32, bad, typed};

pub(crate) fn parse(body: &[u8]) -> Result<Value, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad("", format!("body is not valid JSON: {e}")))?;
    if let Some(e) = v.get("error") {
        let msg = match e {
            Value::String(s) => s.clone(),
            other => other
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| other.to_string(), str::to_string),
        };
        return Err(bad("", format!("upstream error: {msg}")));
    }
    if !v.is_object() {
        return Err(bad("", "body is not a JSON object"));
    }
    Ok(v)
}

/// A field read by its camelCase or snake_case name (Gemini clients send either); null counts as absent.
pub(crate) fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel)
        .filter(|x| !x.is_null())
        .or_else(|| v.get(snake).filter(|x| !x.is_null()))
}

pub(crate) fn opt_str<'a>(
    v: &'a Value,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, TranslateError> {
    let x = v.get(key).filter(|x| !x.is_null());
    typed(x, Value::as_str, || bad(path, "expected a string"))
}

pub(crate) fn opt_u32(v: Option<&Value>, path: &str) -> Result<Option<u32>, TranslateError> {
    let x = v.filter(|x| !x.is_null());
    typed(x, as_u32, || bad(path, "expected a non-negative integer"))
}

pub(crate) fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A JSON array of numbers → a vector.
pub(crate) fn vector(v: &Value, path: &str) -> Result<Vec<f32>, TranslateError> {
    let Value::Array(a) = v else {
        return Err(bad(path, "expected an array of numbers"));
    };
    a.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| bad(format!("{path}[{i}]"), "expected a number"))
        })
        .collect()
}

/// `input` (or `prompt`) as a list of texts: a string or an array of strings.
pub(crate) fn texts(v: Option<&Value>, path: &str) -> Result<Vec<String>, TranslateError> {
    match v {
        None | Some(Value::Null) => Err(bad(path, "missing required field")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.is_empty() => Err(bad(path, "must not be empty")),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(bad(
                    path,
                    "token arrays cannot be translated; send the input as text",
                )),
                _ => Err(bad(format!("{path}[{i}]"), "expected a string")),
            })
            .collect(),
        Some(_) => Err(bad(path, "expected a string or an array of strings")),
    }
}

#[cfg(test)]
mod tests;

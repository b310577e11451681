//! Ollama `/api/embed` and the older one-prompt `/api/embeddings` ⇄ canonical.

use serde::Serialize;
use serde_json::{json, Value};

use crate::canonical::{EmbedRequest, EmbedResponse, TranslateError};
use crate::embed::{opt_str, opt_u32, parse, texts, to_bytes, vector};
use crate::json::bad;

pub fn decode_ollama_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    Ok(EmbedRequest {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        inputs: texts(v.get("input"), "input")?,
        dimensions: opt_u32(v.get("dimensions"), "dimensions")?,
    })
}

pub fn encode_ollama_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    if req.inputs.is_empty() {
        return Err(bad("input", "must not be empty"));
    }
    let mut body = json!({ "model": req.model, "input": req.inputs });
    if let (Some(d), Some(m)) = (req.dimensions, body.as_object_mut()) {
        m.insert("dimensions".to_string(), json!(d));
    }
    Ok(to_bytes(&body))
}

pub fn decode_ollama_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(list)) = v.get("embeddings") else {
        return Err(bad("embeddings", "expected an array"));
    };
    Ok(EmbedResponse {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        vectors: list
            .iter()
            .enumerate()
            .map(|(i, e)| vector(e, &format!("embeddings[{i}]")))
            .collect::<Result<_, _>>()?,
        input_tokens: v
            .get("prompt_eval_count")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

#[derive(Serialize)]
struct OllamaEmbedResponse<'a> {
    model: &'a str,
    embeddings: &'a [Vec<f32>],
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u64,
}

pub fn encode_ollama_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&OllamaEmbedResponse {
        model: &resp.model,
        embeddings: &resp.vectors,
        total_duration: 0,
        load_duration: 0,
        prompt_eval_count: resp.input_tokens,
    })
}

pub fn decode_ollama_legacy_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    let prompt =
        opt_str(&v, "prompt", "prompt")?.ok_or_else(|| bad("prompt", "missing required field"))?;
    Ok(EmbedRequest {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        inputs: vec![prompt.to_string()],
        dimensions: None,
    })
}

pub fn encode_ollama_legacy_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    let [prompt] = req.inputs.as_slice() else {
        return Err(bad(
            "input",
            "/api/embeddings takes exactly one prompt; use /api/embed for several",
        ));
    };
    if req.dimensions.is_some() {
        return Err(bad("dimensions", "/api/embeddings cannot set dimensions"));
    }
    Ok(to_bytes(&json!({ "model": req.model, "prompt": prompt })))
}

pub fn decode_ollama_legacy_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let e = v
        .get("embedding")
        .ok_or_else(|| bad("embedding", "missing required field"))?;
    Ok(EmbedResponse {
        model: String::new(),
        vectors: vec![vector(e, "embedding")?],
        input_tokens: 0,
    })
}

#[derive(Serialize)]
struct OllamaLegacyResponse<'a> {
    embedding: &'a [f32],
}

/// `{"embedding":[…]}` of the first vector (the call embeds one prompt).
pub fn encode_ollama_legacy_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&OllamaLegacyResponse {
        embedding: resp.vectors.first().map(Vec::as_slice).unwrap_or(&[]),
    })
}

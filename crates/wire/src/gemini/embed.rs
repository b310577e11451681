//! Gemini `:embedContent` and `:batchEmbedContents` ⇄ canonical.

use serde::Serialize;
use serde_json::{json, Value};

use crate::canonical::{EmbedRequest, EmbedResponse, TranslateError};
use crate::embed::{field, opt_str, opt_u32, parse, to_bytes, vector};
use crate::json::bad;

fn gemini_model(v: &Value, path: &str) -> Result<String, TranslateError> {
    let m = opt_str(v, "model", path)?.unwrap_or_default();
    Ok(m.strip_prefix("models/").unwrap_or(m).to_string())
}

/// One `EmbedContentRequest` → (model, text, dimensions).
fn gemini_one(v: &Value, path: &str) -> Result<(String, String, Option<u32>), TranslateError> {
    if !v.is_object() {
        return Err(bad(path, "expected a JSON object"));
    }
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let model = gemini_model(v, &at("model"))?;
    let content = field(v, "content", "content")
        .ok_or_else(|| bad(at("content"), "missing required field"))?;
    let parts = match content.get("parts") {
        Some(Value::Array(p)) => p,
        _ => return Err(bad(at("content.parts"), "expected an array")),
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p.get("text") {
            Some(Value::String(t)) => texts.push(t.as_str()),
            _ => {
                return Err(bad(
                    at(&format!("content.parts[{j}]")),
                    "only text parts can be embedded through another dialect",
                ))
            }
        }
    }
    let dims = opt_u32(
        field(v, "outputDimensionality", "output_dimensionality"),
        &at("outputDimensionality"),
    )?;
    Ok((model, texts.join("\n"), dims))
}

pub fn decode_gemini_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    let (model, text, dimensions) = gemini_one(&v, "")?;
    Ok(EmbedRequest {
        model,
        inputs: vec![text],
        dimensions,
    })
}

pub fn encode_gemini_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    let [text] = req.inputs.as_slice() else {
        return Err(bad(
            "input",
            ":embedContent takes exactly one input; use :batchEmbedContents for several",
        ));
    };
    let mut body = json!({ "content": { "parts": [{ "text": text }] } });
    if let (Some(d), Some(m)) = (req.dimensions, body.as_object_mut()) {
        m.insert("outputDimensionality".to_string(), json!(d));
    }
    Ok(to_bytes(&body))
}

pub fn decode_gemini_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let values = v
        .get("embedding")
        .and_then(|e| e.get("values"))
        .ok_or_else(|| bad("embedding.values", "missing required field"))?;
    Ok(EmbedResponse {
        model: String::new(),
        vectors: vec![vector(values, "embedding.values")?],
        input_tokens: 0,
    })
}

#[derive(Serialize)]
struct GeminiValues<'a> {
    values: &'a [f32],
}

#[derive(Serialize)]
struct GeminiEmbedResponse<'a> {
    embedding: GeminiValues<'a>,
}

pub fn encode_gemini_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&GeminiEmbedResponse {
        embedding: GeminiValues {
            values: resp.vectors.first().map(Vec::as_slice).unwrap_or(&[]),
        },
    })
}

pub fn decode_gemini_batch_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(requests)) = v.get("requests") else {
        return Err(bad("requests", "expected an array"));
    };
    if requests.is_empty() {
        return Err(bad("requests", "must not be empty"));
    }
    let mut req = EmbedRequest::default();
    for (i, r) in requests.iter().enumerate() {
        let path = format!("requests[{i}]");
        let (model, text, dims) = gemini_one(r, &path)?;
        if i == 0 {
            req.model = model;
            req.dimensions = dims;
        } else if dims != req.dimensions {
            return Err(bad(
                format!("{path}.outputDimensionality"),
                "every request of a batch must ask for the same dimensions",
            ));
        } else if !model.is_empty() && !req.model.is_empty() && model != req.model {
            return Err(bad(
                format!("{path}.model"),
                "every request of a batch must name the same model",
            ));
        }
        req.inputs.push(text);
    }
    Ok(req)
}

pub fn encode_gemini_batch_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    if req.inputs.is_empty() {
        return Err(bad("input", "must not be empty"));
    }
    let model = format!("models/{}", req.model);
    let requests: Vec<Value> = req
        .inputs
        .iter()
        .map(|text| {
            let mut r = json!({ "model": model, "content": { "parts": [{ "text": text }] } });
            if let (Some(d), Some(m)) = (req.dimensions, r.as_object_mut()) {
                m.insert("outputDimensionality".to_string(), json!(d));
            }
            r
        })
        .collect();
    Ok(to_bytes(&json!({ "requests": requests })))
}

pub fn decode_gemini_batch_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(list)) = v.get("embeddings") else {
        return Err(bad("embeddings", "expected an array"));
    };
    // Vertex AI counts each input's tokens; the Gemini API may report `usageMetadata`.
    let counted: u64 = list
        .iter()
        .filter_map(|e| e.pointer("/statistics/token_count").and_then(Value::as_u64))
        .sum();
    let reported = v
        .pointer("/usageMetadata/promptTokenCount")
        .and_then(Value::as_u64);
    Ok(EmbedResponse {
        model: String::new(),
        input_tokens: reported.unwrap_or(counted),
        vectors: list
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let path = format!("embeddings[{i}].values");
                vector(
                    e.get("values")
                        .ok_or_else(|| bad(path.clone(), "missing required field"))?,
                    &path,
                )
            })
            .collect::<Result<_, _>>()?,
    })
}

#[derive(Serialize)]
struct GeminiBatchResponse<'a> {
    embeddings: Vec<GeminiValues<'a>>,
}

pub fn encode_gemini_batch_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&GeminiBatchResponse {
        embeddings: resp
            .vectors
            .iter()
            .map(|v| GeminiValues { values: v })
            .collect(),
    })
}

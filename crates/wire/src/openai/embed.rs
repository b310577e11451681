//! OpenAI `/v1/embeddings` ⇄ canonical, vectors as floats or base64.

use serde::Serialize;
use serde_json::{json, Value};

use crate::canonical::{EmbedRequest, EmbedResponse, TranslateError};
use crate::embed::{opt_str, opt_u32, parse, texts, to_bytes, vector};
use crate::json::{bad, base64_decode, base64_encode};

/// OpenAI's `encoding_format`: how the client wants the vectors written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian `f32`s, base64-encoded.
    Base64,
}

pub(crate) fn floats_to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64_encode(&bytes)
}

pub(crate) fn base64_to_floats(text: &str, path: &str) -> Result<Vec<f32>, TranslateError> {
    let bytes = base64_decode(text).ok_or_else(|| bad(path, "invalid base64"))?;
    if bytes.len() % 4 != 0 {
        return Err(bad(path, "base64 data is not a whole number of f32s"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// OpenAI request → canonical, with the `encoding_format` the answer must use.
pub fn decode_openai_request(
    body: &[u8],
) -> Result<(EmbedRequest, EncodingFormat), TranslateError> {
    let v = parse(body)?;
    let format = match opt_str(&v, "encoding_format", "encoding_format")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(bad(
                "encoding_format",
                format!("unknown encoding format `{other}` (expected float or base64)"),
            ))
        }
    };
    let req = EmbedRequest {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        inputs: texts(v.get("input"), "input")?,
        dimensions: opt_u32(v.get("dimensions"), "dimensions")?,
    };
    Ok((req, format))
}

pub fn encode_openai_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    if req.inputs.is_empty() {
        return Err(bad("input", "must not be empty"));
    }
    let mut body = json!({
        "model": req.model,
        "input": req.inputs,
        "encoding_format": "float",
    });
    if let (Some(d), Some(m)) = (req.dimensions, body.as_object_mut()) {
        m.insert("dimensions".to_string(), json!(d));
    }
    Ok(to_bytes(&body))
}

pub fn decode_openai_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(data)) = v.get("data") else {
        return Err(bad("data", "expected an array"));
    };
    let mut indexed: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let path = format!("data[{i}].embedding");
        let vec = match d.get("embedding") {
            Some(Value::String(s)) => base64_to_floats(s, &path)?,
            Some(e) => vector(e, &path)?,
            None => return Err(bad(path, "missing required field")),
        };
        let index = d.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        indexed.push((index, vec));
    }
    indexed.sort_by_key(|(i, _)| *i);
    Ok(EmbedResponse {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        vectors: indexed.into_iter().map(|(_, v)| v).collect(),
        input_tokens: v
            .get("usage")
            .and_then(|u| u.get("prompt_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

#[derive(Serialize)]
#[serde(untagged)]
enum OpenAiVector<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct OpenAiDatum<'a> {
    object: &'static str,
    index: usize,
    embedding: OpenAiVector<'a>,
}

#[derive(Serialize)]
struct OpenAiUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct OpenAiEmbedResponse<'a> {
    object: &'static str,
    data: Vec<OpenAiDatum<'a>>,
    model: &'a str,
    usage: OpenAiUsage,
}

pub fn encode_openai_response(resp: &EmbedResponse, format: EncodingFormat) -> Vec<u8> {
    let data = resp
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| OpenAiDatum {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => OpenAiVector::Float(v),
                EncodingFormat::Base64 => OpenAiVector::Base64(floats_to_base64(v)),
            },
        })
        .collect();
    to_bytes(&OpenAiEmbedResponse {
        object: "list",
        data,
        model: &resp.model,
        usage: OpenAiUsage {
            prompt_tokens: resp.input_tokens,
            total_tokens: resp.input_tokens,
        },
    })
}

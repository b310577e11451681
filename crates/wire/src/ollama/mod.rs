//! Ollama's native `/api/chat` and `/api/generate` (0.12) ⇄ canonical, NDJSON streams included.
//!
//! Decisions worth knowing:
//! - `stream` defaults to true when absent, as in Ollama; Ollama always reports usage, so a decoded
//!   request asks for it (`include_usage`).
//! - Ignored on decode: `keep_alive` and `think` (they steer the Ollama runner, not the answer's
//!   content), and options canonical has no field for (`num_ctx`, `repeat_penalty`, `min_p`, …):
//!   Ollama itself only warns about options it does not use. `logprobs: true`, and on `/api/generate`
//!   a non-empty `suffix`, `template` or `context` or `raw: true`, cannot be translated and are rejected.
//! - Encoded from other dialects' requests: `think`, `keep_alive` and runner `options` (`num_ctx`, …)
//!   from `canonical::OllamaExtras`; the standard fields win over the same `options` member.
//! - `encode_request` writes an `/api/generate` body when the request is a `legacy_prompt` (it must be
//!   one user message) and an `/api/chat` body otherwise; the caller picks the path the same way.
//! - Tool-call ids are optional in Ollama: decoded requests keep a call's `id` when it has one, else
//!   number them `call_0`, `call_1`, … in order; a `tool` message answers the call its
//!   `tool_call_id` names, else the earliest unanswered call named by its `tool_name`. Decoded answers
//!   use `call_<token>_<n>` when the node gives no id. Answers to Ollama clients carry each call's
//!   `id`; requests to a node do not (it matches results by name), and encoded tool messages carry
//!   `tool_name` when it is known.
//! - A system message after the first other message keeps its place (canonical `Role::System`);
//!   earlier ones form the system prompt. A failed tool's result (`Message::is_error`) is sent with
//!   its text marked by [`crate::openai::TOOL_ERROR_MARK`]; tools' `strict` has no Ollama field.
//! - `tool_choice`: `auto` is Ollama's only behaviour and `none` is sent as no tools; `required` or a
//!   named tool cannot be expressed and is rejected.
//! - Durations: a stream encoder reports the wall time it saw; a whole answer has no timing, so its
//!   durations are 0.
//! - A streamed tool call is written whole in one line's `message.tool_calls` once the next different
//!   event (or the end) shows its arguments are complete; text is never held. The `done` line waits
//!   for usage (or the end) so that it carries the counts.

pub mod embed;
mod request_decode;
mod request_encode;
mod response;
mod stream_decode;
mod stream_encode;

#[cfg(test)]
mod native_tests;
#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, Op, ResponseFormat, Role, StreamDecoder, StreamEncoder,
    TranslateError,
};
use crate::ids::{fresh_token, now_secs};
use crate::json::{arguments_value, bad, Fields};
use crate::stream::decoder::Framed;
use crate::time::parse_rfc3339;

use request_decode::{
    decode_format, decode_generate, decode_messages, decode_options, decode_tools,
};
use request_encode::{
    encode_extras, encode_messages, encode_options, encode_tools, split_content, tool_call_json,
};
use response::{
    answer_of, base_line, decode_usage, done_fields, error_of, map_done_reason, Timing,
};
use stream_decode::OllamaStreamDecoder;
use stream_encode::OllamaStreamEncoder;

/// The Ollama codec.
pub struct OllamaCodec;

impl Codec for OllamaCodec {
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("request body is not valid JSON: {e}")))?;
        let o = Fields::of(&v, "")?;
        if o.bool("logprobs")? == Some(true) {
            return Err(bad("logprobs", "log probabilities cannot be translated"));
        }
        let mut req = ChatRequest {
            model: o.str("model")?.unwrap_or_default().to_string(),
            stream: o.bool("stream")?.unwrap_or(true),
            include_usage: true,
            response_format: decode_format(&o)?,
            ..ChatRequest::default()
        };
        decode_options(&o, &mut req)?;
        match op {
            Op::Chat => {
                decode_messages(&o, &mut req)?;
                decode_tools(&o, &mut req)?;
            }
            Op::Completion => decode_generate(&o, &mut req)?,
        }
        Ok(req)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        let req = &*req.without_signatures();
        let mut body = Map::new();
        body.insert("model".to_string(), json!(req.model));
        if req.legacy_prompt {
            let [m] = req.messages.as_slice() else {
                return Err(bad(
                    "messages",
                    "an /api/generate prompt must be exactly one user message",
                ));
            };
            if m.role != Role::User || !m.tool_calls.is_empty() {
                return Err(bad(
                    "messages[0]",
                    "an /api/generate prompt must be a user message",
                ));
            }
            let (text, images) = split_content(m, 0)?;
            body.insert("prompt".to_string(), json!(text));
            if let Some(s) = &req.system {
                body.insert("system".to_string(), json!(s));
            }
            if !images.is_empty() {
                body.insert("images".to_string(), Value::Array(images));
            }
        } else {
            body.insert("messages".to_string(), Value::Array(encode_messages(req)?));
            if let Some(tools) = encode_tools(req)? {
                body.insert("tools".to_string(), tools);
            }
        }
        match &req.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => {
                body.insert("format".to_string(), json!("json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                body.insert("format".to_string(), schema.clone());
            }
        }
        let options = encode_options(req);
        if !options.is_empty() {
            body.insert("options".to_string(), Value::Object(options));
        }
        encode_extras(req, &mut body);
        body.insert("stream".to_string(), json!(req.stream));
        serde_json::to_vec(&Value::Object(body)).map_err(|e| bad("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("Ollama answer is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
            return Err(bad("", format!("Ollama error: {msg}")));
        }
        if !v.is_object() {
            return Err(bad("", "Ollama answer is not a JSON object"));
        }
        let token = fresh_token();
        let (text, tool_calls) = answer_of(&v, &token, 0);
        let finish = map_done_reason(
            v.get("done_reason").and_then(Value::as_str),
            !tool_calls.is_empty(),
        );
        Ok(ChatResponse {
            id: format!("ollama-{token}"),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            created: v
                .get("created_at")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
                .unwrap_or_else(now_secs),
            text,
            tool_calls,
            finish,
            usage: decode_usage(&v),
        })
    }

    fn encode_response(&self, op: Op, resp: &ChatResponse) -> Vec<u8> {
        let mut line = base_line(&resp.model);
        match op {
            Op::Chat => {
                let mut msg = Map::new();
                msg.insert("role".to_string(), json!("assistant"));
                msg.insert("content".to_string(), json!(resp.text));
                if !resp.tool_calls.is_empty() {
                    let calls = resp
                        .tool_calls
                        .iter()
                        .map(|c| {
                            tool_call_json(Some(&c.id), &c.name, arguments_value(&c.arguments))
                        })
                        .collect();
                    msg.insert("tool_calls".to_string(), Value::Array(calls));
                }
                line.insert("message".to_string(), Value::Object(msg));
            }
            Op::Completion => {
                line.insert("response".to_string(), json!(resp.text));
                line.insert("context".to_string(), json!([]));
            }
        }
        done_fields(&mut line, &resp.finish, resp.usage, Timing::default());
        serde_json::to_vec(&Value::Object(line)).unwrap_or_default()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Framed::<OllamaStreamDecoder>::default())
    }

    fn stream_encoder(&self, op: Op) -> Box<dyn StreamEncoder> {
        Box::new(OllamaStreamEncoder::new(op))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

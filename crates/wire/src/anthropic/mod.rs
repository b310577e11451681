//! Anthropic Messages (API version 2023-06-01) ⇄ the canonical form: requests, answers and SSE streams.
//!
//! Decoding a client body refuses, naming the field, what the canonical form cannot carry:
//! `mcp_servers`, `container`, `context_management`, `output_config` keys other than
//! `format`, `tool_choice.disable_parallel_tool_use`, server tools (a `tools[i].type` other
//! than `custom`), and content blocks other than text, image (base64 or URL), tool_use and
//! tool_result. Structured output (`output_config.format`, or the older `output_format`)
//! becomes the canonical JSON-schema response format; a tool result's `is_error` and a tool's
//! `strict` are carried. Ignored as harmless: `cache_control` anywhere, `service_tier`,
//! metadata other than `user_id`, citations, and `thinking` / `redacted_thinking` blocks in
//! past assistant turns. Extended `thinking` is read as the canonical `think`, which only
//! Ollama's native API carries (other encoders refuse it).
//!
//! Encoding an upstream request writes `max_tokens` as the model's maximum output
//! ([`max_output_tokens`]; the gateway fills in configured overrides) when the canonical
//! request has none, lifts tool results into user turns, writes a mid-conversation system
//! message as a user turn ([`crate::canonical::system_turn_text`]), merges consecutive
//! same-role turns (tool results first, as Anthropic requires), writes a JSON-schema format as
//! `output_config.format` and refuses the schema-less JSON mode, `seed` and non-zero
//! frequency / presence penalties.

mod limits;
mod request_decode;
mod request_encode;
mod response;
mod stream_decode;
mod stream_encode;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, Op, StreamDecoder, StreamEncoder, TranslateError,
};
use crate::json::parse_object;
use crate::stream::decoder::Framed;

use request_decode::decode_request;
use request_encode::encode_request;
use response::{decode_response, encode_response, error_of};
use stream_decode::AnthropicStreamDecoder;
use stream_encode::AnthropicStreamEncoder;

/// The Anthropic codec (`/v1/messages`).
pub struct AnthropicCodec;

pub use limits::{max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS};

impl Codec for AnthropicCodec {
    fn decode_request(&self, _op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        decode_request(&parse_object(body)?)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        req.refuse_ollama_extras("Anthropic")?;
        let req = &*req.without_signatures();
        let v = encode_request(req)?;
        serde_json::to_vec(&v).map_err(|e| TranslateError::new("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        decode_response(body)
    }

    /// Anthropic has one answer shape: `op` is ignored.
    fn encode_response(&self, _op: Op, resp: &ChatResponse) -> Vec<u8> {
        serde_json::to_vec(&encode_response(resp)).unwrap_or_default()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Framed::<AnthropicStreamDecoder>::default())
    }

    fn stream_encoder(&self, _op: Op) -> Box<dyn StreamEncoder> {
        Box::new(AnthropicStreamEncoder::default())
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

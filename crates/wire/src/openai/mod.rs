//! OpenAI chat completions and legacy completions ⇄ the canonical form: requests, answers and SSE streams.
//!
//! Decoding a client body refuses, naming the field, what the canonical form cannot carry:
//! `n` ≠ 1, `logprobs: true`, `top_logprobs`, `audio`, `modalities` other than `["text"]`, a
//! non-empty `logit_bias`, `parallel_tool_calls: false`, the deprecated `functions` /
//! `function_call` and the `function` role, `prediction`, `web_search_options`,
//! `verbosity`, audio / file content parts, non-function tools and (legacy
//! completions) `echo`, `suffix`, `best_of` > 1 and token-array prompts.
//!
//! Ignored as harmless: `store`, `metadata` (OpenAI's own stored-completion tags; no other
//! dialect has a place for them), `service_tier`, `prompt_cache_key`, `safety_identifier`,
//! stream options other than `include_usage`, a message's `name`, an image part's `detail`, and
//! any other top-level field not listed above. A tool's `strict` is carried; `top_k` (a vLLM
//! extension) is read into the canonical form; so are `reasoning_effort` and what an SDK's
//! `extra_body` sends for an Ollama node (`think`, `keep_alive`, `options`), which only
//! Ollama's native API carries (`canonical::OllamaExtras`). System and developer messages
//! before the first other message form the system prompt; later ones keep their place
//! ([`Role::System`]).
//!
//! Encoding an upstream request writes a chat completions body with the limit as
//! `max_completion_tokens` (what reasoning models require), or as `max_tokens` when the
//! gateway sets [`ChatRequest::legacy_max_tokens`] for an upstream configured so; when
//! streaming it asks for usage (`stream_options.include_usage`) so the gateway can account for
//! it whatever the client asked. A failed tool's result (`Message::is_error`) has no flag here:
//! its text starts with [`TOOL_ERROR_MARK`].
//!
//! [`Role::System`]: crate::canonical::Role::System
//! [`ChatRequest::legacy_max_tokens`]: crate::canonical::ChatRequest::legacy_max_tokens

pub mod embed;
mod request_decode;
mod request_encode;
mod response;
pub mod responses;
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

use request_decode::{decode_chat, decode_completion};
use request_encode::encode_chat_request;
pub use request_encode::TOOL_ERROR_MARK;
use response::{decode_chat_response, encode_chat_response, error_of};
use stream_decode::OpenAiStreamDecoder;
use stream_encode::OpenAiStreamEncoder;

/// The OpenAI codec (chat completions; legacy completions with `Op::Completion`).
pub struct OpenAiCodec;

impl OpenAiCodec {
    /// A stream encoder that writes the usage-only chunk (`"choices":[]`) only when
    /// `include_usage` is true — pass the client's `stream_options.include_usage`
    /// (`ChatRequest::include_usage`). `Codec::stream_encoder` is this with `include_usage = true`.
    pub fn stream_encoder_with(&self, op: Op, include_usage: bool) -> Box<dyn StreamEncoder> {
        Box::new(OpenAiStreamEncoder::new(op, include_usage))
    }
}

impl Codec for OpenAiCodec {
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        let o = parse_object(body)?;
        match op {
            Op::Chat => decode_chat(&o),
            Op::Completion => decode_completion(&o),
        }
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        req.refuse_ollama_extras("OpenAI")?;
        let req = &*req.without_signatures();
        let v = encode_chat_request(req)?;
        serde_json::to_vec(&v).map_err(|e| TranslateError::new("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        decode_chat_response(body)
    }

    fn encode_response(&self, op: Op, resp: &ChatResponse) -> Vec<u8> {
        serde_json::to_vec(&encode_chat_response(op, resp)).unwrap_or_default()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Framed::<OpenAiStreamDecoder>::default())
    }

    /// Writes the usage chunk whenever a `StreamEvent::Usage` arrives; use
    /// [`OpenAiCodec::stream_encoder_with`] to honour a client that did not ask for it.
    fn stream_encoder(&self, op: Op) -> Box<dyn StreamEncoder> {
        self.stream_encoder_with(op, true)
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

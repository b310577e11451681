//! Codecs between each dialect and the canonical form (`crate::canonical`).

pub mod anthropic;
pub mod embed;
pub mod framing;
pub mod gemini;
mod hold;
pub mod json_array;
pub mod ollama;
pub mod openai;
pub mod responses;

use crate::canonical::Codec;
use crate::Dialect;

/// The codec of a dialect.
pub fn codec(dialect: Dialect) -> &'static dyn Codec {
    match dialect {
        Dialect::OpenAi => &openai::OpenAiCodec,
        Dialect::Anthropic => &anthropic::AnthropicCodec,
        Dialect::Gemini => &gemini::GeminiCodec,
        Dialect::Ollama => &ollama::OllamaCodec,
    }
}

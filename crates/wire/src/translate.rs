//! The codec of each dialect (`codec`), and the paths the gateway has always used for the dialect modules.

pub use crate::embed;
pub use crate::openai::responses;
pub use crate::stream::{framing, json_array};
pub use crate::{anthropic, gemini, ollama, openai};

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

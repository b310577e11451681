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

/// An encoder's refusal in the words of the client that sent the request: encoders name
/// canonical fields the way OpenAI does (`response_format`, `seed`, `top_k`, …), and an
/// Ollama client that sent `format` should read `format`. Top-level fields only; message
/// paths are left as they are.
pub fn in_client_words(
    dialect: Dialect,
    e: &crate::canonical::TranslateError,
) -> crate::canonical::TranslateError {
    let field = client_field(dialect, &e.field).unwrap_or(&e.field);
    crate::canonical::TranslateError::new(field, e.message.clone())
}

fn client_field(dialect: Dialect, field: &str) -> Option<&'static str> {
    Some(match (dialect, field) {
        (Dialect::Anthropic, "response_format") => "output_config.format",
        (Dialect::Anthropic, "think") => "thinking",
        (Dialect::Gemini, "response_format") => "generationConfig.responseMimeType",
        (Dialect::Gemini, "seed") => "generationConfig.seed",
        (Dialect::Gemini, "frequency_penalty") => "generationConfig.frequencyPenalty",
        (Dialect::Gemini, "presence_penalty") => "generationConfig.presencePenalty",
        (Dialect::Gemini, "top_k") => "generationConfig.topK",
        (Dialect::Gemini, "tool_choice") => "toolConfig.functionCallingConfig",
        (Dialect::Ollama, "response_format") => "format",
        (Dialect::Ollama, "seed") => "options.seed",
        (Dialect::Ollama, "frequency_penalty") => "options.frequency_penalty",
        (Dialect::Ollama, "presence_penalty") => "options.presence_penalty",
        (Dialect::Ollama, "top_k") => "options.top_k",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::TranslateError;

    #[test]
    fn refusals_name_the_clients_own_field() {
        let e = TranslateError::new("response_format", "no schema-less JSON mode");
        assert_eq!(in_client_words(Dialect::Ollama, &e).field, "format");
        assert_eq!(
            in_client_words(Dialect::Gemini, &e).field,
            "generationConfig.responseMimeType"
        );
        assert_eq!(
            in_client_words(Dialect::OpenAi, &e).field,
            "response_format"
        );
        let e = TranslateError::new("messages[2].content[0]", "x");
        assert_eq!(
            in_client_words(Dialect::Ollama, &e).field,
            "messages[2].content[0]"
        );
    }
}

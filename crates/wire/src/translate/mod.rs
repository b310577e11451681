//! Codecs between each dialect and the canonical form (`crate::canonical`).

pub mod anthropic;
pub mod embed;
pub mod framing;
pub mod gemini;
pub mod ollama;
pub mod openai;

// `codec(dialect) -> &'static dyn Codec` is added once every codec is in (see lead).

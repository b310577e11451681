//! Gemini ⇄ canonical. (being written)

/// The Gemini codec.
pub struct GeminiCodec;

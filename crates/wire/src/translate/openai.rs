//! OpenAI chat completions (and legacy completions) ⇄ canonical. (being written)

/// The OpenAI codec.
pub struct OpenAiCodec;

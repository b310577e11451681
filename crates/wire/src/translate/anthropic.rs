//! Anthropic ⇄ canonical. (being written)

/// The Anthropic codec.
pub struct AnthropicCodec;

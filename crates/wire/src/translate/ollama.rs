//! Ollama ⇄ canonical. (being written)

/// The Ollama codec.
pub struct OllamaCodec;

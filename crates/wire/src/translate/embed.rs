//! Embeddings ⇄ canonical for OpenAI, Ollama and Gemini. (being written)

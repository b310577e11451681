//! The calls clients make, per dialect: what each one is, which upstreams can take it, and where it goes when no translation is needed.

use crate::egress;
use crate::upstream::Upstream;
use llmux_config::UpstreamKind;
use llmux_wire::canonical::{Codec, Op};
use llmux_wire::Dialect;

/// A model call of one ingress dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
    OllamaShow,
    AnthropicMessages,
    GeminiGenerate,
    GeminiStream,
    GeminiEmbed,
    GeminiBatchEmbed,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
    /// Anthropic's `/v1/messages/count_tokens`, passed to an Anthropic upstream.
    AnthropicCountTokens,
}

impl Endpoint {
    pub const ALL: [Endpoint; 15] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::OllamaChat,
        Endpoint::OllamaGenerate,
        Endpoint::OllamaEmbed,
        Endpoint::OllamaEmbeddings,
        Endpoint::OllamaShow,
        Endpoint::AnthropicMessages,
        Endpoint::GeminiGenerate,
        Endpoint::GeminiStream,
        Endpoint::GeminiEmbed,
        Endpoint::GeminiBatchEmbed,
        Endpoint::Responses,
        Endpoint::AnthropicCountTokens,
    ];

    /// Position in [`Endpoint::ALL`], for per-endpoint counters.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses => Dialect::OpenAi,
            Endpoint::OllamaChat
            | Endpoint::OllamaGenerate
            | Endpoint::OllamaEmbed
            | Endpoint::OllamaEmbeddings
            | Endpoint::OllamaShow => Dialect::Ollama,
            Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => Dialect::Anthropic,
            Endpoint::GeminiGenerate
            | Endpoint::GeminiStream
            | Endpoint::GeminiEmbed
            | Endpoint::GeminiBatchEmbed => Dialect::Gemini,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::OllamaChat => "api.chat",
            Endpoint::OllamaGenerate => "api.generate",
            Endpoint::OllamaEmbed => "api.embed",
            Endpoint::OllamaEmbeddings => "api.embeddings",
            Endpoint::OllamaShow => "api.show",
            Endpoint::AnthropicMessages => "messages",
            Endpoint::GeminiGenerate => "generateContent",
            Endpoint::GeminiStream => "streamGenerateContent",
            Endpoint::GeminiEmbed => "embedContent",
            Endpoint::GeminiBatchEmbed => "batchEmbedContents",
            Endpoint::Responses => "responses",
            Endpoint::AnthropicCountTokens => "messages.count_tokens",
        }
    }

    /// The codec a translated call's body is read with and its answer written in.
    pub fn codec(self) -> &'static dyn Codec {
        match self {
            Endpoint::Responses => &llmux_wire::translate::responses::ResponsesCodec,
            e => llmux_wire::translate::codec(e.dialect()),
        }
    }

    /// Whether the client's body goes to an upstream of `kind` as it is (model rewritten)
    /// rather than translated. The Responses API passes through only to OpenAI and Azure:
    /// OpenAI-compatible servers (Ollama's `/v1` among them) may lack it, so it is
    /// translated to chat completions for them.
    pub fn passes_through(self, kind: UpstreamKind) -> bool {
        match self {
            Endpoint::OllamaShow | Endpoint::AnthropicCountTokens => true,
            Endpoint::Responses => matches!(kind, UpstreamKind::Openai | UpstreamKind::Azure),
            e => egress::dialect_for(kind, e.dialect()) == e.dialect(),
        }
    }

    /// Whether the call generates (and so has tokens to count and a model to load).
    pub fn generates(self) -> bool {
        !matches!(self, Endpoint::OllamaShow | Endpoint::AnthropicCountTokens)
    }

    /// Chat-like calls, which translate through the canonical chat form.
    pub fn op(self) -> Option<Op> {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::OllamaChat
            | Endpoint::AnthropicMessages
            | Endpoint::GeminiGenerate
            | Endpoint::GeminiStream
            | Endpoint::Responses => Some(Op::Chat),
            Endpoint::Completions | Endpoint::OllamaGenerate => Some(Op::Completion),
            _ => None,
        }
    }

    pub fn is_embed(self) -> bool {
        matches!(
            self,
            Endpoint::Embeddings
                | Endpoint::OllamaEmbed
                | Endpoint::OllamaEmbeddings
                | Endpoint::GeminiEmbed
                | Endpoint::GeminiBatchEmbed
        )
    }

    /// Whether the client expects a stream when the body does not say (Ollama streams by default).
    pub fn streams_by_default(self) -> bool {
        matches!(
            self,
            Endpoint::OllamaChat | Endpoint::OllamaGenerate | Endpoint::GeminiStream
        )
    }

    /// Whether an upstream of `kind` can take this call, directly or translated.
    pub fn accepts(self, kind: UpstreamKind) -> bool {
        match self {
            // Model details exist only on Ollama nodes.
            Endpoint::OllamaShow => kind == UpstreamKind::Ollama,
            Endpoint::AnthropicCountTokens => kind == UpstreamKind::Anthropic,
            // Anthropic has no embeddings API.
            e if e.is_embed() => kind != UpstreamKind::Anthropic,
            _ => true,
        }
    }

    pub fn loads_model(self) -> bool {
        self.generates()
    }

    /// [`Endpoint::passthrough_url`], parsed, from the upstream's cache when the URL does not
    /// depend on the model.
    pub fn passthrough_parsed(
        self,
        up: &Upstream,
        model: &str,
        gemini_sse: bool,
    ) -> Result<http::Uri, String> {
        let per_model = self.dialect() == Dialect::Gemini || up.kind == UpstreamKind::Azure;
        let parse = || crate::egress::parse_uri(&self.passthrough_url(up, model, gemini_sse));
        match up.url_cache.get(self as usize) {
            Some(slot) if !per_model => {
                if let Some(url) = slot.get() {
                    return Ok(url.clone());
                }
                let url = parse()?;
                Ok(slot.get_or_init(|| url).clone())
            }
            _ => parse(),
        }
    }

    /// Where the call goes when the upstream speaks the client's dialect (body passed through).
    pub fn passthrough_url(self, up: &Upstream, model: &str, gemini_sse: bool) -> String {
        let api = |name: &str| format!("{}/api/{name}", up.base);
        let gemini = |action: &str| format!("{}/v1beta/models/{model}:{action}", up.base);
        match self {
            Endpoint::ChatCompletions => {
                egress::chat_url(up, Dialect::OpenAi, Op::Chat, model, false)
            }
            Endpoint::Completions => {
                egress::chat_url(up, Dialect::OpenAi, Op::Completion, model, false)
            }
            Endpoint::Embeddings => egress::embed_url(up, Dialect::OpenAi, model),
            Endpoint::OllamaChat => api("chat"),
            Endpoint::OllamaGenerate => api("generate"),
            Endpoint::OllamaEmbed => api("embed"),
            Endpoint::OllamaEmbeddings => api("embeddings"),
            Endpoint::OllamaShow => api("show"),
            Endpoint::AnthropicMessages => format!("{}/v1/messages", up.base),
            Endpoint::GeminiGenerate => gemini("generateContent"),
            Endpoint::GeminiStream if gemini_sse => gemini("streamGenerateContent?alt=sse"),
            Endpoint::GeminiStream => gemini("streamGenerateContent"),
            Endpoint::GeminiEmbed => gemini("embedContent"),
            Endpoint::GeminiBatchEmbed => gemini("batchEmbedContents"),
            // Azure's v1 API takes the deployment in the body's `model`, like OpenAI.
            Endpoint::Responses if up.kind == UpstreamKind::Azure => {
                format!("{}/openai/v1/responses", up.base)
            }
            Endpoint::Responses => format!("{}/responses", up.base),
            Endpoint::AnthropicCountTokens => format!("{}/v1/messages/count_tokens", up.base),
        }
    }
}

//! The request for one candidate: the client's bytes (model rewritten) when the upstream speaks
//! the client's dialect, else the canonical form encoded in the upstream's (chat or embeddings).

use super::{inline, Call, Endpoint};
use crate::egress;
use crate::routing::Candidate;
use bytes::Bytes;
use llmux_config::{MaxTokensField, UpstreamConfig, UpstreamKind};
use llmux_wire::canonical::{ChatRequest, Op, TranslateError};
use llmux_wire::translate::{self, embed};
use llmux_wire::Dialect;

/// A request ready to send to one candidate.
pub(super) struct Prepared {
    pub url: http::Uri,
    pub body: Bytes,
    /// `None`: passthrough. `Some`: the upstream's dialect, for translating the answer back.
    pub translated: Option<Translated>,
    /// llmux asked the upstream for the stream's usage the client did not ask for: the
    /// usage-only chunk is removed from what the client sees.
    pub added_usage: bool,
}

#[derive(Clone, Copy)]
pub(super) struct Translated {
    pub upstream: Dialect,
    pub op: Op,
    pub stream: bool,
    pub include_usage: bool,
    /// `Some` for embeddings (with the format an OpenAI client asked for).
    pub embed: Option<embed::EncodingFormat>,
}

/// Why a candidate could not be sent this call.
pub(super) enum Unprepared {
    /// The client's body is invalid in its own dialect: a 400, whatever the upstream.
    Invalid(TranslateError),
    /// The request uses something this upstream's dialect cannot express: try another.
    Inexpressible(TranslateError),
}

impl Call {
    /// The URL and body for `cand`.
    pub(super) async fn prepare(&mut self, cand: &Candidate) -> Result<Prepared, Unprepared> {
        let up = &cand.upstream;
        let mut upstream = egress::dialect_for(up.kind, self.dialect());
        if self.endpoint.passes_through(up.kind) && !self.leaves_ollama_v1(up.kind)? {
            return self.prepare_passthrough(cand);
        }
        if self.endpoint.is_embed() {
            return self.prepare_embed(cand, upstream);
        }
        let Some(op) = self.endpoint.op() else {
            return Err(Unprepared::Inexpressible(TranslateError::new(
                "",
                format!(
                    "{} calls cannot be translated to the {} API",
                    self.endpoint.as_str(),
                    upstream.as_str()
                ),
            )));
        };
        let canonical = self.canonical_request(op).map_err(Unprepared::Invalid)?;
        if up.kind == UpstreamKind::Ollama && egress::needs_ollama_native(canonical) {
            upstream = Dialect::Ollama;
        }
        if inline::takes_only_inline(up.kind, upstream) {
            self.inline_images().await.map_err(Unprepared::Invalid)?;
        }
        let canonical = self.canonical_request(op).map_err(Unprepared::Invalid)?;
        let mut req = canonical.clone();
        req.model = cand.model.clone();
        egress_limits(&mut req, &up.definition.0, upstream);
        let include_usage = req.include_usage;
        // Usage is needed to answer clients whose dialect always reports it (and for accounting).
        req.include_usage = true;
        let body = translate::codec(upstream)
            .encode_request(&req)
            .map_err(Unprepared::Inexpressible)?;
        // Translated bodies are chat bodies (a legacy prompt travels as one user message),
        // except Ollama's, whose encoder writes a legacy prompt as an `/api/generate` body.
        let url_op = if upstream == Dialect::Ollama && req.legacy_prompt {
            Op::Completion
        } else {
            Op::Chat
        };
        let url = egress::chat_url(up, upstream, url_op, &cand.model, req.stream);
        Ok(Prepared {
            url: parse_url(url)?,
            body: Bytes::from(body),
            translated: Some(Translated {
                upstream,
                op,
                stream: req.stream,
                include_usage,
                embed: None,
            }),
            added_usage: false,
        })
    }

    /// Whether an OpenAI call to an Ollama node must leave the byte passthrough to its `/v1`:
    /// it carries what only Ollama's native API can say (`top_k`, `options`, `keep_alive`,
    /// `think`), or images by URL, which Ollama cannot fetch (llmux inlines them). A body that
    /// names neither is never decoded here; one that names an Ollama option but cannot be
    /// decoded is the client's 400 (passed through, the option would be silently dropped).
    fn leaves_ollama_v1(&mut self, kind: UpstreamKind) -> Result<bool, Unprepared> {
        if kind != UpstreamKind::Ollama || self.dialect() != Dialect::OpenAi {
            return Ok(false);
        }
        let Some(op) = self.endpoint.op() else {
            return Ok(false);
        };
        let native = egress::names_ollama_native(&self.body);
        if !native && !memmem(&self.body, b"\"image_url\"") {
            return Ok(false);
        }
        match self.canonical_request(op) {
            Ok(r) => Ok(egress::needs_ollama_native(r) || !inline::fetchable_urls(r).is_empty()),
            Err(e) if native => Err(Unprepared::Invalid(e)),
            // Only images, in a body canonical cannot carry (say `logprobs`): passed through as
            // before, for Ollama to judge.
            Err(_) => Ok(false),
        }
    }

    /// The client's own bytes, with the candidate's model name.
    fn prepare_passthrough(&self, cand: &Candidate) -> Result<Prepared, Unprepared> {
        let up = &cand.upstream;
        let mut body = if self.model_in_path {
            self.body.clone()
        } else {
            self.peek.with_model(&self.body, &cand.model)
        };
        // A call id that carries a Gemini thought signature (an earlier turn went to Gemini)
        // means nothing here, and is longer than OpenAI allows (40 characters).
        if self.dialect() != Dialect::Gemini {
            if let Some(plain) = llmux_wire::gemini::strip_signatures_from_body(&body) {
                body = bytes::Bytes::from(plain);
            }
        }
        // A stream's tokens come from the upstream's own count, not an estimate: ask for it
        // when the client did not (the extra usage chunk is stripped on the way back).
        let mut added_usage = false;
        if matches!(
            self.endpoint,
            Endpoint::ChatCompletions | Endpoint::Completions
        ) && self.peek.stream == Some(true)
            && !self.peek.include_usage
            && egress::reports_stream_usage(up.kind)
        {
            if let Some(b) = egress::with_include_usage(&body) {
                body = b;
                added_usage = true;
            }
        }
        let url = self
            .endpoint
            .passthrough_parsed(up, &cand.model, self.gemini_sse)
            .map_err(|e| Unprepared::Inexpressible(TranslateError::new("", e)))?;
        Ok(Prepared {
            url,
            body,
            translated: None,
            added_usage,
        })
    }

    /// Embeddings between dialects: decoded from the client's call, encoded for the upstream's.
    fn prepare_embed(&self, cand: &Candidate, upstream: Dialect) -> Result<Prepared, Unprepared> {
        let body = &self.body[..];
        let (mut req, format) = match self.endpoint {
            Endpoint::Embeddings => embed::decode_openai_request(body),
            Endpoint::OllamaEmbed => {
                embed::decode_ollama_request(body).map(|r| (r, Default::default()))
            }
            Endpoint::OllamaEmbeddings => {
                embed::decode_ollama_legacy_request(body).map(|r| (r, Default::default()))
            }
            Endpoint::GeminiEmbed => {
                embed::decode_gemini_request(body).map(|r| (r, Default::default()))
            }
            _ => embed::decode_gemini_batch_request(body).map(|r| (r, Default::default())),
        }
        .map_err(Unprepared::Invalid)?;
        req.model = cand.model.clone();
        let encoded = match upstream {
            Dialect::OpenAi => embed::encode_openai_request(&req),
            Dialect::Ollama => embed::encode_ollama_request(&req),
            Dialect::Gemini => embed::encode_gemini_batch_request(&req),
            Dialect::Anthropic => Err(TranslateError::new("", "Anthropic has no embeddings API")),
        }
        .map_err(Unprepared::Inexpressible)?;
        Ok(Prepared {
            url: parse_url(egress::embed_url(&cand.upstream, upstream, &cand.model))?,
            body: Bytes::from(encoded),
            translated: Some(Translated {
                upstream,
                op: Op::Chat,
                stream: false,
                include_usage: false,
                embed: Some(format),
            }),
            added_usage: false,
        })
    }

    pub(super) fn canonical_request(&mut self, op: Op) -> Result<&ChatRequest, TranslateError> {
        if self.canonical.is_none() {
            let codec = self.endpoint.codec();
            let decoded = codec.decode_request(op, &self.body).map(|mut r| {
                if self.model_in_path {
                    r.model = self.peek.model.clone().unwrap_or_default();
                }
                if self.endpoint == Endpoint::GeminiStream {
                    r.stream = true;
                }
                r
            });
            self.canonical = Some(decoded);
        }
        match &self.canonical {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e.clone()),
            None => Err(TranslateError::new("", "request could not be decoded")),
        }
    }
}

/// The upstream's own rules for the output limit: the field an OpenAI-style API takes it in,
/// and for Anthropic (which requires one) the configured `max_output_tokens` of the model when
/// the client set none (the wire crate falls back to its table of Claude models).
fn egress_limits(req: &mut ChatRequest, def: &UpstreamConfig, upstream: Dialect) {
    req.legacy_max_tokens = def.max_tokens_field == MaxTokensField::MaxTokens;
    if upstream == Dialect::Anthropic && req.max_tokens.is_none() {
        req.max_tokens = def.max_output_tokens.get(&req.model).copied();
    }
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn parse_url(text: String) -> Result<http::Uri, Unprepared> {
    egress::parse_uri(&text)
        .map_err(|message| Unprepared::Inexpressible(TranslateError::new("", message)))
}

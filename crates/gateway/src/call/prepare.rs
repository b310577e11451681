//! The request for one candidate: the client's bytes (model rewritten) when the upstream speaks
//! the client's dialect, else the canonical form encoded in the upstream's (chat or embeddings).

use super::{Call, Endpoint};
use crate::egress;
use crate::routing::Candidate;
use bytes::Bytes;
use llmux_wire::canonical::{ChatRequest, Op, TranslateError};
use llmux_wire::translate::{self, embed};
use llmux_wire::Dialect;

/// A request ready to send to one candidate.
pub(super) struct Prepared {
    pub url: reqwest::Url,
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
    pub(super) fn prepare(&mut self, cand: &Candidate) -> Result<Prepared, Unprepared> {
        let up = &cand.upstream;
        let upstream = egress::dialect_for(up.kind, self.dialect());
        if self.endpoint.passes_through(up.kind) {
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
        let mut req = canonical.clone();
        req.model = cand.model.clone();
        let include_usage = req.include_usage;
        // Usage is needed to answer clients whose dialect always reports it (and for accounting).
        req.include_usage = true;
        let body = translate::codec(upstream)
            .encode_request(&req)
            .map_err(Unprepared::Inexpressible)?;
        // Translated bodies are always chat bodies (a legacy prompt travels as one user message).
        let url = egress::chat_url(up, upstream, Op::Chat, &cand.model, req.stream);
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

    /// The client's own bytes, with the candidate's model name.
    fn prepare_passthrough(&self, cand: &Candidate) -> Result<Prepared, Unprepared> {
        let up = &cand.upstream;
        let mut body = if self.model_in_path {
            self.body.clone()
        } else {
            self.peek.with_model(&self.body, &cand.model)
        };
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

fn parse_url(text: String) -> Result<reqwest::Url, Unprepared> {
    reqwest::Url::parse(&text).map_err(|e| {
        Unprepared::Inexpressible(TranslateError::new(
            "",
            format!("bad upstream URL {text}: {e}"),
        ))
    })
}

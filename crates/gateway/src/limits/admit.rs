//! Per-key and per-model admission, once the model and body are known: the key's request and
//! token rates, all-or-nothing, and the token estimate that is reconciled when the call settles.

use super::{per_minute, rejection, BackendDown, Check, Decision, Layer, ModelLimits, TokenGrant};
use crate::auth::Identity;
use crate::call;
use crate::Gateway;
use axum::body::Body;
use axum::http::Response;
use llmux_wire::{Dialect, ErrorKind};

/// The estimate charged against token limits before the call: a quarter of the body's bytes
/// (≈ the prompt's tokens) plus the completion cap the client asked for.
pub fn estimate_tokens(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Caps {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        options: Option<OllamaOptions>,
        #[serde(rename = "generationConfig")]
        generation_config: Option<GeminiConfig>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct OllamaOptions {
        num_predict: Option<i64>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct GeminiConfig {
        max_output_tokens: Option<u64>,
    }
    let caps: Caps = serde_json::from_slice(body).unwrap_or_default();
    let cap = caps
        .max_completion_tokens
        .or(caps.max_tokens)
        .or(caps
            .options
            .and_then(|o| o.num_predict)
            .and_then(|n| u64::try_from(n).ok()))
        .or(caps.generation_config.and_then(|g| g.max_output_tokens))
        .unwrap_or(0);
    (body.len() as u64 / 4).saturating_add(cap)
}

/// What the key's limits said to a call they let through: the token grant to reconcile, and
/// the decisions its answer's `x-ratelimit-*` headers report (see [`super::rate_headers_of`]).
#[derive(Debug, Default)]
pub struct Admitted {
    pub grant: TokenGrant,
    pub decisions: Vec<(Layer, Decision)>,
}

/// Per-key and per-model admission, once the model and body are known: requests and tokens
/// per minute, all-or-nothing. `Err` is the 429 (or 503) to answer.
pub async fn admit(
    gw: &Gateway,
    identity: Option<&Identity>,
    model: &str,
    body: &[u8],
    dialect: Dialect,
) -> Result<Admitted, Response<Body>> {
    let Some(id) = identity else {
        return Ok(Admitted::default());
    };
    let limits = &id.limits;
    if limits.rpm.is_none() && limits.tpm.is_none() && limits.models.is_empty() {
        return Ok(Admitted::default());
    }
    let model_limits = limits.model(model);
    let wants_tokens = limits.tpm.is_some() || model_limits.is_some_and(|(_, m)| m.tpm.is_some());
    let mut checks = Checks::new(wants_tokens.then(|| estimate_tokens(body)), 4);
    let key = |kind: &str| format!("key:{}:{kind}", id.key_id);
    checks.rates(key, limits.rpm, limits.tpm, [Layer::KeyRpm, Layer::KeyTpm]);
    if let Some((name, m)) = model_limits {
        checks.model(id, name, m);
    }
    checks.decide(gw, dialect).await
}

/// The per-model limits of `target` alone: checked when a call moves on to a fallback target
/// (the first target's are checked by [`admit`] with the key's own limits).
pub async fn admit_model(
    gw: &Gateway,
    identity: Option<&Identity>,
    target: &str,
    body: &[u8],
    dialect: Dialect,
) -> Result<Admitted, Response<Body>> {
    let Some(id) = identity else {
        return Ok(Admitted::default());
    };
    let Some((name, m)) = id.limits.model(target) else {
        return Ok(Admitted::default());
    };
    let mut checks = Checks::new(m.tpm.map(|_| estimate_tokens(body)), 2);
    checks.model(id, name, m);
    checks.decide(gw, dialect).await
}

/// The checks one call makes, the layer of each, and the token checks its grant reconciles.
struct Checks {
    checks: Vec<Check>,
    layers: Vec<Layer>,
    grant: TokenGrant,
}

impl Checks {
    /// `estimated`: the call's token estimate, when some limit counts tokens.
    fn new(estimated: Option<u64>, capacity: usize) -> Checks {
        Checks {
            checks: Vec::with_capacity(capacity),
            layers: Vec::with_capacity(capacity),
            grant: TokenGrant {
                checks: Vec::new(),
                estimated: estimated.unwrap_or(0),
            },
        }
    }

    /// A request rate and a token rate, counted under `key("rpm")` and `key("tpm")`.
    fn rates(
        &mut self,
        key: impl Fn(&str) -> String,
        rpm: Option<u32>,
        tpm: Option<u64>,
        [requests, tokens]: [Layer; 2],
    ) {
        if let Some(rpm) = rpm {
            self.checks.push(Check {
                key: key("rpm"),
                rate: per_minute(rpm.into()),
                cost: 1,
            });
            self.layers.push(requests);
        }
        if let Some(tpm) = tpm {
            let c = Check {
                key: key("tpm"),
                rate: per_minute(tpm),
                cost: self.grant.estimated,
            };
            self.grant.checks.push(c.clone());
            self.checks.push(c);
            self.layers.push(tokens);
        }
    }

    /// The limits of one model (`name` as the key lists it) for key `id`.
    fn model(&mut self, id: &Identity, name: &str, m: ModelLimits) {
        let name = llmux_wire::model::model_key(name);
        let key = |kind: &str| format!("key:{}:model:{name}:{kind}", id.key_id);
        self.rates(key, m.rpm, m.tpm, [Layer::Model, Layer::ModelTokens]);
    }

    /// Runs the checks (all or nothing); `Err` is the refusal to answer.
    async fn decide(self, gw: &Gateway, dialect: Dialect) -> Result<Admitted, Response<Body>> {
        let decisions = decide(gw, &self.checks, self.layers, dialect).await?;
        Ok(Admitted {
            grant: self.grant,
            decisions,
        })
    }
}

/// Runs `checks` (all or nothing); `Err` is the refusal to answer.
async fn decide(
    gw: &Gateway,
    checks: &[Check],
    layers: Vec<Layer>,
    dialect: Dialect,
) -> Result<Vec<(Layer, Decision)>, Response<Body>> {
    let fail_open = gw.routes().config.limits.fail_open;
    let decisions = match gw.limits.check(checks, fail_open).await {
        Ok(d) => d,
        Err(BackendDown) => return Err(backend_down(dialect)),
    };
    let pairs: Vec<(Layer, Decision)> = layers.into_iter().zip(decisions).collect();
    if let Some((layer, d)) = pairs.iter().find(|(_, d)| !d.allowed) {
        gw.metrics.rejected(layer.as_str());
        return Err(rejection(dialect, *layer, d));
    }
    Ok(pairs)
}

pub(super) fn backend_down(dialect: Dialect) -> Response<Body> {
    call::error(
        dialect,
        ErrorKind::Unavailable,
        "rate limits cannot be checked right now (the shared backend is unreachable)",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_estimates() {
        let body = br#"{"model":"m","max_tokens":100,"messages":[]}"#;
        assert_eq!(estimate_tokens(body), body.len() as u64 / 4 + 100);
        let ollama = br#"{"model":"m","options":{"num_predict":7}}"#;
        assert_eq!(estimate_tokens(ollama), ollama.len() as u64 / 4 + 7);
        let gemini = br#"{"generationConfig":{"maxOutputTokens":9}}"#;
        assert_eq!(estimate_tokens(gemini), gemini.len() as u64 / 4 + 9);
        assert_eq!(estimate_tokens(b"not json!!!!"), 3);
    }
}

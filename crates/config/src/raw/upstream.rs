//! `[[upstreams]]`: one provider endpoint each, with its keys, models and timeouts.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::de::Dur;
use super::positive;
use crate::error::{join_index, join_key, ConfigError};
use crate::{MaxTokensField, Secret, Timeouts, UpstreamConfig, UpstreamKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawUpstream {
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    max_tokens_field: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<BTreeMap<String, i64>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawTimeouts {
    connect: Option<Dur>,
    first_byte: Option<Dur>,
    idle: Option<Dur>,
    total: Option<Dur>,
}

/// 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let name_ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(ConfigError::new(
            format!("{path}.name"),
            format!(
                "invalid upstream name {name:?} (use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-')"
            ),
        ));
    }
    Ok(())
}

/// `models`, when given: not empty, no empty or repeated name.
fn check_models(path: &str, models: &[String]) -> Result<(), ConfigError> {
    let models_path = format!("{path}.models");
    if models.is_empty() {
        return Err(ConfigError::new(
            models_path,
            "must not be empty (leave it out to ask the upstream for its models)",
        ));
    }
    let mut seen = HashSet::new();
    for (index, model) in models.iter().enumerate() {
        if model.trim().is_empty() {
            return Err(ConfigError::new(
                join_index(&models_path, index),
                "model name must not be empty",
            ));
        }
        if !seen.insert(model.as_str()) {
            return Err(ConfigError::new(
                join_index(&models_path, index),
                format!("duplicate model {model:?}"),
            ));
        }
    }
    Ok(())
}

fn keys_config(path: &str, raw: Vec<String>) -> Result<Vec<Secret>, ConfigError> {
    let mut keys = Vec::with_capacity(raw.len());
    for (index, key) in raw.into_iter().enumerate() {
        if key.is_empty() {
            // Usually an environment variable that is set but empty.
            return Err(ConfigError::new(
                join_index(&format!("{path}.keys"), index),
                "key must not be empty",
            ));
        }
        keys.push(Secret::new(key));
    }
    Ok(keys)
}

fn check_api_version(path: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() || v.contains(|c: char| c.is_whitespace() || c == '&' || c == '#') {
        return Err(ConfigError::new(
            format!("{path}.api_version"),
            format!("invalid API version {v:?}"),
        ));
    }
    Ok(())
}

/// `max_tokens_field`: only for kinds with an OpenAI-style API; else the kind's default.
fn max_tokens_field(
    path: &str,
    kind: UpstreamKind,
    raw: Option<&str>,
) -> Result<MaxTokensField, ConfigError> {
    let Some(raw) = raw else {
        return Ok(MaxTokensField::default_for(kind));
    };
    let at = format!("{path}.max_tokens_field");
    if matches!(kind, UpstreamKind::Anthropic | UpstreamKind::Gemini) {
        return Err(ConfigError::new(
            at,
            format!("only for kinds openai, azure and ollama (this upstream is {kind})"),
        ));
    }
    [
        MaxTokensField::MaxCompletionTokens,
        MaxTokensField::MaxTokens,
    ]
    .into_iter()
    .find(|f| f.as_str() == raw)
    .ok_or_else(|| {
        ConfigError::new(
            at,
            format!("unknown field {raw:?}: use max_completion_tokens or max_tokens"),
        )
    })
}

/// Largest `max_output_tokens` value accepted (no model comes near it).
const MAX_OUTPUT_TOKENS_LIMIT: i64 = 10_000_000;

/// `max_output_tokens`: only for kind anthropic; model names not empty, 1 to 10,000,000 tokens.
fn max_output_tokens(
    path: &str,
    kind: UpstreamKind,
    raw: Option<BTreeMap<String, i64>>,
) -> Result<BTreeMap<String, u32>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    let at = format!("{path}.max_output_tokens");
    if kind != UpstreamKind::Anthropic {
        return Err(ConfigError::new(
            at,
            format!("only for kind anthropic (this upstream is {kind})"),
        ));
    }
    let mut out = BTreeMap::new();
    for (model, n) in raw {
        let key = join_key(&at, &model);
        if model.trim().is_empty() {
            return Err(ConfigError::new(key, "model name must not be empty"));
        }
        let n = u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_OUTPUT_TOKENS_LIMIT).contains(&i64::from(*n)))
            .ok_or_else(|| {
                ConfigError::new(
                    &key,
                    format!("must be between 1 and {MAX_OUTPUT_TOKENS_LIMIT} (got {n})"),
                )
            })?;
        out.insert(model, n);
    }
    Ok(out)
}

impl RawUpstream {
    pub(super) fn into_config(self, path: &str) -> Result<UpstreamConfig, ConfigError> {
        check_name(path, &self.name)?;
        let kind = self
            .kind
            .parse::<UpstreamKind>()
            .map_err(|e| ConfigError::new(format!("{path}.kind"), e))?;
        let url = normalize_url(&self.url).map_err(|reason| {
            ConfigError::new(
                format!("{path}.url"),
                format!("invalid URL {:?}: {reason}", self.url),
            )
        })?;
        let weight = match self.weight {
            None => 1,
            Some(w) => u32::try_from(w)
                .ok()
                .filter(|w| (1..=1000).contains(w))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.weight"),
                        format!("must be between 1 and 1000 (got {w})"),
                    )
                })?,
        };
        if let Some(models) = &self.models {
            check_models(path, models)?;
        }
        let keys = keys_config(path, self.keys)?;
        let timeouts = self.timeouts.into_config(&format!("{path}.timeouts"))?;
        if kind == UpstreamKind::Azure && self.models.is_none() {
            return Err(ConfigError::new(
                format!("{path}.models"),
                "required for kind azure: list the deployment names (they are the model names)",
            ));
        }
        if let Some(v) = &self.api_version {
            check_api_version(path, v)?;
        }
        let max_tokens_field = max_tokens_field(path, kind, self.max_tokens_field.as_deref())?;
        let max_output_tokens = max_output_tokens(path, kind, self.max_output_tokens)?;
        Ok(UpstreamConfig {
            name: self.name,
            kind,
            url,
            keys,
            models: self.models,
            weight,
            timeouts,
            api_version: self.api_version,
            max_tokens_field,
            max_output_tokens,
        })
    }
}

impl RawTimeouts {
    fn into_config(self, path: &str) -> Result<Timeouts, ConfigError> {
        let default = Timeouts::default();
        let pick = |value: Option<Dur>, key: &str, fallback: Duration| match value {
            None => Ok(fallback),
            Some(Dur(d)) => positive(&join_key(path, key), d),
        };
        Ok(Timeouts {
            connect: pick(self.connect, "connect", default.connect)?,
            first_byte: pick(self.first_byte, "first_byte", default.first_byte)?,
            idle: pick(self.idle, "idle", default.idle)?,
            total: match self.total {
                None => None,
                Some(Dur(d)) => Some(positive(&join_key(path, "total"), d)?),
            },
        })
    }
}

/// An http(s) URL with a host and no fragment (upstreams' base URLs, external hooks).
pub(super) fn http_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host".to_owned());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".to_owned());
    }
    Ok(url)
}

/// Checks an upstream base URL and returns it normalized without a trailing slash, so other
/// crates can append `/v1/...` paths directly.
pub(super) fn normalize_url(raw: &str) -> Result<String, String> {
    let url = http_url(raw)?;
    if url.query().is_some() {
        return Err("must not have a query string".to_owned());
    }
    // The URL is logged and shown in the admin API, which is no place for a password.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (use keys instead)".to_owned());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

//! `[[hooks]]` as written, and its validation (docs/hooks.md). Every error names the hook.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::de::Dur;
use crate::error::{join_index, ConfigError};
use crate::hooks::DEFAULT_HOOK_TIMEOUT;
use crate::{ExternalHook, HookConfig, HookFail, HookScope, HookSet};

/// Longest an external hook may be waited for.
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers a hook may not set: llmux sets them itself for each upstream (credentials, framing).
const RESERVED_HEADERS: [&str; 10] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "anthropic-version",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
];

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawHook {
    name: Option<String>,
    url: Option<String>,
    timeout: Option<Dur>,
    fail: Option<String>,
    models: Vec<String>,
    apps: Vec<String>,
    keys: Vec<String>,
    set: Option<RawSet>,
    deny: Option<bool>,
    deny_pattern: Option<String>,
    message: Option<String>,
    headers: BTreeMap<String, String>,
    redact: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawSet {
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    seed: Option<i64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
}

pub(super) fn hooks_config(raw: Vec<RawHook>) -> Result<Vec<HookConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, h) in raw.into_iter().enumerate() {
        let path = join_index("hooks", i);
        let hook = h.into_config(&path)?;
        if !names.insert(hook.name.clone()) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate hook name {:?}", hook.name),
            ));
        }
        out.push(hook);
    }
    Ok(out)
}

impl RawHook {
    fn into_config(self, path: &str) -> Result<HookConfig, ConfigError> {
        let name = hook_name(self.name.as_deref(), path)?;
        let err = |key: &str, msg: String| {
            let at = if key.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{key}")
            };
            ConfigError::new(at, format!("hook {name:?}: {msg}"))
        };
        let set = self.set.map(|s| s.into_config(&err)).transpose()?;
        let set = set.unwrap_or_default();
        let deny_pattern = self.deny_pattern.filter(|p| !p.is_empty());
        if let Some(p) = &deny_pattern {
            check_regex(p).map_err(|e| err("deny_pattern", e))?;
        }
        for (i, p) in self.redact.iter().enumerate() {
            if p.is_empty() {
                return Err(err(&join_index("redact", i), "an empty pattern".into()));
            }
            check_regex(p).map_err(|e| err(&join_index("redact", i), e))?;
        }
        let headers = headers(self.headers, &err)?;
        let deny = self.deny.unwrap_or(false);
        let builtin = !set.is_empty()
            || deny
            || deny_pattern.is_some()
            || !headers.is_empty()
            || !self.redact.is_empty();
        let external = match self.url.filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                if builtin {
                    return Err(err("url", "a hook is either external (url) or built-in (set, deny, deny_pattern, headers, redact): split it into two hooks".into()));
                }
                check_url(&url).map_err(|e| err("url", format!("invalid URL {url:?}: {e}")))?;
                Some(external(url, self.timeout, self.fail.as_deref(), &err)?)
            }
            None if !builtin => {
                return Err(err("", "does nothing: give it a url (an external hook) or a built-in action (set, deny, deny_pattern, headers, redact)".into()));
            }
            None => {
                for (key, given) in [
                    ("timeout", self.timeout.is_some()),
                    ("fail", self.fail.is_some()),
                ] {
                    if given {
                        return Err(err(
                            key,
                            "applies only to an external hook (one with a url)".into(),
                        ));
                    }
                }
                None
            }
        };
        if self.message.is_some() && !(deny || deny_pattern.is_some()) {
            return Err(err(
                "message",
                "is what `deny` or `deny_pattern` answers: set one of them".into(),
            ));
        }
        let scope = HookScope {
            models: nonempty(self.models, "models", &err)?,
            apps: nonempty(self.apps, "apps", &err)?,
            keys: nonempty(self.keys, "keys", &err)?,
        };
        Ok(HookConfig {
            name,
            scope,
            external,
            set,
            deny,
            deny_pattern,
            message: self.message.filter(|m| !m.trim().is_empty()),
            headers,
            redact: self.redact,
        })
    }
}

/// The hook's `name`: required, 1 to 64 letters, digits, '-', '_' or '.'.
fn hook_name(name: Option<&str>, path: &str) -> Result<String, ConfigError> {
    match name.map(str::trim) {
        Some(n) if valid_name(n) => Ok(n.to_string()),
        Some(n) => Err(ConfigError::new(
            format!("{path}.name"),
            format!("invalid hook name {n:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
        )),
        None => Err(ConfigError::new(
            format!("{path}.name"),
            "is required (it names the hook in errors, metrics and the call log)",
        )),
    }
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn external(
    url: String,
    timeout: Option<Dur>,
    fail: Option<&str>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ExternalHook, ConfigError> {
    let timeout = match timeout {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(Dur(d)) if d.is_zero() => {
            return Err(err("timeout", "must be greater than zero".into()))
        }
        Some(Dur(d)) if d > MAX_HOOK_TIMEOUT => {
            return Err(err("timeout", format!("must be at most 60s (got {d:?})")))
        }
        Some(Dur(d)) => d,
    };
    let fail = match fail {
        None | Some("closed") => HookFail::Closed,
        Some("open") => HookFail::Open,
        Some(other) => {
            return Err(err(
                "fail",
                format!("unknown mode {other:?} (expected closed or open)"),
            ))
        }
    };
    Ok(ExternalHook { url, timeout, fail })
}

/// An http(s) URL with a host; a query string is allowed (a hook may take its token there).
fn check_url(raw: &str) -> Result<(), String> {
    super::upstream::http_url(raw).map(drop)
}

/// A pattern that compiles and does not match the empty string (which would deny every
/// call, or mask between every two characters).
fn check_regex(p: &str) -> Result<(), String> {
    let re =
        regex_automata::meta::Regex::new(p).map_err(|e| format!("invalid regex {p:?}: {e}"))?;
    if re.is_match("") {
        return Err(format!("regex {p:?} matches the empty string"));
    }
    Ok(())
}

fn headers(
    raw: BTreeMap<String, String>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<(String, String)>, ConfigError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    raw.into_iter()
        .map(|(name, value)| {
            let key = format!("headers.{name}");
            if name.is_empty() || !name.chars().all(token) {
                return Err(err(&key, format!("{name:?} is not a valid header name")));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(err(&key, format!("{name:?} is set by llmux for each upstream and cannot be overridden by a hook")));
            }
            if value.chars().any(|c| (c.is_control() && c != '\t') || !c.is_ascii()) {
                return Err(err(&key, "the value must be printable ASCII".into()));
            }
            Ok((lower, value))
        })
        .collect()
}

fn nonempty(
    list: Vec<String>,
    key: &str,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<String>, ConfigError> {
    if list.iter().any(|s| s.trim().is_empty()) {
        return Err(err(
            key,
            "holds an empty name (leave the list out to match every call)".into(),
        ));
    }
    Ok(list)
}

impl RawSet {
    fn into_config(
        self,
        err: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<HookSet, ConfigError> {
        let range = |key: &str, v: Option<f64>, lo: f64, hi: f64| match v {
            Some(x) if !(lo..=hi).contains(&x) => Err(err(
                &format!("set.{key}"),
                format!("must be from {lo} to {hi} (got {x})"),
            )),
            _ => Ok(v),
        };
        if self.max_tokens == Some(0) {
            return Err(err("set.max_tokens", "must be at least 1".into()));
        }
        let set = HookSet {
            max_tokens: self.max_tokens,
            temperature: range("temperature", self.temperature, 0.0, 2.0)?,
            top_p: range("top_p", self.top_p, 0.0, 1.0)?,
            top_k: self.top_k,
            seed: self.seed,
            frequency_penalty: range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?,
            presence_penalty: range("presence_penalty", self.presence_penalty, -2.0, 2.0)?,
        };
        if set.is_empty() {
            return Err(err("set", "is empty: set max_tokens, temperature, top_p, top_k, seed, frequency_penalty or presence_penalty".into()));
        }
        Ok(set)
    }
}

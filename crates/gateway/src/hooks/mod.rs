//! `[[hooks]]` at run time (docs/hooks.md): the config's hooks compiled once per config
//! (regexes, header values), which of them a call is in scope of, the external hooks' HTTP
//! client, and the per-hook metrics. The call stage that runs them is `call/hooked.rs`.

mod external;
pub(crate) mod rewrite;

pub(crate) use external::{ask, Caller, Verdict};

use crate::auth::Identity;
use crate::metrics::Histogram;
use arc_swap::ArcSwapOption;
use axum::http::{HeaderName, HeaderValue};
use llmux_config::{Config, HookConfig};
use prometheus_client::metrics::counter::Counter;
use regex_automata::meta::Regex;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What one hook did with one call (`llmux_hook_calls_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    Allow,
    Deny,
    Modify,
    /// An external hook failed (timeout, error status, garbage answer), whatever its fail mode.
    Error,
}

impl HookOutcome {
    pub const ALL: [HookOutcome; 4] = [
        HookOutcome::Allow,
        HookOutcome::Deny,
        HookOutcome::Modify,
        HookOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookOutcome::Allow => "allow",
            HookOutcome::Deny => "deny",
            HookOutcome::Modify => "modify",
            HookOutcome::Error => "error",
        }
    }
}

/// One hook's counters, kept across reloads (by name) so that they only grow.
#[derive(Default)]
pub struct HookMetrics {
    pub calls: [Counter; 4],
    /// External hooks only: from sending the request to the verdict (or the failure).
    pub duration: Histogram,
}

impl HookMetrics {
    pub fn count(&self, outcome: HookOutcome) {
        self.calls[outcome as usize].inc();
    }
}

/// One hook, ready to run.
pub struct Hook {
    pub cfg: HookConfig,
    /// `deny_pattern`, compiled.
    pub deny_re: Option<Regex>,
    /// `redact`, compiled.
    pub masks: Vec<Regex>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `models`, as the catalogue compares names.
    models: Vec<String>,
    pub metrics: Arc<HookMetrics>,
}

impl Hook {
    /// Whether a call for `model` by `identity` is in the hook's scope. A hook scoped to apps
    /// or keys never applies to a call without a virtual key.
    pub fn applies(&self, model: &str, identity: Option<&Identity>) -> bool {
        let s = &self.cfg.scope;
        if !self.models.is_empty() {
            // `models` holds model keys.
            if !self
                .models
                .iter()
                .any(|m| llmux_wire::model::same_model(m, model))
            {
                return false;
            }
        }
        if !s.apps.is_empty() && !identity.is_some_and(|i| s.apps.contains(&i.app_id)) {
            return false;
        }
        s.keys.is_empty() || identity.is_some_and(|i| s.keys.contains(&i.key_id))
    }
}

/// The hooks of one config, compiled.
pub struct Active {
    config: Arc<Config>,
    pub hooks: Vec<Hook>,
}

/// The gateway's hooks: compiled for the running config, and what outlives a reload.
#[derive(Default)]
pub struct Hooks {
    active: ArcSwapOption<Active>,
    client: OnceLock<reqwest::Client>,
    metrics: Mutex<BTreeMap<String, Arc<HookMetrics>>>,
}

impl Hooks {
    /// The compiled hooks of `config`; `None` when it has none (the common case costs a
    /// length check). Compiled on the first call after a reload.
    pub fn active(&self, config: &Arc<Config>) -> Option<Arc<Active>> {
        if config.hooks.is_empty() {
            return None;
        }
        if let Some(a) = self.active.load_full() {
            if Arc::ptr_eq(&a.config, config) {
                return Some(a);
            }
        }
        let hooks = config
            .hooks
            .iter()
            .filter_map(|h| self.compile(h))
            .collect();
        let active = Arc::new(Active {
            config: Arc::clone(config),
            hooks,
        });
        self.active.store(Some(Arc::clone(&active)));
        Some(active)
    }

    fn compile(&self, cfg: &HookConfig) -> Option<Hook> {
        // The config crate compiled every pattern and checked every header when it loaded the
        // file: a failure here is a bug, and the hook is left out rather than the call failing.
        let compiled = (|| -> Result<Hook, String> {
            let regex = |p: &str| Regex::new(p).map_err(|e| e.to_string());
            let headers = cfg
                .headers
                .iter()
                .map(|(n, v)| {
                    let name = HeaderName::from_bytes(n.as_bytes()).map_err(|e| e.to_string())?;
                    let value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
                    Ok((name, value))
                })
                .collect::<Result<_, String>>()?;
            Ok(Hook {
                deny_re: cfg.deny_pattern.as_deref().map(regex).transpose()?,
                masks: cfg
                    .redact
                    .iter()
                    .map(|p| regex(p))
                    .collect::<Result<_, _>>()?,
                headers,
                models: cfg
                    .scope
                    .models
                    .iter()
                    .map(|m| llmux_wire::model::model_key(m).into_owned())
                    .collect(),
                metrics: self.metrics_of(&cfg.name),
                cfg: cfg.clone(),
            })
        })();
        match compiled {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(hook = %cfg.name, error = %e, "hook left out: it does not compile");
                None
            }
        }
    }

    fn metrics_of(&self, name: &str) -> Arc<HookMetrics> {
        let mut map = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(name.to_string()).or_default())
    }

    /// Every hook's metrics seen since start, by name.
    pub fn metrics(&self) -> Vec<(String, Arc<HookMetrics>)> {
        let map = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(n, m)| (n.clone(), Arc::clone(m)))
            .collect()
    }

    /// The pooled client external hooks are called with (built once). Hook URLs are the
    /// operator's own: no SSRF guard, unlike upstreams added through the admin API.
    pub(crate) fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let built = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the hooks' HTTP client: {e}"))?;
        Ok(self.client.get_or_init(|| built))
    }
}

/// What `redact` patterns mask in logged bodies.
pub const MASK: &str = "[REDACTED]";

/// `text` with every match of `masks` replaced by [`MASK`].
pub fn mask(masks: &[Regex], text: &str) -> String {
    let mut out = text.to_string();
    for re in masks {
        if !re.is_match(&out) {
            continue;
        }
        let mut next = String::with_capacity(out.len());
        let mut last = 0;
        for m in re.find_iter(&out) {
            next.push_str(&out[last..m.start()]);
            next.push_str(MASK);
            last = m.end();
        }
        next.push_str(&out[last..]);
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mask_replaces_every_match_of_every_pattern() {
        let masks = [
            Regex::new(r"\d{3}-\d{4}").unwrap(),
            Regex::new("secret-[a-z]+").unwrap(),
        ];
        let out = mask(&masks, "call 555-1234 or 555-9876 with secret-word");
        assert_eq!(out, "call [REDACTED] or [REDACTED] with [REDACTED]");
        assert_eq!(mask(&masks, "nothing here"), "nothing here");
    }
}

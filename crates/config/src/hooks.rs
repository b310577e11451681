//! `[[hooks]]`: checks and changes around each model call (docs/hooks.md). A hook is either
//! external (`url`: llmux asks an HTTP service) or built-in (`set`, `deny`, `deny_pattern`,
//! `headers`, `redact`), and applies to the calls its scope matches.

use std::time::Duration;

/// One `[[hooks]]` entry, validated: its regexes compile, its URL parses, its headers are
/// sendable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HookConfig {
    /// Unique among the hooks; named in errors, metrics, the call log and the external request.
    pub name: String,
    pub scope: HookScope,
    /// `Some`: an external hook (and then no built-in action is set).
    pub external: Option<ExternalHook>,
    /// Parameters set (or, for `max_tokens`, capped) on the request.
    pub set: HookSet,
    /// Refuse every call in scope.
    pub deny: bool,
    /// Refuse a call whose prompt text (system and messages) matches this regex.
    pub deny_pattern: Option<String>,
    /// What a refused client is told (`deny`, `deny_pattern`); a default names the hook.
    pub message: Option<String>,
    /// Headers added to the upstream request (name, value), names in lower case.
    pub headers: Vec<(String, String)>,
    /// Regexes whose matches are masked in what the call log keeps (never in what is sent).
    pub redact: Vec<String>,
}

impl HookConfig {
    /// Whether the hook reads or changes the request itself (and so needs it decoded):
    /// an external hook, `set`, `deny_pattern`. `deny`, `headers` and `redact` do not.
    pub fn reads_request(&self) -> bool {
        self.external.is_some() || !self.set.is_empty() || self.deny_pattern.is_some()
    }
}

/// Which calls a hook applies to; an empty list matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookScope {
    /// Requested model names (compared as the catalogue compares them: `llama3` is `llama3:latest`).
    pub models: Vec<String>,
    /// App ids of the caller's virtual key.
    pub apps: Vec<String>,
    /// Virtual key ids.
    pub keys: Vec<String>,
}

/// An external hook: where to ask, how long to wait, what a failure means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalHook {
    pub url: String,
    pub timeout: Duration,
    pub fail: HookFail,
}

/// What a call gets when its external hook fails (times out, errs, answers garbage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookFail {
    /// Refused (503, naming the hook).
    #[default]
    Closed,
    /// Let through unchanged, with a warning and `llmux_hook_calls_total{outcome="error"}`.
    Open,
}

impl HookFail {
    pub fn as_str(self) -> &'static str {
        match self {
            HookFail::Closed => "closed",
            HookFail::Open => "open",
        }
    }
}

/// `set = {...}`: `max_tokens` caps the client's value (the lower of the two; the hook's when
/// the client gave none); every other parameter replaces the client's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HookSet {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
}

impl HookSet {
    pub fn is_empty(&self) -> bool {
        self == &HookSet::default()
    }
}

/// The default `timeout` of an external hook.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(2);

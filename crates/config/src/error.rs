//! The configuration error type and helpers for building key paths like `upstreams[0].timeouts.connect`.

/// A configuration problem, pinned to the key path it concerns so the operator can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.path, .message))]
pub struct ConfigError {
    /// Dotted key path such as `upstreams[1].url`; empty when the error is not about one key
    /// (unreadable file, TOML syntax error).
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Why a written value (a duration, size, rate, address block, upstream kind or routing
/// strategy) is not one; each variant holds the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(r#"invalid duration {0:?} (use e.g. "500ms", "5s", "1m", "1h30m")"#)]
    Duration(String),
    #[error("duration {0:?} is too large")]
    DurationTooLarge(String),
    /// Longer than [`crate::MAX_DURATION`]; the value as the user wrote it (quoted if a string).
    #[error("duration {0} is longer than the maximum of 24h (1 day)")]
    DurationTooLong(String),
    #[error(
        r#"invalid size {0:?} (use e.g. "512KiB", "32MiB", "1GiB", "10MB" or a number of bytes)"#
    )]
    Size(String),
    #[error("size {0:?} is too large")]
    SizeTooLarge(String),
    #[error(r#"invalid rate {0:?} (expected N/s, N/min or N/h, e.g. "600/min")"#)]
    Rate(String),
    #[error("rate {0:?} must allow at least one call")]
    RateZero(String),
    #[error("{0:?} is not an address block (use e.g. \"10.0.0.0/8\")")]
    Cidr(String),
    #[error("{0:?}: the prefix length must be 0 to {1}")]
    CidrPrefix(String, u8),
    #[error("unsupported kind {0:?} (expected ollama, openai, anthropic, gemini or azure)")]
    Kind(String),
    #[error(
        "unknown strategy {0:?} (expected least_active, lowest_latency, round_robin, weighted or cheapest)"
    )]
    Strategy(String),
}

fn render(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// Appends a table key to `path`, quoting it when it would not read as a bare TOML key
/// (model names such as `llama3:70b` appear as keys under `routing.fallbacks`).
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Appends an array index to `path`.
pub(crate) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

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
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
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

//! Model names: Ollama's `:latest` rule and `upstream/model` addressing.

use std::borrow::Cow;

/// The key a model is matched by. Ollama treats `llama3` and `llama3:latest` as one model,
/// so a name without a tag is keyed with `:latest`. A `:` inside a path segment
/// (`hf.co/org/model:Q4`) is a tag only when it follows the last `/`.
pub fn model_key(name: &str) -> Cow<'_, str> {
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    if last_segment.contains(':') || name.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}:latest"))
    }
}

/// Splits `upstream/model` when the part before the first `/` names a known upstream.
/// Model names may contain `/` themselves (`meta-llama/Llama-3-8B`), so an unknown prefix
/// leaves the name whole.
pub fn split_pinned(name: &str, is_upstream: impl Fn(&str) -> bool) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((prefix, rest)) if !rest.is_empty() && is_upstream(prefix) => (Some(prefix), rest),
        _ => (None, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_rule() {
        assert_eq!(model_key("llama3"), "llama3:latest");
        assert_eq!(model_key("llama3:latest"), "llama3:latest");
        assert_eq!(model_key("llama3:8b"), "llama3:8b");
        assert_eq!(model_key("gpt-4o"), "gpt-4o:latest");
        assert_eq!(model_key("hf.co/org/m"), "hf.co/org/m:latest");
        assert_eq!(model_key("host:5000/org/m"), "host:5000/org/m:latest");
    }

    #[test]
    fn pinning() {
        let known = |u: &str| u == "openai" || u == "gpu-a";
        assert_eq!(
            split_pinned("openai/gpt-4o", known),
            (Some("openai"), "gpt-4o")
        );
        assert_eq!(
            split_pinned("meta-llama/Llama-3", known),
            (None, "meta-llama/Llama-3")
        );
        assert_eq!(split_pinned("gpu-a/", known), (None, "gpu-a/"));
        assert_eq!(split_pinned("llama3", known), (None, "llama3"));
    }
}

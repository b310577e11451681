//! The most output tokens each Claude model accepts, for `max_tokens` when a translated call
//! sets no limit (Anthropic requires one; other dialects mean "as long as the model allows").

/// For model names the table does not know (documented in docs/compatibility.md): every
/// Claude model since the 3.5 family accepts it.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 8192;

/// The model's maximum output tokens, from its name: `claude-<family>-<major>[-<minor>][-<date>]`
/// and the older `claude-3[-5|-7]-<family>[-<date>]`, also behind a provider prefix
/// (`anthropic/…`, `anthropic.…`) or with an `@date` suffix. Unknown names get
/// [`DEFAULT_MAX_OUTPUT_TOKENS`]; the gateway lets the config override any name.
pub fn max_output_tokens(model: &str) -> u32 {
    let lower = model.to_ascii_lowercase();
    let Some(at) = lower.find("claude-") else {
        return DEFAULT_MAX_OUTPUT_TOKENS;
    };
    let rest = &lower[at + "claude-".len()..];
    if rest.starts_with("3-7-") {
        return 64_000;
    }
    if rest.starts_with("3-5-") {
        return 8192;
    }
    if rest.starts_with("3-") {
        return 4096;
    }
    let mut it = rest.split(['-', '@', '.', ':']);
    let family = it.next().unwrap_or_default();
    let Some(major) = it.next().and_then(|m| m.parse::<u32>().ok()) else {
        return DEFAULT_MAX_OUTPUT_TOKENS;
    };
    // A minor version is one or two digits; eight are a snapshot date.
    let minor = it
        .next()
        .filter(|m| m.len() <= 2)
        .and_then(|m| m.parse::<u32>().ok());
    match (family, major, minor) {
        ("opus", 4, None | Some(0 | 1)) => 32_000,
        ("opus" | "sonnet" | "haiku", m, _) if m >= 4 => 64_000,
        _ => DEFAULT_MAX_OUTPUT_TOKENS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_families_get_their_maximum() {
        for (model, max) in [
            ("claude-opus-4-5", 64_000),
            ("claude-opus-4-5-20251101", 64_000),
            ("claude-opus-4-1-20250805", 32_000),
            ("claude-opus-4-1", 32_000),
            ("claude-opus-4-0", 32_000),
            ("claude-opus-4-20250514", 32_000),
            ("claude-sonnet-4-5", 64_000),
            ("claude-sonnet-4-20250514", 64_000),
            ("claude-haiku-4-5-20251001", 64_000),
            ("claude-3-7-sonnet-latest", 64_000),
            ("claude-3-5-haiku-20241022", 8192),
            ("claude-3-5-sonnet-20241022", 8192),
            ("claude-3-haiku-20240307", 4096),
            ("claude-3-opus-latest", 4096),
            ("anthropic/claude-sonnet-4-5", 64_000),
            ("anthropic.claude-opus-4-1-20250805-v1:0", 32_000),
            ("claude-opus-4-1@20250805", 32_000),
            ("Claude-Sonnet-4-5", 64_000),
        ] {
            assert_eq!(max_output_tokens(model), max, "{model}");
        }
    }

    #[test]
    fn unknown_names_get_the_default() {
        for model in [
            "my-finetune",
            "claude-instant-1.2",
            "claude-2.1",
            "claude-",
            "",
        ] {
            assert_eq!(
                max_output_tokens(model),
                DEFAULT_MAX_OUTPUT_TOKENS,
                "{model}"
            );
        }
    }
}

//! Model names: Ollama's `:latest` rule, `upstream/model` addressing, and the catalogue's
//! normalisation rules (docs/catalog.md).

use std::borrow::Cow;

/// The key a model is matched by. Ollama treats `llama3` and `llama3:latest` as one model,
/// so a name without a tag is keyed with `:latest`. A `:` inside a path segment
/// (`hf.co/org/model:Q4`) is a tag only when it follows the last `/`.
pub fn model_key(name: &str) -> Cow<'_, str> {
    if keyed_as_itself(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}:latest"))
    }
}

/// Whether `name` is its own [`model_key`]: it has a tag, or is empty.
fn keyed_as_itself(name: &str) -> bool {
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    last_segment.contains(':') || name.is_empty()
}

/// Whether `a` and `b` are one model by Ollama's `:latest` rule: `model_key(a) == model_key(b)`,
/// without building either key.
pub fn same_model(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (keyed_as_itself(a), keyed_as_itself(b)) {
        (true, false) => a.strip_suffix(":latest") == Some(b),
        (false, true) => b.strip_suffix(":latest") == Some(a),
        // Two different names keyed as themselves, or both with `:latest` added.
        _ => false,
    }
}

/// Calls `f` with the [`model_key`] of `name`, for a lookup in a map keyed by model keys: the
/// key is built on the stack when it is short (it was a `String` per lookup).
pub fn with_model_key<R>(name: &str, f: impl FnOnce(&str) -> R) -> R {
    const LATEST: &[u8] = b":latest";
    if keyed_as_itself(name) {
        return f(name);
    }
    let mut buf = [0u8; 128];
    let len = name.len() + LATEST.len();
    if len <= buf.len() {
        buf[..name.len()].copy_from_slice(name.as_bytes());
        buf[name.len()..len].copy_from_slice(LATEST);
        if let Ok(key) = std::str::from_utf8(&buf[..len]) {
            return f(key);
        }
    }
    f(&format!("{name}:latest"))
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

/// Which normalisation rules apply (the gateway fills it from `[catalog] normalize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Case-insensitive names.
    pub case: bool,
    /// Gemini's `models/` prefix dropped.
    pub gemini_prefix: bool,
    /// A provider kind's name as prefix (`openai/gpt-4o`) dropped.
    pub provider_prefix: bool,
    /// A dated snapshot also answers to its undated name.
    pub dated_snapshots: bool,
}

impl Rules {
    /// Whether any rule beyond `:latest` is on.
    pub fn any(&self) -> bool {
        self.case || self.gemini_prefix || self.provider_prefix || self.dated_snapshots
    }
}

/// Prefixes that name a provider rather than a model family: dropped under `provider_prefix`.
pub const PROVIDER_PREFIXES: [&str; 7] = [
    "openai",
    "anthropic",
    "gemini",
    "google",
    "ollama",
    "azure",
    "vertex_ai",
];

/// The normalised key of `name` under `rules`: prefixes dropped, lower case, then keyed by
/// Ollama's `:latest` rule. Two names with the same normalised key are the same model.
pub fn normalized_key(name: &str, rules: Rules) -> String {
    let mut rest = name.trim();
    if rules.gemini_prefix {
        rest = rest.strip_prefix("models/").unwrap_or(rest);
    }
    if rules.provider_prefix {
        if let Some((prefix, model)) = rest.split_once('/') {
            if !model.is_empty()
                && PROVIDER_PREFIXES.contains(&prefix.to_ascii_lowercase().as_str())
            {
                rest = model;
            }
        }
        if rules.gemini_prefix {
            rest = rest.strip_prefix("models/").unwrap_or(rest);
        }
    }
    let cased = if rules.case {
        Cow::Owned(rest.to_lowercase())
    } else {
        Cow::Borrowed(rest)
    };
    model_key(&cased).into_owned()
}

/// `key` (a normalised key, `name:tag`) without a date at the end of its name: `-2024-08-06`
/// or `-20241022` (a real calendar date, 2000 to 2099). `None` when it carries no date.
pub fn undated(key: &str) -> Option<String> {
    let (base, tag) = match key.rfind(':').filter(|&i| !key[i..].contains('/')) {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let strip = |len: usize, dashed: bool| -> Option<&str> {
        let cut = base.len().checked_sub(len + 1)?;
        let (head, date) = (base.get(..cut)?, base.get(cut..)?);
        let digits: String = date
            .strip_prefix('-')?
            .chars()
            .filter(|c| *c != '-')
            .collect();
        let shape_ok = if dashed {
            date.len() == 11 && date.as_bytes()[5] == b'-' && date.as_bytes()[8] == b'-'
        } else {
            date.len() == 9
        };
        (shape_ok && digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(())?;
        let (y, m, d) = (&digits[..4], &digits[4..6], &digits[6..]);
        let ok = y.starts_with("20") && ("01"..="12").contains(&m) && ("01"..="31").contains(&d);
        (ok && !head.is_empty()).then_some(head)
    };
    let head = strip(10, true).or_else(|| strip(8, false))?;
    Some(format!("{head}{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_model_is_equal_keys() {
        let names = [
            "",
            ":latest",
            "llama3",
            "llama3:latest",
            "llama3:8b",
            "llama3:latest:latest",
            "hf.co/org/m:Q4",
            "hf.co/org:x/m",
            "hf.co/org:x/m:latest",
            "a/b",
            "a/b:latest",
            "é:latest",
            "é",
        ];
        for a in names {
            for b in names {
                assert_eq!(
                    same_model(a, b),
                    model_key(a) == model_key(b),
                    "{a:?} {b:?}"
                );
            }
            assert_eq!(with_model_key(a, str::to_string), model_key(a));
        }
        let long = "x".repeat(200);
        assert_eq!(with_model_key(&long, str::to_string), model_key(&long));
        let edge = "y".repeat(121);
        assert_eq!(
            with_model_key(&edge, str::to_string),
            format!("{edge}:latest")
        );
        assert!(same_model("llama3", "llama3:latest"));
        assert!(!same_model("llama3", "llama3:8b"));
    }

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
    fn normalisation_rules() {
        let all = Rules {
            case: true,
            gemini_prefix: true,
            provider_prefix: true,
            dated_snapshots: true,
        };
        assert_eq!(normalized_key("GPT-4o", all), "gpt-4o:latest");
        assert_eq!(normalized_key("openai/gpt-4o", all), "gpt-4o:latest");
        assert_eq!(
            normalized_key("models/gemini-2.0-flash", all),
            "gemini-2.0-flash:latest"
        );
        assert_eq!(
            normalized_key("google/models/gemini-2.0-flash", all),
            "gemini-2.0-flash:latest"
        );
        assert_eq!(
            normalized_key("meta-llama/Llama-3", all),
            "meta-llama/llama-3:latest"
        );
        assert_eq!(normalized_key("GPT-4o", Rules::default()), "GPT-4o:latest");
        assert_eq!(
            normalized_key("openai/gpt-4o", Rules::default()),
            "openai/gpt-4o:latest"
        );
        assert_eq!(
            undated("gpt-4o-2024-08-06:latest").as_deref(),
            Some("gpt-4o:latest")
        );
        assert_eq!(
            undated("claude-3-5-sonnet-20241022:latest").as_deref(),
            Some("claude-3-5-sonnet:latest")
        );
        assert_eq!(undated("gpt-4o:latest"), None);
        assert_eq!(undated("model-12345678:latest"), None);
        assert_eq!(undated("gpt-4o-2024-13-06:latest"), None);
        assert_eq!(undated("2024-08-06"), None);
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

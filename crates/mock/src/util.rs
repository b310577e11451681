//! Small self-contained helpers: timestamps, base64, hashing, deterministic embeddings and token estimates.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Seconds since the Unix epoch, as OpenAI's `created` field.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) use llmux_wire::time::rfc3339;

/// Standard base64 with padding (what OpenAI uses for `encoding_format: "base64"`).
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// FNV-1a: tiny, stable across runs and platforms (std's hasher is randomly seeded).
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64 step: turns a seed into a well-mixed stream of u64.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic unit-length vector for `text`: same text, same vector, on every node.
pub(crate) fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut s = fnv1a(text.as_bytes());
    let mut v: Vec<f32> = (0..dims)
        .map(|_| (splitmix64(&mut s) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// 64 hex digits derived from the model name, standing in for an Ollama blob digest.
pub(crate) fn digest(name: &str) -> String {
    let mut s = fnv1a(name.as_bytes());
    (0..4)
        .map(|_| format!("{:016x}", splitmix64(&mut s)))
        .collect()
}

/// Random-looking but per-server deterministic id body (`chatcmpl-…`, `call_…`).
pub(crate) fn id_chars(mut seed: u64, len: usize) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHA[(splitmix64(&mut seed) % ALPHA.len() as u64) as usize] as char)
        .collect()
}

/// Whitespace-separated words: the mock's stand-in for a tokenizer.
pub(crate) fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Words in a message `content`: a string, or OpenAI content parts with `text`.
pub(crate) fn content_words(content: &Value) -> u64 {
    match content {
        Value::String(s) => words(s),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(words)
            .sum(),
        _ => 0,
    }
}

/// Prompt-token estimate for a chat: words of every message content, at least 1.
pub(crate) fn messages_tokens(messages: &[Value]) -> u64 {
    messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(content_words)
        .sum::<u64>()
        .max(1)
}

/// JSON string literal (with quotes) for `s`.
pub(crate) fn js(s: &str) -> String {
    // Serializing a str cannot fail; the fallback only keeps the output valid JSON.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `s` escaped for use inside a JSON string literal (no quotes).
pub(crate) fn js_inner(s: &str) -> String {
    let q = js(s);
    q[1..q.len() - 1].to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 500_000_000);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.5Z");
        let t = UNIX_EPOCH + Duration::new(1_722_799_365, 499_127_000);
        assert_eq!(rfc3339(t), "2024-08-04T19:22:45.499127Z");
    }

    #[test]
    fn base64_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    #[test]
    fn embedding_is_deterministic_and_normalized() {
        let a = embedding("hello", 16);
        assert_eq!(a, embedding("hello", 16));
        assert_ne!(a, embedding("world", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(embedding("x", 0).is_empty());
    }

    #[test]
    fn digest_is_64_hex() {
        let d = digest("llama3:latest");
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn js_escapes() {
        assert_eq!(js_inner("a\"b"), "a\\\"b");
    }
}

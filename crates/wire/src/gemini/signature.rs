//! Gemini's thought signatures carried in tool-call ids.
//!
//! Gemini 3 models put a `thoughtSignature` on the part of each function call and refuse the
//! next turn unless that part comes back with it. Clients of other dialects only keep a call's
//! id, so the signature rides in it: `<id>__gts_<signature, base64url>`. The id is opaque to
//! clients (any dialect allows these characters, Anthropic's `^[a-zA-Z0-9_-]+$` included), and
//! when the call comes back llmux splits it and restores the signature on the `functionCall`
//! part it sends to Gemini.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Between the call's own id and its signature. Neither Gemini's ids nor llmux's generated
/// ones (`call_<token>_<n>`) contain it, so the first one is the split.
const MARK: &str = "__gts_";

/// The id a client gets for a call with `signature`.
pub(crate) fn with_signature(id: &str, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(s) => format!("{id}{MARK}{}", URL_SAFE_NO_PAD.encode(s.as_bytes())),
        None => id.to_string(),
    }
}

/// A client's call id → the call's own id and the signature it carries, if any. An id that
/// only looks like one (its tail is not valid base64url text) is taken whole.
pub(crate) fn split(id: &str) -> (&str, Option<String>) {
    let Some((base, sig)) = id.split_once(MARK) else {
        return (id, None);
    };
    match URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(s) => (base, Some(s)),
        None => (id, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_leaves_plain_ids_alone() {
        let sig = "CiQBcsjafE3+/k9Q==";
        let id = with_signature("fc_1", Some(sig));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{id}"
        );
        assert_eq!(split(&id), ("fc_1", Some(sig.to_string())));
        assert_eq!(with_signature("fc_1", None), "fc_1");
        assert_eq!(split("call_abc_0"), ("call_abc_0", None));
        assert_eq!(split("x__gts_!!"), ("x__gts_!!", None));
    }
}

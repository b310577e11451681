//! Client authentication on the data plane: which credential a call carries, and the hook that checks it.

use axum::http::HeaderMap;
use std::future::Future;
use std::pin::Pin;

/// Who is calling, once a virtual key checked out.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub key_id: String,
    pub app_id: String,
    pub key_name: String,
    /// Models the key may use; empty means any.
    pub models: Vec<String>,
    /// The key's rate limits (shared: an identity is cloned on every call).
    pub limits: std::sync::Arc<crate::limits::KeyLimits>,
}

impl Identity {
    /// Whether the key may call `model` (compared by Ollama's `:latest` rule, pin prefix ignored).
    pub fn allows(&self, model: &str) -> bool {
        if self.models.is_empty() {
            return true;
        }
        let bare = model.split_once('/').map_or(model, |(_, m)| m);
        let same = llmux_wire::model::same_model;
        self.models.iter().any(|m| same(m, model) || same(m, bare))
    }
}

/// Why a credential was refused: a 401 in the caller's dialect, but `Unavailable` a 503.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid,
    Expired,
    Revoked,
    /// The key store could not be asked (the call is refused rather than let through).
    Unavailable(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str(
                "missing API key: send a virtual key as `Authorization: Bearer sk-llmux-…` (or `x-api-key`)",
            ),
            AuthError::Invalid => f.write_str("invalid API key"),
            AuthError::Expired => f.write_str("this API key has expired"),
            AuthError::Revoked => f.write_str("this API key has been revoked"),
            AuthError::Unavailable(why) => write!(f, "cannot check the API key right now: {why}"),
        }
    }
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Identity, AuthError>> + Send + 'a>>;

/// Checks a client credential. Implemented over the store (with a cache) by the control plane.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// Why a caller is not taken as an administrator (in the caller's dialect: 401, 403 or 503).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No valid admin credential.
    Unauthorized(String),
    /// A valid credential without the admin role (a viewer).
    Forbidden(String),
    /// The check could not be made (the user store is unreachable).
    Unavailable(String),
}

pub type AdminFuture<'a> = Pin<Box<dyn Future<Output = Result<String, AdminRefusal>> + Send + 'a>>;

/// Asks "is this caller an administrator" for data-plane paths that are admin-only (Ollama model
/// management). Implemented by the control plane over the admin token and its users (the same
/// rule as the admin API); set once with [`crate::Gateway::set_admin_check`].
pub trait AdminCheck: Send + Sync {
    /// The actor's name (a username, or `admin-token`) when `token` is the admin token or an
    /// admin user's login token.
    fn check<'a>(&'a self, token: &'a str) -> AdminFuture<'a>;
}

/// How every llmux virtual key begins (the store's `VIRTUAL_KEY_PREFIX`).
pub const VIRTUAL_KEY_PREFIX: &str = "sk-llmux-";

/// Whether `token` is an llmux virtual key (rather than a provider key or an SDK's placeholder).
pub fn is_virtual_key(token: &str) -> bool {
    token.starts_with(VIRTUAL_KEY_PREFIX)
}

/// The credential a call carries, whichever way its SDK sends it: `Authorization: Bearer`
/// (OpenAI, Ollama), `x-api-key` (Anthropic), `x-goog-api-key` or `?key=` (Gemini).
pub fn credential<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    header("authorization")
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        })
        .or_else(|| header("x-api-key"))
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| {
            query?
                .split('&')
                .find_map(|p| p.strip_prefix("key="))
                .filter(|k| !k.is_empty())
        })
}

/// Compares secrets without an early exit, so timing does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn credentials_of_every_sdk() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, None), None);
        assert_eq!(credential(&h, Some("alt=sse&key=gk")), Some("gk"));
        h.insert("x-goog-api-key", HeaderValue::from_static("g"));
        assert_eq!(credential(&h, None), Some("g"));
        h.insert("x-api-key", HeaderValue::from_static("a"));
        assert_eq!(credential(&h, None), Some("a"));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-llmux-x-y"),
        );
        assert_eq!(credential(&h, None), Some("sk-llmux-x-y"));
    }

    #[test]
    fn model_restrictions() {
        let id = Identity {
            key_id: "k".into(),
            app_id: "a".into(),
            key_name: "n".into(),
            models: vec!["llama3".into(), "gpt-4o".into()],
            limits: Default::default(),
        };
        assert!(id.allows("llama3:latest"));
        assert!(id.allows("gpu-a/llama3"));
        assert!(id.allows("gpt-4o"));
        assert!(!id.allows("gpt-4o-mini"));
        let any = Identity {
            models: vec![],
            ..id
        };
        assert!(any.allows("anything"));
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

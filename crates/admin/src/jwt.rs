//! Admin session tokens: JWT (HS256) signed with a secret derived from the master key.
//!
//! HMAC-SHA256 comes from the `hmac` crate; the JWT framing is written out here rather than
//! pulling a JWT crate: we issue and check exactly one algorithm, and accepting only `HS256`
//! from our own header closes the "alg: none" class of bugs by construction.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// How long a login token is valid.
pub const TOKEN_TTL_SECS: i64 = 12 * 3600;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// What a token says: who (name, user id, session epoch), with which role, until when (unix
/// seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// `admin` or `viewer` at login time (the role is re-read from the store on each call).
    pub role: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// The user's id: a user deleted and created again under the same name is someone else.
    /// Empty in tokens issued before it existed, which therefore no longer verify as a session.
    #[serde(default)]
    pub uid: String,
    /// The user's session epoch at login; a password or role change moves it on.
    #[serde(default)]
    pub ver: i64,
}

/// Signs `claims` as a compact JWT.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mac = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three parts, bad base64/JSON, another algorithm, or a bad signature.
    #[error("invalid token")]
    Invalid,
    /// Past `exp`.
    #[error("token expired: log in again")]
    Expired,
}

/// Checks the signature (constant time) and expiry of `token` at `now` (unix seconds).
pub fn verify(secret: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Invalid)?;
    let expected = hmac_sha256(secret, format!("{header}.{payload}").as_bytes());
    if !bool::from(expected.as_slice().ct_eq(&signature)) {
        return Err(TokenError::Invalid);
    }
    // Only after the signature checked out is anything in the token trusted or even parsed.
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Invalid)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Invalid)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Invalid);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Invalid)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sign_verify_expire_tamper() {
        let claims = Claims {
            sub: "ann".into(),
            role: "admin".into(),
            iat: 100,
            exp: 200,
            uid: "usr_1".into(),
            ver: 3,
        };
        let token = sign(b"secret", &claims);
        assert_eq!(verify(b"secret", &token, 150), Ok(claims));
        assert_eq!(verify(b"secret", &token, 200), Err(TokenError::Expired));
        assert_eq!(verify(b"other", &token, 150), Err(TokenError::Invalid));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"ann","role":"admin","iat":1,"exp":999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(b"secret", &parts.join("."), 150),
            Err(TokenError::Invalid)
        );
        assert_eq!(verify(b"secret", "a.b", 150), Err(TokenError::Invalid));
    }
}

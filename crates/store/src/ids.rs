//! Random identifiers (`up_…`, `vk_…`), random bytes and the current time in unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

const ALPHANUMERIC: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of row ids (16 alphanumerics ≈ 95 bits).
const ID_LEN: usize = 16;

/// `len` random characters from `[0-9A-Za-z]` (no `-`/`_`, so ids can be delimited by them).
/// Uses rand's thread-local CSPRNG (ChaCha, seeded from the OS), so the result is fit for
/// secrets too.
pub(crate) fn random_alphanumeric(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rand::fill(&mut buf[..]);
        for &byte in &buf {
            // 248 = 4 * 62: rejecting larger bytes keeps the distribution uniform.
            if byte < 248 && out.len() < len {
                out.push(char::from(ALPHANUMERIC[usize::from(byte % 62)]));
            }
        }
    }
    out
}

/// A new row id: `prefix` + `_` + 16 random alphanumerics, e.g. `up_3kT9…`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_alphanumeric(ID_LEN))
}

/// `N` random bytes from the CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out[..]);
    out
}

/// The current time in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ids_have_prefix_length_and_alphabet() {
        let id = new_id("up");
        assert!(id.starts_with("up_"));
        assert_eq!(id.len(), 3 + ID_LEN);
        assert!(id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(new_id("up"), new_id("up"));
        assert_eq!(random_alphanumeric(100).len(), 100);
    }
}

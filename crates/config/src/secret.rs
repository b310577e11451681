//! `Secret`: a string (API key, admin token) that never shows up in logs or Debug output.

use std::fmt;

/// A secret string: Debug and Display print `***`; never logged.
///
/// Use [`Secret::expose`] only at the point where the value is actually sent somewhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value; call this only where the secret is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A hint that lets an operator tell keys apart without revealing them: `…` plus the last
    /// four characters for secrets of at least 12 characters (so the hint is a small fraction
    /// of the secret), `***` otherwise.
    pub fn masked(&self) -> String {
        let count = self.0.chars().count();
        if count >= 12 {
            let tail: String = self.0.chars().skip(count - 4).collect();
            format!("…{tail}")
        } else {
            "***".to_owned()
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("sk-very-secret-value-1234");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "sk-very-secret-value-1234");
    }

    #[test]
    fn masked_shows_only_a_short_tail_of_long_secrets() {
        assert_eq!(Secret::new("sk-abcdefgh1234").masked(), "…1234");
        assert_eq!(Secret::new("abcdefghijkl").masked(), "…ijkl");
        assert_eq!(Secret::new("abcdefghijk").masked(), "***");
        assert_eq!(Secret::new("").masked(), "***");
    }
}

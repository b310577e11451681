//! Times in the admin API: unix milliseconds in the store, RFC 3339 (UTC) on the wire.

use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 of unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    llmux_wire::time::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

/// An optional time field as JSON.
pub fn opt_rfc3339(ms: Option<i64>) -> serde_json::Value {
    ms.map_or(serde_json::Value::Null, |ms| rfc3339_ms(ms).into())
}

/// Parses an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`) into unix milliseconds;
/// `None` when malformed or not a real date.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    llmux_wire::time::parse_rfc3339_ms(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trip() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000] {
            assert_eq!(parse_rfc3339(&rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00+01:00"),
            parse_rfc3339("2024-01-01T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-02-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }
}

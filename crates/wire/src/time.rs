//! Timestamps as the wire formats spell them (RFC 3339 written and read, UTC), over the
//! `jiff` date-time crate.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

/// RFC 3339 in UTC with Go's `RFC3339Nano` rules (trailing zeros trimmed), as Ollama's `created_at`.
/// Times before 1970 print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    Timestamp::try_from(t.max(UNIX_EPOCH))
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Parses an RFC 3339 time with its offset (`2024-01-01T00:00:00.5+01:00`, `…Z`) into unix
/// milliseconds; `None` when malformed or not a real date (2024-02-31).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(Timestamp::as_millisecond)
}

/// `2023-08-04T19:22:45.499127Z` or `…-07:00` → Unix seconds (`None` before 1970).
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = s.parse::<Timestamp>().ok()?;
    u64::try_from(t.as_second()).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_go_rfc3339_nano() {
        let at = |secs: u64, nanos: u32| rfc3339(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00Z");
        assert_eq!(
            at(1_691_178_739, 385_406_455),
            "2023-08-04T19:52:19.385406455Z"
        );
        assert_eq!(at(1_691_178_739, 500_000_000), "2023-08-04T19:52:19.5Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-08-04T08:52:19.385406455-07:00"),
            Some(1_691_164_339)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00+01:30"),
            Some(1_709_202_600)
        );
        for bad in [
            "",
            "2023",
            "2023-08-04T08:52:19",
            "2023-13-04T08:52:19Z",
            "xxxx-08-04T08:52:19Z",
            "2023-08-04T08:52:19+0",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let now = SystemTime::now();
        let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(parse_rfc3339(&rfc3339(now)), Some(secs));
    }

    #[test]
    fn parses_offsets_and_rejects_impossible_dates() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-01-01T01:00:00.250+01:00"),
            parse_rfc3339_ms("2024-01-01T00:00:00.25Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "tomorrow",
            "",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}

//! Why an attempt at an upstream failed: one typed class, read by the failover, the call log,
//! metrics and traces alike (never parsed from text, never passed as a bare index).

use reqwest::StatusCode;
use std::time::Duration;

/// The class of a failed attempt; decides what the failover does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Connect error, reset or timeout before the first byte, 5xx, a redirect, an answer that
    /// broke before it reached the client: try another upstream; counts against this one's breaker.
    OtherUpstream,
    /// 429: rest this key (for `Retry-After`, capped) and try another key or upstream. Not a
    /// breaker failure.
    Throttled,
    /// 401/402/403: this key is bad; disable it and try another key of the same upstream.
    BadKey,
}

impl FailureClass {
    /// Every class, in the order metrics keep their counters.
    pub const ALL: [FailureClass; 3] = [
        FailureClass::OtherUpstream,
        FailureClass::Throttled,
        FailureClass::BadKey,
    ];

    /// The label of `llmux_attempt_failures_total{class=…}`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::OtherUpstream => "other_upstream",
            FailureClass::Throttled => "throttled",
            FailureClass::BadKey => "bad_key",
        }
    }

    /// The position of this class in [`FailureClass::ALL`].
    pub fn index(self) -> usize {
        match self {
            FailureClass::OtherUpstream => 0,
            FailureClass::Throttled => 1,
            FailureClass::BadKey => 2,
        }
    }
}

/// One failed attempt, as the failover reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    /// The upstream's `Retry-After` (a 429's), already parsed and clamped.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of the upstream itself (no answer, or an answer that is none).
    pub const UPSTREAM: Failure = Failure {
        class: FailureClass::OtherUpstream,
        retry_after: None,
    };

    /// The error class the call log records for this failed attempt: the status's class when
    /// the upstream answered, else `rate_limited`/`authentication` by class, `upstream_error`
    /// for no answer.
    pub fn log_class(self, status: Option<u16>) -> &'static str {
        match (status.and_then(crate::accounting::status_class), self.class) {
            (Some(c), _) => c,
            (None, FailureClass::Throttled) => "rate_limited",
            (None, FailureClass::BadKey) => "authentication",
            (None, FailureClass::OtherUpstream) => "upstream_error",
        }
    }
}

/// Classifies an HTTP status from an upstream; `None`: the client's own error (400, 404, 413,
/// 422, context length…), whose answer goes back to the client as it is.
pub fn classify_status(status: StatusCode, retry_after: Option<&str>) -> Option<Failure> {
    let class = match status.as_u16() {
        429 => {
            return Some(Failure {
                class: FailureClass::Throttled,
                retry_after: retry_after.and_then(crate::retry::parse_retry_after),
            })
        }
        401..=403 => FailureClass::BadKey,
        // Other 5xx (501 Not Implemented, 505, …) will not get better elsewhere for this
        // request shape, but a sick upstream answering odd 5xx still is one: every 5xx (and a
        // 408) is the upstream's failure.
        408 | 500..=599 => FailureClass::OtherUpstream,
        _ => return None,
    };
    Some(Failure {
        class,
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::IM_A_TEAPOT);
        let class = |c: u16| classify_status(s(c), None).map(|f| f.class);
        for c in [500, 501, 502, 503, 504, 529, 408] {
            assert_eq!(class(c), Some(FailureClass::OtherUpstream), "{c}");
        }
        for c in [401, 402, 403] {
            assert_eq!(class(c), Some(FailureClass::BadKey), "{c}");
        }
        for c in [400, 404, 413, 422] {
            assert_eq!(class(c), None, "{c}");
        }
        assert_eq!(
            classify_status(s(429), Some("7")),
            Some(Failure {
                class: FailureClass::Throttled,
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert_eq!(
            classify_status(s(429), Some("soon")),
            Some(Failure {
                class: FailureClass::Throttled,
                retry_after: None
            })
        );
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, Some("1e20"))
                .and_then(|f| f.retry_after),
            Some(llmux_config::MAX_DURATION)
        );
    }

    #[test]
    fn labels_and_log_classes() {
        let labels: Vec<_> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, ["other_upstream", "throttled", "bad_key"]);
        for (i, c) in FailureClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let f = |class| Failure {
            class,
            retry_after: None,
        };
        assert_eq!(f(FailureClass::Throttled).log_class(None), "rate_limited");
        assert_eq!(f(FailureClass::BadKey).log_class(None), "authentication");
        assert_eq!(
            f(FailureClass::OtherUpstream).log_class(None),
            "upstream_error"
        );
        assert_eq!(
            f(FailureClass::OtherUpstream).log_class(Some(429)),
            crate::accounting::status_class(429).unwrap_or_default()
        );
    }
}

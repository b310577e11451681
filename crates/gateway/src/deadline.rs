//! `Instant + Duration` that cannot panic: a sum past the clock's range becomes a far-future instant.

use std::time::Duration;

/// What "never" is when a deadline would overflow the clock: about 30 years, as tokio does.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + d`, or a far-future instant when that overflows (std clock).
pub fn after(start: std::time::Instant, d: Duration) -> std::time::Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

/// `start + d`, or a far-future instant when that overflows (tokio clock, pausable in tests).
pub fn after_tokio(start: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_sums_saturate_far_ahead() {
        let now = std::time::Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) >= now + Duration::from_secs(86_400 * 365));
        let now = tokio::time::Instant::now();
        assert!(after_tokio(now, Duration::MAX) >= now + Duration::from_secs(86_400 * 365));
    }
}

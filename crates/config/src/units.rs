//! Parsing of human-friendly durations ("1m30s") and sizes ("32MiB") used throughout the config.

use std::time::Duration;

use crate::error::ValueError;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The longest duration any setting takes (timeouts, cooldowns, intervals, windows…): one day.
/// Longer values are almost surely typos, and an unbounded one would overflow the clock
/// arithmetic of the gateway (`Instant + Duration` panics past the clock's range).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `d` if it is at most [`MAX_DURATION`], else an error quoting `written` (the value as the
/// user wrote it).
pub fn bounded_duration(
    written: impl std::fmt::Display,
    d: Duration,
) -> Result<Duration, ValueError> {
    if d > MAX_DURATION {
        Err(ValueError::DurationTooLong(written.to_string()))
    } else {
        Ok(d)
    }
}

fn duration_error(s: &str) -> ValueError {
    ValueError::Duration(s.to_owned())
}

/// Parses a duration such as `"500ms"`, `"5s"`, `"1m"`, `"2h"`, `"1m30s"`, `"1.5s"`, or a bare
/// integer meaning seconds (`"30"`).
///
/// Units are `ms`, `s`, `m` and `h` (case-insensitive); components may be combined and may carry
/// a decimal fraction. Negative, empty and unit-less fractional values are rejected, and so
/// is anything longer than [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    parse_unbounded(s).and_then(|d| bounded_duration(format_args!("{s:?}"), d))
}

fn parse_unbounded(s: &str) -> Result<Duration, ValueError> {
    let text = s.trim();
    if text.is_empty() {
        return Err(duration_error(s));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ValueError::DurationTooLarge(s.to_owned()));
    }

    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(duration_error(s));
        }
        let after_num = after_num.trim_start();
        let unit_len = after_num
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (unit, after_unit) = after_num.split_at(unit_len);
        let unit_nanos: u128 = match unit.to_ascii_lowercase().as_str() {
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            // A missing unit is only allowed for a lone integer, handled above: "1m30" is
            // more likely a typo than "1m30s".
            _ => return Err(duration_error(s)),
        };
        let too_large = || ValueError::DurationTooLarge(s.to_owned());
        let whole = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse::<u128>().map_err(|_| too_large())?
        };
        // Digits past nanosecond precision cannot change the result for any unit >= 1ms.
        let frac_digits = &frac_digits[..frac_digits.len().min(9)];
        let frac = if frac_digits.is_empty() {
            0
        } else {
            let value = frac_digits.parse::<u128>().map_err(|_| too_large())?;
            value * unit_nanos / 10u128.pow(frac_digits.len() as u32)
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(frac))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(too_large)?;
        rest = after_unit.trim_start();
    }

    let secs = u64::try_from(total / NANOS_PER_SEC)
        .map_err(|_| ValueError::DurationTooLarge(s.to_owned()))?;
    // The remainder is below 10^9, so it always fits in u32.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

fn size_error(s: &str) -> ValueError {
    ValueError::Size(s.to_owned())
}

/// Parses a size such as `"32MiB"`, `"512KiB"`, `"1GiB"`, `"10MB"`, `"1KB"`, `"1024B"` or a bare
/// integer number of bytes. Units are case-insensitive; `KB`/`MB`/`GB`/`TB` are powers of 1000
/// and `KiB`/`MiB`/`GiB`/`TiB` powers of 1024.
pub fn parse_size(s: &str) -> Result<usize, ValueError> {
    let text = s.trim();
    let digits_len = text.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, unit) = text.split_at(digits_len);
    if digits.is_empty() {
        return Err(size_error(s));
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(size_error(s)),
    };
    let too_large = || ValueError::SizeTooLarge(s.to_owned());
    let count = digits.parse::<u64>().map_err(|_| too_large())?;
    let bytes = count.checked_mul(multiplier).ok_or_else(too_large)?;
    usize::try_from(bytes).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms").unwrap(), ms(500));
        assert_eq!(parse_duration("5s").unwrap(), ms(5_000));
        assert_eq!(parse_duration("1m").unwrap(), ms(60_000));
        assert_eq!(parse_duration("2h").unwrap(), ms(7_200_000));
        assert_eq!(parse_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse_duration("1h30m").unwrap(), ms(5_400_000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1_500));
        assert_eq!(parse_duration("0.25m").unwrap(), ms(15_000));
        assert_eq!(parse_duration("30").unwrap(), ms(30_000));
        assert_eq!(parse_duration(" 1m 30s ").unwrap(), ms(90_000));
        assert_eq!(parse_duration("10MS").unwrap(), ms(10));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations() {
        for bad in [
            "", " ", "5x", "-5s", "s", "1.s5", "1m30", "5 sec", "1.5", ".s", "1h-5m", "5s!",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid duration"), "{bad:?} gave {err}");
        }
        assert_eq!(
            parse_duration("5x").unwrap_err().to_string(),
            r#"invalid duration "5x" (use e.g. "500ms", "5s", "1m", "1h30m")"#
        );
        assert!(parse_duration("99999999999999999999999h")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn durations_are_bounded_at_one_day() {
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("86400").unwrap(), MAX_DURATION);
        for long in ["24h1ms", "86401", "9300000000000000000", "25h", "1441m"] {
            let err = parse_duration(long).unwrap_err().to_string();
            assert!(err.contains("maximum of 24h"), "{long:?} gave {err}");
        }
    }

    /// A small deterministic generator (xorshift64*), so the fuzz loop is reproducible.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random and edge-case duration strings: the parser never panics, and what it accepts is
    /// within the bound.
    #[test]
    fn duration_parser_fuzz() {
        const PARTS: [&str; 20] = [
            "0",
            "1",
            "9",
            "86400",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999999",
            ".",
            "5",
            "ms",
            "s",
            "m",
            "h",
            "H",
            " ",
            "-",
            "e20",
            "1e20",
            "\u{0}",
            "\u{1F600}",
        ];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for _ in 0..20_000 {
            let n = 1 + rng.below(6);
            let text: String = (0..n).map(|_| PARTS[rng.below(PARTS.len())]).collect();
            if let Ok(d) = parse_duration(&text) {
                assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
            }
            let number = rng.next() >> rng.below(64);
            for text in [
                number.to_string(),
                format!("{number}ms"),
                format!("{number}h"),
            ] {
                if let Ok(d) = parse_duration(&text) {
                    assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
                }
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1KB").unwrap(), 1_000);
        assert_eq!(parse_size("1024B").unwrap(), 1024);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("32mib").unwrap(), 32 << 20);
        assert_eq!(parse_size("32 MiB").unwrap(), 32 << 20);
    }

    #[test]
    fn bad_sizes() {
        for bad in ["", "MiB", "32XB", "-1", "1.5MiB", "32 MiB extra"] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid size"), "{bad:?} gave {err}");
        }
        assert!(parse_size("99999999999999999999TiB")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }
}

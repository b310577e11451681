//! The gateway's recent log lines, kept in memory (a bounded ring) for the admin API's
//! `GET /logs` and the console's Gateway log page.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// How many lines the ring keeps; older ones are dropped first.
pub const CAPACITY: usize = 10_000;

/// One log line with its sequence number (increasing from 1, never reused in a process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Position in the process's log; `after=` pages on it.
    pub seq: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE` (empty when the line names none).
    pub level: &'static str,
    /// The line as written to stderr, without colours or the trailing newline.
    pub text: String,
}

/// A bounded ring of log lines.
#[derive(Default)]
pub struct LogRing {
    inner: Mutex<(u64, VecDeque<Line>)>,
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

impl LogRing {
    /// The process's ring (what `Tee` writes to).
    pub fn global() -> &'static LogRing {
        static RING: OnceLock<LogRing> = OnceLock::new();
        RING.get_or_init(LogRing::default)
    }

    /// Adds one formatted line (ANSI colours are stripped; the level is read from it).
    pub fn push(&self, raw: &str) {
        let text = strip_ansi(raw.trim_end_matches(['\n', '\r']));
        if text.is_empty() {
            return;
        }
        let level = level_of(&text);
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let (seq, lines) = &mut *guard;
        *seq += 1;
        if lines.len() == CAPACITY {
            lines.pop_front();
        }
        lines.push_back(Line {
            seq: *seq,
            level,
            text,
        });
    }

    /// Up to `limit` lines after `after`, oldest first, at `min_level` or more severe
    /// (`None`: all), the newest ones when more match; and the newest sequence number, read
    /// under the same lock (where the next poll starts).
    pub fn since(&self, after: u64, min_level: Option<&str>, limit: usize) -> (Vec<Line>, u64) {
        let rank = |l: &str| LEVELS.iter().position(|x| x.eq_ignore_ascii_case(l));
        let max_rank = min_level.and_then(rank);
        let Ok(guard) = self.inner.lock() else {
            return (Vec::new(), after);
        };
        let mut out: Vec<Line> = guard
            .1
            .iter()
            .rev()
            .take_while(|l| l.seq > after)
            .filter(|l| match max_rank {
                None => true,
                Some(max) => rank(l.level).is_some_and(|r| r <= max),
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        (out, guard.0.max(after))
    }
}

/// The first level word in a formatted line (`2026-… INFO llmux: …`, or JSON's `"level":"INFO"`).
fn level_of(text: &str) -> &'static str {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .find_map(|word| LEVELS.iter().find(|l| **l == word).copied())
        .unwrap_or("")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params… final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log writer that passes everything to stderr and keeps each line in the global ring
/// (one writer per event: the line is pushed when the writer is dropped).
#[derive(Default)]
pub struct Tee {
    buf: Vec<u8>,
}

impl Write for Tee {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        std::io::stderr().write(data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        for line in text.lines() {
            LogRing::global().push(line);
        }
    }
}

/// `GET /logs?after=&level=&limit=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    after: Option<u64>,
    level: Option<String>,
    limit: Option<usize>,
}

/// `GET /logs`: lines after `after` (default: the start of the ring), oldest first, at
/// `level` or more severe; `next` is the `after` of the following poll.
pub async fn list(
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> crate::error::ApiResult<axum::Json<serde_json::Value>> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=CAPACITY).contains(&limit) {
        return Err(crate::error::ApiError::field(
            "limit",
            format!("must be 1..={CAPACITY}"),
        ));
    }
    let level = q.level.as_deref().filter(|l| !l.is_empty());
    if let Some(l) = level {
        if !LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l)) {
            return Err(crate::error::ApiError::field(
                "level",
                "one of error, warn, info, debug, trace",
            ));
        }
    }
    let after = q.after.unwrap_or(0);
    let ring = LogRing::global();
    let (lines, next) = ring.since(after, level, limit);
    let lines: Vec<serde_json::Value> = lines
        .into_iter()
        .map(|l| serde_json::json!({ "seq": l.seq, "level": l.level, "text": l.text }))
        .collect();
    Ok(axum::Json(
        serde_json::json!({ "lines": lines, "next": next }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_reads_levels_and_filters() {
        let ring = LogRing::default();
        ring.push(
            "\u{1b}[2m2026-11-30T10:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m llmux: started\n",
        );
        ring.push("2026-11-30T10:00:01Z  WARN gateway: upstream gpu-a is down");
        ring.push(r#"{"timestamp":"…","level":"ERROR","fields":{"message":"boom"}}"#);
        let (all, next) = ring.since(0, None, 100);
        assert_eq!(next, 3);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].text, "2026-11-30T10:00:00Z  INFO llmux: started");
        assert_eq!(
            all.iter().map(|l| l.level).collect::<Vec<_>>(),
            ["INFO", "WARN", "ERROR"]
        );
        let warn: Vec<u64> = ring
            .since(0, Some("warn"), 100)
            .0
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(warn, [2, 3]);
        assert_eq!(ring.since(2, None, 100).0.len(), 1);
        assert_eq!(
            ring.since(0, None, 1).0[0].seq,
            3,
            "the newest when limited"
        );
        for i in 0..CAPACITY {
            ring.push(&format!("INFO line {i}"));
        }
        let (kept, _) = ring.since(0, None, usize::MAX);
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].seq, 4);
    }
}

//! Stream framing: splits SSE events and NDJSON lines out of bytes that arrive split anywhere.

/// One Server-Sent Event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (WHATWG rules that matter here: `\n`, `\r\n` or `\r` line ends,
/// `:` comments, `data` lines joined, an event dispatched at a blank line).
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds bytes; every event completed by them is appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A lone `\r` at the very end may be the first half of `\r\n`: wait for more.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                self.line(&line, out);
                i += if b == b'\r' && self.buf.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
    }

    /// The stream ended: an event not yet closed by a blank line is dispatched anyway.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = String::from_utf8_lossy(&self.buf).into_owned();
            self.buf.clear();
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push(value.to_string());
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take(),
                data: self.data.join("\n"),
            });
        }
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }
}

/// Incremental NDJSON splitter: yields each complete, non-blank line.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<String>) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.buf[start..start + pos]);
            let line = line.trim();
            if !line.is_empty() {
                out.push(line.to_string());
            }
            start += pos + 1;
        }
        self.buf.drain(..start);
    }

    pub fn finish(&mut self, out: &mut Vec<String>) {
        let line = String::from_utf8_lossy(&self.buf).trim().to_string();
        self.buf.clear();
        if !line.is_empty() {
            out.push(line);
        }
    }
}

/// Writes one SSE event: optional `event:` line, the data, a blank line.
pub fn write_sse(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_split_anywhere() {
        let text = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for cut in 0..text.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.feed(&text[..cut], &mut out);
            p.feed(&text[cut..], &mut out);
            p.finish(&mut out);
            assert_eq!(out.len(), 3, "cut at {cut}");
            assert_eq!(out[0].event.as_deref(), Some("message_start"));
            assert_eq!(out[0].data, "{\"a\":1}");
            assert_eq!(out[1].data, "x\ny");
            assert_eq!(out[2].data, "[DONE]");
        }
    }

    #[test]
    fn ndjson_split_anywhere() {
        let text = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}";
        for cut in 0..text.len() {
            let mut s = LineSplitter::new();
            let mut out = Vec::new();
            s.feed(&text[..cut], &mut out);
            s.feed(&text[cut..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"], "cut at {cut}");
        }
    }

    #[test]
    fn write_sse_round_trips() {
        let mut out = Vec::new();
        write_sse(&mut out, Some("ping"), "{}");
        assert_eq!(out, b"event: ping\ndata: {}\n\n");
    }
}

//! Secrets out of logged bodies: API keys, bearer tokens, JWTs and credential-named values are
//! replaced before a request or answer is kept in the call log.

/// Text for the call log with credentials removed: the whole value of any field named like a
/// credential (`authorization`, `api_key`, `x-api-key`, `password`, `secret`, `token`, …,
/// quoted or not, also inside JSON-in-a-string such as tool-call arguments), and anywhere in
/// the text whatever is shaped like one: `Bearer …`, a whole JWT, `sk-…`, `AIza…`.
pub fn redact(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !is_word(b[i]) || (i > 0 && is_word(b[i - 1])) {
            i += 1;
            continue;
        }
        let end = word_end(b, i);
        if let Some((secret_start, secret_end, replacement)) = secret_shape(text, i, end) {
            out.push_str(&text[copied..secret_start]);
            out.push_str(replacement);
            copied = secret_end;
            i = secret_end;
            continue;
        }
        if is_credential_name(&text[i..end]) {
            if let Some((value_start, value_end)) = value_span(b, end) {
                out.push_str(&text[copied..value_start]);
                out.push_str("***");
                copied = value_end;
                i = value_end;
                continue;
            }
        }
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Bytes of identifiers and of the secrets matched here (base64url, JWT segments, key ids).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn word_end(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| !is_word(c))
        .map_or(b.len(), |n| from + n)
}

/// A secret starting at the word `text[start..end]`: `(from, to, replacement)` of what to
/// replace.
fn secret_shape(text: &str, start: usize, end: usize) -> Option<(usize, usize, &'static str)> {
    let b = text.as_bytes();
    let word = &text[start..end];
    // A JWT: three base64url segments, the first a JSON header (`eyJ` = `{"`); all of it goes.
    if word.starts_with("eyJ") && word.len() >= 10 && b.get(end) == Some(&b'.') {
        let second = word_end(b, end + 1);
        if second > end + 1 && b.get(second) == Some(&b'.') {
            return Some((start, word_end(b, second + 1), "***"));
        }
    }
    for (prefix, kept) in [("sk-", "sk-***"), ("AIza", "AIza***")] {
        if word.starts_with(prefix) && word.len() >= prefix.len() + 8 {
            return Some((start, end, kept));
        }
    }
    if word.eq_ignore_ascii_case("bearer") {
        let token_start = end + b[end..].iter().take_while(|&&c| c == b' ').count();
        if token_start > end {
            let token_end = b[token_start..]
                .iter()
                .position(|&c| !(is_word(c) || matches!(c, b'.' | b'~' | b'+' | b'/' | b'=')))
                .map_or(b.len(), |n| token_start + n);
            if token_end - token_start >= 8 {
                return Some((token_start, token_end, "***"));
            }
        }
    }
    None
}

/// Whether a field, header or parameter of this name holds a credential (case, `-` and `_`
/// ignored).
fn is_credential_name(word: &str) -> bool {
    if word.len() > 40 {
        return false;
    }
    let name: String = word
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const EXACT: [&str; 11] = [
        "authorization",
        "proxyauthorization",
        "token",
        "key",
        "passwd",
        "pwd",
        "cookie",
        "setcookie",
        "credential",
        "credentials",
        "privatekey",
    ];
    const SUFFIXES: [&str; 8] = [
        "apikey",
        "secret",
        "password",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "sessiontoken",
    ];
    EXACT.contains(&name.as_str()) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Where the value after a credential name is: past an optional closing quote (`"`, `'` or a
/// JSON-escaped `\"`), a `:` or `=`, and a quoted string's opening quote. `None` when no
/// value follows, or it is an object, an array, `null` or a boolean.
fn value_span(b: &[u8], name_end: usize) -> Option<(usize, usize)> {
    let mut j = name_end;
    if b[j..].starts_with(b"\\\"") {
        j += 2;
    } else if matches!(b.get(j), Some(b'"' | b'\'')) {
        j += 1;
    }
    let spaces = |j: usize| {
        j + b[j..]
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count()
    };
    j = spaces(j);
    if !matches!(b.get(j), Some(b':' | b'=')) {
        return None;
    }
    j = spaces(j + 1);
    let rest = &b[j..];
    if rest.starts_with(b"\\\"") {
        // A string inside a JSON string: up to the next escaped quote.
        let start = j + 2;
        let len = b[start..].windows(2).position(|w| w == b"\\\"")?;
        return Some((start, start + len));
    }
    match rest.first()? {
        b'"' | b'\'' => {
            let quote = rest[0];
            let start = j + 1;
            let mut k = start;
            while k < b.len() && b[k] != quote {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            Some((start, k.min(b.len())))
        }
        b'{' | b'[' => None,
        _ if rest.starts_with(b"null")
            || rest.starts_with(b"true")
            || rest.starts_with(b"false") =>
        {
            None
        }
        _ => {
            let len = rest
                .iter()
                .position(|c| {
                    matches!(
                        c,
                        b'\n' | b'\r' | b'"' | b'&' | b',' | b';' | b'}' | b']' | b'<'
                    )
                })
                .unwrap_or(rest.len());
            (len > 0).then_some((j, j + len))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let r = redact(
            r#"{"k":"sk-abcdefghijklmnop","x-api-key":"whatever","t":"Bearer abcdefghijk","g":"AIzaSyABCDEFGH123"}"#,
        );
        assert!(!r.contains("abcdefghijklmnop"), "{r}");
        assert!(!r.contains("whatever"), "{r}");
        assert!(!r.contains("SyABCDEFGH"), "{r}");
        assert!(r.contains("sk-***"));
    }

    #[test]
    fn whole_credential_values_and_jwts_are_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let cases = [
            (
                r#"{"authorization": "Basic dXNlcjpwYXNzd29yZA=="}"#,
                "dXNlcjpw",
            ),
            (
                "GET /\r\nAuthorization: Basic dXNlcjpwYXNzd29yZA==\r\n",
                "dXNlcjpw",
            ),
            (r#"{"Proxy-Authorization":"Digest u=1"}"#, "Digest"),
            (r#"{"api_key": "abc123"}"#, "abc123"),
            (
                r#"{"client_secret":"s3cr3t","password":"hunter2"}"#,
                "s3cr3t",
            ),
            (
                r#"{"client_secret":"s3cr3t","password":"hunter2"}"#,
                "hunter2",
            ),
            (r#"{"token": "opaque-xyz"}"#, "opaque-xyz"),
            ("https://h/v1?api_key=qwerty&x=1", "qwerty"),
            (r#"{"arguments":"{\"password\": \"hunter2\"}"}"#, "hunter2"),
            (
                &format!(r#"{{"note":"my token is {jwt} ok"}}"#),
                "eyJzdWIiOiJhbm4ifQ",
            ),
            (&format!("x {jwt}"), "c2lnbmF0dXJl"),
            ("bearer abcdefghijklmn.op", "ijklmn"),
        ];
        for (text, secret) in cases {
            let r = redact(text);
            assert!(!r.contains(secret), "{text} -> {r}");
        }
        let r = redact(r#"{"api_key": "abc123", "x": 1}"#);
        assert_eq!(r, r#"{"api_key": "***", "x": 1}"#);
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            r#"{"model":"gpt-4o","max_tokens":100,"token_type":"Bearer","usage":{"prompt_tokens":3}}"#,
            "a task-management tool; tokens: 12",
            r#"{"key": null, "authorization": {"scheme": "none"}}"#,
            "über — ünïcödé",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}

//! Reads `model` and `stream` from a JSON request body without building a tree, and rewrites only `model`.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// What the router needs from a request body. The body itself is forwarded untouched
/// (or with only the `model` value replaced), so the rest is never parsed into values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// The requested model; `None` when the body has no string `model` (nor `name`, for Ollama's `/api/show`).
    pub model: Option<String>,
    /// Byte range of the model's JSON string (quotes included) inside the body.
    pub model_span: Option<Range<usize>>,
    /// The `stream` flag as sent; `None` when absent (each dialect has its own default).
    pub stream: Option<bool>,
    /// `stream_options.include_usage` was sent as true (OpenAI).
    pub include_usage: bool,
    /// OpenAI's `user` (an end-user id), when it is a string; used for session affinity.
    pub user: Option<String>,
}

/// Why a body could not be read as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not valid JSON, or not an object at the top level.
    Malformed(String),
    /// A field has the wrong type, e.g. `"model": 5`.
    Field {
        field: &'static str,
        message: String,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed(m) => write!(f, "request body is not a valid JSON object: {m}"),
            BodyError::Field { field, message } => write!(f, "invalid `{field}`: {message}"),
        }
    }
}

impl std::error::Error for BodyError {}

impl Peek {
    /// Reads the top level of `body`. Nested values are skipped by the scanner, not materialized.
    pub fn parse(body: &[u8]) -> Result<Peek, BodyError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let fields = de
            .deserialize_map(TopVisitor)
            .map_err(|e| BodyError::Malformed(e.to_string()))?;
        de.end().map_err(|e| BodyError::Malformed(e.to_string()))?;
        let mut peek = Peek {
            model: None,
            model_span: None,
            stream: None,
            include_usage: false,
            user: None,
        };
        if let Some(raw) = fields.user {
            // Only a string is an id; anything else is the upstream's business to reject.
            peek.user = serde_json::from_str::<String>(raw.get()).ok();
        }
        // `name` is Ollama's older spelling of `model` (e.g. /api/show); `model` wins when both are present.
        for (field, raw) in [("name", fields.name), ("model", fields.model)] {
            let Some(raw) = raw else { continue };
            let text = raw.get();
            if text == "null" {
                continue;
            }
            let value: String = serde_json::from_str(text).map_err(|_| BodyError::Field {
                field: if field == "model" { "model" } else { "name" },
                message: "expected a string".into(),
            })?;
            let start = offset_in(body, text);
            peek.model = Some(value);
            peek.model_span = start.map(|s| s..s + text.len());
        }
        if let Some(raw) = fields.stream {
            peek.stream = match raw.get() {
                "true" => Some(true),
                "false" => Some(false),
                "null" => None,
                _ => {
                    return Err(BodyError::Field {
                        field: "stream",
                        message: "expected a boolean".into(),
                    })
                }
            };
        }
        if let Some(raw) = fields.stream_options {
            #[derive(serde::Deserialize)]
            struct StreamOptions {
                #[serde(default)]
                include_usage: Option<bool>,
            }
            if raw.get() != "null" {
                let opts: StreamOptions =
                    serde_json::from_str(raw.get()).map_err(|e| BodyError::Field {
                        field: "stream_options",
                        message: e.to_string(),
                    })?;
                peek.include_usage = opts.include_usage.unwrap_or(false);
            }
        }
        Ok(peek)
    }

    /// The body with the model value replaced by `model`; every other byte is kept as sent.
    /// Returns the body unchanged when the model already reads `model` or has no known span.
    pub fn with_model(&self, body: &Bytes, model: &str) -> Bytes {
        let Some(span) = self.model_span.clone() else {
            return body.clone();
        };
        if self.model.as_deref() == Some(model) || span.end > body.len() {
            return body.clone();
        }
        let quoted = json_string(model);
        let mut out = BytesMut::with_capacity(body.len() - span.len() + quoted.len());
        out.extend_from_slice(&body[..span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[span.end..]);
        out.freeze()
    }
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail; fall back to an empty literal rather than panic.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Where `inner` (a sub-slice handed out by the deserializer) starts inside `outer`.
fn offset_in(outer: &[u8], inner: &str) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then_some(start)
}

#[derive(Default)]
struct TopFields<'a> {
    model: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
    user: Option<&'a RawValue>,
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = TopFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = TopFields::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "model" => &mut fields.model,
                "name" => &mut fields.name,
                "stream" => &mut fields.stream,
                "stream_options" => &mut fields.stream_options,
                "user" => &mut fields.user,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(fields)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let body = br#"{"model":"llama3","messages":[{"role":"user","content":"hi \"model\""}],"stream":true}"#;
        let p = Peek::parse(body).unwrap();
        assert_eq!(p.model.as_deref(), Some("llama3"));
        assert_eq!(p.stream, Some(true));
        assert_eq!(&body[p.model_span.clone().unwrap()], br#""llama3""#);
    }

    #[test]
    fn rewrite_touches_only_model() {
        let text = r#"{ "messages": [{"model":"inner"}], "model" : "openai/gpt-4o", "x": 1.50 }"#;
        let body = Bytes::from(text);
        let p = Peek::parse(&body).unwrap();
        let out = p.with_model(&body, "gpt-4o");
        assert_eq!(
            &out[..],
            br#"{ "messages": [{"model":"inner"}], "model" : "gpt-4o", "x": 1.50 }"#
        );
        // Same model: the very same bytes come back.
        assert_eq!(p.with_model(&body, "openai/gpt-4o"), body);
    }

    #[test]
    fn escaped_model_names_round_trip() {
        let body = Bytes::from_static(br#"{"model":"a\u002fb"}"#);
        let p = Peek::parse(&body).unwrap();
        assert_eq!(p.model.as_deref(), Some("a/b"));
        let out = p.with_model(&body, "we\"ird");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "we\"ird");
    }

    #[test]
    fn name_is_ollamas_older_spelling() {
        let p = Peek::parse(br#"{"name":"llama3"}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("llama3"));
        let p = Peek::parse(br#"{"name":"a","model":"b"}"#).unwrap();
        assert_eq!(p.model.as_deref(), Some("b"));
    }

    #[test]
    fn missing_model_is_none() {
        let p = Peek::parse(br#"{"messages":[]}"#).unwrap();
        assert_eq!(p.model, None);
        assert_eq!(p.stream, None);
        let p = Peek::parse(br#"{"model":null}"#).unwrap();
        assert_eq!(p.model, None);
    }

    #[test]
    fn user_is_read_when_a_string() {
        let p = Peek::parse(br#"{"model":"m","user":"alice"}"#).unwrap();
        assert_eq!(p.user.as_deref(), Some("alice"));
        let p = Peek::parse(br#"{"model":"m","user":{"id":1}}"#).unwrap();
        assert_eq!(p.user, None);
    }

    #[test]
    fn include_usage() {
        let p =
            Peek::parse(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
                .unwrap();
        assert!(p.include_usage);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for body in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"model\":",
            b"nul",
            b"{\"model\":\"a\"} trailing",
            b"\xff\xfe",
            b"{\"model\":\"a\",\"model\":\"b\"}",
        ] {
            assert!(
                matches!(Peek::parse(body), Err(BodyError::Malformed(_))),
                "{body:?}"
            );
        }
        assert!(matches!(
            Peek::parse(br#"{"model":5}"#),
            Err(BodyError::Field { field: "model", .. })
        ));
        assert!(matches!(
            Peek::parse(br#"{"model":"m","stream":"yes"}"#),
            Err(BodyError::Field {
                field: "stream",
                ..
            })
        ));
    }
}

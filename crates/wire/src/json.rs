//! Typed reads of JSON request fields shared by every codec: each error names the field's path.
//!
//! Two ways in, one core ([`typed`]): the free functions read an object of the OpenAI family of
//! bodies (OpenAI, Anthropic, Responses; errors say "must be …"), and [`Fields`] reads one object
//! of a Gemini or Ollama body (errors say "expected …"; Gemini's keys in either case).

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use serde_json::{json, Map, Value};

use crate::canonical::{Tool, TranslateError};

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

/// An error about the field at `field` (a path such as `messages[0].content`; empty for the body).
pub(crate) fn bad(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

pub(crate) fn parse_object(body: &[u8]) -> Result<Obj, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad("", "the body must be a JSON object")),
        Err(e) => Err(bad("", format!("invalid JSON: {e}"))),
    }
}

/// `prefix.key`, or `key` when the prefix is empty (the top of the body).
pub(crate) fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The core of every typed read: absent is `None`, a value `conv` accepts is `Some`, any other
/// value is the error `err` makes.
pub(crate) fn typed<'a, T>(
    v: Option<&'a Value>,
    conv: impl FnOnce(&'a Value) -> Option<T>,
    err: impl FnOnce() -> TranslateError,
) -> Result<Option<T>, TranslateError> {
    match v {
        None => Ok(None),
        Some(v) => conv(v).map(Some).ok_or_else(err),
    }
}

/// A `u32` written as an integer.
pub(crate) fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// A `u32` written as an integer or a whole float (`40.0`, as some SDKs send).
fn as_whole_u32(v: &Value) -> Option<u32> {
    let f = v.as_f64()?;
    (f >= 0.0 && f <= f64::from(u32::MAX) && f.fract() == 0.0).then_some(f as u32)
}

/// An `i64` written as an integer or a whole float.
fn as_whole_i64(v: &Value) -> Option<i64> {
    match (v.as_i64(), v.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(f as i64),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAI family: free functions over an object and the path of its prefix.

/// `o[key]`, with `null` read as absent.
pub(crate) fn field<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn read<'a, T>(
    o: &'a Obj,
    prefix: &str,
    key: &str,
    conv: impl FnOnce(&'a Value) -> Option<T>,
    must_be: &str,
) -> Result<Option<T>, TranslateError> {
    typed(field(o, key), conv, || bad(path(prefix, key), must_be))
}

pub(crate) fn opt_str(o: &Obj, prefix: &str, key: &str) -> Result<Option<String>, TranslateError> {
    read(
        o,
        prefix,
        key,
        |v| v.as_str().map(str::to_string),
        "must be a string",
    )
}

pub(crate) fn req_str(o: &Obj, prefix: &str, key: &str) -> Result<String, TranslateError> {
    opt_str(o, prefix, key)?.ok_or_else(|| bad(path(prefix, key), "is required"))
}

pub(crate) fn opt_f64(o: &Obj, prefix: &str, key: &str) -> Result<Option<f64>, TranslateError> {
    read(o, prefix, key, Value::as_f64, "must be a number")
}

pub(crate) fn opt_u32(o: &Obj, prefix: &str, key: &str) -> Result<Option<u32>, TranslateError> {
    read(o, prefix, key, as_u32, "must be a non-negative integer")
}

pub(crate) fn opt_i64(o: &Obj, prefix: &str, key: &str) -> Result<Option<i64>, TranslateError> {
    read(o, prefix, key, Value::as_i64, "must be an integer")
}

pub(crate) fn opt_bool(o: &Obj, prefix: &str, key: &str) -> Result<Option<bool>, TranslateError> {
    read(o, prefix, key, Value::as_bool, "must be a boolean")
}

pub(crate) fn opt_array<'a>(
    o: &'a Obj,
    prefix: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, TranslateError> {
    read(o, prefix, key, Value::as_array, "must be an array")
}

/// The objects of the array `o[key]` (absent: none), each read by `read` given its path.
pub(crate) fn each_object<T>(
    o: &Obj,
    key: &str,
    mut read: impl FnMut(&Obj, &str) -> Result<T, TranslateError>,
) -> Result<Vec<T>, TranslateError> {
    let Some(items) = opt_array(o, "", key)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        out.push(read(as_obj(item, &at)?, &at)?);
    }
    Ok(out)
}

pub(crate) fn as_obj<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, TranslateError> {
    v.as_object().ok_or_else(|| bad(at, "must be an object"))
}

/// A `u64` member of a JSON object, 0 when absent or not a number (token counts).
pub(crate) fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Inserts `key: value` when there is a value.
pub(crate) fn put<T: Into<Value>>(o: &mut Obj, key: &str, value: Option<T>) {
    if let Some(v) = value {
        o.insert(key.into(), v.into());
    }
}

/// A tool's `name`, `description` (when it has one) and its parameters' schema under
/// `schema_key` (an empty object schema when it takes none).
pub(crate) fn tool_object(t: &Tool, schema_key: &str) -> Obj {
    let mut f = Map::new();
    f.insert("name".into(), json!(t.name));
    put(&mut f, "description", t.description.clone());
    let schema = if t.parameters.is_null() {
        empty_schema()
    } else {
        t.parameters.clone()
    };
    f.insert(schema_key.into(), schema);
    f
}

/// A function tool read from `t` (at `tp`): `name`, `description` and the parameters' schema
/// under `schema_key` (an empty object schema when absent).
pub(crate) fn decode_tool(t: &Obj, tp: &str, schema_key: &str) -> Result<Tool, TranslateError> {
    Ok(Tool {
        name: req_str(t, tp, "name")?,
        description: opt_str(t, tp, "description")?,
        parameters: field(t, schema_key).cloned().unwrap_or_else(empty_schema),
        strict: opt_bool(t, tp, "strict")?,
    })
}

/// [`tool_object`] with the tool's `strict` flag, for the dialects that have one (OpenAI,
/// Anthropic).
pub(crate) fn strict_tool_object(t: &Tool, schema_key: &str) -> Obj {
    let mut f = tool_object(t, schema_key);
    put(&mut f, "strict", t.strict);
    f
}

/// Tool-call argument text → the JSON object the dialects that want an object send (empty
/// text is `{}`); `None` when it is not a JSON object.
pub(crate) fn arguments_object(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// Like [`arguments_object`] for answers, which cannot fail: text that is no object is kept
/// under `arguments`.
pub(crate) fn arguments_value(arguments: &str) -> Value {
    arguments_object(arguments).unwrap_or_else(|| json!({ "arguments": arguments }))
}

/// The message of an `error` member written the OpenAI or Anthropic way: a string, or an
/// object with a `message` ("upstream error" without one).
pub(crate) fn error_message(e: &Value) -> Option<String> {
    match e {
        Value::String(s) => Some(s.clone()),
        Value::Object(e) => Some(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_string(),
        ),
        _ => None,
    }
}

/// The JSON schema of a tool that takes no arguments.
pub(crate) fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

// ---------------------------------------------------------------------------------------------
// Gemini and Ollama: one object's fields, read through `Fields`.

/// `max_output_tokens` → `maxOutputTokens`; camelCase keys are returned as they are.
pub(crate) fn camel(key: &str) -> Cow<'_, str> {
    if !key.contains('_') {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for (i, c) in key.chars().enumerate() {
        if c == '_' && i > 0 {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One JSON object's fields at `path`, for typed reads whose errors name `path.key`. Nulls
/// count as absent. Made with [`Fields::any_case`], keys are read in camelCase whatever case
/// was sent (Gemini), and so are the objects [`Fields::obj`] reads inside it.
pub(crate) struct Fields<'a> {
    path: String,
    any_case: bool,
    items: Vec<(Cow<'a, str>, &'a Value)>,
}

impl<'a> Fields<'a> {
    /// The fields of `v` (at `path`), keys as sent.
    pub fn of(v: &'a Value, path: &str) -> Result<Fields<'a>, TranslateError> {
        Fields::new(v, path, false)
    }

    /// The fields of `v` (at `path`), keys read in camelCase.
    pub fn any_case(v: &'a Value, path: &str) -> Result<Fields<'a>, TranslateError> {
        Fields::new(v, path, true)
    }

    fn new(v: &'a Value, path: &str, any_case: bool) -> Result<Fields<'a>, TranslateError> {
        let Value::Object(map) = v else {
            return Err(bad(path, "expected a JSON object"));
        };
        let key = |k: &'a String| {
            if any_case {
                camel(k)
            } else {
                Cow::Borrowed(k.as_str())
            }
        };
        Ok(Fields {
            path: path.to_string(),
            any_case,
            items: map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (key(k), v))
                .collect(),
        })
    }

    /// The path of `key` in this object, for errors.
    pub fn at(&self, key: &str) -> String {
        path(&self.path, key)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The path of the first field outside `known` and `ignored`, if any.
    pub fn unknown(&self, known: &[&str], ignored: &[&str]) -> Option<String> {
        self.items
            .iter()
            .map(|(k, _)| k.as_ref())
            .find(|k| !known.contains(k) && !ignored.contains(k))
            .map(|k| self.at(k))
    }

    fn read<T>(
        &self,
        key: &str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, TranslateError> {
        typed(self.get(key), conv, || bad(self.at(key), expected))
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        self.read(key, Value::as_str, "expected a string")
    }

    pub fn need_str(&self, key: &str) -> Result<&'a str, TranslateError> {
        self.str(key)?
            .ok_or_else(|| bad(self.at(key), "missing required field"))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, TranslateError> {
        self.read(key, Value::as_bool, "expected true or false")
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, TranslateError> {
        self.read(key, Value::as_f64, "expected a number")
    }

    /// A non-negative integer; SDKs may send `40.0` for an integer field.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, TranslateError> {
        if self.f64(key)?.is_none() {
            return Ok(None);
        }
        self.read(key, as_whole_u32, "expected a non-negative integer")
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, TranslateError> {
        self.read(key, as_whole_i64, "expected an integer")
    }

    /// An array; absent reads as empty.
    pub fn array(&self, key: &str) -> Result<&'a [Value], TranslateError> {
        let a = self.read(key, Value::as_array, "expected an array")?;
        Ok(a.map_or(&[], Vec::as_slice))
    }

    /// An array of strings; absent reads as empty.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, TranslateError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(format!("{}[{i}]", self.at(key)), "expected a string")),
            })
            .collect()
    }

    /// A string (one item) or an array of strings; absent reads as empty.
    pub fn one_or_more_strings(&self, key: &str) -> Result<Vec<String>, TranslateError> {
        if let Some(Value::String(s)) = self.get(key) {
            return Ok(vec![s.clone()]);
        }
        self.strings(key)
    }

    /// The object at `key`, read the same way as this one.
    pub fn obj(&self, key: &str) -> Result<Option<Fields<'a>>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Fields::new(v, &self.at(key), self.any_case).map(Some),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// base64 payloads (OpenAI's `encoding_format: "base64"` embeddings).

/// Standard alphabet, padded.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes what servers write loosely: either alphabet (`-_` or `+/`), padding anywhere or
/// none, line breaks and spaces skipped, stray trailing bits dropped. `None` for anything else.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let mut clean: Vec<u8> = text
        .bytes()
        .filter(|c| !matches!(c, b'=' | b'\n' | b'\r' | b' '))
        .map(|c| match c {
            b'-' => b'+',
            b'_' => b'/',
            c => c,
        })
        .collect();
    // One character left over holds six bits: no whole byte.
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    LENIENT.decode(clean).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_decode_is_lenient_like_the_servers_that_write_it() {
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zg").unwrap(), b"f");
        assert_eq!(base64_decode("Z g=\n=").unwrap(), b"f");
        assert_eq!(
            base64_decode("-_8").unwrap(),
            base64_decode("+/8=").unwrap()
        );
        assert_eq!(
            base64_decode("Zm9vY").unwrap(),
            b"foo",
            "six stray bits make no byte"
        );
        assert_eq!(
            base64_decode("Zh").unwrap(),
            b"f",
            "stray trailing bits are dropped"
        );
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn fields_read_any_case_and_name_the_path() {
        let v = serde_json::json!({"max_output_tokens": 40.0, "topK": null, "stop": ["a", 1]});
        let f = Fields::any_case(&v, "generationConfig").unwrap();
        assert_eq!(f.u32("maxOutputTokens").unwrap(), Some(40));
        assert_eq!(f.get("topK"), None, "null is absent");
        let e = f.strings("stop").unwrap_err();
        assert_eq!(e.field, "generationConfig.stop[1]");
        assert_eq!(
            f.unknown(&["maxOutputTokens"], &[]).as_deref(),
            Some("generationConfig.stop")
        );
        let exact = Fields::of(&v, "").unwrap();
        assert_eq!(exact.get("maxOutputTokens"), None);
        assert_eq!(
            exact.one_or_more_strings("missing").unwrap(),
            Vec::<String>::new()
        );
    }
}

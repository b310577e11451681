//! Typed reads of JSON request fields shared by every codec: each error names the field's path.

use serde_json::{json, Map, Value};

use crate::canonical::TranslateError;

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

pub(crate) fn parse_object(body: &[u8]) -> Result<Obj, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(TranslateError::new("", "the body must be a JSON object")),
        Err(e) => Err(TranslateError::new("", format!("invalid JSON: {e}"))),
    }
}

/// `o[key]`, with `null` read as absent.
pub(crate) fn field<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

pub(crate) fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(crate) fn opt_str(o: &Obj, prefix: &str, key: &str) -> Result<Option<String>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TranslateError::new(path(prefix, key), "must be a string")),
    }
}

pub(crate) fn req_str(o: &Obj, prefix: &str, key: &str) -> Result<String, TranslateError> {
    opt_str(o, prefix, key)?.ok_or_else(|| TranslateError::new(path(prefix, key), "is required"))
}

pub(crate) fn opt_f64(o: &Obj, prefix: &str, key: &str) -> Result<Option<f64>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| TranslateError::new(path(prefix, key), "must be a number")),
    }
}

pub(crate) fn opt_u32(o: &Obj, prefix: &str, key: &str) -> Result<Option<u32>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                TranslateError::new(path(prefix, key), "must be a non-negative integer")
            }),
    }
}

pub(crate) fn opt_i64(o: &Obj, prefix: &str, key: &str) -> Result<Option<i64>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| TranslateError::new(path(prefix, key), "must be an integer")),
    }
}

pub(crate) fn opt_bool(o: &Obj, prefix: &str, key: &str) -> Result<Option<bool>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TranslateError::new(path(prefix, key), "must be a boolean")),
    }
}

pub(crate) fn opt_array<'a>(
    o: &'a Obj,
    prefix: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(TranslateError::new(path(prefix, key), "must be an array")),
    }
}

pub(crate) fn as_obj<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, TranslateError> {
    v.as_object()
        .ok_or_else(|| TranslateError::new(at, "must be an object"))
}

/// A `u64` member of a JSON object, 0 when absent or not a number (token counts).
pub(crate) fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The JSON schema of a tool that takes no arguments.
pub(crate) fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

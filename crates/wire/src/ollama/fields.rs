//! Typed reads of Ollama request fields.

use super::bad;
use crate::canonical::TranslateError;
use serde_json::{Map, Value};

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Typed reads of one JSON object's fields, errors naming `path.key`; nulls count as absent.
pub(super) struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    pub(super) fn of(v: &'a Value, path: &str) -> Result<Obj<'a>, TranslateError> {
        match v {
            Value::Object(map) => Ok(Obj {
                path: path.to_string(),
                map,
            }),
            _ => Err(bad(path, "expected a JSON object")),
        }
    }

    pub(super) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(self.at(key), "expected a string")),
        }
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(self.at(key), "expected true or false")),
        }
    }

    pub(super) fn f64(&self, key: &str) -> Result<Option<f64>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(self.at(key), "expected a number")),
        }
    }

    pub(super) fn i64(&self, key: &str) -> Result<Option<i64>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match (v.as_i64(), v.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Some(f as i64)),
                _ => Err(bad(self.at(key), "expected an integer")),
            },
        }
    }

    pub(super) fn array(&self, key: &str) -> Result<&'a [Value], TranslateError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(bad(self.at(key), "expected an array")),
        }
    }

    /// A string or an array of strings.
    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, TranslateError> {
        if let Some(Value::String(s)) = self.get(key) {
            return Ok(vec![s.clone()]);
        }
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(format!("{}[{i}]", self.at(key)), "expected a string")),
            })
            .collect()
    }
}

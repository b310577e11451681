//! Typed reads of Gemini request fields, keys in camelCase or snake_case.

use super::bad;
use crate::canonical::TranslateError;
use serde_json::Value;

/// `max_output_tokens` → `maxOutputTokens`; camelCase keys are returned as they are.
pub(super) fn camel(key: &str) -> String {
    if !key.contains('_') {
        return key.to_string();
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
    out
}

/// A JSON object of the Gemini request, keys read in camelCase whatever case was sent; nulls count as absent.
pub(super) struct Fields<'a> {
    path: String,
    items: Vec<(String, &'a Value)>,
}

impl<'a> Fields<'a> {
    pub(super) fn of(v: &'a Value, path: &str) -> Result<Fields<'a>, TranslateError> {
        let Value::Object(map) = v else {
            return Err(bad(path, "expected a JSON object"));
        };
        Ok(Fields {
            path: path.to_string(),
            items: map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (camel(k), v))
                .collect(),
        })
    }

    pub(super) fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Rejects any field outside `known` and `ignored`.
    pub(super) fn only(&self, known: &[&str], ignored: &[&str]) -> Result<(), TranslateError> {
        for (k, _) in &self.items {
            if !known.contains(&k.as_str()) && !ignored.contains(&k.as_str()) {
                return Err(bad(
                    self.at(k),
                    "this Gemini field cannot be translated to another dialect",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(self.at(key), "expected a string")),
        }
    }

    pub(super) fn need_str(&self, key: &str) -> Result<&'a str, TranslateError> {
        self.str(key)?
            .ok_or_else(|| bad(self.at(key), "missing required field"))
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

    /// A non-negative integer; SDKs may send `40.0` for an integer field.
    pub(super) fn u32(&self, key: &str) -> Result<Option<u32>, TranslateError> {
        match self.f64(key)? {
            None => Ok(None),
            Some(f) if f >= 0.0 && f <= f64::from(u32::MAX) && f.fract() == 0.0 => {
                Ok(Some(f as u32))
            }
            Some(_) => Err(bad(self.at(key), "expected a non-negative integer")),
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

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, TranslateError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(format!("{}[{i}]", self.at(key)), "expected a string")),
            })
            .collect()
    }

    pub(super) fn obj(&self, key: &str) -> Result<Option<Fields<'a>>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Fields::of(v, &self.at(key)).map(Some),
        }
    }
}

//! `${VAR}` interpolation over every string in a parsed TOML document, before it is typed.

use crate::error::{join_index, join_key, ConfigError};

/// Looks up an environment variable; injectable so tests need not touch the process environment.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Interpolates every string value in `table` (recursing into tables, arrays and inline tables).
/// Keys are left alone: they name settings, and substituting them would make errors hard to read.
pub(crate) fn interpolate_table(
    table: &mut toml::Table,
    path: &str,
    env: Env<'_>,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        interpolate_value(value, &join_key(path, key), env)?;
    }
    Ok(())
}

fn interpolate_value(value: &mut toml::Value, path: &str, env: Env<'_>) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            // Only allocate when there is something to substitute.
            if s.contains('$') {
                *s = interpolate_str(s, env).map_err(|message| ConfigError::new(path, message))?;
            }
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &join_index(path, index), env)?;
            }
        }
        toml::Value::Table(table) => interpolate_table(table, path, env)?,
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
    Ok(())
}

/// Expands `${NAME}`, `${NAME:-default}` and the `$${` escape in one string.
pub(crate) fn interpolate_str(input: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "unterminated \"${{\" in {input:?} (write \"$${{\" for a literal \"${{\")"
                ));
            };
            out.push_str(&expand(&after[..end], env)?);
            rest = &after[end + 1..];
        } else {
            // A `$` not followed by `{` is literal, so passwords and regexes need no escaping.
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands the inside of one `${...}`.
fn expand(expr: &str, env: Env<'_>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "invalid environment variable name {name:?} in \"${{{expr}}}\""
        ));
    }
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(format!("environment variable {name} is not set")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.5".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, String> {
        interpolate_str(s, &env)
    }

    #[test]
    fn substitutions() {
        assert_eq!(
            run("http://${HOST}:11434").unwrap(),
            "http://10.0.0.5:11434"
        );
        assert_eq!(run("${HOST}${HOST}").unwrap(), "10.0.0.510.0.0.5");
        assert_eq!(run("${MISSING:-x}").unwrap(), "x");
        assert_eq!(run("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(run("${HOST:-x}").unwrap(), "10.0.0.5");
        assert_eq!(run("${MISSING:-}").unwrap(), "");
        assert_eq!(run("${EMPTY}").unwrap(), "");
        assert_eq!(run("${MISSING:-a:-b}").unwrap(), "a:-b");
    }

    #[test]
    fn literals_and_escapes() {
        assert_eq!(run("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(run("a$b$").unwrap(), "a$b$");
        assert_eq!(run("$$").unwrap(), "$$");
        // Scanning is left to right: a lone `$`, then the `$${` escape.
        assert_eq!(run("$$${HOST}").unwrap(), "$${HOST}");
        assert_eq!(run("no dollars").unwrap(), "no dollars");
    }

    #[test]
    fn errors() {
        assert_eq!(
            run("${MISSING}").unwrap_err(),
            "environment variable MISSING is not set"
        );
        assert!(run("abc ${HOST").unwrap_err().starts_with("unterminated"));
        assert!(run("${}")
            .unwrap_err()
            .contains("invalid environment variable name"));
        assert!(run("${1A}")
            .unwrap_err()
            .contains("invalid environment variable name"));
        assert!(run("${A B}")
            .unwrap_err()
            .contains("invalid environment variable name"));
    }
}

//! Values serde reads with their own syntax (durations, sizes), and serde's errors reworded
//! into a `ConfigError` whose path names the key.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::{join_index, join_key, ConfigError};
use crate::{bounded_duration, parse_duration, parse_size};

/// A duration given as a string ("1m30s") or an integer number of seconds. Parsing happens
/// during deserialization so that `serde_path_to_error` attaches the key path to the error.
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration like "5s" or "1m30s", or an integer number of seconds"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                bounded_duration(v, Duration::from_secs(v))
                    .map(Dur)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                let secs = u64::try_from(v).map_err(|_| {
                    E::custom(format!("invalid duration {v} (must not be negative)"))
                })?;
                self.visit_u64(secs)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A size given as a string ("32MiB") or an integer number of bytes.
pub(super) struct Size(pub(super) usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size like "32MiB", or an integer number of bytes"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v} (must not be negative)")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Turns a serde error into a `ConfigError`, rewording serde's unknown/missing field messages
/// so that the offending key becomes part of the path.
pub(crate) fn serde_error(err: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    use serde_path_to_error::Segment;

    let mut path = String::new();
    let mut last_key = None;
    for segment in err.path().iter() {
        last_key = match segment {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        };
        path = match segment {
            Segment::Seq { index } => join_index(&path, *index),
            Segment::Map { key } => join_key(&path, key),
            Segment::Enum { variant } => join_key(&path, variant),
            Segment::Unknown => join_key(&path, "?"),
        };
    }
    let message = err.inner().message().trim_end();

    // serde: "unknown field `bogus`, expected one of `a`, `b`" (or "expected `a`", or
    // "there are no fields").
    if let Some((key, rest)) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
    {
        let hint = rest.trim_start_matches(", ").replace('`', "");
        let message = if hint.is_empty() {
            "unknown key".to_owned()
        } else {
            format!("unknown key ({hint})")
        };
        // serde_path_to_error already records the unknown key itself; add it only if not.
        let path = if last_key == Some(key) {
            path
        } else {
            join_key(&path, key)
        };
        return ConfigError::new(path, message);
    }
    // serde: "missing field `name`".
    if let Some((key, _)) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split_once('`'))
    {
        return ConfigError::new(join_key(&path, key), "required key is missing");
    }
    // `[upstreams]` instead of `[[upstreams]]` is an easy slip; serde alone only says "map".
    if path == "upstreams" && message.ends_with("expected a sequence") {
        return ConfigError::new(
            path,
            format!("{message} (write each upstream as an [[upstreams]] table)"),
        );
    }
    ConfigError::new(path, message)
}

//! JSON writes: `[{"table": "meter", "time": ..., "tags": {...}, "fields": {...}}, ...]`.
//!
//! The body is read into a small JSON tree of our own rather than `serde_json::Value`,
//! for two reasons: `Value`'s objects are sorted maps (unless the workspace-wide
//! `preserve_order` feature is on), which would lose the field order that decides the
//! column order of a new table, and they silently keep the last of two equal keys, which
//! we want to reject. Strings borrow from the body where they contain no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use storage::{FieldValue, LineError, ParsedLine, Row};

use crate::checks::{Shown, check_field_keys, reserved_time, sort_tags};
use crate::error::{Error, Result};
use crate::precision::Precision;

/// Parses a JSON write body into rows and per-element errors.
///
/// The body must be a JSON array; each element is one row:
///
/// ```json
/// [{"table": "meter", "time": "2024-05-01T12:00:00Z",
///   "tags": {"site": "berlin"}, "fields": {"power": 1520.5, "ok": true, "state": "on"}}]
/// ```
///
/// - `table` (required): non-empty string.
/// - `time` (optional): an integer in `precision`, or an RFC 3339 string (any offset,
///   stored as UTC nanoseconds); absent or `null` means `default_time_ns`.
/// - `tags` (optional): object of string values.
/// - `fields` (required, non-empty): numbers, booleans or strings. **Every JSON number
///   becomes a float field (`F64`)**, `12` included: JSON does not tell `12` from
///   `12.0`, and one type per field keeps a table's schema stable whatever a device
///   prints. Integers above 2^53 lose precision; use line protocol `12i`/`12u` for exact
///   integers.
///
/// Other keys are errors, as are `null` field values. Element numbers in [`ParsedLine`]
/// and [`LineError`] are 1-based positions in the array.
///
/// # Errors
///
/// [`Error::Json`] when the body is not JSON, [`Error::NotJsonArray`] when it is JSON but
/// not an array. Anything wrong inside an element is a [`LineError`] instead.
pub fn parse_json(
    body: &[u8],
    precision: Precision,
    default_time_ns: i64,
) -> Result<(Vec<ParsedLine>, Vec<LineError>)> {
    let elements = match serde_json::from_slice::<Json<'_>>(body).map_err(Error::Json)? {
        Json::Array(elements) => elements,
        other => {
            return Err(Error::NotJsonArray {
                found: other.kind(),
            });
        }
    };
    let mut lines = Vec::with_capacity(elements.len());
    let mut errors = Vec::new();
    for (index, element) in elements.into_iter().enumerate() {
        let number = index + 1;
        match parse_element(element, precision, default_time_ns) {
            Ok((table, row)) => lines.push(ParsedLine {
                line: number,
                table,
                row,
            }),
            Err(reason) => errors.push(LineError::new(number, reason)),
        }
    }
    Ok((lines, errors))
}

fn parse_element(
    element: Json<'_>,
    precision: Precision,
    default_time_ns: i64,
) -> Result<(String, Row), String> {
    let Json::Object(entries) = element else {
        return Err(format!(
            "element must be an object, found {}",
            element.kind()
        ));
    };
    let mut table = None;
    let mut time = None;
    let mut tags = None;
    let mut fields = None;
    for (key, value) in entries {
        let slot = match key.as_ref() {
            "table" => &mut table,
            "time" => &mut time,
            "tags" => &mut tags,
            "fields" => &mut fields,
            other => {
                return Err(format!(
                    "unknown key {} (expected table, time, tags, fields)",
                    Shown(other)
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("duplicate key {}", Shown(&key)));
        }
    }

    let table = match table {
        Some(Json::Str(name)) if !name.is_empty() => name.into_owned(),
        Some(Json::Str(_)) => return Err("\"table\" must not be empty".to_owned()),
        Some(other) => {
            return Err(format!(
                "\"table\" must be a string, found {}",
                other.kind()
            ));
        }
        None => return Err("missing \"table\"".to_owned()),
    };

    let mut tags = match tags {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Object(entries)) => parse_tags(entries)?,
        Some(other) => {
            return Err(format!(
                "\"tags\" must be an object, found {}",
                other.kind()
            ));
        }
    };
    sort_tags(&mut tags)?;

    let fields = match fields {
        Some(Json::Object(entries)) if entries.is_empty() => {
            return Err("\"fields\" must not be empty".to_owned());
        }
        Some(Json::Object(entries)) => parse_fields(entries)?,
        Some(other) => {
            return Err(format!(
                "\"fields\" must be an object, found {}",
                other.kind()
            ));
        }
        None => return Err("missing \"fields\"".to_owned()),
    };
    check_field_keys(&fields, &tags)?;

    let time = match time {
        None | Some(Json::Null) => default_time_ns,
        Some(value) => parse_time(value, precision)?,
    };
    Ok((table, Row { time, tags, fields }))
}

fn parse_tags(entries: Vec<(Cow<'_, str>, Json<'_>)>) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        check_key(&key, "tag")?;
        match value {
            Json::Str(v) if v.is_empty() => {
                return Err(format!("tag {}: empty value", Shown(&key)));
            }
            Json::Str(v) => tags.push((key.into_owned(), v.into_owned())),
            other => {
                return Err(format!(
                    "tag {}: value must be a string, found {}",
                    Shown(&key),
                    other.kind()
                ));
            }
        }
    }
    Ok(tags)
}

fn parse_fields(
    entries: Vec<(Cow<'_, str>, Json<'_>)>,
) -> Result<Vec<(String, FieldValue)>, String> {
    let mut fields = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        check_key(&key, "field")?;
        let value = match value {
            // See `parse_json`: all numbers are floats, on purpose.
            Json::Int(v) => FieldValue::F64(v as f64),
            Json::UInt(v) => FieldValue::F64(v as f64),
            Json::Float(v) => FieldValue::F64(v),
            Json::Bool(v) => FieldValue::Bool(v),
            Json::Str(v) => FieldValue::String(v.into_owned()),
            Json::Null => {
                return Err(format!(
                    "field {}: null is not allowed (leave the field out instead)",
                    Shown(&key)
                ));
            }
            other => {
                return Err(format!(
                    "field {}: value must be a number, boolean or string, found {}",
                    Shown(&key),
                    other.kind()
                ));
            }
        };
        fields.push((key.into_owned(), value));
    }
    Ok(fields)
}

fn check_key(key: &str, what: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("empty {what} key"));
    }
    if key == storage::TIME_COLUMN {
        return Err(reserved_time());
    }
    Ok(())
}

fn parse_time(value: Json<'_>, precision: Precision) -> Result<i64, String> {
    let out_of_range = |shown: &dyn fmt::Display| {
        format!(
            "time {shown} out of range for precision {precision} \
             (must lie between the years 1677 and 2262)"
        )
    };
    match value {
        Json::Int(v) => precision.to_nanos(v).ok_or_else(|| out_of_range(&v)),
        Json::UInt(v) => i64::try_from(v)
            .ok()
            .and_then(|v| precision.to_nanos(v))
            .ok_or_else(|| out_of_range(&v)),
        // `1.7e9` is an integer written as a float; JSON has no integer limit, so
        // serde_json also hands 1e30 or 2^70 over as floats.
        Json::Float(v) if v.fract() == 0.0 => {
            // -2^63 is exactly representable as f64; 2^63 is the first value too large.
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v) {
                precision.to_nanos(v as i64).ok_or_else(|| out_of_range(&v))
            } else {
                Err(out_of_range(&v))
            }
        }
        Json::Float(v) => Err(format!(
            "time {v} must be an integer in precision {precision} or an RFC 3339 string"
        )),
        Json::Str(text) => {
            let parsed = chrono::DateTime::parse_from_rfc3339(&text).map_err(|e| {
                format!(
                    "invalid time {}: {e} (expected RFC 3339, e.g. 2024-05-01T12:00:00Z)",
                    Shown(&text)
                )
            })?;
            parsed.timestamp_nanos_opt().ok_or_else(|| {
                format!(
                    "time {} out of range (must lie between the years 1677 and 2262)",
                    Shown(&text)
                )
            })
        }
        other => Err(format!(
            "\"time\" must be an integer or an RFC 3339 string, found {}",
            other.kind()
        )),
    }
}

/// A JSON value that keeps object keys in order (duplicates included) and borrows
/// strings from the body when it can.
#[derive(Debug, PartialEq)]
enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// What kind of value this is, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::UInt(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
        while let Some(key) = map.next_key::<Json<'de>>()? {
            let Json::Str(key) = key else {
                return Err(de::Error::custom("object key is not a string"));
            };
            entries.push((key, map.next_value()?));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests;

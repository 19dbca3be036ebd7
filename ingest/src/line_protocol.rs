//! InfluxDB line protocol: `measurement,tag=v field=1.5,n=2i,s="x" 1700000000000000000`.
//!
//! Why not the `influxdb-line-protocol` crate (2.0.0, from InfluxDB IOx)? It fitted badly
//! on every point this module exists for:
//! - it takes the whole body as `&str`, so one invalid UTF-8 byte would fail the whole
//!   request instead of the one line that holds it;
//! - its errors carry no line number, and its own line splitting (which lets quoted strings
//!   span lines) does not match the physical line numbers clients see in their files;
//! - it does not reject duplicate tags or fields, the reserved `time` column, or a tag
//!   and a field with the same name, so a second pass over every line would be needed;
//! - it brings nom 7 and snafu 0.7 into the tree for a grammar of five delimiters.
//!
//! So this is a single forward pass over the bytes of each line. It borrows from the body
//! and allocates only what the [`Row`] owns (the strings, two vectors): names without
//! escapes are copied in one go, numbers are parsed straight from the body.
//!
//! Grammar, following the InfluxDB line protocol reference:
//! - measurement, then `,key=value` tags, a space, `key=value` fields separated by commas,
//!   then optionally a space and an integer timestamp in the request's precision;
//! - in measurement names, tag keys, tag values and field keys a backslash escapes a comma,
//!   an equals sign, a space or a backslash; before any other character it is literal;
//! - string field values are in double quotes, where `\"` and `\\` are escapes;
//! - field values: float `1`, `-1.5`, `1e3`; integer `12i`; unsigned `12u`; boolean
//!   `t`, `T`, `true`, `True`, `TRUE` and the same for false; string `"..."`;
//! - lines are split on `\n` (a trailing `\r` is dropped); blank lines and lines whose
//!   first non-blank character is `#` are skipped.

use std::num::IntErrorKind;

use storage::{FieldValue, LineError, ParsedLine, Row, TIME_COLUMN};

use crate::checks::{Shown, check_field_keys, reserved_time, sort_tags};
use crate::precision::Precision;

/// Parses a line protocol body into rows and per-line errors.
///
/// Line numbers in both results are 1-based physical lines of `body`. Lines without a
/// timestamp get `default_time_ns`; others are converted from `precision` to
/// nanoseconds. Tags of each row are sorted by key; fields keep the order of the line.
/// A bad line never affects the others.
pub fn parse_line_protocol(
    body: &[u8],
    precision: Precision,
    default_time_ns: i64,
) -> (Vec<ParsedLine>, Vec<LineError>) {
    // Bodies are mostly valid lines: one pass to count them saves the reallocations.
    // memchr (SIMD) for finding newlines: the byte-at-a-time count and split were a
    // third of this function's time in a profile of 10,000-line requests.
    let expected_lines = memchr::memchr_iter(b'\n', body).count() + 1;
    let mut lines = Vec::with_capacity(expected_lines);
    let mut errors = Vec::new();

    let line_ends = memchr::memchr_iter(b'\n', body).chain([body.len()]);
    let mut line_start = 0;
    for (index, end) in line_ends.enumerate() {
        let raw = &body[line_start..end];
        line_start = end + 1;
        let number = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Some(start) = raw.iter().position(|&b| b != b' ' && b != b'\t') else {
            continue; // blank line
        };
        if raw[start] == b'#' {
            continue; // comment
        }
        let text = match std::str::from_utf8(&raw[start..]) {
            Ok(text) => text,
            Err(e) => {
                let column = start + e.valid_up_to() + 1;
                errors.push(LineError::new(
                    number,
                    format!("invalid UTF-8 at byte {column} of the line"),
                ));
                continue;
            }
        };
        match parse_line(text, precision, default_time_ns) {
            Ok((table, row)) => lines.push(ParsedLine {
                line: number,
                table,
                row,
            }),
            Err(reason) => errors.push(LineError::new(number, reason)),
        }
    }
    (lines, errors)
}

/// Parses one line that is known to be neither blank nor a comment and to start with a
/// non-blank character. The error is the reason for the client.
fn parse_line(
    line: &str,
    precision: Precision,
    default_time_ns: i64,
) -> Result<(String, Row), String> {
    let bytes = line.as_bytes();

    // Measurement.
    let (end, escaped) = scan_name(bytes, 0, |b| b == b',' || b == b' ');
    if end == 0 {
        return Err("missing measurement name".to_owned());
    }
    let table = unescape_name(&line[..end], escaped);
    let mut pos = end;

    // Tags.
    let mut tags: Vec<(String, String)> = Vec::new();
    while pos < bytes.len() && bytes[pos] == b',' {
        let key_start = pos + 1;
        let (key_end, key_escaped) =
            scan_name(bytes, key_start, |b| b == b'=' || b == b',' || b == b' ');
        if key_end == key_start {
            return Err("empty tag key".to_owned());
        }
        let key = unescape_name(&line[key_start..key_end], key_escaped);
        if bytes.get(key_end) != Some(&b'=') {
            return Err(format!("tag {}: missing '=' and value", Shown(&key)));
        }
        if key == TIME_COLUMN {
            return Err(reserved_time());
        }
        let value_start = key_end + 1;
        let (value_end, value_escaped) =
            scan_name(bytes, value_start, |b| b == b',' || b == b' ' || b == b'=');
        if bytes.get(value_end) == Some(&b'=') {
            return Err(format!(
                "tag {}: value contains an unescaped '=' (write it as \\=)",
                Shown(&key)
            ));
        }
        if value_end == value_start {
            return Err(format!("tag {}: missing value", Shown(&key)));
        }
        let value = unescape_name(&line[value_start..value_end], value_escaped);
        tags.push((key, value));
        pos = value_end;
    }
    sort_tags(&mut tags)?;

    // Fields.
    pos = skip_spaces(bytes, pos);
    if pos >= bytes.len() {
        return Err("missing fields".to_owned());
    }
    let mut fields: Vec<(String, FieldValue)> = Vec::with_capacity(8);
    loop {
        let key_start = pos;
        let (key_end, key_escaped) =
            scan_name(bytes, key_start, |b| b == b'=' || b == b',' || b == b' ');
        if key_end == key_start {
            return Err(if bytes.get(key_start) == Some(&b'=') {
                "empty field key".to_owned()
            } else {
                "missing field after ','".to_owned()
            });
        }
        let key = unescape_name(&line[key_start..key_end], key_escaped);
        if bytes.get(key_end) != Some(&b'=') {
            return Err(format!("field {}: missing '=' and value", Shown(&key)));
        }
        if key == TIME_COLUMN {
            return Err(reserved_time());
        }
        let (value, value_end) = parse_field_value(line, key_end + 1, &key)?;
        fields.push((key, value));
        pos = value_end;
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            _ => break,
        }
    }
    check_field_keys(&fields, &tags)?;

    // Timestamp.
    pos = skip_spaces(bytes, pos);
    let time = if pos >= bytes.len() {
        default_time_ns
    } else {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(bytes.len(), |n| pos + n);
        let text = &line[pos..end];
        let rest = skip_spaces(bytes, end);
        if rest < bytes.len() {
            return Err(format!(
                "unexpected text after timestamp: {}",
                Shown(&line[rest..])
            ));
        }
        parse_timestamp(text, precision)?
    };

    Ok((table, Row { time, tags, fields }))
}

/// Finds the end of a name (measurement, tag key or value, field key) starting at
/// `start`: the first byte for which `stop` holds that is not escaped by a backslash.
/// Also says whether the name contains a backslash, i.e. needs unescaping.
///
/// Skipping the byte after a backslash is right even inside a multi-byte character:
/// UTF-8 continuation bytes are never ASCII delimiters.
#[inline]
fn scan_name(bytes: &[u8], start: usize, stop: impl Fn(u8) -> bool) -> (usize, bool) {
    let mut i = start;
    let mut escaped = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            escaped = true;
            i += 2;
        } else if stop(b) {
            return (i, escaped);
        } else {
            i += 1;
        }
    }
    (bytes.len(), escaped)
}

/// Removes the escapes of a name: `\,`, `\=`, `\ ` and `\\`. A backslash before
/// anything else stays, as in InfluxDB.
fn unescape_name(raw: &str, escaped: bool) -> String {
    if !escaped {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next @ (',' | '=' | ' ' | '\\')) = chars.peek()
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

fn skip_spaces(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && bytes[pos] == b' ' {
        pos += 1;
    }
    pos
}

/// Parses the field value starting at `start` (just after `=`). Returns the value and the
/// position just after it, which is the end of the line, a comma or a space.
fn parse_field_value(line: &str, start: usize, key: &str) -> Result<(FieldValue, usize), String> {
    let bytes = line.as_bytes();
    match bytes.get(start) {
        None | Some(b',' | b' ') => Err(format!("field {}: missing value", Shown(key))),
        Some(b'"') => {
            let (value, end) = parse_string(line, start + 1)
                .ok_or_else(|| format!("field {}: unterminated string", Shown(key)))?;
            match bytes.get(end) {
                None | Some(b',' | b' ') => Ok((FieldValue::String(value), end)),
                Some(_) => Err(format!(
                    "field {}: unexpected text after the closing quote of a string",
                    Shown(key)
                )),
            }
        }
        Some(_) => {
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b',' || b == b' ')
                .map_or(bytes.len(), |n| start + n);
            let value = parse_scalar(&line[start..end], key)?;
            Ok((value, end))
        }
    }
}

/// Parses a quoted string whose content starts at `start`; returns the unescaped content
/// and the position after the closing quote, or `None` when the quote is missing.
fn parse_string(line: &str, start: usize) -> Option<(String, usize)> {
    let bytes = line.as_bytes();
    let mut i = start;
    let mut escaped = false;
    loop {
        match bytes.get(i)? {
            b'\\' if matches!(bytes.get(i + 1), Some(b'"' | b'\\')) => {
                escaped = true;
                i += 2;
            }
            b'"' => break,
            _ => i += 1,
        }
    }
    let raw = &line[start..i];
    if !escaped {
        return Some((raw.to_owned(), i + 1));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next @ ('"' | '\\')) = chars.peek()
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Some((out, i + 1))
}

/// Parses an unquoted field value: number or boolean.
fn parse_scalar(text: &str, key: &str) -> Result<FieldValue, String> {
    let bytes = text.as_bytes();
    let numeric = matches!(bytes[0], b'0'..=b'9' | b'-' | b'+' | b'.');
    if !numeric {
        return match text {
            "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Bool(false)),
            _ if is_nan_or_inf(text) => {
                Err(format!("field {}: NaN/Inf float not allowed", Shown(key)))
            }
            _ => Err(format!(
                "field {}: invalid value {} (strings must be in double quotes)",
                Shown(key),
                Shown(text)
            )),
        };
    }
    match bytes[bytes.len() - 1] {
        b'i' => {
            let digits = &text[..text.len() - 1];
            digits
                .parse::<i64>()
                .map(FieldValue::I64)
                .map_err(|e| match e.kind() {
                    IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => format!(
                        "field {}: integer {} out of range for a 64-bit signed integer",
                        Shown(key),
                        Shown(text)
                    ),
                    _ => format!("field {}: invalid integer {}", Shown(key), Shown(text)),
                })
        }
        b'u' => {
            let digits = &text[..text.len() - 1];
            digits.parse::<u64>().map(FieldValue::U64).map_err(|e| {
                if digits.starts_with('-')
                    && digits.len() > 1
                    && digits[1..].bytes().all(|b| b.is_ascii_digit())
                {
                    format!(
                        "field {}: unsigned integer {} cannot be negative",
                        Shown(key),
                        Shown(text)
                    )
                } else if matches!(e.kind(), IntErrorKind::PosOverflow) {
                    format!(
                        "field {}: unsigned integer {} out of range for a 64-bit unsigned integer",
                        Shown(key),
                        Shown(text)
                    )
                } else {
                    format!(
                        "field {}: invalid unsigned integer {}",
                        Shown(key),
                        Shown(text)
                    )
                }
            })
        }
        _ => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(FieldValue::F64(v)),
            Ok(_) if is_nan_or_inf(text) => {
                Err(format!("field {}: NaN/Inf float not allowed", Shown(key)))
            }
            Ok(_) => Err(format!(
                "field {}: float {} out of range",
                Shown(key),
                Shown(text)
            )),
            Err(_) => Err(format!(
                "field {}: invalid float {}",
                Shown(key),
                Shown(text)
            )),
        },
    }
}

/// True for the spellings of NaN and infinity that Rust's float parser would accept.
fn is_nan_or_inf(text: &str) -> bool {
    let unsigned = text.trim_start_matches(['+', '-']);
    ["nan", "inf", "infinity"]
        .iter()
        .any(|word| unsigned.eq_ignore_ascii_case(word))
}

fn parse_timestamp(text: &str, precision: Precision) -> Result<i64, String> {
    let value = text.parse::<i64>().map_err(|e| match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => {
            format!("timestamp {} out of range", Shown(text))
        }
        _ => format!(
            "invalid timestamp {}: expected an integer in precision {precision}",
            Shown(text)
        ),
    })?;
    precision.to_nanos(value).ok_or_else(|| {
        format!(
            "timestamp {value} out of range for precision {precision} \
             (must lie between the years 1677 and 2262)"
        )
    })
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

//! Property tests: rendering a valid row as line protocol (with every escape) parses back
//! to the same row, and no input whatsoever makes the parser panic or break the row
//! model's invariants.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use storage::{FieldValue, ParsedLine, Row, TIME_COLUMN};

use super::parse_line_protocol;
use crate::precision::Precision;

const NOW: i64 = 42;

/// Names: often from a small alphabet full of characters that need escaping, sometimes
/// any Unicode without line breaks and tabs (tabs are trimmed at the start of a line).
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c ,=\\\\\"#é⚡_]{1,8}", "[^\n\r\t]{1,12}",]
        .prop_filter("reserved", |n| n != TIME_COLUMN)
}

fn measurement() -> impl Strategy<Value = String> {
    // A line whose first character is `#` is a comment.
    name().prop_filter("comment", |n| !n.starts_with('#'))
}

fn value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(FieldValue::F64),
        any::<i64>().prop_map(FieldValue::I64),
        any::<u64>().prop_map(FieldValue::U64),
        any::<bool>().prop_map(FieldValue::Bool),
        prop_oneof!["[a\"\\\\ ,=]{0,8}", "[^\n\r]{0,16}"].prop_map(FieldValue::String),
    ]
}

prop_compose! {
    fn row()(
        tags in prop::collection::btree_map(name(), name(), 0..4),
        fields in prop::collection::btree_map(name(), value(), 1..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
        time in prop::option::of(any::<i64>()),
    ) -> (Row, Option<i64>) {
        let tags: Vec<(String, String)> = tags.into_iter().collect();
        (Row { time: time.unwrap_or(NOW), tags, fields }, time)
    }
}

fn valid_row() -> impl Strategy<Value = (String, Row, Option<i64>)> {
    (measurement(), row())
        .prop_filter("tag and field share a name", |(_, (row, _))| {
            let tags: BTreeMap<&str, ()> = row.tags.iter().map(|(k, _)| (k.as_str(), ())).collect();
            row.fields
                .iter()
                .all(|(k, _)| !tags.contains_key(k.as_str()))
        })
        .prop_map(|(m, (row, time))| (m, row, time))
}

/// Choices a client may make when writing a value, drawn at random.
#[derive(Debug, Clone, Copy)]
struct Style {
    exponent: bool,
    bool_spelling: usize,
    shuffle_tags: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), 0..5usize, any::<bool>()).prop_map(|(exponent, bool_spelling, shuffle_tags)| {
        Style {
            exponent,
            bool_spelling,
            shuffle_tags,
        }
    })
}

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn render(measurement: &str, row: &Row, time: Option<i64>, style: Style) -> String {
    let mut out = String::new();
    escape(&mut out, measurement, &[',', ' ']);
    let mut tags = row.tags.clone();
    if style.shuffle_tags {
        tags.reverse();
    }
    for (k, v) in &tags {
        out.push(',');
        escape(&mut out, k, &[',', '=', ' ']);
        out.push('=');
        escape(&mut out, v, &[',', '=', ' ']);
    }
    out.push(' ');
    for (i, (k, v)) in row.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(&mut out, k, &[',', '=', ' ']);
        out.push('=');
        match v {
            FieldValue::F64(x) if style.exponent => write!(out, "{x:e}").unwrap(),
            FieldValue::F64(x) => write!(out, "{x}").unwrap(),
            FieldValue::I64(x) => write!(out, "{x}i").unwrap(),
            FieldValue::U64(x) => write!(out, "{x}u").unwrap(),
            FieldValue::Bool(b) => {
                let spellings = if *b {
                    ["t", "T", "true", "True", "TRUE"]
                } else {
                    ["f", "F", "false", "False", "FALSE"]
                };
                out.push_str(spellings[style.bool_spelling]);
            }
            FieldValue::String(s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    if let Some(t) = time {
        write!(out, " {t}").unwrap();
    }
    out
}

/// What every parsed row must satisfy, whatever the input.
fn assert_row_model(line: &ParsedLine) {
    let row = &line.row;
    assert!(!line.table.is_empty());
    assert!(!row.fields.is_empty());
    assert!(row.tags.windows(2).all(|w| w[0].0 < w[1].0), "{row:?}");
    for (i, (k, v)) in row.fields.iter().enumerate() {
        assert_ne!(k, TIME_COLUMN);
        assert!(row.fields[..i].iter().all(|(other, _)| other != k));
        assert!(row.tags.iter().all(|(t, _)| t != k));
        if let FieldValue::F64(x) = v {
            assert!(x.is_finite());
        }
    }
    assert!(
        row.tags
            .iter()
            .all(|(k, v)| k != TIME_COLUMN && !k.is_empty() && !v.is_empty())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rendered_rows_parse_back(
        rows in prop::collection::vec((valid_row(), style()), 1..5),
        crlf in any::<bool>(),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let body: Vec<String> = rows
            .iter()
            .map(|((m, row, time), style)| render(m, row, *time, *style))
            .collect();
        let body = body.join(newline);
        let (lines, errors) = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, NOW);
        prop_assert!(errors.is_empty(), "body {:?}: {:?}", body, errors);
        prop_assert_eq!(lines.len(), rows.len());
        for (i, (line, ((m, row, _), _))) in lines.iter().zip(&rows).enumerate() {
            prop_assert_eq!(line.line, i + 1);
            prop_assert_eq!(&line.table, m);
            prop_assert_eq!(&line.row, row);
        }
    }

    #[test]
    fn seconds_convert_or_fail_cleanly(t in any::<i64>()) {
        let body = format!("m v=1 {t}");
        let (lines, errors) = parse_line_protocol(body.as_bytes(), Precision::Seconds, NOW);
        match t.checked_mul(1_000_000_000) {
            Some(ns) => prop_assert_eq!(lines[0].row.time, ns),
            None => {
                prop_assert!(lines.is_empty());
                prop_assert!(errors[0].reason.contains("out of range"));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let (lines, errors) = parse_line_protocol(&body, Precision::Milliseconds, NOW);
        let physical = body.split(|&b| b == b'\n').count();
        prop_assert!(lines.len() + errors.len() <= physical);
        lines.iter().for_each(assert_row_model);
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        (m, row, time) in valid_row(),
        style in style(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut body = render(&m, &row, time, style).into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(body.len() + 1);
            match op {
                0 => body.insert(i, byte),
                1 if i < body.len() => { body.remove(i); }
                _ if i < body.len() => body[i] = byte,
                _ => body.push(byte),
            }
        }
        let (lines, errors) = parse_line_protocol(&body, Precision::Nanoseconds, NOW);
        let physical = body.split(|&b| b == b'\n').count();
        prop_assert!(lines.len() + errors.len() <= physical);
        lines.iter().for_each(assert_row_model);
        // Every line number refers to a line of the body, and each at most once.
        let mut numbers: Vec<usize> = lines.iter().map(|l| l.line).chain(errors.iter().map(|e| e.line)).collect();
        numbers.sort_unstable();
        prop_assert!(numbers.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(numbers.iter().all(|&n| n >= 1 && n <= physical));
    }
}

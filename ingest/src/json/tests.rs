use storage::{FieldValue, LineError, ParsedLine};

use super::parse_json;
use crate::error::Error;
use crate::precision::Precision;

const NOW: i64 = 1_700_000_000_123_456_789;

fn parse(body: &str) -> (Vec<ParsedLine>, Vec<LineError>) {
    parse_json(body.as_bytes(), Precision::Nanoseconds, NOW).expect("a JSON array")
}

/// Parses a one-element array holding `element`; returns the error reason.
fn reason(element: &str) -> String {
    let (lines, mut errors) = parse(&format!("[{element}]"));
    assert!(lines.is_empty(), "{element}: {lines:?}");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 1);
    errors.remove(0).reason
}

fn one(element: &str) -> ParsedLine {
    let (mut lines, errors) = parse(&format!("[{element}]"));
    assert!(errors.is_empty(), "{element}: {errors:?}");
    lines.remove(0)
}

#[test]
fn full_element() {
    let line = one(r#"{"table": "meter", "time": 1700000000000000000,
            "tags": {"site": "berlin", "device": "m1"},
            "fields": {"power": 1520.5, "energy": 123456, "ok": true, "state": "on"}}"#);
    assert_eq!(line.line, 1);
    assert_eq!(line.table, "meter");
    assert_eq!(line.row.time, 1_700_000_000_000_000_000);
    assert_eq!(
        line.row.tags,
        vec![
            ("device".to_string(), "m1".to_string()),
            ("site".to_string(), "berlin".to_string()),
        ]
    );
    // Field order is kept; integers become floats.
    assert_eq!(
        line.row.fields,
        vec![
            ("power".to_string(), FieldValue::F64(1520.5)),
            ("energy".to_string(), FieldValue::F64(123_456.0)),
            ("ok".to_string(), FieldValue::Bool(true)),
            ("state".to_string(), FieldValue::String("on".into())),
        ]
    );
}

#[test]
fn field_order_is_not_alphabetical() {
    let line = one(r#"{"table": "m", "fields": {"z": 1, "a": 2, "m": 3}}"#);
    let keys: Vec<&str> = line.row.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn numbers_are_floats() {
    let line = one(r#"{"table": "m", "fields": {"a": -3, "b": 18446744073709551615, "c": 1e3}}"#);
    assert_eq!(line.row.fields[0].1, FieldValue::F64(-3.0));
    assert_eq!(line.row.fields[1].1, FieldValue::F64(u64::MAX as f64));
    assert_eq!(line.row.fields[2].1, FieldValue::F64(1000.0));
}

#[test]
fn escaped_strings() {
    let line = one(
        r#"{"table": "m\u00e4", "tags": {"k\"": "a\\b"}, "fields": {"s": "line\nbreak \u26a1"}}"#,
    );
    assert_eq!(line.table, "mä");
    assert_eq!(line.row.tags, vec![("k\"".to_string(), "a\\b".to_string())]);
    assert_eq!(
        line.row.fields[0].1,
        FieldValue::String("line\nbreak ⚡".into())
    );
}

#[test]
fn missing_or_null_time_uses_default_and_tags_are_optional() {
    let line = one(r#"{"table": "m", "fields": {"v": 1}}"#);
    assert_eq!(line.row.time, NOW);
    assert!(line.row.tags.is_empty());
    let line = one(r#"{"table": "m", "time": null, "tags": null, "fields": {"v": 1}}"#);
    assert_eq!(line.row.time, NOW);
}

#[test]
fn integer_time_in_precision() {
    for (precision, want) in [
        (Precision::Nanoseconds, 1_700_000_000),
        (Precision::Microseconds, 1_700_000_000_000),
        (Precision::Milliseconds, 1_700_000_000_000_000),
        (Precision::Seconds, 1_700_000_000_000_000_000),
    ] {
        let body = br#"[{"table": "m", "time": 1700000000, "fields": {"v": 1}}]"#;
        let (lines, errors) = parse_json(body, precision, NOW).unwrap();
        assert!(errors.is_empty());
        assert_eq!(lines[0].row.time, want, "{precision}");
    }
    // An integer written as a float.
    let body = br#"[{"table": "m", "time": 1.7e9, "fields": {"v": 1}}]"#;
    let (lines, _) = parse_json(body, Precision::Seconds, NOW).unwrap();
    assert_eq!(lines[0].row.time, 1_700_000_000_000_000_000);
    // Negative times are before 1970.
    assert_eq!(
        one(r#"{"table": "m", "time": -5, "fields": {"v": 1}}"#)
            .row
            .time,
        -5
    );
}

#[test]
fn rfc3339_time() {
    let line = one(r#"{"table": "m", "time": "2024-05-01T12:00:00Z", "fields": {"v": 1}}"#);
    assert_eq!(line.row.time, 1_714_564_800_000_000_000);
    // Offsets and fractions; precision does not apply to strings.
    let body =
        br#"[{"table": "m", "time": "2024-05-01T14:00:00.000000123+02:00", "fields": {"v": 1}}]"#;
    let (lines, _) = parse_json(body, Precision::Seconds, NOW).unwrap();
    assert_eq!(lines[0].row.time, 1_714_564_800_000_000_123);
}

#[test]
fn time_errors() {
    let r = reason(r#"{"table": "m", "time": "yesterday", "fields": {"v": 1}}"#);
    assert!(r.starts_with("invalid time \"yesterday\": "), "{r}");
    assert!(r.contains("RFC 3339"), "{r}");
    let r = reason(r#"{"table": "m", "time": "2300-01-01T00:00:00Z", "fields": {"v": 1}}"#);
    assert!(r.contains("out of range"), "{r}");
    let r = reason(r#"{"table": "m", "time": 1e30, "fields": {"v": 1}}"#);
    assert!(
        r.starts_with("time 1000000000000000000000000000000 out of range"),
        "{r}"
    );
    let r = reason(r#"{"table": "m", "time": 18446744073709551615, "fields": {"v": 1}}"#);
    assert!(
        r.starts_with("time 18446744073709551615 out of range"),
        "{r}"
    );
    let body = br#"[{"table": "m", "time": 9223372037, "fields": {"v": 1}}]"#;
    let (_, errors) = parse_json(body, Precision::Seconds, NOW).unwrap();
    assert!(
        errors[0]
            .reason
            .starts_with("time 9223372037 out of range for precision s"),
        "{}",
        errors[0].reason
    );
    assert_eq!(
        reason(r#"{"table": "m", "time": 1.5, "fields": {"v": 1}}"#),
        "time 1.5 must be an integer in precision ns or an RFC 3339 string"
    );
    assert_eq!(
        reason(r#"{"table": "m", "time": true, "fields": {"v": 1}}"#),
        "\"time\" must be an integer or an RFC 3339 string, found a boolean"
    );
}

#[test]
fn element_errors() {
    for (element, want) in [
        (r#"{"fields": {"v": 1}}"#, "missing \"table\""),
        (
            r#"{"table": "", "fields": {"v": 1}}"#,
            "\"table\" must not be empty",
        ),
        (
            r#"{"table": 5, "fields": {"v": 1}}"#,
            "\"table\" must be a string, found a number",
        ),
        (r#"{"table": "m"}"#, "missing \"fields\""),
        (
            r#"{"table": "m", "fields": {}}"#,
            "\"fields\" must not be empty",
        ),
        (
            r#"{"table": "m", "fields": [1]}"#,
            "\"fields\" must be an object, found an array",
        ),
        (
            r#"{"table": "m", "tags": "x", "fields": {"v": 1}}"#,
            "\"tags\" must be an object, found a string",
        ),
        (
            r#"{"table": "m", "tags": {"site": 5}, "fields": {"v": 1}}"#,
            "tag \"site\": value must be a string, found a number",
        ),
        (
            r#"{"table": "m", "tags": {"site": null}, "fields": {"v": 1}}"#,
            "tag \"site\": value must be a string, found null",
        ),
        (
            r#"{"table": "m", "tags": {"site": ""}, "fields": {"v": 1}}"#,
            "tag \"site\": empty value",
        ),
        (
            r#"{"table": "m", "tags": {"": "a"}, "fields": {"v": 1}}"#,
            "empty tag key",
        ),
        (r#"{"table": "m", "fields": {"": 1}}"#, "empty field key"),
        (
            r#"{"table": "m", "fields": {"v": null}}"#,
            "field \"v\": null is not allowed (leave the field out instead)",
        ),
        (
            r#"{"table": "m", "fields": {"v": {"a": 1}}}"#,
            "field \"v\": value must be a number, boolean or string, found an object",
        ),
        (
            r#"{"table": "m", "fields": {"v": 1}, "tabel": "x"}"#,
            "unknown key \"tabel\" (expected table, time, tags, fields)",
        ),
        (
            r#"{"table": "m", "table": "n", "fields": {"v": 1}}"#,
            "duplicate key \"table\"",
        ),
        (
            r#"{"table": "m", "fields": {"v": 1, "v": 2}}"#,
            "duplicate field key \"v\"",
        ),
        (
            r#"{"table": "m", "tags": {"s": "a", "s": "b"}, "fields": {"v": 1}}"#,
            "duplicate tag key \"s\"",
        ),
        (
            r#"{"table": "m", "tags": {"time": "a"}, "fields": {"v": 1}}"#,
            "\"time\" is reserved and cannot be a tag or field name",
        ),
        (
            r#"{"table": "m", "fields": {"time": 1}}"#,
            "\"time\" is reserved and cannot be a tag or field name",
        ),
        (
            r#"{"table": "m", "tags": {"x": "a"}, "fields": {"x": 1}}"#,
            "tag and field both named \"x\"",
        ),
        ("5", "element must be an object, found a number"),
        ("[]", "element must be an object, found an array"),
    ] {
        assert_eq!(reason(element), want, "{element}");
    }
}

#[test]
fn element_numbers_are_one_based_and_errors_do_not_spread() {
    let (lines, errors) = parse(
        r#"[{"table": "m", "fields": {"v": 1}},
            {"table": "m", "fields": {"v": null}},
            {"table": "m", "fields": {"v": 3}},
            "junk"]"#,
    );
    assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 4]);
}

#[test]
fn empty_array() {
    let (lines, errors) = parse("[]");
    assert!(lines.is_empty() && errors.is_empty());
}

#[test]
fn body_errors() {
    for (body, found) in [
        (r#"{"table": "m"}"#, "an object"),
        ("5", "a number"),
        (r#""x""#, "a string"),
        ("null", "null"),
    ] {
        match parse_json(body.as_bytes(), Precision::Nanoseconds, NOW) {
            Err(Error::NotJsonArray { found: f }) => assert_eq!(f, found, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    for body in ["", "[", "[1,]", "[] x", "\u{feff}[]", "not json"] {
        assert!(
            matches!(
                parse_json(body.as_bytes(), Precision::Nanoseconds, NOW),
                Err(Error::Json(_))
            ),
            "{body:?}"
        );
    }
    assert!(matches!(
        parse_json(b"[\"\xff\"]", Precision::Nanoseconds, NOW),
        Err(Error::Json(_))
    ));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_json(&body, Precision::Seconds, NOW);
        }

        #[test]
        fn arbitrary_json_elements_never_panic(text in r#"\[(\{("(table|time|tags|fields|x)":(1|-1|1e30|"[a-z:0-9T-]{0,12}"|null|true|\{("[a-z]{0,2}":(1|"a"|null|\[\]),?){0,3}\}),?){0,5}\},?){0,4}\]"#) {
            if let Ok((lines, errors)) = parse_json(text.as_bytes(), Precision::Seconds, NOW) {
                for line in &lines {
                    prop_assert!(!line.row.fields.is_empty());
                    prop_assert!(line.row.tags.windows(2).all(|w| w[0].0 < w[1].0));
                }
                let mut numbers: Vec<usize> =
                    lines.iter().map(|l| l.line).chain(errors.iter().map(|e| e.line)).collect();
                numbers.sort_unstable();
                prop_assert!(numbers.iter().enumerate().all(|(i, &n)| n == i + 1));
            }
        }
    }
}

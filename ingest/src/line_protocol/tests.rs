use storage::{FieldValue, LineError, ParsedLine, Row};

use super::parse_line_protocol;
use crate::precision::Precision;

const NOW: i64 = 1_700_000_000_123_456_789;

fn parse(body: &str) -> (Vec<ParsedLine>, Vec<LineError>) {
    parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, NOW)
}

/// Parses one valid line and returns its table and row.
fn one(line: &str) -> (String, Row) {
    let (mut lines, errors) = parse(line);
    assert!(errors.is_empty(), "{line:?}: {errors:?}");
    assert_eq!(lines.len(), 1, "{line:?}");
    let parsed = lines.remove(0);
    assert_eq!(parsed.line, 1);
    (parsed.table, parsed.row)
}

/// Parses one invalid line and returns the reason.
fn reason(line: &str) -> String {
    let (lines, mut errors) = parse(line);
    assert!(lines.is_empty(), "{line:?} parsed: {lines:?}");
    assert_eq!(errors.len(), 1, "{line:?}");
    let error = errors.remove(0);
    assert_eq!(error.line, 1);
    error.reason
}

fn field(line: &str) -> FieldValue {
    let (_, row) = one(line);
    assert_eq!(row.fields.len(), 1, "{line:?}");
    row.fields[0].1.clone()
}

fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn full_line() {
    let (table, row) =
        one("meter,site=berlin,device=m1 power=1520.5,energy=123456i,ok=t 1700000000000000000");
    assert_eq!(table, "meter");
    assert_eq!(row.time, 1_700_000_000_000_000_000);
    // Sorted by key.
    assert_eq!(row.tags, tags(&[("device", "m1"), ("site", "berlin")]));
    assert_eq!(
        row.fields,
        vec![
            ("power".to_string(), FieldValue::F64(1520.5)),
            ("energy".to_string(), FieldValue::I64(123_456)),
            ("ok".to_string(), FieldValue::Bool(true)),
        ]
    );
}

#[test]
fn fields_keep_their_order() {
    let (_, row) = one("m z=1,a=2,m=3");
    let keys: Vec<&str> = row.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn no_tags_and_no_timestamp_uses_default_time() {
    let (table, row) = one("m v=1");
    assert_eq!(table, "m");
    assert!(row.tags.is_empty());
    assert_eq!(row.time, NOW);
}

#[test]
fn negative_timestamp() {
    assert_eq!(one("m v=1 -1000").1.time, -1000);
}

#[test]
fn floats() {
    assert_eq!(field("m v=1"), FieldValue::F64(1.0));
    assert_eq!(field("m v=1.5"), FieldValue::F64(1.5));
    assert_eq!(field("m v=-1.5"), FieldValue::F64(-1.5));
    assert_eq!(field("m v=+2"), FieldValue::F64(2.0));
    assert_eq!(field("m v=-1e3"), FieldValue::F64(-1000.0));
    assert_eq!(field("m v=2.5E-3"), FieldValue::F64(0.0025));
    assert_eq!(field("m v=.5"), FieldValue::F64(0.5));
    assert_eq!(field("m v=0"), FieldValue::F64(0.0));
}

#[test]
fn integers() {
    assert_eq!(field("m v=12i"), FieldValue::I64(12));
    assert_eq!(field("m v=-12i"), FieldValue::I64(-12));
    assert_eq!(field("m v=0i"), FieldValue::I64(0));
    assert_eq!(field("m v=9223372036854775807i"), FieldValue::I64(i64::MAX));
    assert_eq!(
        field("m v=-9223372036854775808i"),
        FieldValue::I64(i64::MIN)
    );
}

#[test]
fn unsigned_integers() {
    assert_eq!(field("m v=12u"), FieldValue::U64(12));
    assert_eq!(field("m v=0u"), FieldValue::U64(0));
    assert_eq!(
        field("m v=18446744073709551615u"),
        FieldValue::U64(u64::MAX)
    );
}

#[test]
fn booleans() {
    for t in ["t", "T", "true", "True", "TRUE"] {
        assert_eq!(field(&format!("m v={t}")), FieldValue::Bool(true), "{t}");
    }
    for f in ["f", "F", "false", "False", "FALSE"] {
        assert_eq!(field(&format!("m v={f}")), FieldValue::Bool(false), "{f}");
    }
}

#[test]
fn strings() {
    assert_eq!(
        field(r#"m v="hello world""#),
        FieldValue::String("hello world".into())
    );
    assert_eq!(field(r#"m v="""#), FieldValue::String(String::new()));
    // Escaped quote and backslash.
    assert_eq!(
        field(r#"m v="say \"hi\" \\ bye""#),
        FieldValue::String(r#"say "hi" \ bye"#.into())
    );
    // A backslash before anything else is literal.
    assert_eq!(field(r#"m v="a\nb""#), FieldValue::String(r"a\nb".into()));
    // Delimiters inside quotes are content.
    assert_eq!(
        field(r#"m v="a, b=c d""#),
        FieldValue::String("a, b=c d".into())
    );
    assert_eq!(
        field(r#"m v="héllo ⚡""#),
        FieldValue::String("héllo ⚡".into())
    );
}

#[test]
fn string_followed_by_more_fields_and_timestamp() {
    let (_, row) = one(r#"m a="x y",b=2i 5"#);
    assert_eq!(
        row.fields,
        vec![
            ("a".to_string(), FieldValue::String("x y".into())),
            ("b".to_string(), FieldValue::I64(2)),
        ]
    );
    assert_eq!(row.time, 5);
}

#[test]
fn escaped_measurement() {
    let (table, _) = one(r"my\ meter\,x v=1");
    assert_eq!(table, "my meter,x");
    // `=` needs no escape in a measurement; `\=` is accepted too.
    assert_eq!(one("a=b v=1").0, "a=b");
    assert_eq!(one(r"a\=b v=1").0, "a=b");
    assert_eq!(one(r"a\\b v=1").0, r"a\b");
    // A backslash before an ordinary character is kept.
    assert_eq!(one(r"a\b v=1").0, r"a\b");
}

#[test]
fn escaped_tags() {
    let (_, row) = one(r"m,the\ key\,x=a\ b\=c\,d\\e v=1");
    assert_eq!(row.tags, tags(&[("the key,x", r"a b=c,d\e")]));
}

#[test]
fn escaped_field_keys() {
    let (_, row) = one(r"m a\ b\,c\=d=1i");
    assert_eq!(row.fields[0].0, "a b,c=d");
}

#[test]
fn unicode_names() {
    let (table, row) = one("zähler,ort=köln leistung_⚡=1");
    assert_eq!(table, "zähler");
    assert_eq!(row.tags, tags(&[("ort", "köln")]));
    assert_eq!(row.fields[0].0, "leistung_⚡");
}

#[test]
fn tags_sorted_by_key() {
    let (_, row) = one("m,z=1,a=2,m=3 v=1");
    assert_eq!(row.tags, tags(&[("a", "2"), ("m", "3"), ("z", "1")]));
}

#[test]
fn line_numbers_are_physical_lines() {
    let body = "# header comment\n\nm v=1\n   \n  # indented comment\nm v=oops\n\tm v=3\n";
    let (lines, errors) = parse(body);
    let numbers: Vec<usize> = lines.iter().map(|l| l.line).collect();
    assert_eq!(numbers, [3, 7]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 6);
}

#[test]
fn crlf_line_endings() {
    let (lines, errors) = parse("m,t=a v=1 10\r\nm v=\"x\"\r\n\r\nm v=2i\r\n");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].row.time, 10);
    assert_eq!(lines[0].row.tags, tags(&[("t", "a")]));
    assert_eq!(lines[1].row.fields[0].1, FieldValue::String("x".into()));
    assert_eq!(lines[2].line, 4);
    assert_eq!(lines[2].row.fields[0].1, FieldValue::I64(2));
}

#[test]
fn empty_body() {
    let (lines, errors) = parse("");
    assert!(lines.is_empty() && errors.is_empty());
    let (lines, errors) = parse("\n\n# only a comment\n");
    assert!(lines.is_empty() && errors.is_empty());
}

#[test]
fn bad_lines_do_not_affect_good_ones() {
    let (lines, errors) = parse("m v=1\nm v=\nm v=2\nm\nm v=3");
    assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), [1, 3, 5]);
    assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 4]);
}

#[test]
fn extra_spaces_between_sections() {
    let (_, row) = one("m,t=a   v=1   42  ");
    assert_eq!(row.time, 42);
    assert_eq!(row.fields[0].1, FieldValue::F64(1.0));
}

#[test]
fn precisions_convert_to_nanoseconds() {
    for (precision, want) in [
        (Precision::Nanoseconds, 1_700_000_000),
        (Precision::Microseconds, 1_700_000_000_000),
        (Precision::Milliseconds, 1_700_000_000_000_000),
        (Precision::Seconds, 1_700_000_000_000_000_000),
    ] {
        let (lines, errors) = parse_line_protocol(b"m v=1 1700000000", precision, NOW);
        assert!(errors.is_empty());
        assert_eq!(lines[0].row.time, want, "{precision}");
    }
    // The default time is already in nanoseconds, whatever the precision.
    let (lines, _) = parse_line_protocol(b"m v=1", Precision::Seconds, NOW);
    assert_eq!(lines[0].row.time, NOW);
}

#[test]
fn precision_overflow_is_an_error() {
    let (lines, errors) = parse_line_protocol(
        b"m v=1 9223372037\nm v=1 9223372036",
        Precision::Seconds,
        NOW,
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 1);
    assert!(
        errors[0]
            .reason
            .contains("timestamp 9223372037 out of range for precision s"),
        "{}",
        errors[0].reason
    );
    assert_eq!(lines[0].row.time, 9_223_372_036_000_000_000);
}

#[test]
fn error_invalid_utf8() {
    let (lines, errors) = parse_line_protocol(
        b"m v=1\nm,t=\xff\xfe v=1\nm v=\"ok\"",
        Precision::Nanoseconds,
        NOW,
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(
        errors,
        [LineError::new(2, "invalid UTF-8 at byte 5 of the line")]
    );
    // Invalid UTF-8 inside a string value, after leading blanks.
    let (_, errors) = parse_line_protocol(b"  m v=\"\xc3\"", Precision::Nanoseconds, NOW);
    assert_eq!(errors[0].reason, "invalid UTF-8 at byte 8 of the line");
}

#[test]
fn error_missing_fields() {
    assert_eq!(reason("m"), "missing fields");
    assert_eq!(reason("m "), "missing fields");
    assert_eq!(reason("m,t=a"), "missing fields");
    assert_eq!(reason("m,t=a  "), "missing fields");
}

#[test]
fn error_missing_measurement() {
    assert_eq!(reason(",t=a v=1"), "missing measurement name");
}

#[test]
fn error_bad_tags() {
    assert_eq!(reason("m,=a v=1"), "empty tag key");
    assert_eq!(reason("m,t v=1"), "tag \"t\": missing '=' and value");
    assert_eq!(reason("m,t= v=1"), "tag \"t\": missing value");
    assert_eq!(reason("m,t=a, v=1"), "empty tag key");
    assert_eq!(
        reason("m,t=a=b v=1"),
        "tag \"t\": value contains an unescaped '=' (write it as \\=)"
    );
}

#[test]
fn error_duplicate_tag() {
    assert_eq!(reason("m,site=a,site=b v=1"), "duplicate tag key \"site\"");
    assert_eq!(
        reason("m,site=a,b=1,site=a v=1"),
        "duplicate tag key \"site\""
    );
}

#[test]
fn error_duplicate_field() {
    assert_eq!(reason("m v=1,w=2,v=3"), "duplicate field key \"v\"");
    // The many-fields path (sorting instead of pairwise comparison).
    let many: Vec<String> = (0..40).map(|i| format!("f{i}=1")).collect();
    let line = format!("m {},f17=2", many.join(","));
    assert_eq!(reason(&line), "duplicate field key \"f17\"");
    let line = format!("m {}", many.join(","));
    assert_eq!(one(&line).1.fields.len(), 40);
}

#[test]
fn error_reserved_time() {
    let want = "\"time\" is reserved and cannot be a tag or field name";
    assert_eq!(reason("m,time=a v=1"), want);
    assert_eq!(reason("m time=1"), want);
    assert_eq!(reason("m v=1,time=2i"), want);
    // Only the exact name is reserved.
    assert_eq!(one("m,times=a timer=1").1.tags, tags(&[("times", "a")]));
}

#[test]
fn error_tag_and_field_same_name() {
    assert_eq!(reason("m,x=a x=1"), "tag and field both named \"x\"");
    assert_eq!(
        reason("m,a=1,x=a v=1,x=1"),
        "tag and field both named \"x\""
    );
}

#[test]
fn error_bad_field_syntax() {
    assert_eq!(reason("m v"), "field \"v\": missing '=' and value");
    assert_eq!(reason("m v=1,w 5"), "field \"w\": missing '=' and value");
    assert_eq!(reason("m v="), "field \"v\": missing value");
    assert_eq!(reason("m v=,w=1"), "field \"v\": missing value");
    assert_eq!(reason("m v= 5"), "field \"v\": missing value");
    assert_eq!(reason("m =1"), "empty field key");
    assert_eq!(reason("m v=1,"), "missing field after ','");
    assert_eq!(reason("m v=1,,w=2"), "missing field after ','");
}

#[test]
fn error_bad_strings() {
    assert_eq!(reason(r#"m v="abc"#), "field \"v\": unterminated string");
    assert_eq!(reason(r#"m v="abc\""#), "field \"v\": unterminated string");
    assert_eq!(
        reason(r#"m v="abc"x"#),
        "field \"v\": unexpected text after the closing quote of a string"
    );
}

#[test]
fn error_bad_numbers() {
    assert_eq!(
        reason("m power=12xi"),
        "field \"power\": invalid integer \"12xi\""
    );
    assert_eq!(
        reason("m power=1.5i"),
        "field \"power\": invalid integer \"1.5i\""
    );
    assert_eq!(
        reason("m power=12x"),
        "field \"power\": invalid float \"12x\""
    );
    assert_eq!(
        reason("m power=1.2.3"),
        "field \"power\": invalid float \"1.2.3\""
    );
    assert_eq!(reason("m power=-"), "field \"power\": invalid float \"-\"");
    assert_eq!(
        reason("m power=1xu"),
        "field \"power\": invalid unsigned integer \"1xu\""
    );
    assert_eq!(
        reason("m power=abc"),
        "field \"power\": invalid value \"abc\" (strings must be in double quotes)"
    );
    assert_eq!(
        reason("m power=tru"),
        "field \"power\": invalid value \"tru\" (strings must be in double quotes)"
    );
}

#[test]
fn error_integer_overflow() {
    assert_eq!(
        reason("m v=9223372036854775808i"),
        "field \"v\": integer \"9223372036854775808i\" out of range for a 64-bit signed integer"
    );
    assert_eq!(
        reason("m v=-9223372036854775809i"),
        "field \"v\": integer \"-9223372036854775809i\" out of range for a 64-bit signed integer"
    );
    assert_eq!(
        reason("m v=18446744073709551616u"),
        "field \"v\": unsigned integer \"18446744073709551616u\" out of range for a 64-bit unsigned integer"
    );
    assert_eq!(
        reason("m v=-1u"),
        "field \"v\": unsigned integer \"-1u\" cannot be negative"
    );
}

#[test]
fn error_nan_and_inf() {
    for bad in ["NaN", "nan", "inf", "-inf", "+Infinity", "INF", "-NaN"] {
        assert_eq!(
            reason(&format!("m v={bad}")),
            "field \"v\": NaN/Inf float not allowed",
            "{bad}"
        );
    }
    assert_eq!(
        reason("m v=1e400"),
        "field \"v\": float \"1e400\" out of range"
    );
}

#[test]
fn error_bad_timestamp() {
    assert_eq!(
        reason("m v=1 1000000000000000000000000000000"),
        "timestamp \"1000000000000000000000000000000\" out of range"
    );
    assert_eq!(
        reason("m v=1 1e30"),
        "invalid timestamp \"1e30\": expected an integer in precision ns"
    );
    assert_eq!(
        reason("m v=1 12:00"),
        "invalid timestamp \"12:00\": expected an integer in precision ns"
    );
    assert_eq!(
        reason("m v=1 10 20"),
        "unexpected text after timestamp: \"20\""
    );
}

#[test]
fn long_values_are_shortened_in_errors() {
    let junk = "x".repeat(10_000);
    let message = reason(&format!("m v={junk}"));
    assert!(message.len() < 200, "{message}");
    assert!(message.contains("\"..."), "{message}");
}

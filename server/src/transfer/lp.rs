//! Writing rows as InfluxDB line protocol, escaped so that `ingest`'s parser reads back
//! exactly the names and values given.
//!
//! Escapes follow the InfluxDB reference: in the measurement a backslash escapes comma
//! and space, in tag keys, tag values and field keys also the equals sign; a backslash
//! itself is doubled so that one before another character survives. String field values
//! are quoted with `\"` and `\\` escaped. Floats are written with Rust's shortest
//! round-trip formatting (`-0.0`, `1e300`, `5e-324`), integers with their `i` or `u`
//! suffix. What line protocol cannot carry at all (a line break anywhere, NaN and
//! infinity, a row without field values) is refused with the reason.

use std::fmt::Write as _;

/// Appends `name` escaped for the given position (`=` needs no escape in a measurement,
/// but escaping it is harmless and keeps one function).
pub(super) fn push_name(out: &mut String, name: &str) {
    for c in name.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// `name` escaped for a tag key, tag value or field key, or why it cannot be written.
pub(super) fn escaped_name(name: &str) -> Result<String, String> {
    check_no_line_break(name)?;
    let mut out = String::with_capacity(name.len() + 2);
    push_name(&mut out, name);
    Ok(out)
}

/// The measurement (table name) escaped, or why it cannot be written.
pub(super) fn escaped_measurement(table: &str) -> Result<String, String> {
    if table.is_empty() {
        return Err("the table name is empty".to_owned());
    }
    if table.starts_with('#') {
        // A line starting with `#` is a comment; an escape would become part of the name.
        return Err(format!(
            "table {table:?} starts with '#', which line protocol reads as a comment"
        ));
    }
    if table.starts_with('\t') {
        // The parser skips a line's leading blanks; a tab has no escape (a space does).
        return Err(format!(
            "table {table:?} starts with a tab, which line protocol skips"
        ));
    }
    escaped_name(table)
}

fn check_no_line_break(text: &str) -> Result<(), String> {
    if text.contains(['\n', '\r']) {
        Err(format!(
            "{text:?} contains a line break, which line protocol cannot carry"
        ))
    } else {
        Ok(())
    }
}

/// One line being built: the measurement, then tags, then fields, then the time.
/// Callers add every tag before the first field.
#[derive(Debug, Default)]
pub(super) struct Line {
    buf: String,
    fields: usize,
}

impl Line {
    /// Starts a new line for `measurement` (already escaped).
    pub(super) fn start(&mut self, measurement: &str) {
        self.buf.clear();
        self.buf.push_str(measurement);
        self.fields = 0;
    }

    /// Adds a tag; an empty value is left out (line protocol has no empty tag, and an
    /// absent tag reads back as null).
    pub(super) fn tag(&mut self, key: &str, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Ok(());
        }
        check_no_line_break(value).map_err(|e| format!("tag {key}: value {e}"))?;
        self.buf.push(',');
        self.buf.push_str(key);
        self.buf.push('=');
        push_name(&mut self.buf, value);
        Ok(())
    }

    fn field_key(&mut self, key: &str) {
        self.buf.push(if self.fields == 0 { ' ' } else { ',' });
        self.buf.push_str(key);
        self.buf.push('=');
        self.fields += 1;
    }

    /// Adds a float field; NaN and infinity have no line protocol spelling.
    pub(super) fn f64(&mut self, key: &str, value: f64) -> Result<(), String> {
        if !value.is_finite() {
            return Err(format!(
                "field {key}: {value} cannot be written (line protocol has no NaN or infinity)"
            ));
        }
        self.field_key(key);
        // `{:?}` is the shortest text that parses back to the same bits, switching to
        // exponent notation for very large and small magnitudes; it always has a `.` or
        // an `e`, never an `i` or `u` suffix, so the parser reads a float.
        let _ = write!(self.buf, "{value:?}");
        Ok(())
    }

    /// Adds a signed integer field (`12i`).
    pub(super) fn i64(&mut self, key: &str, value: i64) {
        self.field_key(key);
        let _ = write!(self.buf, "{value}i");
    }

    /// Adds an unsigned integer field (`12u`).
    pub(super) fn u64(&mut self, key: &str, value: u64) {
        self.field_key(key);
        let _ = write!(self.buf, "{value}u");
    }

    /// Adds a boolean field.
    pub(super) fn bool(&mut self, key: &str, value: bool) {
        self.field_key(key);
        self.buf.push_str(if value { "true" } else { "false" });
    }

    /// Adds a string field, quoted and escaped.
    pub(super) fn string(&mut self, key: &str, value: &str) -> Result<(), String> {
        check_no_line_break(value).map_err(|e| format!("field {key}: value {e}"))?;
        self.field_key(key);
        self.buf.push('"');
        for c in value.chars() {
            if matches!(c, '"' | '\\') {
                self.buf.push('\\');
            }
            self.buf.push(c);
        }
        self.buf.push('"');
        Ok(())
    }

    /// Ends the line with its time in nanoseconds; the line (without a newline), or why
    /// it cannot be written.
    pub(super) fn finish(&mut self, time_ns: i64) -> Result<&str, String> {
        if self.fields == 0 {
            return Err("the row has no field values (every field is empty)".to_owned());
        }
        let _ = write!(self.buf, " {time_ns}");
        Ok(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use ingest::Precision;
    use storage::FieldValue;

    use super::*;

    /// Writes one line and parses it with the server's parser.
    fn round_trip(table: &str, tags: &[(&str, &str)], fields: &[(&str, FieldValue)], time: i64) {
        let mut line = Line::default();
        line.start(&escaped_measurement(table).unwrap());
        for (k, v) in tags {
            line.tag(&escaped_name(k).unwrap(), v).unwrap();
        }
        for (k, v) in fields {
            let key = escaped_name(k).unwrap();
            match v {
                FieldValue::F64(x) => line.f64(&key, *x).unwrap(),
                FieldValue::I64(x) => line.i64(&key, *x),
                FieldValue::U64(x) => line.u64(&key, *x),
                FieldValue::Bool(x) => line.bool(&key, *x),
                FieldValue::String(x) => line.string(&key, x).unwrap(),
            }
        }
        let text = line.finish(time).unwrap().to_owned();
        let (parsed, errors) =
            ingest::parse_line_protocol(text.as_bytes(), Precision::Nanoseconds, 0);
        assert!(errors.is_empty(), "{text}: {errors:?}");
        assert_eq!(parsed.len(), 1, "{text}");
        let parsed = &parsed[0];
        assert_eq!(parsed.table, table, "{text}");
        assert_eq!(parsed.row.time, time, "{text}");
        let mut want_tags: Vec<(String, String)> = tags
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want_tags.sort();
        assert_eq!(parsed.row.tags, want_tags, "{text}");
        assert_eq!(parsed.row.fields.len(), fields.len(), "{text}");
        for ((got_key, got), (key, want)) in parsed.row.fields.iter().zip(fields) {
            assert_eq!(got_key, key, "{text}");
            match (got, want) {
                // Bits, not ==: -0.0 == 0.0 would hide a lost sign.
                (FieldValue::F64(a), FieldValue::F64(b)) => {
                    assert_eq!(a.to_bits(), b.to_bits(), "{text}: {a} vs {b}");
                }
                _ => assert_eq!(got, want, "{text}"),
            }
        }
    }

    #[test]
    fn extreme_numbers_survive() {
        for x in [
            -0.0,
            0.0,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            0.1 + 0.2,
            123_456_789_012_345_680.0,
            1.0,
            -1.5,
        ] {
            round_trip("m", &[], &[("x", FieldValue::F64(x))], 1);
        }
        round_trip(
            "m",
            &[],
            &[
                ("a", FieldValue::I64(i64::MIN)),
                ("b", FieldValue::I64(i64::MAX)),
                ("c", FieldValue::U64(u64::MAX)),
                ("d", FieldValue::U64(i64::MAX as u64 + 1)),
                ("e", FieldValue::Bool(true)),
                ("f", FieldValue::Bool(false)),
            ],
            i64::MIN + 1,
        );
    }

    #[test]
    fn awkward_names_and_strings_survive() {
        let nasty = [
            "with space",
            "comma,here",
            "equals=here",
            "quote\"here",
            "back\\slash",
            "trailing\\",
            "\\,\\=\\ ",
            "ünïcödé ⚡ 電力",
            "tab\there",
            "#hash",
        ];
        for text in nasty {
            round_trip(
                "table with, odd=name",
                &[(text, text), ("site", text)],
                &[
                    (&format!("f {text}"), FieldValue::String(text.to_owned())),
                    ("s", FieldValue::String(format!("\"{text}\""))),
                ],
                1_700_000_000_123_456_789,
            );
        }
        round_trip("m", &[], &[("s", FieldValue::String(String::new()))], -1);
    }

    #[test]
    fn empty_tags_are_left_out() {
        round_trip(
            "m",
            &[("a", ""), ("b", "x")],
            &[("v", FieldValue::I64(1))],
            0,
        );
    }

    proptest::proptest! {
        /// Any name, tag value and string without a line break, and any finite float
        /// and integer, reads back exactly through the server's parser.
        #[test]
        fn random_rows_read_back_exactly(
            table in "[^#\\t\\r\\n][^\\r\\n]{0,12}",
            tag in "[^\\r\\n]{1,12}",
            text in "[^\\r\\n]{0,16}",
            x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL
                | proptest::num::f64::ZERO,
            i in proptest::num::i64::ANY,
            u in proptest::num::u64::ANY,
            time in proptest::num::i64::ANY,
        ) {
            round_trip(
                &table,
                &[("t", &tag)],
                &[
                    ("x", FieldValue::F64(x)),
                    ("i", FieldValue::I64(i)),
                    ("u", FieldValue::U64(u)),
                    ("s", FieldValue::String(text.clone())),
                ],
                time,
            );
        }
    }

    #[test]
    fn what_line_protocol_cannot_carry_is_refused_with_the_reason() {
        let mut line = Line::default();
        line.start("m");
        let err = line.tag("t", "two\nlines").unwrap_err();
        assert!(err.contains("line break"), "{err}");
        let err = line.string("s", "a\r\nb").unwrap_err();
        assert!(err.contains("line break"), "{err}");
        let err = line.f64("x", f64::NAN).unwrap_err();
        assert!(err.contains("NaN"), "{err}");
        let err = line.finish(0).unwrap_err();
        assert!(err.contains("no field values"), "{err}");
        assert!(escaped_measurement("#m").unwrap_err().contains("comment"));
        assert!(escaped_measurement("\tm").unwrap_err().contains("tab"));
        assert!(escaped_measurement("").is_err());
    }
}

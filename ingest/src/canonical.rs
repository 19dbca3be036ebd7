//! The canonical tables' rules on every write path (HTTP, MQTT, later Modbus).
//!
//! The store is schema-on-write: the first write of a column fixes its type. For the
//! tables `devices` names (`meter`, `inverter`, ...), that first write must not be able to
//! give `power_w` the type integer and make every later float reading fail, so the named
//! columns are coerced to their canonical type here (an integer `5i` becomes `5.0` where a
//! float is canonical) or the row is refused with the reason. Rows of these tables also
//! record how trustworthy they are and where they came from: `quality` defaults to
//! `actual`, `source` to the write path.

use devices::ReadingQuality;
use devices::tables::{self, QUALITY, SOURCE, ValueKind};
use storage::{FieldValue, ParsedLine};

/// Applies the canonical rules to `line` when its table is a canonical one; other tables
/// pass unchanged. `source` names the write path (`http`, `mqtt/shelly`) and is recorded
/// when the row does not say itself. The error names the column and what was wrong.
pub fn apply_canonical(line: &mut ParsedLine, source: &str) -> Result<(), String> {
    let Some(spec) = tables::table(&line.table) else {
        return Ok(());
    };
    for (name, value) in &mut line.row.fields {
        if let Some(column) = spec.column(name) {
            coerce(value, column.kind).map_err(|got| {
                let unit = column
                    .unit
                    .map(|u| format!(" in {}", u.symbol()))
                    .unwrap_or_default();
                format!(
                    "column {name:?} of table {:?} is a {}{unit}; got {got}",
                    spec.name,
                    column.kind.name(),
                )
            })?;
        }
    }
    if !spec.provenance {
        return Ok(());
    }
    match line.row.fields.iter().find(|(k, _)| k == QUALITY) {
        Some((_, FieldValue::String(q))) => {
            q.parse::<ReadingQuality>().map_err(|e| e.to_string())?;
        }
        Some((_, other)) => {
            return Err(format!(
                "field {QUALITY:?} must be a string (actual, estimated or substituted); got {}",
                describe(other)
            ));
        }
        None => line.row.fields.push((
            QUALITY.to_string(),
            FieldValue::String(ReadingQuality::Actual.as_str().to_string()),
        )),
    }
    match line.row.fields.iter().find(|(k, _)| k == SOURCE) {
        Some((_, FieldValue::String(_))) => {}
        Some((_, other)) => {
            return Err(format!(
                "field {SOURCE:?} must be a string; got {}",
                describe(other)
            ));
        }
        None => line
            .row
            .fields
            .push((SOURCE.to_string(), FieldValue::String(source.to_string()))),
    }
    Ok(())
}

/// A decoder's value as the store's: `devices` keeps no dependency on storage, so
/// every collector converts here.
pub(crate) fn field_value(value: devices::Value) -> FieldValue {
    match value {
        devices::Value::F64(x) => FieldValue::F64(x),
        devices::Value::I64(x) => FieldValue::I64(x),
        devices::Value::U64(x) => FieldValue::U64(x),
        devices::Value::Bool(x) => FieldValue::Bool(x),
        devices::Value::Str(x) => FieldValue::String(x),
    }
}

/// Converts `value` to `kind` where that loses nothing; otherwise says what it got.
fn coerce(value: &mut FieldValue, kind: ValueKind) -> Result<(), String> {
    let converted = match (kind, &*value) {
        (ValueKind::Float, FieldValue::F64(_))
        | (ValueKind::Integer, FieldValue::I64(_))
        | (ValueKind::Boolean, FieldValue::Bool(_))
        | (ValueKind::String, FieldValue::String(_)) => return Ok(()),
        (ValueKind::Float, FieldValue::I64(v)) => FieldValue::F64(*v as f64),
        (ValueKind::Float, FieldValue::U64(v)) => FieldValue::F64(*v as f64),
        (ValueKind::Integer, FieldValue::U64(v)) if i64::try_from(*v).is_ok() => {
            FieldValue::I64(*v as i64)
        }
        (ValueKind::Integer, FieldValue::F64(v))
            if v.fract() == 0.0 && *v >= -(2f64.powi(63)) && *v < 2f64.powi(63) =>
        {
            FieldValue::I64(*v as i64)
        }
        (_, other) => return Err(describe(other)),
    };
    *value = converted;
    Ok(())
}

fn describe(value: &FieldValue) -> String {
    match value {
        FieldValue::F64(v) => format!("the float {v}"),
        FieldValue::I64(v) => format!("the integer {v}"),
        FieldValue::U64(v) => format!("the unsigned integer {v}"),
        FieldValue::Bool(v) => format!("the boolean {v}"),
        FieldValue::String(v) => {
            let shown: String = v.chars().take(64).collect();
            format!("the string {shown:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use storage::Row;

    use super::*;

    fn line(table: &str, fields: Vec<(&str, FieldValue)>) -> ParsedLine {
        ParsedLine {
            line: 1,
            table: table.to_string(),
            row: Row {
                time: 0,
                tags: vec![("device_id".into(), "m1".into())],
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            },
        }
    }

    fn field<'a>(l: &'a ParsedLine, key: &str) -> Option<&'a FieldValue> {
        l.row.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn integers_become_floats_and_provenance_is_recorded() {
        let mut l = line("meter", vec![("power_w", FieldValue::I64(5))]);
        apply_canonical(&mut l, "http").unwrap();
        assert_eq!(field(&l, "power_w"), Some(&FieldValue::F64(5.0)));
        assert_eq!(
            field(&l, "quality"),
            Some(&FieldValue::String("actual".into()))
        );
        assert_eq!(
            field(&l, "source"),
            Some(&FieldValue::String("http".into()))
        );
    }

    #[test]
    fn a_row_keeps_its_own_quality_and_source() {
        let mut l = line(
            "battery",
            vec![
                ("cycles", FieldValue::F64(12.0)),
                ("quality", FieldValue::String("estimated".into())),
                ("source", FieldValue::String("modbus".into())),
            ],
        );
        apply_canonical(&mut l, "http").unwrap();
        assert_eq!(field(&l, "cycles"), Some(&FieldValue::I64(12)));
        assert_eq!(
            field(&l, "quality"),
            Some(&FieldValue::String("estimated".into()))
        );
        assert_eq!(
            field(&l, "source"),
            Some(&FieldValue::String("modbus".into()))
        );
        assert_eq!(l.row.fields.len(), 3);
    }

    #[test]
    fn wrong_types_and_qualities_are_refused_with_the_column_named() {
        let mut l = line(
            "meter",
            vec![("power_w", FieldValue::String("high".into()))],
        );
        let err = apply_canonical(&mut l, "http").unwrap_err();
        assert_eq!(
            err,
            "column \"power_w\" of table \"meter\" is a float in W; got the string \"high\""
        );
        let mut l = line("battery", vec![("cycles", FieldValue::F64(1.5))]);
        let err = apply_canonical(&mut l, "http").unwrap_err();
        assert!(err.contains("\"cycles\"") && err.contains("1.5"), "{err}");
        let mut l = line(
            "meter",
            vec![
                ("power_w", FieldValue::F64(1.0)),
                ("quality", FieldValue::String("valid".into())),
            ],
        );
        let err = apply_canonical(&mut l, "http").unwrap_err();
        assert!(
            err.contains("valid") && err.contains("substituted"),
            "{err}"
        );
    }

    #[test]
    fn other_tables_and_unknown_columns_pass_unchanged() {
        let mut l = line("weather", vec![("power_w", FieldValue::String("x".into()))]);
        let before = l.clone();
        apply_canonical(&mut l, "http").unwrap();
        assert_eq!(l, before);
        let mut l = line("meter", vec![("reactive_var", FieldValue::I64(3))]);
        apply_canonical(&mut l, "http").unwrap();
        assert_eq!(field(&l, "reactive_var"), Some(&FieldValue::I64(3)));
    }

    #[test]
    fn rejected_rows_carry_no_quality() {
        let mut l = line(
            "_rejected",
            vec![("error", FieldValue::String("not JSON".into()))],
        );
        apply_canonical(&mut l, "mqtt/x").unwrap();
        assert_eq!(field(&l, "quality"), None);
    }
}

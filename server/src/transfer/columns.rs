//! Which column of a file is the time, a tag or a field of which type, and turning a
//! record batch's rows into line protocol.
//!
//! A gridlake export says each column's role in the Arrow field metadata
//! ([`storage::COLUMN_ROLE_KEY`]). Any other Parquet file is read by name and type: the
//! `--time-column` is the time, the `--tag` columns are tags, and every other column is
//! a field whose type follows its Arrow type (floats and decimals f64, signed integers
//! i64, unsigned u64, booleans, strings; dates and times as their text).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, Schema, TimeUnit, TimestampNanosecondType, UInt64Type,
};
use ingest::Precision;
use storage::{COLUMN_ROLE_KEY, FieldType};

use super::lp::{self, Line};

/// What a column is, once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The row's time.
    Time,
    /// A tag (its values written as text).
    Tag,
    /// A field of this type.
    Field(FieldType),
}

impl Role {
    /// The name used in CSV headers (`name:f64`) and messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Time => "time",
            Role::Tag => "tag",
            Role::Field(FieldType::F64) => "f64",
            Role::Field(FieldType::I64) => "i64",
            Role::Field(FieldType::U64) => "u64",
            Role::Field(FieldType::Bool) => "bool",
            Role::Field(FieldType::String) => "string",
        }
    }

    /// The role a CSV header's `:type` names.
    pub(super) fn from_name(name: &str) -> Option<Role> {
        Some(match name {
            "tag" => Role::Tag,
            "f64" => Role::Field(FieldType::F64),
            "i64" => Role::Field(FieldType::I64),
            "u64" => Role::Field(FieldType::U64),
            "bool" => Role::Field(FieldType::Bool),
            "string" => Role::Field(FieldType::String),
            _ => return None,
        })
    }
}

/// One tag or field column: its position, its escaped line protocol key, its role.
#[derive(Debug, Clone)]
pub(super) struct Column {
    /// The name, for messages.
    pub(super) name: String,
    /// The name escaped as a line protocol key.
    pub(super) key: String,
    /// Position in the file's columns.
    pub(super) index: usize,
    /// Tag or field type.
    pub(super) role: Role,
}

/// How to turn a file's rows into lines.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Position of the time column.
    pub(super) time: usize,
    /// Tag columns, then field columns (line protocol wants tags first).
    pub(super) columns: Vec<Column>,
}

impl Plan {
    /// A plan from `(name, role)` per column of the file, in file order; exactly one must
    /// be the time.
    pub(super) fn new(roles: &[(String, Role)]) -> Result<Plan, String> {
        let mut time = None;
        let mut tags = Vec::new();
        let mut fields = Vec::new();
        for (index, (name, role)) in roles.iter().enumerate() {
            let column = || -> Result<Column, String> {
                Ok(Column {
                    name: name.clone(),
                    key: lp::escaped_name(name).map_err(|e| format!("column name {e}"))?,
                    index,
                    role: *role,
                })
            };
            match role {
                Role::Time if time.is_some() => {
                    return Err(format!("a second time column {name:?}"));
                }
                Role::Time => time = Some(index),
                Role::Tag => tags.push(column()?),
                Role::Field(_) => fields.push(column()?),
            }
        }
        let time = time.ok_or("no time column")?;
        if fields.is_empty() {
            return Err("no field columns: a row needs at least one field".to_owned());
        }
        tags.extend(fields);
        Ok(Plan {
            time,
            columns: tags,
        })
    }

    /// The plan of an Arrow schema: gridlake's role metadata where present, else by
    /// name (`time_column`, `tags`) and type.
    pub(super) fn from_arrow(
        schema: &Schema,
        time_column: &str,
        tags: &[String],
    ) -> Result<Plan, String> {
        for tag in tags {
            if schema.field_with_name(tag).is_err() {
                return Err(format!(
                    "--tag {tag:?} names no column (columns: {})",
                    column_list(schema)
                ));
            }
        }
        let mut roles = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = field.name();
            let marked = field.metadata().get(COLUMN_ROLE_KEY).map(String::as_str);
            let role = match marked {
                Some("time") => Role::Time,
                Some("tag") => Role::Tag,
                None if name == time_column => Role::Time,
                None if tags.contains(name) => Role::Tag,
                _ => match field_type(field.data_type()) {
                    Some(t) => Role::Field(t),
                    None => {
                        return Err(format!(
                            "column {name:?} has type {}, which gridlake cannot store",
                            field.data_type()
                        ));
                    }
                },
            };
            roles.push((name.clone(), role));
        }
        if !roles.iter().any(|(_, r)| *r == Role::Time) {
            return Err(format!(
                "no time column {time_column:?} (columns: {}); name it with --time-column",
                column_list(schema)
            ));
        }
        Plan::new(&roles)
    }
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The field type an Arrow type is stored as, if any.
fn field_type(data_type: &DataType) -> Option<FieldType> {
    Some(match data_type {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => FieldType::F64,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => FieldType::F64,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => FieldType::I64,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => FieldType::U64,
        DataType::Boolean => FieldType::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
        DataType::Dictionary(_, value) => return field_type(value),
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_) => FieldType::String,
        _ => return None,
    })
}

/// Parses a time given as text: an integer in `precision`, or RFC 3339 (a time without
/// an offset is taken as UTC).
pub(super) fn parse_time_text(text: &str, precision: Precision) -> Result<i64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the time is empty".to_owned());
    }
    if let Ok(n) = text.parse::<i64>() {
        return precision.to_nanos(n).ok_or_else(|| {
            format!("time {n} in precision {precision} is out of range (years 1677 to 2262)")
        });
    }
    string_to_timestamp_nanos(text).map_err(|_| {
        format!("time {text:?} is neither RFC 3339 nor an integer in precision {precision}")
    })
}

/// A batch's time column as nanoseconds.
enum Times {
    /// Already nanoseconds (null: empty or out of range).
    Nanos(arrow::array::PrimitiveArray<TimestampNanosecondType>),
    /// Integers in a precision.
    Integers(arrow::array::PrimitiveArray<Int64Type>, Precision),
    /// Text.
    Text(StringArray, Precision),
}

impl Times {
    fn new(array: &ArrayRef, precision: Precision) -> Result<Times, String> {
        let cast = |to: &DataType| {
            arrow::compute::cast(array, to).map_err(|e| format!("time column: {e}"))
        };
        Ok(match array.data_type() {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => Times::Nanos(
                cast(&DataType::Timestamp(TimeUnit::Nanosecond, None))?
                    .as_primitive::<TimestampNanosecondType>()
                    .clone(),
            ),
            t if t.is_integer() => Times::Integers(
                cast(&DataType::Int64)?.as_primitive::<Int64Type>().clone(),
                precision,
            ),
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(..) => {
                Times::Text(cast(&DataType::Utf8)?.as_string::<i32>().clone(), precision)
            }
            other => return Err(format!("the time column has type {other}")),
        })
    }

    fn get(&self, row: usize) -> Result<i64, String> {
        match self {
            Times::Nanos(a) if a.is_valid(row) => Ok(a.value(row)),
            Times::Nanos(_) => Err("the time is empty or out of range".to_owned()),
            Times::Integers(a, p) if a.is_valid(row) => {
                let n = a.value(row);
                p.to_nanos(n).ok_or_else(|| {
                    format!("time {n} in precision {p} is out of range (years 1677 to 2262)")
                })
            }
            Times::Integers(..) => Err("the time is empty or out of range".to_owned()),
            Times::Text(a, p) if a.is_valid(row) => parse_time_text(a.value(row), *p),
            Times::Text(..) => Err("the time is empty".to_owned()),
        }
    }
}

/// Writes the rows of `batch` as lines of `measurement` (escaped): `emit` gets each
/// row's index in the batch and its line, or the reason it cannot be written.
pub(super) fn encode_batch(
    plan: &Plan,
    batch: &RecordBatch,
    measurement: &str,
    precision: Precision,
    mut emit: impl FnMut(usize, Result<&str, String>),
) -> Result<(), String> {
    let times = Times::new(batch.column(plan.time), precision)?;
    let mut arrays = Vec::with_capacity(plan.columns.len());
    for column in &plan.columns {
        let to = match column.role {
            // (The plan lists no time among its columns.)
            Role::Time | Role::Tag | Role::Field(FieldType::String) => DataType::Utf8,
            Role::Field(FieldType::F64) => DataType::Float64,
            Role::Field(FieldType::I64) => DataType::Int64,
            Role::Field(FieldType::U64) => DataType::UInt64,
            Role::Field(FieldType::Bool) => DataType::Boolean,
        };
        let array = batch.column(column.index);
        let array: ArrayRef = if array.data_type() == &to {
            Arc::clone(array)
        } else {
            arrow::compute::cast(array, &to)
                .map_err(|e| format!("column {:?}: {e}", column.name))?
        };
        arrays.push(array);
    }
    let mut line = Line::default();
    for row in 0..batch.num_rows() {
        match encode_row(&mut line, plan, &arrays, &times, row, measurement) {
            Ok(time) => emit(row, line.finish(time)),
            Err(reason) => emit(row, Err(reason)),
        }
    }
    Ok(())
}

/// Builds the line of one row up to its time, which it returns.
fn encode_row(
    line: &mut Line,
    plan: &Plan,
    arrays: &[ArrayRef],
    times: &Times,
    row: usize,
    measurement: &str,
) -> Result<i64, String> {
    let time = times.get(row)?;
    line.start(measurement);
    for (column, array) in plan.columns.iter().zip(arrays) {
        if array.is_null(row) {
            continue;
        }
        let key = &column.key;
        match column.role {
            Role::Tag => line.tag(key, array.as_string::<i32>().value(row))?,
            Role::Field(FieldType::F64) => {
                line.f64(key, array.as_primitive::<Float64Type>().value(row))?;
            }
            Role::Field(FieldType::I64) => {
                line.i64(key, array.as_primitive::<Int64Type>().value(row));
            }
            Role::Field(FieldType::U64) => {
                line.u64(key, array.as_primitive::<UInt64Type>().value(row));
            }
            Role::Field(FieldType::Bool) => line.bool(key, array.as_boolean().value(row)),
            Role::Field(FieldType::String) => {
                line.string(key, array.as_string::<i32>().value(row))?;
            }
            Role::Time => {}
        }
    }
    Ok(time)
}

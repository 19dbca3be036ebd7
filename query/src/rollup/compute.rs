//! Rollup rows from Arrow batches: the rows of a table (or of its 15-minute rollup)
//! grouped by series, sorted by time, folded into one row per series and bucket.

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float64Type, Int64Type, Schema, TimestampNanosecondType,
};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use storage::{COLUMN_ROLE_KEY, FieldValue, Row, TIME_COLUMN};

use crate::bucket::Bucketing;
use crate::counter::{CounterRules, deltas};

/// A numeric field of a rolled-up table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NumericField {
    pub(super) name: String,
    /// A cumulative register (`*_wh`): its rollups also carry `<name>_energy`.
    pub(super) counter: bool,
}

/// Suffix of the cumulative energy registers whose steps are summed.
pub(super) const COUNTER_SUFFIX: &str = "_wh";

/// The columns of one rollup row per numeric field, in the order they are written.
pub(super) const COUNT: &str = "count";
pub(super) const MIN: &str = "min";
pub(super) const MAX: &str = "max";
pub(super) const SUM: &str = "sum";
pub(super) const AVG: &str = "avg";
pub(super) const LAST: &str = "last";
pub(super) const ENERGY: &str = "energy";

pub(super) fn column(field: &str, aggregate: &str) -> String {
    format!("{field}_{aggregate}")
}

fn role(field: &arrow::datatypes::Field) -> Option<&str> {
    field.metadata().get(COLUMN_ROLE_KEY).map(String::as_str)
}

/// The tag columns of a table, in table order.
pub(super) fn tag_names(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| role(f) == Some("tag"))
        .map(|f| f.name().clone())
        .collect()
}

/// The fields of a table that are rolled up: Float64, Int64 and UInt64 ones. Strings
/// (`quality`, `source`) and booleans have no sum or average.
pub(super) fn numeric_fields(schema: &Schema) -> Vec<NumericField> {
    schema
        .fields()
        .iter()
        .filter(|f| role(f) == Some("field"))
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Float64 | DataType::Int64 | DataType::UInt64
            )
        })
        .map(|f| NumericField {
            name: f.name().clone(),
            counter: super::is_counter(f.name()),
        })
        .collect()
}

/// One row of the input, by position.
#[derive(Debug, Clone, Copy)]
struct RowRef {
    time: i64,
    batch: u32,
    row: u32,
}

/// The rows of one series (one combination of tag values), sorted by time.
#[derive(Debug)]
struct Series {
    /// The non-null tags, sorted by name (as storage rows want them).
    tags: Vec<(String, String)>,
    rows: Vec<RowRef>,
}

/// Groups the rows of `batches` by the values of the tag columns `tags` (NULL is a
/// value of its own), each group sorted by time. Times are unique within a series:
/// the store's scan has applied last write wins. Batches may differ in their other
/// columns (the lookback reads only the registers).
fn group(batches: &[RecordBatch], tags: &[String]) -> Result<Vec<Series>, ArrowError> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = first.schema();
    let converter = RowConverter::new(
        tags.iter()
            .map(|t| {
                Ok(SortField::new(
                    schema.field_with_name(t)?.data_type().clone(),
                ))
            })
            .collect::<Result<_, ArrowError>>()?,
    )?;
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut series: Vec<Series> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let times = batch
            .column_by_name(TIME_COLUMN)
            .ok_or_else(|| ArrowError::SchemaError(format!("no {TIME_COLUMN} column")))?
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(|| ArrowError::SchemaError(format!("{TIME_COLUMN} is not a timestamp")))?
            .clone();
        let tag_columns: Vec<ArrayRef> = tags
            .iter()
            .map(|t| {
                batch
                    .column_by_name(t)
                    .cloned()
                    .ok_or_else(|| ArrowError::SchemaError(format!("no tag column {t}")))
            })
            .collect::<Result<_, _>>()?;
        let keys = if tag_columns.is_empty() {
            None
        } else {
            Some(converter.convert_columns(&tag_columns)?)
        };
        // Strings only for the first row of each series, which names its tags.
        let mut strings: Option<Vec<StringArray>> = None;
        for i in 0..batch.num_rows() {
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
            let s = match index.get(key) {
                Some(&s) => s,
                None => {
                    if strings.is_none() {
                        strings = Some(
                            tag_columns
                                .iter()
                                .map(|c| Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone()))
                                .collect::<Result<_, ArrowError>>()?,
                        );
                    }
                    let strings = strings.as_ref().expect("just set");
                    let mut named: Vec<(String, String)> = tags
                        .iter()
                        .zip(strings)
                        .filter(|(_, values)| values.is_valid(i))
                        .map(|(name, values)| (name.clone(), values.value(i).to_owned()))
                        .collect();
                    named.sort();
                    index.insert(key.to_vec(), series.len());
                    series.push(Series {
                        tags: named,
                        rows: Vec::new(),
                    });
                    series.len() - 1
                }
            };
            series[s].rows.push(RowRef {
                time: times.value(i),
                batch: b as u32,
                row: i as u32,
            });
        }
    }
    for s in &mut series {
        s.rows.sort_unstable_by_key(|r| r.time);
    }
    Ok(series)
}

/// `name` of every batch cast to `T` (None where a batch lacks it).
fn cast_columns<T: ArrowPrimitiveType>(
    batches: &[RecordBatch],
    name: &str,
) -> Result<Vec<Option<PrimitiveArray<T>>>, ArrowError> {
    batches
        .iter()
        .map(|b| {
            b.column_by_name(name)
                .map(|c| Ok(cast(c, &T::DATA_TYPE)?.as_primitive::<T>().clone()))
                .transpose()
        })
        .collect()
}

/// `name` of every batch as Float64 (None where a batch lacks it).
fn floats(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<Float64Array>>, ArrowError> {
    cast_columns::<Float64Type>(batches, name)
}

/// `name` of every batch as Int64 (None where a batch lacks it).
fn integers(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<Int64Array>>, ArrowError> {
    cast_columns::<Int64Type>(batches, name)
}

/// A real value of a column at a row: NULL, NaN and infinities are all missing (as
/// they are to `counter::deltas`).
fn value(columns: &[Option<Float64Array>], r: RowRef) -> Option<f64> {
    let column = columns[r.batch as usize].as_ref()?;
    let i = r.row as usize;
    (column.is_valid(i) && column.value(i).is_finite()).then(|| column.value(i))
}

fn count(columns: &[Option<Int64Array>], r: RowRef) -> i64 {
    columns[r.batch as usize]
        .as_ref()
        .filter(|c| c.is_valid(r.row as usize))
        .map_or(0, |c| c.value(r.row as usize))
}

/// The aggregates of one field over one bucket.
#[derive(Debug, Clone, Copy)]
struct Acc {
    count: i64,
    min: f64,
    max: f64,
    sum: f64,
    last: Option<f64>,
    energy: Option<f64>,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            last: None,
            energy: None,
        }
    }
}

impl Acc {
    /// One reading; readings come in time order, so the latest is the last one added.
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.last = Some(v);
    }

    fn add_energy(&mut self, e: f64) {
        self.energy = Some(self.energy.unwrap_or(0.0) + e);
    }
}

/// The rollup row of one series and bucket.
fn emit(time: i64, tags: &[(String, String)], fields: &[NumericField], accs: &[Acc]) -> Row {
    let mut values = Vec::with_capacity(fields.len() * 7);
    for (field, acc) in fields.iter().zip(accs) {
        values.push((column(&field.name, COUNT), FieldValue::I64(acc.count)));
        if acc.count > 0 {
            values.push((column(&field.name, MIN), FieldValue::F64(acc.min)));
            values.push((column(&field.name, MAX), FieldValue::F64(acc.max)));
            values.push((column(&field.name, SUM), FieldValue::F64(acc.sum)));
            values.push((
                column(&field.name, AVG),
                FieldValue::F64(acc.sum / acc.count as f64),
            ));
            if let Some(last) = acc.last {
                values.push((column(&field.name, LAST), FieldValue::F64(last)));
            }
        }
        if field.counter
            && let Some(energy) = acc.energy
        {
            values.push((column(&field.name, ENERGY), FieldValue::F64(energy)));
        }
    }
    Row {
        time,
        tags: tags.to_vec(),
        fields: values,
    }
}

/// Walks each series in time order over the rows in `[from, to)` and emits a row for
/// every bucket that has one; `add` folds row `k` of the series into the bucket's
/// accumulators (one per field).
fn fold(
    series: &[Series],
    fields: &[NumericField],
    bucketing: &Bucketing,
    from: i64,
    to: i64,
    mut add: impl FnMut(usize, &Series, &mut [Acc]),
) -> Vec<Row> {
    let mut out = Vec::new();
    for s in series {
        let mut current: Option<(i64, i64)> = None;
        let mut accs = vec![Acc::default(); fields.len()];
        for (k, r) in s.rows.iter().enumerate() {
            if r.time < from || r.time >= to {
                continue;
            }
            let in_current = current.is_some_and(|(start, next)| r.time >= start && r.time < next);
            if !in_current {
                if let Some((start, _)) = current {
                    out.push(emit(start, &s.tags, fields, &accs));
                    accs.fill(Acc::default());
                }
                let start = bucketing.start(r.time);
                current = Some((start, bucketing.next(start)));
            }
            add(k, s, &mut accs);
        }
        if let Some((start, _)) = current {
            out.push(emit(start, &s.tags, fields, &accs));
        }
    }
    out
}

/// Rollup rows of raw rows: one per series and bucket of `bucketing` that has a row
/// with a time in `[from, to)`. `batches` hold `time`, the tag columns `tags` and the
/// numeric `fields`. Rows before `from` (the scan reads an hour more) only give the
/// energy step into the first readings of the range.
pub(super) fn from_raw(
    batches: &[RecordBatch],
    tags: &[String],
    fields: &[NumericField],
    bucketing: &Bucketing,
    from: i64,
    to: i64,
) -> Result<Vec<Row>, ArrowError> {
    let series = group(batches, tags)?;
    let values = fields
        .iter()
        .map(|f| floats(batches, &f.name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for s in &series {
        // The energy step of each reading of each register, from the series' previous
        // real reading (the one rule for steps, `counter::deltas`).
        let steps: Vec<Option<Vec<Option<f64>>>> = fields
            .iter()
            .zip(&values)
            .map(|(field, columns)| {
                field.counter.then(|| {
                    let mut times = Vec::with_capacity(s.rows.len());
                    let mut readings = Vec::with_capacity(s.rows.len());
                    let mut at = Vec::with_capacity(s.rows.len());
                    for (k, &r) in s.rows.iter().enumerate() {
                        if let Some(v) = value(columns, r) {
                            times.push(r.time);
                            readings.push(v);
                            at.push(k);
                        }
                    }
                    let mut by_row = vec![None; s.rows.len()];
                    for (k, step) in
                        at.into_iter()
                            .zip(deltas(&CounterRules::ROLLUP, &times, &readings))
                    {
                        by_row[k] = step;
                    }
                    by_row
                })
            })
            .collect();
        out.extend(fold(
            std::slice::from_ref(s),
            fields,
            bucketing,
            from,
            to,
            |k, s, accs| {
                let r = s.rows[k];
                for (j, acc) in accs.iter_mut().enumerate() {
                    if let Some(v) = value(&values[j], r) {
                        acc.add(v);
                    }
                    if let Some(Some(step)) = steps[j].as_ref().map(|by_row| by_row[k]) {
                        acc.add_energy(step);
                    }
                }
            },
        ));
    }
    Ok(out)
}

/// Rollup rows of coarser buckets from 15-minute rollup rows: counts, sums and
/// energies add up, minima and maxima of minima and maxima, the last value is the
/// latest bucket's. `batches` hold `time`, the tags `tags` and the rollup columns of
/// `fields` (those missing are treated as NULL).
pub(super) fn from_rollup(
    batches: &[RecordBatch],
    tags: &[String],
    fields: &[NumericField],
    bucketing: &Bucketing,
    from: i64,
    to: i64,
) -> Result<Vec<Row>, ArrowError> {
    struct Columns {
        count: Vec<Option<Int64Array>>,
        min: Vec<Option<Float64Array>>,
        max: Vec<Option<Float64Array>>,
        sum: Vec<Option<Float64Array>>,
        last: Vec<Option<Float64Array>>,
        energy: Vec<Option<Float64Array>>,
    }
    let columns = fields
        .iter()
        .map(|f| {
            Ok(Columns {
                count: integers(batches, &column(&f.name, COUNT))?,
                min: floats(batches, &column(&f.name, MIN))?,
                max: floats(batches, &column(&f.name, MAX))?,
                sum: floats(batches, &column(&f.name, SUM))?,
                last: floats(batches, &column(&f.name, LAST))?,
                energy: floats(batches, &column(&f.name, ENERGY))?,
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let series = group(batches, tags)?;
    Ok(fold(&series, fields, bucketing, from, to, |k, s, accs| {
        let r = s.rows[k];
        for (acc, c) in accs.iter_mut().zip(&columns) {
            let n = count(&c.count, r);
            if n > 0 {
                acc.count += n;
                if let Some(v) = value(&c.min, r) {
                    acc.min = acc.min.min(v);
                }
                if let Some(v) = value(&c.max, r) {
                    acc.max = acc.max.max(v);
                }
                acc.sum += value(&c.sum, r).unwrap_or(0.0);
                if let Some(v) = value(&c.last, r) {
                    acc.last = Some(v);
                }
            }
            if let Some(e) = value(&c.energy, r) {
                acc.add_energy(e);
            }
        }
    }))
}

//! Deletes: a tombstone in the catalog hides the rows it names from every scan at once;
//! compaction then rewrites the files without them and the tombstone is dropped.
//!
//! A tombstone applies only to the files that existed when it was recorded (the write
//! buffer is snapshotted first, so every acknowledged write before the delete is in such
//! a file). Rows written after the delete land in newer files and stay visible.

use arrow::array::{Array, AsArray, BooleanArray, BooleanBufferBuilder};
use arrow::datatypes::{DataType, Int32Type};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::catalog::ParquetFile;
use crate::error::Result;
use crate::types::{TIME_COLUMN, TimeRange};

/// What to delete: rows of `table` whose tags equal all of `tags` and whose time lies in
/// `range` (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePredicate {
    /// The table.
    pub table: String,
    /// `(tag, value)` pairs that must all match; empty selects every series.
    pub tags: Vec<(String, String)>,
    /// Times to delete, inclusive; [`TimeRange::ALL`] for all of them.
    pub range: TimeRange,
}

/// A recorded delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Unique and growing: a file whose `deletes_applied` is at least this id no longer
    /// holds the rows.
    pub id: u64,
    /// The table.
    pub table: String,
    /// `(tag, value)` pairs that must all match; empty selects every series.
    pub tags: Vec<(String, String)>,
    /// Earliest deleted time (inclusive, ns).
    pub min_time: i64,
    /// Latest deleted time (inclusive, ns).
    pub max_time: i64,
    /// The tombstone applies to the files with an id up to this one: every write
    /// acknowledged before the delete.
    pub files_through: u64,
    /// When the delete was recorded (ns since the epoch), for operators.
    pub created_ns: i64,
}

impl Tombstone {
    /// The deleted times.
    pub fn range(&self) -> TimeRange {
        TimeRange {
            min: self.min_time,
            max: self.max_time,
        }
    }

    /// Whether the tombstone may hide rows of `file` (of the same table): the file
    /// predates the delete, has not been rewritten without the rows yet, and overlaps
    /// the deleted times.
    pub(crate) fn applies_to(&self, file: &ParquetFile) -> bool {
        file.id <= self.files_through
            && file.deletes_applied < self.id
            && file.time_range().overlaps(&self.range())
    }

    /// The rows of `batch` the tombstone hides (true = hidden). `batch` has a `time`
    /// column and the table's tag columns by name; see [`rows_with_tags`].
    pub(crate) fn hides(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let named = rows_with_tags(batch, &self.tags)?;
        let Some(time) = batch.column_by_name(TIME_COLUMN) else {
            return Ok(named);
        };
        let time = time.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        let in_range: BooleanArray = time
            .iter()
            .map(|t| Some(t.is_some_and(|t| t >= self.min_time && t <= self.max_time)))
            .collect();
        Ok(arrow::compute::and(&named, &in_range)?)
    }
}

/// The rows of `batch` whose tag columns equal all of `tags` (true = named; every row
/// when `tags` is empty). A tag column the batch lacks is null in every row, which no
/// value matches. How a delete selects series, for the store and for the caches that
/// follow deletes.
pub fn rows_with_tags(batch: &RecordBatch, tags: &[(String, String)]) -> Result<BooleanArray> {
    let rows = batch.num_rows();
    let mut named = BooleanBufferBuilder::new(rows);
    named.append_n(rows, true);
    for (tag, value) in tags {
        let Some(column) = batch.column_by_name(tag) else {
            return Ok(BooleanArray::from(vec![false; rows]));
        };
        match column.data_type() {
            DataType::Dictionary(_, _) => {
                let dict = column.as_dictionary::<Int32Type>();
                let values = dict.values().as_string::<i32>();
                // Compare each dictionary value once, then look the rows up.
                let matching: Vec<bool> = (0..values.len())
                    .map(|k| values.is_valid(k) && values.value(k) == value)
                    .collect();
                for (i, key) in dict.keys().iter().enumerate() {
                    if !key.is_some_and(|k| matching[k as usize]) {
                        named.set_bit(i, false);
                    }
                }
            }
            _ => {
                let strings = arrow::compute::cast(column, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                for (i, s) in strings.iter().enumerate() {
                    if s != Some(value.as_str()) {
                        named.set_bit(i, false);
                    }
                }
            }
        }
    }
    Ok(BooleanArray::new(named.finish(), None))
}

/// Removes the rows any of `tombstones` hides from `batch`.
pub(crate) fn remove_hidden<'a>(
    batch: RecordBatch,
    tombstones: impl IntoIterator<Item = &'a Tombstone>,
) -> Result<RecordBatch> {
    let mut batch = batch;
    for tombstone in tombstones {
        if batch.num_rows() == 0 {
            break;
        }
        let hidden = tombstone.hides(&batch)?;
        if hidden.true_count() == 0 {
            continue;
        }
        let keep = arrow::compute::not(&hidden)?;
        batch = arrow::compute::filter_record_batch(&batch, &keep)?;
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn batch(rows: &[(Option<&str>, Option<&str>, i64)]) -> RecordBatch {
        let mut site = StringDictionaryBuilder::<Int32Type>::new();
        let mut device = StringDictionaryBuilder::<Int32Type>::new();
        for (s, d, _) in rows {
            site.append_option(*s);
            device.append_option(*d);
        }
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("site_id", dict.clone(), true),
            Field::new("device_id", dict, true),
            Field::new("v", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampNanosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(site.finish()),
            Arc::new(device.finish()),
            Arc::new(Float64Array::from(vec![1.0; rows.len()])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn tombstone(tags: &[(&str, &str)], min_time: i64, max_time: i64) -> Tombstone {
        Tombstone {
            id: 1,
            table: "meter".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            min_time,
            max_time,
            files_through: 10,
            created_ns: 0,
        }
    }

    fn hidden(t: &Tombstone, b: &RecordBatch) -> Vec<bool> {
        t.hides(b).unwrap().iter().map(|v| v.unwrap()).collect()
    }

    #[test]
    fn hides_rows_matching_every_tag_inside_the_time_range() {
        let b = batch(&[
            (Some("s1"), Some("m1"), 5),
            (Some("s1"), Some("m2"), 5),
            (Some("s2"), Some("m1"), 5),
            (Some("s1"), Some("m1"), 11),
            (None, Some("m1"), 5),
        ]);
        let t = tombstone(&[("site_id", "s1")], 0, 10);
        assert_eq!(hidden(&t, &b), [true, true, false, false, false]);
        let t = tombstone(&[("site_id", "s1"), ("device_id", "m1")], 5, 11);
        assert_eq!(hidden(&t, &b), [true, false, false, true, false]);
        let t = tombstone(&[], 5, 5);
        assert_eq!(hidden(&t, &b), [true, true, true, false, true]);
        // A tag the batch does not have is null everywhere: nothing matches.
        let t = tombstone(&[("phase", "L1")], i64::MIN, i64::MAX);
        assert_eq!(hidden(&t, &b), [false; 5]);
        let kept = remove_hidden(b, [&tombstone(&[("site_id", "s1")], 0, 10)]).unwrap();
        assert_eq!(kept.num_rows(), 3);
    }

    #[test]
    fn applies_only_to_older_unrewritten_overlapping_files() {
        let t = tombstone(&[], 100, 200);
        let file = |id, deletes_applied, min_time, max_time| ParquetFile {
            id,
            path: String::new(),
            min_time,
            max_time,
            row_count: 1,
            size_bytes: 1,
            deletes_applied,
        };
        assert!(t.applies_to(&file(10, 0, 150, 300)));
        assert!(
            !t.applies_to(&file(11, 0, 150, 300)),
            "newer than the delete"
        );
        assert!(!t.applies_to(&file(10, 1, 150, 300)), "already rewritten");
        assert!(!t.applies_to(&file(10, 0, 201, 300)), "no overlap");
    }
}

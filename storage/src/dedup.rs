//! Last-write-wins deduplication: one row per (tag set, time) in a table.
//!
//! Batches arrive in write order (older Parquet files, then newer ones, then the write
//! buffer); for every key only its last occurrence survives.

use std::collections::HashSet;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::error::Result;

/// Keeps the last row of every key. `key_columns` are positions (in every batch, all of
/// which share one schema) of the tag columns and `time`.
pub(crate) fn last_write_wins(
    batches: Vec<RecordBatch>,
    key_columns: &[usize],
) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let schema = first.schema();
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    // Convert every batch first so the set can borrow the keys instead of boxing each
    // one; foldhash because SipHash showed up in profiles and these keys are not
    // attacker-chosen in a way a DoS could exploit beyond the request that sent them.
    let rows = batches
        .iter()
        .map(|batch| {
            let keys: Vec<ArrayRef> = key_columns
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            converter.convert_columns(&keys)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut seen: HashSet<&[u8], foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(total, foldhash::fast::RandomState::default());
    let mut masks = Vec::with_capacity(batches.len());
    let mut duplicates = 0;
    // Walk from the newest row back: the first time a key is seen is its last write.
    for rows in rows.iter().rev() {
        let mut keep = vec![false; rows.num_rows()];
        for i in (0..rows.num_rows()).rev() {
            if seen.insert(rows.row(i).data()) {
                keep[i] = true;
            } else {
                duplicates += 1;
            }
        }
        masks.push(keep);
    }
    if duplicates == 0 {
        return Ok(batches);
    }
    masks.reverse();
    batches
        .iter()
        .zip(masks)
        .map(|(b, keep)| Ok(filter_record_batch(b, &BooleanArray::from(keep))?))
        .filter(|r: &Result<RecordBatch>| r.as_ref().map_or(true, |b| b.num_rows() > 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(&str, i64, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("dev", DataType::Utf8, true),
            Field::new("time", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        for b in batches {
            let d = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let t = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push((d.value(i).to_string(), t.value(i), v.value(i)));
            }
        }
        out
    }

    #[test]
    fn the_last_write_of_a_key_wins_within_and_across_batches() {
        let older = batch(&[("a", 1, 1.0), ("b", 1, 2.0), ("a", 1, 3.0)]);
        let newer = batch(&[("b", 1, 4.0), ("a", 2, 5.0)]);
        let out = last_write_wins(vec![older, newer], &[0, 1]).unwrap();
        assert_eq!(
            values(&out),
            [
                ("a".into(), 1, 3.0),
                ("b".into(), 1, 4.0),
                ("a".into(), 2, 5.0)
            ]
        );
    }

    #[test]
    fn distinct_keys_pass_through_untouched() {
        let b = batch(&[("a", 1, 1.0), ("a", 2, 2.0), ("b", 1, 3.0)]);
        let out = last_write_wins(vec![b.clone()], &[0, 1]).unwrap();
        assert_eq!(out, vec![b]);
    }
}

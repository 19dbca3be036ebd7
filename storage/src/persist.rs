//! Turning buffered Arrow batches into Parquet files, and reading them back.
//!
//! A snapshot of one table is deduplicated (last write wins), split by UTC day, sorted by
//! series (tags in table order) then time, and written with ZSTD compression and
//! dictionary-encoded tags to `tables/<table>/<YYYY-MM-DD>/<file id>.parquet`.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatchOptions, TimestampNanosecondArray, new_null_array};
use arrow::array::{DictionaryArray, StringArray, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::catalog::ParquetFile;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::objects::ObjectStorage;
use crate::schema::{ColumnKind, TableSchema};
use crate::types::FieldType;
use crate::types::TimeRange;

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// Brings a batch whose columns are a subset of `target`'s (matched by name) to exactly
/// `target`'s columns, filling absent ones with nulls.
pub(crate) fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(RecordBatch::try_new(
            Arc::clone(target),
            batch.columns().to_vec(),
        )?);
    }
    let columns: Vec<ArrayRef> = target
        .fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| new_null_array(f.data_type(), batch.num_rows()))
        })
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(target),
        columns,
        &options,
    )?)
}

/// The `time` column of a batch conformed to a table schema (always column 0).
fn times(batch: &RecordBatch) -> Option<&TimestampNanosecondArray> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
}

/// Keeps the rows of `batch` whose time lies in `range`.
pub(crate) fn filter_time(
    batch: RecordBatch,
    time_column: usize,
    range: TimeRange,
) -> Result<RecordBatch> {
    if range == TimeRange::ALL {
        return Ok(batch);
    }
    let Some(t) = batch
        .column(time_column)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
    else {
        return Ok(batch);
    };
    let mask: arrow::array::BooleanArray = t
        .iter()
        .map(|v| v.map(|v| v >= range.min && v <= range.max))
        .collect();
    if mask.true_count() == batch.num_rows() {
        return Ok(batch);
    }
    Ok(filter_record_batch(&batch, &mask)?)
}

/// The name of a UTC day (days since the epoch), as `YYYY-MM-DD`.
pub(crate) fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{day}"))
}

/// Where the files of one partition (table, UTC day named by [`day_name`]) live, relative
/// to the storage root: `tables/<table>/<YYYY-MM-DD>`.
pub(crate) fn partition_dir(table: &str, day_name: &str) -> String {
    format!("tables/{table}/{day_name}")
}

/// How a snapshot writes the Parquet files of `schema`: ZSTD at the configured level,
/// row groups of the configured size, sorted by the tags in table order (nulls first)
/// then time, and each column in the encoding that suits its values.
pub(crate) fn writer_properties(
    schema: &TableSchema,
    config: &StoreConfig,
) -> Result<WriterProperties> {
    properties(schema, config, false)
}

/// How compaction writes its outputs: as [`writer_properties`], but measurements try a
/// dictionary first. Meter readings come in fixed steps (0.1 W, 1 Wh, 0.1 V), so a
/// column chunk often holds few distinct values and a dictionary halves it; where it
/// does not, the writer falls back to the snapshot's encoding once the dictionary page
/// is full. That costs a hash per value, which the write path cannot afford (it showed
/// in profiles) and compaction, off that path, can.
pub(crate) fn compacted_writer_properties(
    schema: &TableSchema,
    config: &StoreConfig,
) -> Result<WriterProperties> {
    properties(schema, config, true)
}

fn properties(
    schema: &TableSchema,
    config: &StoreConfig,
    measurement_dictionaries: bool,
) -> Result<WriterProperties> {
    let sorting: Vec<SortingColumn> = schema
        .tag_positions()
        .chain([0])
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(
            config.parquet_zstd_level,
        )?))
        .set_max_row_group_row_count(Some(config.parquet_row_group_rows.max(1)))
        .set_sorting_columns(Some(sorting))
        .set_dictionary_enabled(true);
    // Dictionaries pay off for tags and text. Times sorted within a series
    // delta-encode well; floats compress better with their bytes split into streams.
    // With a dictionary enabled, the encoding set here is its fallback.
    for c in schema.columns() {
        let path = ColumnPath::from(c.name.as_str());
        match c.kind {
            ColumnKind::Tag | ColumnKind::Field(FieldType::String) => {}
            ColumnKind::Time => {
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            ColumnKind::Field(FieldType::I64 | FieldType::U64) => {
                props = props
                    .set_column_dictionary_enabled(path.clone(), measurement_dictionaries)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            ColumnKind::Field(FieldType::F64) => {
                props = props
                    .set_column_dictionary_enabled(path.clone(), measurement_dictionaries)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            ColumnKind::Field(FieldType::Bool) => {
                props = props.set_column_dictionary_enabled(path, false);
            }
        }
    }
    Ok(props.build())
}

/// Writes the rows of one table into one Parquet file per UTC day. `batches` are in
/// write order; ids are drawn from `next_file_id`.
pub(crate) fn write_table(
    objects: &ObjectStorage,
    table: &str,
    schema: &TableSchema,
    batches: &[RecordBatch],
    next_file_id: &mut u64,
    config: &StoreConfig,
) -> Result<Vec<ParquetFile>> {
    let target = Arc::clone(schema.arrow_schema());
    let conformed = batches
        .iter()
        .map(|b| conform(b, &target))
        .collect::<Result<Vec<_>>>()?;
    let all = concat_batches(&target, &conformed)?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let time = times(&all)
        .ok_or_else(|| Error::Catalog {
            path: PathBuf::from(objects.describe()),
            reason: format!("table {table}: time column is not a nanosecond timestamp"),
        })?
        .values();
    let tags: Vec<usize> = schema.tag_positions().collect();
    let keep = sorted_survivors(&all, time, &tags)?;

    // Rows are sorted by series first, so one day's rows are scattered: split by mask.
    let row_days: Vec<i64> = keep
        .iter()
        .map(|&row| time[row as usize].div_euclid(NANOS_PER_DAY))
        .collect();
    let sorted = take_record_batch(&all, &UInt32Array::from(keep))?;
    let mut days = row_days.clone();
    days.sort_unstable();
    days.dedup();

    let mut files = Vec::with_capacity(days.len());
    let single_day = days.len() == 1;
    for day in days {
        // Most snapshots cover one day: write the sorted batch without copying it.
        let part = if single_day {
            sorted.clone()
        } else {
            let mask: arrow::array::BooleanArray =
                row_days.iter().map(|d| Some(*d == day)).collect();
            filter_record_batch(&sorted, &mask)?
        };
        let id = *next_file_id;
        *next_file_id += 1;
        files.push(write_file(
            objects,
            table,
            &day_name(day),
            id,
            &part,
            schema,
            config,
        )?);
    }
    Ok(files)
}

/// The rows of `batch` (in write order, times `time`) to keep, sorted by series, then
/// time, with only the last write of every point: the order the Parquet files declare
/// (tags ascending with nulls first, then time) and the deduplication queries rely on,
/// in one sort.
///
/// Why not `lexsort_to_indices` and a hash set of row keys? A profile of the write loop
/// showed the persister spending more CPU than the parser: string comparisons through
/// dynamic comparators for every pair, and an allocation per row for the set. Here each
/// tag value is replaced by its rank among the distinct values (nulls rank 0), so rows
/// compare as integers; when the ranks of all tags fit in 64 bits the sort key is one
/// `u64` and the time.
fn sorted_survivors(
    batch: &RecordBatch,
    time: &[i64],
    tag_positions: &[usize],
) -> Result<Vec<u32>> {
    let ranks = tag_positions
        .iter()
        .map(|&i| tag_ranks(batch.column(i)))
        .collect::<Result<Vec<_>>>()?;
    let bits: u32 = ranks
        .iter()
        .map(|(_, max)| u32::BITS - max.leading_zeros())
        .sum();
    Ok(surviving_rows(&ranks, time, bits <= 64))
}

/// The rows that survive deduplication, in (series, time) order; see
/// [`sorted_survivors`].
/// `packed` (all ranks fit one `u64`) picks the integer-key sort; the general one gives
/// the same answer.
fn surviving_rows(ranks: &[(Vec<u32>, u32)], time: &[i64], packed: bool) -> Vec<u32> {
    if packed {
        let widths: Vec<u32> = ranks
            .iter()
            .map(|(_, max)| u32::BITS - max.leading_zeros())
            .collect();
        let mut keys: Vec<(u64, i64, u32)> = (0..time.len())
            .map(|row| {
                let mut series = 0u64;
                for ((r, _), width) in ranks.iter().zip(&widths) {
                    series = (series << width) | u64::from(r[row]);
                }
                (series, time[row], row as u32)
            })
            .collect();
        // Equal (series, time) keys end up in write order: the last one wins.
        keys.sort_unstable();
        let mut keep = Vec::with_capacity(time.len());
        for (i, k) in keys.iter().enumerate() {
            if keys
                .get(i + 1)
                .is_none_or(|next| (next.0, next.1) != (k.0, k.1))
            {
                keep.push(k.2);
            }
        }
        keep
    } else {
        let mut order: Vec<u32> = (0..time.len() as u32).collect();
        let key = |row: u32| {
            let row = row as usize;
            (ranks.iter().map(move |(r, _)| r[row]), time[row])
        };
        order.sort_unstable_by(|&a, &b| {
            let (ta, time_a) = key(a);
            let (tb, time_b) = key(b);
            ta.cmp(tb).then(time_a.cmp(&time_b)).then(a.cmp(&b))
        });
        let same = |a: u32, b: u32| {
            let (ta, time_a) = key(a);
            let (tb, time_b) = key(b);
            time_a == time_b && ta.eq(tb)
        };
        let mut keep = Vec::with_capacity(time.len());
        for (i, &row) in order.iter().enumerate() {
            if order.get(i + 1).is_none_or(|&next| !same(row, next)) {
                keep.push(row);
            }
        }
        keep
    }
}

/// The rank of every row's tag value among the column's distinct values (1-based, in
/// byte order; null is 0), and the largest rank.
fn tag_ranks(column: &ArrayRef) -> Result<(Vec<u32>, u32)> {
    if let Some(dict) = column.as_any().downcast_ref::<DictionaryArray<Int32Type>>()
        && let Some(values) = dict.values().as_any().downcast_ref::<StringArray>()
    {
        // Rank the dictionary's values (a few thousand), then look the rows up.
        let (value_ranks, max) = rank_strings(values);
        let ranks = dict
            .keys()
            .iter()
            .map(|k| k.map_or(0, |k| value_ranks[k as usize]))
            .collect();
        return Ok((ranks, max));
    }
    let strings = arrow::compute::cast(column, &DataType::Utf8)?;
    let strings = strings
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray");
    Ok(rank_strings(strings))
}

/// Ranks of the values of a string array: equal strings get equal ranks, nulls 0.
fn rank_strings(values: &StringArray) -> (Vec<u32>, u32) {
    let mut order: Vec<u32> = (0..values.len() as u32)
        .filter(|&i| values.is_valid(i as usize))
        .collect();
    order.sort_unstable_by(|&a, &b| values.value(a as usize).cmp(values.value(b as usize)));
    let mut ranks = vec![0u32; values.len()];
    let mut rank = 0u32;
    let mut previous: Option<&str> = None;
    for &i in &order {
        let v = values.value(i as usize);
        if previous != Some(v) {
            rank += 1;
            previous = Some(v);
        }
        ranks[i as usize] = rank;
    }
    (ranks, rank)
}

/// Encodes `batch` as one Parquet file and stores it durably in the partition's
/// directory, named after its id.
fn write_file(
    objects: &ObjectStorage,
    table: &str,
    day: &str,
    id: u64,
    batch: &RecordBatch,
    schema: &TableSchema,
    config: &StoreConfig,
) -> Result<ParquetFile> {
    let path = format!("{}/{id:020}.parquet", partition_dir(table, day));
    let props = writer_properties(schema, config)?;
    // Encoded in memory and stored with one put: an object store takes whole objects,
    // and a snapshot's file is a fraction of the buffer it came from.
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    writer.write(batch)?;
    let bytes = writer.into_inner()?;
    let size_bytes = bytes.len() as u64;
    objects.put(&path, Bytes::from(bytes))?;

    let t = times(batch);
    let (min_time, max_time) = t
        .map(|t| {
            t.values()
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
        })
        .unwrap_or((i64::MIN, i64::MAX));
    Ok(ParquetFile {
        id,
        path,
        min_time,
        max_time,
        row_count: batch.num_rows() as u64,
        size_bytes,
        deletes_applied: 0,
    })
}

/// Reads the columns of `wanted` that the file has; the caller conforms the rest.
pub(crate) fn read_file(
    objects: &ObjectStorage,
    file: &ParquetFile,
    wanted: &Schema,
) -> Result<Vec<RecordBatch>> {
    let reader = objects.reader(&file.path, file.size_bytes)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader)?;
    let file_schema = Arc::clone(builder.schema());
    let roots: Vec<usize> = wanted
        .fields()
        .iter()
        .filter_map(|f| file_schema.index_of(f.name()).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        out.push(batch?);
    }
    Ok(out)
}

/// Deletes Parquet files under `tables/` that the catalog does not list: files written
/// by a snapshot or a compaction that crashed before its catalog update, files a
/// compaction replaced but had not deleted yet, and temporary files of interrupted
/// writes. Their rows are in the WAL (which is replayed) or in the files that replaced
/// them, so they hold nothing that is not elsewhere. Run it before anything writes.
pub(crate) fn remove_orphans(
    objects: &ObjectStorage,
    catalog: &crate::catalog::Catalog,
) -> Result<usize> {
    let known: std::collections::HashSet<&str> = catalog
        .tables
        .values()
        .flat_map(|t| &t.files)
        .map(|f| f.path.as_str())
        .collect();
    let mut removed = 0;
    for (path, _) in objects.list("tables")? {
        let ours = path.ends_with(".parquet") || path.ends_with(".tmp");
        if ours && !known.contains(path.as_str()) {
            objects.delete(&path)?;
            tracing::warn!(file = %path, storage = %objects.describe(), "removed a file no catalog entry names (left by an interrupted snapshot or compaction)");
            removed += 1;
        }
    }
    objects.remove_empty_dirs("tables")?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Int64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use arrow::datatypes::{Field, TimeUnit};
    use proptest::prelude::*;

    use super::*;

    /// A batch with two dictionary tags, a time and a value that is the write index.
    fn batch(rows: &[(Option<&str>, Option<&str>, i64)]) -> RecordBatch {
        let mut a = StringDictionaryBuilder::<Int32Type>::new();
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for (ta, tb, _) in rows {
            a.append_option(*ta);
            b.append_option(*tb);
        }
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("a", dict.clone(), true),
            Field::new("b", dict, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampNanosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(a.finish()),
            Arc::new(b.finish()),
            Arc::new(Int64Array::from((0..rows.len() as i64).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// The written indices that should survive, in (a, b, time) order with nulls
    /// first: what a map keeping the last write of every key gives.
    fn model(rows: &[(Option<&str>, Option<&str>, i64)]) -> Vec<i64> {
        let mut last = BTreeMap::new();
        for (i, (a, b, t)) in rows.iter().enumerate() {
            last.insert((*a, *b, *t), i as i64);
        }
        last.into_values().collect()
    }

    /// The batch's surviving rows in order, as the snapshot writes them.
    fn sort_dedup(b: &RecordBatch) -> RecordBatch {
        let keep = sorted_survivors(b, times(b).unwrap().values(), &[1, 2]).unwrap();
        take_record_batch(b, &UInt32Array::from(keep)).unwrap()
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn sorts_by_series_then_time_and_keeps_the_last_write() {
        let rows = [
            (Some("m2"), None, 5),
            (Some("m1"), Some("x"), 7),
            (Some("m2"), None, 5), // overwrites row 0
            (None, Some("x"), 1),
            (Some("m1"), Some("x"), 3),
        ];
        assert_eq!(values(&sort_dedup(&batch(&rows))), vec![3, 4, 1, 2]);
    }

    proptest! {
        #[test]
        fn sort_dedup_matches_a_last_write_map(
            rows in proptest::collection::vec(
                (
                    proptest::option::of(prop::sample::select(vec!["", "a", "b", "ab", "é"])),
                    proptest::option::of(prop::sample::select(vec!["1", "2", "10"])),
                    -3i64..4,
                ),
                0..200,
            )
        ) {
            let b = batch(&rows);
            prop_assert_eq!(values(&sort_dedup(&b)), model(&rows));

            // The general (non-packed) sort agrees with the packed one.
            let ranks = [tag_ranks(b.column(1)).unwrap(), tag_ranks(b.column(2)).unwrap()];
            let time = times(&b).unwrap().values();
            prop_assert_eq!(
                surviving_rows(&ranks, time, false),
                surviving_rows(&ranks, time, true)
            );
        }
    }
}

//! Turning buffered Arrow batches into Parquet files, and reading them back.
//!
//! A snapshot of one table is deduplicated (last write wins), split by UTC day, sorted by
//! series (tags in table order) then time, and written with ZSTD compression and
//! dictionary-encoded tags to `tables/<table>/<YYYY-MM-DD>/<file id>.parquet`.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatchOptions, TimestampNanosecondArray, new_null_array};
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

use crate::catalog::ParquetFile;
use crate::config::StoreConfig;
use crate::dedup::last_write_wins;
use crate::error::{Error, Result};
use crate::schema::TableSchema;
use crate::types::TimeRange;
use crate::wal::sync_dir;

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

/// UTC day of a timestamp, as `YYYY-MM-DD`.
fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{day}"))
}

/// Writes the rows of one table into one Parquet file per UTC day. `batches` are in
/// write order; ids are drawn from `next_file_id`.
pub(crate) fn write_table(
    data_dir: &Path,
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
    let keys: Vec<usize> = schema.tag_positions().chain([0]).collect();
    let deduped = last_write_wins(conformed, &keys)?;
    let all = concat_batches(&target, &deduped)?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let sorted = sort_by_series_then_time(&all, schema)?;

    // Rows are sorted by series first, so one day's rows are scattered: split by mask.
    let t = times(&sorted).ok_or_else(|| Error::Catalog {
        path: data_dir.to_path_buf(),
        reason: format!("table {table}: time column is not a nanosecond timestamp"),
    })?;
    let row_days: Vec<i64> = t
        .values()
        .iter()
        .map(|v| v.div_euclid(NANOS_PER_DAY))
        .collect();
    let mut days = row_days.clone();
    days.sort_unstable();
    days.dedup();

    let mut files = Vec::with_capacity(days.len());
    for day in days {
        let mask: arrow::array::BooleanArray = row_days.iter().map(|d| Some(*d == day)).collect();
        let part = filter_record_batch(&sorted, &mask)?;
        let id = *next_file_id;
        *next_file_id += 1;
        files.push(write_file(
            data_dir,
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

fn sort_by_series_then_time(batch: &RecordBatch, schema: &TableSchema) -> Result<RecordBatch> {
    let columns: Vec<SortColumn> = schema
        .tag_positions()
        .chain([0])
        .map(|i| SortColumn {
            values: Arc::clone(batch.column(i)),
            options: Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

fn write_file(
    data_dir: &Path,
    table: &str,
    day: &str,
    id: u64,
    batch: &RecordBatch,
    schema: &TableSchema,
    config: &StoreConfig,
) -> Result<ParquetFile> {
    let rel_dir = Path::new("tables").join(table).join(day);
    let dir = data_dir.join(&rel_dir);
    fs::create_dir_all(&dir).map_err(Error::io("create partition directory", &dir))?;
    let rel_path = rel_dir.join(format!("{id:020}.parquet"));
    let path = data_dir.join(&rel_path);

    let sorting: Vec<SortingColumn> = schema
        .tag_positions()
        .chain([0])
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(
            config.parquet_zstd_level,
        )?))
        .set_max_row_group_row_count(Some(config.parquet_row_group_rows.max(1)))
        .set_sorting_columns(Some(sorting))
        .set_dictionary_enabled(true)
        .build();
    let file = File::create(&path).map_err(Error::io("create Parquet file", &path))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all()
        .map_err(Error::io("fsync Parquet file", &path))?;
    let size_bytes = file
        .metadata()
        .map_err(Error::io("stat Parquet file", &path))?
        .len();
    sync_dir(&dir)?;

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
        path: rel_path.to_string_lossy().into_owned(),
        min_time,
        max_time,
        row_count: batch.num_rows() as u64,
        size_bytes,
    })
}

/// Reads the columns of `wanted` that the file has; the caller conforms the rest.
pub(crate) fn read_file(
    data_dir: &Path,
    file: &ParquetFile,
    wanted: &Schema,
) -> Result<Vec<RecordBatch>> {
    let path = data_dir.join(&file.path);
    let f = File::open(&path).map_err(Error::io("open Parquet file", &path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)?;
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
/// by a snapshot that crashed before its catalog update. Their rows are still in the
/// WAL, which is replayed, so they hold nothing that is not elsewhere.
pub(crate) fn remove_orphans(data_dir: &Path, catalog: &crate::catalog::Catalog) -> Result<usize> {
    let known: std::collections::HashSet<std::path::PathBuf> = catalog
        .tables
        .values()
        .flat_map(|t| &t.files)
        .map(|f| data_dir.join(&f.path))
        .collect();
    let mut removed = 0;
    let mut stack = vec![data_dir.join("tables")];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list table directory", &dir)(e)),
        };
        for entry in entries {
            let path = entry
                .map_err(Error::io("list table directory", &dir))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") && !known.contains(&path) {
                fs::remove_file(&path).map_err(Error::io("remove orphaned Parquet file", &path))?;
                tracing::warn!(file = %path.display(), "removed Parquet file left by an interrupted snapshot");
                removed += 1;
            }
        }
    }
    Ok(removed)
}

//! Compaction: merging a partition's small Parquet files into few large ones, and
//! rewriting files without the rows deletes and retention removed.
//!
//! Every snapshot adds at least one file per table and UTC day it touched, so a day fed
//! in small pieces (a backfill, a quiet table with a short snapshot age) ends up in many
//! small files that every scan must open. [`plan`] picks runs of them; [`compact`] merges
//! one run.
//!
//! The files of a partition are sorted by series then time, so merging them is a
//! streaming k-way merge that holds a few batches per input, not the partition:
//!
//! ```text
//!  file 3 ─► batches ─┐
//!  file 4 ─► batches ─┼─► k-way merge on (tags, time) ─► newest of each key ─► cut near
//!  file 5 ─► batches ─┘   (minus tombstones, expiry)     (highest file id)     the target
//! ```
//!
//! Last write wins across files by file id: a higher id holds newer writes. The outputs
//! take the highest input id, so they keep their place in that order relative to every
//! file left out of the merge; which is why inputs must be a contiguous run in id order.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::buffer::ScalarBuffer;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;

use crate::catalog::{Catalog, ParquetFile};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::objects::ObjectStorage;
use crate::persist::{compacted_writer_properties, conform, day_name, filter_time, partition_dir};
use crate::schema::TableSchema;
use crate::tombstone::{Tombstone, remove_hidden};
use crate::types::TimeRange;

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// Rows decoded from an input at a time. With [`MAX_JOB_FILES`] inputs this bounds what
/// a merge holds in memory (tens of MB for wide rows), whatever the partition's size.
const READ_BATCH_ROWS: usize = 8 * 1024;

/// Rows gathered before they are handed to the Parquet writer.
const OUTPUT_BATCH_ROWS: usize = 8 * 1024;

/// Most files one job merges. A longer run is split into contiguous jobs of about equal
/// length: each keeps the id order (its outputs take its own highest id), and memory
/// stays bounded by the number of inputs times [`READ_BATCH_ROWS`].
const MAX_JOB_FILES: usize = 32;

/// One unit of compaction work: a run of files of one partition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompactionJob {
    /// The table.
    pub(crate) table: String,
    /// The UTC day (days since the epoch) all the files' rows lie in.
    pub(crate) day: i64,
    /// In id order, a contiguous run: no file of the partition with an id between the
    /// first and the last is left out.
    pub(crate) files: Vec<ParquetFile>,
}

/// Which runs to merge. Per partition (files grouped by table and the UTC day of their
/// `min_time`), in id order: every maximal run of consecutive small files (under half
/// `compaction_target_size`) that is at least `compaction_min_files` long, or at least
/// two long when its newest file is older than `compaction_delay`; and every file a
/// tombstone applies to, with the small run around it or, when it is large, alone.
///
/// A file's age is `now_ns` minus its latest row time: the catalog records no write
/// time, and for live data the two agree within a snapshot age, while a backfilled day
/// counts as old at once, which is what lets it collapse into few files.
pub(crate) fn plan(catalog: &Catalog, config: &StoreConfig, now_ns: i64) -> Vec<CompactionJob> {
    let rules = Rules {
        small_below: config.compaction_target_size.as_u64() / 2,
        // A run of one file would be rewritten as itself, forever.
        min_files: config.compaction_min_files.max(2),
        delay_ns: i64::try_from(config.compaction_delay.as_nanos()).unwrap_or(i64::MAX),
        now_ns,
    };
    let mut jobs = Vec::new();
    for (table, entry) in &catalog.tables {
        let tombstones: Vec<&Tombstone> = catalog
            .tombstones
            .iter()
            .filter(|t| &t.table == table)
            .collect();
        let mut partitions: BTreeMap<i64, Vec<&ParquetFile>> = BTreeMap::new();
        for file in &entry.files {
            partitions
                .entry(file.min_time.div_euclid(NANOS_PER_DAY))
                .or_default()
                .push(file);
        }
        for (day, mut files) in partitions {
            // Outputs of one compaction share an id; the path keeps the order stable.
            files.sort_by(|a, b| (a.id, &a.path).cmp(&(b.id, &b.path)));
            for run in rules.runs(&files, &tombstones) {
                for part in split_run(&files, run, MAX_JOB_FILES) {
                    jobs.push(CompactionJob {
                        table: table.clone(),
                        day,
                        files: files[part].iter().map(|f| (*f).clone()).collect(),
                    });
                }
            }
        }
    }
    jobs
}

/// The planning thresholds, resolved from the config once.
struct Rules {
    small_below: u64,
    min_files: usize,
    delay_ns: i64,
    now_ns: i64,
}

impl Rules {
    /// The runs of one partition's files (in id order) to merge, as index ranges.
    ///
    /// The outputs of one compaction share an id (their newest input's). They hold
    /// distinct series, but they keep their place in the write order only together: a
    /// later merge of one of them with older files would get the same id and outrank
    /// the others' newer rows of the same series. So a run takes such a group whole or
    /// not at all.
    fn runs(&self, files: &[&ParquetFile], tombstones: &[&Tombstone]) -> Vec<Range<usize>> {
        let deleted_from = |u: &Range<usize>| {
            files[u.clone()]
                .iter()
                .any(|f| tombstones.iter().any(|t| t.applies_to(f)))
        };
        let small = |u: &Range<usize>| {
            files[u.clone()]
                .iter()
                .all(|f| f.size_bytes < self.small_below)
        };
        let units = id_groups(files);
        let mut runs = Vec::new();
        let mut i = 0;
        while i < units.len() {
            if !small(&units[i]) {
                if deleted_from(&units[i]) {
                    runs.push(units[i].clone());
                }
                i += 1;
                continue;
            }
            let start = i;
            while i < units.len() && small(&units[i]) {
                i += 1;
            }
            let run = units[start].start..units[i - 1].end;
            let newest = files[run.end - 1];
            let old = self.now_ns.saturating_sub(newest.max_time) >= self.delay_ns;
            if run.len() >= self.min_files
                || (run.len() >= 2 && old)
                || units[start..i].iter().any(&deleted_from)
            {
                runs.push(run);
            }
        }
        runs
    }
}

/// Consecutive files (in id order) with the same id, as index ranges.
fn id_groups(files: &[&ParquetFile]) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if files[g.start].id == f.id => g.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    groups
}

/// `run` cut into contiguous jobs of at most about `max` files, of about equal length
/// (so no job is a lone file when the run is longer than `max`), never inside a group
/// of files sharing an id (see [`Rules::runs`]); a group larger than `max` is one job.
fn split_run(files: &[&ParquetFile], run: Range<usize>, max: usize) -> Vec<Range<usize>> {
    let pieces = run.len().div_ceil(max.max(1)).max(1);
    let per_piece = run.len().div_ceil(pieces);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(pieces);
    let mut start = run.start;
    for group in id_groups(&files[run.clone()]) {
        let group = run.start + group.start..run.start + group.end;
        if group.start > start && group.end - start > per_piece {
            out.push(start..group.start);
            start = group.start;
        }
    }
    out.push(start..run.end);
    out
}

/// Merges the job's files: a streaming k-way merge of the sorted files (a few batches
/// per input in memory), where the higher file id wins on an equal tag set and time,
/// rows under `tombstones` (those that apply to their file) and rows older than
/// `expire_before` are dropped, and the result is written as files cut near
/// `compaction_target_size`, only between series. Each output is sorted as a snapshot
/// file is, has `id` = the highest input id, a unique path from `next_uniq`, and
/// `deletes_applied = max_tombstone_id` (the caller passes every tombstone of the table
/// up to that id). Returns no file when no row survives.
///
/// The outputs are durable when it returns; replacing the inputs in the catalog (and
/// deleting them once no scan reads them) is the caller's.
// The arguments are the contract with the store's compaction thread; bundling them
// into a struct would only move the list.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compact(
    objects: &ObjectStorage,
    schema: &TableSchema,
    job: &CompactionJob,
    tombstones: &[Tombstone],
    max_tombstone_id: u64,
    expire_before: Option<i64>,
    config: &StoreConfig,
    next_uniq: &dyn Fn() -> u64,
) -> Result<Vec<ParquetFile>> {
    let spec = MergeSpec {
        job,
        schema,
        max_tombstone_id,
        expire_before,
        config,
        next_uniq,
    };
    Ok(compact_job(objects, spec, tombstones)?.files)
}

/// [`compact`], returning what the merge held at most too.
fn compact_job(
    objects: &ObjectStorage,
    spec: MergeSpec<'_>,
    tombstones: &[Tombstone],
) -> Result<Merged> {
    let MergeSpec { job, schema, .. } = spec;
    let target = Arc::clone(schema.arrow_schema());
    let inputs = job
        .files
        .iter()
        .map(|file| {
            let reader = open(objects, file, &target).map_err(|e| input_error(job, file, e))?;
            let hide: Vec<&Tombstone> = tombstones
                .iter()
                .filter(|t| t.table == job.table && t.applies_to(file))
                .collect();
            Ok(Input { file, reader, hide })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut put = |path: &str, bytes: Vec<u8>| objects.put(path, bytes.into());
    merge(spec, inputs, &mut put)
}

/// Opens a file for reading in batches of [`READ_BATCH_ROWS`], with the columns of the
/// table it has (the merge conforms the rest).
fn open(
    objects: &ObjectStorage,
    file: &ParquetFile,
    target: &Schema,
) -> Result<ParquetRecordBatchReader> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(objects.reader(&file.path, file.size_bytes)?)?;
    let file_schema = Arc::clone(builder.schema());
    let roots: Vec<usize> = target
        .fields()
        .iter()
        .filter_map(|f| file_schema.index_of(f.name()).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    Ok(builder
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS)
        .build()?)
}

fn input_error(job: &CompactionJob, file: &ParquetFile, source: Error) -> Error {
    Error::Compaction {
        table: job.table.clone(),
        path: file.path.clone(),
        source: Box::new(source),
    }
}

/// One file to merge, opened.
struct Input<'a> {
    file: &'a ParquetFile,
    reader: ParquetRecordBatchReader,
    /// The tombstones that apply to this file.
    hide: Vec<&'a Tombstone>,
}

/// What [`merge`] needs besides its inputs.
#[derive(Clone, Copy)]
struct MergeSpec<'a> {
    job: &'a CompactionJob,
    schema: &'a TableSchema,
    max_tombstone_id: u64,
    expire_before: Option<i64>,
    config: &'a StoreConfig,
    next_uniq: &'a dyn Fn() -> u64,
}

/// The result of a merge: the files written, and how much it held at most, which the
/// tests use to check that the merge streams.
struct Merged {
    files: Vec<ParquetFile>,
    #[cfg_attr(not(test), allow(dead_code))]
    peak_rows_held: usize,
}

/// Where an input stands: its current batch (filtered and conformed), the batch's merge
/// keys, and the next row to take.
struct Cursor<'a> {
    input: Input<'a>,
    batch: RecordBatch,
    keys: Rows,
    times: ScalarBuffer<i64>,
    row: usize,
    /// Index of `batch` in the merge's batch list, which output rows point into.
    slot: usize,
}

impl Cursor<'_> {
    fn key(&self) -> &[u8] {
        self.keys.row(self.row).data()
    }

    /// Whether this cursor's row comes out before `other`'s: the smaller key first, and
    /// on an equal key the newer file first, so the first row of a key to come out is
    /// the one that wins.
    fn before(&self, other: &Cursor<'_>) -> bool {
        match self.key().cmp(other.key()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => self.input.file.id > other.input.file.id,
        }
    }
}

/// Reads and prepares batches of inputs: conformed to the table schema, without
/// expired rows and rows under the tombstones of their file.
struct Loader<'a> {
    target: SchemaRef,
    key_columns: Vec<usize>,
    converter: RowConverter,
    expire_before: Option<i64>,
    job: &'a CompactionJob,
}

impl<'a> Loader<'a> {
    /// The next non-empty batch of `input` with its keys, or `None` at its end.
    fn next(&self, input: &mut Input<'a>) -> Result<Option<(RecordBatch, Rows)>> {
        loop {
            let Some(batch) = input.reader.next() else {
                return Ok(None);
            };
            let batch = batch.map_err(|e| input_error(self.job, input.file, e.into()))?;
            let mut batch = conform(&batch, &self.target)?;
            if let Some(cutoff) = self.expire_before {
                let live = TimeRange {
                    min: cutoff,
                    max: i64::MAX,
                };
                batch = filter_time(batch, 0, live)?;
            }
            batch = remove_hidden(batch, input.hide.iter().copied())?;
            if batch.num_rows() == 0 {
                continue;
            }
            let columns: Vec<_> = self
                .key_columns
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect();
            let keys = self.converter.convert_columns(&columns)?;
            return Ok(Some((batch, keys)));
        }
    }
}

/// The k-way merge behind [`compact`], over opened inputs; `put` stores a finished file.
fn merge(
    spec: MergeSpec<'_>,
    inputs: Vec<Input<'_>>,
    put: &mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
) -> Result<Merged> {
    let target = Arc::clone(spec.schema.arrow_schema());
    // The series key, then time: the order snapshot files are sorted in (the row format
    // sorts ascending, nulls first, by value even for dictionaries).
    let key_columns: Vec<usize> = spec.schema.tag_positions().chain([0]).collect();
    let sort_fields = |columns: &[usize]| {
        columns
            .iter()
            .map(|&i| SortField::new(target.field(i).data_type().clone()))
            .collect::<Vec<_>>()
    };
    let loader = Loader {
        target: Arc::clone(&target),
        converter: RowConverter::new(sort_fields(&key_columns))?,
        key_columns,
        expire_before: spec.expire_before,
        job: spec.job,
    };
    // A row's encoding is its columns' encodings one after the other, and a non-null
    // timestamp always encodes to the same width: the key without its last
    // `time_width` bytes is the series.
    let time_width = {
        let converter = RowConverter::new(sort_fields(&[0]))?;
        let one = TimestampNanosecondArray::from(vec![0i64])
            .with_data_type(target.field(0).data_type().clone());
        converter
            .convert_columns(&[Arc::new(one)])?
            .row(0)
            .data()
            .len()
    };

    let input_rows: u64 = spec.job.files.iter().map(|f| f.row_count).sum();
    let input_bytes: u64 = spec.job.files.iter().map(|f| f.size_bytes).sum();
    let mut out = Outputs {
        spec,
        props: compacted_writer_properties(spec.schema, spec.config)?,
        schema: Arc::clone(&target),
        id: spec.job.files.iter().map(|f| f.id).max().unwrap_or(0),
        dir: partition_dir(&spec.job.table, &day_name(spec.job.day)),
        target_size: spec.config.compaction_target_size.as_u64(),
        bytes_per_row: input_bytes as f64 / input_rows.max(1) as f64,
        writer: None,
        pending: Vec::new(),
        pending_since_write: 0,
        rows: 0,
        min_time: i64::MAX,
        max_time: i64::MIN,
        files: Vec::new(),
        put,
    };

    // Batches output rows point into. A cursor's finished batch stays here until the
    // rows taken from it are written, then the list is rebuilt from the live cursors.
    let mut slab: Vec<RecordBatch> = Vec::new();
    let mut cursors: Vec<Cursor<'_>> = Vec::with_capacity(inputs.len());
    for mut input in inputs {
        if let Some((batch, keys)) = loader.next(&mut input)? {
            cursors.push(Cursor {
                times: time_values(&batch),
                slot: slab.len(),
                row: 0,
                input,
                batch: batch.clone(),
                keys,
            });
            slab.push(batch);
        }
    }
    let mut heap: Vec<usize> = (0..cursors.len()).collect();
    for i in (0..heap.len() / 2).rev() {
        sift_down(&mut heap, i, &cursors);
    }
    let slab_limit = 2 * cursors.len() + 2;
    let mut peak_rows_held = slab.iter().map(RecordBatch::num_rows).sum::<usize>();

    // The key of the last row that came out; an equal key after it is an older write.
    let mut last: Option<Vec<u8>> = None;
    let mut previous_key: Vec<u8> = Vec::new();
    while let Some(&top) = heap.first() {
        let cursor = &cursors[top];
        let key = cursor.key();
        if last.as_deref() != Some(key) {
            let new_series = last
                .as_deref()
                .is_none_or(|l| l[..l.len() - time_width] != key[..key.len() - time_width]);
            if new_series && out.rows > 0 && out.estimated_size() >= out.target_size {
                out.finish_file(&slab)?;
            }
            out.push(cursor.slot, cursor.row, cursor.times[cursor.row]);
            let buf = last.get_or_insert_with(Vec::new);
            buf.clear();
            buf.extend_from_slice(key);
        }

        // Advance the top cursor, checking that its file is sorted: merging an unsorted
        // file would silently break deduplication.
        let cursor = &mut cursors[top];
        previous_key.clear();
        previous_key.extend_from_slice(cursor.key());
        cursor.row += 1;
        let mut live = true;
        if cursor.row == cursor.batch.num_rows() {
            match loader.next(&mut cursor.input)? {
                Some((batch, keys)) => {
                    cursor.times = time_values(&batch);
                    cursor.slot = slab.len();
                    cursor.batch = batch.clone();
                    cursor.keys = keys;
                    cursor.row = 0;
                    slab.push(batch);
                    let held = slab.iter().map(RecordBatch::num_rows).sum::<usize>();
                    peak_rows_held = peak_rows_held.max(held);
                }
                None => live = false,
            }
        }
        if live && cursor.key() < previous_key.as_slice() {
            return Err(Error::UnsortedFile {
                table: spec.job.table.clone(),
                path: cursor.input.file.path.clone(),
            });
        }
        if !live {
            heap.swap_remove(0);
        }
        sift_down(&mut heap, 0, &cursors);

        if out.pending.len() >= OUTPUT_BATCH_ROWS || slab.len() >= slab_limit {
            out.write_pending(&slab)?;
            slab.clear();
            for &i in &heap {
                cursors[i].slot = slab.len();
                slab.push(cursors[i].batch.clone());
            }
        }
    }
    if out.rows > 0 {
        out.finish_file(&slab)?;
    }
    Ok(Merged {
        files: out.files,
        peak_rows_held,
    })
}

fn time_values(batch: &RecordBatch) -> ScalarBuffer<i64> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("a batch conformed to a table schema has a nanosecond time column 0")
        .values()
        .clone()
}

/// Restores the heap property below `i` (the heap holds cursor indices, smallest first
/// by [`Cursor::before`]).
fn sift_down(heap: &mut [usize], mut i: usize, cursors: &[Cursor<'_>]) {
    loop {
        let left = 2 * i + 1;
        let right = left + 1;
        let mut smallest = i;
        if left < heap.len() && cursors[heap[left]].before(&cursors[heap[smallest]]) {
            smallest = left;
        }
        if right < heap.len() && cursors[heap[right]].before(&cursors[heap[smallest]]) {
            smallest = right;
        }
        if smallest == i {
            return;
        }
        heap.swap(i, smallest);
        i = smallest;
    }
}

/// The output files being written.
struct Outputs<'a, 'p> {
    spec: MergeSpec<'a>,
    props: WriterProperties,
    schema: SchemaRef,
    id: u64,
    dir: String,
    target_size: u64,
    /// Encoded bytes per row of the inputs, to count rows not yet encoded.
    bytes_per_row: f64,
    writer: Option<ArrowWriter<Vec<u8>>>,
    /// Rows of the current file not yet written: (slab index, row).
    pending: Vec<(usize, usize)>,
    /// Rows pushed since the writer last took a batch.
    pending_since_write: usize,
    rows: u64,
    min_time: i64,
    max_time: i64,
    files: Vec<ParquetFile>,
    put: &'p mut dyn FnMut(&str, Vec<u8>) -> Result<()>,
}

impl Outputs<'_, '_> {
    fn push(&mut self, slot: usize, row: usize, time: i64) {
        self.pending.push((slot, row));
        self.pending_since_write += 1;
        self.rows += 1;
        self.min_time = self.min_time.min(time);
        self.max_time = self.max_time.max(time);
    }

    /// The current file's size if it were finished now.
    fn estimated_size(&self) -> u64 {
        let written = self
            .writer
            .as_ref()
            .map_or(0, |w| w.bytes_written() + w.in_progress_size());
        written as u64 + (self.pending_since_write as f64 * self.bytes_per_row) as u64
    }

    fn write_pending(&mut self, slab: &[RecordBatch]) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches: Vec<&RecordBatch> = slab.iter().collect();
        let batch = interleave_record_batch(&batches, &self.pending)?;
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(ArrowWriter::try_new(
                Vec::new(),
                Arc::clone(&self.schema),
                Some(self.props.clone()),
            )?),
        };
        writer.write(&batch)?;
        self.pending.clear();
        self.pending_since_write = 0;
        Ok(())
    }

    /// Writes the rest of the current file and stores it.
    fn finish_file(&mut self, slab: &[RecordBatch]) -> Result<()> {
        self.write_pending(slab)?;
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let bytes = writer.into_inner()?;
        let path = format!(
            "{}/{:020}-c{:020}.parquet",
            self.dir,
            self.id,
            (self.spec.next_uniq)()
        );
        let size_bytes = bytes.len() as u64;
        (self.put)(&path, bytes)?;
        self.files.push(ParquetFile {
            id: self.id,
            path,
            min_time: self.min_time,
            max_time: self.max_time,
            row_count: self.rows,
            size_bytes,
            deletes_applied: self.spec.max_tombstone_id,
        });
        self.rows = 0;
        self.min_time = i64::MAX;
        self.max_time = i64::MIN;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use arrow::array::{ArrayRef, AsArray, Int64Array, StringDictionaryBuilder};
    use arrow::datatypes::{Int32Type, Int64Type};
    use bytesize::ByteSize;
    use proptest::prelude::*;

    use super::*;
    use crate::persist::{read_file, write_table};
    use crate::schema::{ColumnDef, ColumnKind};
    use crate::types::FieldType;

    const DAY: i64 = 20_400;
    const BASE: i64 = DAY * NANOS_PER_DAY;

    type Key = (Option<String>, Option<String>, i64);
    type Point = (Option<&'static str>, Option<&'static str>, i64, i64);

    fn column(name: &str, kind: ColumnKind) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            kind,
        }
    }

    /// `time, a (tag), b (tag), v (i64)`.
    fn schema() -> TableSchema {
        TableSchema::new().extended([
            column("a", ColumnKind::Tag),
            column("b", ColumnKind::Tag),
            column("v", ColumnKind::Field(FieldType::I64)),
        ])
    }

    /// A batch of `schema` (which has `a`, maybe `b`, and `v`) holding `points`
    /// (a, b, time offset from BASE, v).
    fn batch(schema: &TableSchema, points: &[Point]) -> RecordBatch {
        let target = Arc::clone(schema.arrow_schema());
        let columns: Vec<ArrayRef> = target
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "time" => Arc::new(
                        TimestampNanosecondArray::from(
                            points.iter().map(|p| BASE + p.2).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    "a" | "b" => {
                        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
                        for p in points {
                            builder.append_option(if f.name() == "a" { p.0 } else { p.1 });
                        }
                        Arc::new(builder.finish())
                    }
                    "v" => Arc::new(Int64Array::from(
                        points.iter().map(|p| p.3).collect::<Vec<_>>(),
                    )),
                    other => arrow::array::new_null_array(
                        target.field_with_name(other).unwrap().data_type(),
                        points.len(),
                    ),
                }
            })
            .collect();
        RecordBatch::try_new(target, columns).unwrap()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        objects: ObjectStorage,
        config: StoreConfig,
        next_id: u64,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let config = StoreConfig::default();
            let objects = ObjectStorage::open(dir.path(), &config).unwrap();
            Self {
                _dir: dir,
                objects,
                config,
                next_id: 1,
            }
        }

        /// Writes `points` as a snapshot writes them (sorted, deduplicated): one file.
        fn file(&mut self, schema: &TableSchema, points: &[Point]) -> ParquetFile {
            let mut files = write_table(
                &self.objects,
                "t",
                schema,
                &[batch(schema, points)],
                &mut self.next_id,
                &self.config,
            )
            .unwrap();
            assert_eq!(files.len(), 1, "test points lie in one day");
            files.pop().unwrap()
        }

        fn compact(
            &self,
            schema: &TableSchema,
            files: &[ParquetFile],
            tombstones: &[Tombstone],
            expire_before: Option<i64>,
        ) -> Merged {
            let job = CompactionJob {
                table: "t".into(),
                day: DAY,
                files: files.to_vec(),
            };
            let uniq = Cell::new(1000);
            let next_uniq = || {
                uniq.set(uniq.get() + 1);
                uniq.get()
            };
            let max_tombstone_id = tombstones.iter().map(|t| t.id).max().unwrap_or(0);
            let spec = MergeSpec {
                job: &job,
                schema,
                max_tombstone_id,
                expire_before,
                config: &self.config,
                next_uniq: &next_uniq,
            };
            compact_job(&self.objects, spec, tombstones).unwrap()
        }

        /// The rows of `file` as (a, b, time offset, v), in file order.
        fn rows(&self, schema: &TableSchema, file: &ParquetFile) -> Vec<(Key, Option<i64>)> {
            let target = Arc::clone(schema.arrow_schema());
            let mut out = Vec::new();
            for b in read_file(&self.objects, file, &target).unwrap() {
                let b = conform(&b, &target).unwrap();
                let tag = |name: &str, i: usize| {
                    let c = b.column_by_name(name)?.as_dictionary::<Int32Type>();
                    let k = c.keys();
                    k.is_valid(i).then(|| {
                        c.values()
                            .as_string::<i32>()
                            .value(k.value(i) as usize)
                            .to_string()
                    })
                };
                let time = time_values(&b);
                let v = b.column_by_name("v").unwrap().as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    out.push((
                        (tag("a", i), tag("b", i), time[i] - BASE),
                        v.is_valid(i).then(|| v.value(i)),
                    ));
                }
            }
            out
        }

        fn all_rows(&self, schema: &TableSchema, files: &[ParquetFile]) -> Vec<(Key, Option<i64>)> {
            files.iter().flat_map(|f| self.rows(schema, f)).collect()
        }
    }

    /// Last write wins by file order, as a map in (a, b, time) order with nulls first.
    fn model(files: &[&[Point]]) -> BTreeMap<Key, Option<i64>> {
        let mut m = BTreeMap::new();
        for points in files {
            for p in *points {
                m.insert(
                    (p.0.map(String::from), p.1.map(String::from), p.2),
                    Some(p.3),
                );
            }
        }
        m
    }

    fn tombstone(
        id: u64,
        tags: &[(&str, &str)],
        range: Range<i64>,
        files_through: u64,
    ) -> Tombstone {
        Tombstone {
            id,
            table: "t".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            min_time: BASE + range.start,
            max_time: BASE + range.end - 1,
            files_through,
            created_ns: 0,
        }
    }

    #[test]
    fn merges_files_in_series_then_time_order() {
        let mut fx = Fixture::new();
        let s = schema();
        let one: &[Point] = &[(Some("m2"), Some("x"), 1, 1), (Some("m1"), Some("x"), 5, 2)];
        let two: &[Point] = &[(Some("m1"), Some("x"), 3, 3), (Some("m3"), None, 0, 4)];
        let three: &[Point] = &[(Some("m1"), Some("x"), 4, 5), (Some("m2"), Some("x"), 0, 6)];
        let files = [fx.file(&s, one), fx.file(&s, two), fx.file(&s, three)];
        let merged = fx.compact(&s, &files, &[], None);
        assert_eq!(merged.files.len(), 1);
        let out = &merged.files[0];
        let rows = fx.all_rows(&s, &merged.files);
        let expected: Vec<_> = model(&[one, two, three]).into_iter().collect();
        assert_eq!(rows, expected);
        assert_eq!(out.id, files[2].id, "outputs take the highest input id");
        assert_eq!(out.row_count, 6);
        assert_eq!((out.min_time, out.max_time), (BASE, BASE + 5));
        assert!(
            out.path
                .starts_with(&format!("tables/t/{}/{:020}-c", day_name(DAY), files[2].id)),
            "{}",
            out.path
        );
        assert_eq!(
            out.size_bytes,
            fx.objects.get(&out.path).unwrap().unwrap().len() as u64
        );
    }

    #[test]
    fn the_higher_file_id_wins_on_equal_keys_whatever_the_job_order() {
        let mut fx = Fixture::new();
        let s = schema();
        let old: &[Point] = &[(Some("m"), None, 1, 10), (Some("m"), None, 2, 20)];
        let new: &[Point] = &[(Some("m"), None, 1, 11)];
        let newest: &[Point] = &[(Some("m"), None, 2, 22), (Some("m"), None, 1, 12)];
        let files = [fx.file(&s, old), fx.file(&s, new), fx.file(&s, newest)];
        let expected: Vec<_> = model(&[old, new, newest]).into_iter().collect();
        let mut reversed = files.to_vec();
        reversed.reverse();
        for order in [files.to_vec(), reversed] {
            let merged = fx.compact(&s, &order, &[], None);
            assert_eq!(fx.all_rows(&s, &merged.files), expected);
        }
    }

    #[test]
    fn dictionary_tags_with_different_dictionaries_merge_by_value() {
        let mut fx = Fixture::new();
        let s = schema();
        // Each file's dictionaries hold other values in another order.
        let one: &[Point] = &[
            (Some("zz"), Some("q"), 1, 1),
            (Some("b"), Some("p"), 1, 2),
            (Some("a"), Some("q"), 1, 3),
        ];
        let two: &[Point] = &[
            (Some("c"), Some("r"), 1, 4),
            (Some("a"), Some("q"), 1, 5),
            (Some("zz"), Some("p"), 1, 6),
        ];
        let files = [fx.file(&s, one), fx.file(&s, two)];
        let merged = fx.compact(&s, &files, &[], None);
        let expected: Vec<_> = model(&[one, two]).into_iter().collect();
        assert_eq!(fx.all_rows(&s, &merged.files), expected);
    }

    #[test]
    fn files_from_before_a_column_was_added_are_conformed() {
        let mut fx = Fixture::new();
        let before = TableSchema::new().extended([
            column("a", ColumnKind::Tag),
            column("v", ColumnKind::Field(FieldType::I64)),
        ]);
        let after = before.extended([
            column("b", ColumnKind::Tag),
            column("w", ColumnKind::Field(FieldType::F64)),
        ]);
        let old: &[Point] = &[(Some("m"), None, 1, 1), (Some("m"), None, 2, 2)];
        let new: &[Point] = &[(Some("m"), Some("x"), 1, 3), (Some("m"), None, 2, 4)];
        let files = [fx.file(&before, old), fx.file(&after, new)];
        let merged = fx.compact(&after, &files, &[], None);
        let expected: Vec<_> = model(&[old, new]).into_iter().collect();
        assert_eq!(fx.all_rows(&after, &merged.files), expected);
        let batches = read_file(&fx.objects, &merged.files[0], after.arrow_schema()).unwrap();
        assert_eq!(batches[0].schema().fields(), after.arrow_schema().fields());
        assert_eq!(batches[0].column_by_name("w").unwrap().null_count(), 3);
    }

    #[test]
    fn null_tags_sort_first_and_deduplicate_across_files() {
        let mut fx = Fixture::new();
        let s = schema();
        let one: &[Point] = &[
            (None, None, 1, 1),
            (Some(""), None, 1, 2),
            (None, Some("x"), 1, 3),
        ];
        let two: &[Point] = &[(None, None, 1, 4), (Some(""), Some(""), 1, 5)];
        let files = [fx.file(&s, one), fx.file(&s, two)];
        let merged = fx.compact(&s, &files, &[], None);
        let rows = fx.all_rows(&s, &merged.files);
        assert_eq!(rows.first().unwrap(), &((None, None, 1), Some(4)));
        assert_eq!(rows, model(&[one, two]).into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn outputs_are_cut_near_the_target_size_only_between_series() {
        let mut fx = Fixture::new();
        let s = schema();
        let series = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
        let points: Vec<Vec<Point>> = (0..4)
            .map(|f| {
                series
                    .iter()
                    .flat_map(|a| (0..500).map(move |t| (Some(*a), None, t * 4 + f, t)))
                    .collect()
            })
            .collect();
        let files: Vec<ParquetFile> = points.iter().map(|p| fx.file(&s, p)).collect();
        let total: u64 = files.iter().map(|f| f.size_bytes).sum();
        // Outputs compress better than the inputs (compaction tries dictionaries for
        // measurements), so the target is set well below a quarter of the input bytes.
        let target = total / 6;
        fx.config.compaction_target_size = ByteSize::b(target);
        let merged = fx.compact(&s, &files, &[], None);
        assert!(merged.files.len() >= 3, "{} outputs", merged.files.len());
        let mut seen = std::collections::HashSet::new();
        let mut all = Vec::new();
        for f in &merged.files {
            let rows = fx.rows(&s, f);
            let mut names: Vec<_> = rows.iter().map(|r| r.0.0.clone()).collect();
            names.dedup();
            for n in names {
                assert!(seen.insert(n.clone()), "series {n:?} split across outputs");
            }
            assert_eq!(f.row_count as usize, rows.len());
            // The cut is estimated from the inputs' bytes per row until the writer
            // has rows to measure, and the writer does not count a dictionary page
            // before it is written; these tiny files are mostly such overhead. So
            // sizes are only near the target here; the count above shows the cuts.
            assert!(
                f.size_bytes < total * 3 / 4,
                "{} is far past the target {target}",
                f.size_bytes
            );
            assert!(
                rows.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted and unique"
            );
            assert_eq!(f.id, files[3].id);
            all.extend(rows);
        }
        let paths: std::collections::HashSet<_> = merged.files.iter().map(|f| &f.path).collect();
        assert_eq!(paths.len(), merged.files.len(), "unique paths");
        let refs: Vec<&[Point]> = points.iter().map(Vec::as_slice).collect();
        assert_eq!(all, model(&refs).into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn tombstones_apply_to_their_files_only_and_expiry_drops_old_rows() {
        let mut fx = Fixture::new();
        let s = schema();
        let one: &[Point] = &[
            (Some("m1"), None, 1, 1),
            (Some("m1"), None, 5, 2),
            (Some("m2"), None, 5, 3),
        ];
        let two: &[Point] = &[(Some("m1"), None, 6, 4), (Some("m1"), None, 0, 5)];
        let files = [fx.file(&s, one), fx.file(&s, two)];
        // Deletes m1 in [1, 10) from the first file only (written after it); rewritten
        // files whose `deletes_applied` covers a tombstone are not touched again.
        let delete = tombstone(7, &[("a", "m1")], 1..10, files[0].id);
        let mut applied = files[1].clone();
        applied.deletes_applied = 9;
        let merged = fx.compact(
            &s,
            &[files[0].clone(), applied],
            std::slice::from_ref(&delete),
            Some(BASE + 1),
        );
        let rows = fx.all_rows(&s, &merged.files);
        assert_eq!(
            rows,
            [
                ((Some("m1".into()), None, 6), Some(4)),
                ((Some("m2".into()), None, 5), Some(3)),
            ],
            "m1@1 and m1@5 deleted, m1@0 expired"
        );
        assert_eq!(merged.files[0].deletes_applied, 7);
    }

    #[test]
    fn nothing_is_written_when_no_row_survives() {
        let mut fx = Fixture::new();
        let s = schema();
        let files = [
            fx.file(&s, &[(Some("m"), None, 1, 1)]),
            fx.file(&s, &[(Some("m"), None, 2, 1)]),
        ];
        let all = tombstone(1, &[], 0..10, files[1].id);
        assert!(fx.compact(&s, &files, &[all], None).files.is_empty());
    }

    #[test]
    fn the_merge_streams_instead_of_loading_the_partition() {
        let mut fx = Fixture::new();
        let s = schema();
        let rows_per_file = 60_000;
        let files: Vec<ParquetFile> = (0..4i64)
            .map(|f| {
                let points: Vec<Point> = (0..rows_per_file)
                    .map(|t| (Some("m"), None, t * 4 + f, t))
                    .collect();
                fx.file(&s, &points)
            })
            .collect();
        let merged = fx.compact(&s, &files, &[], None);
        assert_eq!(
            merged.files.iter().map(|f| f.row_count).sum::<u64>(),
            4 * rows_per_file as u64
        );
        let bound = (2 * files.len() + 2) * READ_BATCH_ROWS;
        assert!(
            merged.peak_rows_held <= bound && bound < 4 * rows_per_file as usize,
            "held {} rows",
            merged.peak_rows_held
        );
    }

    #[test]
    fn an_unsorted_input_is_refused_naming_the_file() {
        let fx = Fixture::new();
        let s = schema();
        let unsorted = batch(&s, &[(Some("b"), None, 1, 1), (Some("a"), None, 1, 2)]);
        let mut writer = ArrowWriter::try_new(Vec::new(), unsorted.schema(), None).unwrap();
        writer.write(&unsorted).unwrap();
        let bytes = writer.into_inner().unwrap();
        let file = ParquetFile {
            id: 1,
            path: "tables/t/x/bad.parquet".into(),
            min_time: BASE,
            max_time: BASE + 1,
            row_count: 2,
            size_bytes: bytes.len() as u64,
            deletes_applied: 0,
        };
        fx.objects.put(&file.path, bytes.into()).unwrap();
        let job = CompactionJob {
            table: "t".into(),
            day: DAY,
            files: vec![file],
        };
        let err = compact(&fx.objects, &s, &job, &[], 0, None, &fx.config, &|| 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.parquet") && err.contains("not sorted"),
            "{err}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn compaction_matches_a_last_write_model(
            files in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        proptest::option::of(prop::sample::select(vec!["", "a", "b", "é"])),
                        proptest::option::of(prop::sample::select(vec!["1", "2"])),
                        0i64..12,
                        any::<i64>(),
                    ),
                    1..40,
                ),
                1..5,
            ),
            deletes in proptest::collection::vec(
                (proptest::option::of(prop::sample::select(vec!["", "a", "b"])), 0i64..12, 0i64..6, 0usize..5),
                0..3,
            ),
            expire in proptest::option::of(0i64..12),
            target in 1u64..4000,
        ) {
            let mut fx = Fixture::new();
            fx.config.compaction_target_size = ByteSize::b(target);
            let s = schema();
            let written: Vec<ParquetFile> = files.iter().map(|p| fx.file(&s, p)).collect();
            let tombstones: Vec<Tombstone> = deletes
                .iter()
                .enumerate()
                .map(|(i, (a, from, len, through))| {
                    let tags: Vec<(&str, &str)> = a.iter().map(|a| ("a", *a)).collect();
                    let through = written[(*through).min(written.len() - 1)].id;
                    tombstone(i as u64 + 1, &tags, *from..from + len + 1, through)
                })
                .collect();

            // The model: per key, the newest write, unless a tombstone covering that
            // write's file or the expiry hides it.
            let mut expected: BTreeMap<Key, Option<i64>> = BTreeMap::new();
            for (file, points) in written.iter().zip(&files) {
                for p in points {
                    let key = (p.0.map(String::from), p.1.map(String::from), p.2);
                    expected.insert(key.clone(), Some(p.3));
                    let hidden = tombstones.iter().any(|t| {
                        file.id <= t.files_through
                            && (BASE + p.2) >= t.min_time
                            && (BASE + p.2) <= t.max_time
                            && t.tags.iter().all(|(_, v)| p.0 == Some(v.as_str()))
                    }) || expire.is_some_and(|e| p.2 < e);
                    if hidden {
                        expected.remove(&key);
                    }
                }
            }
            let merged = fx.compact(&s, &written, &tombstones, expire.map(|e| BASE + e));
            let rows = fx.all_rows(&s, &merged.files);
            prop_assert_eq!(rows, expected.into_iter().collect::<Vec<_>>());
            let mut series_seen = std::collections::HashSet::new();
            for f in &merged.files {
                let mut series: Vec<_> = fx.rows(&s, f).into_iter().map(|r| (r.0.0, r.0.1)).collect();
                series.dedup();
                for x in series {
                    prop_assert!(series_seen.insert(x), "a series is split across outputs");
                }
            }
        }
    }

    fn file(id: u64, size_bytes: u64, day: i64, max_offset: i64) -> ParquetFile {
        ParquetFile {
            id,
            path: format!("tables/t/{}/{id:020}.parquet", day_name(day)),
            min_time: day * NANOS_PER_DAY,
            max_time: day * NANOS_PER_DAY + max_offset,
            row_count: 1,
            size_bytes,
            deletes_applied: 0,
        }
    }

    fn planned(
        files: Vec<ParquetFile>,
        tombstones: Vec<Tombstone>,
        now_ns: i64,
    ) -> Vec<(i64, Vec<u64>)> {
        let mut catalog = Catalog::default();
        catalog.tables.insert(
            "t".into(),
            crate::catalog::TableEntry {
                columns: vec![],
                files,
            },
        );
        catalog.tombstones = tombstones;
        let config = StoreConfig {
            compaction_target_size: ByteSize::b(1000),
            compaction_min_files: 3,
            compaction_delay: std::time::Duration::from_secs(300),
            ..StoreConfig::default()
        };
        plan(&catalog, &config, now_ns)
            .into_iter()
            .map(|j| (j.day, j.files.iter().map(|f| f.id).collect()))
            .collect()
    }

    #[test]
    fn plan_merges_long_runs_of_small_files_and_never_skips_an_id() {
        let now = DAY * NANOS_PER_DAY + 1_000;
        // 1-3 small, 4 large, 5-6 small (recent), 7 large, 8-10 small.
        let sizes = [10, 10, 10, 900, 10, 10, 900, 10, 10, 10];
        let files: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| file(i as u64 + 1, size, DAY, 500))
            .collect();
        assert_eq!(
            planned(files, vec![], now),
            [(DAY, vec![1, 2, 3]), (DAY, vec![8, 9, 10])],
            "runs of at least min_files small files; 5-6 is short and recent"
        );
    }

    #[test]
    fn plan_merges_a_short_run_once_its_newest_file_is_old() {
        let files = vec![
            file(1, 10, DAY, 0),
            file(2, 10, DAY, 0),
            file(3, 10, DAY - 1, 0),
        ];
        let recent = DAY * NANOS_PER_DAY + 1_000;
        assert!(planned(files.clone(), vec![], recent).is_empty());
        let later = DAY * NANOS_PER_DAY + 301 * 1_000_000_000;
        // Day DAY-1 has one file: nothing to merge it with.
        assert_eq!(planned(files, vec![], later), [(DAY, vec![1, 2])]);
    }

    #[test]
    fn plan_rewrites_files_a_tombstone_applies_to() {
        let now = DAY * NANOS_PER_DAY + 1_000;
        let files = vec![
            file(1, 900, DAY, 0),
            file(2, 10, DAY, 0),
            file(3, 900, DAY, 0),
            file(4, 900, DAY, 0),
        ];
        let t = Tombstone {
            id: 1,
            table: "t".into(),
            tags: vec![],
            min_time: i64::MIN,
            max_time: i64::MAX,
            files_through: 3,
            created_ns: 0,
        };
        assert_eq!(
            planned(files, vec![t], now),
            [(DAY, vec![1]), (DAY, vec![2]), (DAY, vec![3])],
            "large files alone, the small one with its (one-file) run; 4 is newer"
        );
    }

    #[test]
    fn plan_splits_long_runs_into_contiguous_jobs() {
        let now = DAY * NANOS_PER_DAY;
        let files: Vec<_> = (1..=70).map(|id| file(id, 10, DAY, 0)).collect();
        let jobs = planned(files, vec![], now);
        let ids: Vec<u64> = jobs.iter().flat_map(|(_, ids)| ids.clone()).collect();
        assert_eq!(ids, (1..=70).collect::<Vec<_>>());
        assert!(
            jobs.iter()
                .all(|(_, ids)| (2..=MAX_JOB_FILES).contains(&ids.len()))
        );
        let refs: Vec<ParquetFile> = (1..=33).map(|id| file(id, 10, DAY, 0)).collect();
        let refs: Vec<&ParquetFile> = refs.iter().collect();
        assert_eq!(split_run(&refs, 0..33, 32), [0..17, 17..33]);
    }
}

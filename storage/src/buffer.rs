//! The write buffer: rows that are in the WAL but not yet in Parquet, kept as Arrow.
//!
//! Producers turn their rows into one [`RecordBatch`] per table ([`rows_to_batch`]) on
//! their own threads; the WAL writer only appends those immutable batches, so a query
//! shares them without copying. Small batches are merged into chunks of about
//! [`FREEZE_ROWS`] rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatchOptions,
    StringBuilder, StringDictionaryBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::compute::concat_batches;
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

use crate::persist::conform;
use crate::schema::{ColumnKind, KeySlots, TableSchema};
use crate::types::{FieldType, FieldValue, Row};

/// Rows per merged chunk of small batches.
pub(crate) const FREEZE_ROWS: usize = 16 * 1024;

enum ColumnBuilder {
    Time(TimestampNanosecondBuilder),
    Tag(StringDictionaryBuilder<Int32Type>),
    F64(Float64Builder),
    I64(Int64Builder),
    U64(UInt64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

// Arrow's dictionary builder has no Debug; the variant and length are what matter.
impl std::fmt::Debug for ColumnBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Time(_) => "time",
            Self::Tag(_) => "tag",
            Self::F64(_) => "f64",
            Self::I64(_) => "i64",
            Self::U64(_) => "u64",
            Self::Bool(_) => "bool",
            Self::Str(_) => "string",
        };
        write!(f, "{kind}[{}]", self.len())
    }
}

impl ColumnBuilder {
    fn new(kind: ColumnKind) -> Self {
        match kind {
            ColumnKind::Time => Self::Time(TimestampNanosecondBuilder::new().with_timezone("UTC")),
            ColumnKind::Tag => Self::Tag(StringDictionaryBuilder::new()),
            ColumnKind::Field(FieldType::F64) => Self::F64(Float64Builder::new()),
            ColumnKind::Field(FieldType::I64) => Self::I64(Int64Builder::new()),
            ColumnKind::Field(FieldType::U64) => Self::U64(UInt64Builder::new()),
            ColumnKind::Field(FieldType::Bool) => Self::Bool(BooleanBuilder::new()),
            ColumnKind::Field(FieldType::String) => Self::Str(StringBuilder::new()),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            Self::Time(b) => b.append_nulls(n),
            Self::Tag(b) => b.append_nulls(n),
            Self::F64(b) => b.append_nulls(n),
            Self::I64(b) => b.append_nulls(n),
            Self::U64(b) => b.append_nulls(n),
            Self::Bool(b) => b.append_nulls(n),
            Self::Str(b) => b.append_nulls(n),
        }
    }

    /// Appends a field value. Validation guarantees the value has the column's type; a
    /// mismatch (which would be a bug) is stored as null rather than panicking.
    fn append_field(&mut self, v: &FieldValue) {
        match (self, v) {
            (Self::F64(b), FieldValue::F64(v)) => b.append_value(*v),
            (Self::I64(b), FieldValue::I64(v)) => b.append_value(*v),
            (Self::U64(b), FieldValue::U64(v)) => b.append_value(*v),
            (Self::Bool(b), FieldValue::Bool(v)) => b.append_value(*v),
            (Self::Str(b), FieldValue::String(v)) => b.append_value(v),
            (b, v) => {
                debug_assert!(false, "validated value {v:?} does not fit column");
                b.append_nulls(1);
            }
        }
    }

    fn append_tag(&mut self, v: &str) {
        match self {
            Self::Tag(b) => b.append_value(v),
            b => {
                debug_assert!(false, "tag value for a non-tag column");
                b.append_nulls(1);
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Time(b) => Arc::new(b.finish()),
            Self::Tag(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::U64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Str(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Time(b) => b.len(),
            Self::Tag(b) => b.len(),
            Self::F64(b) => b.len(),
            Self::I64(b) => b.len(),
            Self::U64(b) => b.len(),
            Self::Bool(b) => b.len(),
            Self::Str(b) => b.len(),
        }
    }
}

/// Builds one Arrow batch from validated rows of one table: `schema` is the table's
/// schema at validation time and covers every column the rows use. Columns a row lacks
/// are null. This runs on the producer's thread (an HTTP request, the MQTT collector),
/// not on the WAL writer, so that converting rows to columns scales with the cores.
pub(crate) fn rows_to_batch(schema: &TableSchema, rows: &[Row]) -> RecordBatch {
    let columns = schema.columns();
    let mut builders: Vec<ColumnBuilder> =
        columns.iter().map(|c| ColumnBuilder::new(c.kind)).collect();
    let mut set = vec![false; builders.len()];
    let mut slots = KeySlots::default();
    for row in rows {
        set.fill(false);
        if let ColumnBuilder::Time(b) = &mut builders[0] {
            b.append_value(row.time);
        }
        set[0] = true;
        for (n, (k, v)) in row.tags.iter().enumerate() {
            if let Some(i) = slots.tag(n, k, schema) {
                builders[i].append_tag(v);
                set[i] = true;
            }
        }
        for (n, (k, v)) in row.fields.iter().enumerate() {
            if let Some(i) = slots.field(n, k, schema) {
                builders[i].append_field(v);
                set[i] = true;
            }
        }
        for (b, set) in builders.iter_mut().zip(&set) {
            if !set {
                b.append_nulls(1);
            }
        }
    }
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(ColumnBuilder::finish).collect();
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    // The builders were made from this schema's columns, so this cannot fail.
    RecordBatch::try_new_with_options(Arc::clone(schema.arrow_schema()), arrays, &options)
        .expect("builders follow the schema they were made from")
}

/// Batches smaller than this are collected and merged before they become a chunk, so
/// that many small writes (one MQTT message, one reading) do not leave queries a
/// long list of tiny batches to walk.
const SMALL_BATCH_ROWS: usize = 4096;

/// Unpersisted rows of one table.
#[derive(Debug)]
pub(crate) struct TableBuffer {
    /// The newest schema seen; every batch's columns are a prefix of its columns.
    schema: Arc<TableSchema>,
    /// Chunks in write order.
    frozen: Vec<RecordBatch>,
    /// Small batches after the last chunk, in write order, waiting to be merged.
    small: Vec<RecordBatch>,
    small_rows: usize,
    rows: usize,
    bytes: usize,
}

impl TableBuffer {
    fn new(schema: Arc<TableSchema>) -> Self {
        Self {
            schema,
            frozen: Vec::new(),
            small: Vec::new(),
            small_rows: 0,
            rows: 0,
            bytes: 0,
        }
    }

    fn append(&mut self, schema: &Arc<TableSchema>, batch: RecordBatch) {
        if schema.columns().len() > self.schema.columns().len() {
            self.schema = Arc::clone(schema);
        }
        let rows = batch.num_rows();
        if rows == 0 {
            return;
        }
        self.rows += rows;
        self.bytes += batch.get_array_memory_size();
        if rows >= SMALL_BATCH_ROWS {
            self.freeze();
            self.frozen.push(batch);
        } else {
            self.small_rows += rows;
            self.small.push(batch);
            if self.small_rows >= FREEZE_ROWS {
                self.freeze();
            }
        }
    }

    /// Merges the small batches into one chunk.
    fn freeze(&mut self) {
        match self.small.len() {
            0 => return,
            1 => self.frozen.extend(self.small.pop()),
            _ => {
                let target = self.schema.arrow_schema();
                let merged = self
                    .small
                    .iter()
                    .map(|b| conform(b, target))
                    .collect::<crate::error::Result<Vec<_>>>()
                    .and_then(|bs| Ok(concat_batches(target, &bs)?));
                match merged {
                    Ok(batch) => {
                        self.frozen.push(batch);
                        self.small.clear();
                    }
                    // Batches conform to a schema that extends theirs, so this is a bug;
                    // keeping them unmerged loses nothing.
                    Err(e) => {
                        tracing::error!(error = %e, "write buffer could not merge small batches");
                        self.frozen.append(&mut self.small);
                    }
                }
            }
        }
        self.small_rows = 0;
    }

    /// Every buffered row, as batches in write order. Each batch's columns are a prefix
    /// of the current table schema's columns.
    fn batches(&self) -> Vec<RecordBatch> {
        self.frozen.iter().chain(&self.small).cloned().collect()
    }
}

/// Unpersisted rows of every table.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    tables: HashMap<String, TableBuffer>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
}

impl WriteBuffer {
    /// Appends a batch of one table; `schema` is the table's current schema and
    /// extends the batch's.
    pub(crate) fn append(&mut self, table: &str, schema: &Arc<TableSchema>, batch: RecordBatch) {
        let t = match self.tables.get_mut(table) {
            Some(t) => t,
            None => self
                .tables
                .entry(table.to_owned())
                .or_insert_with(|| TableBuffer::new(Arc::clone(schema))),
        };
        let (rows, bytes) = (t.rows, t.bytes);
        t.append(schema, batch);
        self.rows += t.rows - rows;
        self.bytes += t.bytes - bytes;
        if self.oldest.is_none() && self.rows > 0 {
            self.oldest = Some(Instant::now());
        }
    }

    /// Buffered batches of one table.
    pub(crate) fn table_batches(&self, table: &str) -> Vec<RecordBatch> {
        self.tables
            .get(table)
            .map(TableBuffer::batches)
            .unwrap_or_default()
    }

    /// Takes everything out for persisting, leaving the buffer empty.
    pub(crate) fn take(&mut self) -> HashMap<String, Vec<RecordBatch>> {
        self.rows = 0;
        self.bytes = 0;
        self.oldest = None;
        std::mem::take(&mut self.tables)
            .into_iter()
            .map(|(name, mut t)| {
                t.freeze();
                (name, t.frozen)
            })
            .filter(|(_, batches)| !batches.is_empty())
            .collect()
    }

    /// Buffered rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of buffered Arrow data.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest buffered row arrived.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnDef;

    fn schema(cols: &[(&str, ColumnKind)]) -> Arc<TableSchema> {
        Arc::new(
            TableSchema::new().extended(cols.iter().map(|(n, k)| ColumnDef {
                name: n.to_string(),
                kind: *k,
            })),
        )
    }

    fn row(t: i64, dev: &str, p: f64) -> Row {
        Row {
            time: t,
            tags: vec![("device_id".into(), dev.into())],
            fields: vec![("power_w".into(), FieldValue::F64(p))],
        }
    }

    #[test]
    fn rows_become_columns_with_nulls_for_missing_values() {
        let s = schema(&[
            ("device_id", ColumnKind::Tag),
            ("power_w", ColumnKind::Field(FieldType::F64)),
            ("status", ColumnKind::Field(FieldType::String)),
        ]);
        let mut second = row(2, "b", 2.0);
        // Keys in another order than the previous row: the slot cache must not be fooled.
        second.fields = vec![
            ("status".into(), FieldValue::String("ok".into())),
            ("power_w".into(), FieldValue::F64(2.0)),
        ];
        let batch = rows_to_batch(&s, &[row(1, "a", 1.0), second, row(3, "a", 3.0)]);
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), 4);
        let power = batch
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(power.values().to_vec(), vec![1.0, 2.0, 3.0]);
        let status = batch
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(arrow::array::Array::null_count(status), 2);
        assert_eq!(status.value(1), "ok");
    }

    #[test]
    fn small_batches_merge_into_chunks_and_schemas_grow() {
        let s1 = schema(&[
            ("device_id", ColumnKind::Tag),
            ("power_w", ColumnKind::Field(FieldType::F64)),
        ]);
        let mut buf = WriteBuffer::default();
        let big: Vec<Row> = (0..SMALL_BATCH_ROWS as i64)
            .map(|i| row(i, "a", i as f64))
            .collect();
        buf.append("meter", &s1, rows_to_batch(&s1, &big));
        for i in 0..3 {
            buf.append(
                "meter",
                &s1,
                rows_to_batch(&s1, &[row(10_000 + i, "b", 1.0)]),
            );
        }
        let s2 = Arc::new(s1.extended([ColumnDef {
            name: "status".into(),
            kind: ColumnKind::Field(FieldType::String),
        }]));
        let mut r = row(1_000_000, "b", 1.0);
        r.fields
            .push(("status".into(), FieldValue::String("ok".into())));
        buf.append("meter", &s2, rows_to_batch(&s2, &[r]));
        let batches = buf.table_batches("meter");
        // The big batch is a chunk of its own; the small ones wait, in write order.
        assert_eq!(batches.len(), 5);
        assert_eq!(batches[0].num_rows(), SMALL_BATCH_ROWS);
        assert_eq!(batches[1].num_columns(), 3);
        assert_eq!(batches[4].num_columns(), 4);
        assert_eq!(buf.rows(), SMALL_BATCH_ROWS + 4);

        let taken = buf.take();
        let meter = &taken["meter"];
        // Taking merges the small batches into one chunk with the newest schema.
        assert_eq!(meter.len(), 2);
        assert_eq!(meter[1].num_rows(), 4);
        assert_eq!(meter[1].num_columns(), 4);
        assert_eq!(meter[1].column(3).null_count(), 3);
        assert_eq!(buf.rows(), 0);
        assert!(buf.table_batches("meter").is_empty());
    }

    #[test]
    fn many_small_batches_are_merged_once_they_fill_a_chunk() {
        let s = schema(&[
            ("device_id", ColumnKind::Tag),
            ("power_w", ColumnKind::Field(FieldType::F64)),
        ]);
        let mut buf = WriteBuffer::default();
        let per = 1000;
        let n = FREEZE_ROWS / per + 1;
        for i in 0..n {
            let rows: Vec<Row> = (0..per)
                .map(|j| row((i * per + j) as i64, "a", 1.0))
                .collect();
            buf.append("meter", &s, rows_to_batch(&s, &rows));
        }
        let batches = buf.table_batches("meter");
        assert_eq!(batches.len(), 1, "merged into one chunk");
        assert_eq!(batches[0].num_rows(), n * per);
    }
}

//! The write buffer: rows that are in the WAL but not yet in Parquet, kept as Arrow.
//!
//! Each table appends into one set of Arrow builders, one per column. Every
//! [`FREEZE_ROWS`] rows the builders are finished into an immutable [`RecordBatch`], so a
//! query copies at most one partly filled chunk and shares the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    StringDictionaryBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{Int32Type, Schema};
use arrow::record_batch::RecordBatch;

use crate::schema::{ColumnKind, TableSchema};
use crate::types::{FieldType, FieldValue, Row, TableWrite};

/// Rows per frozen batch.
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
    fn append_field(&mut self, v: &FieldValue) -> usize {
        match (self, v) {
            (Self::F64(b), FieldValue::F64(v)) => {
                b.append_value(*v);
                8
            }
            (Self::I64(b), FieldValue::I64(v)) => {
                b.append_value(*v);
                8
            }
            (Self::U64(b), FieldValue::U64(v)) => {
                b.append_value(*v);
                8
            }
            (Self::Bool(b), FieldValue::Bool(v)) => {
                b.append_value(*v);
                1
            }
            (Self::Str(b), FieldValue::String(v)) => {
                b.append_value(v);
                v.len() + 4
            }
            (b, v) => {
                debug_assert!(false, "validated value {v:?} does not fit column");
                b.append_nulls(1);
                0
            }
        }
    }

    fn append_tag(&mut self, v: &str) -> usize {
        match self {
            Self::Tag(b) => {
                b.append_value(v);
                4
            }
            b => {
                debug_assert!(false, "tag value for a non-tag column");
                b.append_nulls(1);
                0
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

    fn finish_cloned(&self) -> ArrayRef {
        match self {
            Self::Time(b) => Arc::new(b.finish_cloned()),
            Self::Tag(b) => Arc::new(b.finish_cloned()),
            Self::F64(b) => Arc::new(b.finish_cloned()),
            Self::I64(b) => Arc::new(b.finish_cloned()),
            Self::U64(b) => Arc::new(b.finish_cloned()),
            Self::Bool(b) => Arc::new(b.finish_cloned()),
            Self::Str(b) => Arc::new(b.finish_cloned()),
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

/// Unpersisted rows of one table.
#[derive(Debug)]
pub(crate) struct TableBuffer {
    /// The schema the builders follow; a prefix of (or equal to) the table's schema.
    schema: Arc<TableSchema>,
    builders: Vec<ColumnBuilder>,
    frozen: Vec<RecordBatch>,
    /// Scratch: which columns the current row set.
    set: Vec<bool>,
    rows: usize,
    bytes: usize,
}

impl TableBuffer {
    fn new(schema: Arc<TableSchema>) -> Self {
        let builders = schema
            .columns()
            .iter()
            .map(|c| ColumnBuilder::new(c.kind))
            .collect();
        Self {
            schema,
            builders,
            frozen: Vec::new(),
            set: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    fn open_rows(&self) -> usize {
        self.builders.first().map_or(0, ColumnBuilder::len)
    }

    /// Follows a grown table schema: new builders start with nulls for the open rows.
    fn adopt(&mut self, schema: &Arc<TableSchema>) {
        if schema.columns().len() == self.builders.len() {
            return;
        }
        let open = self.open_rows();
        for c in &schema.columns()[self.builders.len()..] {
            let mut b = ColumnBuilder::new(c.kind);
            b.append_nulls(open);
            self.builders.push(b);
        }
        self.schema = Arc::clone(schema);
    }

    fn append(&mut self, schema: &Arc<TableSchema>, rows: &[Row]) {
        self.adopt(schema);
        self.set.resize(self.builders.len(), false);
        for row in rows {
            self.set.fill(false);
            let mut bytes = 8;
            if let ColumnBuilder::Time(b) = &mut self.builders[0] {
                b.append_value(row.time);
            }
            self.set[0] = true;
            for (k, v) in &row.tags {
                if let Some(i) = self.schema.position(k) {
                    bytes += self.builders[i].append_tag(v);
                    self.set[i] = true;
                }
            }
            for (k, v) in &row.fields {
                if let Some(i) = self.schema.position(k) {
                    bytes += self.builders[i].append_field(v);
                    self.set[i] = true;
                }
            }
            for (b, set) in self.builders.iter_mut().zip(&self.set) {
                if !set {
                    b.append_nulls(1);
                }
            }
            self.rows += 1;
            self.bytes += bytes;
            if self.open_rows() >= FREEZE_ROWS {
                self.freeze();
            }
        }
    }

    fn arrow_schema(&self) -> Arc<Schema> {
        // Builders cover the schema's columns exactly (adopt keeps them in step).
        Arc::clone(self.schema.arrow_schema())
    }

    fn freeze(&mut self) {
        if self.open_rows() == 0 {
            return;
        }
        let columns = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        match RecordBatch::try_new(self.arrow_schema(), columns) {
            Ok(batch) => self.frozen.push(batch),
            // Builders are built from the schema they are checked against.
            Err(e) => tracing::error!(error = %e, "write buffer could not freeze a chunk"),
        }
    }

    /// Every buffered row, as batches in write order. Each batch's columns are a prefix
    /// of the current table schema's columns.
    fn batches(&self) -> Vec<RecordBatch> {
        let mut out = self.frozen.clone();
        if self.open_rows() > 0 {
            let columns = self
                .builders
                .iter()
                .map(ColumnBuilder::finish_cloned)
                .collect();
            match RecordBatch::try_new(self.arrow_schema(), columns) {
                Ok(batch) => out.push(batch),
                Err(e) => tracing::error!(error = %e, "write buffer could not copy a chunk"),
            }
        }
        out
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
    /// Appends the rows of one table; `schema` is the table's current schema and covers
    /// every column the rows use.
    pub(crate) fn append(&mut self, schema: &Arc<TableSchema>, write: &TableWrite) {
        let t = self
            .tables
            .entry(write.table.clone())
            .or_insert_with(|| TableBuffer::new(Arc::clone(schema)));
        let (rows, bytes) = (t.rows, t.bytes);
        t.append(schema, &write.rows);
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

    /// Approximate bytes of buffered values.
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
    fn grows_columns_with_nulls_and_freezes_chunks() {
        let s1 = schema(&[
            ("device_id", ColumnKind::Tag),
            ("power_w", ColumnKind::Field(FieldType::F64)),
        ]);
        let mut buf = WriteBuffer::default();
        let rows: Vec<Row> = (0..FREEZE_ROWS as i64 + 3)
            .map(|i| row(i, "a", i as f64))
            .collect();
        buf.append(
            &s1,
            &TableWrite {
                table: "meter".into(),
                rows,
            },
        );
        let s2 = Arc::new(s1.extended([ColumnDef {
            name: "status".into(),
            kind: ColumnKind::Field(FieldType::String),
        }]));
        let mut r = row(1_000_000, "b", 1.0);
        r.fields
            .push(("status".into(), FieldValue::String("ok".into())));
        buf.append(
            &s2,
            &TableWrite {
                table: "meter".into(),
                rows: vec![r],
            },
        );
        let batches = buf.table_batches("meter");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].num_rows(), FREEZE_ROWS);
        assert_eq!(batches[0].num_columns(), 3);
        let open = &batches[1];
        assert_eq!(open.num_rows(), 4);
        assert_eq!(open.num_columns(), 4);
        assert_eq!(open.column(3).null_count(), 3);
        assert_eq!(buf.rows(), FREEZE_ROWS + 4);

        let taken = buf.take();
        assert_eq!(
            taken["meter"]
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            FREEZE_ROWS + 4
        );
        assert_eq!(buf.rows(), 0);
        assert!(buf.table_batches("meter").is_empty());
    }
}

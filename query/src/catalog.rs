//! The store's tables as DataFusion sees them: a schema provider that lists whatever
//! tables the store has at the moment it is asked, and one table provider per table
//! that reads the buffer and the Parquet files through [`Store::scan`].
//!
//! Beside each stored table `T` that the last-value cache keeps ([`is_cached_table`]),
//! the schema has `T_latest`: one row per series of `T`, with `T`'s columns, read from
//! the cache ([`LastValues::snapshot`]) rather than the store. A stored table of that
//! name wins. The `_latest` tables are resolved by name only: `SHOW TABLES` and
//! `information_schema` list the stored tables, so that the list says what is stored
//! and tools that walk every table (exports, schema browsers) do not read each one
//! twice.

use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::project_schema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use storage::{Store, TIME_COLUMN};
use tracing::debug;

use crate::latest::{LastValues, LatestFilter, is_cached_table};
use crate::time_filter;

/// The suffix that names a table's last values.
const LATEST_SUFFIX: &str = "_latest";

/// All tables of the store, looked up on every query: a table created by a write is
/// queryable at once, and a query sees the schema as it is when the query is planned.
#[derive(Debug)]
pub(crate) struct StoreSchema {
    store: Store,
    latest: LastValues,
}

impl StoreSchema {
    pub(crate) fn new(store: Store, latest: LastValues) -> Self {
        Self { store, latest }
    }

    /// The stored table whose last values `name` asks for, with its schema, when `name`
    /// is `<table>_latest` and no stored table has that name.
    fn latest_of(&self, name: &str) -> Option<(String, SchemaRef)> {
        let base = name.strip_suffix(LATEST_SUFFIX)?;
        if !is_cached_table(base) || self.store.table_schema(name).is_some() {
            return None;
        }
        Some((base.to_owned(), self.store.table_schema(base)?))
    }
}

#[async_trait]
impl SchemaProvider for StoreSchema {
    fn table_names(&self) -> Vec<String> {
        self.store.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(schema) = self.store.table_schema(name) {
            return Ok(Some(Arc::new(StoreTable {
                store: self.store.clone(),
                name: name.to_owned(),
                schema,
            })));
        }
        Ok(self.latest_of(name).map(|(table, schema)| {
            Arc::new(LatestTable {
                latest: self.latest.clone(),
                table,
                schema,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.store.table_schema(name).is_some() || self.latest_of(name).is_some()
    }
}

/// `<table>_latest`: the last values of `table`'s series, with `table`'s schema as it
/// was when the query was planned.
#[derive(Debug)]
struct LatestTable {
    latest: LastValues,
    table: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for LatestTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Right after a start the cache may still be reading the store; an answer
        // without the series that have not written since would look complete but is
        // not. The wait ends with the query's timeout at the latest.
        self.latest.warmed().await;
        let schema = project_schema(&self.schema, projection)?;
        let snapshot = self
            .latest
            .snapshot(&self.table, &schema, &LatestFilter::all())?;
        let mut chunks = Vec::new();
        if let Some(batch) = snapshot {
            let rows = batch.num_rows().min(limit.unwrap_or(usize::MAX));
            let chunk_rows = state.config().batch_size().max(1);
            let mut offset = 0;
            while offset < rows {
                let len = chunk_rows.min(rows - offset);
                chunks.push(batch.slice(offset, len));
                offset += len;
            }
        }
        let partitions = partition(chunks, state.config().target_partitions());
        let plan = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
        Ok(plan)
    }
}

/// One table of the store, with the schema it had when the query was planned.
#[derive(Debug)]
struct StoreTable {
    store: Store,
    name: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters on `time` narrow what the store reads. They are `Inexact` because the
    /// store may return a superset and DataFusion re-applies them; other filters are
    /// not pushed (the store has no use for them).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| {
                if time_filter::constrains_time(filter) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let range = time_filter::time_range(filters);
        let schema = project_schema(&self.schema, projection)?;
        // Always name the columns: the table may have gained columns since planning,
        // and the plan must get exactly the columns it was planned with.
        let wanted: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        debug!(table = %self.name, ?range, columns = wanted.len(), "scan");

        let batches = if time_filter::is_empty(&range) {
            Vec::new()
        } else {
            // `SELECT count(*)` reads no column but needs the row count; `time` is the
            // cheapest column every table has.
            let read = if wanted.is_empty() {
                vec![self.schema.index_of(TIME_COLUMN)?]
            } else {
                wanted.clone()
            };
            let store = self.store.clone();
            let table = self.name.clone();
            tokio::task::spawn_blocking(move || store.scan(&table, Some(&read), range))
                .await
                .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        };

        let mut rows_left = limit.unwrap_or(usize::MAX);
        let mut chunks = Vec::new();
        let chunk_rows = state.config().batch_size().max(1);
        for batch in batches {
            if rows_left == 0 {
                break;
            }
            let batch = conform(batch, &schema, wanted.is_empty())?;
            // A limit comes only without pushed-down filters (they are inexact), so
            // the first `limit` rows are as good as any.
            let batch = batch.slice(0, batch.num_rows().min(rows_left));
            rows_left -= batch.num_rows();
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = chunk_rows.min(batch.num_rows() - offset);
                chunks.push(batch.slice(offset, len));
                offset += len;
            }
        }

        let partitions = partition(chunks, state.config().target_partitions());
        let plan = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
        Ok(plan)
    }
}

/// Gives a batch from the store exactly the schema the plan expects: the same fields
/// (metadata included), or no column but the row count when the query reads none.
fn conform(batch: RecordBatch, schema: &SchemaRef, count_only: bool) -> DfResult<RecordBatch> {
    if count_only {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            Vec::new(),
            &options,
        )?)
    } else if batch.schema_ref() == schema {
        Ok(batch)
    } else {
        Ok(RecordBatch::try_new(
            Arc::clone(schema),
            batch.columns().to_vec(),
        )?)
    }
}

/// Splits the chunks into up to `target` partitions of consecutive chunks, so the
/// operators above the scan run in parallel. There is always at least one partition.
fn partition(chunks: Vec<RecordBatch>, target: usize) -> Vec<Vec<RecordBatch>> {
    let count = chunks.len().clamp(1, target.max(1));
    let per_partition = chunks.len().div_ceil(count).max(1);
    let mut partitions: Vec<Vec<RecordBatch>> = Vec::with_capacity(count);
    let mut chunks = chunks.into_iter().peekable();
    while chunks.peek().is_some() {
        partitions.push(chunks.by_ref().take(per_partition).collect());
    }
    if partitions.is_empty() {
        partitions.push(Vec::new());
    }
    partitions
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn chunks(n: usize) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        (0..n)
            .map(|i| {
                let column = Arc::new(Int64Array::from(vec![i as i64]));
                RecordBatch::try_new(Arc::clone(&schema), vec![column]).expect("batch")
            })
            .collect()
    }

    #[test]
    fn partitions_keep_every_chunk_in_order() {
        for (n, target, expected) in [(0, 4, 1), (1, 4, 1), (3, 4, 3), (10, 4, 4), (9, 1, 1)] {
            let parts = partition(chunks(n), target);
            assert_eq!(parts.len(), expected, "{n} chunks, target {target}");
            let values: Vec<i64> = parts
                .iter()
                .flatten()
                .map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("i64")
                        .value(0)
                })
                .collect();
            assert_eq!(values, (0..n as i64).collect::<Vec<_>>());
        }
    }
}

//! Prometheus metrics of the store.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Handles to the store's metrics; cheap to clone, shared with the writer threads.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) rows_written: Counter,
    pub(crate) wal_bytes: Counter,
    pub(crate) wal_fsync_seconds: Histogram,
    pub(crate) buffer_rows: Gauge,
    pub(crate) buffer_bytes: Gauge,
    pub(crate) parquet_files: Gauge,
    pub(crate) parquet_bytes: Gauge,
    pub(crate) snapshots: Counter,
    pub(crate) compactions: Counter,
    pub(crate) compacted_files: Counter,
    pub(crate) compaction_bytes_written: Counter,
    pub(crate) expired_files: Counter,
    pub(crate) tombstones: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            rows_written: Counter::default(),
            wal_bytes: Counter::default(),
            // 50 µs .. ~1.6 s: SSD fsyncs sit at the low end, a struggling disk at the top.
            wal_fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            buffer_rows: Gauge::default(),
            buffer_bytes: Gauge::default(),
            parquet_files: Gauge::default(),
            parquet_bytes: Gauge::default(),
            snapshots: Counter::default(),
            compactions: Counter::default(),
            compacted_files: Counter::default(),
            compaction_bytes_written: Counter::default(),
            expired_files: Counter::default(),
            tombstones: Gauge::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "gridlake_rows_written",
            "Rows made durable in the WAL and added to the write buffer",
            self.rows_written.clone(),
        );
        registry.register(
            "gridlake_wal_bytes_written",
            "Bytes appended to WAL segments",
            self.wal_bytes.clone(),
        );
        registry.register(
            "gridlake_wal_fsync_seconds",
            "Latency of one WAL fsync (one per commit group)",
            self.wal_fsync_seconds.clone(),
        );
        registry.register(
            "gridlake_buffer_rows",
            "Rows in the write buffer, not yet in Parquet",
            self.buffer_rows.clone(),
        );
        registry.register(
            "gridlake_buffer_bytes",
            "Approximate bytes of values in the write buffer",
            self.buffer_bytes.clone(),
        );
        registry.register(
            "gridlake_parquet_files",
            "Parquet files in the catalog",
            self.parquet_files.clone(),
        );
        registry.register(
            "gridlake_parquet_bytes",
            "Bytes of Parquet files in the catalog",
            self.parquet_bytes.clone(),
        );
        registry.register(
            "gridlake_snapshots",
            "Write-buffer snapshots persisted to Parquet",
            self.snapshots.clone(),
        );
        registry.register(
            "gridlake_compactions",
            "Runs of Parquet files merged by compaction",
            self.compactions.clone(),
        );
        registry.register(
            "gridlake_compacted_files",
            "Parquet files replaced by compaction",
            self.compacted_files.clone(),
        );
        registry.register(
            "gridlake_compaction_bytes_written",
            "Bytes of Parquet files written by compaction",
            self.compaction_bytes_written.clone(),
        );
        registry.register(
            "gridlake_expired_files",
            "Parquet files dropped because all their rows outlived the table's retention",
            self.expired_files.clone(),
        );
        registry.register(
            "gridlake_tombstones",
            "Deletes recorded but not yet applied to every file by compaction",
            self.tombstones.clone(),
        );
    }
}

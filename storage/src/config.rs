//! Storage settings, with defaults that suit a small node.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Settings of the store. Every field has a default, so an empty `[storage]` section
/// (or none) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A WAL segment is closed and a new one started when it grows past this size.
    pub wal_segment_size: ByteSize,
    /// Write requests waiting for the WAL writer. When the queue is full, writes are
    /// refused with "busy" (HTTP 503) instead of queueing without bound.
    pub queue_capacity: usize,
    /// At most this many queued write requests share one WAL write and fsync.
    pub max_group_requests: usize,
    /// The write buffer is snapshotted to Parquet when it holds this many rows ...
    pub snapshot_rows: usize,
    /// ... or this many bytes of Arrow data ...
    pub snapshot_size: ByteSize,
    /// ... or when its oldest unpersisted row is this old.
    #[serde(with = "humantime_serde")]
    pub snapshot_age: Duration,
    /// Largest row group in a Parquet file.
    pub parquet_row_group_rows: usize,
    /// ZSTD level for Parquet files (1 fastest, 22 smallest).
    pub parquet_zstd_level: i32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            wal_segment_size: ByteSize::mib(64),
            queue_capacity: 1024,
            max_group_requests: 256,
            snapshot_rows: 2_000_000,
            snapshot_size: ByteSize::mib(256),
            snapshot_age: Duration::from_secs(600),
            parquet_row_group_rows: 1024 * 1024,
            parquet_zstd_level: 3,
        }
    }
}

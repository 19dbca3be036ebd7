//! gridlake's time-series store.
//!
//! Rows arrive as validated [`WriteBatch`]es. The WAL writer appends them to the
//! write-ahead log, fsyncs once per group of requests, adds them to the in-memory write
//! buffer (Arrow) and only then acknowledges them. When the buffer is large or old
//! enough it is snapshotted to Parquet files (one per table and UTC day, sorted by
//! series then time), the files are recorded in the catalog, and the WAL segments they
//! came from are deleted.
//!
//! ```text
//!  validate ─► submit ─► WAL (fsync) ─► write buffer ─► Parquet + catalog
//!                                            │                 │
//!                        scan ◄──────────────┴─────────────────┘  (last write wins)
//! ```
//!
//! A point is identified by (table, tag set, time); [`Store::scan`] keeps the last
//! write of each across files and buffer.

mod buffer;
mod catalog;
mod compact;
mod config;
mod dedup;
mod error;
mod metrics;
mod objects;
mod persist;
mod schema;
mod store;
mod tombstone;
mod types;
mod wal;

pub use catalog::ParquetFile;
pub use config::{ObjectStoreKind, StoreConfig};
pub use error::{Error, Result};
pub use schema::{COLUMN_ROLE_KEY, ColumnDef, ColumnKind, TableSchema};
pub use store::{
    CompactionStats, PreparedWrite, Store, StoreStats, TableStats, WriteObserver, WriteReceipt,
};
pub use tombstone::{DeletePredicate, Tombstone, rows_with_tags};
pub use types::{
    FieldType, FieldValue, LineError, ParsedLine, Row, TIME_COLUMN, TableWrite, TimeRange,
    WriteBatch,
};

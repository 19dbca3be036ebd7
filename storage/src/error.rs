//! Errors of the store.

use std::path::PathBuf;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write queue is full; the client should retry shortly.
    #[error("write queue is full; retry later")]
    Busy,
    /// The store is shutting down and takes no more writes.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The store was opened read-only (for example by `gridlake sql`).
    #[error("the store is open read-only")]
    ReadOnly,
    /// The named table does not exist.
    #[error("table {0:?} not found")]
    TableNotFound(String),
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The WAL writer could not make a write durable; the write was not stored.
    #[error("WAL write failed: {0}")]
    Wal(#[source] std::io::Error),
    /// Encoding or decoding Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading or writing a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The catalog file could not be read.
    #[error("catalog {path}: {reason}")]
    Catalog {
        /// The catalog file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// A request to the store (a delete, a retention) is not valid; the text says why.
    #[error("{0}")]
    Invalid(String),
    /// A request to object storage (S3) failed, after the client's retries.
    #[error("{op} {path}: {source}")]
    ObjectStore {
        /// What we were doing.
        op: &'static str,
        /// The object, with its backend: `s3://bucket/prefix/tables/...`.
        path: String,
        /// The client's error (boxed: it is large, and errors travel in `Result`s of
        /// the write path).
        #[source]
        source: Box<object_store::Error>,
    },
    /// A setting is missing or contradicts another.
    #[error("{key}: {reason}")]
    Config {
        /// The setting, as in the config file (`storage.s3_bucket`).
        key: &'static str,
        /// What is wrong and what to set.
        reason: String,
    },
    /// The writer thread stopped unexpectedly; the store needs a restart.
    #[error("the WAL writer has stopped")]
    WriterGone,
    /// Compaction could not read one of its input files; the partition's files stay as
    /// they are.
    #[error("compacting table {table}: file {path}: {source}")]
    Compaction {
        /// The table being compacted.
        table: String,
        /// The input file, relative to the storage root.
        path: String,
        /// What went wrong reading it.
        #[source]
        source: Box<Error>,
    },
    /// A Parquet file is not sorted by series then time, as every file of the store is;
    /// compaction refuses to merge it rather than deduplicate it wrongly.
    #[error("compacting table {table}: file {path} is not sorted by series and time")]
    UnsortedFile {
        /// The table being compacted.
        table: String,
        /// The file, relative to the storage root.
        path: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done and where.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

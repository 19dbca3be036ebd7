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
    /// The writer thread stopped unexpectedly; the store needs a restart.
    #[error("the WAL writer has stopped")]
    WriterGone,
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

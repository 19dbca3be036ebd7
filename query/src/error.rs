//! Errors of the query engine, split by who has to act on them: the client (fix the
//! SQL, ask for less), the operator (raise a limit) or us (a bug or a broken store).

use std::time::Duration;

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// What can go wrong when running or encoding a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement would change data, schema or session state; gridlake's SQL is
    /// read-only.
    #[error("only read-only queries (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) are allowed: {0}")]
    Refused(String),
    /// The query is wrong: a syntax error, an unknown table or column, a type mismatch,
    /// a bad function argument, a division by zero, ... The message is DataFusion's.
    #[error("{}", .0.strip_backtrace())]
    Query(#[source] DataFusionError),
    /// The query needed more memory than `query.memory_limit` allows.
    #[error("the query needs more memory than query.memory_limit allows: {0}")]
    ResourcesExhausted(String),
    /// The query did not finish within `query.timeout` and was cancelled.
    #[error("the query did not finish within {0:?} (query.timeout) and was cancelled")]
    Timeout(Duration),
    /// Running the query failed for a reason that is not the client's fault, such as a
    /// store that cannot read its files.
    #[error("query execution failed: {}", .0.strip_backtrace())]
    Execution(#[source] DataFusionError),
    /// The DataFusion session could not be set up from the configuration.
    #[error("could not set up the query engine: {}", .0.strip_backtrace())]
    Setup(#[source] DataFusionError),
    /// The threads queries run on could not be started.
    #[error("could not start the query threads: {0}")]
    Threads(#[source] std::io::Error),
    /// Writing the result as JSON, CSV, Arrow IPC or a text table failed.
    #[error("encoding the result as {format} failed: {source}")]
    Encode {
        /// The requested format (an [`OutputFormat`] name, or `table`).
        ///
        /// [`OutputFormat`]: crate::OutputFormat
        format: &'static str,
        /// What the encoder said.
        #[source]
        source: ArrowError,
    },
    /// Writing the result as a Parquet file failed.
    #[error("encoding the result as parquet failed: {0}")]
    EncodeParquet(#[from] parquet::errors::ParquetError),
    /// A time zone setting does not name an IANA time zone.
    #[error(
        "{setting}: unknown time zone {name:?} (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    )]
    UnknownTimezone {
        /// The setting, such as `query.rollup_timezone`.
        setting: &'static str,
        /// What it said.
        name: String,
    },
    /// Reading a table for the rollups, or writing rollup rows, failed in the store.
    #[error("rollups of table {table:?}: {source}")]
    RollupStore {
        /// The table being rolled up.
        table: String,
        /// What the store said.
        #[source]
        source: storage::Error,
    },
    /// The rows read for the rollups of a table could not be turned into rollup rows.
    #[error("rollups of table {table:?}: {source}")]
    RollupData {
        /// The table being rolled up.
        table: String,
        /// What Arrow said.
        #[source]
        source: ArrowError,
    },
    /// The file that keeps the stale rollup buckets across restarts could not be
    /// written.
    #[error("cannot write {}: {source}", path.display())]
    RollupState {
        /// The file.
        path: std::path::PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// `query.rollup_timezone` differs from the zone the existing daily rollups were
    /// computed in: their old days would stay beside the new ones and count twice.
    #[error(
        "query.rollup_timezone is {configured:?}, but the daily rollups ({tables}) in {} hold days of {recorded:?}; \
         their rows would stay beside the new days and be counted twice. Set query.rollup_timezone back to \
         {recorded:?}; to change the zone, remove the *_1d tables from the store (the store cannot delete \
         rows or tables: start from a data directory without them, e.g. re-import the raw tables into an \
         empty one) and restart, which backfills the daily rollups",
        data_dir.display()
    )]
    RollupTimezoneChanged {
        /// The zone in the configuration now.
        configured: String,
        /// The zone recorded in the data directory (`rollups.json`).
        recorded: String,
        /// The `*_1d` tables, comma-separated.
        tables: String,
        /// The store's data directory.
        data_dir: std::path::PathBuf,
    },
}

impl Error {
    /// True when the client has to change the request (HTTP 400): refused statements,
    /// invalid SQL, and queries that need more memory than allowed. A [`Error::Timeout`]
    /// is neither a client nor an internal error; see [`Error::is_timeout`].
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::Refused(_) | Error::Query(_) | Error::ResourcesExhausted(_)
        )
    }

    /// True when the query ran out of time (HTTP 408).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// Sorts an error from planning or running a query into client and internal
    /// failures.
    ///
    /// DataFusion wraps errors in context, `Shared` and Arrow errors, so the decision
    /// is made on the innermost DataFusion error. Execution errors count as the
    /// client's: for a query over data already in memory they come from function
    /// arguments and values (`to_timestamp('soon')`, a bad `date_bin` stride), whereas
    /// our own failures (the store) arrive as `External` and DataFusion's bugs as
    /// `Internal`.
    pub(crate) fn from_datafusion(error: DataFusionError) -> Error {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(message) => {
                Error::ResourcesExhausted(message.clone())
            }
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_) => Error::Query(error),
            DataFusionError::ArrowError(arrow, _) if is_value_error(arrow) => Error::Query(error),
            _ => Error::Execution(error),
        }
    }
}

/// Arrow errors that come from the values a query computes on, not from a bug.
fn is_value_error(error: &ArrowError) -> bool {
    matches!(
        error,
        ArrowError::DivideByZero
            | ArrowError::CastError(_)
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::ParseError(_)
    )
}

/// Result with the query engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

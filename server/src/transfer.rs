//! `gridlake export` and `gridlake import`: a table's rows between a running server and
//! files (Parquet, CSV, line protocol).
//!
//! Both commands are HTTP clients of a running server, never readers of its data
//! directory: an import goes through `/api/v3/write_lp` and so through validation, the
//! canonical tables' rules, the device registry and the rollups, exactly as a gateway's
//! writes do; an export reads through `/api/v1/sql` as Arrow IPC, one time chunk at a time,
//! so neither side holds more than a chunk (export) or a batch (import) in memory.
//!
//! ```text
//! export: POST /api/v1/sql format=arrow, chunk by chunk ─► ArrowWriter (Parquet) | arrow CSV writer ─► file
//! import: file ─► Parquet reader | csv reader | lines ─► line protocol (lp) ─► POST /api/v3/write_lp
//! ```
//!
//! The file formats, the CSV header's type marks and what a round trip keeps are in
//! docs/import-export.md.

mod client;
mod columns;
mod export;
mod import;
mod lp;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::Precision;

pub(crate) use export::run as export;
pub(crate) use import::run as import;

/// Key of the Parquet file metadata naming the table an export came from; `import` uses
/// it when no `--table` is given.
pub(crate) const TABLE_METADATA_KEY: &str = "gridlake.table";

/// Where the server is and the token to show it: the same for both commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// Base URL of the running server.
    #[arg(
        long,
        env = "GRIDLAKE_URL",
        default_value = "http://127.0.0.1:7181",
        value_name = "URL"
    )]
    pub(crate) url: String,
    /// API token (`gridlake token create`): read scope for export, write scope for import.
    #[arg(
        long,
        env = "GRIDLAKE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

/// Arguments of `gridlake export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The table to export.
    #[arg(long, value_name = "TABLE")]
    pub(crate) table: String,
    /// First time to export, inclusive (RFC 3339, e.g. 2024-01-01T00:00:00Z)
    /// [default: the table's first row].
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub(crate) from: Option<i64>,
    /// End of the export, exclusive (RFC 3339) [default: just after the table's last row].
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub(crate) to: Option<i64>,
    /// File format [default: from the extension of --output].
    #[arg(long, value_enum)]
    pub(crate) format: Option<ExportFormat>,
    /// The file to write (replaced only once the export is complete); `-` is stdout.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub(crate) output: PathBuf,
    /// Rows are fetched one span of time at a time (aligned to UTC midnight for whole
    /// days); a span the server cannot answer within its query timeout is halved.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_chunk)]
    pub(crate) chunk: Duration,
}

/// The formats `gridlake export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    /// Parquet with gridlake's column roles, so tags stay tags.
    Parquet,
    /// CSV whose header marks each column's role and type (`power_w:f64`).
    Csv,
}

/// Arguments of `gridlake import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The files to import, one after the other.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Table of the rows of CSV and Parquet files (a Parquet export names its own; line
    /// protocol lines name theirs).
    #[arg(long, value_name = "TABLE")]
    pub(crate) table: Option<String>,
    /// File format; `auto` goes by the Parquet magic bytes, then the extension
    /// (.parquet, .csv, .lp/.txt).
    #[arg(long, value_enum, default_value_t = ImportFormat::Auto)]
    pub(crate) format: ImportFormat,
    /// Unit of integer timestamps: line protocol timestamps and integer time columns.
    #[arg(long, value_name = "ns|us|ms|s", default_value = "ns")]
    pub(crate) precision: Precision,
    /// Rows per write request.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch_rows: u32,
    /// A column of a plain CSV or a foreign Parquet file that is a tag (repeat the flag
    /// for several). Other columns are fields.
    #[arg(long = "tag", value_name = "COLUMN")]
    pub(crate) tags: Vec<String>,
    /// Name of the time column of CSV and Parquet files.
    #[arg(long, value_name = "COLUMN", default_value = "time")]
    pub(crate) time_column: String,
}

/// The formats `gridlake import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ImportFormat {
    /// Parquet magic bytes, else the extension.
    Auto,
    /// CSV with a header line.
    Csv,
    /// Parquet.
    Parquet,
    /// InfluxDB line protocol.
    Lp,
}

/// Why an export or import stopped, or (for [`TransferError::Rejected`]) finished with
/// rows the server did not store.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// `--url` is not an `http://` URL.
    #[error("--url {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server at {url}: {source}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered a request with an error status.
    #[error("{what}: the server answered {status}: {message}")]
    Server {
        /// What was asked (e.g. `query of table meter`).
        what: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The server's `error` message, or the body.
        message: String,
    },
    /// A local file could not be opened, read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what its format says, or cannot be imported as it is.
    #[error("{path}: {reason}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the column or row.
        reason: String,
    },
    /// An Arrow result from the server could not be decoded or re-encoded.
    #[error("{what}: {source}")]
    Arrow {
        /// What was being done.
        what: String,
        /// The Arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Writing the Parquet output failed.
    #[error("{what}: {source}")]
    Parquet {
        /// What was being done.
        what: String,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The arguments contradict each other or miss something; the message says what.
    #[error("{0}")]
    Usage(String),
    /// The import finished, but the server (or the conversion) refused some rows; they
    /// were listed on stderr.
    #[error("{rejected} of {read} rows were rejected (the first are listed above)")]
    Rejected {
        /// Rows not stored.
        rejected: u64,
        /// Rows read from the files.
        read: u64,
    },
}

/// Parses an RFC 3339 time into UTC nanoseconds, for `--from` and `--to`.
fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{e}; expected RFC 3339 such as 2024-01-01T00:00:00Z"))?;
    time.timestamp_nanos_opt()
        .ok_or_else(|| "out of range (must lie between the years 1677 and 2262)".to_owned())
}

/// Parses `--chunk`: a humantime duration of at least one second.
fn parse_chunk(text: &str) -> Result<Duration, String> {
    let chunk = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if chunk < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(chunk)
}

/// A progress bar on stderr when stderr is a terminal; hidden otherwise, so logs and
/// pipes get only the summary line.
fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    // The templates are constants of this module: a bad one is a bug caught by the
    // unit test below, and the default style is a fine fallback meanwhile.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Human-readable byte count for the summaries.
fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_templates_are_valid() {
        for template in [export::PROGRESS_TEMPLATE, import::PROGRESS_TEMPLATE] {
            ProgressStyle::with_template(template).expect(template);
        }
    }

    #[test]
    fn from_and_to_take_rfc3339_with_nanoseconds() {
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Ok(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20+02:00"),
            Ok(1_700_000_000_000_000_000)
        );
        let err = parse_rfc3339("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn chunk_is_at_least_a_second() {
        assert_eq!(parse_chunk("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_chunk("10ms").is_err());
    }
}

//! `gridlake sql`: one query against a data directory, printed to stdout.

use std::io::Write;

use query::{OutputFormat, QueryEngine};
use storage::Store;

use crate::cli::SqlFormat;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::serve::{init_tracing, runtime};

/// The CLI is for people reading a result: only warnings and errors go to stderr unless
/// `RUST_LOG` asks for more.
const CLI_LOG_FILTER: &str = "warn";

/// Opens the store in `config.data_dir` read-only, runs `sql` and prints the result in
/// `format`.
pub(crate) fn run(config: &Config, sql: &str, format: SqlFormat) -> Result<()> {
    init_tracing(CLI_LOG_FILTER, "the sql command's default")?;
    // A read-only store over a directory that does not exist would answer every query
    // with "table not found"; a mistyped --data-dir deserves a clearer message.
    if !config.data_dir.is_dir() {
        return Err(Error::DataDirMissing(config.data_dir.clone()));
    }
    let store = Store::open_read_only(&config.data_dir, config.storage.clone())?;
    let output = runtime()?.block_on(async {
        let engine = QueryEngine::new(store, config.query.clone())?;
        engine.sql(sql).await
    })?;
    let mut text = match format {
        SqlFormat::Table => query::pretty(&output)?.into_bytes(),
        SqlFormat::Json => query::encode(&output, OutputFormat::Json)?,
        SqlFormat::Jsonl => query::encode(&output, OutputFormat::Jsonl)?,
        SqlFormat::Csv => query::encode(&output, OutputFormat::Csv)?,
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    write_stdout(&text)
}

/// Writes `bytes` to stdout and flushes, so that a closed pipe is an error rather than a
/// panic.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}

//! SQL over gridlake's store with Apache DataFusion, and the encodings results are
//! sent in. A [`QueryEngine`] owns one DataFusion session whose `public` schema lists
//! the store's tables live; each table scan turns the query's filters on `time` into a
//! [`storage::TimeRange`], reads the write buffer and the Parquet files as one
//! deduplicated table through [`storage::Store::scan`] on a blocking thread, and hands
//! the batches to DataFusion, which runs the rest of the plan under a memory limit and
//! a timeout. [`encode`] turns the result into JSON, JSON Lines, CSV, Arrow IPC or
//! Parquet for HTTP clients, [`pretty`] into a table for the CLI.
//!
//! ```text
//!  SQL ──► QueryEngine::sql ──► DataFusion plan ──► StoreTable::scan ──► Store::scan
//!          (read-only check,     (filters, joins,    (time range from     (buffer +
//!           timeout, metrics)     aggregates)         filters, projection) Parquet)
//!                │
//!                ▼
//!          QueryOutput ──► encode (json, jsonl, csv, arrow, parquet) / pretty
//! ```

mod catalog;
mod config;
mod engine;
mod error;
mod metrics;
mod output;
mod time_filter;

pub use config::QueryConfig;
pub use engine::{CATALOG, QueryEngine, SCHEMA};
pub use error::{Error, Result};
pub use output::{OutputFormat, QueryOutput, UnknownFormat, encode, pretty};

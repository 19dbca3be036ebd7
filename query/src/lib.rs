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
//!
//! Beside plain SQL the engine keeps what portal charts need in milliseconds:
//!
//! - time-series functions registered in the session (`functions`): `time_bucket` on
//!   local calendars ([`Bucketing`]), gap filling, and energy from cumulative registers
//!   by the one set of rules in [`counter`];
//! - the last-value cache ([`LastValues`]), a write observer of the store that keeps the
//!   newest values of every series (SQL: `<table>_latest`);
//! - the [`rollup`]s: 15-minute, hourly and daily aggregates of every table, written
//!   back into the store as tables (`<table>_15m`, ...), marked stale by a write
//!   observer and recomputed in the background.
//!
//! ```text
//!  Store ──write observers──► LastValues (newest row per series)
//!                      └───► rollup marks ──refresh thread──► scan raw ──► <table>_15m
//!                                                              ──► <table>_1h, <table>_1d
//! ```

mod bucket;
mod catalog;
mod config;
pub mod counter;
mod engine;
mod error;
mod functions;
mod latest;
mod metrics;
mod output;
pub mod rollup;
mod time_filter;

pub use bucket::{BucketError, Bucketing, Width};
pub use config::QueryConfig;
pub use engine::{CATALOG, QueryEngine, SCHEMA};
pub use error::{Error, Result};
pub use latest::{LastValues, LatestFilter, WarmUp, is_cached_table};
pub use output::{OutputFormat, QueryOutput, UnknownFormat, encode, pretty};

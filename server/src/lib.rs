//! The `gridlake` binary as a library: configuration, the HTTP API, the command line,
//! and the wiring between them and the engine's crates.
//!
//! `gridlake serve` loads a [`Config`] (defaults, TOML file, `GRIDLAKE_*` environment,
//! flags), opens the [`storage::Store`] (replaying its WAL), starts a
//! [`query::QueryEngine`] over it, and serves the HTTP API: write requests are decoded and
//! parsed by [`ingest`], validated and submitted to the store, and acknowledged only once
//! the store reports them durable; SQL requests run on the query engine and are encoded in
//! the requested format. On SIGINT or SIGTERM it stops accepting connections, lets
//! in-flight requests finish, then shuts the store down (fsync, persist) and exits.
//!
//! ```text
//! HTTP ─► http::write ─► ingest::decode_body / parse ─► Store::validate ─► Store::submit ─► ack
//! HTTP ─► http::sql   ─► QueryEngine::sql ─► query::encode ─► response
//! MQTT ─► ingest::mqtt collector ─► Store::validate ─► Store::submit ─► PUBACK
//! CLI  ─► sql (read-only store) · config (prints the effective TOML) · simulate mqtt · simulate modbus
//!      · user create|list · token create|revoke (the side store)
//!      · export · import (HTTP clients of a running server: Parquet, CSV, line protocol)
//! ```

mod admin;
mod auth;
mod cli;
pub mod config;
mod error;
mod http;
mod registry;
mod serve;
mod simulate;
mod simulate_modbus;
mod sql;
#[cfg(test)]
mod testing;
mod transfer;

use clap::Parser;

pub use crate::config::Config;
pub use crate::error::{Error, Result};
pub use crate::simulate::SimulateError;
pub use crate::transfer::TransferError;

use crate::cli::{Cli, Command};

/// Parses the command line and runs the chosen command; `main` is this and nothing else.
///
/// Exits the process itself for `--help`, `--version` and usage errors (as clap does);
/// every other failure is returned for the caller to report.
pub fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve::serve(cli.serve.load()?),
        Some(Command::Serve(args)) => serve::serve(args.load()?),
        Some(Command::Sql(args)) => {
            let config = args.config_args().load()?;
            sql::run(&config, &args.query, args.format)
        }
        Some(Command::Config(args)) => {
            let text = args.load()?.to_toml()?;
            sql::write_stdout(text.as_bytes())
        }
        Some(Command::Simulate(args)) => Ok(simulate::run(args)?),
        Some(Command::User(args)) => admin::run_user(args),
        Some(Command::Token(args)) => admin::run_token(args),
        Some(Command::Export(args)) => Ok(transfer::export(args)?),
        Some(Command::Import(args)) => Ok(transfer::import(args)?),
    }
}

//! `gridlake-load`: the load tool for gridlake and the servers it is compared with.
//!
//! It drives a running server from outside, the way a fleet of gateways would, and
//! prints figures anyone can reproduce: the machine, the build, the exact command with
//! every default filled in, the results, and a last `load: key=value ...` line that
//! scripts (`benches/compare.sh`) parse.
//!
//! ```text
//! cli ─► write: fleet ─► generator threads ─► sender threads ─► HTTP line protocol ─► server
//!     │         process: the server's CPU and RSS from /proc, SIGTERM, bytes on disk
//!     │         counters: the server's own count of what it took in, against the acks
//!     ├► mqtt:  fleet ─► rumqttc publishers ─► broker ─► gridlake; its /metrics count what is stored
//!     └► query: dashboard and analyst SQL shapes ─► /api/v1/sql; latency percentiles
//! ```
//!
//! The library is the binary's body, split by concept (`src/main.rs` only calls
//! [`main`]); nothing here is an API for other crates, so errors are `anyhow` throughout.
//! The micro-benchmarks of this crate live in `benches/` and do not use it.

mod cli;
mod counters;
mod fleet;
mod mqtt;
mod process;
mod query;
mod report;
mod write;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the subcommand and reports an error on stderr.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Write(args) => write::run(args),
        cli::Command::Mqtt(args) => mqtt::run(args),
        cli::Command::Query(args) => query::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridlake-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

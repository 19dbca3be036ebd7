//! The `gridlake` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, HttpOverrides, Overrides};
use crate::error::Result;

/// gridlake: an energy-telemetry engine. Takes line-protocol and JSON writes over HTTP,
/// makes them durable, and answers SQL.
///
/// Configuration comes from defaults, a TOML file (--config), GRIDLAKE_* environment
/// variables (GRIDLAKE_DATA_DIR, GRIDLAKE_HTTP_ADDR, GRIDLAKE_<SECTION>_<KEY>) and flags,
/// each beating the one before.
#[derive(Debug, Parser)]
#[command(
    name = "gridlake",
    version,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    /// What to do; without a command, `serve` with the flags given here.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// The flags of `serve`, for running without a command (as `cargo run` does).
    #[command(flatten)]
    pub(crate) serve: ConfigArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server: HTTP writes and SQL over the data directory.
    Serve(ConfigArgs),
    /// Run one SQL query against a data directory and print the result.
    ///
    /// Opens the store read-only; data written since the last WAL replay is included.
    Sql(SqlArgs),
    /// Print the effective configuration (defaults, file, environment, flags) as TOML.
    Config(ConfigArgs),
    /// Simulate devices, for load tests and demos: publish a fleet to an MQTT broker, or
    /// serve SunSpec devices over Modbus TCP.
    Simulate(crate::simulate::SimulateArgs),
    /// Manage users in the side store: create the first admin.
    User(crate::admin::UserArgs),
    /// Manage API tokens: gateways' write tokens, analysts' read tokens, admin tokens.
    Token(crate::admin::TokenArgs),
    /// Export a table's rows from a running server to a Parquet or CSV file.
    Export(crate::transfer::ExportArgs),
    /// Import Parquet, CSV or line protocol files into a running server.
    Import(crate::transfer::ImportArgs),
}

/// Flags that select and override the configuration.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "GRIDLAKE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (WAL, Parquet files, catalog) [default: ./data].
    #[arg(long, env = "GRIDLAKE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free port [default: 127.0.0.1:7181].
    #[arg(long, env = "GRIDLAKE_HTTP_ADDR", value_name = "ADDR")]
    pub(crate) http_addr: Option<SocketAddr>,
}

impl ConfigArgs {
    /// Loads the configuration these flags point at and override.
    pub(crate) fn load(&self) -> Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            http: HttpOverrides {
                addr: self.http_addr,
            },
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

/// Arguments of `gridlake sql`.
#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The query, e.g. "SELECT * FROM meter ORDER BY time DESC LIMIT 10".
    pub(crate) query: String,
    /// TOML configuration file (for `data_dir`, `[storage]` and `[query]`).
    #[arg(long, env = "GRIDLAKE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory to read [default: ./data].
    #[arg(long, env = "GRIDLAKE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub(crate) format: SqlFormat,
}

impl SqlArgs {
    /// The configuration flags of this command (it has no HTTP address).
    pub(crate) fn config_args(&self) -> ConfigArgs {
        ConfigArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            http_addr: None,
        }
    }
}

/// How `gridlake sql` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SqlFormat {
    /// A text table for people.
    Table,
    /// A JSON array with one object per row.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_serve_with_defaults() {
        let cli = Cli::try_parse_from(["gridlake", "--http-addr", "127.0.0.1:0"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.http_addr, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "gridlake",
            "serve",
            "--data-dir",
            "/tmp/d",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .expect("parses");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve, got {:?}", cli.command);
        };
        assert_eq!(args.data_dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(args.http_addr, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn bad_http_addr_is_refused() {
        let err = Cli::try_parse_from(["gridlake", "serve", "--http-addr", "localhost"])
            .expect_err("not a socket address");
        assert!(err.to_string().contains("--http-addr"), "{err}");
    }

    #[test]
    fn sql_takes_query_and_format() {
        let cli = Cli::try_parse_from(["gridlake", "sql", "SELECT 1", "--format", "csv"])
            .expect("parses");
        let Some(Command::Sql(args)) = cli.command else {
            panic!("expected sql, got {:?}", cli.command);
        };
        assert_eq!(args.query, "SELECT 1");
        assert_eq!(args.format, SqlFormat::Csv);
    }
}

//! Errors that stop a `gridlake` command. Errors of single HTTP requests are not here:
//! they are answered, see `http::ApiError`.

use std::path::PathBuf;

/// Why a `gridlake` command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file given with `--config` does not exist.
    #[error("config file {0} does not exist")]
    ConfigFileMissing(PathBuf),
    /// The configuration could not be assembled from file, environment and flags; the
    /// message names the key and the source.
    #[error("invalid configuration: {0}")]
    Config(#[source] Box<figment::Error>),
    /// The `[mqtt]` section is not usable; the message names the setting.
    #[error("invalid configuration: {0}")]
    Mqtt(#[from] ingest::mqtt::MqttConfigError),
    /// The `[modbus]` section is not usable; the message names the device and setting.
    #[error("invalid configuration: {0}")]
    Modbus(#[from] ingest::modbus::ModbusConfigError),
    /// A setting has a value the server cannot run with; the message names it.
    #[error("invalid configuration: {0}")]
    Setting(String),
    /// `gridlake simulate` failed.
    #[error(transparent)]
    Simulate(#[from] crate::simulate::SimulateError),
    /// `gridlake export` or `gridlake import` failed, or rows were rejected.
    #[error(transparent)]
    Transfer(#[from] crate::transfer::TransferError),
    /// The effective configuration could not be written as TOML.
    #[error("cannot print the configuration as TOML: {0}")]
    ConfigToml(#[source] toml::ser::Error),
    /// `log.filter` (or `RUST_LOG`) is not a valid `tracing` filter.
    #[error("invalid log filter {filter:?} from {origin}: {reason}")]
    LogFilter {
        /// The filter text.
        filter: String,
        /// Where it came from (`RUST_LOG` or `log.filter`).
        origin: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Creating the data directory failed.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `gridlake sql` was pointed at a data directory that does not exist.
    #[error("data directory {0} does not exist (set it with --data-dir or GRIDLAKE_DATA_DIR)")]
    DataDirMissing(PathBuf),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The HTTP address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The SIGINT or SIGTERM handler could not be installed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// Opening, using or shutting down the store failed.
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    /// Opening or using the side store (users, sites, the device registry) failed.
    #[error("crm side store: {0}")]
    Crm(#[from] crm::Error),
    /// Setting up or running a query failed.
    #[error("query: {0}")]
    Query(#[from] query::Error),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Reading a password from the terminal or stdin failed.
    #[error("cannot read the password: {0}")]
    Stdin(#[source] std::io::Error),
    /// Writing the result to stdout failed.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// Result with the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The command line: subcommands, flags with their defaults, and the reverse — every
//! resolved flag printed back as a command that repeats the run.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::blocking::ClientBuilder;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use crate::fleet::{FleetSpec, Mix};
use crate::report::shell_word;

/// Row rate the default start leaves room for: the virtual clock of a run this fast ends
/// at the wall clock, a slower run ends in the past. Timestamps in the future are
/// refused or dropped by some servers (VictoriaMetrics), so the clock must not run past
/// now.
const PLANNED_ROWS_PER_SECOND: u64 = 2_000_000;

/// Load generator for gridlake and other InfluxDB-line-protocol servers: HTTP writes,
/// MQTT publishes, SQL query latencies. Prints the machine, the exact command with every
/// default filled in, the figures, and a final `load: key=value ...` line for scripts.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "gridlake-load", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub(crate) enum Command {
    /// Post line-protocol batches over HTTP for a fixed time; report acknowledged rows/s,
    /// ack latencies and (with --server-pid) the server's CPU, memory and bytes on disk.
    Write(WriteArgs),
    /// Publish meter readings through an MQTT broker (QoS 1) and report how fast the
    /// broker took them and how fast gridlake stored them (from its /metrics).
    Mqtt(MqttArgs),
    /// Run dashboard and analyst queries against gridlake's /api/v1/sql and report
    /// latency percentiles per query shape.
    Query(QueryArgs),
}

impl Command {
    /// The command line that repeats this run (flags resolved, defaults included).
    pub(crate) fn command_line(&self) -> String {
        let mut words = vec!["gridlake-load".to_owned()];
        match self {
            Command::Write(args) => args.render(&mut words),
            Command::Mqtt(args) => args.render(&mut words),
            Command::Query(args) => args.render(&mut words),
        }
        words.join(" ")
    }
}

/// Adds `--flag value`.
fn flag(words: &mut Vec<String>, name: &str, value: impl ToString) {
    words.push(format!("--{name}"));
    words.push(shell_word(&value.to_string()));
}

/// Adds `--flag` when `on`.
fn switch(words: &mut Vec<String>, name: &str, on: bool) {
    if on {
        words.push(format!("--{name}"));
    }
}

/// A duration as the flags take it: `1h`, `15m`, `10s`, `250ms`.
pub(crate) fn duration_word(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if d.subsec_nanos() == 0 && secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if d.subsec_nanos() == 0 {
        format!("{secs}s")
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// `10s`, `500ms`, `1m`, `1h 30m` (humantime), in whole milliseconds, at least 1 ms.
fn parse_duration_ms(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_millis(1) || !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!("{text:?} must be whole milliseconds, at least 1ms"));
    }
    Ok(d)
}

fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2024-06-01T00:00:00Z: {e}"))
}

/// The simulated fleet, shared by `write` and `mqtt`.
#[derive(Debug, Clone, PartialEq, Args)]
pub(crate) struct FleetArgs {
    /// Number of devices (distinct series per table).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) devices: u64,
    /// Devices per site: the `site_id` tag groups this many `device_id`s.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) devices_per_site: u64,
    /// Virtual time between two readings of one device (every device reports once per
    /// interval; timestamps advance by it).
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub(crate) interval: Duration,
    /// Virtual time of the first reading, RFC 3339 [default: now minus the virtual time a
    /// run at 2,000,000 rows/s covers, so the clock stays in the past].
    #[arg(long, value_parser = parse_start)]
    pub(crate) start: Option<DateTime<Utc>>,
    /// Seed of the readings: same seed and flags, same rows.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

impl FleetArgs {
    /// Fills in the default start for a run of `seconds` at `now`.
    pub(crate) fn resolve_start(&mut self, now: DateTime<Utc>, seconds: u64) {
        if self.start.is_some() {
            return;
        }
        let interval_ms = self.interval_ms();
        let rounds = (seconds.max(1) * PLANNED_ROWS_PER_SECOND).div_ceil(self.devices);
        let span_ms = i64::try_from(rounds)
            .unwrap_or(i64::MAX)
            .saturating_mul(interval_ms);
        let start_ms = now.timestamp_millis().saturating_sub(span_ms);
        let start_ms = start_ms.div_euclid(interval_ms) * interval_ms;
        self.start = DateTime::from_timestamp_millis(start_ms.max(0));
    }

    /// The interval in milliseconds.
    pub(crate) fn interval_ms(&self) -> i64 {
        i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX)
    }

    /// The fleet these flags describe (after [`FleetArgs::resolve_start`]).
    pub(crate) fn spec(&self, mix: Mix, table_prefix: &str) -> FleetSpec {
        FleetSpec {
            devices: self.devices,
            devices_per_site: self.devices_per_site,
            mix,
            interval_ms: self.interval_ms(),
            start_ms: self.start.map_or(0, |s| s.timestamp_millis()),
            seed: self.seed,
            table_prefix: table_prefix.to_owned(),
        }
    }

    fn render(&self, words: &mut Vec<String>) {
        flag(words, "devices", self.devices);
        flag(words, "devices-per-site", self.devices_per_site);
        flag(words, "interval", duration_word(self.interval));
        if let Some(start) = self.start {
            flag(
                words,
                "start",
                start.to_rfc3339_opts(SecondsFormat::Millis, true),
            );
        }
        flag(words, "seed", self.seed);
    }
}

/// gridlake's credentials, shared by every subcommand that talks HTTP to it.
///
/// The token is a secret: it is left out of the printed command (a rerun takes it from
/// `GRIDLAKE_TOKEN` again) and out of `Debug`.
#[derive(Clone, Default, PartialEq, Args)]
pub(crate) struct TokenArgs {
    /// gridlake API token (`gridlake token create --scope admin`), sent as
    /// `Authorization: Token <token>` on every request: writes, SQL and /metrics. Not
    /// needed for servers without authentication.
    #[arg(
        long,
        env = "GRIDLAKE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
}

impl fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenArgs")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TokenArgs {
    /// An HTTP client builder whose requests carry the token, if one was given. The
    /// InfluxDB v2 `Token` scheme rather than `Bearer`: gridlake takes both, and
    /// InfluxDB-compatible servers that check tokens take `Token`.
    pub(crate) fn client(&self) -> anyhow::Result<ClientBuilder> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Token {token}"))
                .context("--token must be printable ASCII")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(reqwest::blocking::Client::builder().default_headers(headers))
    }
}

/// The server a `write` run talks to: its write path, health check and setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// gridlake: `/api/v3/write_lp`, health `/health`.
    Gridlake,
    /// InfluxDB 1.x: `/write` after `CREATE DATABASE`, health `/ping`.
    Influxdb,
    /// VictoriaMetrics: `/write` (InfluxDB line protocol), health `/health`.
    Victoriametrics,
}

impl Target {
    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Gridlake => "gridlake",
            Target::Influxdb => "influxdb",
            Target::Victoriametrics => "victoriametrics",
        }
    }
}

/// Flags of `write`.
#[derive(Debug, Clone, PartialEq, Args)]
pub(crate) struct WriteArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:7181")]
    pub(crate) url: String,
    /// Which server: picks the write path, the health check and the setup.
    #[arg(long, value_enum, default_value_t = Target::Gridlake)]
    pub(crate) target: Target,
    /// Path and query to post to, overriding the target's (any InfluxDB-compatible
    /// write endpoint, e.g. `/api/v2/write?bucket=bench&precision=ns`). Timestamps are
    /// nanoseconds.
    #[arg(long, value_name = "PATH")]
    pub(crate) write_path: Option<String>,
    /// Database name (`db=`), created first on InfluxDB.
    #[arg(long, default_value = "bench")]
    pub(crate) db: String,
    /// gridlake only: acknowledge before the WAL fsync (`no_sync=true`).
    #[arg(long)]
    pub(crate) no_sync: bool,
    /// Concurrent HTTP connections, each with its own sender thread.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) connections: u64,
    /// Rows (lines) per request.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch: u64,
    /// Compress bodies with gzip (level 1) and send `Content-Encoding: gzip`.
    #[arg(long)]
    pub(crate) gzip: bool,
    /// Threads rendering bodies ahead of the senders.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) generators: u64,
    /// How long to write.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) seconds: u64,
    /// Only generate (and compress) bodies, send nothing: measures the generator.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// The server's process id: report its CPU time and memory during the run.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<i32>,
    /// The server's data directory: report bytes on disk per acknowledged field value.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// After the run, send SIGTERM to --server-pid and wait for it to exit (servers
    /// flush on shutdown) before measuring --data-dir.
    #[arg(long, requires = "server_pid")]
    pub(crate) stop_server: bool,
    /// How long --stop-server waits for the server to exit.
    #[arg(long, default_value = "300s", value_parser = parse_duration_ms)]
    pub(crate) stop_timeout: Duration,
    /// Shares of the device kinds: `meter`, `meter=8,inverter=1,battery=1`.
    #[arg(long, default_value_t = Mix::default())]
    pub(crate) kinds: Mix,
    /// Table (measurement) name prefix; the kind's name follows (`bench_meter`).
    #[arg(long, default_value = "bench_")]
    pub(crate) table_prefix: String,
    #[command(flatten)]
    pub(crate) auth: TokenArgs,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

impl WriteArgs {
    fn render(&self, words: &mut Vec<String>) {
        words.push("write".to_owned());
        flag(words, "url", &self.url);
        flag(words, "target", self.target.name());
        if let Some(path) = &self.write_path {
            flag(words, "write-path", path);
        }
        flag(words, "db", &self.db);
        switch(words, "no-sync", self.no_sync);
        flag(words, "connections", self.connections);
        flag(words, "batch", self.batch);
        switch(words, "gzip", self.gzip);
        flag(words, "generators", self.generators);
        flag(words, "seconds", self.seconds);
        switch(words, "dry-run", self.dry_run);
        if let Some(pid) = self.server_pid {
            flag(words, "server-pid", pid);
        }
        if let Some(dir) = &self.data_dir {
            flag(words, "data-dir", dir.display());
        }
        switch(words, "stop-server", self.stop_server);
        flag(words, "stop-timeout", duration_word(self.stop_timeout));
        flag(words, "kinds", self.kinds);
        flag(words, "table-prefix", &self.table_prefix);
        self.fleet.render(words);
    }
}

/// Flags of `mqtt`.
#[derive(Debug, Clone, PartialEq, Args)]
pub(crate) struct MqttArgs {
    /// Broker URL, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub(crate) broker: String,
    /// Base URL of the gridlake server subscribed to the broker (its /metrics counts the
    /// stored readings). Configure it with `gridlake simulate mqtt --print-config`.
    #[arg(long, default_value = "http://127.0.0.1:7181")]
    pub(crate) url: String,
    /// Topic prefix; meters publish to `<prefix>/<site_id>/meter/<device_id>`.
    #[arg(long, default_value = "gridlake-sim")]
    pub(crate) prefix: String,
    /// Parallel MQTT connections, each with a publisher thread.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) connections: u64,
    /// Readings per message (consecutive readings of one meter).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) readings_per_message: u32,
    /// How long to publish.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) seconds: u64,
    /// After publishing, how long the stored count may stay still before the tool stops
    /// waiting for the rest.
    #[arg(long, default_value = "5s", value_parser = parse_duration_ms)]
    pub(crate) settle: Duration,
    /// MQTT client id; connection n uses `<id>-<n>`.
    #[arg(long, default_value = "gridlake-load")]
    pub(crate) client_id: String,
    #[command(flatten)]
    pub(crate) auth: TokenArgs,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

impl MqttArgs {
    fn render(&self, words: &mut Vec<String>) {
        words.push("mqtt".to_owned());
        flag(words, "broker", &self.broker);
        flag(words, "url", &self.url);
        flag(words, "prefix", &self.prefix);
        flag(words, "connections", self.connections);
        flag(words, "readings-per-message", self.readings_per_message);
        flag(words, "seconds", self.seconds);
        flag(words, "settle", duration_word(self.settle));
        flag(words, "client-id", &self.client_id);
        self.fleet.render(words);
    }
}

/// Flags of `query`.
#[derive(Debug, Clone, PartialEq, Args)]
pub(crate) struct QueryArgs {
    /// Base URL of the gridlake server.
    #[arg(long, default_value = "http://127.0.0.1:7181")]
    pub(crate) url: String,
    /// Table to query (as `write` names it: prefix + kind).
    #[arg(long, default_value = "bench_meter")]
    pub(crate) table: String,
    /// Timed runs of each query shape.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) iterations: u64,
    /// Untimed runs of each shape first (caches, file handles).
    #[arg(long, default_value_t = 1)]
    pub(crate) warmup: u64,
    /// The "latest per device" shape looks this far back from the newest row.
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    pub(crate) latest_window: Duration,
    /// Table of the chart shapes (`series`, `api_series*`) [default: --table].
    #[arg(long)]
    pub(crate) series_table: Option<String>,
    /// The chart shapes ask for this much data, from the first row of --series-table.
    #[arg(long, default_value = "720h", value_parser = parse_duration_ms)]
    pub(crate) series_window: Duration,
    #[command(flatten)]
    pub(crate) auth: TokenArgs,
}

impl QueryArgs {
    /// The table of the chart shapes.
    pub(crate) fn series_table(&self) -> &str {
        self.series_table.as_deref().unwrap_or(&self.table)
    }

    fn render(&self, words: &mut Vec<String>) {
        words.push("query".to_owned());
        flag(words, "url", &self.url);
        flag(words, "table", &self.table);
        flag(words, "iterations", self.iterations);
        flag(words, "warmup", self.warmup);
        flag(words, "latest-window", duration_word(self.latest_window));
        if let Some(table) = &self.series_table {
            flag(words, "series-table", table);
        }
        flag(words, "series-window", duration_word(self.series_window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a command line as a POSIX shell would (enough for what `shell_word` writes).
    fn shell_split(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted, mut escaped) = (Vec::new(), None, false, false);
        for c in line.chars() {
            match c {
                _ if escaped => {
                    word.get_or_insert_with(String::new).push(c);
                    escaped = false;
                }
                '\'' => {
                    quoted = !quoted;
                    word.get_or_insert_with(String::new);
                }
                '\\' if !quoted => escaped = true,
                c if c.is_whitespace() && !quoted => words.extend(word.take()),
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        words
    }

    fn parse(line: &str) -> Cli {
        Cli::try_parse_from(shell_split(line)).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// The printed command must parse back to exactly the run it describes.
    fn assert_round_trip(line: &str) {
        let mut cli = parse(line);
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:34:56.789Z")
            .unwrap()
            .with_timezone(&Utc);
        match &mut cli.command {
            Command::Write(a) => a.fleet.resolve_start(now, a.seconds),
            Command::Mqtt(a) => a.fleet.resolve_start(now, a.seconds),
            Command::Query(_) => {}
        }
        let printed = cli.command.command_line();
        assert_eq!(parse(&printed), cli, "{printed}");
    }

    #[test]
    fn printed_commands_rerun_the_same_run() {
        assert_round_trip("gridlake-load write");
        assert_round_trip(
            "gridlake-load write --target influxdb --url http://127.0.0.1:8086 --gzip \
             --no-sync --dry-run --server-pid 7 --stop-server \
             --kinds meter=8,battery=2 --interval 250ms --write-path '/write?db=x&precision=ns' --data-dir '/tmp/a b'",
        );
        assert_round_trip("gridlake-load mqtt --readings-per-message 1 --settle 1500ms");
        assert_round_trip("gridlake-load query --latest-window 15m --iterations 3");
    }

    #[test]
    fn default_start_leaves_room_for_the_run_before_now() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:34:56.789Z")
            .unwrap()
            .with_timezone(&Utc);
        let Command::Write(mut args) = parse("gridlake-load write --devices 10000").command else {
            unreachable!()
        };
        args.fleet.resolve_start(now, 30);
        // 30 s × 2,000,000 rows/s over 10,000 devices is 6,000 rounds of 10 s.
        let start = args.fleet.start.unwrap();
        assert_eq!(
            start.to_rfc3339_opts(SecondsFormat::Secs, true),
            "2026-02-28T19:54:50Z"
        );
        assert!(now - start >= chrono::Duration::seconds(60_000));
        // An explicit start stays.
        let before = args.fleet.start;
        args.fleet
            .resolve_start(now + chrono::Duration::days(1), 30);
        assert_eq!(args.fleet.start, before);
    }

    #[test]
    fn durations_are_whole_milliseconds() {
        assert_eq!(parse_duration_ms("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration_ms("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("1500us").is_err());
        assert_eq!(duration_word(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_word(Duration::from_secs(90)), "90s");
        assert_eq!(duration_word(Duration::from_secs(300)), "5m");
        assert_eq!(duration_word(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn the_token_is_taken_but_never_printed() {
        let cli = parse("gridlake-load query --token glk_secret");
        let Command::Query(args) = &cli.command else {
            unreachable!()
        };
        assert_eq!(args.auth.token.as_deref(), Some("glk_secret"));
        let printed = cli.command.command_line();
        assert!(!printed.contains("glk_secret"), "{printed}");
        let debug = format!("{cli:?}");
        assert!(!debug.contains("glk_secret"), "{debug}");
    }

    /// The token reaches the server as `Authorization: Token <t>`: a one-shot HTTP
    /// server records the request head.
    #[test]
    fn requests_carry_the_token() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let (mut head, mut buf) = (Vec::new(), [0; 4096]);
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .unwrap();
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        let auth = TokenArgs {
            token: Some("glk_abc".to_owned()),
        };
        let client = auth.client().unwrap().build().unwrap();
        let response = client.get(format!("http://{addr}/metrics")).send().unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
        let head = server.join().unwrap();
        assert!(
            head.contains("\r\nauthorization: token glk_abc\r\n"),
            "{head}"
        );
    }

    #[test]
    fn stop_server_needs_the_pid() {
        assert!(Cli::try_parse_from(["gridlake-load", "write", "--stop-server"]).is_err());
    }
}

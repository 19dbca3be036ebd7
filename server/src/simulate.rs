//! `gridlake simulate mqtt`: publishes a simulated fleet ([`devices::sim`]) to an MQTT
//! broker, for load tests of the MQTT collector and for demos.
//!
//! ```text
//! Fleet ─► devices split over --connections (device i → connection i mod C)
//!   publisher task, per connection: schedule order, paced to the global --rate ─► AsyncClient::publish
//!   eventloop task, per connection: polls rumqttc, matches PUBACKs to publishes ─► Tally
//!   reporter task: totals to stderr every 5 s
//! ```
//!
//! The payloads depend only on the fleet parameters (seed, devices, mix, interval, start,
//! batch, prefix), never on timing or on the number of connections; the run prints every
//! parameter so it can be repeated. A QoS 1 message counts once the broker's PUBACK
//! arrives; a QoS 0 message once it is written to the socket.
//!
//! A lost connection ends the run with an error rather than reconnecting: after a
//! reconnect rumqttc may drop queued publishes (new session) and the counts would stop
//! meaning "the broker has these".

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use devices::sim::{
    DEFAULT_PREFIX, DeviceSim, Fleet, FleetConfig, Mix, Schedule, SimError, SimKind,
};
use ingest::mqtt::BrokerUrl;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often progress goes to stderr.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long a stopping run waits for the broker to acknowledge what is in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes in flight per connection (the broker's Receive Maximum may lower it).
/// Enough to cover the round trip at the rates one connection reaches.
const INFLIGHT: u16 = 1000;
/// Publishes queued between a publisher and its event loop: keeps the socket busy while
/// the publisher encodes the next ones, and bounds memory when the broker is slow.
const REQUEST_CAPACITY: usize = 1000;
/// Keep-alive: long enough that a busy broker is not pinged needlessly.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Seconds to wait for TCP connect plus CONNACK.
const CONNECT_TIMEOUT_S: u64 = 5;

/// Arguments of `gridlake simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Where to send the simulated fleet.
    #[command(subcommand)]
    pub(crate) target: SimulateTarget,
}

/// What `gridlake simulate` publishes to or serves.
#[derive(Debug, Subcommand)]
pub(crate) enum SimulateTarget {
    /// Publish a simulated fleet (Shelly and Tasmota plugs, OCPP chargers, JSON meters and
    /// inverters) to an MQTT broker, in the simulator topic layout.
    ///
    /// Each device takes reading k at --start + k × --interval of virtual time, which runs
    /// as fast as --rate allows: with D devices and batch 1, real time is matched by
    /// --rate D/interval. Prints progress to stderr every 5 s and a one-line summary to
    /// stdout at the end.
    Mqtt(MqttArgs),
    /// Serve simulated SunSpec devices (inverter, meter or battery) over Modbus TCP, one
    /// port per device, for the Modbus collector to poll.
    ///
    /// Device i listens on --port + i and answers reads of holding and input registers
    /// from its SunSpec register map at 40000; the values follow a PV day and a house
    /// load on the wall clock. A request for another unit id gets exception 0x0B (gateway
    /// target device failed to respond) over Modbus TCP and no answer with RTU framing, as
    /// gateways and serial devices behave. Prints one ready line to stdout and serves until
    /// SIGINT or SIGTERM; --print-config prints the `[modbus]` section that polls the
    /// devices.
    Modbus(crate::simulate_modbus::ModbusArgs),
}

/// Flags of `gridlake simulate mqtt`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MqttArgs {
    /// Broker URL, mqtt://host:port (plain TCP).
    #[arg(long, value_name = "URL", default_value = "mqtt://127.0.0.1:1883")]
    pub(crate) broker: String,
    /// MQTT client id; with several connections, -<n> is appended [default: gridlake-sim-<pid>].
    #[arg(long, value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// User name for the broker.
    #[arg(long, env = "GRIDLAKE_SIM_USERNAME")]
    pub(crate) username: Option<String>,
    /// Password for the broker (the environment keeps it out of `ps`).
    #[arg(long, env = "GRIDLAKE_SIM_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Number of simulated devices (sites of 5).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) devices: usize,
    /// Messages per second over all devices; 0 publishes as fast as the broker takes them.
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Readings per message for the JSON meter and inverter formats (the device formats
    /// always carry one); those devices publish every K-th round.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// Virtual time between two readings of one device: 10s, 500ms, 1m, 1h.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub(crate) interval: Duration,
    /// Virtual time of the first reading, RFC 3339 [default: now, rounded down to the interval].
    #[arg(long, value_name = "TIME", value_parser = parse_start)]
    pub(crate) start: Option<DateTime<Utc>>,
    /// Stop after this many messages in total.
    #[arg(long, value_name = "M")]
    pub(crate) messages: Option<u64>,
    /// Stop after this many seconds of wall time (with --messages, whichever comes first).
    #[arg(long, value_name = "S")]
    pub(crate) seconds: Option<f64>,
    /// Shares of the device kinds; kinds not named get none.
    #[arg(long, default_value_t = Mix::default())]
    pub(crate) mix: Mix,
    /// Topic prefix.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub(crate) prefix: String,
    /// MQTT QoS of the publishes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) qos: u8,
    /// Parallel MQTT connections.
    #[arg(long, value_name = "C", default_value_t = 1)]
    pub(crate) connections: usize,
    /// Seed of the fleet: same seed and parameters, same payloads.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Print the `[mqtt]` configuration that subscribes to this fleet, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

/// Why `gridlake simulate` failed.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// `--broker` is not a usable URL.
    #[error("invalid --broker {url:?}: {reason}")]
    BrokerUrl {
        /// The flag's value.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Another flag is out of range.
    #[error("invalid {flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The fleet parameters do not describe a fleet.
    #[error("{0}")]
    Fleet(#[from] SimError),
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to the MQTT broker at {broker}: {source}")]
    Connect {
        /// The broker URL.
        broker: String,
        /// What rumqttc reported.
        #[source]
        source: Box<ConnectionError>,
    },
    /// A connection broke during the run.
    #[error(
        "connection {connection} to the MQTT broker at {broker} failed during the run: {source}"
    )]
    ConnectionLost {
        /// Which connection (0-based).
        connection: usize,
        /// The broker URL.
        broker: String,
        /// What rumqttc reported.
        #[source]
        source: Box<ConnectionError>,
    },
    /// The broker answered some publishes with an error reason code.
    #[error("the broker rejected {count} publishes (first: {first})")]
    Rejected {
        /// How many.
        count: u64,
        /// The first reason code.
        first: String,
    },
    /// The run stopped before the broker acknowledged everything.
    #[error("{count} publishes were not acknowledged by the broker before the run ended")]
    Unacknowledged {
        /// How many.
        count: u64,
    },
    /// A simulated Modbus device could not listen on its port.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The device's address.
        addr: std::net::SocketAddr,
        /// The OS error (in use, no permission, too many open files).
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The Ctrl-C handler could not be installed.
    #[error("cannot listen for Ctrl-C: {0}")]
    Signal(#[source] std::io::Error),
    /// Writing to stdout failed.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// `10s`, `500ms`, `1.5s`, `1m`, `2h` (a bare number is seconds), in whole milliseconds.
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s, 500ms, 1m"))?;
    let ms_per_unit = match unit.trim() {
        "ms" => 1.0,
        "" | "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    let ms = number * ms_per_unit;
    // Tolerate float noise such as 0.3 × 1000 = 300.00000000000006.
    if !(1.0..=1e12).contains(&ms.round()) || (ms - ms.round()).abs() > 1e-6 {
        return Err(format!(
            "{text:?} must be a whole number of milliseconds, at least 1ms"
        ));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2024-06-01T00:00:00Z: {e}"))?
        .with_timezone(&Utc);
    if time.timestamp_subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?} must be whole milliseconds"));
    }
    Ok(time)
}

/// `ms` in the largest unit that is exact (`1h`, `10s`, `1500ms`), as `parse_interval` reads it.
pub(crate) fn format_interval(ms: i64) -> String {
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

/// Everything a run does, resolved from the flags (defaults filled in, start fixed).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `mqtt://host:port`.
    broker: String,
    host: String,
    port: u16,
    client_id: String,
    /// Whether `client_id` was given (and so belongs in the repeat command).
    client_id_given: bool,
    username: Option<String>,
    password: Option<String>,
    fleet: FleetConfig,
    rate: f64,
    qos: QoS,
    connections: usize,
    messages: Option<u64>,
    seconds: Option<f64>,
}

impl Plan {
    /// Resolves the flags, with `now` for the default start.
    pub(crate) fn new(args: &MqttArgs, now: DateTime<Utc>) -> Result<Self, SimulateError> {
        let broker_error = |reason: &str| SimulateError::BrokerUrl {
            url: args.broker.clone(),
            reason: reason.to_string(),
        };
        let broker = BrokerUrl::parse(&args.broker).map_err(|e| broker_error(&e))?;
        if broker.tls {
            return Err(broker_error(
                "the simulator speaks plain MQTT over TCP only; use mqtt://host:port",
            ));
        }
        let (host, port) = (broker.host, broker.port);
        // Credentials in the URL, unless the flags name them.
        let username = args.username.clone().or(broker.username);
        let password = args.password.clone().or(broker.password);

        let flag = |flag: &'static str, reason: String| SimulateError::Flag { flag, reason };
        if !(args.rate.is_finite() && args.rate >= 0.0) {
            return Err(flag("--rate", format!("{} is not a rate ≥ 0", args.rate)));
        }
        if let Some(s) = args.seconds
            && !(s.is_finite() && s > 0.0)
        {
            return Err(flag("--seconds", format!("{s} is not a positive number")));
        }
        if args.connections == 0 || args.connections > args.devices.max(1) {
            return Err(flag(
                "--connections",
                format!(
                    "{} connections for {} devices; use 1 to --devices",
                    args.connections, args.devices
                ),
            ));
        }
        let client_id = args
            .client_id
            .clone()
            .unwrap_or_else(|| format!("gridlake-sim-{}", std::process::id()));
        if client_id.is_empty() || client_id.starts_with(' ') {
            return Err(flag(
                "--client-id",
                format!("{client_id:?} is empty or starts with a space"),
            ));
        }

        let interval_ms = i64::try_from(args.interval.as_millis()).unwrap_or(i64::MAX);
        let start_ms = match args.start {
            Some(start) => start.timestamp_millis(),
            None => now.timestamp_millis().div_euclid(interval_ms) * interval_ms,
        };
        let fleet = FleetConfig {
            devices: args.devices,
            mix: args.mix,
            interval_ms,
            start_ms,
            batch: args.batch,
            prefix: args.prefix.clone(),
            seed: args.seed,
        };
        // Check the fleet now, so a bad mix or interval fails before connecting.
        Fleet::new(fleet.clone())?;
        Ok(Self {
            broker: format!("mqtt://{host}:{port}"),
            host,
            port,
            client_id,
            client_id_given: args.client_id.is_some(),
            username,
            password,
            fleet,
            rate: args.rate,
            qos: if args.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            connections: args.connections,
            messages: args.messages,
            seconds: args.seconds,
        })
    }

    /// The command that repeats a run that published `issued` messages: this plan's,
    /// with `--messages` in place of `--seconds` (and Ctrl-C) as the stop condition.
    pub(crate) fn repeat_command(&self, issued: u64) -> String {
        Self {
            messages: Some(issued),
            seconds: None,
            ..self.clone()
        }
        .command_line()
    }

    /// The command that runs this plan again (same payloads; the password is left out).
    pub(crate) fn command_line(&self) -> String {
        let f = &self.fleet;
        let start = DateTime::from_timestamp_millis(f.start_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut line = format!("gridlake simulate mqtt --broker {}", self.broker);
        if self.client_id_given {
            let _ = write!(line, " --client-id {}", self.client_id);
        }
        if let Some(user) = &self.username {
            let _ = write!(line, " --username {user}");
        }
        let _ = write!(
            line,
            " --devices {} --rate {} --batch {} --interval {} --start {start} --mix {} --prefix {} \
             --qos {} --connections {} --seed {}",
            f.devices,
            self.rate,
            f.batch,
            format_interval(f.interval_ms),
            f.mix,
            f.prefix,
            self.qos as u8,
            self.connections,
            f.seed,
        );
        if let Some(m) = self.messages {
            let _ = write!(line, " --messages {m}");
        }
        if let Some(s) = self.seconds {
            let _ = write!(line, " --seconds {s}");
        }
        line
    }

    fn client_id(&self, connection: usize) -> String {
        if self.connections == 1 {
            self.client_id.clone()
        } else {
            format!("{}-{connection}", self.client_id)
        }
    }
}

/// Counts of one connection, shared with the reporter.
#[derive(Debug, Default)]
struct Tally {
    /// Publishes written to the socket.
    published: AtomicU64,
    /// Publishes the broker acknowledged (QoS 1) or that were written (QoS 0).
    confirmed: AtomicU64,
    /// Readings in the confirmed publishes.
    readings: AtomicU64,
    /// Publishes the broker answered with an error reason code.
    rejected: AtomicU64,
    /// The first error reason code.
    first_rejection: Mutex<Option<String>>,
}

/// Totals over all connections at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    published: u64,
    confirmed: u64,
    readings: u64,
    rejected: u64,
}

impl Totals {
    fn of(tallies: &[Arc<Tally>]) -> Self {
        let mut t = Totals::default();
        for tally in tallies {
            t.published += tally.published.load(Ordering::Relaxed);
            t.confirmed += tally.confirmed.load(Ordering::Relaxed);
            t.readings += tally.readings.load(Ordering::Relaxed);
            t.rejected += tally.rejected.load(Ordering::Relaxed);
        }
        t
    }
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Summary {
    totals: Totals,
    /// Publishes handed to the MQTT client.
    issued: u64,
    elapsed: Duration,
    first_rejection: Option<String>,
    /// The first connection that failed during the run.
    failure: Option<(usize, ConnectionError)>,
    broker: String,
}

impl Summary {
    fn unconfirmed(&self) -> u64 {
        self.issued
            .saturating_sub(self.totals.confirmed + self.totals.rejected)
    }

    fn per_second(&self, n: u64) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { n as f64 / s } else { 0.0 }
    }

    /// The machine-readable line for stdout.
    pub(crate) fn line(&self) -> String {
        let t = &self.totals;
        format!(
            "simulate: messages={} readings={} seconds={:.3} messages_per_second={:.1} \
             readings_per_second={:.1} published={} rejected={} unacknowledged={}",
            t.confirmed,
            t.readings,
            self.elapsed.as_secs_f64(),
            self.per_second(t.confirmed),
            self.per_second(t.readings),
            t.published,
            t.rejected,
            self.unconfirmed(),
        )
    }

    /// The run's outcome: an error when a connection failed or messages were lost.
    pub(crate) fn into_result(self) -> Result<(), SimulateError> {
        if let Some((connection, source)) = self.failure {
            return Err(SimulateError::ConnectionLost {
                connection,
                broker: self.broker,
                source: Box::new(source),
            });
        }
        if self.totals.rejected > 0 {
            return Err(SimulateError::Rejected {
                count: self.totals.rejected,
                first: self.first_rejection.unwrap_or_default(),
            });
        }
        match self.unconfirmed() {
            0 => Ok(()),
            count => Err(SimulateError::Unacknowledged { count }),
        }
    }
}

/// Runs `gridlake simulate`.
pub(crate) fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    let args = match args.target {
        SimulateTarget::Mqtt(args) => args,
        SimulateTarget::Modbus(args) => return crate::simulate_modbus::run(&args),
    };
    let plan = Plan::new(&args, Utc::now())?;
    if args.print_config {
        let text = devices::sim::mqtt_config_toml(&plan.fleet.prefix, &plan.broker);
        return write_stdout(&text);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gridlake-sim")
        .build()
        .map_err(SimulateError::Runtime)?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (abort_tx, abort_rx) = watch::channel(false);
        // Fails early (before connecting) if signals are unavailable.
        let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(SimulateError::Signal)?;
        tokio::spawn(async move {
            interrupts.recv().await;
            eprintln!(
                "simulate: stopping; waiting up to {} s for acknowledgements (Ctrl-C again to quit now)",
                DRAIN_TIMEOUT.as_secs()
            );
            let _ = stop_tx.send(true);
            interrupts.recv().await;
            let _ = abort_tx.send(true);
        });
        print_header(&plan);
        let summary = simulate(&plan, stop_rx, abort_rx, Some(REPORT_EVERY)).await?;
        report_final(&plan, &summary);
        write_stdout(&(summary.line() + "\n"))?;
        summary.into_result()
    })
}

/// Writes `text` to stdout and flushes it (a ready line must not wait in a buffer).
pub(crate) fn write_stdout(text: &str) -> Result<(), SimulateError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(SimulateError::Stdout)
}

fn report_final(plan: &Plan, summary: &Summary) {
    let t = &summary.totals;
    eprintln!(
        "simulate: done after {:.1} s: {} messages published, {} acknowledged{}, {} readings; \
         {:.1} messages/s, {:.1} readings/s",
        summary.elapsed.as_secs_f64(),
        t.published,
        t.confirmed,
        if plan.qos == QoS::AtMostOnce {
            " (QoS 0: written to the socket)"
        } else {
            ""
        },
        t.readings,
        summary.per_second(t.confirmed),
        summary.per_second(t.readings),
    );
    eprintln!(
        "simulate: repeat with: {}",
        plan.repeat_command(summary.issued)
    );
}

/// What the run will do, on stderr.
fn print_header(plan: &Plan) {
    let counts = plan.fleet.mix.counts(plan.fleet.devices);
    let kinds: Vec<String> = SimKind::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    eprintln!(
        "simulate: {} devices ({}) → {} as {} over {} connection(s), QoS {}, {}",
        plan.fleet.devices,
        kinds.join(", "),
        plan.broker,
        plan.client_id,
        plan.connections,
        plan.qos as u8,
        if plan.rate > 0.0 {
            format!("{} messages/s", plan.rate)
        } else {
            "as fast as the broker takes them".to_string()
        },
    );
    eprintln!("simulate: parameters: {}", plan.command_line());
}

/// Connects, publishes until a stop condition (messages, seconds, `stop`), waits for the
/// acknowledgements (until [`DRAIN_TIMEOUT`] or `abort`) and disconnects. With
/// `progress`, prints the totals to stderr at that interval.
///
/// Errors are for failures before publishing (bad fleet, broker unreachable); a
/// connection that fails later is reported in [`Summary::failure`], with the counts.
pub(crate) async fn simulate(
    plan: &Plan,
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    progress: Option<Duration>,
) -> Result<Summary, SimulateError> {
    let fleet = Fleet::new(plan.fleet.clone())?;
    let schedule = Arc::new(fleet.schedule());

    // Connect everything first: an unreachable broker fails the run before it starts.
    let mut connections = Vec::with_capacity(plan.connections);
    for c in 0..plan.connections {
        connections.push(connect(plan, c).await?);
    }

    // One stop signal for the publishers: the caller's, or a failed connection.
    let (halt_tx, halt_rx) = watch::channel(false);
    let halt_tx = Arc::new(halt_tx);
    let forward = {
        let halt_tx = halt_tx.clone();
        let mut stop = stop;
        tokio::spawn(async move {
            // An error means the caller dropped its sender: nothing will stop us from there.
            if stop.wait_for(|&s| s).await.is_ok() {
                let _ = halt_tx.send(true);
            }
        })
    };

    let mut per_connection: Vec<Vec<DeviceSim>> = vec![Vec::new(); plan.connections];
    for device in fleet.into_devices() {
        per_connection[device.index() % plan.connections].push(device);
    }
    let started = Instant::now();
    let deadline = plan.seconds.map(|s| started + Duration::from_secs_f64(s));
    let mut tallies = Vec::with_capacity(plan.connections);
    let mut drivers: Vec<JoinHandle<Result<(), ConnectionError>>> = Vec::new();
    let mut publishers: Vec<JoinHandle<u64>> = Vec::new();
    for ((client, eventloop), devices) in connections.into_iter().zip(per_connection) {
        let tally = Arc::new(Tally::default());
        tallies.push(tally.clone());
        let (readings_tx, readings_rx) = mpsc::unbounded_channel();
        let (settled_tx, settled_rx) = watch::channel(0u64);
        let driver = {
            let halt_tx = halt_tx.clone();
            let qos = plan.qos;
            tokio::spawn(async move {
                let result = drive(eventloop, qos, readings_rx, tally, settled_tx).await;
                if result.is_err() {
                    let _ = halt_tx.send(true);
                }
                result
            })
        };
        drivers.push(driver);
        let publisher = Publisher {
            devices,
            schedule: schedule.clone(),
            client,
            qos: plan.qos,
            readings_tx,
            settled: settled_rx,
            started,
            rate: plan.rate,
            limit: plan.messages,
            deadline,
            halt: halt_rx.clone(),
            abort: abort.clone(),
        };
        publishers.push(tokio::spawn(publisher.run()));
    }

    let reporter = progress.map(|every| {
        let tallies = tallies.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(started + every, every);
            let mut last = Totals::default();
            loop {
                ticks.tick().await;
                let now = Totals::of(&tallies);
                let secs = started.elapsed().as_secs_f64();
                let window = every.as_secs_f64();
                eprintln!(
                    "simulate: {secs:.0} s: published {} acknowledged {} readings {} \
                     ({:.0} messages/s, {:.0} readings/s over the last {window:.0} s; {:.0} messages/s overall)",
                    now.published,
                    now.confirmed,
                    now.readings,
                    (now.confirmed - last.confirmed) as f64 / window,
                    (now.readings - last.readings) as f64 / window,
                    now.confirmed as f64 / secs,
                );
                last = now;
            }
        })
    });

    let mut issued = 0;
    for publisher in publishers {
        // A publisher panicking is a bug; count what the others did.
        issued += publisher.await.unwrap_or(0);
    }
    let mut failure = None;
    for (c, driver) in drivers.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(2), driver).await {
            Ok(Ok(Err(e))) if failure.is_none() => failure = Some((c, e)),
            Ok(_) => {}
            // The broker did not take the DISCONNECT (in flight window full): stop polling.
            Err(_) => {}
        }
    }
    let elapsed = started.elapsed();
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    forward.abort();

    let first_rejection = tallies
        .iter()
        .find_map(|t| t.first_rejection.lock().ok().and_then(|r| r.clone()));
    Ok(Summary {
        totals: Totals::of(&tallies),
        issued,
        elapsed,
        first_rejection,
        failure,
        broker: plan.broker.clone(),
    })
}

/// Opens connection `c` and waits for the broker's CONNACK.
async fn connect(plan: &Plan, c: usize) -> Result<(AsyncClient, EventLoop), SimulateError> {
    let mut options = MqttOptions::new(plan.client_id(c), plan.host.clone(), plan.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_connection_timeout(CONNECT_TIMEOUT_S)
        .set_outgoing_inflight_upper_limit(INFLIGHT);
    if let Some(user) = &plan.username {
        options.set_credentials(user.clone(), plan.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok((client, eventloop)),
            Ok(_) => {}
            Err(e) => {
                return Err(SimulateError::Connect {
                    broker: plan.broker.clone(),
                    source: Box::new(e),
                });
            }
        }
    }
}

/// Polls one connection's event loop until it disconnects or fails, matching PUBACKs to
/// publishes to count messages and readings.
///
/// rumqttc reports packet ids, not payloads, so the publisher sends each message's reading
/// count down `readings` just before handing the message to the client. The client's
/// request channel is FIFO, so the n-th `Outgoing::Publish` (or `AwaitAck`, when the packet
/// id is still in flight and the publish waits) is the n-th count.
async fn drive(
    mut eventloop: EventLoop,
    qos: QoS,
    mut readings: mpsc::UnboundedReceiver<u32>,
    tally: Arc<Tally>,
    settled: watch::Sender<u64>,
) -> Result<(), ConnectionError> {
    let mut in_flight: HashMap<u16, u32> = HashMap::new();
    // A publish whose packet id collided with an unacknowledged one: sent after that ack.
    let mut collided: Option<(u16, u32)> = None;
    let mut settled_count = 0u64;
    let confirm = |n: u32| {
        tally.confirmed.fetch_add(1, Ordering::Relaxed);
        tally.readings.fetch_add(u64::from(n), Ordering::Relaxed);
    };
    loop {
        match eventloop.poll().await? {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                tally.published.fetch_add(1, Ordering::Relaxed);
                let n = match collided {
                    Some((id, n)) if id == pkid => {
                        collided = None;
                        n
                    }
                    _ => readings.try_recv().unwrap_or(0),
                };
                if qos == QoS::AtMostOnce {
                    confirm(n);
                    settled_count += 1;
                    settled.send_replace(settled_count);
                } else {
                    in_flight.insert(pkid, n);
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                collided = Some((pkid, readings.try_recv().unwrap_or(0)));
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let Some(n) = in_flight.remove(&ack.pkid) else {
                    continue;
                };
                match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => confirm(n),
                    reason => {
                        tally.rejected.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = tally.first_rejection.lock() {
                            first.get_or_insert_with(|| format!("{reason:?}"));
                        }
                    }
                }
                settled_count += 1;
                settled.send_replace(settled_count);
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// Publishes one connection's devices in schedule order.
#[derive(Debug)]
struct Publisher {
    devices: Vec<DeviceSim>,
    schedule: Arc<Schedule>,
    client: AsyncClient,
    qos: QoS,
    readings_tx: mpsc::UnboundedSender<u32>,
    /// Publishes the event loop has settled (acknowledged, rejected, or QoS 0 written).
    settled: watch::Receiver<u64>,
    started: Instant,
    /// Messages per second over all connections; 0 = unpaced.
    rate: f64,
    limit: Option<u64>,
    deadline: Option<Instant>,
    halt: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
}

impl Publisher {
    /// Publishes, drains and disconnects; returns how many publishes it handed over.
    async fn run(mut self) -> u64 {
        let issued = self.publish().await;
        // Drain: wait for the broker to settle what is in flight. Ends early when the
        // event loop fails (the watch closes), on a second Ctrl-C, or after the timeout.
        let mut settled = self.settled.clone();
        let mut abort = self.abort.clone();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            tokio::select! {
                _ = settled.wait_for(|&n| n >= issued) => {}
                _ = abort.wait_for(|&a| a) => {}
            }
        })
        .await;
        let _ = self.client.disconnect().await;
        issued
    }

    async fn publish(&mut self) -> u64 {
        let mut issued = 0;
        if self.devices.is_empty() {
            return 0;
        }
        for round in 0u64.. {
            for i in 0..self.devices.len() {
                let device = &self.devices[i];
                let Some(n) = self.schedule.message_number(round, device.index()) else {
                    continue;
                };
                if self.limit.is_some_and(|m| n >= m) || *self.halt.borrow() {
                    return issued;
                }
                if self.rate > 0.0 {
                    // Message n of the whole fleet is due n / rate seconds after the start.
                    let due = self.started + Duration::from_secs_f64(n as f64 / self.rate);
                    let wake = self.deadline.map_or(due, |d| due.min(d));
                    if wake > Instant::now() {
                        tokio::select! {
                            _ = tokio::time::sleep_until(wake) => {}
                            _ = self.halt.wait_for(|&h| h) => return issued,
                        }
                    }
                }
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    return issued;
                }
                let message = self.devices[i].next_message();
                // Before the publish: the event loop may take it the moment it is queued.
                let _ = self.readings_tx.send(message.readings);
                tokio::select! {
                    result = self.client.publish(message.topic, self.qos, false, message.payload) => {
                        if result.is_err() {
                            // The event loop is gone; its error ends the run.
                            return issued;
                        }
                    }
                    // A stalled broker must not keep Ctrl-C from working. The count sent above
                    // is then the last one and never read.
                    _ = self.halt.wait_for(|&h| h) => return issued,
                }
                issued += 1;
            }
        }
        issued
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command as CliCommand};

    fn args(extra: &[&str]) -> MqttArgs {
        let mut argv = vec!["gridlake", "simulate", "mqtt"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Some(CliCommand::Simulate(SimulateArgs {
            target: SimulateTarget::Mqtt(args),
        })) = cli.command
        else {
            panic!("expected simulate mqtt");
        };
        args
    }

    fn plan(extra: &[&str]) -> Plan {
        Plan::new(&args(extra), Utc::now()).expect("valid plan")
    }

    /// A mosquitto on a free local port, killed on drop.
    struct Broker {
        child: Child,
        port: u16,
    }

    impl Broker {
        fn start() -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let child = Command::new("/usr/sbin/mosquitto")
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("/usr/sbin/mosquitto must be installed (apt-get install mosquitto)");
            let broker = Broker { child, port };
            let ready = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            assert!(ready, "mosquitto did not listen on port {port}");
            broker
        }

        fn url(&self) -> String {
            format!("mqtt://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Subscribes to `filter` and counts messages until `expected` arrived or 10 s passed.
    async fn subscriber(
        port: u16,
        filter: &str,
        expected: usize,
    ) -> JoinHandle<Vec<(String, Vec<u8>)>> {
        let mut options = MqttOptions::new(format!("sim-test-sub-{port}"), "127.0.0.1", port);
        options.set_max_packet_size(Some(1 << 20));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        // Wait for the SUBACK so no message is published before the subscription exists.
        loop {
            match eventloop.poll().await.expect("subscriber connects") {
                Event::Incoming(Packet::SubAck(_)) => break,
                _ => continue,
            }
        }
        tokio::spawn(async move {
            let _client = client;
            let mut received = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while received.len() < expected {
                    if let Ok(Event::Incoming(Packet::Publish(p))) = eventloop.poll().await {
                        received.push((
                            String::from_utf8_lossy(&p.topic).into_owned(),
                            p.payload.to_vec(),
                        ));
                    }
                }
            })
            .await;
            received
        })
    }

    fn no_stop() -> (watch::Sender<bool>, watch::Receiver<bool>) {
        watch::channel(false)
    }

    #[test]
    fn simulate_flags_resolve_and_repeat() {
        let p = plan(&[
            "--broker",
            "mqtt://user:secret@broker.example:1884",
            "--devices",
            "20",
            "--interval",
            "1m",
            "--start",
            "2024-06-01T10:00:00Z",
            "--mix",
            "meter=1,tasmota=1",
            "--qos",
            "0",
            "--messages",
            "500",
        ]);
        assert_eq!((p.host.as_str(), p.port), ("broker.example", 1884));
        assert_eq!(p.username.as_deref(), Some("user"));
        assert_eq!(p.password.as_deref(), Some("secret"));
        assert_eq!(p.fleet.interval_ms, 60_000);
        assert_eq!(p.fleet.start_ms, 1_717_236_000_000);
        let line = p.command_line();
        assert_eq!(
            line,
            "gridlake simulate mqtt --broker mqtt://broker.example:1884 --username user \
             --devices 20 --rate 100 --batch 1 --interval 1m --start 2024-06-01T10:00:00Z \
             --mix tasmota=1,meter=1 --prefix gridlake-sim --qos 0 --connections 1 --seed 42 \
             --messages 500"
        );
        assert!(!line.contains("secret"));
        // The repeat command resolves to the same plan.
        let argv: Vec<&str> = line.split(' ').skip(3).collect();
        let again = plan(&argv);
        assert_eq!(again.fleet, p.fleet);
        assert_eq!(again.command_line(), line);
        let p = plan(&["--seconds", "5", "--start", "2024-06-01T10:00:00Z"]);
        assert!(p.command_line().ends_with("--seed 42 --seconds 5"));
        assert!(
            p.repeat_command(1234)
                .ends_with("--seed 42 --messages 1234")
        );

        // The default start is now, rounded down to the interval.
        let now = DateTime::parse_from_rfc3339("2024-06-01T10:00:07.5Z")
            .unwrap()
            .to_utc();
        let p = Plan::new(&args(&[]), now).unwrap();
        assert_eq!(p.fleet.start_ms, 1_717_236_000_000);
        assert_eq!(p.broker, "mqtt://127.0.0.1:1883");
    }

    #[test]
    fn simulate_bad_flags_are_refused_with_a_reason() {
        for (argv, expected) in [
            (&["--broker", "mqtts://h:8883"][..], "plain MQTT"),
            (&["--broker", "mqtt://h:1883/topic"][..], "no path"),
            (&["--broker", "localhost:1883"][..], "unknown scheme"),
            (&["--connections", "0"][..], "--connections"),
            (
                &["--devices", "2", "--connections", "3"][..],
                "--connections",
            ),
            (&["--rate=-1"][..], "--rate"),
            (&["--seconds", "0"][..], "--seconds"),
            (&["--interval", "500ms"][..], "whole seconds"),
            (&["--devices", "0"][..], "at least one device"),
            (&["--prefix", "a/#"][..], "prefix"),
        ] {
            let err = Plan::new(&args(argv), Utc::now()).unwrap_err().to_string();
            assert!(err.contains(expected), "{argv:?}: {err}");
        }
        for argv in [
            &["--interval", "1.0005s"][..],
            &["--interval", "10x"][..],
            &["--qos", "2"][..],
            &["--batch", "0"][..],
            &["--mix", "heatpump=3"][..],
            &["--start", "yesterday"][..],
        ] {
            let mut full = vec!["gridlake", "simulate", "mqtt"];
            full.extend_from_slice(argv);
            assert!(Cli::try_parse_from(full).is_err(), "{argv:?} parsed");
        }
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_interval("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("0.3s"), Ok(Duration::from_millis(300)));
        assert!(parse_interval("0s").is_err());
    }

    #[test]
    fn simulate_print_config_is_toml_matching_the_topics() {
        let p = plan(&["--prefix", "lab/sim", "--devices", "10"]);
        let text = devices::sim::mqtt_config_toml(&p.fleet.prefix, &p.broker);
        let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        // The collector takes it as it is: its own types (unknown keys refused) and checks.
        let collector: ingest::mqtt::MqttConfig = config["mqtt"]
            .clone()
            .try_into()
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        collector.check().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(collector.enabled);
        assert_eq!(collector.subscriptions.len(), 5);
        let subscriptions = config["mqtt"]["subscriptions"]
            .as_array()
            .expect("subscriptions");
        assert_eq!(subscriptions.len(), 5);
        // Every device's topic matches exactly one filter, and that filter's template.
        let matches = |pattern: &str, topic: &str| {
            let (pattern, topic): (Vec<&str>, Vec<&str>) =
                (pattern.split('/').collect(), topic.split('/').collect());
            let mut tags = Vec::new();
            for (i, level) in pattern.iter().enumerate() {
                match *level {
                    "#" => return Some(tags),
                    "+" if i < topic.len() => {}
                    capture if capture.starts_with('{') && i < topic.len() => tags.push((
                        capture.trim_matches(['{', '}']).to_string(),
                        topic[i].to_string(),
                    )),
                    literal if topic.get(i) == Some(&literal) => {}
                    _ => return None,
                }
            }
            (pattern.len() == topic.len()).then_some(tags)
        };
        let fleet = Fleet::new(p.fleet.clone()).unwrap();
        for device in fleet.devices() {
            let hits: Vec<&toml::Value> = subscriptions
                .iter()
                .filter(|s| matches(s["filter"].as_str().unwrap(), device.topic()).is_some())
                .collect();
            assert_eq!(hits.len(), 1, "{}", device.topic());
            let tags = matches(hits[0]["topic_template"].as_str().unwrap(), device.topic())
                .unwrap_or_else(|| panic!("template does not match {}", device.topic()));
            assert_eq!(
                tags,
                [
                    ("site_id".to_string(), device.site_id().to_string()),
                    ("device_id".to_string(), device.id().to_string())
                ]
            );
            // The JSON mappings in the TOML are the ones the decoder contract test uses.
            if let Some(mapping) = devices::sim::json_mapping(device.kind()) {
                let in_toml: serde_json::Value =
                    serde_json::to_value(hits[0]["json"].clone()).expect("json table");
                assert_eq!(in_toml, mapping, "{}", device.kind());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulate_publishes_exactly_the_requested_messages() {
        let broker = Broker::start();
        // 12 devices, 3 connections, batch 2: 300 messages, all acknowledged and received.
        let p = plan(&[
            "--broker",
            &broker.url(),
            "--devices",
            "12",
            "--connections",
            "3",
            "--batch",
            "2",
            "--rate",
            "0",
            "--messages",
            "300",
            "--start",
            "2024-06-01T00:00:00Z",
        ]);
        let received = subscriber(broker.port, "gridlake-sim/#", 300).await;
        let (_stop_tx, stop) = no_stop();
        let (_abort_tx, abort) = no_stop();
        let summary = simulate(&p, stop, abort, None).await.expect("runs");
        let received = received.await.expect("subscriber");
        assert_eq!(received.len(), 300, "{}", summary.line());
        assert_eq!(summary.totals.confirmed, 300, "{}", summary.line());
        assert_eq!(summary.totals.published, 300);
        assert_eq!(summary.issued, 300);
        // The same 300 messages, in the same order per device, as the fleet produces.
        let fleet = Fleet::new(p.fleet.clone()).unwrap();
        let schedule = fleet.schedule();
        let mut devices = fleet.into_devices();
        let mut expected = Vec::new();
        let mut readings = 0;
        'rounds: for round in 0.. {
            for device in devices.iter_mut() {
                if let Some(n) = schedule.message_number(round, device.index()) {
                    if n >= 300 {
                        break 'rounds;
                    }
                    let msg = device.next_message();
                    readings += u64::from(msg.readings);
                    expected.push((msg.topic, msg.payload));
                }
            }
        }
        assert_eq!(summary.totals.readings, readings);
        let per_topic = |msgs: &[(String, Vec<u8>)]| {
            let mut map: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
            for (topic, payload) in msgs {
                map.entry(topic.clone()).or_default().push(payload.clone());
            }
            map
        };
        assert_eq!(per_topic(&received), per_topic(&expected));
        summary.into_result().expect("nothing lost");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simulate_stops_after_seconds_and_on_request() {
        let broker = Broker::start();
        let p = plan(&["--broker", &broker.url(), "--rate", "200", "--seconds", "1"]);
        let (_stop_tx, stop) = no_stop();
        let (_abort_tx, abort) = no_stop();
        let summary = simulate(&p, stop, abort, None).await.expect("runs");
        // 200/s for 1 s, paced from the start: about 200, never far more.
        let n = summary.totals.confirmed;
        assert!((150..=202).contains(&n), "{}", summary.line());
        assert!(
            summary.elapsed < Duration::from_secs(3),
            "{}",
            summary.line()
        );
        summary.into_result().expect("nothing lost");

        // Stop from outside (Ctrl-C), unpaced QoS 0.
        let p = plan(&["--broker", &broker.url(), "--rate", "0", "--qos", "0"]);
        let (stop_tx, stop) = watch::channel(false);
        let (_abort_tx, abort) = no_stop();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stop_tx.send(true);
        });
        let summary = simulate(&p, stop, abort, None).await.expect("runs");
        assert!(summary.totals.confirmed > 100, "{}", summary.line());
        assert_eq!(summary.totals.confirmed, summary.totals.published);
        summary.into_result().expect("nothing lost");
    }

    #[tokio::test]
    async fn simulate_unreachable_broker_is_a_clear_error() {
        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = plan(&[
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--messages",
            "1",
        ]);
        let (_stop_tx, stop) = no_stop();
        let (_abort_tx, abort) = no_stop();
        let err = simulate(&p, stop, abort, None).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SimulateError::Connect { .. }), "{text}");
        assert!(
            text.contains(&format!("mqtt://127.0.0.1:{port}"))
                && text.to_lowercase().contains("refused"),
            "{text}"
        );
    }
}

//! `gridlake simulate modbus`: serves simulated SunSpec devices over Modbus TCP (or RTU
//! framing over TCP), for the Modbus collector's end-to-end tests, capacity measurements
//! and demos.
//!
//! ```text
//! device i ─► TcpListener on host:port+i ─► tokio-modbus server (a task per connection)
//!   request ─► unit id check ─► SimDevice::image (recomputed at most every 100 ms)
//!           ─► the registers asked for, or a Modbus exception
//! reporter task: requests served, to stderr every 10 s
//! ```
//!
//! Every device is a task-based listener on its own port, as thousands of real devices
//! each have their own IP address: one process serves a whole fleet for the collector to
//! poll. Holding registers (function 3) and input registers (function 4) both read the
//! same SunSpec image from address 40000 (SunSpec devices answer either; the specification
//! names holding registers). Anything outside the image is exception 2 (illegal data
//! address), as a real device answers a read of registers it does not have.
//!
//! Unit ids: a request for the configured unit id is answered. With TCP framing a request
//! for another unit id gets exception 0x0B (gateway target device failed to respond),
//! which is what Modbus TCP gateways and multi-device loggers answer for a unit they do
//! not reach (Modbus Messaging on TCP/IP Implementation Guide V1.0b, "gateway" exception
//! codes); with RTU framing it gets no answer at all, as a serial device stays silent for
//! frames addressed to another device on its bus, so the client sees a timeout.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use devices::sunspec::sim::{SimDevice, SimModel};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::simulate::{SimulateError, format_interval, parse_interval, write_stdout};

/// Where the image starts: the standard SunSpec base address, the first one a client
/// searches.
const BASE_ADDRESS: u16 = devices::sunspec::BASE_ADDRESSES[0];
/// How long one image serves requests before it is recomputed: values move with the
/// wall clock, and a collector reading a model in several requests within this time
/// sees one consistent set of values (as a device's snapshot registers give).
const IMAGE_TTL_MS: i64 = 100;
/// The most registers one read may ask for (Modbus Application Protocol V1.1b3, 6.3).
const MAX_READ: u16 = 125;
/// How often the request counts go to stderr.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Pause before a listener whose accept failed (out of file descriptors) accepts again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Flags of `gridlake simulate modbus`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ModbusArgs {
    /// TCP port of the first device; device i listens on PORT + i. Port 0 (with
    /// --count 1) picks a free port, named in the ready line.
    #[arg(long, value_name = "P")]
    pub(crate) port: u16,
    /// What every device simulates: inverter (SunSpec models 1, 103), meter (1, 203) or
    /// battery (1, 124, 802).
    #[arg(long, value_parser = parse_model)]
    pub(crate) model: SimModel,
    /// Number of devices.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) count: u16,
    /// Address to listen on; 0.0.0.0 serves other machines.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub(crate) host: IpAddr,
    /// Modbus unit id every device answers to.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub(crate) unit_id: u8,
    /// Modbus framing on the TCP connections.
    #[arg(long, value_enum, default_value_t = Framing::Tcp)]
    pub(crate) framing: Framing,
    /// Seed of the simulated values: same seed, model and index, same device.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Poll interval written by --print-config: 1s, 500ms, 10s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    pub(crate) interval: Duration,
    /// Print the `[modbus]` configuration that polls these devices, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

/// How Modbus frames travel over the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Framing {
    /// Modbus TCP: MBAP header, no checksum.
    #[value(name = "tcp")]
    Tcp,
    /// RTU frames (unit id, PDU, CRC) over TCP, as serial-to-Ethernet converters pass them.
    #[value(name = "rtu_over_tcp")]
    RtuOverTcp,
}

impl Framing {
    /// The name `[modbus.devices] framing` takes.
    fn config_name(self) -> &'static str {
        match self {
            Framing::Tcp => "tcp",
            Framing::RtuOverTcp => "rtu_over_tcp",
        }
    }
}

fn parse_model(text: &str) -> Result<SimModel, String> {
    SimModel::from_str(text).map_err(|e| e.to_string())
}

/// The flags, checked: the ports of all devices fit.
#[derive(Debug, Clone)]
struct Plan {
    args: ModbusArgs,
}

impl Plan {
    fn new(args: &ModbusArgs) -> Result<Self, SimulateError> {
        let flag = |flag: &'static str, reason: String| SimulateError::Flag { flag, reason };
        if args.port == 0 && args.count > 1 {
            return Err(flag(
                "--port",
                format!(
                    "port 0 picks one free port, but --count {} devices need consecutive \
                     ports; give the first one",
                    args.count
                ),
            ));
        }
        if u32::from(args.port) + u32::from(args.count) - 1 > u32::from(u16::MAX) {
            return Err(flag(
                "--count",
                format!(
                    "{} devices from port {} go past port 65535",
                    args.count, args.port
                ),
            ));
        }
        if args.print_config && args.port == 0 {
            return Err(flag(
                "--port",
                "--print-config needs the real port; port 0 is only known once listening"
                    .to_string(),
            ));
        }
        Ok(Self { args: args.clone() })
    }

    /// The `[modbus]` section that polls every device of this plan.
    fn config_toml(&self) -> String {
        let a = &self.args;
        let model = a.model.name();
        // A collector cannot connect to "any address"; it reaches a local simulator on
        // the loopback address of the same family.
        let host = match a.host {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let mut out = format!(
            "# Polls `gridlake simulate modbus --model {model} --count {count} --port {port} \
             --unit-id {unit} --framing {framing} --seed {seed}`.\n\
             [modbus]\n\
             enabled = true\n\
             interval = \"{interval}\"\n",
            count = a.count,
            port = a.port,
            unit = a.unit_id,
            framing = a.framing.config_name(),
            seed = a.seed,
            interval = format_interval(i64::try_from(a.interval.as_millis()).unwrap_or(i64::MAX)),
        );
        for i in 0..a.count {
            let _ = write!(
                out,
                "\n[[modbus.devices]]\n\
                 device_id = \"sim-{model}-{i}\"\n\
                 site_id = \"sim\"\n\
                 host = \"{host}\"\n\
                 port = {port}\n\
                 unit_id = {unit}\n\
                 framing = \"{framing}\"\n",
                port = a.port + i,
                unit = a.unit_id,
                framing = a.framing.config_name(),
            );
        }
        out
    }
}

/// Runs `gridlake simulate modbus`.
pub(crate) fn run(args: &ModbusArgs) -> Result<(), SimulateError> {
    let plan = Plan::new(args)?;
    if args.print_config {
        return write_stdout(&plan.config_toml());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gridlake-sim")
        .build()
        .map_err(SimulateError::Runtime)?;
    runtime.block_on(serve(&plan))
}

/// Counts over all devices, for the progress lines.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    exceptions: AtomicU64,
}

/// One simulated device: its values and the image they were last encoded into.
#[derive(Debug)]
struct Device {
    state: Mutex<DeviceState>,
}

#[derive(Debug)]
struct DeviceState {
    sim: SimDevice,
    image: Arc<[u16]>,
    /// Wall-clock ms of `image`.
    at_ms: i64,
}

impl Device {
    fn new(mut sim: SimDevice, now_ms: i64) -> Self {
        let image = sim.image(now_ms).into();
        Self {
            state: Mutex::new(DeviceState {
                sim,
                image,
                at_ms: now_ms,
            }),
        }
    }

    /// The image at `now_ms`, recomputed when the cached one is older than
    /// [`IMAGE_TTL_MS`].
    fn image(&self, now_ms: i64) -> Arc<[u16]> {
        // A panic while holding the lock cannot leave the state half-updated (the image
        // is replaced in one assignment), so a poisoned lock is still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now_ms - state.at_ms >= IMAGE_TTL_MS {
            state.image = state.sim.image(now_ms).into();
            state.at_ms = now_ms;
        }
        Arc::clone(&state.image)
    }
}

/// Answers the requests of one connection to one device.
#[derive(Debug, Clone)]
struct DeviceService {
    device: Arc<Device>,
    unit_id: u8,
    framing: Framing,
    counters: Arc<Counters>,
}

impl DeviceService {
    /// The answer to `request`: registers, an exception, or (RTU framing, another unit
    /// id) nothing.
    fn answer(&self, request: &SlaveRequest<'_>) -> Result<Option<Response>, ExceptionCode> {
        if request.slave != self.unit_id {
            return match self.framing {
                Framing::Tcp => Err(ExceptionCode::GatewayTargetDevice),
                Framing::RtuOverTcp => Ok(None),
            };
        }
        let (address, count, holding) = match request.request {
            Request::ReadHoldingRegisters(address, count) => (address, count, true),
            Request::ReadInputRegisters(address, count) => (address, count, false),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        if count == 0 || count > MAX_READ {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let image = self.device.image(chrono::Utc::now().timestamp_millis());
        let registers = address
            .checked_sub(BASE_ADDRESS)
            .map(usize::from)
            .and_then(|start| image.get(start..start + usize::from(count)))
            .ok_or(ExceptionCode::IllegalDataAddress)?
            .to_vec();
        Ok(Some(if holding {
            Response::ReadHoldingRegisters(registers)
        } else {
            Response::ReadInputRegisters(registers)
        }))
    }
}

impl Service for DeviceService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let answer = self.answer(&request);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if answer.is_err() {
            self.counters.exceptions.fetch_add(1, Ordering::Relaxed);
        }
        std::future::ready(answer)
    }
}

/// Binds every device's port, prints the ready line, and serves until SIGINT or SIGTERM.
async fn serve(plan: &Plan) -> Result<(), SimulateError> {
    let a = &plan.args;
    // Installed before binding, so a signal right after the ready line is not missed.
    let mut interrupts = signal(SignalKind::interrupt()).map_err(SimulateError::Signal)?;
    let mut terminates = signal(SignalKind::terminate()).map_err(SimulateError::Signal)?;

    let counters = Arc::new(Counters::default());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut devices = JoinSet::new();
    let mut ports = (0, 0);
    for i in 0..a.count {
        let addr = SocketAddr::new(a.host, if a.port == 0 { 0 } else { a.port + i });
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimulateError::Bind { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| SimulateError::Bind { addr, source })?
            .port();
        if i == 0 {
            ports.0 = port;
        }
        ports.1 = port;
        let service = DeviceService {
            device: Arc::new(Device::new(
                SimDevice::new(a.model, usize::from(i), a.seed)
                    .with_device_address(u16::from(a.unit_id)),
                now_ms,
            )),
            unit_id: a.unit_id,
            framing: a.framing,
            counters: Arc::clone(&counters),
        };
        devices.spawn(serve_device(listener, service));
    }
    let reporter = tokio::spawn(report(Arc::clone(&counters)));

    let host = SocketAddr::new(a.host, ports.0);
    write_stdout(&format!(
        "gridlake simulate modbus: {} {} devices on {host}-{}\n",
        a.count,
        a.model.name(),
        ports.1
    ))?;
    eprintln!(
        "simulate modbus: {} framing, unit id {}, seed {}, SunSpec image at {BASE_ADDRESS} \
         (holding and input registers); Ctrl-C or SIGTERM stops",
        a.framing.config_name(),
        a.unit_id,
        a.seed
    );

    tokio::select! {
        _ = interrupts.recv() => {}
        _ = terminates.recv() => {}
    }
    reporter.abort();
    devices.shutdown().await;
    eprintln!(
        "simulate modbus: stopped after {} requests ({} answered with an exception) on {} \
         connections",
        counters.requests.load(Ordering::Relaxed),
        counters.exceptions.load(Ordering::Relaxed),
        counters.connections.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Serves one device's listener until the task is aborted. A failed accept (such as
/// running out of file descriptors) is reported and retried rather than ending the
/// device: the collector under test should see a device that recovers, not one that
/// vanished because the simulator hit a limit.
async fn serve_device(listener: TcpListener, service: DeviceService) {
    let framing = service.framing;
    let counters = Arc::clone(&service.counters);
    let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
        let service = service.clone();
        let counters = Arc::clone(&counters);
        async move {
            // One small response per request: sending it at once beats batching. Not
            // fatal: an error here would end `serve` and, with it, every connection of
            // the device.
            let _ = stream.set_nodelay(true);
            counters.connections.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Some((service, stream)))
        }
    };
    // A connection that breaks (the collector went away, a garbled frame) is the
    // client's business; the device keeps listening for the next one. A failed accept
    // (out of file descriptors) ends `serve` and tokio-modbus closes the device's open
    // connections with it; the loop listens again after a pause.
    let on_process_error = |_: std::io::Error| {};
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    match framing {
        Framing::Tcp => {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            loop {
                if let Err(error) = server.serve(&on_connected, on_process_error).await {
                    eprintln!("simulate modbus: port {port}: accept failed: {error}; retrying");
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
        Framing::RtuOverTcp => {
            let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
            loop {
                if let Err(error) = server.serve(&on_connected, on_process_error).await {
                    eprintln!("simulate modbus: port {port}: accept failed: {error}; retrying");
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Prints the request rate to stderr every [`REPORT_EVERY`].
async fn report(counters: Arc<Counters>) {
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    ticks.tick().await;
    let mut last = 0;
    loop {
        ticks.tick().await;
        let requests = counters.requests.load(Ordering::Relaxed);
        eprintln!(
            "simulate modbus: {requests} requests ({:.1}/s over the last {} s), {} exceptions, \
             {} connections accepted",
            (requests - last) as f64 / REPORT_EVERY.as_secs_f64(),
            REPORT_EVERY.as_secs(),
            counters.exceptions.load(Ordering::Relaxed),
            counters.connections.load(Ordering::Relaxed),
        );
        last = requests;
    }
}

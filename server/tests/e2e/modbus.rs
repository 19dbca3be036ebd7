//! The Modbus collector against real Modbus servers, checked through SQL: the simulator
//! of this repository (`gridlake simulate modbus`, a separate process) and a SunSpec
//! device encoded by pysunspec2 and served by pymodbus (`sunspec_peer.py`), the second
//! implementation gridlake's decoding is compared with.
//!
//! The Python tests need python3 with pymodbus and pysunspec2 (`scripts/test.sh`
//! installs them). Without them they are skipped with a message, except when `CI=true`,
//! where missing Python packages fail the test instead of hiding it.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_modbus::prelude::{ExceptionCode, Reader, Slave, SlaveContext, Writer};

use crate::common::{
    Options, Server, float, gridlake_bin, int, is_null, parse_json_rows, python_peer_available,
    string,
};

/// How long the collector may take to deliver what a test waits for: discovery, a few
/// polls, the batch linger and a debug build on two cores.
const WAIT: Duration = Duration::from_secs(60);
/// How long a simulator or the Python peer may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What `gridlake simulate modbus` prints when it listens.
const READY_PREFIX: &str = "gridlake simulate modbus: ";

/// A running `gridlake simulate modbus` process.
#[derive(Debug)]
struct Simulator {
    child: Option<Child>,
    /// Port of the first device; device i listens on `port + i`.
    port: u16,
    count: u16,
}

impl Simulator {
    /// Starts `gridlake simulate modbus ARGS` and waits for its ready line.
    async fn start(args: &[&str]) -> Simulator {
        Self::try_start(args)
            .await
            .unwrap_or_else(|e| panic!("gridlake simulate modbus {args:?}: {e}"))
    }

    /// As [`Simulator::start`], with the failure (such as a port in use) as an error.
    async fn try_start(args: &[&str]) -> Result<Simulator, String> {
        let mut child = Command::new(gridlake_bin())
            .args(["simulate", "modbus"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
                return Err(format!(
                    "exited ({}) before its ready line: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Err(_) => return Err(format!("no ready line within {START_TIMEOUT:?}")),
        };
        // "gridlake simulate modbus: 3 meter devices on 127.0.0.1:15020-15022"
        let (count, ports) = line
            .strip_prefix(READY_PREFIX)
            .and_then(|rest| {
                let (count, rest) = rest.split_once(' ')?;
                let (_, range) = rest.rsplit_once(':')?;
                Some((count.parse::<u16>().ok()?, range.split_once('-')?))
            })
            .ok_or_else(|| format!("unexpected ready line {line:?}"))?;
        let (first, last): (u16, u16) = (
            ports.0.parse().map_err(|_| format!("port in {line:?}"))?,
            ports.1.parse().map_err(|_| format!("port in {line:?}"))?,
        );
        if first == 0 || last - first + 1 != count {
            return Err(format!("ready line {line:?} does not name {count} ports"));
        }
        // Drain stderr so the simulator never blocks on a full pipe.
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        Ok(Simulator {
            child: Some(child),
            port: first,
            count,
        })
    }

    /// Starts `count` devices of `model` on consecutive ports that are free, retrying
    /// with other ports when one is taken between the check and the bind.
    async fn start_fleet(model: &str, count: u16, extra: &[&str]) -> Simulator {
        let mut last_error = String::new();
        for _ in 0..20 {
            let port = free_port_range(count).to_string();
            let count = count.to_string();
            let mut args = vec!["--model", model, "--count", &count, "--port", &port];
            args.extend_from_slice(extra);
            match Self::try_start(&args).await {
                Ok(simulator) => return simulator,
                Err(e) => last_error = e,
            }
        }
        panic!("no free port range for {count} {model} devices: {last_error}");
    }

    /// `127.0.0.1:port` of device `i`.
    fn addr(&self, i: u16) -> SocketAddr {
        assert!(i < self.count);
        SocketAddr::from(([127, 0, 0, 1], self.port + i))
    }

    /// Sends SIGTERM and asserts a clean exit.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("simulator is running");
        let pid = Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        let status = tokio::time::timeout(START_TIMEOUT, child.wait())
            .await
            .expect("simulator did not exit after SIGTERM")
            .expect("wait for the simulator");
        assert!(
            status.success(),
            "simulator must exit 0 after SIGTERM, got {status}"
        );
    }
}

/// A first port such that `count` consecutive ports were free a moment ago. Taken below
/// Linux's ephemeral range (32768-60999), where the OS does not hand out client ports.
fn free_port_range(count: u16) -> u16 {
    let seed = u64::from(std::process::id())
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        );
    let mut candidate = 20_000 + (seed % 12_000) as u16;
    loop {
        let free = (0..count).all(|i| StdTcpListener::bind(("127.0.0.1", candidate + i)).is_ok());
        if free {
            return candidate;
        }
        candidate = 20_000 + (candidate + count - 20_000) % 12_000;
    }
}

/// The Python SunSpec peer and what it says gridlake must read.
#[derive(Debug)]
struct Peer {
    _child: Child,
    port: u16,
    /// `{"models": {"103": {"W": ...}}, "symbols": {"103": {"St": "MPPT"}}, ...}`.
    expected: Value,
}

impl Peer {
    /// Starts `sunspec_peer.py ARGS`; `None` (after printing why) when python3, pymodbus
    /// or pysunspec2 are missing outside CI.
    async fn start(args: &[&str]) -> Option<Peer> {
        // What the peer imports (pymodbus 3.16's datastore, not older 3.x).
        if !python_peer_available(
            "from pymodbus.simulator import SimData, SimDevice; import sunspec2.device",
            "pymodbus and pysunspec2 (the SunSpec peer)",
            "\"pymodbus==3.16.*\" \"pysunspec2==1.3.*\"",
        ) {
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/sunspec_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3 sunspec_peer.py");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let output = child.wait_with_output().await.expect("peer output");
                panic!(
                    "sunspec_peer.py printed no JSON line ({other:?}): {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        };
        let expected: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("sunspec_peer.py line is not JSON ({e}): {line}"));
        let port = expected["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no port in {line}"));
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        Some(Peer {
            _child: child,
            port,
            expected,
        })
    }

    /// pysunspec2's decoded value of `point` in `model` (`None` when not implemented).
    fn value(&self, model: &str, point: &str) -> Option<f64> {
        let value = &self.expected["models"][model][point];
        assert!(
            !value.is_null() || self.expected["models"][model].get(point).is_some(),
            "the peer did not report {model}.{point}: {}",
            self.expected
        );
        value.as_f64()
    }

    /// The symbol of enum `point` in `model`, e.g. "MPPT".
    fn symbol(&self, model: &str, point: &str) -> &str {
        self.expected["symbols"][model][point]
            .as_str()
            .unwrap_or_else(|| panic!("no symbol for {model}.{point}: {}", self.expected))
    }
}

/// `[modbus]` polling every `interval` with a short back-off, followed by
/// `devices` (`[[modbus.devices]]` tables).
fn modbus_config(interval: &str, devices: &str) -> String {
    format!(
        r#"
[modbus]
enabled = true
interval = "{interval}"
timeout = "3s"
retries = 1
backoff_max = "1s"
batch_linger = "10ms"
{devices}
"#
    )
}

/// One `[[modbus.devices]]` table.
fn device(device_id: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[modbus.devices]]
device_id = "{device_id}"
site_id = "e2e"
host = "{ip}"
port = {port}
{extra}
"#,
        ip = addr.ip(),
        port = addr.port()
    )
}

/// Runs `sql` until `done` accepts its rows (a missing table counts as no rows), and
/// returns them.
async fn wait_rows(
    server: &Server,
    sql: &str,
    what: &str,
    done: impl Fn(&[Map<String, Value>]) -> bool,
) -> Vec<Map<String, Value>> {
    let deadline = Instant::now() + WAIT;
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        let (status, body) = server.sql_status(sql).await;
        if status.is_success() {
            rows = parse_json_rows(&body);
            if done(&rows) {
                return rows;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: not reached within {WAIT:?}; `{sql}` returned {rows:?}; log:\n{}",
        server.log()
    );
}

/// Waits until `table` holds at least `n` rows of `device_id` (any phase) and returns
/// them in time order.
async fn wait_device_rows(
    server: &Server,
    table: &str,
    device_id: &str,
    n: usize,
) -> Vec<Map<String, Value>> {
    // Meter rows of one poll share their time; the phase keeps their order stable.
    let order = if table == "meter" {
        "time, phase"
    } else {
        "time"
    };
    let sql = format!("SELECT * FROM {table} WHERE device_id = '{device_id}' ORDER BY {order}");
    wait_rows(
        server,
        &sql,
        &format!("{n} {table} rows of {device_id}"),
        |rows| rows.len() >= n,
    )
    .await
}

/// Rows of `device_id` in `table` right now.
async fn device_count(server: &Server, table: &str, device_id: &str) -> i64 {
    let rows = server
        .sql(&format!(
            "SELECT count(*) AS n FROM {table} WHERE device_id = '{device_id}'"
        ))
        .await;
    int(&rows[0], "n")
}

/// The sum of the `/metrics` samples whose series starts with `series` (name and
/// labels, e.g. `gridlake_modbus_cycles_total{outcome="ok"`).
async fn metric_sum(server: &Server, series: &str) -> f64 {
    let (_, body) = server.get("/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until [`metric_sum`] of `series` reaches `at_least`.
async fn wait_metric(server: &Server, series: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    while metric_sum(server, series).await < at_least {
        if Instant::now() > deadline {
            let (_, body) = server.get("/metrics").await;
            let modbus: Vec<&str> = body.lines().filter(|l| l.contains("modbus")).collect();
            panic!(
                "{series} did not reach {at_least} within {WAIT:?}:\n{}",
                modbus.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the values of `column` never decrease over `rows` (time order).
fn assert_non_decreasing(rows: &[Map<String, Value>], column: &str, what: &str) {
    let values: Vec<f64> = rows.iter().map(|r| float(r, column)).collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "{what}: {column} must never decrease, got {values:?}"
    );
}

/// Asserts `actual` equals pysunspec2's `expected` (both absent, or equal to float noise).
fn assert_value(row: &Map<String, Value>, column: &str, expected: Option<f64>, what: &str) {
    match expected {
        None => assert!(
            is_null(row, column),
            "{what}: {column} is not implemented by the device and must be null, got {row:?}"
        ),
        Some(expected) => {
            let actual = float(row, column);
            assert!(
                (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                "{what}: {column} = {actual}, pysunspec2 decodes {expected}; row {row:?}"
            );
        }
    }
}

/// The Modbus registers of `model`'s block, found by walking the chain from 40000.
async fn model_ids(ctx: &mut tokio_modbus::client::Context) -> Vec<u16> {
    let marker = ctx
        .read_holding_registers(40000, 2)
        .await
        .expect("read")
        .expect("answer");
    assert_eq!(marker, [0x5375, 0x6e53], "SunS marker at 40000");
    let mut ids = Vec::new();
    let mut address = 40002u16;
    loop {
        let header = ctx
            .read_holding_registers(address, 2)
            .await
            .expect("read")
            .unwrap_or_else(|e| panic!("model header at {address}: exception {e:?}"));
        if header[0] == 0xFFFF {
            assert_eq!(header[1], 0, "the end marker's length is 0");
            return ids;
        }
        ids.push(header[0]);
        address += 2 + header[1];
    }
}

/// Registers as the ASCII text they hold (SunSpec strings: two bytes per register,
/// NUL padded).
fn text(registers: &[u16]) -> String {
    let bytes: Vec<u8> = registers.iter().flat_map(|r| r.to_be_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_simulator_answers_like_a_sunspec_device() {
    let mut inverter = Simulator::start(&["--model", "inverter", "--port", "0"]).await;
    let mut ctx = tokio_modbus::client::tcp::connect_slave(inverter.addr(0), Slave(1))
        .await
        .expect("connect to the simulator");
    assert_eq!(model_ids(&mut ctx).await, [1, 103]);

    // The common model: manufacturer and serial as strings, from 40004 (after ID and L).
    let common = ctx
        .read_holding_registers(40004, 66)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&common[0..16]), "gridlake");
    assert_eq!(text(&common[48..64]), "SIM-INVERTER-0000");
    // Input registers (function 4) serve the same image.
    let input = ctx.read_input_registers(40004, 66).await.unwrap().unwrap();
    assert_eq!(input, common);

    // Reads that touch registers the device does not have: exception 2.
    let end = 40002 + 2 + 66 + 2 + 50;
    assert_eq!(
        ctx.read_holding_registers(end, 2).await.unwrap(),
        Ok(vec![0xFFFF, 0])
    );
    for (address, count) in [(39_999, 2), (end + 1, 2), (end, 3), (0, 1)] {
        assert_eq!(
            ctx.read_holding_registers(address, count).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress),
            "read of {count} at {address}"
        );
    }
    // More than 125 registers in one read: exception 3.
    assert_eq!(
        ctx.read_holding_registers(40000, 126).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    // Writes and coils: exception 1, the image is read-only.
    assert_eq!(
        ctx.write_single_register(40000, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.read_coils(0, 8).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    // Another unit id over Modbus TCP: exception 0x0B, as a gateway answers.
    ctx.set_slave(Slave(2));
    assert_eq!(
        ctx.read_holding_registers(40000, 2).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    inverter.stop().await;

    // RTU framing over TCP, battery with unit id 7: answers unit 7, stays silent for
    // others as a device on a serial bus does.
    let mut battery = Simulator::start(&[
        "--model",
        "battery",
        "--port",
        "0",
        "--framing",
        "rtu_over_tcp",
        "--unit-id",
        "7",
    ])
    .await;
    let stream = TcpStream::connect(battery.addr(0)).await.unwrap();
    let mut ctx = tokio_modbus::client::rtu::attach_slave(stream, Slave(7));
    assert_eq!(model_ids(&mut ctx).await, [1, 124, 802]);
    // The common model's device address (DA, after 64 registers of strings) is the unit id.
    let da = ctx
        .read_holding_registers(40004 + 64, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(da, [7]);
    ctx.set_slave(Slave(8));
    let silent = tokio::time::timeout(
        Duration::from_millis(500),
        ctx.read_holding_registers(40000, 2),
    )
    .await;
    assert!(silent.is_err(), "unit 8 must get no answer, got {silent:?}");
    battery.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_simulator_print_config_is_the_modbus_section() {
    let output = std::process::Command::new(gridlake_bin())
        .args([
            "simulate",
            "modbus",
            "--model",
            "meter",
            "--count",
            "3",
            "--port",
            "15020",
            "--framing",
            "rtu_over_tcp",
            "--unit-id",
            "3",
            "--interval",
            "1s",
            "--print-config",
        ])
        .output()
        .expect("run gridlake simulate modbus --print-config");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let config: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("--print-config must print TOML ({e}):\n{text}"));
    assert_eq!(config.keys().collect::<Vec<_>>(), ["modbus"], "{text}");
    let modbus = config["modbus"].as_table().unwrap();
    assert_eq!(modbus["enabled"].as_bool(), Some(true));
    assert_eq!(modbus["interval"].as_str(), Some("1s"));
    let devices = modbus["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3, "{text}");
    for (i, device) in devices.iter().enumerate() {
        assert_eq!(
            device["device_id"].as_str(),
            Some(format!("sim-meter-{i}").as_str())
        );
        assert_eq!(device["host"].as_str(), Some("127.0.0.1"));
        assert_eq!(device["port"].as_integer(), Some(15020 + i as i64));
        assert_eq!(device["unit_id"].as_integer(), Some(3));
        assert_eq!(device["framing"].as_str(), Some("rtu_over_tcp"));
    }

    // gridlake itself accepts it: `gridlake config` loads and validates the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gridlake.toml");
    std::fs::write(&path, &text).unwrap();
    let check = std::process::Command::new(gridlake_bin())
        .arg("config")
        .arg("--config")
        .arg(&path)
        .env_remove("GRIDLAKE_CONFIG")
        .output()
        .expect("run gridlake config");
    assert!(
        check.status.success(),
        "gridlake config must accept the printed section: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let effective = String::from_utf8_lossy(&check.stdout);
    assert!(effective.contains("sim-meter-2"), "{effective}");
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_simulated_inverter_meter_and_battery_poll_into_sql() {
    // Two devices of each model in one simulator each, polled with the configuration
    // the simulators print (their devices merged into one `[modbus]`).
    let mut simulators = Vec::new();
    let mut devices = String::new();
    for model in ["inverter", "meter", "battery"] {
        let simulator = Simulator::start_fleet(model, 2, &[]).await;
        let output = std::process::Command::new(gridlake_bin())
            .args([
                "simulate",
                "modbus",
                "--model",
                model,
                "--count",
                "2",
                "--print-config",
            ])
            .args(["--port", &simulator.port.to_string()])
            .output()
            .expect("print config");
        assert!(output.status.success(), "{output:?}");
        let printed = String::from_utf8(output.stdout).unwrap();
        // Everything from the first device table on.
        let start = printed.find("[[modbus.devices]]").expect("device tables");
        devices.push_str(&printed[start..]);
        simulators.push(simulator);
    }
    let server =
        Server::start_with(Options::default().config(&modbus_config("300ms", &devices))).await;

    for i in 0..2 {
        let id = format!("sim-inverter-{i}");
        let rows = wait_device_rows(&server, "inverter", &id, 4).await;
        for row in &rows {
            let power = float(row, "power_w");
            assert!((0.0..100_000.0).contains(&power), "{id}: power_w {power}");
            assert!(float(row, "energy_wh") > 0.0, "{row:?}");
            assert!(float(row, "dc_power_w") >= 0.0, "{row:?}");
            let status = string(row, "status");
            assert!(
                [
                    "off",
                    "sleeping",
                    "starting",
                    "mppt",
                    "throttled",
                    "shutting_down",
                    "fault",
                    "standby"
                ]
                .contains(&status),
                "{id}: status {status:?}"
            );
            assert_eq!(string(row, "site_id"), "sim");
        }
        assert_non_decreasing(&rows, "energy_wh", &id);

        let id = format!("sim-meter-{i}");
        let rows = wait_device_rows(&server, "meter", &id, 4 * 4).await;
        let totals: Vec<_> = rows
            .iter()
            .filter(|r| is_null(r, "phase"))
            .cloned()
            .collect();
        assert!(totals.len() >= 4, "{id}: {rows:?}");
        for row in &totals {
            assert!(float(row, "power_w").abs() < 100_000.0, "{row:?}");
            assert!((200.0..260.0).contains(&float(row, "voltage_v")), "{row:?}");
            assert!(float(row, "current_a") >= 0.0, "{row:?}");
            assert!(
                (49.5..50.5).contains(&float(row, "frequency_hz")),
                "{row:?}"
            );
        }
        assert_non_decreasing(&totals, "energy_import_wh", &id);
        assert_non_decreasing(&totals, "energy_export_wh", &id);
        let phases: BTreeSet<&str> = rows
            .iter()
            .filter(|r| !is_null(r, "phase"))
            .map(|r| {
                assert!((200.0..260.0).contains(&float(r, "voltage_v")), "{r:?}");
                string(r, "phase")
            })
            .collect();
        assert_eq!(phases, BTreeSet::from(["L1", "L2", "L3"]), "{id}");

        let id = format!("sim-battery-{i}");
        let rows = wait_device_rows(&server, "battery", &id, 4).await;
        for row in &rows {
            let soc = float(row, "soc_pct");
            assert!((5.0..=100.0).contains(&soc), "{id}: soc_pct {soc}");
            assert!(float(row, "power_w").abs() < 50_000.0, "{row:?}");
            let state = string(row, "state");
            assert!(
                ["charging", "discharging", "idle"].contains(&state),
                "{row:?}"
            );
            assert!(int(row, "cycles") >= 0, "{row:?}");
        }
        let cycles: Vec<i64> = rows.iter().map(|r| int(r, "cycles")).collect();
        assert!(
            cycles.windows(2).all(|w| w[0] <= w[1]),
            "{id}: cycles {cycles:?}"
        );
    }

    // Each device announced itself online once, with what discovery found.
    let online = server
        .sql("SELECT device_id, reason FROM device_status WHERE online ORDER BY device_id")
        .await;
    // A device that flapped on a loaded machine has a second online row; each counts once.
    let mut ids: Vec<&str> = online.iter().map(|r| string(r, "device_id")).collect();
    ids.dedup();
    assert_eq!(
        ids,
        [
            "sim-battery-0",
            "sim-battery-1",
            "sim-inverter-0",
            "sim-inverter-1",
            "sim-meter-0",
            "sim-meter-1"
        ],
        "{online:?}"
    );
    for row in &online {
        // sim-<model>-<i> serves serial SIM-<MODEL>-<iiii>.
        let (kind, index) = string(row, "device_id")
            .strip_prefix("sim-")
            .and_then(|rest| rest.rsplit_once('-'))
            .expect("sim-<model>-<i>");
        let serial = format!("SIM-{}-{index:0>4}", kind.to_ascii_uppercase());
        assert!(
            string(row, "reason").contains(&serial),
            "the online reason should name the serial {serial}: {row:?}"
        );
    }
    // Six devices with at least four polls each.
    wait_metric(&server, "gridlake_modbus_cycles_total{outcome=\"ok\"", 24.0).await;

    // The operators' listing: every device online, with its SunSpec map and identity.
    let (status, body) = server.get("/api/v1/modbus/devices").await;
    assert_eq!(status, 200, "{body}");
    let listing: Value = serde_json::from_str(&body).expect("JSON listing");
    assert_eq!(listing["enabled"], true, "{listing}");
    let devices = listing["devices"].as_array().expect("devices array");
    assert_eq!(devices.len(), 6, "{listing}");
    for d in devices {
        let id = d["device_id"].as_str().expect("device_id");
        assert_eq!(d["online"], true, "{id}: {d}");
        assert!(d["polls_ok"].as_u64().unwrap_or(0) >= 1, "{id}: {d}");
        let sunspec = &d["sunspec"];
        assert_eq!(sunspec["base"], 40000, "{id}: {d}");
        assert_eq!(sunspec["common"]["manufacturer"], "gridlake", "{id}: {d}");
        let models: Vec<u64> = sunspec["models"]
            .as_array()
            .expect("models")
            .iter()
            .filter_map(|m| m["id"].as_u64())
            .collect();
        let expected: &[u64] = if id.starts_with("sim-inverter") {
            &[1, 103]
        } else if id.starts_with("sim-meter") {
            &[1, 203]
        } else {
            &[1, 124, 802]
        };
        assert_eq!(models, expected, "{id}: {d}");
    }
    for simulator in &mut simulators {
        simulator.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_values_equal_what_pysunspec2_encoded() {
    // The peer's map starts at 50000: gridlake must find it after 40000 answers
    // "illegal data address".
    let Some(peer) = Peer::start(&["--base", "50000"]).await else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], peer.port));
    let server = Server::start_with(
        Options::default().config(&modbus_config("300ms", &device("peer-1", addr, ""))),
    )
    .await;

    let rows = wait_device_rows(&server, "inverter", "peer-1", 1).await;
    let row = &rows[0];
    let what = "inverter (model 103)";
    assert_value(row, "power_w", peer.value("103", "W"), what);
    assert_value(row, "energy_wh", peer.value("103", "WH"), what);
    assert_value(row, "dc_power_w", peer.value("103", "DCW"), what);
    assert_eq!(
        string(row, "status"),
        peer.symbol("103", "St").to_ascii_lowercase(),
        "{what}: {row:?}"
    );

    let rows = wait_device_rows(&server, "meter", "peer-1", 4).await;
    let what = "meter (model 203)";
    let total = rows
        .iter()
        .find(|r| is_null(r, "phase"))
        .unwrap_or_else(|| panic!("no total row: {rows:?}"));
    assert_value(total, "power_w", peer.value("203", "W"), what);
    assert_value(
        total,
        "energy_import_wh",
        peer.value("203", "TotWhImp"),
        what,
    );
    assert_value(
        total,
        "energy_export_wh",
        peer.value("203", "TotWhExp"),
        what,
    );
    assert_value(total, "voltage_v", peer.value("203", "PhV"), what);
    assert_value(total, "current_a", peer.value("203", "A"), what);
    assert_value(total, "frequency_hz", peer.value("203", "Hz"), what);
    for (phase, suffix) in [("L1", "A"), ("L2", "B"), ("L3", "C")] {
        let row = rows
            .iter()
            .find(|r| !is_null(r, "phase") && string(r, "phase") == phase)
            .unwrap_or_else(|| panic!("no {phase} row: {rows:?}"));
        let what = format!("meter phase {phase}");
        assert_value(
            row,
            "power_w",
            peer.value("203", &format!("Wph{suffix}")),
            &what,
        );
        assert_value(
            row,
            "voltage_v",
            peer.value("203", &format!("PhVph{suffix}")),
            &what,
        );
        assert_value(
            row,
            "current_a",
            peer.value("203", &format!("Aph{suffix}")),
            &what,
        );
    }

    let rows = wait_device_rows(&server, "battery", "peer-1", 1).await;
    let row = &rows[0];
    let what = "battery (model 802)";
    assert_value(row, "soc_pct", peer.value("802", "SoC"), what);
    assert_value(row, "power_w", peer.value("802", "W"), what);
    assert_value(row, "health_pct", peer.value("802", "SoH"), what);
    assert_eq!(
        Some(int(row, "cycles") as f64),
        peer.value("802", "NCyc"),
        "{what}: {row:?}"
    );
    assert_eq!(
        string(row, "state"),
        peer.symbol("802", "ChaSt").to_ascii_lowercase(),
        "{what}: {row:?}"
    );

    let online = server
        .sql("SELECT reason FROM device_status WHERE device_id = 'peer-1' AND online")
        .await;
    assert!(!online.is_empty(), "the peer never came online");
    assert!(
        string(&online[0], "reason").contains("PEER-0001"),
        "the online reason should name the common model's serial: {online:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_stopped_simulator_goes_offline_while_another_keeps_polling() {
    let mut lost = Simulator::start(&["--model", "inverter", "--port", "0"]).await;
    let mut kept = Simulator::start(&["--model", "meter", "--port", "0"]).await;
    let lost_port = lost.port.to_string();
    let devices = device("lost", lost.addr(0), "") + &device("kept", kept.addr(0), "");
    let server =
        Server::start_with(Options::default().config(&modbus_config("200ms", &devices))).await;
    wait_device_rows(&server, "inverter", "lost", 2).await;
    wait_device_rows(&server, "meter", "kept", 2).await;

    lost.stop().await;
    let offline = wait_rows(
        &server,
        "SELECT reason FROM device_status WHERE device_id = 'lost' AND NOT online",
        "an offline row for the stopped device",
        |rows| !rows.is_empty(),
    )
    .await;
    assert!(
        !string(&offline[0], "reason").trim().is_empty(),
        "the offline row must say why: {offline:?}"
    );

    // The other device keeps polling while the first one fails and backs off (waited
    // for rather than timed: a loaded machine may poll late, never stop).
    let lost_rows = device_count(&server, "inverter", "lost").await;
    let kept_rows = device_count(&server, "meter", "kept").await;
    let ok_cycles = metric_sum(&server, "gridlake_modbus_cycles_total{outcome=\"ok\"").await;
    wait_rows(
        &server,
        "SELECT count(*) AS n FROM meter WHERE device_id = 'kept'",
        "five more polls (4 rows each) of the running device",
        |rows| int(&rows[0], "n") >= kept_rows + 4 * 5,
    )
    .await;
    // Cycles count when the answer arrives, rows once the store has them: the counter may
    // be ahead of the rows seen above, so it is waited for too.
    wait_metric(
        &server,
        "gridlake_modbus_cycles_total{outcome=\"ok\"",
        ok_cycles + 5.0,
    )
    .await;
    assert_eq!(
        device_count(&server, "inverter", "lost").await,
        lost_rows,
        "the stopped device must not produce rows"
    );
    wait_metric(
        &server,
        "gridlake_modbus_cycles_total{outcome=\"failed\"",
        1.0,
    )
    .await;

    // Back on the same port: the device is polled again (after at most backoff_max) and
    // announced online a second time.
    let mut back = Simulator::start(&["--model", "inverter", "--port", &lost_port]).await;
    wait_rows(
        &server,
        "SELECT count(*) AS n FROM device_status WHERE device_id = 'lost' AND online",
        "a second online row for the restarted device",
        |rows| int(&rows[0], "n") >= 2,
    )
    .await;
    wait_rows(
        &server,
        "SELECT count(*) AS n FROM inverter WHERE device_id = 'lost'",
        "new rows of the restarted device",
        |rows| int(&rows[0], "n") > lost_rows,
    )
    .await;
    back.stop().await;
    kept.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn modbus_rtu_over_tcp_end_to_end() {
    let mut battery = Simulator::start(&[
        "--model",
        "battery",
        "--port",
        "0",
        "--framing",
        "rtu_over_tcp",
        "--unit-id",
        "5",
    ])
    .await;
    let devices = device(
        "rtu-battery",
        battery.addr(0),
        "unit_id = 5\nframing = \"rtu_over_tcp\"",
    );
    let server =
        Server::start_with(Options::default().config(&modbus_config("300ms", &devices))).await;
    let rows = wait_device_rows(&server, "battery", "rtu-battery", 3).await;
    for row in &rows {
        assert!((5.0..=100.0).contains(&float(row, "soc_pct")), "{row:?}");
        assert!(int(row, "cycles") >= 0, "{row:?}");
    }
    let online = server
        .sql("SELECT reason FROM device_status WHERE device_id = 'rtu-battery' AND online")
        .await;
    assert!(
        string(&online[0], "reason").contains("SIM-BATTERY-0000"),
        "{online:?}"
    );
    battery.stop().await;
}

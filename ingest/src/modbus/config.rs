//! The `[modbus]` section: poll timing, and the devices with their endpoints and either
//! SunSpec discovery or a register map. Checking it turns every device into a
//! [`DeviceSpec`] the pollers run without further validation.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use devices::modbus::{ByteOrder, DataType};
use devices::tables::{self, DEVICE_ID, PHASE, SITE_ID, ValueKind};
use serde::{Deserialize, Serialize};

use super::plan::{self, ReadRequest};

/// The Modbus collector's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Run the collector. Off by default: a server without devices must start.
    pub enabled: bool,
    /// How often a device is polled, unless it sets its own `interval`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one request (and a connection attempt) may take before it counts as
    /// failed and the connection is re-opened.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra tries of a failed request within one cycle.
    pub retries: u32,
    /// Longest wait between attempts on a failing device. The wait doubles the
    /// device's interval per failed cycle, spread by jitter, up to this (or the
    /// interval, when that is longer).
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Rows gathered from polls before they go to the store together.
    pub batch_rows: usize,
    /// How long the first rows of a batch wait for more before the batch is written.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// The devices to poll.
    pub devices: Vec<DeviceConfig>,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            retries: 1,
            backoff_max: Duration::from_secs(300),
            batch_rows: 10_000,
            batch_linger: Duration::from_millis(100),
            devices: Vec::new(),
        }
    }
}

/// How Modbus frames travel over the TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Modbus TCP (MBAP header).
    #[default]
    Tcp,
    /// RTU frames (unit id, PDU, CRC) over a TCP socket, as serial-to-Ethernet
    /// converters forward them.
    RtuOverTcp,
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framing::Tcp => "tcp",
            Framing::RtuOverTcp => "rtu_over_tcp",
        })
    }
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterType {
    /// Holding registers, read with function 3.
    Holding,
    /// Input registers, function 4.
    Input,
    /// Coils, function 1: one bit each.
    Coil,
    /// Discrete inputs, function 2: one bit each.
    Discrete,
}

impl RegisterType {
    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterType::Coil | RegisterType::Discrete)
    }

    /// The most one request may read (Modbus application protocol v1.1b3, 6.1-6.4).
    pub(crate) fn max_per_request(self) -> u16 {
        if self.is_bit() { 2000 } else { 125 }
    }
}

impl fmt::Display for RegisterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegisterType::Holding => "holding",
            RegisterType::Input => "input",
            RegisterType::Coil => "coil",
            RegisterType::Discrete => "discrete",
        })
    }
}

/// One device: where it is, how often to poll it, and what to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Names the device in rows (`device_id` tag), logs and metrics; unique.
    pub device_id: String,
    /// Added to the device's rows as the `site_id` tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<String>,
    /// Host name or IP address of the device or its gateway.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Modbus unit id (slave address); gateways route by it.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Poll interval of this device; default `modbus.interval`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Modbus TCP or RTU framing over TCP.
    #[serde(default)]
    pub framing: Framing,
    /// Discover and read the device's SunSpec models. Default: true when the device
    /// has no `points`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunspec: Option<bool>,
    /// Where the SunSpec map starts (its `SunS` marker); default: searched at 40000,
    /// 50000 and 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunspec_base: Option<u16>,
    /// The device reports power with the opposite sign to the canonical tables:
    /// every `power_w` it gives is negated.
    #[serde(default)]
    pub invert_power: bool,
    /// Table of the points that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// A register map: the values to read and the columns they feed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointConfig>,
}

fn default_port() -> u16 {
    502
}

fn default_unit_id() -> u8 {
    1
}

/// One value of a register map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Which data table the value is in.
    pub register: RegisterType,
    /// Address of its (first) register or bit, 0-based as on the wire.
    pub address: u16,
    /// How the registers encode the value; required for holding and input
    /// registers, ignored for coils and discrete inputs (booleans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
    /// Order of the value's bytes across its registers.
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Multiplier applied to the raw value.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// The column the value is stored in: a canonical one (`power_w`) or any name.
    pub column: String,
    /// The table; default: the device's `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// `phase` tag of the row (`L1`, `L2`, `L3`); rows without one are totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

fn default_scale() -> f64 {
    1.0
}

/// The configuration is not usable; the message names the device and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModbusConfigError(pub String);

/// Where a device is reached. Devices that share one are polled over one connection,
/// one after another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) framing: Framing,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{} ({})", self.host, self.port, self.framing)
        } else {
            write!(f, "{}:{} ({})", self.host, self.port, self.framing)
        }
    }
}

/// A checked device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceSpec {
    pub(crate) device_id: String,
    pub(crate) site_id: Option<String>,
    pub(crate) endpoint: Endpoint,
    pub(crate) unit_id: u8,
    pub(crate) interval: Duration,
    /// SunSpec discovery, with the configured base address if any.
    pub(crate) sunspec: Option<SunSpecSpec>,
    pub(crate) map: Option<RegisterMap>,
}

/// SunSpec options of a device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SunSpecSpec {
    pub(crate) base: Option<u16>,
    pub(crate) invert_power: bool,
}

/// A checked register map: the points, the rows they form, and the requests that
/// read them.
#[derive(Debug, Clone)]
pub(crate) struct RegisterMap {
    pub(crate) points: Vec<MapPoint>,
    /// (table, phase) of each row a cycle produces.
    pub(crate) rows: Vec<(String, Option<String>)>,
}

/// A checked point.
#[derive(Debug, Clone)]
pub(crate) struct MapPoint {
    pub(crate) register: RegisterType,
    pub(crate) address: u16,
    /// Unused for bits.
    pub(crate) data_type: DataType,
    pub(crate) order: ByteOrder,
    pub(crate) scale: f64,
    pub(crate) offset: f64,
    pub(crate) column: String,
    /// Index into [`RegisterMap::rows`].
    pub(crate) row: usize,
}

impl MapPoint {
    /// Registers (or bits) the point occupies.
    pub(crate) fn width(&self) -> u16 {
        if self.register.is_bit() {
            1
        } else {
            self.data_type.registers() as u16
        }
    }
}

impl RegisterMap {
    /// The requests that read every point: per register type, as few as possible.
    /// `merge_gaps` lets a request span unmapped addresses between points.
    pub(crate) fn plan(&self, merge_gaps: bool) -> Vec<ReadRequest> {
        let mut requests = Vec::new();
        for register in [
            RegisterType::Holding,
            RegisterType::Input,
            RegisterType::Coil,
            RegisterType::Discrete,
        ] {
            let spans = self
                .points
                .iter()
                .filter(|p| p.register == register)
                .map(|p| (p.address, p.width()));
            let gap = if merge_gaps {
                plan::max_gap(register)
            } else {
                0
            };
            requests.extend(plan::coalesce(register, spans, gap));
        }
        requests
    }
}

impl ModbusConfig {
    /// Checks everything [`super::ModbusCollector::start`] checks, without connecting.
    pub fn check(&self) -> Result<(), ModbusConfigError> {
        self.specs().map(|_| ())
    }

    /// The checked devices.
    pub(crate) fn specs(&self) -> Result<Vec<DeviceSpec>, ModbusConfigError> {
        let err = |msg: String| ModbusConfigError(msg);
        if self.interval.is_zero() {
            return Err(err("modbus.interval must be longer than 0s".into()));
        }
        if self.timeout.is_zero() {
            return Err(err("modbus.timeout must be longer than 0s".into()));
        }
        if self.enabled && self.devices.is_empty() {
            return Err(err(
                "the Modbus collector is enabled but has no [[modbus.devices]]".into(),
            ));
        }
        let mut seen = HashSet::new();
        let mut specs = Vec::with_capacity(self.devices.len());
        for (index, device) in self.devices.iter().enumerate() {
            let spec = device.spec(self.interval).map_err(|msg| {
                err(format!(
                    "modbus.devices[{index}] ({:?}): {msg}",
                    device.device_id
                ))
            })?;
            if !seen.insert(spec.device_id.clone()) {
                return Err(err(format!(
                    "modbus.devices[{index}]: device_id {:?} is used by an earlier device; device ids must be unique",
                    device.device_id
                )));
            }
            specs.push(spec);
        }
        Ok(specs)
    }
}

/// Tags a point's column may not be named after: the collector sets them.
const RESERVED: [&str; 4] = [DEVICE_ID, SITE_ID, PHASE, storage::TIME_COLUMN];

impl DeviceConfig {
    fn spec(&self, default_interval: Duration) -> Result<DeviceSpec, String> {
        if self.device_id.trim().is_empty() {
            return Err("device_id is empty".into());
        }
        if self.site_id.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err("site_id is empty; leave it out instead".into());
        }
        if self.host.trim().is_empty() {
            return Err("host is empty".into());
        }
        if self.port == 0 {
            return Err("port 0 is not a port a device listens on".into());
        }
        let interval = self.interval.unwrap_or(default_interval);
        if interval.is_zero() {
            return Err("interval must be longer than 0s".into());
        }
        let sunspec = self.sunspec.unwrap_or(self.points.is_empty());
        if !sunspec && self.points.is_empty() {
            return Err(
                "nothing to poll: set sunspec = true or give [[modbus.devices.points]]".into(),
            );
        }
        if !sunspec && self.sunspec_base.is_some() {
            return Err(
                "sunspec_base is set but the device is not read as SunSpec (sunspec = false, the default for a device with points)"
                    .into(),
            );
        }
        if let Some(table) = &self.table {
            check_table(table)?;
        }
        let map = if self.points.is_empty() {
            None
        } else {
            Some(self.register_map()?)
        };
        Ok(DeviceSpec {
            device_id: self.device_id.clone(),
            site_id: self.site_id.clone(),
            endpoint: Endpoint {
                host: self.host.trim().to_string(),
                port: self.port,
                framing: self.framing,
            },
            unit_id: self.unit_id,
            interval,
            sunspec: sunspec.then_some(SunSpecSpec {
                base: self.sunspec_base,
                invert_power: self.invert_power,
            }),
            map,
        })
    }

    fn register_map(&self) -> Result<RegisterMap, String> {
        let mut rows: Vec<(String, Option<String>)> = Vec::new();
        let mut points = Vec::with_capacity(self.points.len());
        let mut columns = HashSet::new();
        for (i, point) in self.points.iter().enumerate() {
            let at =
                |msg: String| format!("points[{i}] ({} {}): {msg}", point.register, point.address);
            let table = point
                .table
                .clone()
                .or_else(|| self.table.clone())
                .ok_or_else(|| at("no table: set `table` on the point or the device".into()))?;
            check_table(&table).map_err(at)?;
            let column = point.column.trim();
            if column.is_empty() {
                return Err(at("column is empty".into()));
            }
            if RESERVED.contains(&column) {
                return Err(at(format!(
                    "column {column:?} is a tag the collector sets; choose another name"
                )));
            }
            let data_type = match (point.register.is_bit(), point.data_type) {
                (true, _) => DataType::Uint16,
                (false, Some(t)) => t,
                (false, None) => {
                    return Err(at(
                        "data_type is required for holding and input registers (int16, uint16, int32, uint32, int64, uint64, float32, float64, acc16, acc32, acc64)".into(),
                    ));
                }
            };
            if !point.scale.is_finite() || !point.offset.is_finite() {
                return Err(at("scale and offset must be finite numbers".into()));
            }
            let spec = tables::table(&table);
            if let Some(column_spec) = spec.and_then(|s| s.column(column)) {
                let fits = match column_spec.kind {
                    ValueKind::Float | ValueKind::Integer => !point.register.is_bit(),
                    ValueKind::Boolean => point.register.is_bit(),
                    ValueKind::String => false,
                };
                if !fits {
                    let got = if point.register.is_bit() {
                        "a boolean"
                    } else {
                        "a number"
                    };
                    return Err(at(format!(
                        "column {column:?} of table {table:?} is a {}; a {} gives {got}",
                        column_spec.kind.name(),
                        point.register
                    )));
                }
            }
            if let Some(phase) = &point.phase {
                if phase.trim().is_empty() {
                    return Err(at("phase is empty; leave it out for totals".into()));
                }
                if spec.is_some_and(|s| !s.tags.contains(&PHASE)) {
                    return Err(at(format!("table {table:?} has no phase tag")));
                }
            }
            let width = u32::from(if point.register.is_bit() {
                1
            } else {
                data_type.registers() as u16
            });
            if u32::from(point.address) + width > 65536 {
                return Err(at(format!(
                    "a {data_type} at {} runs past address 65535",
                    point.address
                )));
            }
            let phase = point.phase.as_ref().map(|p| p.trim().to_string());
            if !columns.insert((table.clone(), phase.clone(), column.to_string())) {
                return Err(at(format!(
                    "column {column:?} of table {table:?}{} is already fed by an earlier point",
                    phase
                        .as_deref()
                        .map(|p| format!(" phase {p}"))
                        .unwrap_or_default()
                )));
            }
            let key = (table, phase);
            let row = match rows.iter().position(|r| *r == key) {
                Some(row) => row,
                None => {
                    rows.push(key);
                    rows.len() - 1
                }
            };
            // The device's sign convention applies to the canonical power column, as
            // for SunSpec devices; a single point with the opposite sign takes
            // `scale = -1` instead.
            let negate = self.invert_power && column == "power_w";
            points.push(MapPoint {
                register: point.register,
                address: point.address,
                data_type,
                order: point.byte_order,
                scale: if negate { -point.scale } else { point.scale },
                offset: if negate { -point.offset } else { point.offset },
                column: column.to_string(),
                row,
            });
        }
        Ok(RegisterMap { points, rows })
    }
}

/// Refuses tables a register map must not write.
fn check_table(table: &str) -> Result<(), String> {
    if table.trim().is_empty() {
        return Err("table is empty".into());
    }
    if table == tables::DEVICE_STATUS.name || table == tables::REJECTED.name {
        return Err(format!(
            "table {table:?} is written by the collector itself, not by points"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModbusConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match parse(text).check() {
            Ok(()) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let config = parse(
            r#"
            enabled = true
            interval = "1s"
            [[devices]]
            device_id = "inv-1"
            host = "192.0.2.10"
            [[devices]]
            device_id = "meter-1"
            site_id = "site-1"
            host = "192.0.2.11"
            port = 1502
            unit_id = 3
            interval = "250ms"
            framing = "rtu_over_tcp"
            invert_power = true
            table = "meter"
            [[devices.points]]
            register = "input"
            address = 30775
            data_type = "int32"
            byte_order = "CDAB"
            scale = 0.1
            column = "power_w"
            phase = "L1"
            [[devices.points]]
            register = "coil"
            address = 3
            column = "relay_on"
            table = "plc"
            "#,
        );
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.backoff_max, Duration::from_secs(300));
        assert_eq!((config.retries, config.batch_rows), (1, 10_000));
        let specs = config.specs().unwrap();
        let inv = &specs[0];
        assert_eq!((inv.endpoint.port, inv.unit_id), (502, 1));
        assert_eq!(inv.interval, Duration::from_secs(1));
        assert_eq!(inv.endpoint.framing, Framing::Tcp);
        assert!(inv.sunspec.is_some() && inv.map.is_none());
        let meter = &specs[1];
        assert_eq!(meter.endpoint.to_string(), "192.0.2.11:1502 (rtu_over_tcp)");
        assert_eq!(meter.interval, Duration::from_millis(250));
        assert!(meter.sunspec.is_none());
        let map = meter.map.as_ref().unwrap();
        assert_eq!(
            map.rows,
            vec![
                ("meter".to_string(), Some("L1".to_string())),
                ("plc".to_string(), None)
            ]
        );
        // invert_power negates the power column.
        assert_eq!(map.points[0].scale, -0.1);
        assert_eq!(map.points[1].width(), 1);
        // The config round-trips through TOML (the server prints its effective config).
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text), config);
    }

    #[test]
    fn errors_name_the_device_and_the_setting() {
        let device = |extra: &str| {
            format!("[[devices]]\ndevice_id = \"d1\"\nhost = \"h\"\ntable = \"meter\"\n{extra}")
        };
        let point = |body: &str| device(&format!("[[devices.points]]\n{body}"));
        let cases = [
            (
                format!("{}{}", device(""), device("")),
                "modbus.devices[1]: device_id \"d1\" is used by an earlier device",
            ),
            (
                device("sunspec = false"),
                "modbus.devices[0] (\"d1\"): nothing to poll",
            ),
            (
                device(
                    "sunspec_base = 40000\n[[devices.points]]\nregister = \"coil\"\naddress = 1\ncolumn = \"x\"\ntable = \"plc\"",
                ),
                "sunspec_base is set but the device is not read as SunSpec",
            ),
            (device("port = 0"), "port 0"),
            (
                device("interval = \"0s\""),
                "interval must be longer than 0s",
            ),
            (
                point("register = \"holding\"\naddress = 1\ncolumn = \"power_w\""),
                "points[0] (holding 1): data_type is required",
            ),
            (
                point(
                    "register = \"holding\"\naddress = 1\ndata_type = \"int16\"\ncolumn = \"status\"\ntable = \"inverter\"",
                ),
                "column \"status\" of table \"inverter\" is a string; a holding gives a number",
            ),
            (
                point("register = \"coil\"\naddress = 1\ncolumn = \"power_w\""),
                "column \"power_w\" of table \"meter\" is a float; a coil gives a boolean",
            ),
            (
                point(
                    "register = \"input\"\naddress = 1\ndata_type = \"float32\"\ncolumn = \"power_w\"\ntable = \"inverter\"\nphase = \"L1\"",
                ),
                "table \"inverter\" has no phase tag",
            ),
            (
                point(
                    "register = \"input\"\naddress = 65535\ndata_type = \"float32\"\ncolumn = \"x\"",
                ),
                "runs past address 65535",
            ),
            (
                point(
                    "register = \"input\"\naddress = 1\ndata_type = \"int16\"\ncolumn = \"device_id\"",
                ),
                "is a tag the collector sets",
            ),
            (
                point(
                    "register = \"input\"\naddress = 1\ndata_type = \"int16\"\ncolumn = \"online\"\ntable = \"device_status\"",
                ),
                "written by the collector itself",
            ),
            (
                format!(
                    "{}\n[[devices.points]]\nregister = \"input\"\naddress = 9\ndata_type = \"int16\"\ncolumn = \"voltage_v\"",
                    point(
                        "register = \"input\"\naddress = 1\ndata_type = \"int16\"\ncolumn = \"voltage_v\""
                    )
                ),
                "points[1] (input 9): column \"voltage_v\" of table \"meter\" is already fed",
            ),
            ("enabled = true".to_string(), "has no [[modbus.devices]]"),
        ];
        for (text, expected) in cases {
            let err = error(&text);
            assert!(
                err.contains(expected),
                "{text}\n=> {err}\nexpected {expected:?}"
            );
        }
        // A point without a table, on a device without one.
        let err = error(
            "[[devices]]\ndevice_id = \"d2\"\nhost = \"h\"\n[[devices.points]]\nregister = \"coil\"\naddress = 1\ncolumn = \"x\"",
        );
        assert!(err.contains("points[0] (coil 1): no table"), "{err}");
        // Unknown keys are refused by serde, naming the key.
        let err = toml::from_str::<ModbusConfig>(
            "[[devices]]\ndevice_id = \"d\"\nhost = \"h\"\nunit = 1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unit"), "{err}");
    }
}

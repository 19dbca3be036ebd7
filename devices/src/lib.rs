//! The energy vocabulary shared by every part of gridlake: the kinds of device that
//! report readings, the units their values are stored in, and how trustworthy a reading
//! is. Pure data, no I/O.
//!
//! Canonical tables and the payload decoders (Shelly, Tasmota, Zigbee2MQTT, OCPP,
//! SunSpec) build on these types; the store itself is schema-on-write and accepts any
//! table, so this crate names what gridlake understands rather than what it accepts.

use std::fmt;
use std::str::FromStr;

pub mod decode;
pub mod modbus;
pub mod reading;
pub mod sim;
pub mod sunspec;
pub mod tables;

pub use reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};

use serde::{Deserialize, Serialize};

/// A kind of device that reports readings (after the energy portal data model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Grid connection meter: imported and exported energy, power.
    Meter,
    /// Solar inverter: AC and DC power, lifetime energy.
    Inverter,
    /// Home battery: state of charge, charge and discharge power and energy.
    Battery,
    /// EV charger: session energy and power.
    EvCharger,
    /// Switchable plug with metering.
    SmartPlug,
}

impl DeviceKind {
    /// Every kind, in a stable order.
    pub const ALL: [DeviceKind; 5] = [
        DeviceKind::Meter,
        DeviceKind::Inverter,
        DeviceKind::Battery,
        DeviceKind::EvCharger,
        DeviceKind::SmartPlug,
    ];

    /// The canonical table this kind's readings go to.
    pub fn table(self) -> &'static str {
        match self {
            DeviceKind::Meter => "meter",
            DeviceKind::Inverter => "inverter",
            DeviceKind::Battery => "battery",
            DeviceKind::EvCharger => "ev_charger",
            DeviceKind::SmartPlug => "smart_plug",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table())
    }
}

/// Error for a name that is not one of the enumeration's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    name: String,
    expected: &'static str,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} {:?}; expected one of {}",
            self.what, self.name, self.expected
        )
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for DeviceKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceKind::ALL
            .into_iter()
            .find(|k| k.table() == s)
            .ok_or_else(|| UnknownName {
                what: "device kind",
                name: s.to_string(),
                expected: "meter, inverter, battery, ev_charger, smart_plug",
            })
    }
}

/// How a reading came to be. Billing and reports treat the three differently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingQuality {
    /// Measured by the device.
    #[default]
    Actual,
    /// Computed because no measurement exists (for example a gap in interval data).
    Estimated,
    /// Replaces a measurement that was found wrong.
    Substituted,
}

impl ReadingQuality {
    /// The value stored in the `quality` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadingQuality::Actual => "actual",
            ReadingQuality::Estimated => "estimated",
            ReadingQuality::Substituted => "substituted",
        }
    }
}

impl FromStr for ReadingQuality {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "actual" => Ok(ReadingQuality::Actual),
            "estimated" => Ok(ReadingQuality::Estimated),
            "substituted" => Ok(ReadingQuality::Substituted),
            _ => Err(UnknownName {
                what: "reading quality",
                name: s.to_string(),
                expected: "actual, estimated, substituted",
            }),
        }
    }
}

/// The unit a stored column is in. Columns carry it as a name suffix (`power_w`,
/// `energy_import_wh`, `soc_pct`), so a reader knows the unit without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Power in watts. Grid import, battery charging and consumption are positive.
    Watt,
    /// Energy in watt-hours.
    WattHour,
    /// A share in percent (0–100).
    Percent,
    /// Voltage in volts.
    Volt,
    /// Current in amperes.
    Ampere,
    /// Frequency in hertz.
    Hertz,
    /// Temperature in degrees Celsius.
    Celsius,
}

impl Unit {
    /// The column-name suffix for this unit.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Watt => "w",
            Unit::WattHour => "wh",
            Unit::Percent => "pct",
            Unit::Volt => "v",
            Unit::Ampere => "a",
            Unit::Hertz => "hz",
            Unit::Celsius => "c",
        }
    }

    /// The unit's symbol, for display.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Watt => "W",
            Unit::WattHour => "Wh",
            Unit::Percent => "%",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Hertz => "Hz",
            Unit::Celsius => "°C",
        }
    }

    /// The unit a column name declares by its suffix (`power_w` → watts), if any.
    pub fn of_column(column: &str) -> Option<Unit> {
        let (_, suffix) = column.rsplit_once('_')?;
        [
            Unit::Watt,
            Unit::WattHour,
            Unit::Percent,
            Unit::Volt,
            Unit::Ampere,
            Unit::Hertz,
            Unit::Celsius,
        ]
        .into_iter()
        .find(|u| u.suffix() == suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_kinds_round_trip_through_their_table_names() {
        for k in DeviceKind::ALL {
            assert_eq!(k.table().parse::<DeviceKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.table())
            );
        }
        let err = "heat_pump".parse::<DeviceKind>().unwrap_err().to_string();
        assert!(
            err.contains("heat_pump") && err.contains("ev_charger"),
            "{err}"
        );
    }

    #[test]
    fn quality_defaults_to_actual_and_parses() {
        assert_eq!(ReadingQuality::default(), ReadingQuality::Actual);
        for q in ["actual", "estimated", "substituted"] {
            assert_eq!(q.parse::<ReadingQuality>().unwrap().as_str(), q);
        }
        assert!("valid".parse::<ReadingQuality>().is_err());
    }

    #[test]
    fn units_come_from_column_suffixes() {
        assert_eq!(Unit::of_column("power_w"), Some(Unit::Watt));
        assert_eq!(Unit::of_column("energy_import_wh"), Some(Unit::WattHour));
        assert_eq!(Unit::of_column("soc_pct"), Some(Unit::Percent));
        assert_eq!(Unit::of_column("temperature_c"), Some(Unit::Celsius));
        assert_eq!(Unit::of_column("status"), None);
        assert_eq!(Unit::of_column("session_id"), None);
        assert_eq!(Unit::WattHour.symbol(), "Wh");
    }
}

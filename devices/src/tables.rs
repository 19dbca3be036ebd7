//! The canonical tables: what gridlake stores for each kind of device, with units and
//! sign conventions. `docs/tables.md` is the prose version of this module; a test keeps
//! the two in step.
//!
//! The store is schema-on-write and accepts other columns and tables too; for the
//! tables named here, every write path checks the named columns' types (coercing
//! integers to floats where a float is canonical) and records the reading's quality and
//! source with every row.

use crate::Unit;

/// Tag naming the site a device belongs to.
pub const SITE_ID: &str = "site_id";
/// Tag naming the device.
pub const DEVICE_ID: &str = "device_id";
/// Tag naming the phase of a per-phase row (`L1`, `L2`, `L3`); rows without it are
/// totals over all phases.
pub const PHASE: &str = "phase";
/// Field with the reading quality (`actual`, `estimated`, `substituted`).
pub const QUALITY: &str = "quality";
/// Field naming where a reading came from (`http`, `mqtt/shelly`, `modbus/sunspec`...).
pub const SOURCE: &str = "source";

/// The type of a canonical column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// 64-bit float: every measurement, counters included (exact to 2^53 Wh).
    Float,
    /// Signed integer: counts such as charge cycles.
    Integer,
    /// On or off.
    Boolean,
    /// A state name or identifier.
    String,
}

impl ValueKind {
    /// The name used in docs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Float => "float",
            ValueKind::Integer => "integer",
            ValueKind::Boolean => "boolean",
            ValueKind::String => "string",
        }
    }
}

/// One canonical field column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Column name; the suffix names the unit (`_w`, `_wh`, `_pct`, ...).
    pub name: &'static str,
    /// Stored type.
    pub kind: ValueKind,
    /// Unit, for measurements.
    pub unit: Option<Unit>,
    /// What it means, including the sign convention where there is one.
    pub description: &'static str,
}

/// One canonical table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name.
    pub name: &'static str,
    /// What a row is.
    pub description: &'static str,
    /// Tag columns that identify a series, in the order docs list them.
    pub tags: &'static [&'static str],
    /// Field columns (besides [`QUALITY`] and [`SOURCE`], which every device table has).
    pub columns: &'static [ColumnSpec],
    /// Whether rows carry [`QUALITY`] and [`SOURCE`].
    pub provenance: bool,
}

impl TableSpec {
    /// The canonical column of this name, if any.
    pub fn column(&self, name: &str) -> Option<&'static ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }
}

const fn f(name: &'static str, unit: Unit, description: &'static str) -> ColumnSpec {
    ColumnSpec {
        name,
        kind: ValueKind::Float,
        unit: Some(unit),
        description,
    }
}

const fn s(name: &'static str, description: &'static str) -> ColumnSpec {
    ColumnSpec {
        name,
        kind: ValueKind::String,
        unit: None,
        description,
    }
}

const DEVICE_TAGS: &[&str] = &[SITE_ID, DEVICE_ID];
const PHASE_TAGS: &[&str] = &[SITE_ID, DEVICE_ID, PHASE];

/// Grid connection meter.
pub const METER: TableSpec = TableSpec {
    name: "meter",
    description: "Grid connection meter. Rows without `phase` are totals; rows with `phase` carry that phase's values.",
    tags: PHASE_TAGS,
    columns: &[
        f(
            "energy_import_wh",
            Unit::WattHour,
            "Cumulative register of energy drawn from the grid. Only grows, except at a reset or meter swap.",
        ),
        f(
            "energy_export_wh",
            Unit::WattHour,
            "Cumulative register of energy fed into the grid. Only grows, except at a reset or meter swap.",
        ),
        f(
            "power_w",
            Unit::Watt,
            "Active power at the connection point: positive when importing from the grid, negative when exporting.",
        ),
        f(
            "voltage_v",
            Unit::Volt,
            "RMS voltage (phase to neutral on phase rows).",
        ),
        f("current_a", Unit::Ampere, "RMS current."),
        f("frequency_hz", Unit::Hertz, "Grid frequency."),
    ],
    provenance: true,
};

/// Solar inverter.
pub const INVERTER: TableSpec = TableSpec {
    name: "inverter",
    description: "Solar (PV) inverter.",
    tags: DEVICE_TAGS,
    columns: &[
        f(
            "power_w",
            Unit::Watt,
            "AC output power; positive when producing.",
        ),
        f(
            "energy_wh",
            Unit::WattHour,
            "Lifetime AC energy produced (cumulative register).",
        ),
        f(
            "dc_power_w",
            Unit::Watt,
            "DC input power from the PV strings.",
        ),
        s(
            "status",
            "Operating state: off, sleeping, starting, mppt (producing), throttled, shutting_down, fault, standby.",
        ),
    ],
    provenance: true,
};

/// Home battery.
pub const BATTERY: TableSpec = TableSpec {
    name: "battery",
    description: "Home battery storage system.",
    tags: DEVICE_TAGS,
    columns: &[
        f("soc_pct", Unit::Percent, "State of charge, 0–100."),
        f(
            "power_w",
            Unit::Watt,
            "Battery power: positive when charging, negative when discharging.",
        ),
        f(
            "energy_charged_wh",
            Unit::WattHour,
            "Cumulative energy charged into the battery.",
        ),
        f(
            "energy_discharged_wh",
            Unit::WattHour,
            "Cumulative energy discharged from the battery.",
        ),
        f(
            "temperature_c",
            Unit::Celsius,
            "Battery (cell) temperature.",
        ),
        f(
            "health_pct",
            Unit::Percent,
            "State of health: usable capacity as a share of the rated capacity.",
        ),
        ColumnSpec {
            name: "cycles",
            kind: ValueKind::Integer,
            unit: None,
            description: "Full charge cycles so far.",
        },
        s("state", "charging, discharging or idle."),
    ],
    provenance: true,
};

/// EV charger.
pub const EV_CHARGER: TableSpec = TableSpec {
    name: "ev_charger",
    description: "EV charger. `connector` names the OCPP connector or EVSE when a charger has several; rows without it are the charger as a whole.",
    tags: &[SITE_ID, DEVICE_ID, "connector", PHASE],
    columns: &[
        f(
            "power_w",
            Unit::Watt,
            "Power delivered to the vehicle; positive when charging.",
        ),
        f(
            "energy_wh",
            Unit::WattHour,
            "Cumulative energy register of the charger or connector (OCPP Energy.Active.Import.Register).",
        ),
        s(
            "session_id",
            "The charging session (OCPP transaction id) the reading belongs to.",
        ),
        s(
            "status",
            "Connector status, as the charger reports it (OCPP: Available, Preparing, Charging, SuspendedEV, Finishing, Faulted, ...).",
        ),
        f(
            "soc_pct",
            Unit::Percent,
            "The vehicle's state of charge, when the charger knows it.",
        ),
        f("current_a", Unit::Ampere, "Charging current."),
        f("voltage_v", Unit::Volt, "Supply voltage."),
    ],
    provenance: true,
};

/// Metering smart plug.
pub const SMART_PLUG: TableSpec = TableSpec {
    name: "smart_plug",
    description: "Switchable plug or relay with metering (Shelly, Tasmota, Zigbee plugs). `channel` names the relay of multi-channel devices.",
    tags: &[SITE_ID, DEVICE_ID, "channel"],
    columns: &[
        f(
            "power_w",
            Unit::Watt,
            "Active power drawn by the appliance; positive when consuming.",
        ),
        f(
            "energy_wh",
            Unit::WattHour,
            "Cumulative energy drawn through the plug.",
        ),
        f("voltage_v", Unit::Volt, "RMS voltage."),
        f("current_a", Unit::Ampere, "RMS current."),
        ColumnSpec {
            name: "switch_on",
            kind: ValueKind::Boolean,
            unit: None,
            description: "Whether the relay is on.",
        },
        f("temperature_c", Unit::Celsius, "Device temperature."),
    ],
    provenance: true,
};

/// Energy price.
pub const PRICE: TableSpec = TableSpec {
    name: "price",
    description: "Energy price per kWh by market (e.g. `epex_day_ahead`) and bidding zone (e.g. `DE-LU`); the row's time is the start of the interval the price applies to.",
    tags: &["market", "zone"],
    columns: &[
        ColumnSpec {
            name: "price_per_kwh",
            kind: ValueKind::Float,
            unit: None,
            description: "Price per kWh in `currency`; may be negative.",
        },
        s("currency", "ISO 4217 currency code, e.g. EUR."),
    ],
    provenance: true,
};

/// Device availability.
pub const DEVICE_STATUS: TableSpec = TableSpec {
    name: "device_status",
    description: "A device going online or offline, from availability and last-will topics (MQTT) or poll results (Modbus).",
    tags: DEVICE_TAGS,
    columns: &[
        ColumnSpec {
            name: "online",
            kind: ValueKind::Boolean,
            unit: None,
            description: "true when the device came online, false when it went offline.",
        },
        s(
            "reason",
            "Why the state changed, when known (the payload, or the poll error).",
        ),
    ],
    provenance: true,
};

/// Payloads that could not be decoded.
pub const REJECTED: TableSpec = TableSpec {
    name: "_rejected",
    description: "Payloads (or parts of payloads) a collector could not decode or store, kept for inspection instead of being dropped. `time` is when the payload was received.",
    tags: &[SOURCE],
    columns: &[
        s(
            "topic",
            "The MQTT topic (or other address) the payload came from.",
        ),
        s(
            "payload",
            "The payload as text (invalid UTF-8 replaced), cut at 64 KiB.",
        ),
        s("error", "What was wrong."),
    ],
    provenance: false,
};

/// Every canonical table.
pub const TABLES: &[TableSpec] = &[
    METER,
    INVERTER,
    BATTERY,
    EV_CHARGER,
    SMART_PLUG,
    PRICE,
    DEVICE_STATUS,
    REJECTED,
];

/// The canonical table of this name, if any.
pub fn table(name: &str) -> Option<&'static TableSpec> {
    TABLES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/tables.md");

    /// The lines of the `### \`name\`` section of docs/tables.md, up to the next heading.
    fn section(name: &str) -> Vec<&'static str> {
        let heading = format!("### `{name}`");
        let mut lines = DOC.lines().skip_while(|l| l.trim_end() != heading);
        assert!(
            lines.next().is_some(),
            "docs/tables.md has no section {heading:?}"
        );
        lines.take_while(|l| !l.starts_with('#')).collect()
    }

    /// The markdown table row documenting `name` (a line starting `| \`name\` |`).
    fn doc_row<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
        let start = format!("| `{name}` |");
        lines.iter().copied().find(|l| l.starts_with(&start))
    }

    #[test]
    fn docs_describe_every_table_tag_and_column_with_its_type_and_unit() {
        for table in TABLES {
            let lines = section(table.name);
            for tag in table.tags {
                assert!(
                    doc_row(&lines, tag).is_some(),
                    "docs/tables.md: table `{}` lists no tag `{tag}`",
                    table.name
                );
            }
            for column in table.columns {
                let row = doc_row(&lines, column.name).unwrap_or_else(|| {
                    panic!(
                        "docs/tables.md: table `{}` lists no column `{}`",
                        table.name, column.name
                    )
                });
                let expected = match column.unit {
                    Some(unit) => {
                        format!(
                            "| `{}` | {} | {} |",
                            column.name,
                            column.kind.name(),
                            unit.symbol()
                        )
                    }
                    None => format!("| `{}` | {} |", column.name, column.kind.name()),
                };
                assert!(
                    row.starts_with(&expected),
                    "docs/tables.md: table `{}`: expected a row starting {expected:?}, found {row:?}",
                    table.name
                );
            }
            // Nothing documented that the code does not define.
            for line in lines.iter().filter(|l| l.starts_with("| `")) {
                let name = line[3..].split('`').next().unwrap_or_default();
                assert!(
                    table.tags.contains(&name) || table.column(name).is_some(),
                    "docs/tables.md: table `{}` documents `{name}`, which tables.rs does not define",
                    table.name
                );
            }
        }
    }

    #[test]
    fn docs_document_no_table_the_code_lacks_and_the_provenance_fields() {
        for line in DOC.lines().filter(|l| l.starts_with("### `")) {
            let name = line
                .trim_start_matches("### `")
                .trim_end()
                .trim_end_matches('`');
            assert!(
                table(name).is_some(),
                "docs/tables.md documents table `{name}`, which tables.rs does not define"
            );
        }
        for word in [QUALITY, SOURCE, SITE_ID, DEVICE_ID, PHASE] {
            assert!(
                DOC.contains(&format!("`{word}`")),
                "docs/tables.md never names `{word}`"
            );
        }
        for quality in ["actual", "estimated", "substituted"] {
            assert!(
                DOC.contains(&format!("`{quality}`")),
                "docs/tables.md never names `{quality}`"
            );
        }
        for t in TABLES {
            let says_no_provenance = section(t.name)
                .iter()
                .any(|l| l.contains("no `quality` or `source` field"));
            assert_eq!(
                says_no_provenance, !t.provenance,
                "docs/tables.md: whether `{}` records quality and source",
                t.name
            );
        }
    }
}

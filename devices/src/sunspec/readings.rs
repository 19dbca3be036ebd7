//! From decoded SunSpec blocks to rows of the canonical tables (docs/tables.md).
//!
//! | Models | Table | Columns ← SunSpec points |
//! |---|---|---|
//! | 101–103 (int + SF), 111–113 (float) | `inverter` | `power_w` ← `W`, `energy_wh` ← `WH`, `dc_power_w` ← `DCW`, `status` ← `St` |
//! | 201–204 (int + SF), 211–214 (float) | `meter`, no phase | `power_w` ← `W`, `energy_import_wh` ← `TotWhImp`, `energy_export_wh` ← `TotWhExp`, `voltage_v` ← `PhV`, `current_a` ← `A`, `frequency_hz` ← `Hz` |
//! | same | `meter`, phase L1/L2/L3 | `power_w` ← `WphA`…, `voltage_v` ← `PhVphA`…, `current_a` ← `AphA`…, `energy_import_wh` ← `TotWhImpPhA`…, `energy_export_wh` ← `TotWhExpPhA`… |
//! | 124 (storage) | `battery` | `soc_pct` ← `ChaState`, `state` ← `ChaSt` |
//! | 802 (battery) | `battery` | `soc_pct` ← `SoC`, `health_pct` ← `SoH`, `cycles` ← `NCyc`, `power_w` ← `W`, `state` ← `ChaSt` |
//!
//! One row per table (and per phase); where two models give the same column (124 and
//! 802 both give `soc_pct` and `state`) the 802 value wins, since it is the newer, more
//! precise model. SunSpec meters count `W` positive when importing, as the `meter` table
//! does; a device wired or defined the other way round (and batteries whose `W` is
//! positive when discharging: model 802 does not fix the sign) is configured with
//! `invert_power`.

use super::Block;
use crate::tables::{BATTERY, INVERTER, METER, PHASE};
use crate::{Reading, Value};

/// Models whose values [`readings`] uses, plus the common model (1) that names the
/// device. The poller reads only these.
pub fn is_supported(id: u16) -> bool {
    matches!(
        id,
        1 | 101..=103 | 111..=113 | 124 | 201..=204 | 211..=214 | 802
    )
}

fn is_inverter(id: u16) -> bool {
    matches!(id, 101..=103 | 111..=113)
}

fn is_meter(id: u16) -> bool {
    matches!(id, 201..=204 | 211..=214)
}

/// Inverter operating state (`St`, 1..=8 in models 101–113) as the `inverter` table names
/// it. By value rather than symbol: pysunspec2's model 111 spells its symbols `ggOFF`...
fn inverter_status(st: u32) -> Option<&'static str> {
    Some(match st {
        1 => "off",
        2 => "sleeping",
        3 => "starting",
        4 => "mppt",
        5 => "throttled",
        6 => "shutting_down",
        7 => "fault",
        8 => "standby",
        _ => return None,
    })
}

/// Storage charge status (`ChaSt` in models 124 and 802: OFF, EMPTY, DISCHARGING,
/// CHARGING, FULL, HOLDING, TESTING) as the `battery` table's `state`.
fn battery_state(cha_st: u32) -> &'static str {
    match cha_st {
        3 => "discharging",
        4 => "charging",
        _ => "idle",
    }
}

/// Fields of one row being gathered; the first value given for a column wins.
struct Row {
    reading: Reading,
}

impl Row {
    fn new(table: &str, time: i64) -> Self {
        Self {
            reading: Reading::new(table, time),
        }
    }

    fn set(&mut self, column: &str, value: Option<Value>) {
        let Some(value) = value else { return };
        if self.reading.field_value(column).is_none() {
            self.reading.fields.push((column.to_string(), value));
        }
    }

    fn number(&mut self, column: &str, block: &Block, point: &str) {
        self.set(column, block.number(point).map(Value::F64));
    }

    fn power(&mut self, block: &Block, point: &str, invert: bool) {
        let sign = if invert { -1.0 } else { 1.0 };
        // `+ 0.0` turns -0.0 into 0.0.
        self.set(
            "power_w",
            block.number(point).map(|w| Value::F64(sign * w + 0.0)),
        );
    }

    fn finish(self, out: &mut Vec<Reading>) {
        if !self.reading.fields.is_empty() {
            out.push(self.reading);
        }
    }
}

/// Maps all decoded blocks of one poll of one device to canonical readings (one row per
/// table and phase; model 124 and 802 merge into one battery row). `invert_power` negates
/// every `power_w`. `time` in ns since the Unix epoch. Tags `site_id`/`device_id` are NOT
/// added here (the collector does). A row without any value is left out.
pub fn readings(blocks: &[Block], time: i64, invert_power: bool) -> Vec<Reading> {
    let mut out = Vec::new();

    let mut inverter = Row::new(INVERTER.name, time);
    for b in blocks.iter().filter(|b| is_inverter(b.id)) {
        inverter.power(b, "W", invert_power);
        inverter.number("energy_wh", b, "WH");
        inverter.number("dc_power_w", b, "DCW");
        let status = b.raw_enum("St").and_then(inverter_status);
        inverter.set("status", status.map(Value::from));
    }
    inverter.finish(&mut out);

    let meters: Vec<&Block> = blocks.iter().filter(|b| is_meter(b.id)).collect();
    let mut total = Row::new(METER.name, time);
    for b in &meters {
        total.power(b, "W", invert_power);
        total.number("energy_import_wh", b, "TotWhImp");
        total.number("energy_export_wh", b, "TotWhExp");
        total.number("voltage_v", b, "PhV");
        total.number("current_a", b, "A");
        total.number("frequency_hz", b, "Hz");
    }
    total.finish(&mut out);
    for (phase, suffix) in [("L1", "A"), ("L2", "B"), ("L3", "C")] {
        let mut row = Row::new(METER.name, time);
        row.reading = row.reading.tag(PHASE, phase);
        for b in &meters {
            row.power(b, &format!("Wph{suffix}"), invert_power);
            row.number("voltage_v", b, &format!("PhVph{suffix}"));
            row.number("current_a", b, &format!("Aph{suffix}"));
            row.number("energy_import_wh", b, &format!("TotWhImpPh{suffix}"));
            row.number("energy_export_wh", b, &format!("TotWhExpPh{suffix}"));
        }
        row.finish(&mut out);
    }

    let mut battery = Row::new(BATTERY.name, time);
    // 802 first: its values win over 124's.
    for b in blocks.iter().filter(|b| b.id == 802) {
        battery.number("soc_pct", b, "SoC");
        battery.number("health_pct", b, "SoH");
        let cycles = b.number("NCyc").map(|c| Value::I64(c as i64));
        battery.set("cycles", cycles);
        battery.power(b, "W", invert_power);
        let state = b.raw_enum("ChaSt").map(battery_state);
        battery.set("state", state.map(Value::from));
    }
    for b in blocks.iter().filter(|b| b.id == 124) {
        battery.number("soc_pct", b, "ChaState");
        let state = b.raw_enum("ChaSt").map(battery_state);
        battery.set("state", state.map(Value::from));
    }
    battery.finish(&mut out);

    out
}

//! Tasmota devices over MQTT (default FullTopic `%prefix%/%topic%/`).
//!
//! | topic | payload | rows |
//! |---|---|---|
//! | `tele/<topic>/SENSOR` | `{"Time": ..., "ENERGY": {...}}` | the configured table |
//! | `tele/<topic>/STATE` | `{"Time": ..., "POWER": "ON", ...}` | the configured table, `switch_on` |
//! | `tele/<topic>/LWT` | `Online` / `Offline` | `device_status` |
//!
//! Other topics (`INFO1`, `RESULT`, `stat/...`), SENSOR payloads without an `ENERGY`
//! block (a temperature sensor) and empty payloads (a deleted retained message) decode
//! to nothing.
//!
//! `ENERGY` members: `Total` (kWh, ×1000 → Wh), `ExportActive` (kWh → Wh), `Power` (W),
//! `Voltage` (V), `Current` (A), `Frequency` (Hz). A canonical table receives only the
//! columns it defines: `Total` goes to `energy_wh`, or to `energy_import_wh` in `meter`;
//! `ExportActive` and `Frequency` only reach tables with `energy_export_wh` and
//! `frequency_hz`; `switch_on` only tables that have it. Other tables get every column.
//!
//! Multi-channel devices send arrays, one value per channel. Each index becomes a row
//! tagged `channel` = 1..n (`phase` = L1..L3 in a table whose tags have `phase` but no
//! `channel`, such as `meter`). Without `SetOption129 1`, `Total`, `Power` and `Current`
//! may stay single numbers while other members are arrays: they are then sums over the
//! channels and go to a row without the channel tag. A single `Voltage` or `Frequency`
//! among arrays is common to all channels (Tasmota prints one value when the channels
//! share the supply) and is written to every row.
//!
//! # Time
//!
//! `Epoch` (Unix seconds, sent by some configurations) wins when present. Otherwise
//! `Time` is the device's local time; with `SetOption52 1` it carries its UTC offset
//! and is taken as is. Without an offset it is read in the configured time zone:
//!
//! - a time that does not exist (skipped by a forward DST change, e.g. 02:30 on the
//!   spring-forward day in Europe/Berlin) is read with the offset in force before the
//!   change, so it lands as far after the change as it claims to be after its start
//!   (02:30 → 03:30 local): the rule of `java.time` and Python's `fold=0`;
//! - a time that occurs twice (the repeated hour of a backward change) is read as the
//!   first occurrence, the earlier instant. Readings from the second pass land on the
//!   first pass's instants and replace them (last write wins). Devices that must not
//!   lose that hour should send offsets (`SetOption52 1`).
//!
//! A time before 2016 means the device clock is not set yet (Tasmota reports times from
//! 1970 until NTP answers): the row is stored at the receive time and a problem is
//! recorded.

use chrono::{MappedLocalTime, NaiveDateTime, Offset, TimeDelta, TimeZone};
use chrono_tz::Tz;
use serde_json::{Map, Value as Json};

use crate::decode::{
    EARLIEST_PLAUSIBLE_S, clip, column, deletes_retained, describe, device_status, finish,
    parse_json, require_device, rfc3339_to_ns,
};
use crate::reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};
use crate::tables::{self, DEVICE_ID, PHASE};

/// Tag naming the relay or metering channel of a multi-channel device.
const CHANNEL: &str = "channel";

/// Decodes Tasmota telemetry into one configured table.
#[derive(Debug, Clone)]
pub struct TasmotaDecoder {
    table: String,
    timezone: Tz,
    columns: Columns,
}

/// Where each Tasmota value goes in the configured table (`None`: the table has no
/// such column).
#[derive(Debug, Clone)]
struct Columns {
    /// `ENERGY` members: (JSON key, column, scale to canonical unit, additive over channels).
    energy: Vec<(&'static str, &'static str, f64, bool)>,
    /// `POWER`/`POWERn` → this column.
    switch_on: Option<&'static str>,
    /// Tag of per-channel rows: `channel`, or `phase` (L1..L3) for phase-tagged tables.
    index_tag: IndexTag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexTag {
    Channel,
    Phase,
}

impl Columns {
    fn for_table(table: &str) -> Self {
        let spec = tables::table(table);
        let pick = |candidates: &[&'static str]| column(spec, candidates);
        let mut energy = Vec::new();
        let members: [(&str, Option<&'static str>, f64, bool); 6] = [
            (
                "Total",
                pick(&["energy_wh", "energy_import_wh"]),
                1000.0,
                true,
            ),
            ("ExportActive", pick(&["energy_export_wh"]), 1000.0, true),
            ("Power", pick(&["power_w"]), 1.0, true),
            ("Current", pick(&["current_a"]), 1.0, true),
            ("Voltage", pick(&["voltage_v"]), 1.0, false),
            ("Frequency", pick(&["frequency_hz"]), 1.0, false),
        ];
        for (key, col, scale, additive) in members {
            if let Some(col) = col {
                energy.push((key, col, scale, additive));
            }
        }
        let index_tag = match spec {
            Some(t) if !t.tags.contains(&CHANNEL) && t.tags.contains(&PHASE) => IndexTag::Phase,
            _ => IndexTag::Channel,
        };
        Self {
            energy,
            switch_on: pick(&["switch_on"]),
            index_tag,
        }
    }
}

impl TasmotaDecoder {
    /// A decoder writing SENSOR and STATE readings to `table` (usually `smart_plug`),
    /// reading offset-less `Time` values in `timezone` (the device's `Timezone` setting).
    pub fn new(table: String, timezone: Tz) -> Self {
        let columns = Columns::for_table(&table);
        Self {
            table,
            timezone,
            columns,
        }
    }

    fn sensor(
        &self,
        ctx: &DecodeContext<'_>,
        device: &str,
        payload: &Map<String, Json>,
    ) -> Result<Decoded, DecodeError> {
        let energy = match payload.get("ENERGY") {
            // A sensor without energy metering (DS18B20, BME280, ...): nothing to store.
            None => return Ok(Decoded::default()),
            Some(Json::Object(energy)) => energy,
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "SENSOR: ENERGY must be an object, got {}",
                    describe(other)
                )));
            }
        };
        const KNOWN: [&str; 6] = [
            "Total",
            "ExportActive",
            "Power",
            "Current",
            "Voltage",
            "Frequency",
        ];
        if !KNOWN.iter().any(|k| energy.contains_key(*k)) {
            return Err(DecodeError::new(
                "SENSOR: ENERGY has none of Total, ExportActive, Power, Current, Voltage, \
                 Frequency",
            ));
        }
        let mut out = Decoded::default();
        // A bad time is worth reporting only when there are rows to store at another.
        let mut time_problems = Vec::new();
        let time = self.time(payload, ctx.received_at, &mut time_problems);

        // Per member: single value or one per channel.
        let mut scalars: Vec<(&str, f64, bool)> = Vec::new();
        let mut arrays: Vec<(&str, &str, Vec<Option<f64>>)> = Vec::new();
        for &(key, col, scale, additive) in &self.columns.energy {
            match energy.get(key) {
                None | Some(Json::Null) => {}
                Some(Json::Number(n)) => {
                    if let Some(v) = n.as_f64() {
                        scalars.push((col, v * scale, additive));
                    }
                }
                Some(Json::Array(items)) => {
                    let mut values = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        values.push(match item {
                            Json::Null => None,
                            Json::Number(n) => n.as_f64().map(|v| v * scale),
                            other => {
                                out.problems.push(format!(
                                    "ENERGY.{key}[{i}]: expected a number, got {}",
                                    describe(other)
                                ));
                                None
                            }
                        });
                    }
                    arrays.push((key, col, values));
                }
                Some(other) => out.problems.push(format!(
                    "ENERGY.{key}: expected a number or an array of numbers, got {}",
                    describe(other)
                )),
            }
        }

        let channels = arrays.iter().map(|(_, _, v)| v.len()).max().unwrap_or(0);
        let common: Vec<(&str, f64)> = scalars
            .iter()
            .filter(|(_, _, additive)| channels == 0 || !additive)
            .map(|(c, v, _)| (*c, *v))
            .collect();
        let sums: Vec<(&str, f64)> = scalars
            .iter()
            .filter(|(_, _, additive)| channels > 0 && *additive)
            .map(|(c, v, _)| (*c, *v))
            .collect();

        // The device as a whole: every value when single-channel, the sums otherwise.
        if channels == 0 || !sums.is_empty() {
            let fields = sums.iter().chain(&common).map(|(c, v)| (*c, *v));
            self.push_row(&mut out, time, device, None, fields);
        }
        for (key, _, values) in &arrays {
            if values.len() < channels {
                out.problems.push(format!(
                    "ENERGY.{key}: {} values for {channels} channels; the missing channels \
                     have no {key}",
                    values.len()
                ));
            }
        }
        for i in 0..channels {
            let per_channel = arrays
                .iter()
                .filter_map(|(_, col, values)| values.get(i).copied().flatten().map(|v| (*col, v)));
            let fields = per_channel.chain(common.iter().copied());
            let tag = self.index_tag(i, channels);
            self.push_row(&mut out, time, device, Some(tag), fields);
        }
        if !out.readings.is_empty() {
            out.problems.splice(0..0, time_problems);
        }
        finish(out)
    }

    fn state(
        &self,
        ctx: &DecodeContext<'_>,
        device: &str,
        payload: &Map<String, Json>,
    ) -> Result<Decoded, DecodeError> {
        let Some(column) = self.columns.switch_on else {
            return Ok(Decoded::default());
        };
        let mut out = Decoded::default();
        let mut relays: Vec<(Option<u32>, bool)> = Vec::new();
        for (key, value) in payload {
            let Some(index) = key.strip_prefix("POWER") else {
                continue;
            };
            let channel = if index.is_empty() {
                None
            } else {
                match index.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => continue, // e.g. a future "POWERxyz" member
                }
            };
            match value {
                Json::String(s) if s.eq_ignore_ascii_case("on") => relays.push((channel, true)),
                Json::String(s) if s.eq_ignore_ascii_case("off") => relays.push((channel, false)),
                other => out.problems.push(format!(
                    "STATE.{key}: expected \"ON\" or \"OFF\", got {}",
                    describe(other)
                )),
            }
        }
        if relays.is_empty() {
            return finish(out);
        }
        let time = self.time(payload, ctx.received_at, &mut out.problems);
        for (channel, on) in relays {
            let mut reading = Reading::new(&self.table, time).tag(DEVICE_ID, device);
            if let Some(n) = channel {
                reading = reading.tag(CHANNEL, n.to_string());
            }
            out.readings.push(reading.field(column, on));
        }
        finish(out)
    }

    /// The tag of the `i`th of `n` channels (0-based).
    fn index_tag(&self, i: usize, n: usize) -> (&'static str, String) {
        match self.columns.index_tag {
            IndexTag::Phase if n <= 3 => (PHASE, format!("L{}", i + 1)),
            _ => (CHANNEL, (i + 1).to_string()),
        }
    }

    fn push_row<'c>(
        &self,
        out: &mut Decoded,
        time: i64,
        device: &str,
        tag: Option<(&'static str, String)>,
        fields: impl Iterator<Item = (&'c str, f64)>,
    ) {
        let mut reading = Reading::new(&self.table, time).tag(DEVICE_ID, device);
        if let Some((k, v)) = tag {
            reading = reading.tag(k, v);
        }
        reading.fields = fields
            .map(|(c, v)| (c.to_string(), Value::F64(v)))
            .collect();
        if !reading.fields.is_empty() {
            out.readings.push(reading);
        }
    }

    /// The payload's time in ns (see the module docs), or the receive time with a
    /// problem when it is unusable.
    fn time(
        &self,
        payload: &Map<String, Json>,
        received_at: i64,
        problems: &mut Vec<String>,
    ) -> i64 {
        if let Some(epoch) = payload.get("Epoch") {
            match epoch.as_i64() {
                Some(s) if s >= EARLIEST_PLAUSIBLE_S => {
                    if let Some(ns) = s.checked_mul(1_000_000_000) {
                        return ns;
                    }
                    problems.push(format!("Epoch {s} is out of range; used the receive time"));
                    return received_at;
                }
                Some(s) => {
                    problems.push(format!(
                        "Epoch {s} is before 2016, the device clock is not set; used the \
                         receive time"
                    ));
                    return received_at;
                }
                None => problems.push(format!(
                    "Epoch: expected whole Unix seconds, got {}; trying Time",
                    describe(epoch)
                )),
            }
        }
        let text = match payload.get("Time") {
            None | Some(Json::Null) => return received_at,
            Some(Json::String(text)) => text,
            Some(other) => {
                problems.push(format!(
                    "Time: expected a date-time string, got {}; used the receive time",
                    describe(other)
                ));
                return received_at;
            }
        };
        let ns = rfc3339_to_ns(text).or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .and_then(|local| local_to_utc_ns(self.timezone, local))
        });
        match ns {
            Some(ns) if ns >= EARLIEST_PLAUSIBLE_S * 1_000_000_000 => ns,
            Some(_) => {
                problems.push(format!(
                    "Time {:?} is before 2016, the device clock is not set; used the receive \
                     time",
                    clip(text)
                ));
                received_at
            }
            None => {
                problems.push(format!(
                    "Time {:?} is not a date-time like 2024-03-01T12:00:00; used the receive \
                     time",
                    clip(text)
                ));
                received_at
            }
        }
    }
}

impl Decode for TasmotaDecoder {
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let (rest, kind) = ctx.topic.rsplit_once('/').unwrap_or(("", ctx.topic));
        if !matches!(kind, "SENSOR" | "STATE" | "LWT") || deletes_retained(payload) {
            return Ok(Decoded::default());
        }
        let device = require_device(ctx, fallback_device(rest).as_deref(), "names no device")?;
        if kind == "LWT" {
            return lwt(ctx, device, payload);
        }
        let json = parse_json(payload)?;
        let Json::Object(json) = json else {
            return Err(DecodeError::new(format!(
                "{kind}: expected a JSON object, got {}",
                describe(&json)
            )));
        };
        if kind == "SENSOR" {
            self.sensor(ctx, &device, &json)
        } else {
            self.state(ctx, &device, &json)
        }
    }
}

/// `tele/<topic>/LWT`: `Online` when connected, `Offline` as the broker's last will.
fn lwt(ctx: &DecodeContext<'_>, device: String, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::new("LWT: payload is not UTF-8 text"))?
        .trim();
    let online = if text.eq_ignore_ascii_case("online") {
        true
    } else if text.eq_ignore_ascii_case("offline") {
        false
    } else {
        return Err(DecodeError::new(format!(
            "LWT: expected Online or Offline, got {:?}",
            clip(text)
        )));
    };
    Ok(Decoded::readings(vec![device_status(
        ctx, device, online, text,
    )]))
}

/// The Tasmota `%topic%` from the topic without its last segment: `tele/plug` → `plug`,
/// `home/plug/tele` (FullTopic `home/%topic%/%prefix%/`) → `home/plug`.
fn fallback_device(rest: &str) -> Option<String> {
    let mut segments: Vec<&str> = rest.split('/').collect();
    if let Some(i) = segments.iter().position(|s| *s == "tele") {
        segments.remove(i);
    }
    let id = segments.join("/");
    (!id.is_empty()).then_some(id)
}

/// A local wall-clock time in `tz` to UTC nanoseconds, resolving DST gaps and repeats
/// as the module docs describe.
fn local_to_utc_ns(tz: Tz, local: NaiveDateTime) -> Option<i64> {
    let utc = match tz.from_local_datetime(&local) {
        MappedLocalTime::Single(t) => t.naive_utc(),
        MappedLocalTime::Ambiguous(earliest, _) => earliest.naive_utc(),
        MappedLocalTime::None => {
            // In a gap: the offset in force before it. A day earlier is before the
            // transition (zones do not change offset twice within a day).
            let day_before = local.checked_sub_signed(TimeDelta::days(1))?;
            let before = tz.offset_from_utc_datetime(&day_before).fix();
            local.checked_sub_signed(TimeDelta::seconds(i64::from(before.local_minus_utc())))?
        }
    };
    utc.and_utc().timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{
        RECEIVED, assert_device_status, assert_problems, decode, decode_err, decode_truncated, f,
        run,
    };

    fn berlin() -> TasmotaDecoder {
        TasmotaDecoder::new("smart_plug".into(), chrono_tz::Europe::Berlin)
    }

    fn utc(text: &str) -> i64 {
        rfc3339_to_ns(text).unwrap()
    }

    fn tagged<'r>(readings: &'r [Reading], key: &str, value: Option<&str>) -> &'r Reading {
        readings
            .iter()
            .find(|r| r.tag_value(key) == value)
            .unwrap_or_else(|| panic!("no row with {key}={value:?} in {readings:#?}"))
    }

    // A single-channel plug's telemetry; ENERGY members and units as listed on
    // https://tasmota.github.io/docs/Power-Monitoring/ (Total, Yesterday, Today in kWh,
    // Power in W, Voltage in V, Current in A).
    const SENSOR: &str = r#"{"Time":"2022-01-11T21:57:38","ENERGY":{
        "TotalStartTime":"2020-10-21T22:15:00","Total":3.705,"Yesterday":0.028,"Today":0.026,
        "Period":1,"Power":5,"ApparentPower":5,"ReactivePower":0,"Factor":1.00,
        "Voltage":233,"Current":0.021}}"#;

    #[test]
    fn sensor_energy_block_becomes_one_row_in_watt_hours() {
        let mut d = berlin();
        let out = decode(&mut d, "tele/livingroom-lamp/SENSOR", SENSOR);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.table, "smart_plug");
        assert_eq!(r.tag_value("device_id"), Some("livingroom-lamp"));
        assert_eq!(r.tags.len(), 1, "single channel: no channel tag");
        assert_eq!(
            r.time,
            utc("2022-01-11T20:57:38Z"),
            "CET is UTC+1 in January"
        );
        assert_eq!(f(r, "energy_wh"), Some(3705.0), "kWh × 1000");
        assert_eq!(f(r, "power_w"), Some(5.0));
        assert_eq!(f(r, "voltage_v"), Some(233.0));
        assert_eq!(f(r, "current_a"), Some(0.021));
        assert_eq!(
            r.fields.len(),
            4,
            "Today, Yesterday, Factor... are not stored"
        );
    }

    // Two-channel device without SetOption129: Total is the sum, the rest per channel, a
    // common Voltage. The array layout follows Tasmota's energy driver and
    // https://tasmota.github.io/docs/Commands/#setoption129 ("split total energy").
    #[test]
    fn multi_channel_arrays_become_channel_rows_and_sums_a_device_row() {
        let payload = r#"{"Time":"2026-09-18T11:19:21","ENERGY":{
            "TotalStartTime":"2026-09-16T00:00:00","Total":3.067,"Yesterday":[1.530,0.125],
            "Today":[0.772,0.059],"Power":[52,5],"ApparentPower":[66,10],
            "ReactivePower":[40,9],"Factor":[0.79,0.50],"Voltage":235,"Current":[0.278,0.044]}}"#;
        let mut d = berlin();
        let out = decode(&mut d, "tele/dual/SENSOR", payload);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 3);
        let device = tagged(&out.readings, "channel", None);
        assert_eq!(f(device, "energy_wh"), Some(3067.0));
        assert_eq!(f(device, "voltage_v"), Some(235.0));
        assert_eq!(f(device, "power_w"), None, "per channel only");
        let ch1 = tagged(&out.readings, "channel", Some("1"));
        assert_eq!(f(ch1, "power_w"), Some(52.0));
        assert_eq!(f(ch1, "current_a"), Some(0.278));
        assert_eq!(
            f(ch1, "voltage_v"),
            Some(235.0),
            "common voltage on every channel"
        );
        assert_eq!(f(ch1, "energy_wh"), None, "the total is not split");
        let ch2 = tagged(&out.readings, "channel", Some("2"));
        assert_eq!(f(ch2, "power_w"), Some(5.0));

        // SetOption129 1: totals per channel, no device row.
        let split = r#"{"Time":"2026-09-18T11:19:21","ENERGY":{"Total":[2.813,0.254],
            "Power":[52,5],"Voltage":[235,236],"Current":[0.278,null]}}"#;
        let out = decode(&mut d, "tele/dual/SENSOR", split);
        assert_eq!(out.readings.len(), 2);
        let ch2 = tagged(&out.readings, "channel", Some("2"));
        assert_eq!(f(ch2, "energy_wh"), Some(254.0));
        assert_eq!(f(ch2, "voltage_v"), Some(236.0));
        assert_eq!(f(ch2, "current_a"), None, "null is left out");
    }

    #[test]
    fn a_meter_table_gets_phase_rows_and_import_export_registers() {
        let mut d = TasmotaDecoder::new("meter".into(), chrono_tz::UTC);
        let payload = r#"{"Time":"2024-05-01T10:00:00","ENERGY":{"Total":1234.5,
            "ExportActive":10.25,"Power":[100,-50,20],"Voltage":[230,231,229],
            "Current":[0.5,0.3,0.1],"Frequency":50.01}}"#;
        let out = decode(&mut d, "tele/sdm630/SENSOR", payload);
        assert_eq!(out.readings.len(), 4);
        assert!(out.readings.iter().all(|r| r.table == "meter"));
        let total = tagged(&out.readings, "phase", None);
        assert_eq!(f(total, "energy_import_wh"), Some(1_234_500.0));
        assert_eq!(f(total, "energy_export_wh"), Some(10_250.0));
        assert_eq!(f(total, "frequency_hz"), Some(50.01));
        assert_eq!(total.field_value("energy_wh"), None);
        let l2 = tagged(&out.readings, "phase", Some("L2"));
        assert_eq!(f(l2, "power_w"), Some(-50.0));
        assert_eq!(f(l2, "frequency_hz"), Some(50.01));
        assert!(
            out.readings
                .iter()
                .all(|r| r.tag_value("channel").is_none())
        );

        // smart_plug has no export or frequency column: those values are not written.
        let mut plug = TasmotaDecoder::new("smart_plug".into(), chrono_tz::UTC);
        let out = decode(&mut plug, "tele/sdm630/SENSOR", payload);
        assert!(
            out.readings
                .iter()
                .all(|r| r.field_value("energy_export_wh").is_none()
                    && r.field_value("frequency_hz").is_none())
        );
        assert_eq!(
            tagged(&out.readings, "channel", Some("3")).tag_value("phase"),
            None
        );
    }

    #[test]
    fn a_custom_table_gets_every_column() {
        let mut d = TasmotaDecoder::new("heat_pump".into(), chrono_tz::UTC);
        let payload = r#"{"Time":"2024-05-01T10:00:00","ENERGY":{"Total":1,"ExportActive":2,
            "Frequency":50}}"#;
        let r = &decode(&mut d, "tele/hp/SENSOR", payload).readings[0];
        assert_eq!(r.table, "heat_pump");
        assert_eq!(f(r, "energy_wh"), Some(1000.0));
        assert_eq!(f(r, "energy_export_wh"), Some(2000.0));
        assert_eq!(f(r, "frequency_hz"), Some(50.0));
    }

    // tele/%topic%/STATE example from https://tasmota.github.io/docs/ADC/ (ADC_VCC).
    const STATE: &str = r#"{"Time":"2019-10-31T11:14:59","Uptime":"0T18:36:12","UptimeSec":66972,
        "Vcc":3.423,"Heap":28,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":6,
        "POWER":"OFF","Wifi":{"AP":1,"SSId":"Tasmota","BSSId":"00:00:00:00:00:00",
        "Channel":13,"RSSI":100,"LinkCount":1,"Downtime":"0T00:00:06"}}"#;

    #[test]
    fn state_power_becomes_switch_on() {
        let mut d = berlin();
        let out = decode(&mut d, "tele/tasmota/STATE", STATE);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.time, utc("2019-10-31T10:14:59Z"));
        assert_eq!(
            r.fields,
            vec![("switch_on".to_string(), Value::Bool(false))]
        );
        assert_eq!(r.tag_value("channel"), None);

        let two = r#"{"Time":"2020-08-30T10:14:45","POWER1":"ON","POWER2":"off","Wifi":{}}"#;
        let out = decode(&mut d, "tele/shelly25/STATE", two);
        assert_eq!(out.readings.len(), 2);
        let ch1 = tagged(&out.readings, "channel", Some("1"));
        assert_eq!(ch1.field_value("switch_on"), Some(&Value::Bool(true)));
        let ch2 = tagged(&out.readings, "channel", Some("2"));
        assert_eq!(ch2.field_value("switch_on"), Some(&Value::Bool(false)));
    }

    #[test]
    fn state_without_relays_or_for_a_table_without_switch_on_is_nothing() {
        let mut d = berlin();
        let sensor_only = r#"{"Time":"2019-10-31T11:14:59","Uptime":"0T18:36:12","Heap":28}"#;
        assert_eq!(
            decode(&mut d, "tele/t/STATE", sensor_only),
            Decoded::default()
        );
        let mut meter = TasmotaDecoder::new("meter".into(), chrono_tz::UTC);
        assert_eq!(
            decode(&mut meter, "tele/t/STATE", STATE),
            Decoded::default()
        );
    }

    #[test]
    fn bad_relay_states_are_problems() {
        let mut d = berlin();
        let payload = r#"{"Time":"2024-01-01T00:00:00","POWER1":"ON","POWER2":"BLINK","POWER3":1}"#;
        let out = decode(&mut d, "tele/t/STATE", payload);
        assert_eq!(out.readings.len(), 1);
        assert_eq!(out.problems.len(), 2);
        assert!(
            out.problems[0]
                .contains("STATE.POWER2: expected \"ON\" or \"OFF\", got the string \"BLINK\""),
            "{:?}",
            out.problems
        );
        let err = decode_err(&mut d, "tele/t/STATE", r#"{"POWER":"maybe"}"#);
        assert!(err.contains("STATE.POWER"), "{err}");
    }

    #[test]
    fn lwt_becomes_device_status() {
        // `tele/%topic%/LWT` is `Online` / `Offline`: https://tasmota.github.io/docs/MQTT/
        // and the DeepSleep page's "state/sonoff/LWT = Offline".
        let mut d = berlin();
        for (payload, online) in [("Online", true), ("Offline", false)] {
            let out = decode(&mut d, "tele/plug1/LWT", payload);
            let r = &out.readings[0];
            assert_device_status(r, "plug1", online);
            assert_eq!(r.field_value("reason"), Some(&Value::Str(payload.into())));
        }
        let err = decode_err(&mut d, "tele/plug1/LWT", "gone");
        assert!(
            err.contains("expected Online or Offline, got \"gone\""),
            "{err}"
        );
    }

    #[test]
    fn non_energy_sensors_and_other_topics_decode_to_nothing() {
        // Telemetry example of https://tasmota.github.io/docs/MQTT/
        let ds18b20 = r#"{"Time":"2017-02-16T10:13:52", "DS18B20":{"Temperature":20.6}}"#;
        let mut d = berlin();
        assert_eq!(
            decode(&mut d, "tele/tasmota/SENSOR", ds18b20),
            Decoded::default()
        );
        assert_eq!(
            decode(&mut d, "stat/tasmota/RESULT", r#"{"POWER":"ON"}"#),
            Decoded::default()
        );
        assert_eq!(
            decode(&mut d, "stat/tasmota/POWER", "ON"),
            Decoded::default()
        );
        assert_eq!(
            decode(&mut d, "tele/tasmota/INFO1", "{}"),
            Decoded::default()
        );
        assert_eq!(decode(&mut d, "tele/tasmota/LWT", ""), Decoded::default());
        assert_eq!(
            decode(&mut d, "tele/tasmota/SENSOR", "\n"),
            Decoded::default()
        );
    }

    #[test]
    fn bad_payloads_are_errors_that_name_the_problem() {
        let mut d = berlin();
        let cases = [
            ("tele/t/SENSOR", "not json", "not JSON"),
            (
                "tele/t/SENSOR",
                "[1]",
                "SENSOR: expected a JSON object, got an array",
            ),
            (
                "tele/t/SENSOR",
                r#"{"ENERGY":5}"#,
                "ENERGY must be an object, got 5",
            ),
            (
                "tele/t/SENSOR",
                r#"{"ENERGY":{"Today":1.0}}"#,
                "ENERGY has none of Total",
            ),
            (
                "tele/t/SENSOR",
                r#"{"ENERGY":{"Total":"3.7 kWh"}}"#,
                "ENERGY.Total: expected a number or an array of numbers, got the string \"3.7 kWh\"",
            ),
            ("tele/t/STATE", "\"ON\"", "STATE: expected a JSON object"),
        ];
        for (topic, payload, expected) in cases {
            let err = decode_err(&mut d, topic, payload);
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }

    #[test]
    fn bad_values_are_problems_and_good_ones_are_kept() {
        let mut d = berlin();
        let payload = r#"{"Time":"2024-01-01T12:00:00","ENERGY":{"Total":1.5,
            "Power":[10,"x"],"Voltage":[230],"Current":{"a":1}}}"#;
        let out = decode(&mut d, "tele/t/SENSOR", payload);
        assert_problems(
            &out.problems,
            &[
                "ENERGY.Power[1]: expected a number, got the string \"x\"",
                "ENERGY.Current: expected a number or an array",
                "ENERGY.Voltage: 1 values for 2 channels",
            ],
        );
        assert_eq!(
            f(tagged(&out.readings, "channel", None), "energy_wh"),
            Some(1500.0)
        );
        let ch1 = tagged(&out.readings, "channel", Some("1"));
        assert_eq!(
            (f(ch1, "power_w"), f(ch1, "voltage_v")),
            (Some(10.0), Some(230.0))
        );
        assert!(
            out.readings
                .iter()
                .all(|r| r.tag_value("channel") != Some("2")),
            "channel 2 has no value"
        );
    }

    #[test]
    fn offsets_and_epoch_are_taken_as_given() {
        let mut d = berlin();
        // SetOption52 1 adds the UTC offset.
        let with_offset = r#"{"Time":"2024-07-01T12:00:00+02:00","ENERGY":{"Power":1}}"#;
        let r = &decode(&mut d, "tele/t/SENSOR", with_offset).readings[0];
        assert_eq!(r.time, utc("2024-07-01T10:00:00Z"));
        // Epoch wins over Time: DeepSleep example of https://tasmota.github.io/docs/DeepSleep/
        let epoch = r#"{"Time":"2019-09-04T13:08:48","Epoch":1567595328,"ENERGY":{"Power":1}}"#;
        let r = &decode(&mut d, "tele/tasmota/SENSOR", epoch).readings[0];
        assert_eq!(r.time, 1_567_595_328_000_000_000);
        // Fractional seconds.
        let frac = r#"{"Time":"2024-01-01T00:00:00.250","ENERGY":{"Power":1}}"#;
        let r = &decode(&mut d, "tele/t/SENSOR", frac).readings[0];
        assert_eq!(r.time, utc("2023-12-31T23:00:00.25Z"));
    }

    #[test]
    fn dst_gaps_shift_forward_and_repeats_take_the_first_pass() {
        use chrono_tz::Australia::{Lord_Howe, Sydney};
        use chrono_tz::Europe::Berlin;
        let cases = [
            // 2024-03-31 02:00 CET jumps to 03:00 CEST: 02:30 does not exist and is read
            // as +01:00, i.e. 03:30 CEST.
            (Berlin, "2024-03-31T02:30:00", "2024-03-31T01:30:00Z"),
            (Berlin, "2024-03-31T01:59:59", "2024-03-31T00:59:59Z"),
            (Berlin, "2024-03-31T03:00:00", "2024-03-31T01:00:00Z"),
            // 2024-10-27 03:00 CEST falls back to 02:00 CET: 02:30 happens twice, and the
            // first (CEST) pass is taken.
            (Berlin, "2024-10-27T02:30:00", "2024-10-27T00:30:00Z"),
            (Berlin, "2024-10-27T03:30:00", "2024-10-27T02:30:00Z"),
            // Southern hemisphere and a 30-minute shift (Lord Howe: +10:30 ↔ +11:00).
            (Sydney, "2024-10-06T02:30:00", "2024-10-05T16:30:00Z"),
            (Lord_Howe, "2024-10-06T02:15:00", "2024-10-05T15:45:00Z"),
        ];
        for (tz, local, expected) in cases {
            let local = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S").unwrap();
            assert_eq!(
                local_to_utc_ns(tz, local),
                Some(utc(expected)),
                "{local} in {tz}"
            );
        }

        // Through the decoder, redelivery gives the same time.
        let mut d = TasmotaDecoder::new("smart_plug".into(), Berlin);
        let gap = r#"{"Time":"2024-03-31T02:30:00","ENERGY":{"Power":7}}"#;
        let a = decode(&mut d, "tele/t/SENSOR", gap);
        let b = decode(&mut d, "tele/t/SENSOR", gap);
        assert_eq!(a, b);
        assert_eq!(a.readings[0].time, utc("2024-03-31T01:30:00Z"));
    }

    #[test]
    fn unusable_times_fall_back_to_the_receive_time_with_a_problem() {
        let mut d = berlin();
        let cases = [
            (
                r#"{"Time":"1970-01-01T00:05:12","ENERGY":{"Power":1}}"#,
                "before 2016",
            ),
            (
                r#"{"Time":"yesterday","ENERGY":{"Power":1}}"#,
                "is not a date-time",
            ),
            (
                r#"{"Time":17,"ENERGY":{"Power":1}}"#,
                "expected a date-time string",
            ),
            (
                r#"{"Epoch":300,"ENERGY":{"Power":1}}"#,
                "Epoch 300 is before 2016",
            ),
        ];
        for (payload, expected) in cases {
            let out = decode(&mut d, "tele/t/SENSOR", payload);
            assert_eq!(out.readings[0].time, RECEIVED, "{payload}");
            assert!(
                out.problems[0].contains(expected),
                "{payload}: {:?}",
                out.problems
            );
        }
        let out = decode(&mut d, "tele/t/SENSOR", r#"{"ENERGY":{"Power":1}}"#);
        assert_eq!(out.readings[0].time, RECEIVED);
        assert!(out.problems.is_empty());
        // A fractional Epoch is not whole seconds: Time is used instead.
        let out = decode(
            &mut d,
            "tele/t/SENSOR",
            r#"{"Epoch":1.5e9,"Time":"2024-01-01T01:00:00","ENERGY":{"Power":1}}"#,
        );
        assert_eq!(out.readings[0].time, utc("2024-01-01T00:00:00Z"));
        assert!(
            out.problems[0].contains("Epoch: expected whole Unix seconds"),
            "{:?}",
            out.problems
        );
    }

    #[test]
    fn device_id_comes_from_context_then_topic() {
        let mut d = berlin();
        let tags = vec![("device_id".to_string(), "kitchen-plug".to_string())];
        let out = run(&mut d, "tele/tasmota_3D5E26/SENSOR", &tags, SENSOR).unwrap();
        assert_eq!(out.readings[0].tag_value("device_id"), Some("kitchen-plug"));
        let out = decode(&mut d, "home/plug/tele/SENSOR", SENSOR);
        assert_eq!(out.readings[0].tag_value("device_id"), Some("home/plug"));
        let err = decode_err(&mut d, "tele/SENSOR", SENSOR);
        assert!(err.starts_with("no device id"), "{err}");
    }

    #[test]
    fn truncated_payloads_never_panic() {
        let mut d = berlin();
        for (topic, payload) in [
            ("tele/t/SENSOR", SENSOR),
            ("tele/t/STATE", STATE),
            ("tele/t/LWT", "Offline"),
        ] {
            decode_truncated(&mut d, topic, payload);
        }
    }
}

//! Shelly Gen2+ devices (Plus, Pro, Gen3, Gen4: the RPC API) over MQTT.
//!
//! What a device publishes, `<prefix>` being its MQTT topic prefix (by default its id, e.g.
//! `shellyplus1pm-a8032ab12345`), and what it becomes:
//!
//! | topic | payload | rows |
//! |---|---|---|
//! | `<prefix>/status/switch:N` | Switch status | `smart_plug`, tag `channel` = N |
//! | `<prefix>/status/pm1:N` | PM1 status | `smart_plug`, tag `channel` = N |
//! | `<prefix>/status/em:N` | EM (three-phase meter) status | `meter`: a total row, rows `phase` = L1, L2, L3 |
//! | `<prefix>/status/emdata:N` | EMData energy counters | `meter`: import and export registers, total and per phase |
//! | `<prefix>/events/rpc` | `NotifyStatus`, `NotifyFullStatus` | the same components, at `params.ts` |
//! | `<prefix>/online` | `true` / `false` | `device_status` |
//!
//! Other components (`sys`, `wifi`, `input:N`, `em1:N`, ...), `NotifyEvent` and RPC
//! responses carry nothing gridlake stores and decode to nothing.
//!
//! `NotifyStatus` carries only what changed; Shelly's documentation says to overlay it on
//! the last known status, and a key that disappears arrives as `null`. The decoder keeps
//! the last status of every (topic prefix, component) it has seen, from status topics,
//! `NotifyFullStatus` and earlier `NotifyStatus` frames, and decodes the overlay. With no
//! earlier status, the row holds only what the notification carries. The topic prefix
//! (not the device id) keys the cache because status topics carry no `src`.
//!
//! An empty payload (MQTT's way of deleting a retained message) decodes to nothing.
//!
//! Status topics carry no timestamp: their rows are at the receive time. Notifications
//! are at `params.ts`, so a redelivered notification decodes to the same row.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::decode::{
    EARLIEST_PLAUSIBLE_S, clip, deletes_retained, describe, device_status, finish, parse_json,
    require_device, seconds_to_ns,
};
use crate::reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};
use crate::tables::{DEVICE_ID, METER, PHASE, SMART_PLUG};

/// Tag naming the relay or metering channel of a multi-channel device.
const CHANNEL: &str = "channel";

/// Upper bound on cached component statuses. A broker that keeps publishing new topic
/// prefixes must not grow the decoder without bound; past the limit, new components are
/// decoded without a cached base (only what each notification carries).
const MAX_CACHED: usize = 65_536;

/// What a missing device id lacks, for [`require_device`]'s error.
const NO_DEVICE: &str = "has no prefix, the payload no src,";

/// Decodes Shelly Gen2+ MQTT payloads; keeps the last status of each component to
/// resolve partial `NotifyStatus` updates.
#[derive(Debug, Default)]
pub struct ShellyDecoder {
    /// Last known status per (topic prefix, component key such as `switch:0`).
    last_status: HashMap<(String, String), Map<String, Json>>,
}

impl ShellyDecoder {
    /// A decoder with no known statuses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `update` into the cached status of `component` (replacing it when `full`)
    /// and returns the resulting status.
    fn merge(
        &mut self,
        prefix: &str,
        component: &str,
        update: &Map<String, Json>,
        full: bool,
    ) -> Map<String, Json> {
        let key = (prefix.to_string(), component.to_string());
        let mut status = match self.last_status.get(&key) {
            Some(base) if !full => base.clone(),
            _ => Map::new(),
        };
        overlay(&mut status, update);
        if self.last_status.contains_key(&key) || self.last_status.len() < MAX_CACHED {
            self.last_status.insert(key, status.clone());
        }
        status
    }

    /// `<prefix>/events/rpc`: notification frames (and RPC responses, which are skipped).
    fn decode_rpc(
        &mut self,
        ctx: &DecodeContext<'_>,
        prefix: &str,
        payload: &[u8],
    ) -> Result<Decoded, DecodeError> {
        let frame = parse_json(payload)?;
        let Json::Object(frame) = frame else {
            return Err(DecodeError::new(format!(
                "events/rpc: expected a JSON-RPC frame object, got {}",
                describe(&frame)
            )));
        };
        let full = match frame.get("method") {
            Some(Json::String(m)) if m == "NotifyStatus" => false,
            Some(Json::String(m)) if m == "NotifyFullStatus" => true,
            // NotifyEvent, other notifications, and responses (no method) carry no status.
            Some(Json::String(_)) | None => return Ok(Decoded::default()),
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "events/rpc: method must be a string, got {}",
                    describe(other)
                )));
            }
        };
        let method = if full {
            "NotifyFullStatus"
        } else {
            "NotifyStatus"
        };
        let Some(Json::Object(params)) = frame.get("params") else {
            return Err(DecodeError::new(format!(
                "events/rpc {method}: params is missing or not an object"
            )));
        };
        let src = match frame.get("src") {
            Some(Json::String(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        };

        // A bad timestamp is worth reporting only when the frame carries readings.
        let mut time_problem = None;
        let time = match params.get("ts") {
            None | Some(Json::Null) => ctx.received_at,
            Some(Json::Number(n)) => {
                let ns = n.as_f64().and_then(seconds_to_ns);
                match ns {
                    Some(ns) if ns as f64 >= EARLIEST_PLAUSIBLE_S as f64 * 1e9 => ns,
                    Some(_) => {
                        time_problem = Some(format!(
                            "{method} params.ts: {n} is before 2016, the device clock is not \
                             set; used the receive time"
                        ));
                        ctx.received_at
                    }
                    None => {
                        time_problem = Some(format!(
                            "{method} params.ts: {n} is out of range; used the receive time"
                        ));
                        ctx.received_at
                    }
                }
            }
            Some(other) => {
                time_problem = Some(format!(
                    "{method} params.ts: expected Unix seconds, got {}; used the receive time",
                    describe(other)
                ));
                ctx.received_at
            }
        };

        let mut out = Decoded::default();

        let mut device: Option<String> = None;
        for (key, update) in params {
            let Some(kind) = Component::parse(key) else {
                continue;
            };
            let Json::Object(update) = update else {
                out.problems.push(format!(
                    "{method} params.{key}: expected a status object, got {}",
                    describe(update)
                ));
                continue;
            };
            if device.is_none() {
                device = Some(require_device(ctx, src.or(Some(prefix)), NO_DEVICE)?);
            }
            let merged = self.merge(prefix, key, update, full);
            kind.decode(
                key,
                &merged,
                time,
                device.as_deref().unwrap_or_default(),
                &mut out,
            );
        }
        if !out.readings.is_empty() {
            out.problems.extend(time_problem);
        }
        finish(out)
    }
}

impl Decode for ShellyDecoder {
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError> {
        if deletes_retained(payload) {
            return Ok(Decoded::default());
        }
        match Topic::parse(ctx.topic) {
            Topic::Status { prefix, component } => {
                let Some(kind) = Component::parse(component) else {
                    return Ok(Decoded::default());
                };
                let status = parse_json(payload)?;
                let Json::Object(status) = status else {
                    return Err(DecodeError::new(format!(
                        "status/{component}: expected the component's status object, got {}",
                        describe(&status)
                    )));
                };
                let device = require_device(ctx, Some(prefix), NO_DEVICE)?;
                let merged = self.merge(prefix, component, &status, true);
                let mut out = Decoded::default();
                kind.decode(component, &merged, ctx.received_at, &device, &mut out);
                finish(out)
            }
            Topic::Events { prefix } => self.decode_rpc(ctx, prefix, payload),
            Topic::Online { prefix } => online(ctx, prefix, payload),
            Topic::Other => Ok(Decoded::default()),
        }
    }
}

/// `<prefix>/online`: `true` on connect, `false` as the MQTT last will.
fn online(ctx: &DecodeContext<'_>, prefix: &str, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::new("online: payload is not UTF-8 text"))?
        .trim();
    let online = match text {
        "true" => true,
        "false" => false,
        other => {
            return Err(DecodeError::new(format!(
                "online: expected true or false, got {:?}",
                clip(other)
            )));
        }
    };
    let device = require_device(ctx, Some(prefix), NO_DEVICE)?;
    Ok(Decoded::readings(vec![device_status(
        ctx, device, online, text,
    )]))
}

/// The kinds of topic a Shelly publishes on.
enum Topic<'a> {
    /// `<prefix>/status/<component>`.
    Status { prefix: &'a str, component: &'a str },
    /// `<prefix>/events/rpc`.
    Events { prefix: &'a str },
    /// `<prefix>/online`.
    Online { prefix: &'a str },
    /// Anything else (`<prefix>/rpc`, `<prefix>/command`, ...).
    Other,
}

impl<'a> Topic<'a> {
    fn parse(topic: &'a str) -> Self {
        if let Some(prefix) = topic.strip_suffix("/events/rpc") {
            return Topic::Events { prefix };
        }
        if let Some(prefix) = topic.strip_suffix("/online") {
            return Topic::Online { prefix };
        }
        if let Some((rest, component)) = topic.rsplit_once('/')
            && let Some(prefix) = rest.strip_suffix("/status")
        {
            return Topic::Status { prefix, component };
        }
        Topic::Other
    }
}

/// The metering components gridlake decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    /// `switch:N`: relay output, with metering on PM models.
    Switch(u32),
    /// `pm1:N`: metering without relay (Plus PM Mini).
    Pm1(u32),
    /// `em:N`: three-phase energy meter (Pro 3EM).
    Em(u32),
    /// `emdata:N`: the energy counters of `em:N`.
    EmData(u32),
}

impl Component {
    /// `switch:0` → `Switch(0)`; `None` for components that carry no readings.
    fn parse(key: &str) -> Option<Self> {
        let (kind, id) = key.split_once(':')?;
        let id: u32 = id.parse().ok()?;
        match kind.to_ascii_lowercase().as_str() {
            "switch" => Some(Component::Switch(id)),
            "pm1" => Some(Component::Pm1(id)),
            "em" => Some(Component::Em(id)),
            "emdata" => Some(Component::EmData(id)),
            _ => None,
        }
    }

    /// Appends the rows of one component status to `out`.
    fn decode(
        self,
        key: &str,
        status: &Map<String, Json>,
        time: i64,
        device: &str,
        out: &mut Decoded,
    ) {
        match self {
            Component::Switch(id) | Component::Pm1(id) => {
                let mut row = Fields::new(status, key);
                row.number("apower", "power_w");
                row.number("voltage", "voltage_v");
                row.number("current", "current_a");
                row.nested_number("aenergy", "total", "energy_wh");
                if let Component::Switch(_) = self {
                    row.boolean("output", "switch_on");
                    row.nested_number("temperature", "tC", "temperature_c");
                }
                let tags = vec![(CHANNEL, id.to_string())];
                row.finish(SMART_PLUG.name, time, device, tags, out);
            }
            Component::Em(id) | Component::EmData(id) => {
                let (totals, per_phase) = match self {
                    Component::Em(_) => (EM_TOTAL, EM_PHASE),
                    _ => (EMDATA_TOTAL, EMDATA_PHASE),
                };
                let mut total = Fields::new(status, key);
                for (member, column) in totals {
                    total.number(member, column);
                }
                total.finish(METER.name, time, device, em_tags(id, None), out);
                for (p, phase) in PHASES {
                    let mut row = Fields::new(status, key);
                    for (member, column) in per_phase {
                        row.number(&format!("{p}_{member}"), column);
                    }
                    row.finish(METER.name, time, device, em_tags(id, Some(phase)), out);
                }
            }
        }
    }
}

/// Shelly's phase key prefixes and the canonical phase names.
const PHASES: [(&str, &str); 3] = [("a", "L1"), ("b", "L2"), ("c", "L3")];

/// `em:N` members of the total row: (member, column).
const EM_TOTAL: &[(&str, &str)] = &[
    ("total_act_power", "power_w"),
    ("total_current", "current_a"),
];

/// `em:N` members of each phase row, after the phase prefix (`a_voltage`): (member,
/// column).
const EM_PHASE: &[(&str, &str)] = &[
    ("voltage", "voltage_v"),
    ("current", "current_a"),
    ("act_power", "power_w"),
    ("freq", "frequency_hz"),
];

/// `emdata:N` members of the total row: (member, column).
const EMDATA_TOTAL: &[(&str, &str)] = &[
    ("total_act", "energy_import_wh"),
    ("total_act_ret", "energy_export_wh"),
];

/// `emdata:N` members of each phase row, after the phase prefix: (member, column).
const EMDATA_PHASE: &[(&str, &str)] = &[
    ("total_act_energy", "energy_import_wh"),
    ("total_act_ret_energy", "energy_export_wh"),
];

/// Tags of a meter row: `channel` only for a second EM instance (`em:1`), which the
/// meter table would otherwise mix with the first; `phase` for phase rows.
fn em_tags(id: u32, phase: Option<&'static str>) -> Vec<(&'static str, String)> {
    let mut tags = Vec::new();
    if id != 0 {
        tags.push((CHANNEL, id.to_string()));
    }
    if let Some(phase) = phase {
        tags.push((PHASE, phase.to_string()));
    }
    tags
}

/// The fields of one row read from one status object; values of the wrong type become
/// problems naming `<component>.<key>`, absent and `null` values are left out.
struct Fields<'a> {
    status: &'a Map<String, Json>,
    component: &'a str,
    fields: Vec<(String, Value)>,
    problems: Vec<String>,
}

impl<'a> Fields<'a> {
    fn new(status: &'a Map<String, Json>, component: &'a str) -> Self {
        Self {
            status,
            component,
            fields: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn number(&mut self, key: &str, column: &str) {
        let value = self.status.get(key);
        self.put_number(value, key, column);
    }

    /// A number inside an object member (`aenergy.total`, `temperature.tC`).
    fn nested_number(&mut self, object: &str, key: &str, column: &str) {
        match self.status.get(object) {
            None | Some(Json::Null) => {}
            Some(Json::Object(inner)) => {
                let value = inner.get(key);
                self.put_number(value, &format!("{object}.{key}"), column);
            }
            Some(other) => self.problems.push(format!(
                "{}.{object}: expected an object, got {}",
                self.component,
                describe(other)
            )),
        }
    }

    fn put_number(&mut self, value: Option<&Json>, path: &str, column: &str) {
        match value {
            None | Some(Json::Null) => {}
            Some(Json::Number(n)) => {
                if let Some(v) = n.as_f64() {
                    self.fields.push((column.to_string(), Value::F64(v)));
                }
            }
            Some(other) => self.problems.push(format!(
                "{}.{path}: expected a number, got {}",
                self.component,
                describe(other)
            )),
        }
    }

    fn boolean(&mut self, key: &str, column: &str) {
        match self.status.get(key) {
            None | Some(Json::Null) => {}
            Some(Json::Bool(b)) => self.fields.push((column.to_string(), Value::Bool(*b))),
            Some(other) => self.problems.push(format!(
                "{}.{key}: expected true or false, got {}",
                self.component,
                describe(other)
            )),
        }
    }

    /// Appends the row (when it has a field) and the problems to `out`.
    fn finish(
        self,
        table: &str,
        time: i64,
        device: &str,
        tags: Vec<(&'static str, String)>,
        out: &mut Decoded,
    ) {
        out.problems.extend(self.problems);
        if self.fields.is_empty() {
            return;
        }
        let mut reading = Reading::new(table, time).tag(DEVICE_ID, device);
        for (k, v) in tags {
            reading = reading.tag(k, v);
        }
        reading.fields = self.fields;
        out.readings.push(reading);
    }
}

/// Applies a NotifyStatus-style update: members replace, nested objects merge, `null`
/// removes the key.
fn overlay(base: &mut Map<String, Json>, update: &Map<String, Json>) {
    for (key, value) in update {
        match value {
            Json::Null => {
                base.remove(key);
            }
            Json::Object(inner) => match base.get_mut(key) {
                Some(Json::Object(existing)) => overlay(existing, inner),
                _ => {
                    let mut fresh = Map::new();
                    overlay(&mut fresh, inner);
                    base.insert(key.clone(), Json::Object(fresh));
                }
            },
            other => {
                base.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{
        RECEIVED, assert_device_status, assert_problems, decode, decode_err, decode_truncated, f,
        run,
    };

    fn row<'r>(readings: &'r [Reading], phase: Option<&str>) -> &'r Reading {
        readings
            .iter()
            .find(|r| r.tag_value(PHASE) == phase)
            .unwrap_or_else(|| panic!("no row with phase {phase:?} in {readings:#?}"))
    }

    // Switch.GetStatus example, "Status" section of
    // https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch#status
    const SWITCH_STATUS: &str = r#"{
        "id": 0,
        "source": "WS_in",
        "output": false,
        "apower": 0,
        "voltage": 225.9,
        "current": 0,
        "freq": 50,
        "aenergy": {"total": 11.679, "by_minute": [0, 0, 0], "minute_ts": 1654511972},
        "ret_aenergy": {"total": 5.817, "by_minute": [0, 0, 0], "minute_ts": 1654511615},
        "temperature": {"tC": 53.3, "tF": 127.9}
    }"#;

    // PM1 status example, "Status" section of
    // https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/PM1#status
    const PM1_STATUS: &str = r#"{
        "id": 0,
        "voltage": 240.2,
        "current": 6.473,
        "apower": 1327.7,
        "aprtpower": 1557.6,
        "pf": 0.87,
        "freq": 50,
        "aenergy": {"total": 11.679, "by_minute": [887.3, 0, 0], "minute_ts": 1653633877},
        "ret_aenergy": {"total": 5.817, "by_minute": [0, 0, 0], "minute_ts": 1653633877}
    }"#;

    // EM.GetStatus example of
    // https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/EM#emgetstatus-example
    // (the documented example spells phase C's power `c_active_power`; devices send
    // `c_act_power`, so this fixture has no phase C power).
    const EM_STATUS: &str = r#"{
        "id": 0,
        "a_current": 4.029, "a_voltage": 236.1, "a_act_power": 951.2, "a_aprt_power": 951.9,
        "a_pf": 1, "a_freq": 50,
        "b_current": 4.027, "b_voltage": 236.201, "b_act_power": -951.1, "b_aprt_power": 951.8,
        "b_pf": 1, "b_freq": 50,
        "c_current": 3.03, "c_voltage": 236.402, "c_active_power": 715.4, "c_aprt_power": 716.2,
        "c_pf": 1, "c_freq": 50,
        "n_current": 11.029,
        "total_current": 11.083, "total_act_power": 2484.782, "total_aprt_power": 2486.7,
        "user_calibrated_phase": [],
        "errors": ["phase_sequence"]
    }"#;

    // EMData.GetStatus example of
    // https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/EMData#emdatagetstatus-example
    const EMDATA_STATUS: &str = r#"{
        "id": 0,
        "a_total_act_energy": 0, "a_total_act_ret_energy": 0,
        "b_total_act_energy": 0, "b_total_act_ret_energy": 0,
        "c_total_act_energy": 0, "c_total_act_ret_energy": 0,
        "total_act": 0, "total_act_ret": 0
    }"#;

    // NotifyStatus "Example 1" of
    // https://shelly-api-docs.shelly.cloud/gen2/General/Notifications#notifystatus
    const NOTIFY_SWITCH_ON: &str = r#"{
        "src": "shellypro4pm-f008d1d8b8b8",
        "dst": "user_1",
        "method": "NotifyStatus",
        "params": {"ts": 1631186545.04, "switch:0": {"id": 0, "output": true, "source": "button"}}
    }"#;

    // NotifyStatus "Example 2" of the same page: a cloud connection change.
    const NOTIFY_CLOUD: &str = r#"{
        "src": "shellypro4pm-f008d1d8b8b8",
        "dst": "user_1",
        "method": "NotifyStatus",
        "params": {"ts": 1624348482.25, "cloud": {"connected": false}}
    }"#;

    // NotifyEvent example of
    // https://shelly-api-docs.shelly.cloud/gen2/General/Notifications#notifyevent
    const NOTIFY_EVENT: &str = r#"{
        "src": "shellypro4pm-f008d1d8b8b8",
        "dst": "user_1",
        "method": "NotifyEvent",
        "params": {"ts": 1631266595.43,
                   "events": [{"component": "input:0", "id": 0, "event": "single_push",
                               "ts": 1631266595.43}]}
    }"#;

    const PREFIX: &str = "shellypro4pm-f008d1d8b8b8";

    #[test]
    fn switch_status_from_the_docs_becomes_a_smart_plug_row() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, &format!("{PREFIX}/status/switch:0"), SWITCH_STATUS);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.table, "smart_plug");
        assert_eq!(r.time, RECEIVED, "status topics carry no timestamp");
        assert_eq!(r.tag_value("device_id"), Some(PREFIX));
        assert_eq!(r.tag_value("channel"), Some("0"));
        assert_eq!(f(r, "power_w"), Some(0.0));
        assert_eq!(f(r, "voltage_v"), Some(225.9));
        assert_eq!(f(r, "current_a"), Some(0.0));
        assert_eq!(
            f(r, "energy_wh"),
            Some(11.679),
            "aenergy.total is Wh already"
        );
        assert_eq!(f(r, "temperature_c"), Some(53.3));
        assert_eq!(r.field_value("switch_on"), Some(&Value::Bool(false)));
        assert_eq!(r.fields.len(), 6, "{:?}", r.fields);
    }

    #[test]
    fn pm1_status_from_the_docs_has_no_relay() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, "shellypmmini-1/status/pm1:0", PM1_STATUS);
        let r = &out.readings[0];
        assert_eq!(r.table, "smart_plug");
        assert_eq!(r.tag_value("channel"), Some("0"));
        assert_eq!(f(r, "power_w"), Some(1327.7));
        assert_eq!(f(r, "voltage_v"), Some(240.2));
        assert_eq!(f(r, "current_a"), Some(6.473));
        assert_eq!(f(r, "energy_wh"), Some(11.679));
        assert_eq!(r.field_value("switch_on"), None);
    }

    #[test]
    fn em_status_from_the_docs_becomes_total_and_phase_rows() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, "shellypro3em-1/status/em:0", EM_STATUS);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 4);
        assert!(out.readings.iter().all(|r| r.table == "meter"));
        assert!(
            out.readings
                .iter()
                .all(|r| r.tag_value("channel").is_none())
        );
        let total = row(&out.readings, None);
        assert_eq!(f(total, "power_w"), Some(2484.782));
        assert_eq!(f(total, "current_a"), Some(11.083));
        assert_eq!(f(total, "voltage_v"), None);
        let l1 = row(&out.readings, Some("L1"));
        assert_eq!(f(l1, "voltage_v"), Some(236.1));
        assert_eq!(f(l1, "current_a"), Some(4.029));
        assert_eq!(f(l1, "power_w"), Some(951.2));
        assert_eq!(f(l1, "frequency_hz"), Some(50.0));
        let l2 = row(&out.readings, Some("L2"));
        assert_eq!(f(l2, "power_w"), Some(-951.1), "export stays negative");
        let l3 = row(&out.readings, Some("L3"));
        assert_eq!(f(l3, "voltage_v"), Some(236.402));
        assert_eq!(
            f(l3, "power_w"),
            None,
            "never invent a value for a missing key"
        );
    }

    #[test]
    fn emdata_status_becomes_import_and_export_registers() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, "shellypro3em-1/status/emdata:0", EMDATA_STATUS);
        assert_eq!(out.readings.len(), 4);
        for r in &out.readings {
            assert_eq!(r.table, "meter");
            assert_eq!(f(r, "energy_import_wh"), Some(0.0));
            assert_eq!(f(r, "energy_export_wh"), Some(0.0));
        }
        let counters = r#"{"id":0,"a_total_act_energy":1075513.08,"a_total_act_ret_energy":0.0,
            "total_act":2852055.81,"total_act_ret":12.5}"#;
        let out = decode(&mut d, "shellypro3em-1/status/emdata:0", counters);
        assert_eq!(out.readings.len(), 2, "phases b and c are absent: no rows");
        assert_eq!(
            f(row(&out.readings, None), "energy_import_wh"),
            Some(2852055.81)
        );
        assert_eq!(f(row(&out.readings, None), "energy_export_wh"), Some(12.5));
        assert_eq!(
            f(row(&out.readings, Some("L1")), "energy_import_wh"),
            Some(1075513.08)
        );
    }

    #[test]
    fn notify_status_overlays_the_last_full_status() {
        let mut d = ShellyDecoder::new();
        decode(&mut d, &format!("{PREFIX}/status/switch:0"), SWITCH_STATUS);
        let out = decode(&mut d, &format!("{PREFIX}/events/rpc"), NOTIFY_SWITCH_ON);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.time, seconds_to_ns(1631186545.04).unwrap(), "params.ts");
        assert_eq!(r.tag_value("device_id"), Some(PREFIX), "from src");
        assert_eq!(r.field_value("switch_on"), Some(&Value::Bool(true)));
        assert_eq!(
            f(r, "voltage_v"),
            Some(225.9),
            "unchanged values come from the base"
        );
        assert_eq!(f(r, "energy_wh"), Some(11.679));

        // A partial nested update and a key that disappeared (sent as null).
        let update = r#"{"src":"shellypro4pm-f008d1d8b8b8","method":"NotifyStatus",
            "params":{"ts":1631186600,"switch:0":{"id":0,"apower":42.5,
                "aenergy":{"total":12.0},"temperature":null}}}"#;
        let out = decode(&mut d, &format!("{PREFIX}/events/rpc"), update);
        let r = &out.readings[0];
        assert_eq!(f(r, "power_w"), Some(42.5));
        assert_eq!(f(r, "energy_wh"), Some(12.0));
        assert_eq!(f(r, "temperature_c"), None, "null removes the key");
        assert_eq!(
            r.field_value("switch_on"),
            Some(&Value::Bool(true)),
            "kept from the last update"
        );
    }

    #[test]
    fn notify_status_without_a_base_keeps_only_what_it_carries() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, &format!("{PREFIX}/events/rpc"), NOTIFY_SWITCH_ON);
        let r = &out.readings[0];
        assert_eq!(r.fields, vec![("switch_on".to_string(), Value::Bool(true))]);
        // The cache is per topic prefix: another device's status is not a base.
        decode(&mut d, "other/status/switch:0", SWITCH_STATUS);
        let out = decode(&mut d, &format!("{PREFIX}/events/rpc"), NOTIFY_SWITCH_ON);
        assert_eq!(out.readings[0].fields.len(), 1);
    }

    #[test]
    fn redelivered_notifications_decode_to_the_same_row() {
        let mut d = ShellyDecoder::new();
        decode(&mut d, &format!("{PREFIX}/status/switch:0"), SWITCH_STATUS);
        let first = decode(&mut d, &format!("{PREFIX}/events/rpc"), NOTIFY_SWITCH_ON);
        let again = decode(&mut d, &format!("{PREFIX}/events/rpc"), NOTIFY_SWITCH_ON);
        assert_eq!(first, again);
    }

    #[test]
    fn notify_full_status_replaces_the_base_and_decodes_every_metering_component() {
        // Frame shape from https://shelly-api-docs.shelly.cloud/gen2/General/Notifications,
        // component statuses from the Switch and EM pages cited above.
        let full = format!(
            r#"{{"src":"{PREFIX}","dst":"user_1","method":"NotifyFullStatus",
                "params":{{"ts":1631186545.04,"sys":{{"uptime":100}},
                "switch:1":{SWITCH_STATUS},"em:0":{EM_STATUS}}}}}"#
        );
        let mut d = ShellyDecoder::new();
        decode(
            &mut d,
            &format!("{PREFIX}/status/switch:1"),
            r#"{"id":1,"output":true,"apower":5,"pf":1}"#,
        );
        let out = decode(&mut d, &format!("{PREFIX}/events/rpc"), &full);
        assert_eq!(out.readings.len(), 5, "one switch row and four meter rows");
        let plug = out
            .readings
            .iter()
            .find(|r| r.table == "smart_plug")
            .unwrap();
        assert_eq!(plug.tag_value("channel"), Some("1"));
        assert_eq!(plug.field_value("switch_on"), Some(&Value::Bool(false)));
        assert!(
            out.readings
                .iter()
                .all(|r| r.time == seconds_to_ns(1631186545.04).unwrap())
        );
    }

    #[test]
    fn non_metering_notifications_and_topics_decode_to_nothing() {
        let mut d = ShellyDecoder::new();
        let rpc = format!("{PREFIX}/events/rpc");
        assert_eq!(decode(&mut d, &rpc, NOTIFY_CLOUD), Decoded::default());
        assert_eq!(decode(&mut d, &rpc, NOTIFY_EVENT), Decoded::default());
        let response = r#"{"id":1,"src":"shellyplus1-a","dst":"me","result":{"was_on":false}}"#;
        assert_eq!(decode(&mut d, &rpc, response), Decoded::default());
        let sys = r#"{"mac":"A8032ABE54DC","uptime":200}"#;
        assert_eq!(
            decode(&mut d, &format!("{PREFIX}/status/sys"), sys),
            Decoded::default()
        );
        let input = r#"{"id":0,"state":false}"#;
        assert_eq!(
            decode(&mut d, &format!("{PREFIX}/status/input:0"), input),
            Decoded::default()
        );
        assert_eq!(
            decode(&mut d, &format!("{PREFIX}/rpc"), "{}"),
            Decoded::default()
        );
        assert_eq!(
            decode(&mut d, &format!("{PREFIX}/status/switch:0"), ""),
            Decoded::default()
        );
        assert_eq!(
            decode(&mut d, &format!("{PREFIX}/online"), ""),
            Decoded::default()
        );
    }

    #[test]
    fn online_topic_becomes_device_status() {
        // `<topic_prefix>/online` is `true` on connect and `false` as last will:
        // https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt
        let mut d = ShellyDecoder::new();
        for (payload, online) in [("true", true), ("false\n", false)] {
            let out = decode(&mut d, "shellyplus1-a8032abe54dc/online", payload);
            let r = &out.readings[0];
            assert_device_status(r, "shellyplus1-a8032abe54dc", online);
            assert_eq!(
                r.field_value("reason"),
                Some(&Value::Str(payload.trim().into()))
            );
        }
        let err = decode_err(&mut d, "x/online", "yes");
        assert!(
            err.contains("expected true or false") && err.contains("yes"),
            "{err}"
        );
    }

    #[test]
    fn context_device_id_wins_over_src_and_prefix() {
        let tags = vec![("device_id".to_string(), "plug-7".to_string())];
        let mut d = ShellyDecoder::new();
        let rpc = format!("{PREFIX}/events/rpc");
        let out = run(&mut d, &rpc, &tags, NOTIFY_SWITCH_ON).unwrap();
        assert_eq!(out.readings[0].tag_value("device_id"), Some("plug-7"));
        assert_eq!(
            out.readings[0].tags.len(),
            2,
            "site_id etc. are the collector's to add"
        );
    }

    #[test]
    fn custom_prefixes_with_slashes_are_the_fallback_device_id() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, "home/garage/plug/status/switch:0", SWITCH_STATUS);
        assert_eq!(
            out.readings[0].tag_value("device_id"),
            Some("home/garage/plug")
        );
        let err = decode_err(&mut d, "/status/switch:0", SWITCH_STATUS);
        assert!(err.starts_with("no device id"), "{err}");
    }

    #[test]
    fn bad_payloads_are_errors_that_name_the_problem() {
        let mut d = ShellyDecoder::new();
        let status = format!("{PREFIX}/status/switch:0");
        let rpc = format!("{PREFIX}/events/rpc");
        let cases = [
            (status.as_str(), "{oops", "not JSON"),
            (
                status.as_str(),
                "[1,2]",
                "expected the component's status object, got an array",
            ),
            (rpc.as_str(), "42", "expected a JSON-RPC frame object"),
            (rpc.as_str(), r#"{"method":7}"#, "method must be a string"),
            (
                rpc.as_str(),
                r#"{"method":"NotifyStatus"}"#,
                "params is missing",
            ),
            (
                rpc.as_str(),
                r#"{"method":"NotifyStatus","params":[]}"#,
                "params is missing",
            ),
            (
                rpc.as_str(),
                r#"{"method":"NotifyStatus","params":{"ts":1,"switch:0":"on"}}"#,
                "params.switch:0: expected a status object, got the string \"on\"",
            ),
        ];
        for (topic, payload, expected) in cases {
            let err = decode_err(&mut d, topic, payload);
            assert!(err.contains(expected), "{payload}: {err}");
        }
        let err = run(&mut d, &status, &[], b"\xff\xfe").unwrap_err();
        assert!(err.0.starts_with("not JSON"), "{err}");
    }

    #[test]
    fn wrongly_typed_values_are_problems_and_the_rest_is_kept() {
        let mut d = ShellyDecoder::new();
        let payload = r#"{"id":0,"output":"yes","apower":"12 W","voltage":230.5,
            "aenergy":[1],"temperature":{"tC":null}}"#;
        let out = decode(&mut d, "p/status/switch:0", payload);
        assert_eq!(out.readings.len(), 1);
        assert_eq!(
            out.readings[0].fields,
            vec![("voltage_v".to_string(), Value::F64(230.5))]
        );
        assert_problems(
            &out.problems,
            &[
                "switch:0.apower: expected a number, got the string \"12 W\"",
                "switch:0.output: expected true or false",
                "switch:0.aenergy: expected an object, got an array",
            ],
        );
        assert_eq!(out.problems.len(), 3);

        // Nothing usable at all: an error carrying every problem.
        let err = decode_err(&mut d, "p/status/pm1:0", r#"{"apower":"x","voltage":true}"#);
        assert!(
            err.contains("pm1:0.apower") && err.contains("pm1:0.voltage"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_status_is_nothing_to_store() {
        let mut d = ShellyDecoder::new();
        let out = decode(&mut d, "p/status/switch:0", r#"{"id":0}"#);
        assert_eq!(out, Decoded::default());
    }

    #[test]
    fn bad_or_unset_timestamps_fall_back_to_the_receive_time_with_a_problem() {
        let mut d = ShellyDecoder::new();
        for (ts, expected) in [
            ("\"soon\"", "expected Unix seconds"),
            ("12.5", "before 2016"),
        ] {
            let payload = format!(
                r#"{{"src":"s","method":"NotifyStatus","params":{{"ts":{ts},"switch:0":{{"output":true}}}}}}"#
            );
            let out = decode(&mut d, "p/events/rpc", &payload);
            assert_eq!(out.readings[0].time, RECEIVED);
            assert!(out.problems[0].contains(expected), "{:?}", out.problems);
        }
        let payload =
            r#"{"src":"s","method":"NotifyStatus","params":{"switch:0":{"output":true}}}"#;
        let out = decode(&mut d, "p/events/rpc", payload);
        assert_eq!(out.readings[0].time, RECEIVED);
        assert!(out.problems.is_empty());
    }

    #[test]
    fn second_em_instance_is_tagged_by_channel() {
        let mut d = ShellyDecoder::new();
        let out = decode(
            &mut d,
            "p/status/em:1",
            r#"{"id":1,"total_act_power":10,"a_voltage":230}"#,
        );
        assert_eq!(out.readings.len(), 2);
        assert!(
            out.readings
                .iter()
                .all(|r| r.tag_value("channel") == Some("1"))
        );
    }

    #[test]
    fn overlay_merges_nested_objects_and_removes_nulls() {
        let mut base = serde_json::json!({"a": 1, "o": {"x": 1, "y": 2}, "gone": true});
        let update =
            serde_json::json!({"a": 2, "o": {"y": null, "z": 3}, "gone": null, "n": {"k": null}});
        overlay(base.as_object_mut().unwrap(), update.as_object().unwrap());
        assert_eq!(
            base,
            serde_json::json!({"a": 2, "o": {"x": 1, "z": 3}, "n": {}})
        );
    }

    #[test]
    fn topics_and_components_parse() {
        assert!(matches!(
            Topic::parse("a/b/status/em:0"),
            Topic::Status {
                prefix: "a/b",
                component: "em:0"
            }
        ));
        assert!(matches!(
            Topic::parse("a/events/rpc"),
            Topic::Events { prefix: "a" }
        ));
        assert!(matches!(
            Topic::parse("a/online"),
            Topic::Online { prefix: "a" }
        ));
        assert!(matches!(Topic::parse("a/rpc"), Topic::Other));
        assert_eq!(Component::parse("switch:3"), Some(Component::Switch(3)));
        assert_eq!(Component::parse("PM1:0"), Some(Component::Pm1(0)));
        assert_eq!(Component::parse("emdata:0"), Some(Component::EmData(0)));
        assert_eq!(Component::parse("em1:0"), None);
        assert_eq!(Component::parse("switch"), None);
        assert_eq!(Component::parse("switch:x"), None);
    }

    #[test]
    fn the_status_cache_is_bounded() {
        let mut d = ShellyDecoder::new();
        for i in 0..MAX_CACHED {
            d.last_status
                .insert((format!("p{i}"), "switch:0".into()), Map::new());
        }
        let out = decode(&mut d, "new/status/switch:0", SWITCH_STATUS);
        assert_eq!(out.readings.len(), 1, "still decoded");
        assert_eq!(d.last_status.len(), MAX_CACHED, "but not cached");
        decode(&mut d, "p0/status/switch:0", SWITCH_STATUS);
        assert_eq!(
            d.last_status[&("p0".to_string(), "switch:0".to_string())].len(),
            10,
            "known keys are still updated"
        );
    }

    #[test]
    fn truncated_payloads_never_panic() {
        let mut d = ShellyDecoder::new();
        let cases = [
            ("p/status/switch:0", SWITCH_STATUS),
            ("p/status/em:0", EM_STATUS),
            ("p/events/rpc", NOTIFY_SWITCH_ON),
            ("p/online", "false"),
        ];
        for (topic, payload) in cases {
            decode_truncated(&mut d, topic, payload);
        }
    }
}

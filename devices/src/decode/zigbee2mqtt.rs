//! Zigbee2MQTT over MQTT.
//!
//! | topic | payload | rows |
//! |---|---|---|
//! | `<base>/<friendly name>` | the device's state, a JSON object | the configured table |
//! | `<base>/<friendly name>/availability` | `online` / `offline`, or `{"state":"online"}` | `device_status` |
//! | `<base>/bridge/...`, `.../set`, `.../get`, `.../set/<attribute>` | | nothing |
//!
//! The base topic is the first topic segment (`zigbee2mqtt` by default); everything
//! after it is the friendly name, which may itself contain `/` (`kitchen/floor_light`).
//! A base topic with `/` in it (`home/zigbee2mqtt`) cannot be told apart from a name:
//! such subscriptions should set `device_id` from a topic template.
//!
//! State members read: `power` (W), `energy` (kWh, ×1000 → Wh), `voltage` (V),
//! `current` (A), `state` (`ON`/`OFF` → `switch_on`; other states such as a cover's
//! `OPEN` are not a relay state and are left out), `last_seen` (the row's time: ISO 8601
//! with offset, or Unix milliseconds, per the bridge's `advanced.last_seen` setting).
//! Without `last_seen` the row is at the receive time. A canonical table receives only
//! the columns it defines (`energy` goes to `energy_import_wh` in `meter`). Devices that
//! report none of these members (a temperature sensor, a button) decode to nothing.
//!
//! An empty payload is MQTT's way of deleting a retained message (Zigbee2MQTT sends one
//! when a device is renamed or removed) and decodes to nothing.

use serde_json::{Map, Value as Json};

use crate::decode::{
    clip, column, deletes_retained, describe, device_status, finish, parse_json, require_device,
    rfc3339_to_ns,
};
use crate::reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};
use crate::tables::{self, DEVICE_ID};

/// What a missing device id lacks, for [`require_device`]'s error: the friendly name is
/// the fallback.
const NO_DEVICE: &str = "names no device";

/// Decodes Zigbee2MQTT device state into one configured table.
#[derive(Debug, Clone)]
pub struct Zigbee2MqttDecoder {
    table: String,
    /// Numeric members: (JSON key, column, scale to the canonical unit).
    numbers: Vec<(&'static str, &'static str, f64)>,
    /// Column for `state`, when the table has one.
    switch_on: Option<&'static str>,
}

impl Zigbee2MqttDecoder {
    /// A decoder writing device state to `table` (usually `smart_plug`).
    pub fn new(table: String) -> Self {
        let spec = tables::table(&table);
        let members: [(&str, Option<&'static str>, f64); 4] = [
            ("power", column(spec, &["power_w"]), 1.0),
            (
                "energy",
                column(spec, &["energy_wh", "energy_import_wh"]),
                1000.0,
            ),
            ("voltage", column(spec, &["voltage_v"]), 1.0),
            ("current", column(spec, &["current_a"]), 1.0),
        ];
        let numbers = members
            .into_iter()
            .filter_map(|(key, col, scale)| col.map(|c| (key, c, scale)))
            .collect();
        Self {
            table,
            numbers,
            switch_on: column(spec, &["switch_on"]),
        }
    }

    fn state(
        &self,
        ctx: &DecodeContext<'_>,
        name: &str,
        payload: &[u8],
    ) -> Result<Decoded, DecodeError> {
        let state = parse_json(payload)?;
        let Json::Object(state) = state else {
            return Err(DecodeError::new(format!(
                "{name}: expected the device state as a JSON object, got {}",
                describe(&state)
            )));
        };
        let mut out = Decoded::default();
        let mut fields: Vec<(String, Value)> = Vec::new();
        for &(key, column, scale) in &self.numbers {
            match state.get(key) {
                None | Some(Json::Null) => {}
                Some(Json::Number(n)) => {
                    if let Some(v) = n.as_f64() {
                        fields.push((column.to_string(), Value::F64(v * scale)));
                    }
                }
                Some(other) => out.problems.push(format!(
                    "{name}.{key}: expected a number, got {}",
                    describe(other)
                )),
            }
        }
        if let Some(column) = self.switch_on {
            match state.get("state") {
                Some(Json::String(s)) if s.eq_ignore_ascii_case("on") => {
                    fields.push((column.to_string(), Value::Bool(true)));
                }
                Some(Json::String(s)) if s.eq_ignore_ascii_case("off") => {
                    fields.push((column.to_string(), Value::Bool(false)));
                }
                // OPEN, LOCK, ...: the state of something that is not a relay.
                None | Some(Json::Null) | Some(Json::String(_)) => {}
                Some(other) => out.problems.push(format!(
                    "{name}.state: expected \"ON\" or \"OFF\", got {}",
                    describe(other)
                )),
            }
        }
        if fields.is_empty() {
            return finish(out);
        }
        let time = last_seen(&state, name, ctx.received_at, &mut out.problems);
        let device = require_device(ctx, Some(name), NO_DEVICE)?;
        let mut reading = Reading::new(&self.table, time).tag(DEVICE_ID, device);
        reading.fields = fields;
        out.readings.push(reading);
        finish(out)
    }
}

impl Decode for Zigbee2MqttDecoder {
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError> {
        if deletes_retained(payload) {
            return Ok(Decoded::default());
        }
        match Topic::parse(ctx.topic)? {
            Topic::Ignored => Ok(Decoded::default()),
            Topic::State(name) => self.state(ctx, &name, payload),
            Topic::Availability(name) => availability(ctx, &name, payload),
        }
    }
}

/// What a topic under the base topic is.
#[derive(Debug, PartialEq, Eq)]
enum Topic {
    /// `<base>/<name>`: device state.
    State(String),
    /// `<base>/<name>/availability`.
    Availability(String),
    /// Bridge topics and commands to devices.
    Ignored,
}

impl Topic {
    fn parse(topic: &str) -> Result<Self, DecodeError> {
        let segments: Vec<&str> = topic.split('/').collect();
        let name = segments.get(1..).unwrap_or_default();
        if name.iter().all(|s| s.is_empty()) {
            return Err(DecodeError::new(format!(
                "topic {topic:?} has no friendly name after the base topic"
            )));
        }
        if name[0] == "bridge" {
            return Ok(Topic::Ignored);
        }
        let n = name.len();
        let is_command = |s: &str| s == "set" || s == "get";
        if is_command(name[n - 1]) || (n >= 2 && is_command(name[n - 2])) {
            return Ok(Topic::Ignored);
        }
        if n >= 2 && name[n - 1] == "availability" {
            return Ok(Topic::Availability(name[..n - 1].join("/")));
        }
        Ok(Topic::State(name.join("/")))
    }
}

/// `<base>/<name>/availability`: `online`/`offline`, or `{"state":"online"}` when the
/// bridge has `advanced.legacy_availability_payload: false`.
fn availability(
    ctx: &DecodeContext<'_>,
    name: &str,
    payload: &[u8],
) -> Result<Decoded, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::new(format!("{name}/availability: payload is not UTF-8")))?
        .trim();
    let state = if text.starts_with('{') {
        let json = parse_json(payload)?;
        match json.get("state") {
            Some(Json::String(s)) => s.clone(),
            other => {
                return Err(DecodeError::new(format!(
                    "{name}/availability: expected a \"state\" string, got {}",
                    other.map_or_else(|| "no state".to_string(), describe)
                )));
            }
        }
    } else {
        text.to_string()
    };
    let online = if state.eq_ignore_ascii_case("online") {
        true
    } else if state.eq_ignore_ascii_case("offline") {
        false
    } else {
        return Err(DecodeError::new(format!(
            "{name}/availability: expected online or offline, got {:?}",
            clip(&state)
        )));
    };
    let device = require_device(ctx, Some(name), NO_DEVICE)?;
    Ok(Decoded::readings(vec![device_status(
        ctx, device, online, state,
    )]))
}

/// The row time from `last_seen`: ISO 8601 (`ISO_8601`, `ISO_8601_local`) or Unix
/// milliseconds (`epoch`); the receive time, with a problem, when it is unusable.
fn last_seen(
    state: &Map<String, Json>,
    name: &str,
    received_at: i64,
    problems: &mut Vec<String>,
) -> i64 {
    let value = match state.get("last_seen") {
        None | Some(Json::Null) => return received_at,
        Some(value) => value,
    };
    let parsed = match value {
        Json::String(text) => rfc3339_to_ns(text),
        Json::Number(n) => n
            .as_i64()
            .and_then(|ms| ms.checked_mul(1_000_000))
            .or_else(|| n.as_f64().and_then(float_ms_to_ns)),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        problems.push(format!(
            "{name}.last_seen: expected an ISO 8601 time with offset or Unix milliseconds, \
             got {}; used the receive time",
            describe(value)
        ));
        received_at
    })
}

/// Fractional Unix milliseconds to ns, whole and fractional parts apart so that
/// `1717236930123.0` is exact (f64 has no room for the product in one piece).
fn float_ms_to_ns(ms: f64) -> Option<i64> {
    let whole = ms.trunc();
    if !whole.is_finite() || whole.abs() >= (i64::MAX / 1_000_000) as f64 {
        return None;
    }
    let fraction_ns = ((ms - whole) * 1e6).round() as i64;
    (whole as i64)
        .checked_mul(1_000_000)?
        .checked_add(fraction_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{
        RECEIVED, assert_device_status, decode, decode_err, decode_truncated, f, run,
    };

    fn plug() -> Zigbee2MqttDecoder {
        Zigbee2MqttDecoder::new("smart_plug".into())
    }

    // State of a metering plug with the members its Exposes section lists (switch
    // `state`, `power` W, `current` A, `voltage` V, `energy` kWh, `power_outage_memory`,
    // `linkquality`): https://www.zigbee2mqtt.io/devices/TS011F_plug_1.html
    const PLUG_STATE: &str = r#"{"state":"ON","power":61.2,"current":0.28,"voltage":231,
        "energy":12.345,"power_outage_memory":"restore","linkquality":120}"#;

    #[test]
    fn metering_plug_state_becomes_a_smart_plug_row() {
        let mut d = plug();
        let out = decode(&mut d, "zigbee2mqtt/dishwasher", PLUG_STATE);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.table, "smart_plug");
        assert_eq!(r.time, RECEIVED, "no last_seen: the receive time");
        assert_eq!(
            r.tags,
            vec![("device_id".to_string(), "dishwasher".to_string())]
        );
        assert_eq!(f(r, "power_w"), Some(61.2));
        assert_eq!(f(r, "current_a"), Some(0.28));
        assert_eq!(f(r, "voltage_v"), Some(231.0));
        assert_eq!(f(r, "energy_wh"), Some(12345.0), "kWh × 1000");
        assert_eq!(r.field_value("switch_on"), Some(&Value::Bool(true)));
        assert_eq!(r.fields.len(), 5);
    }

    #[test]
    fn friendly_names_may_contain_slashes() {
        // "kitchen/floor_light" is the example of
        // https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html
        let mut d = plug();
        let out = decode(
            &mut d,
            "zigbee2mqtt/kitchen/floor_light",
            r#"{"state":"OFF"}"#,
        );
        let r = &out.readings[0];
        assert_eq!(r.tag_value("device_id"), Some("kitchen/floor_light"));
        assert_eq!(
            r.fields,
            vec![("switch_on".to_string(), Value::Bool(false))]
        );
        let out = decode(
            &mut d,
            "zigbee2mqtt/kitchen/floor_light/availability",
            "offline",
        );
        assert_eq!(
            out.readings[0].tag_value("device_id"),
            Some("kitchen/floor_light")
        );
    }

    #[test]
    fn last_seen_in_every_bridge_format_sets_the_time() {
        // advanced.last_seen: ISO_8601, ISO_8601_local, epoch:
        // https://www.zigbee2mqtt.io/guide/configuration/all-settings.html
        let mut d = plug();
        let expected = rfc3339_to_ns("2024-06-01T10:15:30.123Z").unwrap();
        for last_seen in [
            r#""2024-06-01T10:15:30.123Z""#,
            r#""2024-06-01T12:15:30.123+02:00""#,
            "1717236930123",
            "1717236930123.0",
            "1717236930122.9999999",
        ] {
            let payload = format!(r#"{{"power":5,"last_seen":{last_seen}}}"#);
            let out = decode(&mut d, "zigbee2mqtt/p", &payload);
            assert_eq!(out.readings[0].time, expected, "{last_seen}");
            assert!(out.problems.is_empty());
        }
        // Redelivery decodes to the same row.
        let payload = r#"{"power":5,"last_seen":1717236930123}"#;
        assert_eq!(
            decode(&mut d, "zigbee2mqtt/p", payload),
            decode(&mut d, "zigbee2mqtt/p", payload)
        );
    }

    #[test]
    fn unusable_last_seen_falls_back_to_the_receive_time_with_a_problem() {
        let mut d = plug();
        for bad in [r#""yesterday""#, r#""2024-06-01T10:15:30""#, "true", "[1]"] {
            let payload = format!(r#"{{"power":5,"last_seen":{bad}}}"#);
            let out = decode(&mut d, "zigbee2mqtt/p", &payload);
            assert_eq!(out.readings[0].time, RECEIVED, "{bad}");
            assert!(
                out.problems[0].contains("p.last_seen: expected an ISO 8601 time"),
                "{:?}",
                out.problems
            );
        }
    }

    #[test]
    fn availability_in_legacy_and_json_form() {
        // https://www.zigbee2mqtt.io/guide/configuration/device-availability.html
        // ("online"/"offline", or {"state":"online"} without the legacy payload).
        let mut d = plug();
        for (payload, online) in [
            ("online", true),
            ("offline", false),
            (r#"{"state":"online"}"#, true),
            (r#"{"state":"offline"}"#, false),
        ] {
            let out = decode(
                &mut d,
                "zigbee2mqtt/0x00158d00018255df/availability",
                payload,
            );
            assert_device_status(&out.readings[0], "0x00158d00018255df", online);
        }
        let cases = [
            ("maybe", "expected online or offline, got \"maybe\""),
            (
                r#"{"status":"online"}"#,
                "expected a \"state\" string, got no state",
            ),
            (r#"{"state":1}"#, "expected a \"state\" string, got 1"),
            ("{oops", "not JSON"),
        ];
        for (payload, expected) in cases {
            let err = decode_err(&mut d, "zigbee2mqtt/p/availability", payload);
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }

    #[test]
    fn bridge_and_command_topics_and_empty_payloads_decode_to_nothing() {
        // Topics of https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html
        let mut d = plug();
        for (topic, payload) in [
            ("zigbee2mqtt/bridge/state", "online"),
            (
                "zigbee2mqtt/bridge/info",
                r#"{"version":"1.13.0-dev","commit":"772f6c0"}"#,
            ),
            ("zigbee2mqtt/bridge/devices", "[]"),
            (
                "zigbee2mqtt/bridge/response/permit_join",
                r#"{"data":{"value":true},"status":"ok"}"#,
            ),
            ("zigbee2mqtt/my_plug/set", r#"{"state":"ON"}"#),
            ("zigbee2mqtt/my_plug/get", r#"{"state":""}"#),
            ("zigbee2mqtt/my_plug/set/state", "ON"),
            ("zigbee2mqtt/my_plug", ""),
            ("zigbee2mqtt/my_plug/availability", " "),
        ] {
            assert_eq!(
                decode(&mut d, topic, payload),
                Decoded::default(),
                "{topic}"
            );
        }
    }

    #[test]
    fn devices_without_metering_members_decode_to_nothing() {
        // Examples of https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html
        let mut d = plug();
        for payload in [
            r#"{"temperature":27.34,"humidity":44.72}"#,
            r#"{"action":"single"}"#,
            r#"{"occupancy":true}"#,
            r#"{"state":"OPEN","position":100}"#,
        ] {
            assert_eq!(
                decode(&mut d, "zigbee2mqtt/sensor", payload),
                Decoded::default(),
                "{payload}"
            );
        }
        // A bulb reports its relay state like a plug does.
        let bulb = r#"{"state":"ON","brightness":215,"color_temp":325}"#;
        let out = decode(&mut d, "zigbee2mqtt/bulb", bulb);
        assert_eq!(
            out.readings[0].fields,
            vec![("switch_on".to_string(), Value::Bool(true))]
        );
    }

    #[test]
    fn canonical_tables_get_only_their_columns() {
        let mut meter = Zigbee2MqttDecoder::new("meter".into());
        let r = &decode(&mut meter, "zigbee2mqtt/clamp", PLUG_STATE).readings[0];
        assert_eq!(r.table, "meter");
        assert_eq!(f(r, "energy_import_wh"), Some(12345.0));
        assert_eq!(r.field_value("switch_on"), None);
        assert_eq!(r.field_value("energy_wh"), None);
        let mut custom = Zigbee2MqttDecoder::new("plugs".into());
        let r = &decode(&mut custom, "zigbee2mqtt/p", PLUG_STATE).readings[0];
        assert_eq!((r.table.as_str(), r.fields.len()), ("plugs", 5));
    }

    #[test]
    fn context_device_id_wins() {
        let mut d = plug();
        let tags = vec![("device_id".to_string(), "plug-42".to_string())];
        let out = run(&mut d, "zigbee2mqtt/dishwasher", &tags, PLUG_STATE).unwrap();
        assert_eq!(out.readings[0].tag_value("device_id"), Some("plug-42"));
    }

    #[test]
    fn bad_payloads_are_errors_that_name_the_problem() {
        let mut d = plug();
        let cases = [
            ("zigbee2mqtt/p", "{oops", "not JSON"),
            (
                "zigbee2mqtt/p",
                "[1,2]",
                "p: expected the device state as a JSON object, got an array",
            ),
            (
                "zigbee2mqtt/p",
                r#"{"power":"61 W"}"#,
                "p.power: expected a number, got the string \"61 W\"",
            ),
            (
                "zigbee2mqtt/p",
                r#"{"state":true}"#,
                "p.state: expected \"ON\" or \"OFF\", got true",
            ),
            ("zigbee2mqtt", "{}", "has no friendly name"),
            ("zigbee2mqtt/", "{}", "has no friendly name"),
        ];
        for (topic, payload, expected) in cases {
            let err = decode_err(&mut d, topic, payload);
            assert!(err.contains(expected), "{topic} {payload}: {err}");
        }
    }

    #[test]
    fn bad_members_are_problems_and_the_rest_is_kept() {
        let mut d = plug();
        let out = decode(
            &mut d,
            "zigbee2mqtt/p",
            r#"{"power":12,"energy":"lots","voltage":null}"#,
        );
        assert_eq!(
            out.readings[0].fields,
            vec![("power_w".to_string(), Value::F64(12.0))]
        );
        assert_eq!(
            out.problems,
            vec!["p.energy: expected a number, got the string \"lots\"".to_string()]
        );
    }

    #[test]
    fn topics_parse() {
        let p = |t| Topic::parse(t).unwrap();
        assert_eq!(p("z2m/a"), Topic::State("a".into()));
        assert_eq!(p("z2m/a/b/c"), Topic::State("a/b/c".into()));
        assert_eq!(p("z2m/a/b/availability"), Topic::Availability("a/b".into()));
        assert_eq!(p("z2m/availability"), Topic::State("availability".into()));
        assert_eq!(p("z2m/a/b/set"), Topic::Ignored);
        assert_eq!(p("z2m/a/get/brightness"), Topic::Ignored);
        assert_eq!(p("z2m/bridge/logging"), Topic::Ignored);
    }

    #[test]
    fn truncated_payloads_never_panic() {
        let mut d = plug();
        let cases = [
            ("zigbee2mqtt/p", PLUG_STATE),
            ("zigbee2mqtt/p/availability", r#"{"state":"online"}"#),
        ];
        for (topic, payload) in cases {
            decode_truncated(&mut d, topic, payload);
        }
    }
}

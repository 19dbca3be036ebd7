//! OCPP 1.6 and 2.0.1 charging-station messages → `ev_charger` rows.
//!
//! OCPP runs over a WebSocket between the charger and its management system; gridlake
//! sees the messages when a gateway or CSMS republishes them over MQTT, one message per
//! payload, either bare (`{"connectorId": 1, "meterValue": [...]}`) or as the OCPP-J
//! frame (`[2, "<id>", "MeterValues", {...}]`). In a frame the action name says which
//! message it is; a bare payload is recognised by its keys. Response frames (`[3, ...]`
//! CALLRESULT, `[4, ...]` CALLERROR) carry nothing to store.
//!
//! | Message                              | Stored                                          |
//! |--------------------------------------|-------------------------------------------------|
//! | 1.6 `MeterValues`, 2.0.1 `MeterValues` | measurands below, one row per timestamp and phase |
//! | 1.6 `StartTransaction`               | `energy_wh` = `meterStart`                      |
//! | 1.6 `StopTransaction`                | `energy_wh` = `meterStop`, `transactionData`, `session_id` |
//! | 1.6 `StatusNotification`             | `status` (Available, Charging, Faulted, ...)    |
//! | 2.0.1 `StatusNotification`           | `status` = `connectorStatus`                    |
//! | 2.0.1 `TransactionEvent`             | `status` = `chargingState`, `meterValue`, `session_id` |
//! | anything else (Heartbeat, BootNotification, Authorize, NotifyEvent, ...) | nothing |
//!
//! Measurands: `Energy.Active.Import.Register` → `energy_wh` (also when the measurand is
//! left out, as the spec defaults it), `Power.Active.Import` → `power_w`, `SoC` →
//! `soc_pct`, `Current.Import` → `current_a`, `Voltage` → `voltage_v`. A missing unit is
//! the measurand's default (Wh, W, Percent, A, V); kWh and kW are converted, 2.0.1's
//! `unitOfMeasure.multiplier` (a power of ten) is applied. Values may be strings (1.6) or
//! numbers (2.0.1). Other measurands (reactive energy, frequency, offered current, ...)
//! are legitimate but have no column and are skipped silently, as are 1.6 `SignedData`
//! values and phases the table has no row for (`N`, line-to-line `L1-L2`). A value that
//! is not a number, or a unit that does not fit its measurand, is a problem naming the
//! sampled value (`meterValue[0].sampledValue[2]: value "abc" is not a number`).
//!
//! Rows carry `device_id` (from the subscription's topic template: OCPP payloads do not
//! name their charger, so a subscription without one is an error), `connector` (1.6
//! `connectorId`, 2.0.1 EVSE id; left out for 0, the charger as a whole) and `phase`
//! (`L1`..`L3`; `L1-N` counts as `L1`). `session_id` is the transaction id.
//!
//! Two messages may not name their connector: 1.6 `StopTransaction` never does, and
//! `evse` is optional in 2.0.1 `TransactionEvent`s (chargers often send it only in the
//! first event of a transaction). The
//! decoder remembers which connector each open transaction is on, learnt from the
//! messages that say so, so those rows land in the connector's series; a transaction
//! first seen without its connector (after a restart) gets rows without one.
//!
//! 2.0.1 signed meter values (`signedMeterValue`) that repeat a plain sampled value of
//! the same measurand, phase and context are skipped: they are the fiscal copy of the
//! same reading, and some chargers put kWh in them without saying so (Keba P30).

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::DateTime;
use serde_json::{Map, Value as Json};

use crate::decode::{
    device_id, lenient_number, parse_json, quote, rfc3339_to_ns, summarise_problems,
};
use crate::reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};
use crate::tables::{DEVICE_ID, EV_CHARGER, PHASE};

/// Tag naming the connector (1.6) or EVSE (2.0.1) a row belongs to.
const CONNECTOR: &str = "connector";

/// Open transactions remembered per decoder; a charger has a handful at a time, so this
/// only bounds the memory taken by transactions whose end was never seen.
const MAX_REMEMBERED_SESSIONS: usize = 4096;

/// Decodes OCPP 1.6 and 2.0.1 messages (bare or OCPP-J CALL frames) into [`EV_CHARGER`]
/// rows. See the [module documentation](self) for what is stored.
#[derive(Debug, Default)]
pub struct OcppDecoder {
    sessions: SessionConnectors,
}

impl OcppDecoder {
    /// A decoder with no transactions remembered yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The connector each open transaction runs on, per charger.
#[derive(Debug, Default)]
struct SessionConnectors {
    connectors: HashMap<(String, String), String>,
    /// Insertion order, for evicting the oldest; may hold keys already removed.
    order: VecDeque<(String, String)>,
}

impl SessionConnectors {
    fn remember(&mut self, device: &str, session: &str, connector: &str) {
        let key = (device.to_string(), session.to_string());
        if let Some(known) = self.connectors.get_mut(&key) {
            *known = connector.to_string();
            return;
        }
        while self.connectors.len() >= MAX_REMEMBERED_SESSIONS {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.connectors.remove(&oldest);
                }
                None => break,
            }
        }
        if self.order.len() >= 2 * MAX_REMEMBERED_SESSIONS {
            let live = &self.connectors;
            self.order.retain(|k| live.contains_key(k));
        }
        self.connectors.insert(key.clone(), connector.to_string());
        self.order.push_back(key);
    }

    fn connector(&self, device: &str, session: &str) -> Option<&str> {
        self.connectors
            .get(&(device.to_string(), session.to_string()))
            .map(String::as_str)
    }

    fn forget(&mut self, device: &str, session: &str) {
        self.connectors
            .remove(&(device.to_string(), session.to_string()));
    }
}

/// The messages gridlake stores something from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    MeterValues16,
    MeterValues201,
    StartTransaction,
    StopTransaction,
    StatusNotification16,
    StatusNotification201,
    TransactionEvent,
}

impl Decode for OcppDecoder {
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let doc = parse_json(payload)?;
        let (action, body) = match &doc {
            Json::Array(frame) => match unframe(frame)? {
                Some(call) => call,
                None => return Ok(Decoded::default()),
            },
            Json::Object(body) => (None, body),
            other => {
                return Err(DecodeError::new(format!(
                    "an OCPP message is a JSON object or an OCPP-J frame array, not {}",
                    quote(other)
                )));
            }
        };
        let Some(message) = identify(action, body)? else {
            return Ok(Decoded::default());
        };
        let device = device_id(ctx, None).ok_or_else(|| {
            DecodeError::new(
                "OCPP messages do not name their charger: put {device_id} in the \
                 subscription's topic template (e.g. ocpp/{device_id}/in) or set it as a tag",
            )
        })?;
        let mut rows = Rows::new(device, ctx.received_at);
        let name = match message {
            Message::MeterValues16 => {
                self.meter_values_16(&mut rows, body)?;
                "MeterValues"
            }
            Message::MeterValues201 => {
                rows.connector = connector(body.get("evseId"), "evseId")?;
                let list = body.get("meterValue").ok_or_else(|| {
                    DecodeError::new("MeterValuesRequest has no meterValue array")
                })?;
                rows.meter_values("meterValue", list)?;
                "MeterValuesRequest"
            }
            Message::StartTransaction => {
                rows.connector = connector(body.get("connectorId"), "connectorId")?;
                let time = timestamp(body.get("timestamp"))
                    .map_err(|e| DecodeError::new(format!("StartTransaction {e}")))?;
                let meter_start = number(body.get("meterStart"))
                    .map_err(|e| DecodeError::new(format!("StartTransaction meterStart {e}")))?;
                // meterStart is the connector's register in Wh (OCPP 1.6 §6.45).
                rows.put(
                    time,
                    None,
                    "energy_wh",
                    Value::F64(meter_start),
                    "meterStart",
                );
                "StartTransaction"
            }
            Message::StopTransaction => {
                self.stop_transaction(&mut rows, body)?;
                "StopTransaction"
            }
            Message::StatusNotification16 => {
                rows.connector = connector(body.get("connectorId"), "connectorId")?;
                status_notification(&mut rows, body, "status", false)?;
                "StatusNotification"
            }
            Message::StatusNotification201 => {
                rows.connector = connector(body.get("evseId"), "evseId")?;
                status_notification(&mut rows, body, "connectorStatus", true)?;
                "StatusNotificationRequest"
            }
            Message::TransactionEvent => {
                self.transaction_event(&mut rows, body)?;
                "TransactionEventRequest"
            }
        };
        rows.finish(name)
    }
}

impl OcppDecoder {
    fn meter_values_16(
        &mut self,
        rows: &mut Rows,
        body: &Map<String, Json>,
    ) -> Result<(), DecodeError> {
        rows.connector = connector(body.get("connectorId"), "connectorId")?;
        rows.session = session(body.get("transactionId"), &mut rows.problems);
        if let (Some(s), Some(c)) = (&rows.session, &rows.connector) {
            self.sessions.remember(&rows.device, s, c);
        }
        let list = body
            .get("meterValue")
            .ok_or_else(|| DecodeError::new("MeterValues has no meterValue array"))?;
        rows.meter_values("meterValue", list)
    }

    fn stop_transaction(
        &mut self,
        rows: &mut Rows,
        body: &Map<String, Json>,
    ) -> Result<(), DecodeError> {
        rows.session = session(body.get("transactionId"), &mut rows.problems);
        if let Some(s) = &rows.session {
            rows.connector = self.sessions.connector(&rows.device, s).map(str::to_string);
            self.sessions.forget(&rows.device, s);
        }
        match (
            timestamp(body.get("timestamp")),
            number(body.get("meterStop")),
        ) {
            (Ok(time), Ok(wh)) => rows.put(time, None, "energy_wh", Value::F64(wh), "meterStop"),
            (Err(e), _) => rows.problems.push(e),
            (_, Err(e)) => rows.problems.push(format!("meterStop {e}")),
        }
        if let Some(data) = body.get("transactionData") {
            rows.meter_values("transactionData", data)?;
        }
        Ok(())
    }

    fn transaction_event(
        &mut self,
        rows: &mut Rows,
        body: &Map<String, Json>,
    ) -> Result<(), DecodeError> {
        let info = body
            .get("transactionInfo")
            .and_then(Json::as_object)
            .ok_or_else(|| {
                DecodeError::new("TransactionEventRequest has no transactionInfo object")
            })?;
        rows.session = session(info.get("transactionId"), &mut rows.problems);
        let evse = body.get("evse").map(|e| match e {
            Json::Object(evse) => connector(evse.get("id"), "evse.id"),
            other => Err(DecodeError::new(format!(
                "evse is {}, expected an object",
                quote(other)
            ))),
        });
        match (evse.transpose()?, &rows.session) {
            (Some(c), Some(s)) => {
                if let Some(c) = &c {
                    self.sessions.remember(&rows.device, s, c);
                }
                rows.connector = c;
            }
            (Some(c), None) => rows.connector = c,
            (None, Some(s)) => {
                rows.connector = self.sessions.connector(&rows.device, s).map(str::to_string)
            }
            (None, None) => {}
        }
        if body.get("eventType").and_then(Json::as_str) == Some("Ended")
            && let Some(s) = &rows.session
        {
            self.sessions.forget(&rows.device, s);
        }
        let time = timestamp(body.get("timestamp"))
            .map_err(|e| DecodeError::new(format!("TransactionEventRequest {e}")))?;
        match info.get("chargingState") {
            None | Some(Json::Null) => {}
            Some(Json::String(state)) if !state.is_empty() => rows.put(
                time,
                None,
                "status",
                Value::Str(state.clone()),
                "transactionInfo.chargingState",
            ),
            Some(other) => rows.problems.push(format!(
                "transactionInfo.chargingState is {}, expected a state name",
                quote(other)
            )),
        }
        if let Some(list) = body.get("meterValue") {
            rows.meter_values("meterValue", list)?;
        }
        Ok(())
    }
}

fn status_notification(
    rows: &mut Rows,
    body: &Map<String, Json>,
    key: &str,
    timestamp_required: bool,
) -> Result<(), DecodeError> {
    let status = match body.get(key) {
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(DecodeError::new(format!(
                "StatusNotification {key} is {}, expected a status name",
                quote(other)
            )));
        }
        None => return Err(DecodeError::new(format!("StatusNotification has no {key}"))),
    };
    // 1.6 makes the timestamp optional; without one the receive time is all there is.
    let time = match body.get("timestamp") {
        None | Some(Json::Null) if !timestamp_required => rows.received_at,
        t => timestamp(t).map_err(|e| DecodeError::new(format!("StatusNotification {e}")))?,
    };
    rows.put(time, None, "status", Value::Str(status), key);
    Ok(())
}

/// The action and payload of a CALL frame, `None` for frames that carry nothing to
/// store (CALLRESULT, CALLERROR).
/// A CALL's action name (absent for bare payloads) and payload.
type Call<'a> = (Option<&'a str>, &'a Map<String, Json>);

fn unframe(frame: &[Json]) -> Result<Option<Call<'_>>, DecodeError> {
    let kind = frame.first().and_then(Json::as_u64);
    match (kind, frame) {
        // CALL, and OCPP 2.1's SEND which has the same shape and needs no answer.
        (Some(2 | 5), [_, id, action, payload]) => {
            if !id.is_string() {
                return Err(DecodeError::new(format!(
                    "OCPP-J frame message id is {}, expected a string",
                    quote(id)
                )));
            }
            let action = action.as_str().ok_or_else(|| {
                DecodeError::new(format!(
                    "OCPP-J CALL action is {}, expected a name such as \"MeterValues\"",
                    quote(action)
                ))
            })?;
            let payload = payload.as_object().ok_or_else(|| {
                DecodeError::new(format!(
                    "OCPP-J CALL {action} payload is {}, expected an object",
                    quote(payload)
                ))
            })?;
            Ok(Some((Some(action), payload)))
        }
        (Some(2 | 5), _) => Err(DecodeError::new(format!(
            "OCPP-J CALL frame has {} elements, expected 4: [2, \"<message id>\", \"<action>\", {{...}}]",
            frame.len()
        ))),
        // CALLRESULT, CALLERROR, and OCPP 2.1's CALLRESULTERROR.
        (Some(3 | 4 | 6), _) => Ok(None),
        _ => Err(DecodeError::new(format!(
            "not an OCPP-J frame: the first element is {}, expected the message type 2 (CALL), \
             3 (CALLRESULT) or 4 (CALLERROR)",
            frame.first().map_or_else(|| "missing".to_string(), quote)
        ))),
    }
}

/// Which message a payload is: by the frame's action name when there is one, else by
/// the keys only that message has. `None`: nothing gridlake stores.
fn identify(
    action: Option<&str>,
    body: &Map<String, Json>,
) -> Result<Option<Message>, DecodeError> {
    let has = |key: &str| body.contains_key(key);
    let message = match action {
        Some("MeterValues") if has("evseId") => Message::MeterValues201,
        Some("MeterValues") if has("connectorId") => Message::MeterValues16,
        Some("MeterValues") => {
            return Err(DecodeError::new(
                "MeterValues has neither connectorId (OCPP 1.6) nor evseId (OCPP 2.0.1)",
            ));
        }
        Some("StatusNotification") if has("connectorStatus") => Message::StatusNotification201,
        Some("StatusNotification") if has("status") => Message::StatusNotification16,
        Some("StatusNotification") => {
            return Err(DecodeError::new(
                "StatusNotification has neither status (OCPP 1.6) nor connectorStatus (OCPP 2.0.1)",
            ));
        }
        Some("StartTransaction") => Message::StartTransaction,
        Some("StopTransaction") => Message::StopTransaction,
        Some("TransactionEvent") => Message::TransactionEvent,
        Some(_) => return Ok(None),
        // Bare payloads: a key set only one of the stored messages has. Responses
        // (`{"status": "Accepted", ...}`) share some names, hence `errorCode` for 1.6
        // StatusNotification and `transactionInfo` for TransactionEvent.
        None if has("eventType") && has("transactionInfo") => Message::TransactionEvent,
        None if has("meterValue") && has("evseId") => Message::MeterValues201,
        None if has("meterValue") && has("connectorId") => Message::MeterValues16,
        None if has("meterStart") => Message::StartTransaction,
        None if has("meterStop") => Message::StopTransaction,
        None if has("connectorStatus") && has("evseId") => Message::StatusNotification201,
        None if has("status") && has("errorCode") && has("connectorId") => {
            Message::StatusNotification16
        }
        None => return Ok(None),
    };
    Ok(Some(message))
}

/// The rows of one message: one per (time, phase), so a meterValue's sampled values
/// share a row and per-phase values get their own.
#[derive(Debug)]
struct Rows {
    device: String,
    received_at: i64,
    connector: Option<String>,
    session: Option<String>,
    rows: Vec<Reading>,
    problems: Vec<String>,
}

impl Rows {
    fn new(device: String, received_at: i64) -> Self {
        Self {
            device,
            received_at,
            connector: None,
            session: None,
            rows: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Sets `column` on the row of `time` and `phase`. A second, different value for
    /// the same cell is a problem; the first is kept.
    fn put(&mut self, time: i64, phase: Option<&str>, column: &str, value: Value, origin: &str) {
        let row = self
            .rows
            .iter()
            .position(|r| r.time == time && r.tag_value(PHASE) == phase);
        let row = match row {
            Some(i) => &mut self.rows[i],
            None => {
                let mut r = Reading::new(EV_CHARGER.name, time).tag(DEVICE_ID, self.device.clone());
                if let Some(c) = &self.connector {
                    r = r.tag(CONNECTOR, c.clone());
                }
                if let Some(p) = phase {
                    r = r.tag(PHASE, p);
                }
                self.rows.push(r);
                self.rows.last_mut().expect("just pushed")
            }
        };
        match row.field_value(column) {
            None => row.fields.push((column.to_string(), value)),
            Some(existing) if *existing == value => {}
            Some(existing) => {
                let phase = phase.map_or(String::new(), |p| format!(" on {p}"));
                self.problems.push(format!(
                    "{origin}: {column} {} disagrees with {} read for the same time{phase}; kept the first",
                    show(&value),
                    show(existing)
                ));
            }
        }
    }

    /// The `meterValue` list (or 1.6 `transactionData`) at `path`.
    fn meter_values(&mut self, path: &str, list: &Json) -> Result<(), DecodeError> {
        let Json::Array(list) = list else {
            return Err(DecodeError::new(format!(
                "{path} is {}, expected an array of meter values",
                quote(list)
            )));
        };
        let plain = plain_samples(list);
        for (i, mv) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Json::Object(mv) = mv else {
                self.problems
                    .push(format!("{at} is {}, expected an object", quote(mv)));
                continue;
            };
            let time = match timestamp(mv.get("timestamp")) {
                Ok(t) => t,
                Err(e) => {
                    self.problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let Some(Json::Array(samples)) = mv.get("sampledValue") else {
                self.problems
                    .push(format!("{at}: sampledValue is missing or not an array"));
                continue;
            };
            for (j, sv) in samples.iter().enumerate() {
                let at = format!("{at}.sampledValue[{j}]");
                match sample(sv, &plain) {
                    Ok(Some(Sample {
                        phase,
                        column,
                        value,
                    })) => self.put(time, phase, column, Value::F64(value), &at),
                    Ok(None) => {}
                    Err(e) => self.problems.push(format!("{at}: {e}")),
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, message: &str) -> Result<Decoded, DecodeError> {
        if self.rows.is_empty() && !self.problems.is_empty() {
            return Err(DecodeError::new(format!(
                "{message}: nothing usable: {}",
                summarise_problems(&self.problems)
            )));
        }
        if let Some(s) = &self.session {
            for r in &mut self.rows {
                r.fields
                    .push(("session_id".to_string(), Value::Str(s.clone())));
            }
        }
        Ok(Decoded {
            readings: self.rows,
            problems: self.problems,
        })
    }
}

/// The gridlake column of a measurand and the units it may come in, with their factor
/// to the column's unit; the first unit is the measurand's default.
fn column_of(measurand: &str) -> Option<(&'static str, &'static [(&'static str, f64)])> {
    Some(match measurand {
        "Energy.Active.Import.Register" => ("energy_wh", &[("Wh", 1.0), ("kWh", 1000.0)]),
        "Power.Active.Import" => ("power_w", &[("W", 1.0), ("kW", 1000.0)]),
        "SoC" => ("soc_pct", &[("Percent", 1.0), ("%", 1.0)]),
        "Current.Import" => ("current_a", &[("A", 1.0)]),
        "Voltage" => ("voltage_v", &[("V", 1.0)]),
        _ => return None,
    })
}

const DEFAULT_MEASURAND: &str = "Energy.Active.Import.Register";

/// (measurand, phase, context) of every sampled value without a signature, so signed
/// copies of them can be recognised.
fn plain_samples(list: &[Json]) -> HashSet<(String, String, String)> {
    list.iter()
        .filter_map(|mv| mv.get("sampledValue")?.as_array())
        .flatten()
        .filter(|sv| sv.get("signedMeterValue").is_none())
        .map(sample_key)
        .collect()
}

fn sample_key(sv: &Json) -> (String, String, String) {
    let text = |key: &str, default: &str| {
        sv.get(key)
            .and_then(Json::as_str)
            .unwrap_or(default)
            .to_string()
    };
    (
        text("measurand", DEFAULT_MEASURAND),
        text("phase", ""),
        text("context", "Sample.Periodic"),
    )
}

/// A sampled value in gridlake's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    phase: Option<&'static str>,
    column: &'static str,
    value: f64,
}

/// One sampled value: `Ok(None)` when it is legitimately not stored, an error naming
/// what is wrong with it otherwise.
fn sample(sv: &Json, plain: &HashSet<(String, String, String)>) -> Result<Option<Sample>, String> {
    let Json::Object(fields) = sv else {
        return Err(format!("is {}, expected an object", quote(sv)));
    };
    // 1.6 SignedData values are hex blobs, not numbers.
    if fields.get("format").and_then(Json::as_str) == Some("SignedData") {
        return Ok(None);
    }
    if fields.contains_key("signedMeterValue") && plain.contains(&sample_key(sv)) {
        return Ok(None);
    }
    let measurand = match fields.get("measurand") {
        None | Some(Json::Null) => DEFAULT_MEASURAND,
        Some(Json::String(m)) => m.as_str(),
        Some(other) => return Err(format!("measurand is {}, expected a name", quote(other))),
    };
    let Some((column, units)) = column_of(measurand) else {
        return Ok(None);
    };
    let phase = match fields.get("phase") {
        None | Some(Json::Null) => None,
        Some(Json::String(p)) => match p.as_str() {
            "L1" | "L1-N" => Some("L1"),
            "L2" | "L2-N" => Some("L2"),
            "L3" | "L3-N" => Some("L3"),
            // Neutral and line-to-line values have no row in the table.
            "N" | "L1-L2" | "L2-L3" | "L3-L1" => return Ok(None),
            other => return Err(format!("phase {other:?} is not an OCPP phase")),
        },
        Some(other) => return Err(format!("phase is {}, expected a name", quote(other))),
    };
    let value = fields.get("value").ok_or("has no value")?;
    let raw =
        lenient_number(value).ok_or_else(|| format!("value {} is not a number", quote(value)))?;

    let uom = fields.get("unitOfMeasure").and_then(Json::as_object);
    let unit = match uom
        .and_then(|u| u.get("unit"))
        .or_else(|| fields.get("unit"))
    {
        None | Some(Json::Null) => units[0].0,
        Some(Json::String(u)) => u.as_str(),
        Some(other) => return Err(format!("unit is {}, expected a name", quote(other))),
    };
    let factor = units
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let expected: Vec<&str> = units.iter().map(|(n, _)| *n).collect();
            format!(
                "unit {unit:?} does not fit {measurand}; expected {}",
                expected.join(" or ")
            )
        })?;
    let multiplier = match uom.and_then(|u| u.get("multiplier")) {
        None | Some(Json::Null) => 0,
        Some(m) => m
            .as_i64()
            .filter(|m| (-30..=30).contains(m))
            .ok_or_else(|| {
                format!(
                    "unitOfMeasure.multiplier {} is not a power of ten",
                    quote(m)
                )
            })? as i32,
    };
    let scaled = raw * 10f64.powi(multiplier) * factor;
    if !scaled.is_finite() {
        return Err(format!("value {raw} × 10^{multiplier} is out of range"));
    }
    Ok(Some(Sample {
        phase,
        column,
        value: scaled,
    }))
}

/// The connector tag: positive ids as text, `None` for 0 (the whole charger) or absent.
fn connector(v: Option<&Json>, what: &str) -> Result<Option<String>, DecodeError> {
    let v = match v {
        None | Some(Json::Null) => return Ok(None),
        Some(v) => v,
    };
    let id = match v {
        Json::Number(n) => n.as_u64(),
        // Some chargers quote it ("connectorId": "1").
        Json::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match id {
        Some(0) => Ok(None),
        Some(id) => Ok(Some(id.to_string())),
        None => Err(DecodeError::new(format!(
            "{what} {} is not a connector number",
            quote(v)
        ))),
    }
}

/// The transaction id as text (1.6: integer, 2.0.1: string). A malformed one is a
/// problem and the rows go without a session.
fn session(v: Option<&Json>, problems: &mut Vec<String>) -> Option<String> {
    match v {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(other) => {
            problems.push(format!(
                "transactionId {} is neither an integer nor a string; rows stored without session_id",
                quote(other)
            ));
            None
        }
    }
}

/// An OCPP timestamp: RFC 3339, or the `+0000` offset some chargers send (Keba P30).
fn timestamp(v: Option<&Json>) -> Result<i64, String> {
    match v {
        None | Some(Json::Null) => Err("timestamp is missing".into()),
        Some(Json::String(s)) => rfc3339_to_ns(s)
            .or_else(|| {
                DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
                    .ok()?
                    .timestamp_nanos_opt()
            })
            .ok_or_else(|| format!("timestamp {s:?} is not an RFC 3339 date-time with offset")),
        Some(other) => Err(format!(
            "timestamp is {}, expected an RFC 3339 string",
            quote(other)
        )),
    }
}

/// A finite number from a JSON number or numeric string.
fn number(v: Option<&Json>) -> Result<f64, String> {
    match v {
        None | Some(Json::Null) => Err("is missing".into()),
        Some(v) => lenient_number(v).ok_or_else(|| format!("{} is not a number", quote(v))),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::F64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::Str(s) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{RECEIVED, f64_of, run};

    fn tags(device: &str) -> Vec<(String, String)> {
        vec![("device_id".to_string(), device.to_string())]
    }

    fn decode_as(d: &mut OcppDecoder, device: &str, payload: &str) -> Result<Decoded, DecodeError> {
        run(d, "ocpp/cp-1/in", &tags(device), payload)
    }

    fn decode(payload: &str) -> Result<Decoded, DecodeError> {
        decode_as(&mut OcppDecoder::new(), "cp-1", payload)
    }

    fn ns(rfc3339: &str) -> i64 {
        rfc3339_to_ns(rfc3339).unwrap()
    }

    fn frame(action: &str, payload: &str) -> String {
        format!(r#"[2, "19223201", "{action}", {payload}]"#)
    }

    /// The row with this phase tag (`None`: the total row).
    fn row<'a>(out: &'a Decoded, time: i64, phase: Option<&str>) -> &'a Reading {
        out.readings
            .iter()
            .find(|r| r.time == time && r.tag_value("phase") == phase)
            .unwrap_or_else(|| panic!("no row at {time} phase {phase:?} in {:#?}", out.readings))
    }

    fn str_of<'a>(r: &'a Reading, column: &str) -> &'a str {
        match r.field_value(column) {
            Some(Value::Str(s)) => s,
            other => panic!("{column} is {other:?} in {r:?}"),
        }
    }

    // A three-phase-capable AC charger's MeterValues.req, logged by a CSMS
    // (https://github.com/maulanahidayatullah/ocpp-node/blob/053db170ac91a9c9acca8ec6f41b17c04b5b8e1d/log.js).
    // Message format: OCPP 1.6 §6.31 and the MeterValues.json schema
    // (https://github.com/mobilityhouse/ocpp/blob/master/ocpp/v16/schemas/MeterValues.json).
    const METER_VALUES_16: &str = r#"{
        "connectorId": 1,
        "transactionId": 12,
        "meterValue": [{
            "timestamp": "2025-02-21T07:26:31Z",
            "sampledValue": [
                {"value": "225.10", "context": "Sample.Periodic", "format": "Raw", "measurand": "Voltage", "phase": "L1-N", "location": "Body", "unit": "V"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Current.Import", "phase": "L1-N", "location": "Body", "unit": "A"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Power.Active.Import", "location": "Body", "unit": "kW"},
                {"value": "12", "context": "Sample.Periodic", "format": "Raw", "measurand": "Energy.Active.Import.Register", "location": "Body", "unit": "Wh"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Voltage", "phase": "L2-N", "location": "Body", "unit": "V"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Voltage", "phase": "L3-N", "location": "Body", "unit": "V"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Current.Import", "phase": "L2-N", "location": "Body", "unit": "A"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Current.Import", "phase": "L3-N", "location": "Body", "unit": "A"}
            ]
        }]
    }"#;

    #[test]
    fn ocpp16_meter_values_make_a_total_row_and_phase_rows() {
        for payload in [
            METER_VALUES_16.to_string(),
            frame("MeterValues", METER_VALUES_16),
        ] {
            let out = decode(&payload).unwrap();
            assert!(out.problems.is_empty(), "{:?}", out.problems);
            assert_eq!(out.readings.len(), 4, "{:#?}", out.readings);
            let t = ns("2025-02-21T07:26:31Z");
            let total = row(&out, t, None);
            assert_eq!(total.table, "ev_charger");
            assert_eq!(total.tag_value("device_id"), Some("cp-1"));
            assert_eq!(total.tag_value("connector"), Some("1"));
            assert_eq!(f64_of(total, "energy_wh"), 12.0);
            assert_eq!(f64_of(total, "power_w"), 0.0);
            assert_eq!(str_of(total, "session_id"), "12");
            let l1 = row(&out, t, Some("L1"));
            assert_eq!(f64_of(l1, "voltage_v"), 225.1);
            assert_eq!(f64_of(l1, "current_a"), 0.0);
            assert_eq!(str_of(l1, "session_id"), "12");
            assert_eq!(l1.tag_value("connector"), Some("1"));
            for phase in ["L2", "L3"] {
                let r = row(&out, t, Some(phase));
                assert_eq!(f64_of(r, "voltage_v"), 0.0);
                assert_eq!(f64_of(r, "current_a"), 0.0);
            }
        }
    }

    #[test]
    fn units_defaults_and_conversions() {
        // Measurand and unit left out: Energy.Active.Import.Register in Wh (OCPP 1.6,
        // SampledValue type); kWh and kW are converted; values may be numbers.
        let out = decode(
            r#"{"connectorId": 2, "meterValue": [
                {"timestamp": "2024-01-15T10:00:00Z", "sampledValue": [{"value": "1234.5"}]},
                {"timestamp": "2024-01-15T10:01:00Z", "sampledValue": [
                    {"value": "1.2355", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": 7.4, "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "63", "measurand": "SoC", "location": "EV"},
                    {"value": "16.1", "measurand": "Current.Import"},
                    {"value": "231", "measurand": "Voltage"}
                ]}
            ]}"#,
        )
        .unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let r = row(&out, ns("2024-01-15T10:00:00Z"), None);
        assert_eq!(f64_of(r, "energy_wh"), 1234.5);
        assert_eq!(r.field_value("session_id"), None);
        let r = row(&out, ns("2024-01-15T10:01:00Z"), None);
        assert!((f64_of(r, "energy_wh") - 1235.5).abs() < 1e-9);
        assert_eq!(f64_of(r, "power_w"), 7400.0);
        assert_eq!(f64_of(r, "soc_pct"), 63.0);
        assert_eq!(f64_of(r, "current_a"), 16.1);
        assert_eq!(f64_of(r, "voltage_v"), 231.0);
        assert_eq!(r.tag_value("connector"), Some("2"));
    }

    #[test]
    fn other_measurands_phases_and_signed_data_are_skipped_silently() {
        let out = decode(
            r#"{"connectorId": 0, "meterValue": [{"timestamp": "2024-01-15T10:00:00Z", "sampledValue": [
                {"value": "50.01", "measurand": "Frequency"},
                {"value": "32", "measurand": "Current.Offered"},
                {"value": "120", "measurand": "Energy.Reactive.Import.Register", "unit": "varh"},
                {"value": "400.2", "measurand": "Voltage", "phase": "L1-L2"},
                {"value": "0.3", "measurand": "Current.Import", "phase": "N"},
                {"value": "3045022100AF", "format": "SignedData"},
                {"value": "5000", "measurand": "Energy.Active.Import.Register"}
            ]}]}"#,
        )
        .unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(
            r.fields,
            vec![("energy_wh".to_string(), Value::F64(5000.0))]
        );
        // Connector 0 is the charger as a whole: no connector tag.
        assert_eq!(r.tags, vec![("device_id".to_string(), "cp-1".to_string())]);
    }

    #[test]
    fn bad_sampled_values_are_problems_and_the_rest_is_kept() {
        let out = decode(
            r#"{"connectorId": 1, "transactionId": 7, "meterValue": [
                {"timestamp": "2024-01-15T10:00:00Z", "sampledValue": [
                    {"value": "1000", "measurand": "Energy.Active.Import.Register"},
                    {"value": "abc", "measurand": "Power.Active.Import"},
                    {"value": "5", "measurand": "Energy.Active.Import.Register", "unit": "varh"},
                    {"value": "230", "measurand": "Voltage", "phase": "L4"},
                    {"measurand": "Voltage"},
                    {"value": "NaN", "measurand": "Current.Import"},
                    "230",
                    {"value": "1", "measurand": 3}
                ]},
                {"timestamp": "yesterday", "sampledValue": [{"value": "1"}]},
                {"sampledValue": [{"value": "1"}]},
                {"timestamp": "2024-01-15T10:02:00Z"},
                [1]
            ]}"#,
        )
        .unwrap();
        assert_eq!(out.readings.len(), 1);
        assert_eq!(f64_of(&out.readings[0], "energy_wh"), 1000.0);
        assert_eq!(str_of(&out.readings[0], "session_id"), "7");
        assert_eq!(
            out.problems,
            [
                r#"meterValue[0].sampledValue[1]: value "abc" is not a number"#,
                r#"meterValue[0].sampledValue[2]: unit "varh" does not fit Energy.Active.Import.Register; expected Wh or kWh"#,
                r#"meterValue[0].sampledValue[3]: phase "L4" is not an OCPP phase"#,
                "meterValue[0].sampledValue[4]: has no value",
                r#"meterValue[0].sampledValue[5]: value "NaN" is not a number"#,
                r#"meterValue[0].sampledValue[6]: is "230", expected an object"#,
                "meterValue[0].sampledValue[7]: measurand is 3, expected a name",
                r#"meterValue[1]: timestamp "yesterday" is not an RFC 3339 date-time with offset"#,
                "meterValue[2]: timestamp is missing",
                "meterValue[3]: sampledValue is missing or not an array",
                "meterValue[4] is an array, expected an object",
            ]
        );
    }

    #[test]
    fn a_message_with_nothing_usable_is_an_error() {
        let err = decode(
            r#"{"connectorId": 1, "meterValue": [{"timestamp": "2024-01-15T10:00:00Z", "sampledValue": [
                {"value": "n/a", "measurand": "Power.Active.Import"}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            r#"MeterValues: nothing usable: meterValue[0].sampledValue[0]: value "n/a" is not a number"#
        );
        let err = decode(r#"{"connectorId": 1}"#.replace('}', r#", "meterValue": {}}"#).as_str())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "meterValue is an object, expected an array of meter values"
        );
        let err = decode(&frame("MeterValues", r#"{"connectorId": 1}"#))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "MeterValues has no meterValue array");
        let err = decode(&frame("MeterValues", r#"{"meterValue": []}"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither connectorId (OCPP 1.6) nor evseId (OCPP 2.0.1)"),
            "{err}"
        );
        let err = decode(r#"{"connectorId": -1, "meterValue": []}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "connectorId -1 is not a connector number");
        let err = decode(r#"{"connectorId": "one", "meterValue": []}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, r#"connectorId "one" is not a connector number"#);
        // Nothing in it at all is not an error: an empty list is simply empty.
        assert_eq!(
            decode(r#"{"connectorId": 1, "meterValue": []}"#).unwrap(),
            Decoded::default()
        );
    }

    #[test]
    fn conflicting_values_for_one_cell_keep_the_first() {
        let out = decode(
            r#"{"connectorId": 1, "meterValue": [{"timestamp": "2024-01-15T10:00:00Z", "sampledValue": [
                {"value": "1000", "location": "Outlet"},
                {"value": "1000.0", "location": "Outlet"},
                {"value": "990", "location": "Inlet"}
            ]}]}"#,
        )
        .unwrap();
        assert_eq!(f64_of(&out.readings[0], "energy_wh"), 1000.0);
        assert_eq!(
            out.problems,
            [
                "meterValue[0].sampledValue[2]: energy_wh 990 disagrees with 1000 read for the same time; kept the first"
            ]
        );
    }

    #[test]
    fn ocpp16_start_and_stop_transaction() {
        // https://ocpptools.renozix.com/1.6j/messages/starttransaction (example full frame)
        let start = r#"[2, "msg-001", "StartTransaction", {"connectorId": 1, "idTag": "AABBCCDD", "meterStart": 0, "timestamp": "2024-01-15T10:30:00Z"}]"#;
        let out = decode(start).unwrap();
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.time, ns("2024-01-15T10:30:00Z"));
        assert_eq!(r.tag_value("connector"), Some("1"));
        // A register reading of 0 Wh is what the charger says, not an invented zero.
        assert_eq!(f64_of(r, "energy_wh"), 0.0);
        assert_eq!(r.field_value("session_id"), None);

        // https://ocpptools.renozix.com/1.6j/messages/stoptransaction (example payload)
        let stop = r#"{"transactionId": 12345, "meterStop": 15750, "timestamp": "2024-01-15T12:45:00Z", "reason": "Local", "idTag": "AABBCCDD"}"#;
        let out = decode(stop).unwrap();
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.time, ns("2024-01-15T12:45:00Z"));
        assert_eq!(f64_of(r, "energy_wh"), 15750.0);
        assert_eq!(str_of(r, "session_id"), "12345");
        // StopTransaction does not say which connector; nothing was learnt about 12345.
        assert_eq!(r.tag_value("connector"), None);
    }

    #[test]
    fn stop_transaction_data_and_the_remembered_connector() {
        let mut d = OcppDecoder::new();
        // MeterValues during the transaction name the connector...
        decode_as(
            &mut d,
            "cp-1",
            r#"{"connectorId": 2, "transactionId": 12345, "meterValue": [{"timestamp": "2024-01-15T11:00:00Z", "sampledValue": [{"value": "9000"}]}]}"#,
        )
        .unwrap();
        // ...so the StopTransaction's rows land on connector 2. transactionData is a list
        // of MeterValue (OCPP 1.6 §6.49; StopTransaction.json schema:
        // https://github.com/mobilityhouse/ocpp/blob/master/ocpp/v16/schemas/StopTransaction.json).
        let stop = frame(
            "StopTransaction",
            r#"{"transactionId": 12345, "meterStop": 15750, "timestamp": "2024-01-15T12:45:00Z", "reason": "EVDisconnected",
                "transactionData": [
                    {"timestamp": "2024-01-15T10:30:00Z", "sampledValue": [{"value": "0", "context": "Transaction.Begin"}]},
                    {"timestamp": "2024-01-15T12:45:00Z", "sampledValue": [
                        {"value": "15.75", "context": "Transaction.End", "unit": "kWh"},
                        {"value": "80", "context": "Transaction.End", "measurand": "SoC", "location": "EV"}
                    ]}
                ]}"#,
        );
        let out = decode_as(&mut d, "cp-1", &stop).unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 2);
        let end = row(&out, ns("2024-01-15T12:45:00Z"), None);
        // meterStop and the Transaction.End sample agree, so they share the row.
        assert_eq!(f64_of(end, "energy_wh"), 15750.0);
        assert_eq!(f64_of(end, "soc_pct"), 80.0);
        assert_eq!(end.tag_value("connector"), Some("2"));
        let begin = row(&out, ns("2024-01-15T10:30:00Z"), None);
        assert_eq!(f64_of(begin, "energy_wh"), 0.0);
        assert_eq!(str_of(begin, "session_id"), "12345");
        // The transaction is over: it is forgotten.
        assert!(d.sessions.connectors.is_empty());
        // Another charger's transaction 12345 is a different one.
        let out = decode_as(&mut d, "cp-2", &stop).unwrap();
        assert_eq!(out.readings[0].tag_value("connector"), None);
    }

    #[test]
    fn stop_transaction_problems() {
        let err = decode(
            r#"{"transactionId": 1, "meterStop": "lots", "timestamp": "2024-01-15T12:45:00Z"}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            r#"StopTransaction: nothing usable: meterStop "lots" is not a number"#
        );
        let err = decode(r#"{"transactionId": 1, "meterStop": 5, "timestamp": "noon"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"timestamp "noon" is not an RFC 3339"#),
            "{err}"
        );
        let out = decode(
            r#"{"transactionId": {"id": 1}, "meterStop": 5, "timestamp": "2024-01-15T12:45:00Z"}"#,
        )
        .unwrap();
        assert_eq!(out.readings[0].field_value("session_id"), None);
        assert_eq!(
            out.problems,
            [
                "transactionId an object is neither an integer nor a string; rows stored without session_id"
            ]
        );
        let err = decode(
            r#"{"connectorId": 1, "meterStart": null, "timestamp": "2024-01-15T12:45:00Z"}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "StartTransaction meterStart is missing");
        let err = decode(r#"{"connectorId": 1, "meterStart": 10}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "StartTransaction timestamp is missing");
    }

    #[test]
    fn ocpp16_status_notification() {
        // https://ocpptools.renozix.com/1.6j/messages/statusnotification (example full frame)
        let out = decode(
            r#"[2, "msg-001", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": "2024-01-15T10:00:00Z"}]"#,
        )
        .unwrap();
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.time, ns("2024-01-15T10:00:00Z"));
        assert_eq!(r.tag_value("connector"), Some("1"));
        assert_eq!(
            r.fields,
            vec![("status".to_string(), Value::Str("Available".into()))]
        );

        // A quoted connector id and centiseconds, as in
        // https://reerr.com/?p=80 (bare payload, recognised by its keys).
        let out = decode(
            r#"{"connectorId": "1", "errorCode": "NoError", "status": "Available", "timestamp": "2022-03-02T10:15:30.00Z"}"#,
        )
        .unwrap();
        assert_eq!(out.readings[0].time, ns("2022-03-02T10:15:30Z"));
        assert_eq!(out.readings[0].tag_value("connector"), Some("1"));

        // The timestamp is optional in 1.6: the receive time stands in.
        let out =
            decode(r#"{"connectorId": 0, "errorCode": "GroundFailure", "status": "Faulted"}"#)
                .unwrap();
        assert_eq!(out.readings[0].time, RECEIVED);
        assert_eq!(str_of(&out.readings[0], "status"), "Faulted");
        assert_eq!(out.readings[0].tag_value("connector"), None);

        let err = decode(&frame(
            "StatusNotification",
            r#"{"connectorId": 1, "status": 3}"#,
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "StatusNotification status is 3, expected a status name"
        );
        let err = decode(&frame(
            "StatusNotification",
            r#"{"connectorId": 1, "errorCode": "NoError"}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("neither status (OCPP 1.6) nor connectorStatus"),
            "{err}"
        );
        let err = decode(
            r#"{"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": 1705312800}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "StatusNotification timestamp is 1705312800, expected an RFC 3339 string"
        );
    }

    #[test]
    fn ocpp201_status_notification() {
        // https://ocpptools.renozix.com/2.0.1/messages/statusnotification/ (example full frame)
        let out = decode(
            r#"[2, "msg-001", "StatusNotification", {"timestamp": "2024-01-15T10:00:00Z", "connectorStatus": "Available", "evseId": 1, "connectorId": 1}]"#,
        )
        .unwrap();
        let r = &out.readings[0];
        assert_eq!(r.time, ns("2024-01-15T10:00:00Z"));
        assert_eq!(r.tag_value("connector"), Some("1"));
        assert_eq!(str_of(r, "status"), "Available");
        // https://docs.edrv.io/docs/statusnotifications-201 (bare payload)
        let out = decode(
            r#"{"timestamp":"2025-05-14T13:31:50.629Z", "connectorStatus":"Faulted", "evseId":1, "connectorId":1}"#,
        )
        .unwrap();
        let r = &out.readings[0];
        assert_eq!(r.time, ns("2025-05-14T13:31:50.629Z"));
        assert_eq!(r.tag_value("connector"), Some("1"));
        assert_eq!(str_of(r, "status"), "Faulted");
        // Required in 2.0.1.
        let err = decode(r#"{"connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "StatusNotification timestamp is missing");
    }

    // A Keba P30's TransactionEvents (OCPP 2.0.1), logged by a CSMS proxy and written here
    // with the OCPP-J member names: https://github.com/m-hegele/notes/blob/main/dev/keba-invalid-meter-start-stop.md
    // The Ended event repeats both readings as signed OCMF values whose `value` is in kWh
    // although no unit is given (the default is Wh).
    const KEBA_STARTED: &str = r#"{
        "eventType": "Started", "timestamp": "2025-08-21T07:03:33.373+0000", "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "28881628250821070333100549825004", "chargingState": "SuspendedEV"},
        "meterValue": [{"sampledValue": [{"value": 2114135.6, "context": "Transaction.Begin"}], "timestamp": "2025-08-21T07:03:36.481+0000"}],
        "offline": false, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "3A5AA876", "type": "ISO14443"}
    }"#;
    const KEBA_ENDED: &str = r#"{
        "eventType": "Ended", "timestamp": "2025-08-21T13:34:41.364+0000", "triggerReason": "Authorized", "seqNo": 1,
        "transactionInfo": {"transactionId": "28881628250821070333100549825004", "chargingState": "Idle", "stoppedReason": "EVDisconnected"},
        "meterValue": [
            {"sampledValue": [{"value": 2114135.6, "context": "Transaction.Begin", "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unitOfMeasure": {"unit": "Wh", "multiplier": 0}}],
             "timestamp": "2025-08-21T07:03:36.481+0000"},
            {"sampledValue": [{"value": 2133854.3, "context": "Transaction.End", "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unitOfMeasure": {"unit": "Wh", "multiplier": 0}}],
             "timestamp": "2025-08-21T13:34:41.364+0000"},
            {"sampledValue": [{"value": 2114.1356, "context": "Transaction.Begin",
                "signedMeterValue": {"signedMeterData": "T0NNRnx7...", "signingMethod": "ECC256", "encodingMethod": "OCMF", "publicKey": "eyJVSyI6..."}}],
             "timestamp": "2025-08-21T07:03:36.000+0000"},
            {"sampledValue": [{"value": 2133.8543, "context": "Transaction.End",
                "signedMeterValue": {"signedMeterData": "T0NNRnx7...", "signingMethod": "ECC256", "encodingMethod": "OCMF", "publicKey": "eyJVSyI6..."}}],
             "timestamp": "2025-08-21T13:34:41.000+0000"}
        ],
        "offline": false, "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "3A5AA876", "type": "ISO14443"}
    }"#;

    #[test]
    fn ocpp201_transaction_events_from_a_keba_p30() {
        let mut d = OcppDecoder::new();
        let out = decode_as(&mut d, "keba", &frame("TransactionEvent", KEBA_STARTED)).unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 2);
        // The event's own time carries the charging state...
        let state = row(&out, ns("2025-08-21T07:03:33.373Z"), None);
        assert_eq!(state.fields.len(), 2, "{state:?}");
        assert_eq!(str_of(state, "status"), "SuspendedEV");
        assert_eq!(
            str_of(state, "session_id"),
            "28881628250821070333100549825004"
        );
        assert_eq!(state.tag_value("connector"), Some("1"));
        // ...and the meter value its sample time (the "+0000" offset is accepted).
        let begin = row(&out, ns("2025-08-21T07:03:36.481Z"), None);
        assert_eq!(f64_of(begin, "energy_wh"), 2_114_135.6);

        let out = decode_as(&mut d, "keba", KEBA_ENDED).unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        // The signed kWh copies are skipped: no row at 07:03:36.000 or 13:34:41.000.
        let times: Vec<i64> = out.readings.iter().map(|r| r.time).collect();
        assert_eq!(
            times,
            [
                ns("2025-08-21T13:34:41.364Z"),
                ns("2025-08-21T07:03:36.481Z"),
            ]
        );
        let end = row(&out, ns("2025-08-21T13:34:41.364Z"), None);
        assert_eq!(str_of(end, "status"), "Idle");
        assert_eq!(f64_of(end, "energy_wh"), 2_133_854.3);
        assert!(
            d.sessions.connectors.is_empty(),
            "Ended forgets the transaction"
        );
    }

    #[test]
    fn signed_values_without_a_plain_copy_are_kept() {
        let out = decode(
            r#"{"eventType": "Updated", "timestamp": "2024-01-15T11:00:00Z", "triggerReason": "MeterValuePeriodic", "seqNo": 3,
                "transactionInfo": {"transactionId": "tx-1"},
                "meterValue": [{"timestamp": "2024-01-15T11:00:00Z", "sampledValue": [
                    {"value": 5230, "context": "Sample.Periodic", "signedMeterValue": {"signedMeterData": "x", "signingMethod": "", "encodingMethod": "OCMF", "publicKey": ""}}
                ]}]}"#,
        )
        .unwrap();
        assert_eq!(f64_of(&out.readings[0], "energy_wh"), 5230.0);
        assert_eq!(out.readings[0].field_value("status"), None);
    }

    #[test]
    fn later_transaction_events_reuse_the_connector_of_the_first() {
        let mut d = OcppDecoder::new();
        // The Started example of https://ocpptools.renozix.com/2.0.1/messages/transactionevent/
        // (its meterValue left out), then Updated and Ended events without evse, which
        // the TransactionEventRequest schema makes optional
        // (https://github.com/mobilityhouse/ocpp/blob/master/ocpp/v201/schemas/TransactionEventRequest.json).
        decode_as(
            &mut d,
            "cs-9",
            r#"{"eventType": "Started", "timestamp": "2024-01-15T10:30:00Z", "triggerReason": "Authorized", "seqNo": 0,
                "transactionInfo": {"transactionId": "txn-abc123", "chargingState": "Charging"},
                "idToken": {"idToken": "AABBCCDD", "type": "ISO14443"}, "evse": {"id": 1, "connectorId": 1}}"#,
        )
        .unwrap();
        let updated = frame(
            "TransactionEvent",
            r#"{"eventType": "Updated", "timestamp": "2024-01-15T10:45:00Z", "triggerReason": "MeterValuePeriodic", "seqNo": 1,
                "transactionInfo": {"transactionId": "txn-abc123"},
                "meterValue": [{"timestamp": "2024-01-15T10:45:00Z", "sampledValue": [
                    {"value": 11.04, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
                    {"value": 3678, "measurand": "Energy.Active.Import.Register"}]}]}"#,
        );
        let out = decode_as(&mut d, "cs-9", &updated).unwrap();
        let r = &out.readings[0];
        assert_eq!(r.tag_value("connector"), Some("1"));
        assert_eq!(f64_of(r, "power_w"), 11040.0);
        assert_eq!(f64_of(r, "energy_wh"), 3678.0);
        assert_eq!(str_of(r, "session_id"), "txn-abc123");
        // Without the Started event (another decoder, e.g. after a restart) the row
        // goes without a connector rather than to a guessed one.
        let out = decode_as(&mut OcppDecoder::new(), "cs-9", &updated).unwrap();
        assert_eq!(out.readings[0].tag_value("connector"), None);
        let ended = r#"{"eventType": "Ended", "timestamp": "2024-01-15T11:00:00Z", "triggerReason": "StopAuthorized", "seqNo": 2,
            "transactionInfo": {"transactionId": "txn-abc123", "chargingState": "EVConnected", "stoppedReason": "Local"}}"#;
        let out = decode_as(&mut d, "cs-9", ended).unwrap();
        assert_eq!(out.readings[0].tag_value("connector"), Some("1"));
        let out = decode_as(&mut d, "cs-9", ended).unwrap();
        assert_eq!(
            out.readings[0].tag_value("connector"),
            None,
            "forgotten after Ended"
        );
    }

    #[test]
    fn transaction_event_problems() {
        let err = decode(r#"{"eventType": "Updated", "transactionInfo": "tx", "timestamp": "2024-01-15T10:30:00Z"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "TransactionEventRequest has no transactionInfo object");
        let err = decode(r#"{"eventType": "Updated", "transactionInfo": {"transactionId": "t"}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "TransactionEventRequest timestamp is missing");
        let err = decode(
            r#"{"eventType": "Updated", "transactionInfo": {"transactionId": "t"}, "timestamp": "2024-01-15T10:30:00Z", "evse": 1}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "evse is 1, expected an object");
        // Nothing to store (no state, no meter values) is not an error.
        let out = decode(
            r#"{"eventType": "Updated", "triggerReason": "Authorized", "transactionInfo": {"transactionId": "t"}, "timestamp": "2024-01-15T10:30:00Z"}"#,
        )
        .unwrap();
        assert_eq!(out, Decoded::default());
        let err = decode(
            r#"{"eventType": "Updated", "transactionInfo": {"transactionId": "t", "chargingState": 4}, "timestamp": "2024-01-15T10:30:00Z"}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "TransactionEventRequest: nothing usable: transactionInfo.chargingState is 4, expected a state name"
        );
    }

    #[test]
    fn ocpp201_meter_values_apply_the_multiplier() {
        // Shape from the OCPP 2.0.1 MeterValuesRequest schema, whose UnitOfMeasureType
        // describes multiplier as "the exponent to base 10":
        // https://github.com/mobilityhouse/ocpp/blob/master/ocpp/v201/schemas/MeterValuesRequest.json
        let out = decode(&frame(
            "MeterValues",
            r#"{"evseId": 1, "meterValue": [{"timestamp": "2024-01-15T10:15:00Z", "sampledValue": [
                {"value": 12.345, "context": "Sample.Clock", "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh", "multiplier": 3}},
                {"value": 7, "context": "Sample.Clock", "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W", "multiplier": 3}},
                {"value": 2301, "context": "Sample.Clock", "measurand": "Voltage", "phase": "L2-N", "unitOfMeasure": {"unit": "V", "multiplier": -1}},
                {"value": 1, "measurand": "Current.Import", "unitOfMeasure": {"unit": "A", "multiplier": 1.5}},
                {"value": 1, "measurand": "Current.Import", "phase": "L1", "unitOfMeasure": {"unit": "mA"}}
            ]}]}"#,
        ))
        .unwrap();
        let t = ns("2024-01-15T10:15:00Z");
        let total = row(&out, t, None);
        assert!((f64_of(total, "energy_wh") - 12_345_000.0).abs() < 1e-6);
        assert_eq!(f64_of(total, "power_w"), 7000.0);
        assert_eq!(total.tag_value("connector"), Some("1"));
        assert_eq!(total.field_value("current_a"), None);
        assert!((f64_of(row(&out, t, Some("L2")), "voltage_v") - 230.1).abs() < 1e-9);
        assert_eq!(
            out.problems,
            [
                "meterValue[0].sampledValue[3]: unitOfMeasure.multiplier 1.5 is not a power of ten",
                r#"meterValue[0].sampledValue[4]: unit "mA" does not fit Current.Import; expected A"#,
            ]
        );
        // evseId 0 is the main meter: no connector tag.
        let out = decode(
            r#"{"evseId": 0, "meterValue": [{"timestamp": "2024-01-15T10:15:00Z", "sampledValue": [{"value": 5}]}]}"#,
        )
        .unwrap();
        assert_eq!(out.readings[0].tag_value("connector"), None);
    }

    #[test]
    fn responses_errors_and_other_actions_carry_nothing() {
        for payload in [
            // CALLRESULT and CALLERROR, shaped as the OCPP-J specification's examples.
            r#"[3, "19223201", {"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300}]"#,
            r#"[4, "162376037", "NotSupported", "SetDisplayMessageRequest not implemented", {}]"#,
            // The OCPP-J 1.6 specification's CALL example: BootNotification stores nothing.
            r#"[2, "19223201", "BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}]"#,
            r#"[2, "19223202", "Heartbeat", {}]"#,
            r#"[2, "19223203", "NotifyEvent", {"generatedAt": "2024-01-15T10:00:00Z", "seqNo": 0, "eventData": []}]"#,
            // Bare payloads that are none of the stored messages, including a response
            // that shares the "status" key with StatusNotification.
            r#"{}"#,
            r#"{"status": "Accepted", "currentTime": "2013-02-01T20:53:32.486Z", "interval": 300}"#,
            r#"{"idTag": "AABBCCDD"}"#,
        ] {
            assert_eq!(decode(payload).unwrap(), Decoded::default(), "{payload}");
        }
    }

    #[test]
    fn malformed_payloads_and_frames_are_errors() {
        let cases = [
            ("{oops", "not JSON"),
            (
                "42",
                "an OCPP message is a JSON object or an OCPP-J frame array, not 42",
            ),
            (r#""MeterValues""#, r#"not "MeterValues""#),
            ("[]", "not an OCPP-J frame: the first element is missing"),
            (
                r#"[7, "id", {}]"#,
                "not an OCPP-J frame: the first element is 7",
            ),
            (
                r#"["2", "id", "MeterValues", {}]"#,
                r#"the first element is "2""#,
            ),
            (
                r#"[2, "id", "MeterValues"]"#,
                "OCPP-J CALL frame has 3 elements, expected 4",
            ),
            (
                r#"[2, 17, "MeterValues", {}]"#,
                "OCPP-J frame message id is 17, expected a string",
            ),
            (
                r#"[2, "id", 6, {}]"#,
                r#"OCPP-J CALL action is 6, expected a name such as "MeterValues""#,
            ),
            (
                r#"[2, "id", "MeterValues", []]"#,
                "OCPP-J CALL MeterValues payload is an array, expected an object",
            ),
        ];
        for (payload, want) in cases {
            let err = decode(payload).unwrap_err().to_string();
            assert!(err.contains(want), "{payload}: {err}");
        }
    }

    #[test]
    fn the_charger_must_be_named_by_the_subscription() {
        let mut d = OcppDecoder::new();
        let err = run(&mut d, "ocpp/in", &[], METER_VALUES_16)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("{device_id}") && err.contains("topic template"),
            "{err}"
        );
        // A payload that stores nothing does not need one.
        assert_eq!(
            run(&mut d, "ocpp/in", &[], r#"[2, "1", "Heartbeat", {}]"#).unwrap(),
            Decoded::default()
        );
        // Only device_id is copied from the context; the collector adds the rest.
        let tags = vec![
            ("site_id".to_string(), "depot".to_string()),
            ("device_id".to_string(), "cp-7".to_string()),
        ];
        let out = run(
            &mut OcppDecoder::new(),
            "ocpp/cp-7/in",
            &tags,
            METER_VALUES_16,
        )
        .unwrap();
        assert!(
            out.readings
                .iter()
                .all(|r| r.tag_value("site_id").is_none())
        );
        assert!(
            out.readings
                .iter()
                .all(|r| r.tag_value("device_id") == Some("cp-7"))
        );
    }

    #[test]
    fn redelivery_decodes_to_the_same_rows() {
        let mut d = OcppDecoder::new();
        let first = decode_as(&mut d, "cp-1", METER_VALUES_16).unwrap();
        let again = decode_as(&mut d, "cp-1", METER_VALUES_16).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn remembered_sessions_are_bounded() {
        let mut sessions = SessionConnectors::default();
        for i in 0..(3 * MAX_REMEMBERED_SESSIONS) {
            sessions.remember("cp", &i.to_string(), "1");
            if i % 2 == 0 {
                sessions.forget("cp", &i.to_string());
            }
        }
        assert!(sessions.connectors.len() <= MAX_REMEMBERED_SESSIONS);
        assert!(sessions.order.len() <= 2 * MAX_REMEMBERED_SESSIONS + 1);
        let newest = (3 * MAX_REMEMBERED_SESSIONS - 1).to_string();
        assert_eq!(sessions.connector("cp", &newest), Some("1"));
        assert_eq!(sessions.connector("cp", "1"), None, "the oldest went first");
    }
}

//! What a decoder produces: readings for the canonical tables (or any table, for line
//! protocol and generic JSON), before the collector adds context and hands them to the
//! store.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value of one column of one reading.
///
/// The store has its own value type; this one keeps `devices` free of storage (and of
/// Arrow). The collector converts, coercing numbers to the canonical column type
/// ([`crate::tables::ColumnSpec::kind`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A measurement.
    F64(f64),
    /// A signed count (cycles, session numbers).
    I64(i64),
    /// An unsigned count.
    U64(u64),
    /// A state that is on or off.
    Bool(bool),
    /// A state name or identifier.
    Str(String),
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

/// One row a decoder produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Target table: one of [`crate::tables::TABLES`] for device decoders.
    pub table: String,
    /// Nanoseconds since the Unix epoch, UTC: the payload's own timestamp when it has
    /// one, otherwise [`DecodeContext::received_at`].
    pub time: i64,
    /// Tags the payload itself names (`device_id` when the topic does not, `phase`,
    /// `connector`, ...). The collector adds the context tags; where both name a key,
    /// the context (the operator's configuration) wins.
    pub tags: Vec<(String, String)>,
    /// Column values, each column at most once, at least one.
    pub fields: Vec<(String, Value)>,
}

impl Reading {
    /// An empty reading of `table` at `time` (ns).
    pub fn new(table: impl Into<String>, time: i64) -> Self {
        Self {
            table: table.into(),
            time,
            tags: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((key.into(), value.into()));
        self
    }

    /// Adds a field when there is a value; payloads often leave measurements out.
    pub fn field_opt(mut self, key: impl Into<String>, value: Option<impl Into<Value>>) -> Self {
        if let Some(v) = value {
            self.fields.push((key.into(), v.into()));
        }
        self
    }

    /// The value of a tag, if set.
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a field, if set.
    pub fn field_value(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Where a payload came from, as the collector knows it.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    /// The MQTT topic (or another transport's address) the payload arrived on.
    pub topic: &'a str,
    /// Tags the operator configured for this source: extracted from the topic by the
    /// subscription's template (`sites/{site_id}/devices/{device_id}/telemetry`) plus
    /// static ones. A decoder reads `device_id` from here first and falls back to what
    /// the payload or topic says.
    pub tags: &'a [(String, String)],
    /// When the collector received the payload, nanoseconds since the Unix epoch (UTC).
    pub received_at: i64,
}

impl DecodeContext<'_> {
    /// The value of a context tag, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What came out of one payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// The readings, in payload order.
    pub readings: Vec<Reading>,
    /// Parts of the payload that were skipped, each saying what and why (e.g.
    /// `meterValue[0].sampledValue[2]: value "abc" is not a number`). The collector
    /// keeps the readings and records these in `_rejected`.
    pub problems: Vec<String>,
}

impl Decoded {
    /// Readings without problems.
    pub fn readings(readings: Vec<Reading>) -> Self {
        Self {
            readings,
            problems: Vec::new(),
        }
    }
}

/// A payload that could not be decoded at all. The message says what was wrong in words
/// an operator can act on ("not JSON: expected value at line 1 column 1", "ENERGY block
/// missing", ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl DecodeError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A payload decoder. Pure: no I/O, no clock (the context carries the receive time).
/// Some formats send partial updates (Shelly NotifyStatus), so a decoder may keep state
/// between payloads; one instance serves one subscription.
pub trait Decode: Send + fmt::Debug {
    /// Decodes one payload. `Ok` with no readings means the payload carried nothing
    /// gridlake stores (a Zigbee2MQTT door sensor, a Shelly NotifyEvent): not an error.
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError>;
}

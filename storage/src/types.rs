//! The row model shared by every producer of data (HTTP, MQTT, Modbus) and the store.
//!
//! Producers build [`ParsedLine`]s; [`crate::Store::validate`] checks them against the
//! table schemas and turns the accepted ones into a [`WriteBatch`], the unit that goes
//! through the WAL and into the write buffer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Name of the timestamp column every table has.
pub const TIME_COLUMN: &str = "time";

/// The type of a field column. Tags are always strings and are not listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// 64-bit float: line protocol `1.5`, `1`, JSON numbers.
    F64,
    /// Signed integer: line protocol `1i`.
    I64,
    /// Unsigned integer: line protocol `1u`.
    U64,
    /// Boolean: line protocol `t`, `true`, `F`, ...
    Bool,
    /// UTF-8 string: line protocol `"text"`.
    String,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::F64 => "float",
            FieldType::I64 => "integer",
            FieldType::U64 => "unsigned integer",
            FieldType::Bool => "boolean",
            FieldType::String => "string",
        })
    }
}

/// The value of one field of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// See [`FieldType::F64`].
    F64(f64),
    /// See [`FieldType::I64`].
    I64(i64),
    /// See [`FieldType::U64`].
    U64(u64),
    /// See [`FieldType::Bool`].
    Bool(bool),
    /// See [`FieldType::String`].
    String(String),
}

impl FieldValue {
    /// The column type this value needs.
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::F64(_) => FieldType::F64,
            FieldValue::I64(_) => FieldType::I64,
            FieldValue::U64(_) => FieldType::U64,
            FieldValue::Bool(_) => FieldType::Bool,
            FieldValue::String(_) => FieldType::String,
        }
    }
}

/// One point: a time, the tags that name its series, and its field values.
///
/// Tags are kept sorted by key with unique keys, fields have unique keys; producers
/// guarantee this (the parsers reject duplicates), [`crate::Store::validate`] checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Nanoseconds since the Unix epoch, UTC.
    pub time: i64,
    /// `(key, value)` pairs sorted by key.
    pub tags: Vec<(String, String)>,
    /// `(key, value)` pairs; at least one.
    pub fields: Vec<(String, FieldValue)>,
}

/// A row as a producer parsed it, before it is checked against the table schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    /// 1-based line (or array element) number in the request, for error messages.
    pub line: usize,
    /// Table (measurement) name.
    pub table: String,
    /// The point.
    pub row: Row,
}

/// Why one line of a request was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// 1-based line (or array element) number in the request.
    pub line: usize,
    /// What was wrong, in words a client developer can act on.
    pub reason: String,
}

impl LineError {
    /// An error for line `line`.
    pub fn new(line: usize, reason: impl Into<String>) -> Self {
        Self {
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Rows of one table in one write.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableWrite {
    /// Table (measurement) name.
    pub table: String,
    /// Rows in the order the client sent them: for the same point, later wins.
    pub rows: Vec<Row>,
}

/// Validated rows of one request, grouped by table. This is what the WAL records.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WriteBatch {
    /// One entry per table, each table at most once.
    pub tables: Vec<TableWrite>,
}

impl WriteBatch {
    /// Number of rows over all tables.
    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.rows.is_empty())
    }
}

/// An inclusive range of times in nanoseconds, used to prune what a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest time wanted (inclusive).
    pub min: i64,
    /// Latest time wanted (inclusive).
    pub max: i64,
}

impl TimeRange {
    /// Every time.
    pub const ALL: TimeRange = TimeRange {
        min: i64::MIN,
        max: i64::MAX,
    };

    /// True when the two ranges share at least one instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

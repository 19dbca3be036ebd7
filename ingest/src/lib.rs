//! Turns the bytes clients send into rows for storage.
//!
//! Data comes in as HTTP request bodies (InfluxDB line protocol or JSON, possibly
//! gzip-compressed) handed over by the server's write routes. [`decode_body`] undoes the
//! `Content-Encoding` within the body size limit, then [`parse_line_protocol`] or
//! [`parse_json`] turns the body into [`storage::ParsedLine`]s (one per valid line, with
//! tags sorted and times in UTC nanoseconds per [`Precision`]) and
//! [`storage::LineError`]s (one per bad line, with its 1-based line number and a reason
//! the client can act on). The rows go on to [`storage::Store::validate`], which checks
//! them against table schemas, and from there to the WAL and the write buffer.
//!
//! ```text
//! HTTP body ─► decode_body ─► parse_line_protocol / parse_json ─► (ParsedLine, LineError)
//!   └─► apply_canonical ─► DeviceGate::check ─► Store::validate ─► DeviceGate::note_stored ─► WAL
//! ```
//!
//! The parsers do no I/O and keep no state: every one is a pure transformation of a
//! byte slice. [`apply_canonical`] holds every write path to the canonical tables'
//! column types and records each row's quality and source. A [`DeviceGate`] (the
//! server's device registry) then decides which rows' devices may be stored, and learns
//! which were (after validation), on every write path alike. The [`mqtt`] collector is
//! the exception to purity: it subscribes to a broker, decodes device payloads and hands
//! the rows to the store itself. The [`modbus`] collector does the same for devices it
//! polls over Modbus TCP, SunSpec inverters, meters and batteries among them.

mod canonical;
mod checks;
mod clock;
mod decode;
mod error;
pub mod gate;
mod json;
mod line_protocol;
pub mod modbus;
pub mod mqtt;
mod precision;

pub use canonical::apply_canonical;
pub use decode::decode_body;
pub use error::{Error, Result};
pub use gate::DeviceGate;
pub use json::parse_json;
pub use line_protocol::parse_line_protocol;
pub use precision::Precision;

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
//!                                                                   └─► Store::validate ─► WAL
//! ```
//!
//! Nothing here does I/O or keeps state: every function is a pure transformation of a
//! byte slice.

mod checks;
mod decode;
mod error;
mod json;
mod line_protocol;
mod precision;

pub use decode::decode_body;
pub use error::{Error, Result};
pub use json::parse_json;
pub use line_protocol::parse_line_protocol;
pub use precision::Precision;

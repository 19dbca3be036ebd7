//! Errors of the ingest crate that concern a whole request body.
//!
//! Problems with single lines or array elements are not errors of this kind: they are
//! [`storage::LineError`]s returned beside the rows that did parse, so that one bad line
//! does not sink a whole batch.

/// Why a request body (rather than one of its lines) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `precision` parameter is not one we know.
    #[error("unknown precision \"{0}\": expected one of ns, n, us, u, µs, µ, ms, s")]
    UnknownPrecision(String),

    /// The body, after decoding, is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes that was exceeded.
        limit: usize,
    },

    /// The body claims to be gzip but does not decode as gzip.
    #[error("invalid gzip body: {0}")]
    BadGzip(#[source] std::io::Error),

    /// The `Content-Encoding` is not one we can decode.
    #[error("unsupported content encoding \"{0}\": expected gzip or identity")]
    UnsupportedEncoding(String),

    /// The body of a JSON write is not valid JSON.
    #[error("invalid JSON body: {0}")]
    Json(#[source] serde_json::Error),

    /// The body of a JSON write is valid JSON but not an array of rows.
    #[error("JSON body must be an array of rows, found {found}")]
    NotJsonArray {
        /// What the body was instead ("an object", "a string", ...).
        found: &'static str,
    },
}

/// Result type of the ingest crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The crm error type: variants name what a caller (the HTTP layer, the ingest path) can act on.

use std::fmt;
use std::path::PathBuf;

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid input field and why it is invalid, so a client can fix each one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name as it appears in the request (`email`, `latitude`, ...).
    pub field: String,
    /// What is wrong with it, for a person to read.
    pub message: String,
}

impl FieldError {
    /// `field` is invalid because of `message`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a crm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No row of `entity` has this id (or token, or device id).
    #[error("{entity} {id} not found")]
    NotFound {
        /// The entity kind (`user`, `site`, ...).
        entity: &'static str,
        /// The id that was looked up, as text.
        id: String,
    },
    /// A value that must be unique is already taken.
    #[error("{entity} with this {field} already exists")]
    Conflict {
        /// The entity kind.
        entity: &'static str,
        /// The column whose uniqueness was violated (`email`, `serial_number`, ...).
        field: String,
    },
    /// The input is invalid; every bad field is named.
    #[error("invalid input: {}", join(.0))]
    Validation(Vec<FieldError>),
    /// The data directory for the SQLite file could not be created.
    #[error("cannot create the crm data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The system random source or the password hasher failed (not the caller's fault).
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// The database failed (connection, migration, an unexpected constraint, a bad row).
    #[error("crm database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub(crate) fn not_found(entity: &'static str, id: impl fmt::Display) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

/// Maps a database error from a write on `entity` to the error a caller can act on.
///
/// Unique violations become [`Error::Conflict`] naming the column (PostgreSQL reports the
/// constraint, named `<table>_<column>_key` by our migrations; SQLite reports
/// `UNIQUE constraint failed: <table>.<column>`). Foreign-key violations become a
/// validation error on `fk_field`, the one reference the statement sets.
pub(crate) fn map_write(entity: &'static str, fk_field: &str, e: sqlx::Error) -> Error {
    let sqlx::Error::Database(db) = &e else {
        return Error::Database(e);
    };
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => Error::Conflict {
            entity,
            field: unique_field(db.constraint(), db.message()),
        },
        sqlx::error::ErrorKind::ForeignKeyViolation => {
            Error::invalid(fk_field, "refers to a row that does not exist")
        }
        _ => Error::Database(e),
    }
}

/// The tables that have unique constraints (PostgreSQL names them `<table>_<column>_key`).
const TABLES: &[&str] = &[
    "users",
    "accounts",
    "sites",
    "devices",
    "sessions",
    "api_tokens",
];

fn unique_field(constraint: Option<&str>, message: &str) -> String {
    if let Some(name) = constraint {
        // `devices_serial_number_key` -> `serial_number`
        let body = name.strip_suffix("_key").unwrap_or(name);
        return TABLES
            .iter()
            .find_map(|table| body.strip_prefix(table)?.strip_prefix('_'))
            .unwrap_or(body)
            .to_owned();
    }
    // `UNIQUE constraint failed: devices.serial_number`
    message
        .rsplit_once(": ")
        .map(|(_, cols)| cols)
        .and_then(|cols| cols.split(',').next())
        .and_then(|col| col.trim().split_once('.'))
        .map(|(_table, column)| column.to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::unique_field;

    #[test]
    fn unique_field_from_both_backends() {
        assert_eq!(unique_field(Some("users_email_key"), ""), "email");
        assert_eq!(
            unique_field(Some("devices_mac_address_key"), ""),
            "mac_address"
        );
        assert_eq!(
            unique_field(None, "UNIQUE constraint failed: devices.serial_number"),
            "serial_number"
        );
        assert_eq!(
            unique_field(Some("api_tokens_token_hash_key"), ""),
            "token_hash"
        );
        assert_eq!(unique_field(None, "something else"), "unknown");
    }
}

//! crm integration tests: every test body runs against a SQLite file and, when the
//! PostgreSQL server binaries are installed, against a PostgreSQL cluster started once
//! for this test binary.

mod common;

mod auth;
mod registry;
mod store;
mod users;

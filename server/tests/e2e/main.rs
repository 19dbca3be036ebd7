//! End-to-end tests: the real `gridlake` binary, started on port 0 in a temporary
//! directory, driven over HTTP and its CLI exactly as users drive it.
//!
//! One test binary (`cargo test -p server --test e2e`) with one module per concern;
//! `common` holds the server harness every test uses.

mod auth;
mod broker;
mod common;
mod crosscheck;
mod durability;
mod latest;
mod lifecycle;
mod modbus;
mod mqtt;
mod ops;
mod questdb_client;
mod sql;
mod transfer;
mod write;

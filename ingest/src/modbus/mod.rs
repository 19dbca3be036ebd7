//! The Modbus collector: polls meters, inverters and batteries over Modbus TCP (or RTU
//! framing over TCP), reads SunSpec devices by discovering their models and others by
//! a configured register map, and stores the readings in the canonical tables.
//!
//! ```text
//!  endpoint task (one per host:port) ─┐
//!  endpoint task ─────────────────────┼─► channel ─► sink: batch ─► Store::validate ─► WAL
//!  endpoint task ─────────────────────┘
//! ```
//!
//! Each endpoint task owns one connection, kept across cycles, and polls its devices
//! when their cycles come due on a jittered grid: a failing device costs its own endpoint
//! the time its timeouts allow, never other endpoints. Failing devices back off and their
//! online/offline transitions are recorded in `device_status`. See [`ModbusCollector`].

mod collector;
mod config;
mod connection;
mod device;
mod endpoint;
mod metrics;
mod plan;
mod schedule;
mod sink;
#[cfg(test)]
mod tests;

pub use collector::{DeviceList, DeviceSnapshot, ModbusCollector};
pub use config::{
    DeviceConfig, Framing, ModbusConfig, ModbusConfigError, PointConfig, RegisterType,
};
pub use device::{ModelLocation, SunSpecInfo};
pub use metrics::ModbusMetrics;

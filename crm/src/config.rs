//! The `[crm]` config section.

use serde::{Deserialize, Serialize};

/// Where the side store lives and how the registry treats unknown devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrmConfig {
    /// `postgres://user:pass@host/db` for PostgreSQL, `sqlite://path` for another SQLite
    /// file; unset means `crm.sqlite` in the data directory.
    pub url: Option<String>,
    /// Pool size. SQLite serialises writers anyway; readers share the pool.
    pub max_connections: u32,
    /// What happens to a reading whose `device_id` is not in the registry.
    pub unknown_devices: UnknownDevices,
}

impl Default for CrmConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            unknown_devices: UnknownDevices::Register,
        }
    }
}

/// Policy for readings from devices the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDevices {
    /// Register the device as unassigned (no site) and keep the reading.
    #[default]
    Register,
    /// Refuse the reading with an error naming the device.
    Reject,
}

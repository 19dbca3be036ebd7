//! The `[auth]` config section.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require credentials on every route but `/health`, `/metrics`, login and the
    /// OpenAPI document. Only an explicit `false` turns this off, and the server then
    /// warns at start that anyone who reaches the port can read and write everything.
    pub enabled: bool,
    /// How long a login session lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Failed logins for one email (from any address) within `login_window` before
    /// further attempts for it are refused with 429.
    pub login_max_failures: u32,
    /// Failed logins from one client address (for any email) within `login_window`
    /// before further attempts from it are refused with 429.
    pub login_max_failures_per_ip: u32,
    /// The window the failure limits count over.
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
    /// How often expired sessions and old login failures are deleted.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: Duration::from_secs(24 * 3600),
            login_max_failures: 5,
            login_max_failures_per_ip: 20,
            login_window: Duration::from_secs(15 * 60),
            cleanup_interval: Duration::from_secs(5 * 60),
        }
    }
}

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

impl AuthConfig {
    /// Refuses settings the server cannot run with, naming the key.
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("session_ttl", self.session_ttl),
            ("login_window", self.login_window),
            ("cleanup_interval", self.cleanup_interval),
        ] {
            if value.is_zero() {
                return Err(format!("auth.{key} must be longer than 0s"));
            }
        }
        for (key, value) in [
            ("login_max_failures", self.login_max_failures),
            ("login_max_failures_per_ip", self.login_max_failures_per_ip),
        ] {
            if value == 0 {
                return Err(format!(
                    "auth.{key} must be at least 1 (0 would refuse every login)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_zeros_are_refused_by_name() {
        assert_eq!(AuthConfig::default().check(), Ok(()));
        let zero_ttl = AuthConfig {
            session_ttl: Duration::ZERO,
            ..AuthConfig::default()
        };
        assert!(zero_ttl.check().unwrap_err().contains("auth.session_ttl"));
        let zero_cleanup = AuthConfig {
            cleanup_interval: Duration::ZERO,
            ..AuthConfig::default()
        };
        assert!(
            zero_cleanup
                .check()
                .unwrap_err()
                .contains("auth.cleanup_interval")
        );
        let no_logins = AuthConfig {
            login_max_failures: 0,
            ..AuthConfig::default()
        };
        assert!(
            no_logins
                .check()
                .unwrap_err()
                .contains("auth.login_max_failures")
        );
    }
}

//! The `[crm]` config section.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the side store lives and how the registry treats unknown devices.
///
/// `Debug` hides the password in `url` (configs end up in logs); `Serialize` keeps it,
/// because `gridlake config` prints the effective config as TOML that must load back
/// unchanged. Treat that output as a secret when the URL carries a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrmConfig {
    /// `postgres://user:pass@host/db` for PostgreSQL, `sqlite://path` for another SQLite
    /// file (created if missing, unless the URL gives a `mode`); unset means
    /// `crm.sqlite` in the data directory.
    pub url: Option<String>,
    /// Pool size. SQLite serialises writers anyway; readers share the pool.
    pub max_connections: u32,
    /// What happens to a reading whose `device_id` is not in the registry.
    pub unknown_devices: UnknownDevices,
    /// How often the devices' last-seen times are written to the store. Readings only
    /// note the time in memory: one write per interval, not one per reading.
    #[serde(with = "humantime_serde")]
    pub last_seen_interval: Duration,
    /// How often the server reads the whole device registry again. Its own changes
    /// reach the write path at once; this is for changes made elsewhere: another
    /// server on the same PostgreSQL, the `gridlake` CLI.
    #[serde(with = "humantime_serde")]
    pub registry_reload_interval: Duration,
}

impl Default for CrmConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            unknown_devices: UnknownDevices::Register,
            last_seen_interval: Duration::from_secs(5),
            registry_reload_interval: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for CrmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrmConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("unknown_devices", &self.unknown_devices)
            .field("last_seen_interval", &self.last_seen_interval)
            .field("registry_reload_interval", &self.registry_reload_interval)
            .finish()
    }
}

/// `url` with its password replaced by `***`. A URL that does not parse is hidden
/// whole but for its scheme: it may still hold a password the parser did not find.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = parsed.set_password(Some("***"));
            }
            // libpq-style URLs may carry it as a parameter: `?password=...`.
            if parsed
                .query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password"))
            {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.eq_ignore_ascii_case("password") {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.into()
        }
        Err(_) => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:<unparsable URL hidden>"),
            None => "<unparsable URL hidden>".to_owned(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_url_password() {
        let config = CrmConfig {
            url: Some("postgres://crm:s3cret@db.example:5432/crm".into()),
            ..CrmConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(
            debug.contains("postgres://crm:***@db.example:5432/crm"),
            "{debug}"
        );
        assert!(debug.contains("last_seen_interval: 5s"), "{debug}");

        let param = CrmConfig {
            url: Some("postgres://db.example/crm?user=crm&Password=s3cret&sslmode=require".into()),
            ..CrmConfig::default()
        };
        let debug = format!("{param:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("sslmode=require"), "{debug}");

        let odd = CrmConfig {
            url: Some("postgres://crm:s3cret@[bad".into()),
            ..CrmConfig::default()
        };
        let debug = format!("{odd:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(
            debug.contains("postgres:<unparsable URL hidden>"),
            "{debug}"
        );

        let plain = CrmConfig {
            url: Some("sqlite:///var/lib/gridlake/crm.sqlite".into()),
            ..CrmConfig::default()
        };
        assert!(format!("{plain:?}").contains("sqlite:///var/lib/gridlake/crm.sqlite"));
    }
}

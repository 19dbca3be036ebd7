//! Query settings, with defaults that suit a small node.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Settings of the SQL engine (the `[query]` section of the config file). Every field
/// has a default, so an empty section (or none) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// A query that has not finished after this long is cancelled and reported as a
    /// timeout (HTTP 408). Zero disables the limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory that all running queries together may use for sorts, joins and
    /// aggregations. Sorts and aggregations spill to temporary files when they reach
    /// their share; what cannot spill fails with "resources exhausted". Rows read from
    /// the store are not counted (the store hands them over already in memory).
    pub memory_limit: ByteSize,
    /// How many partitions a query is split into to run in parallel; 0 means one per
    /// CPU core.
    pub target_partitions: usize,
    /// How far back from each table's newest row the last-value cache (`<table>_latest`,
    /// `GET /api/v1/latest`) is filled at start, in the background. A series silent for
    /// longer than this is missing from the cache until its next write. Zero disables
    /// the warm-up: the cache then holds only what is written after the start.
    #[serde(with = "humantime_serde")]
    pub latest_warmup: Duration,
    /// How often the background task brings the rollup tables (`<table>_15m`, `_1h`,
    /// `_1d`) up to date with the writes since its last run (quarter hours that have
    /// ended). Zero turns the refresh off (rollups are then only refreshed when
    /// asked).
    #[serde(with = "humantime_serde")]
    pub rollup_refresh_interval: Duration,
    /// IANA time zone whose local calendar days the `_1d` rollups cover ("UTC",
    /// "Europe/Berlin"). Checked at start; an unknown name stops the start, and so
    /// does another zone than the one recorded in the data directory once `_1d`
    /// tables exist.
    pub rollup_timezone: String,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_limit: ByteSize::gib(1),
            target_partitions: 0,
            latest_warmup: Duration::from_secs(24 * 3600),
            rollup_refresh_interval: Duration::from_secs(10),
            rollup_timezone: "UTC".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_defaults() {
        let config: QueryConfig = serde_json::from_str("{}").expect("empty");
        assert_eq!(config, QueryConfig::default());
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.memory_limit, ByteSize::gib(1));
        assert_eq!(config.target_partitions, 0);
        assert_eq!(config.rollup_refresh_interval, Duration::from_secs(10));
        assert_eq!(config.rollup_timezone, "UTC");
        assert_eq!(config.latest_warmup, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn human_units_parse_and_round_trip() {
        let config: QueryConfig =
            serde_json::from_str(r#"{"timeout": "1m 30s", "memory_limit": "256 MiB"}"#)
                .expect("parses");
        assert_eq!(config.timeout, Duration::from_secs(90));
        assert_eq!(config.memory_limit, ByteSize::mib(256));
        let text = serde_json::to_string(&config).expect("serializes");
        assert_eq!(
            serde_json::from_str::<QueryConfig>(&text).expect("again"),
            config
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = serde_json::from_str::<QueryConfig>(r#"{"timout": "5s"}"#).expect_err("typo");
        assert!(error.to_string().contains("timout"), "{error}");
    }
}

//! The server's configuration: typed settings with defaults in code, read from a TOML
//! file, overridden by `GRIDLAKE_*` environment variables and then by command-line flags.
//!
//! Each layer only replaces the keys it sets, so `GRIDLAKE_STORAGE_SNAPSHOT_ROWS=10`
//! changes one storage setting and keeps the rest of `[storage]` from the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use crm::CrmConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Uncased, UncasedStr};
use ingest::modbus::ModbusConfig;
use ingest::mqtt::MqttConfig;
use query::QueryConfig;
use serde::{Deserialize, Serialize};
use storage::StoreConfig;

pub use crate::auth::AuthConfig;
use crate::error::{Error, Result};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "GRIDLAKE_";

/// The configuration tables. An environment variable `GRIDLAKE_<SECTION>_<KEY>` sets
/// `<key>` in `[<section>]`: the first `_` after a section name separates it from the key,
/// because keys themselves contain underscores (`snapshot_rows`).
const SECTIONS: [&str; 8] = [
    "http", "storage", "query", "mqtt", "modbus", "crm", "auth", "log",
];

/// Top-level keys that are not tables.
const TOP_LEVEL_KEYS: [&str; 1] = ["data_dir"];

/// Everything `gridlake serve` needs to run. Every field has a default, so an empty
/// file (or none) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the WAL, Parquet files and catalog live.
    pub data_dir: PathBuf,
    /// The HTTP API.
    pub http: HttpConfig,
    /// The time-series store.
    pub storage: StoreConfig,
    /// The SQL engine.
    pub query: QueryConfig,
    /// The MQTT collector.
    pub mqtt: MqttConfig,
    /// The Modbus collector.
    pub modbus: ModbusConfig,
    /// The side store: users, accounts, sites, the device registry.
    pub crm: CrmConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            storage: StoreConfig::default(),
            query: QueryConfig::default(),
            mqtt: MqttConfig::default(),
            modbus: ModbusConfig::default(),
            crm: CrmConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Settings of the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Largest request body accepted, both as sent and after gzip decoding; larger
    /// bodies are refused with 413.
    pub max_body_size: ByteSize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7181)),
            max_body_size: ByteSize::mib(10),
        }
    }
}

/// Settings of the log output (always stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,storage=debug`. `RUST_LOG`, when set,
    /// takes its place.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
        }
    }
}

/// Values given as command-line flags; they beat every other source.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--http-addr`, nested as `http.addr`.
    #[serde(skip_serializing_if = "HttpOverrides::is_empty")]
    pub http: HttpOverrides,
}

/// Flags that set keys of `[http]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpOverrides {
    /// `--http-addr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
}

impl HttpOverrides {
    fn is_empty(&self) -> bool {
        self.addr.is_none()
    }
}

impl Config {
    /// Loads the configuration: defaults, then the TOML file `file` (which must exist
    /// when given), then `GRIDLAKE_*` environment variables, then `overrides`.
    ///
    /// Unknown keys in the file or in `GRIDLAKE_<SECTION>_*` variables are errors that
    /// name the key, so a typo does not silently leave a default in place.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // figment treats a missing file as an empty one; a path the operator typed
            // that does not exist is a mistake worth stopping for.
            if !path.is_file() {
                return Err(Error::ConfigFileMissing(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed(ENV_PREFIX).filter_map(env_key_to_path))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| Error::Config(Box::new(e)))
    }

    /// The configuration as TOML, as `gridlake config` prints it.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(Error::ConfigToml)
    }
}

/// Maps an environment variable name, without the `GRIDLAKE_` prefix, to a config key
/// path: `DATA_DIR` → `data_dir`, `HTTP_ADDR` → `http.addr`,
/// `STORAGE_SNAPSHOT_ROWS` → `storage.snapshot_rows`.
///
/// Variables that name neither a top-level key nor a section (`GRIDLAKE_CONFIG`, which
/// holds the config file path, or variables of other tools that share the prefix) are
/// not configuration and map to `None`.
fn env_key_to_path(key: &UncasedStr) -> Option<Uncased<'_>> {
    let key = key.as_str().to_ascii_lowercase();
    if TOP_LEVEL_KEYS.contains(&key.as_str()) {
        return Some(Uncased::from_owned(key));
    }
    SECTIONS.iter().find_map(|section| {
        let rest = key.strip_prefix(section)?.strip_prefix('_')?;
        (!rest.is_empty()).then(|| Uncased::from_owned(format!("{section}.{rest}")))
    })
}

#[cfg(test)]
// `Jail` closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use figment::Jail;

    use super::*;

    /// [`Config::load`] with the error type `Jail` wants.
    fn load(file: Option<&str>, overrides: &Overrides) -> figment::Result<Config> {
        Config::load(file.map(Path::new), overrides).map_err(|e| e.to_string().into())
    }

    fn mapped(key: &str) -> Option<String> {
        env_key_to_path(UncasedStr::new(key)).map(|k| k.as_str().to_owned())
    }

    #[test]
    fn env_keys_map_to_nested_paths() {
        assert_eq!(mapped("DATA_DIR").as_deref(), Some("data_dir"));
        assert_eq!(mapped("HTTP_ADDR").as_deref(), Some("http.addr"));
        assert_eq!(
            mapped("HTTP_MAX_BODY_SIZE").as_deref(),
            Some("http.max_body_size")
        );
        assert_eq!(
            mapped("STORAGE_SNAPSHOT_ROWS").as_deref(),
            Some("storage.snapshot_rows")
        );
        assert_eq!(mapped("QUERY_TIMEOUT").as_deref(), Some("query.timeout"));
        assert_eq!(mapped("MQTT_PASSWORD").as_deref(), Some("mqtt.password"));
        assert_eq!(mapped("LOG_FILTER").as_deref(), Some("log.filter"));
        assert_eq!(mapped("log_filter").as_deref(), Some("log.filter"));
    }

    #[test]
    fn env_keys_that_are_not_config_are_ignored() {
        assert_eq!(mapped("CONFIG"), None);
        assert_eq!(mapped("HTTP"), None);
        assert_eq!(mapped("HTTP_"), None);
        assert_eq!(mapped("HTTPS_PROXY"), None);
        assert_eq!(mapped("SOMETHING_ELSE"), None);
    }

    #[test]
    fn defaults_without_file_env_or_flags() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let config = load(None, &Overrides::default())?;
            assert_eq!(config, Config::default());
            assert_eq!(config.data_dir, PathBuf::from("data"));
            assert_eq!(
                config.http.addr,
                "127.0.0.1:7181".parse::<SocketAddr>().unwrap()
            );
            assert_eq!(config.http.max_body_size, ByteSize::mib(10));
            assert_eq!(config.log.filter, "info");
            Ok(())
        });
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "gridlake.toml",
                r#"
                data_dir = "/from/file"
                [http]
                addr = "127.0.0.1:1001"
                max_body_size = "1 MiB"
                [storage]
                snapshot_rows = 111
                queue_capacity = 7
                [log]
                filter = "debug"
                "#,
            )?;
            let file = "gridlake.toml";

            // File over defaults; keys the file does not set keep their defaults.
            let config = load(Some(file), &Overrides::default())?;
            assert_eq!(config.data_dir, PathBuf::from("/from/file"));
            assert_eq!(config.http.addr.port(), 1001);
            assert_eq!(config.http.max_body_size, ByteSize::mib(1));
            assert_eq!(config.storage.snapshot_rows, 111);
            assert_eq!(config.storage.queue_capacity, 7);
            assert_eq!(
                config.storage.max_group_requests,
                StoreConfig::default().max_group_requests
            );
            assert_eq!(config.log.filter, "debug");

            // Env over file, key by key.
            jail.set_env("GRIDLAKE_DATA_DIR", "/from/env");
            jail.set_env("GRIDLAKE_HTTP_ADDR", "127.0.0.1:1002");
            jail.set_env("GRIDLAKE_HTTP_MAX_BODY_SIZE", "2 MiB");
            jail.set_env("GRIDLAKE_STORAGE_SNAPSHOT_ROWS", "222");
            jail.set_env("GRIDLAKE_QUERY_TIMEOUT", "5s");
            jail.set_env("GRIDLAKE_LOG_FILTER", "warn");
            // The config file path variable is not a config key.
            jail.set_env("GRIDLAKE_CONFIG", "gridlake.toml");
            let config = load(Some(file), &Overrides::default())?;
            assert_eq!(config.data_dir, PathBuf::from("/from/env"));
            assert_eq!(config.http.addr.port(), 1002);
            assert_eq!(config.http.max_body_size, ByteSize::mib(2));
            assert_eq!(config.storage.snapshot_rows, 222);
            assert_eq!(config.storage.queue_capacity, 7);
            assert_eq!(config.query.timeout, Duration::from_secs(5));
            assert_eq!(config.log.filter, "warn");

            // Flags over env.
            let flags = Overrides {
                data_dir: Some(PathBuf::from("/from/flag")),
                http: HttpOverrides {
                    addr: Some("127.0.0.1:1003".parse().unwrap()),
                },
            };
            let config = load(Some(file), &flags)?;
            assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
            assert_eq!(config.http.addr.port(), 1003);
            // A flag for one key leaves the others of its section alone.
            assert_eq!(config.http.max_body_size, ByteSize::mib(2));
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_file_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("top.toml", "data_dri = \"x\"\n")?;
            jail.create_file("nested.toml", "[storage]\nsnapshot_rowz = 1\n")?;
            jail.create_file("section.toml", "[htpp]\naddr = \"127.0.0.1:1\"\n")?;
            for (file, key) in [
                ("top.toml", "data_dri"),
                ("nested.toml", "snapshot_rowz"),
                ("section.toml", "htpp"),
            ] {
                let err = Config::load(Some(Path::new(file)), &Overrides::default())
                    .expect_err("unknown key must be refused")
                    .to_string();
                assert!(err.contains(key), "{file}: {err}");
            }
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_section_env_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("GRIDLAKE_STORAGE_SNAPSHOT_ROWZ", "1");
            let err = Config::load(None, &Overrides::default())
                .expect_err("unknown key must be refused")
                .to_string();
            assert!(err.contains("snapshot_rowz"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_value_is_an_error_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("bad.toml", "[http]\naddr = \"not an address\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default())
                .expect_err("bad address must be refused")
                .to_string();
            assert!(err.contains("addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let err = Config::load(Some(Path::new("nope.toml")), &Overrides::default())
                .expect_err("missing file must be refused");
            assert!(matches!(err, Error::ConfigFileMissing(_)), "{err}");
            Ok(())
        });
    }

    #[test]
    fn printed_config_parses_back() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let mut config = Config {
                data_dir: PathBuf::from("/var/lib/gridlake"),
                ..Config::default()
            };
            config.http.max_body_size = ByteSize::mib(32);
            config.storage.snapshot_rows = 1234;
            config.query.timeout = Duration::from_secs(90);
            let text = config.to_toml().map_err(|e| e.to_string())?;
            jail.create_file("printed.toml", &text)?;
            let loaded = load(Some("printed.toml"), &Overrides::default())?;
            assert_eq!(loaded, config);
            Ok(())
        });
    }

    #[test]
    fn example_config_file_parses_and_matches_defaults() {
        // The example documents every option with its default; if an option is renamed
        // or its default changes, this fails until the example is updated.
        let example = include_str!("../../config/gridlake.example.toml");
        let parsed: Config = Figment::from(Toml::string(example))
            .extract()
            .expect("config/gridlake.example.toml must parse");
        assert_eq!(parsed, Config::default());
        let uncommented = uncomment_settings(example);
        let parsed: Config = Figment::from(Toml::string(&uncommented))
            .extract()
            .unwrap_or_else(|e| panic!("uncommented example must parse: {e}\n{uncommented}"));
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn example_config_file_mentions_every_option() {
        let example = uncomment_settings(include_str!("../../config/gridlake.example.toml"));
        let example: toml::Table = toml::from_str(&example).expect("example parses as TOML");
        let defaults: toml::Table =
            toml::from_str(&Config::default().to_toml().expect("defaults print"))
                .expect("defaults parse");
        for (key, value) in &defaults {
            let Some(in_example) = example.get(key) else {
                panic!("example config lacks `{key}`");
            };
            if let (Some(section), Some(in_example)) = (value.as_table(), in_example.as_table()) {
                for inner in section.keys() {
                    assert!(
                        in_example.contains_key(inner),
                        "example config lacks `{key}.{inner}`"
                    );
                }
            }
        }
    }

    #[test]
    fn example_mqtt_subscriptions_cover_every_decoder_and_pass_the_checks() {
        use ingest::mqtt::DecoderKind;

        // The examples are the `##`-prefixed lines of `[mqtt]`.
        let mut mqtt = String::from("[mqtt]\nenabled = true\n");
        for rest in example_lines("mqtt") {
            if !rest.starts_with("client_id")
                && !rest.starts_with("username")
                && !rest.starts_with("password")
            {
                mqtt.push_str(rest);
                mqtt.push('\n');
            }
        }
        let config: Config = Figment::from(Toml::string(&mqtt))
            .extract()
            .unwrap_or_else(|e| panic!("example subscriptions must parse: {e}\n{mqtt}"));
        config
            .mqtt
            .check()
            .unwrap_or_else(|e| panic!("example subscriptions must pass the checks: {e}"));
        for kind in [
            DecoderKind::Shelly,
            DecoderKind::Tasmota,
            DecoderKind::Zigbee2mqtt,
            DecoderKind::Ocpp,
            DecoderKind::LineProtocol,
            DecoderKind::Json,
            DecoderKind::Availability,
        ] {
            assert!(
                config.mqtt.subscriptions.iter().any(|s| s.decoder == kind),
                "the example has no {} subscription",
                kind.name()
            );
        }
    }

    /// The `##` example lines of the example config's section `[section]`, without
    /// their prefix.
    fn example_lines(section: &str) -> Vec<&'static str> {
        let example = include_str!("../../config/gridlake.example.toml");
        let header = format!("[{section}]");
        let mut inside = false;
        let mut lines = Vec::new();
        for line in example.lines() {
            if line.starts_with('[') {
                inside = line.trim_end() == header;
            } else if let Some(rest) = line.strip_prefix("##").filter(|_| inside) {
                lines.push(rest.strip_prefix("  ").unwrap_or(rest));
            }
        }
        lines
    }

    #[test]
    fn example_modbus_devices_pass_the_checks() {
        let mut modbus = String::from("[modbus]\nenabled = true\n");
        for line in example_lines("modbus") {
            modbus.push_str(line);
            modbus.push('\n');
        }
        let config: Config = Figment::from(Toml::string(&modbus))
            .extract()
            .unwrap_or_else(|e| panic!("example devices must parse: {e}\n{modbus}"));
        config
            .modbus
            .check()
            .unwrap_or_else(|e| panic!("example devices must pass the checks: {e}"));
        assert_eq!(config.modbus.devices.len(), 2);
        assert!(config.modbus.devices[1].points.len() == 2);
    }

    #[test]
    fn every_config_file_loads_and_passes_the_checks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config/ is readable") {
            let path = entry.expect("config/ entry").path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            seen += 1;
            let config = Config::load(Some(&path), &Overrides::default())
                .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
            if config.mqtt.enabled {
                config
                    .mqtt
                    .check()
                    .unwrap_or_else(|e| panic!("{}: [mqtt]: {e}", path.display()));
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("modbus-") {
                assert!(config.modbus.enabled, "{name} should enable [modbus]");
                assert!(!config.modbus.devices.is_empty(), "{name} has no devices");
            }
            if config.modbus.enabled {
                config
                    .modbus
                    .check()
                    .unwrap_or_else(|e| panic!("{}: [modbus]: {e}", path.display()));
            }
        }
        assert!(
            seen >= 5,
            "expected the example and the Modbus configs in config/"
        );
    }

    /// The example shows settings commented out (`# key = value`); turns those lines
    /// back into settings, leaving prose comments (`# Some words.`) alone.
    fn uncomment_settings(text: &str) -> String {
        text.lines()
            .map(|line| {
                let trimmed = line.trim_start();
                match trimmed.strip_prefix("# ") {
                    Some(rest) if looks_like_setting(rest) => rest.to_owned(),
                    _ => line.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn looks_like_setting(text: &str) -> bool {
        let Some((key, _)) = text.split_once(" = ") else {
            return false;
        };
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }
}

//! The `[mqtt]` section: the broker connection and the subscriptions, each with its
//! decoder and topic template.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use devices::decode::availability::{AvailabilityDecoder, AvailabilityOptions};
use devices::decode::json_map::{JsonDecoder, JsonMapping};
use devices::decode::ocpp::OcppDecoder;
use devices::decode::shelly::ShellyDecoder;
use devices::decode::tasmota::TasmotaDecoder;
use devices::decode::zigbee2mqtt::Zigbee2MqttDecoder;
use serde::{Deserialize, Serialize};

use super::topic::{TopicFilter, TopicTemplate};
use crate::Precision;

/// How to reach the broker and what to subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Run the collector. Off by default: a server without a broker must start.
    pub enabled: bool,
    /// `mqtt://host:port` or, with TLS, `mqtts://host:port` (ports default to 1883 and
    /// 8883).
    pub broker: String,
    /// The client id. The broker keeps this client's session (subscriptions and the
    /// QoS 1 messages not yet acknowledged) under it, so it must be stable across
    /// restarts and unique per gridlake node. Default: `gridlake-<hostname>`.
    pub client_id: Option<String>,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// Password (prefer `GRIDLAKE_MQTT_PASSWORD` to a file).
    pub password: Option<String>,
    /// TLS settings, used with `mqtts://`.
    pub tls: TlsConfig,
    /// How long the broker keeps the session (and queues QoS 1 messages) while gridlake
    /// is away. `0s` makes every connection start clean, losing what was published
    /// while gridlake was down.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
    /// MQTT keep-alive.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Messages the broker may send before gridlake acknowledges (MQTT 5 Receive
    /// Maximum). Acknowledgements wait for the WAL fsync, so this should cover a few
    /// group commits' worth. It also sizes the collector's internal queues.
    pub max_inflight: u16,
    /// Rows gathered from messages before they go to the store together.
    pub batch_rows: usize,
    /// How long the first message of a batch waits for more before the batch is written.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// First reconnect delay; doubles per failed attempt up to `reconnect_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// What to subscribe to.
    pub subscriptions: Vec<SubscriptionConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            broker: "mqtt://127.0.0.1:1883".to_string(),
            client_id: None,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            session_expiry: Duration::from_secs(24 * 3600),
            keep_alive: Duration::from_secs(30),
            max_inflight: 1000,
            batch_rows: 10_000,
            batch_linger: Duration::from_millis(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            subscriptions: Vec::new(),
        }
    }
}

/// A broker address: `mqtt://[user[:password]@]host[:port]`, or `mqtts://` for TLS
/// (`tcp://` and `ssl://` are accepted as synonyms). The collector and the simulator
/// both read their broker from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port; 1883 by default, 8883 with TLS.
    pub port: u16,
    /// Whether the URL asks for TLS.
    pub tls: bool,
    /// User name from the URL, if any.
    pub username: Option<String>,
    /// Password from the URL, if any.
    pub password: Option<String>,
}

impl BrokerUrl {
    /// Parses `text`; the error says what is wrong, without repeating the URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| e.to_string())?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "unknown scheme {other:?}; use mqtt://host:port or mqtts://host:port"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "no host; use mqtt://host:port".to_string())?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err("a broker URL has no path or query; use mqtt://host:port".to_string());
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
            tls,
            username: (!url.username().is_empty()).then(|| url.username().to_string()),
            password: url.password().map(str::to_string),
        })
    }
}

/// TLS for `mqtts://` brokers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificates to trust; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that authenticate clients by
    /// certificate (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// The payload formats gridlake decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// Shelly Gen2 (`<id>/status/<component>`, `<id>/events/rpc`, `<id>/online`).
    Shelly,
    /// Tasmota (`tele/<topic>/SENSOR`, `STATE`, `LWT`).
    Tasmota,
    /// Zigbee2MQTT (`zigbee2mqtt/<friendly name>`, `/availability`).
    Zigbee2mqtt,
    /// OCPP 1.6 and 2.0.1 messages (bare or as OCPP-J CALL frames).
    Ocpp,
    /// InfluxDB line protocol.
    LineProtocol,
    /// Any JSON, mapped to a table by the subscription's `json` section.
    Json,
    /// Online/offline payloads of availability and last-will topics.
    Availability,
}

impl DecoderKind {
    /// The name used in configuration, metrics and the `source` column.
    pub fn name(self) -> &'static str {
        match self {
            DecoderKind::Shelly => "shelly",
            DecoderKind::Tasmota => "tasmota",
            DecoderKind::Zigbee2mqtt => "zigbee2mqtt",
            DecoderKind::Ocpp => "ocpp",
            DecoderKind::LineProtocol => "line_protocol",
            DecoderKind::Json => "json",
            DecoderKind::Availability => "availability",
        }
    }
}

/// One subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Name in metrics and in the `source` of the rows (`mqtt/<name>`). Default: the
    /// decoder's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Topic filter, e.g. `shellies/+/events/rpc`; `$share/<group>/<filter>` makes it an
    /// MQTT 5 shared subscription, so several gridlake nodes split the stream.
    pub filter: String,
    /// The payload format.
    pub decoder: DecoderKind,
    /// Extracts tags from the topic: `sites/{site_id}/devices/{device_id}/telemetry`.
    #[serde(default)]
    pub topic_template: Option<String>,
    /// Tags added to every row (a template's captures win over these).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// QoS of the subscription: 1 (default; at-least-once, acknowledged after the WAL
    /// fsync) or 0.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Target table for `tasmota` and `zigbee2mqtt` (default `smart_plug`).
    #[serde(default)]
    pub table: Option<String>,
    /// IANA time zone of Tasmota's local `Time` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Timestamp unit of `line_protocol` payloads (default ns).
    #[serde(default)]
    pub precision: Option<String>,
    /// The mapping of the `json` decoder.
    #[serde(default)]
    pub json: Option<JsonMapping>,
    /// Accepted payloads of the `availability` decoder.
    #[serde(default)]
    pub availability: Option<AvailabilityOptions>,
}

fn default_qos() -> u8 {
    1
}

/// A decoder ready to run: a device decoder from `devices`, or line protocol, which
/// `ingest` parses itself.
#[derive(Debug)]
pub(crate) enum PayloadDecoder {
    Device(Box<dyn devices::Decode>),
    LineProtocol(Precision),
}

/// A checked subscription.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) filter: TopicFilter,
    pub(crate) qos: u8,
    pub(crate) template: Option<TopicTemplate>,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) decoder: PayloadDecoder,
    /// `mqtt/<name>`: the `source` of rows and rejections.
    pub(crate) source: String,
}

impl SubscriptionConfig {
    /// Checks the subscription and builds its decoder. Errors name the subscription
    /// (by position and filter) and the setting.
    pub(crate) fn route(&self, index: usize) -> Result<Route, String> {
        let at = |msg: String| format!("mqtt.subscriptions[{index}] ({:?}): {msg}", self.filter);
        let filter = TopicFilter::parse(&self.filter).map_err(at)?;
        let template = self
            .topic_template
            .as_deref()
            .map(TopicTemplate::parse)
            .transpose()
            .map_err(at)?;
        if self.qos > 1 {
            return Err(at(format!(
                "qos = {} is not supported; use 1 (at least once, acknowledged after the WAL fsync) or 0",
                self.qos
            )));
        }
        for (key, value) in &self.tags {
            if key.is_empty() || value.is_empty() || key == storage::TIME_COLUMN {
                return Err(at(format!("tag {key:?} = {value:?} is not a valid tag")));
            }
        }
        let kind = self.decoder;
        let unused = |option: &str| {
            at(format!(
                "`{option}` does not apply to the {} decoder",
                kind.name()
            ))
        };
        if self.table.is_some() && !matches!(kind, DecoderKind::Tasmota | DecoderKind::Zigbee2mqtt)
        {
            return Err(unused("table"));
        }
        if self.timezone.is_some() && kind != DecoderKind::Tasmota {
            return Err(unused("timezone"));
        }
        if self.precision.is_some() && kind != DecoderKind::LineProtocol {
            return Err(unused("precision"));
        }
        if self.json.is_some() && kind != DecoderKind::Json {
            return Err(unused("json"));
        }
        if self.availability.is_some() && kind != DecoderKind::Availability {
            return Err(unused("availability"));
        }
        let table = || {
            self.table
                .clone()
                .unwrap_or_else(|| "smart_plug".to_string())
        };
        let decoder = match kind {
            DecoderKind::Shelly => PayloadDecoder::Device(Box::new(ShellyDecoder::new())),
            DecoderKind::Tasmota => {
                let tz = match self.timezone.as_deref() {
                    None => chrono_tz::UTC,
                    Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                        at(format!(
                            "timezone {name:?} is not an IANA time zone (e.g. Europe/Berlin)"
                        ))
                    })?,
                };
                PayloadDecoder::Device(Box::new(TasmotaDecoder::new(table(), tz)))
            }
            DecoderKind::Zigbee2mqtt => {
                PayloadDecoder::Device(Box::new(Zigbee2MqttDecoder::new(table())))
            }
            DecoderKind::Ocpp => PayloadDecoder::Device(Box::new(OcppDecoder::new())),
            DecoderKind::LineProtocol => {
                let precision = match self.precision.as_deref() {
                    None => Precision::default(),
                    Some(p) => p.parse::<Precision>().map_err(|e| at(e.to_string()))?,
                };
                PayloadDecoder::LineProtocol(precision)
            }
            DecoderKind::Json => {
                let mapping = self.json.clone().ok_or_else(|| {
                    at("the json decoder needs a [mqtt.subscriptions.json] mapping".to_string())
                })?;
                PayloadDecoder::Device(Box::new(JsonDecoder::new(mapping).map_err(at)?))
            }
            DecoderKind::Availability => {
                let options = self.availability.clone().unwrap_or_default();
                options.validate().map_err(at)?;
                PayloadDecoder::Device(Box::new(AvailabilityDecoder::new(options)))
            }
        };
        let name = self.name.clone().unwrap_or_else(|| kind.name().to_string());
        Ok(Route {
            source: format!("mqtt/{name}"),
            name,
            filter,
            qos: self.qos,
            template,
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            decoder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_host_port_tls_and_credentials() {
        let b = BrokerUrl::parse("mqtts://user:pw@[::1]").unwrap();
        assert_eq!(
            b,
            BrokerUrl {
                host: "::1".into(),
                port: 8883,
                tls: true,
                username: Some("user".into()),
                password: Some("pw".into()),
            }
        );
        let b = BrokerUrl::parse("tcp://broker:1884/").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("broker", 1884, false));
        assert!(
            BrokerUrl::parse("mqtt://h/topic")
                .unwrap_err()
                .contains("no path")
        );
        assert!(
            BrokerUrl::parse("ws://h")
                .unwrap_err()
                .contains("unknown scheme")
        );
    }
}

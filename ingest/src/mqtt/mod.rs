//! The MQTT collector: subscribes to a broker, decodes device payloads with the
//! `devices` decoders (or line protocol), and stores the readings with at-least-once
//! delivery made exactly-once by deduplication. See [`MqttCollector`].

mod collector;
mod config;
mod metrics;
mod topic;

pub use collector::{MqttCollector, MqttConfigError};
pub use config::{BrokerUrl, DecoderKind, MqttConfig, SubscriptionConfig, TlsConfig};
pub use metrics::MqttMetrics;

//! Prometheus metrics of the MQTT collector.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the per-subscription message counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct MessageLabels {
    /// The subscription's name (`-` for topics no subscription matches).
    pub(crate) subscription: String,
    /// `stored` (every part decoded), `partial` (some parts went to `_rejected`),
    /// `rejected` (all of it went to `_rejected`) or `empty` (nothing to store).
    pub(crate) outcome: &'static str,
}

/// Labels of the per-subscription reading counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct SubscriptionLabels {
    pub(crate) subscription: String,
}

/// Handles to the collector's metrics; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MqttMetrics {
    pub(crate) messages: Family<MessageLabels, Counter>,
    pub(crate) readings: Family<SubscriptionLabels, Counter>,
    pub(crate) connected: Gauge,
    pub(crate) subscribed: Gauge,
    pub(crate) connection_attempts_failed: Counter,
    pub(crate) connections: Counter,
    pub(crate) unacked: Gauge,
    pub(crate) store_busy: Counter,
    pub(crate) store_failures: Counter,
}

impl MqttMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gridlake_mqtt_messages",
            "MQTT messages received, by subscription and outcome (stored, partial, rejected, empty)",
            self.messages.clone(),
        );
        registry.register(
            "gridlake_mqtt_readings",
            "Rows decoded from MQTT messages and handed to the store, by subscription",
            self.readings.clone(),
        );
        registry.register(
            "gridlake_mqtt_connected",
            "1 while the collector is connected to the broker",
            self.connected.clone(),
        );
        registry.register(
            "gridlake_mqtt_subscribed",
            "1 once the broker has granted every subscription of the current connection",
            self.subscribed.clone(),
        );
        registry.register(
            "gridlake_mqtt_connections",
            "Successful connections to the broker (the first and every reconnect)",
            self.connections.clone(),
        );
        registry.register(
            "gridlake_mqtt_connection_failures",
            "Lost connections and failed connection attempts",
            self.connection_attempts_failed.clone(),
        );
        registry.register(
            "gridlake_mqtt_unacked_messages",
            "QoS 1 messages received and not yet acknowledged (waiting for the WAL fsync)",
            self.unacked.clone(),
        );
        registry.register(
            "gridlake_mqtt_store_busy",
            "Times the store's queue was full and a batch waited to be retried",
            self.store_busy.clone(),
        );
        registry.register(
            "gridlake_mqtt_store_failures",
            "Batches the store failed to make durable; their messages were not acknowledged and the broker redelivers them",
            self.store_failures.clone(),
        );
    }
}

//! Prometheus metrics of the Modbus collector.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the counters that count by outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

/// Labels of the device gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: &'static str,
}

/// Handles to the collector's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct ModbusMetrics {
    pub(crate) cycles: Family<OutcomeLabels, Counter>,
    pub(crate) requests: Family<OutcomeLabels, Counter>,
    pub(crate) readings: Counter,
    pub(crate) devices: Family<StateLabels, Gauge>,
    pub(crate) poll_seconds: Histogram,
    pub(crate) store_failures: Counter,
    pub(crate) store_busy: Counter,
    pub(crate) invalid_rows: Counter,
}

impl Default for ModbusMetrics {
    fn default() -> Self {
        Self {
            cycles: Family::default(),
            requests: Family::default(),
            readings: Counter::default(),
            devices: Family::default(),
            // 1 ms (a LAN device answering one request) to 16 s (timeouts and retries).
            poll_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            store_failures: Counter::default(),
            store_busy: Counter::default(),
            invalid_rows: Counter::default(),
        }
    }
}

impl ModbusMetrics {
    pub(crate) fn cycle(&self, outcome: &'static str) -> Counter {
        self.cycles
            .get_or_create(&OutcomeLabels { outcome })
            .clone()
    }

    pub(crate) fn request(&self, outcome: &'static str) -> Counter {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .clone()
    }

    pub(crate) fn devices_in(&self, state: &'static str) -> Gauge {
        self.devices.get_or_create(&StateLabels { state }).clone()
    }

    /// Cycles that ended with `outcome` (`ok`, `failed`, `missed`, `skipped`) so far.
    pub fn cycles(&self, outcome: &'static str) -> u64 {
        self.cycle(outcome).get()
    }

    /// Devices in `state` (`online`, `offline`) now.
    pub fn devices_count(&self, state: &'static str) -> i64 {
        self.devices_in(state).get()
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gridlake_modbus_cycles",
            "Poll cycles by outcome: ok, failed (after retries), missed (a later cycle was already due when the device's turn came, because its previous poll or the endpoint's other devices took too long) and skipped (while backing off a failing device)",
            self.cycles.clone(),
        );
        registry.register(
            "gridlake_modbus_requests",
            "Modbus requests by outcome: ok, exception (the device answered with an exception code), timeout, io (connection refused, reset or garbled)",
            self.requests.clone(),
        );
        registry.register(
            "gridlake_modbus_readings",
            "Rows polled from Modbus devices and handed to the store",
            self.readings.clone(),
        );
        registry.register(
            "gridlake_modbus_devices",
            "Configured devices by state (online, offline); a device not yet polled is in neither",
            self.devices.clone(),
        );
        registry.register(
            "gridlake_modbus_poll_seconds",
            "Duration of one device's poll cycle, retries included",
            self.poll_seconds.clone(),
        );
        registry.register(
            "gridlake_modbus_store_failures",
            "Batches of polled rows the store failed to take or make durable",
            self.store_failures.clone(),
        );
        registry.register(
            "gridlake_modbus_store_busy",
            "Times the store's queue was full and a batch waited to be retried",
            self.store_busy.clone(),
        );
        registry.register(
            "gridlake_modbus_invalid_rows",
            "Polled rows refused: by the device registry (a device it does not know, with crm.unknown_devices = \"reject\") or by the store (a column whose type an earlier write fixed differently, a fractional value for an integer column)",
            self.invalid_rows.clone(),
        );
    }
}

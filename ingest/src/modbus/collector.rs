//! The collector: starts one task per endpoint and the sink, and stops them in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use storage::Store;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::config::{Endpoint, ModbusConfig, ModbusConfigError};
use super::connection::Connection;
use super::device::{Device, SunSpecInfo};
use super::endpoint::{Clock, EndpointTask, Slot};
use super::metrics::ModbusMetrics;
use super::sink::Sink;
use crate::gate::DeviceGate;

/// What the collector knows about one device, for an HTTP listing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceSnapshot {
    /// The configured id.
    pub device_id: String,
    /// The configured site, if any.
    pub site_id: Option<String>,
    /// `host:port (framing)`.
    pub endpoint: String,
    /// Modbus unit id.
    pub unit_id: u8,
    /// Poll interval in milliseconds.
    pub interval_ms: u64,
    /// Whether the last cycle succeeded; `None` before the first.
    pub online: Option<bool>,
    /// The error of the latest failed cycle (kept after recovery, for diagnosis).
    pub last_error: Option<String>,
    /// The SunSpec map discovery found (kept while the device is offline).
    pub sunspec: Option<SunSpecInfo>,
    /// Cycles that succeeded.
    pub polls_ok: u64,
    /// Cycles that failed after their retries.
    pub polls_failed: u64,
    /// Cycles whose turn passed while earlier polls ran.
    pub cycles_missed: u64,
    /// Cycles skipped while backing off.
    pub cycles_skipped: u64,
    /// When the last cycle ended (ms since the Unix epoch).
    pub last_poll_ms: Option<i64>,
    /// When the next cycle is due (ms since the Unix epoch).
    pub next_poll_ms: Option<i64>,
}

/// A running Modbus collector. Dropping it stops polling too, but nothing waits for
/// the last rows to be written; call [`ModbusCollector::shutdown`] for that.
#[derive(Debug)]
pub struct ModbusCollector {
    stop: watch::Sender<bool>,
    endpoints: Vec<JoinHandle<()>>,
    sink: JoinHandle<()>,
    devices: DeviceList,
}

/// A view of the collector's devices that outlives borrows of the collector, for the
/// HTTP API. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DeviceList {
    snapshots: Arc<[Arc<Mutex<DeviceSnapshot>>]>,
}

impl DeviceList {
    /// The devices, in configuration order.
    pub fn snapshot(&self) -> Vec<DeviceSnapshot> {
        self.snapshots
            .iter()
            .map(|s| match s.lock() {
                Ok(s) => s.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            })
            .collect()
    }
}

impl ModbusCollector {
    /// Checks `config` and starts polling its devices into `store`. Unreachable
    /// devices do not fail the start: they are retried with backoff. Polled rows pass
    /// `gate` (the device registry), when given, before they are validated. Must be
    /// called within a Tokio runtime.
    pub fn start(
        config: &ModbusConfig,
        store: Store,
        metrics: ModbusMetrics,
        gate: Option<Arc<dyn DeviceGate>>,
    ) -> Result<Self, ModbusConfigError> {
        let specs = config.specs()?;
        let clock = Clock::start();
        // Rows of one device cycle per message. Bounded: a store that cannot keep up
        // slows the pollers (and shows as missed cycles) instead of growing memory.
        let (tx, rx) = mpsc::channel(specs.len().clamp(64, 8192));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut groups: Vec<(Endpoint, Vec<Slot>)> = Vec::new();
        let mut group_of: HashMap<Endpoint, usize> = HashMap::new();
        let mut snapshots = Vec::with_capacity(specs.len());
        for spec in specs {
            let snapshot = Arc::new(Mutex::new(DeviceSnapshot {
                device_id: spec.device_id.clone(),
                site_id: spec.site_id.clone(),
                endpoint: spec.endpoint.to_string(),
                unit_id: spec.unit_id,
                interval_ms: u64::try_from(spec.interval.as_millis()).unwrap_or(u64::MAX),
                ..DeviceSnapshot::default()
            }));
            snapshots.push(Arc::clone(&snapshot));
            let endpoint = spec.endpoint.clone();
            let slot = Slot::new(Device::new(spec), config.backoff_max, &clock, snapshot);
            match group_of.get(&endpoint) {
                Some(&i) => groups[i].1.push(slot),
                None => {
                    group_of.insert(endpoint.clone(), groups.len());
                    groups.push((endpoint, vec![slot]));
                }
            }
        }
        tracing::info!(
            devices = snapshots.len(),
            endpoints = groups.len(),
            "Modbus collector starting"
        );
        let endpoints = groups
            .into_iter()
            .map(|(endpoint, slots)| {
                let task = EndpointTask {
                    conn: Connection::new(endpoint.clone(), config.timeout, &metrics),
                    endpoint,
                    slots,
                    retries: config.retries,
                    clock,
                    sink: tx.clone(),
                    metrics: metrics.clone(),
                };
                let span = tracing::info_span!("modbus", endpoint = %task.endpoint);
                tokio::spawn(task.run(stop_rx.clone()).instrument(span))
            })
            .collect();
        let sink = Sink {
            store,
            gate,
            metrics,
            batch_rows: config.batch_rows.max(1),
            linger: config.batch_linger,
            warned: None,
            warned_gate: None,
        };
        let sink = tokio::spawn(sink.run(rx));
        Ok(Self {
            stop: stop_tx,
            endpoints,
            sink,
            devices: DeviceList {
                snapshots: snapshots.into(),
            },
        })
    }

    /// The devices, in configuration order.
    pub fn devices(&self) -> Vec<DeviceSnapshot> {
        self.devices.snapshot()
    }

    /// A handle on the device list that stays valid while the collector runs.
    pub fn device_list(&self) -> DeviceList {
        self.devices.clone()
    }

    /// Stops polling (abandoning polls under way), writes the rows already polled and
    /// waits until the store has made them durable.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.endpoints {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a Modbus endpoint task failed");
            }
        }
        // The endpoint tasks held the only senders: the sink now drains and ends.
        if let Err(e) = self.sink.await {
            tracing::error!(error = %e, "the Modbus sink task failed");
        }
        tracing::info!("Modbus collector stopped");
    }
}

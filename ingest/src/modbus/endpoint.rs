//! The task of one endpoint (host, port, framing): its connection and its devices,
//! polled one after another when their cycles come due.
//!
//! Devices behind one endpoint are usually behind one gateway, which serialises
//! requests anyway; one connection per endpoint keeps gateways from running out of
//! connection slots. Endpoints run in tasks of their own, so a slow or dead endpoint
//! delays only its own devices, and a node holds thousands of them with one small task
//! each.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use storage::ParsedLine;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::collector::DeviceSnapshot;
use super::config::Endpoint;
use super::connection::{Connection, now_rounded};
use super::device::{Device, Io};
use super::metrics::ModbusMetrics;
use super::schedule::Schedule;
use crate::clock::now_ns;

/// Maps schedule time (ns since the epoch) to Tokio instants, fixed once at start:
/// sleeping follows the monotonic clock, so a wall clock step does not make every
/// device due at once, and all endpoint tasks share one grid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    ns: i64,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Self {
            instant: Instant::now(),
            ns: now_ns(),
        }
    }

    fn ns(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.instant);
        self.ns + i64::try_from(since.as_nanos()).unwrap_or(i64::MAX / 2)
    }

    fn instant(&self, ns: i64) -> Instant {
        let ahead = u64::try_from(ns - self.ns).unwrap_or(0);
        self.instant + Duration::from_nanos(ahead)
    }

    fn now(&self) -> i64 {
        self.ns(Instant::now())
    }
}

/// Whether a device answered its last cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Unknown,
    Online,
    Offline,
}

/// A device with its schedule and state.
#[derive(Debug)]
pub(crate) struct Slot {
    device: Device,
    schedule: Schedule,
    status: Status,
    snapshot: Arc<Mutex<DeviceSnapshot>>,
}

impl Slot {
    pub(crate) fn new(
        device: Device,
        backoff_max: Duration,
        clock: &Clock,
        snapshot: Arc<Mutex<DeviceSnapshot>>,
    ) -> Self {
        let schedule = Schedule::new(
            &device.spec.device_id,
            device.spec.interval,
            backoff_max,
            clock.now(),
        );
        Self {
            device,
            schedule,
            status: Status::Unknown,
            snapshot,
        }
    }
}

/// Counters and gauges the task updates per cycle, looked up once.
#[derive(Debug)]
struct Handles {
    ok: Counter,
    failed: Counter,
    missed: Counter,
    skipped: Counter,
    online: Gauge,
    offline: Gauge,
}

/// One endpoint's task.
#[derive(Debug)]
pub(crate) struct EndpointTask {
    pub(crate) endpoint: Endpoint,
    pub(crate) conn: Connection,
    pub(crate) slots: Vec<Slot>,
    pub(crate) retries: u32,
    pub(crate) clock: Clock,
    pub(crate) sink: mpsc::Sender<Vec<ParsedLine>>,
    pub(crate) metrics: ModbusMetrics,
}

impl EndpointTask {
    /// Polls until `stop` turns true. A poll under way is abandoned then: it may be
    /// waiting out a timeout, and shutdown should not.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let handles = Handles {
            ok: self.metrics.cycle("ok"),
            failed: self.metrics.cycle("failed"),
            missed: self.metrics.cycle("missed"),
            skipped: self.metrics.cycle("skipped"),
            online: self.metrics.devices_in("online"),
            offline: self.metrics.devices_in("offline"),
        };
        let mut queue: BinaryHeap<Reverse<(Instant, usize)>> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| Reverse((self.clock.instant(slot.schedule.due()), i)))
            .collect();
        for slot in &self.slots {
            self.publish(slot, None);
        }
        while let Some(&Reverse((due, index))) = queue.peek() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|&s| s) => break,
                () = tokio::time::sleep_until(due) => {}
            }
            queue.pop();
            let rows = tokio::select! {
                biased;
                _ = stop.wait_for(|&s| s) => break,
                rows = self.cycle(index, &handles) => rows,
            };
            let slot = &self.slots[index];
            queue.push(Reverse((self.clock.instant(slot.schedule.due()), index)));
            if !rows.is_empty() && self.sink.send(rows).await.is_err() {
                tracing::error!(endpoint = %self.endpoint, "the Modbus sink stopped; endpoint task ends");
                break;
            }
        }
        self.conn.close().await;
    }

    /// Polls the device in `index` once and moves it along its schedule. Returns its
    /// rows: readings and, on a transition, its `device_status` row.
    async fn cycle(&mut self, index: usize, handles: &Handles) -> Vec<ParsedLine> {
        let slot = &mut self.slots[index];
        let missed = slot.schedule.begin(self.clock.now());
        if missed > 0 {
            handles.missed.inc_by(missed);
        }
        let started = Instant::now();
        let mut io = Io {
            conn: &mut self.conn,
            unit: slot.device.spec.unit_id,
            retries: self.retries,
            arrived: now_rounded(),
        };
        let result = slot.device.poll(&mut io).await;
        self.metrics
            .poll_seconds
            .observe(started.elapsed().as_secs_f64());
        let now = self.clock.now();
        let mut rows = Vec::new();
        let mut skipped = 0;
        let error = match result {
            Ok(polled) => {
                handles.ok.inc();
                slot.schedule.succeeded();
                if polled.invalid > 0 {
                    self.metrics.invalid_rows.inc_by(polled.invalid as u64);
                }
                rows = polled.rows;
                if slot.status != Status::Online {
                    let description = slot.device.description();
                    tracing::info!(device_id = %slot.device.spec.device_id, "Modbus device online: {description}");
                    if slot.status == Status::Offline {
                        handles.offline.dec();
                    }
                    handles.online.inc();
                    slot.status = Status::Online;
                    rows.extend(slot.device.status_line(true, &description, now_rounded()));
                }
                None
            }
            Err(error) => {
                handles.failed.inc();
                skipped = slot.schedule.failed(now);
                if skipped > 0 {
                    handles.skipped.inc_by(skipped);
                }
                if slot.status != Status::Offline {
                    tracing::warn!(device_id = %slot.device.spec.device_id, %error, "Modbus device offline; backing off");
                    if slot.status == Status::Online {
                        handles.online.dec();
                    }
                    handles.offline.inc();
                    slot.status = Status::Offline;
                    slot.device.forget();
                    rows.extend(slot.device.status_line(false, &error, now_rounded()));
                } else {
                    tracing::debug!(device_id = %slot.device.spec.device_id, %error, failures = slot.schedule.failures(), "Modbus device still failing");
                }
                Some(error)
            }
        };
        let slot = &self.slots[index];
        self.publish(slot, Some((error, missed, skipped)));
        rows
    }

    /// Updates the device's snapshot; `cycle` is the outcome of a cycle just run.
    fn publish(&self, slot: &Slot, cycle: Option<(Option<String>, u64, u64)>) {
        let next = slot.schedule.due();
        let mut snapshot = match slot.snapshot.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        snapshot.next_poll_ms = Some(next / 1_000_000);
        // Kept while the device is offline: the listing shows what it was.
        if let Some(info) = slot.device.sunspec_info()
            && snapshot.sunspec.as_ref() != Some(info)
        {
            snapshot.sunspec = Some(info.clone());
        }
        if let Some((error, missed, skipped)) = cycle {
            snapshot.online = Some(error.is_none());
            snapshot.last_poll_ms = Some(now_ns() / 1_000_000);
            snapshot.cycles_missed += missed;
            snapshot.cycles_skipped += skipped;
            match error {
                None => snapshot.polls_ok += 1,
                Some(e) => {
                    snapshot.polls_failed += 1;
                    snapshot.last_error = Some(e);
                }
            }
        }
    }
}

//! The device registry on the write path: which site a reading's `device_id` belongs
//! to, what happens to devices the registry does not know, and when each device was
//! last heard from.
//!
//! ```text
//!  crm devices ──load / reload──► cache: device_id → (site, newest unwritten time)
//!                                   ▲            │
//!  REST changes ──set / remove──────┘            │ admit (HTTP, MQTT, Modbus rows)
//!                                                ▼
//!                    unknown device: cached as unassigned at once, queued ──┐
//!                    every reading: its time noted in the cache entry       │
//!                                                                           ▼
//!  background task: register_unassigned (queued devices, at once) · touch_last_seen
//!                   (every crm.last_seen_interval, and once more at shutdown)
//! ```
//!
//! The write path never waits for the side store: `admit` reads an in-memory map under
//! a shared lock and records times with an atomic max, so concurrent requests do not
//! serialise on it, and a run of rows of one device costs one lookup. Everything that
//! needs the database is queued for the background task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crm::{Crm, CrmConfig, DeviceFilter, DeviceKind, NewDevice, Page, UnknownDevices};
use devices::tables;
use ingest::gate::{self, DeviceGate};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use storage::{LineError, ParsedLine};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// A cache entry's `seen` when no reading arrived since the last flush.
const NOT_SEEN: i64 = i64::MIN;

/// The longest `device_id` the crm accepts (`crm/src/devices.rs`, `check`); a test
/// keeps the two in step.
const MAX_DEVICE_ID_CHARS: usize = 256;

/// The shortest flush interval: a zero interval would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The device registry's in-memory side, shared by every write path. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRegistry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    crm: Crm,
    policy: UnknownDevices,
    interval: Duration,
    cache: RwLock<Cache>,
    /// Devices first seen in telemetry, waiting for the background task to register
    /// them.
    queue: Mutex<Vec<NewDevice>>,
    /// Wakes the background task when devices are queued.
    wake: Notify,
    metrics: RegistryMetrics,
}

/// What the write path knows of one device.
#[derive(Debug)]
struct Entry {
    /// Its site; `None` while unassigned.
    site: Option<i64>,
    /// The newest reading time (ms) not yet written to the side store, or [`NOT_SEEN`].
    seen: AtomicI64,
}

impl Entry {
    fn new(site: Option<i64>, seen: i64) -> Self {
        Self {
            site,
            seen: AtomicI64::new(seen),
        }
    }
}

/// A change to one device: its new site (`Some(None)`: unassigned), or `None` for
/// removed.
type Change = Option<Option<i64>>;

#[derive(Debug, Default)]
struct Cache {
    devices: HashMap<Box<str>, Entry>,
    /// Reloads under way. While one reads the side store, changes are also journalled
    /// and replayed onto what it read, so a change made meanwhile is not lost.
    reloads: usize,
    journal: Vec<(Box<str>, Change)>,
}

impl Cache {
    fn apply(&mut self, device_id: &str, change: Change) {
        apply(&mut self.devices, device_id, change);
        if self.reloads > 0 {
            self.journal.push((device_id.into(), change));
        }
    }
}

fn apply(devices: &mut HashMap<Box<str>, Entry>, device_id: &str, change: Change) {
    match change {
        Some(site) => match devices.get_mut(device_id) {
            Some(entry) => entry.site = site,
            None => {
                devices.insert(device_id.into(), Entry::new(site, NOT_SEEN));
            }
        },
        None => {
            devices.remove(device_id);
        }
    }
}

/// A reload under way, counted for as long as this lives: a reload whose future is
/// dropped (the client of the request that started it went away) must not leave the
/// journal growing.
#[derive(Debug)]
struct Reloading<'a>(&'a RwLock<Cache>);

impl<'a> Reloading<'a> {
    fn begin(cache: &'a RwLock<Cache>) -> Self {
        write(cache).reloads += 1;
        Self(cache)
    }
}

impl Drop for Reloading<'_> {
    fn drop(&mut self) {
        let mut cache = write(self.0);
        cache.reloads -= 1;
        if cache.reloads == 0 {
            cache.journal.clear();
        }
    }
}

/// Counters on `/metrics`.
#[derive(Debug, Clone, Default)]
struct RegistryMetrics {
    registered: Counter,
    refused: Counter,
    last_seen: Counter,
    store_failures: Counter,
}

impl DeviceRegistry {
    /// Loads every device's site from `crm`. The registry treats unknown devices as
    /// `config.unknown_devices` says and writes last-seen times every
    /// `config.last_seen_interval` once [`DeviceRegistry::start`] runs its task.
    pub(crate) async fn load(crm: Crm, config: &CrmConfig) -> crm::Result<Self> {
        let registry = Self {
            shared: Arc::new(Shared {
                crm,
                policy: config.unknown_devices,
                interval: config.last_seen_interval.max(MIN_INTERVAL),
                cache: RwLock::default(),
                queue: Mutex::default(),
                wake: Notify::new(),
                metrics: RegistryMetrics::default(),
            }),
        };
        let devices = registry.reload().await?;
        tracing::info!(
            devices,
            unknown_devices = ?config.unknown_devices,
            "device registry loaded"
        );
        Ok(registry)
    }

    /// Reads every device's site from the side store again, for changes the cache did
    /// not see one by one (a deleted site or account takes its devices with it).
    /// Returns the number of devices. Times noted since the last flush are kept.
    pub(crate) async fn reload(&self) -> crm::Result<usize> {
        let _reloading = Reloading::begin(&self.shared.cache);
        let loaded = all_sites(&self.shared.crm).await;
        self.replace(loaded)
    }

    /// The second half of [`DeviceRegistry::reload`]: the cache becomes `loaded`, with
    /// the changes made while it was read replayed onto it.
    fn replace(&self, loaded: crm::Result<HashMap<Box<str>, Option<i64>>>) -> crm::Result<usize> {
        let mut cache = write(&self.shared.cache);
        loaded.map(|sites| {
            let mut devices: HashMap<Box<str>, Entry> = sites
                .into_iter()
                .map(|(device_id, site)| (device_id, Entry::new(site, NOT_SEEN)))
                .collect();
            // Devices waiting for registration are not in the store yet.
            for new in lock(&self.shared.queue).iter() {
                if !devices.contains_key(new.device_id.as_str()) {
                    devices.insert(new.device_id.as_str().into(), Entry::new(None, NOT_SEEN));
                }
            }
            for (device_id, change) in &cache.journal {
                apply(&mut devices, device_id, *change);
            }
            // Times noted but not yet written move over to the devices that stay.
            for (device_id, old) in &cache.devices {
                let seen = old.seen.load(Ordering::Relaxed);
                if seen != NOT_SEEN
                    && let Some(entry) = devices.get(device_id)
                {
                    entry.seen.fetch_max(seen, Ordering::Relaxed);
                }
            }
            let count = devices.len();
            cache.devices = devices;
            count
        })
    }

    /// Records that `device_id` now belongs to `site_id` (`None`: unassigned), after
    /// the side store was changed.
    pub(crate) fn set(&self, device_id: &str, site_id: Option<i64>) {
        write(&self.shared.cache).apply(device_id, Some(site_id));
    }

    /// Forgets `device_id`, after it was deleted from the side store.
    pub(crate) fn remove(&self, device_id: &str) {
        write(&self.shared.cache).apply(device_id, None);
    }

    /// The site `device_id` belongs to: `None` when the registry does not know the
    /// device, `Some(None)` when it is unassigned.
    #[cfg(test)]
    pub(crate) fn site_of(&self, device_id: &str) -> Option<Option<i64>> {
        read(&self.shared.cache)
            .devices
            .get(device_id)
            .map(|entry| entry.site)
    }

    /// Starts the background task that registers new devices and writes last-seen
    /// times. Must be called within a Tokio runtime; stop it with
    /// [`RegistryTasks::shutdown`] after the last writer stopped.
    pub(crate) fn start(&self) -> RegistryTasks {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(&self.shared).run(stopped));
        RegistryTasks { stop, task }
    }

    /// Registers `gridlake_registry_*` in `registry`.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.shared.metrics;
        registry.register(
            "gridlake_registry_devices_registered",
            "Devices first seen in telemetry and registered as unassigned",
            m.registered.clone(),
        );
        registry.register(
            "gridlake_registry_rows_refused",
            "Rows refused by the device registry (an unknown device with crm.unknown_devices = \
             \"reject\", a site-bound token writing for another site's device)",
            m.refused.clone(),
        );
        registry.register(
            "gridlake_registry_last_seen_updates",
            "Devices whose last-seen time was written to the side store (one batch per \
             crm.last_seen_interval)",
            m.last_seen.clone(),
        );
        registry.register(
            "gridlake_registry_store_failures",
            "Registrations and last-seen batches the side store failed (retried later)",
            m.store_failures.clone(),
        );
    }

    /// Registers the queued devices and writes the noted last-seen times now.
    #[cfg(test)]
    async fn flush(&self) {
        self.shared.flush().await;
    }
}

impl DeviceGate for DeviceRegistry {
    fn admit(&self, lines: &mut Vec<ParsedLine>, rejected: &mut Vec<LineError>, site: Option<i64>) {
        self.shared.admit(lines, rejected, site);
    }
}

/// The registry's background task.
#[derive(Debug)]
pub(crate) struct RegistryTasks {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RegistryTasks {
    /// Registers what is queued, writes the last-seen times noted so far, and stops.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the device registry task failed");
        }
    }
}

/// Rows of one device in a row: one lookup, one atomic max for all of them.
#[derive(Debug)]
struct Run<'g> {
    /// Reused from run to run: no allocation per run once it is long enough.
    device_id: String,
    /// `None` before the first run.
    verdict: Option<Verdict<'g>>,
    newest_ms: i64,
}

#[derive(Debug)]
enum Verdict<'g> {
    /// A device in the cache; its entry takes the newest time.
    Known(&'g Entry),
    /// A device first seen in this call (index into [`Fresh::devices`]).
    Fresh(usize),
    /// Refused, for this reason.
    Refused(String),
}

/// Devices first seen in one `admit` call, registered after its pass.
#[derive(Debug, Default)]
struct Fresh {
    devices: Vec<(Box<str>, DeviceKind, i64)>,
    index: HashMap<Box<str>, usize>,
}

impl Fresh {
    fn index(&mut self, device_id: &str, table: &str) -> usize {
        if let Some(&i) = self.index.get(device_id) {
            return i;
        }
        let i = self.devices.len();
        self.devices
            .push((device_id.into(), kind_for_table(table), NOT_SEEN));
        self.index.insert(device_id.into(), i);
        i
    }
}

impl Run<'_> {
    /// Hands the run's newest time to its device.
    fn finish(&self, fresh: &mut Fresh) {
        if self.newest_ms == NOT_SEEN {
            return;
        }
        match self.verdict {
            Some(Verdict::Known(entry)) => {
                entry.seen.fetch_max(self.newest_ms, Ordering::Relaxed);
            }
            Some(Verdict::Fresh(i)) => {
                let newest = &mut fresh.devices[i].2;
                *newest = (*newest).max(self.newest_ms);
            }
            Some(Verdict::Refused(_)) | None => {}
        }
    }
}

impl Shared {
    fn admit(&self, lines: &mut Vec<ParsedLine>, rejected: &mut Vec<LineError>, site: Option<i64>) {
        if lines.is_empty() {
            return;
        }
        let refused_before = rejected.len();
        let mut fresh = Fresh::default();
        let mut keep = 0;
        {
            let cache = read(&self.cache);
            let mut run = Run {
                device_id: String::new(),
                verdict: None,
                newest_ms: NOT_SEEN,
            };
            for i in 0..lines.len() {
                let line = &lines[i];
                let admitted = match gate::device_id(&line.row) {
                    None => match site {
                        None => true,
                        Some(site) => {
                            rejected.push(LineError::new(
                                line.line,
                                format!(
                                    "a token bound to site {site} may write only rows \
                                     with a device_id tag"
                                ),
                            ));
                            false
                        }
                    },
                    Some(device_id) => {
                        if run.verdict.is_none() || run.device_id != device_id {
                            run.finish(&mut fresh);
                            run.verdict =
                                Some(self.judge(&cache, device_id, &line.table, site, &mut fresh));
                            run.device_id.clear();
                            run.device_id.push_str(device_id);
                            run.newest_ms = NOT_SEEN;
                        }
                        match &run.verdict {
                            Some(Verdict::Refused(reason)) => {
                                rejected.push(LineError::new(line.line, reason.clone()));
                                false
                            }
                            _ => {
                                let ms = line.row.time.div_euclid(1_000_000);
                                run.newest_ms = run.newest_ms.max(ms);
                                true
                            }
                        }
                    }
                };
                if admitted {
                    lines.swap(keep, i);
                    keep += 1;
                }
            }
            run.finish(&mut fresh);
        }
        lines.truncate(keep);
        let refused = rejected.len() - refused_before;
        if refused > 0 {
            self.metrics.refused.inc_by(refused as u64);
        }
        if !fresh.devices.is_empty() {
            self.note_fresh(fresh);
        }
    }

    /// What happens to the rows of `device_id` (first row in `table`) from a writer
    /// confined to `site`.
    fn judge<'g>(
        &self,
        cache: &'g Cache,
        device_id: &str,
        table: &str,
        site: Option<i64>,
        fresh: &mut Fresh,
    ) -> Verdict<'g> {
        match cache.devices.get(device_id) {
            Some(entry) => match (site, entry.site) {
                // The other site is not named: a gateway need not learn where a
                // device it does not own is.
                (Some(site), Some(other)) if other != site => Verdict::Refused(format!(
                    "device {device_id:?} belongs to another site; a token bound to site \
                     {site} may write only for devices of site {site} (or unassigned ones)"
                )),
                _ => Verdict::Known(entry),
            },
            None => match self.policy {
                UnknownDevices::Reject => Verdict::Refused(format!(
                    "device {device_id:?} is not in the device registry (crm.unknown_devices = \
                     \"reject\"); register it with POST /api/v1/devices"
                )),
                UnknownDevices::Register => match registrable(device_id) {
                    Ok(()) => Verdict::Fresh(fresh.index(device_id, table)),
                    Err(why) => Verdict::Refused(format!(
                        "device {device_id:?} is not in the device registry and cannot be \
                         registered: its device_id {why}"
                    )),
                },
            },
        }
    }

    /// Puts devices first seen in telemetry in the cache as unassigned, so their next
    /// rows find them, and queues their registration.
    fn note_fresh(&self, fresh: Fresh) {
        let mut queued = 0;
        {
            let mut cache = write(&self.cache);
            let mut queue = lock(&self.queue);
            for (device_id, kind, newest_ms) in fresh.devices {
                if let Some(entry) = cache.devices.get(&device_id) {
                    // Another writer (or the REST API) was first.
                    entry.seen.fetch_max(newest_ms, Ordering::Relaxed);
                    continue;
                }
                cache.apply(&device_id, Some(None));
                if let Some(entry) = cache.devices.get(&device_id) {
                    entry.seen.store(newest_ms, Ordering::Relaxed);
                }
                queue.push(NewDevice::new(kind, device_id));
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::debug!(devices = queued, "unknown devices queued for registration");
            self.wake.notify_one();
        }
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let start = tokio::time::Instant::now() + self.interval;
        let mut tick = tokio::time::interval_at(start, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tick.tick() => self.flush().await,
                () = self.wake.notified() => self.register_queued().await,
            }
        }
        self.flush().await;
        tracing::debug!("device registry task stopped");
    }

    /// Registers first (a last-seen time of a device not yet in the store would be
    /// ignored), then writes the last-seen times.
    async fn flush(&self) {
        self.register_queued().await;
        self.write_last_seen().await;
    }

    async fn register_queued(&self) {
        let queued = std::mem::take(&mut *lock(&self.queue));
        if queued.is_empty() {
            return;
        }
        let mut retry = Vec::new();
        let mut last_error = None;
        for new in queued {
            match self.crm.devices().register_unassigned(new.clone()).await {
                Ok(device) => {
                    self.metrics.registered.inc();
                    // It may have been registered (and assigned) meanwhile.
                    write(&self.cache).apply(&device.device_id, Some(device.site_id));
                }
                Err(crm::Error::Database(e)) => {
                    last_error = Some(e);
                    retry.push(new);
                }
                Err(e) => {
                    // Not expected: `admit` queues only ids the crm accepts.
                    tracing::error!(
                        device_id = %new.device_id,
                        error = %e,
                        "an unknown device could not be registered; its readings are kept, the \
                         device stays out of the registry"
                    );
                }
            }
        }
        if let Some(e) = last_error {
            self.metrics.store_failures.inc();
            tracing::warn!(
                devices = retry.len(),
                error = %e,
                "the side store failed registering new devices; retrying at the next interval"
            );
            lock(&self.queue).extend(retry);
        }
    }

    async fn write_last_seen(&self) {
        let seen: Vec<(String, i64)> = read(&self.cache)
            .devices
            .iter()
            .filter(|(_, entry)| entry.seen.load(Ordering::Relaxed) != NOT_SEEN)
            .map(|(device_id, entry)| {
                let ms = entry.seen.swap(NOT_SEEN, Ordering::Relaxed);
                (device_id.to_string(), ms)
            })
            .filter(|&(_, ms)| ms != NOT_SEEN)
            .collect();
        if seen.is_empty() {
            return;
        }
        match self.crm.devices().touch_last_seen(&seen).await {
            Ok(moved) => {
                self.metrics.last_seen.inc_by(seen.len() as u64);
                tracing::debug!(devices = seen.len(), moved, "last-seen times written");
            }
            Err(e) => {
                self.metrics.store_failures.inc();
                tracing::warn!(
                    devices = seen.len(),
                    error = %e,
                    "the side store failed writing last-seen times; retrying at the next interval"
                );
                let cache = read(&self.cache);
                for (device_id, ms) in seen {
                    if let Some(entry) = cache.devices.get(device_id.as_str()) {
                        entry.seen.fetch_max(ms, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Every device's site, a page at a time.
///
/// Pages by offset: a device deleted from an earlier page while this runs shifts the
/// rest, and one device may be missed until the next reload (in `register` mode its
/// next reading registers it again, which finds it and its site).
async fn all_sites(crm: &Crm) -> crm::Result<HashMap<Box<str>, Option<i64>>> {
    let filter = DeviceFilter::default();
    let mut sites = HashMap::new();
    let mut offset = 0;
    loop {
        let page = Page {
            limit: Page::MAX_LIMIT,
            offset,
        };
        let devices = crm.devices().list(&filter, page).await?;
        let count = devices.len();
        for device in devices {
            sites.insert(device.device_id.into_boxed_str(), device.site_id);
        }
        if count < Page::MAX_LIMIT as usize {
            return Ok(sites);
        }
        offset += count as u64;
    }
}

/// The kind a device first seen in `table` is registered as: the canonical device
/// tables name their kind, `pv*` and `*solar*` tables are solar systems and `*plug*`
/// ones smart plugs. Anything else (`device_status`, a table of the user's own) is
/// registered as a meter, the commonest device; staff correct it with
/// `PUT /api/v1/devices/{id}`.
fn kind_for_table(table: &str) -> DeviceKind {
    match table {
        t if t == tables::METER.name => DeviceKind::Meter,
        t if t == tables::INVERTER.name => DeviceKind::Inverter,
        t if t == tables::BATTERY.name => DeviceKind::Battery,
        t if t == tables::EV_CHARGER.name => DeviceKind::EvCharger,
        t if t == tables::SMART_PLUG.name => DeviceKind::SmartPlug,
        t if t.starts_with("pv") || t.contains("solar") => DeviceKind::SolarSystem,
        t if t.contains("plug") => DeviceKind::SmartPlug,
        _ => DeviceKind::Meter,
    }
}

/// Whether the crm accepts `device_id` as it is; why not, in words for an error.
fn registrable(device_id: &str) -> Result<(), &'static str> {
    if device_id.trim().is_empty() {
        Err("is blank")
    } else if device_id.trim() != device_id {
        Err("has leading or trailing spaces")
    } else if device_id.chars().count() > MAX_DEVICE_ID_CHARS {
        Err("is longer than 256 characters")
    } else if device_id.chars().any(char::is_control) {
        Err("contains control characters")
    } else {
        Ok(())
    }
}

// The locks guard plain maps whose every update is complete before it is released, so
// a panic elsewhere leaves them consistent: poisoning is ignored.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use crm::{DeviceStatus, SiteAssignment};
    use storage::{FieldValue, Row};

    use super::*;

    /// A registry over a new SQLite side store.
    struct Fixture {
        crm: Crm,
        registry: DeviceRegistry,
        _dir: tempfile::TempDir,
    }

    async fn fixture(policy: UnknownDevices) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = CrmConfig {
            unknown_devices: policy,
            ..CrmConfig::default()
        };
        let crm = Crm::open(&config, dir.path()).await.unwrap();
        let registry = DeviceRegistry::load(crm.clone(), &config).await.unwrap();
        Fixture {
            crm,
            registry,
            _dir: dir,
        }
    }

    /// Now, in ns: the side store caps last-seen times at five minutes ahead.
    fn now_ns() -> i64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        i64::try_from(since.as_nanos()).unwrap()
    }

    fn line(number: usize, table: &str, device: Option<&str>, time: i64) -> ParsedLine {
        let mut tags = Vec::new();
        if let Some(device) = device {
            tags.push(("device_id".to_owned(), device.to_owned()));
        }
        tags.push(("site_id".to_owned(), "home".to_owned()));
        ParsedLine {
            line: number,
            table: table.to_owned(),
            row: Row {
                time,
                tags,
                fields: vec![("power_w".to_owned(), FieldValue::F64(1.0))],
            },
        }
    }

    /// Lines `(table, device)` numbered from 1, all at `time`.
    fn lines(rows: &[(&str, Option<&str>)], time: i64) -> Vec<ParsedLine> {
        rows.iter()
            .enumerate()
            .map(|(i, (table, device))| line(i + 1, table, *device, time))
            .collect()
    }

    fn admit(
        registry: &DeviceRegistry,
        mut lines: Vec<ParsedLine>,
        site: Option<i64>,
    ) -> (Vec<usize>, Vec<LineError>) {
        let mut rejected = Vec::new();
        registry.admit(&mut lines, &mut rejected, site);
        (lines.iter().map(|l| l.line).collect(), rejected)
    }

    async fn device(crm: &Crm, device_id: &str) -> crm::Device {
        crm.devices()
            .get_by_device_id(device_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{device_id} is registered"))
    }

    async fn count_devices(crm: &Crm) -> usize {
        crm.devices()
            .list(&DeviceFilter::default(), Page::first(Page::MAX_LIMIT))
            .await
            .unwrap()
            .len()
    }

    /// A customer with one account and `n` sites; returns the site ids.
    async fn sites(crm: &Crm, email: &str, n: usize) -> Vec<i64> {
        let user = crm
            .users()
            .create(
                serde_json::from_value(serde_json::json!({
                    "email": email, "display_name": email, "role": "customer", "password": null
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let account = crm
            .accounts()
            .create(
                serde_json::from_value(serde_json::json!({
                    "user_id": user.id, "account_number": format!("ACC-{email}"),
                    "account_type": "residential"
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let site = crm
                .sites()
                .create(
                    serde_json::from_value(serde_json::json!({
                        "account_id": account.id, "name": format!("site {i}"),
                        "time_zone": "Europe/Berlin", "property_type": "residential"
                    }))
                    .unwrap(),
                )
                .await
                .unwrap();
            ids.push(site.id);
        }
        ids
    }

    async fn create(crm: &Crm, kind: DeviceKind, device_id: &str, site: Option<i64>) {
        let mut new = NewDevice::new(kind, device_id);
        new.site_id = site;
        crm.devices().create(new).await.unwrap();
    }

    #[tokio::test]
    async fn register_policy_registers_each_unknown_device_once() {
        let f = fixture(UnknownDevices::Register).await;
        let t = now_ns();
        // Interleaved rows of two new devices, in two requests.
        let rows = [
            ("meter", Some("m-new")),
            ("inverter", Some("inv-new")),
            ("meter", Some("m-new")),
            ("inverter", Some("inv-new")),
            ("price", None),
        ];
        let (kept, rejected) = admit(&f.registry, lines(&rows, t), None);
        assert_eq!(kept, [1, 2, 3, 4, 5], "every row admitted, in order");
        assert!(rejected.is_empty(), "{rejected:?}");
        // Known at once, before the side store has them.
        assert_eq!(f.registry.site_of("m-new"), Some(None));
        assert_eq!(count_devices(&f.crm).await, 0);
        let (kept, _) = admit(&f.registry, lines(&rows, t), None);
        assert_eq!(kept.len(), 5);
        assert_eq!(lock(&f.registry.shared.queue).len(), 2, "queued once each");

        f.registry.flush().await;
        assert_eq!(count_devices(&f.crm).await, 2);
        let meter = device(&f.crm, "m-new").await;
        assert_eq!(
            (meter.kind, meter.site_id, meter.status),
            (DeviceKind::Meter, None, DeviceStatus::Active)
        );
        assert_eq!(meter.last_seen_ms, Some(t / 1_000_000), "first time noted");
        assert_eq!(device(&f.crm, "inv-new").await.kind, DeviceKind::Inverter);
        assert_eq!(f.registry.shared.metrics.registered.get(), 2);

        // Later rows find them in the cache: nothing more to register.
        admit(&f.registry, lines(&rows, t + 1), None);
        assert!(lock(&f.registry.shared.queue).is_empty());
        f.registry.flush().await;
        assert_eq!(f.registry.shared.metrics.registered.get(), 2);
        let unassigned = f
            .crm
            .devices()
            .list(
                &DeviceFilter {
                    site: Some(SiteAssignment::Unassigned),
                    ..DeviceFilter::default()
                },
                Page::default(),
            )
            .await
            .unwrap();
        assert_eq!(unassigned.len(), 2);
    }

    #[tokio::test]
    async fn register_policy_refuses_ids_the_registry_cannot_hold() {
        let f = fixture(UnknownDevices::Register).await;
        let long = "x".repeat(MAX_DEVICE_ID_CHARS + 1);
        let rows = [
            ("meter", Some(long.as_str())),
            ("meter", Some(" padded")),
            ("meter", Some("fine")),
        ];
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), None);
        assert_eq!(kept, [3]);
        assert_eq!(rejected.len(), 2);
        assert!(
            rejected[0]
                .reason
                .ends_with("cannot be registered: its device_id is longer than 256 characters"),
            "{}",
            rejected[0].reason
        );
        assert!(
            rejected[1].reason.contains("leading or trailing spaces"),
            "{}",
            rejected[1].reason
        );
        // The limit is the crm's: one more character is refused there too.
        let err = f
            .crm
            .devices()
            .register_unassigned(NewDevice::new(DeviceKind::Meter, long))
            .await
            .unwrap_err();
        assert!(matches!(err, crm::Error::Validation(_)), "{err:?}");
        f.crm
            .devices()
            .register_unassigned(NewDevice::new(
                DeviceKind::Meter,
                "y".repeat(MAX_DEVICE_ID_CHARS),
            ))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reject_policy_refuses_unknown_devices_with_a_clear_error() {
        let f = fixture(UnknownDevices::Reject).await;
        create(&f.crm, DeviceKind::Meter, "known", None).await;
        f.registry.reload().await.unwrap();
        let rows = [
            ("meter", Some("known")),
            ("meter", Some("ghost")),
            ("meter", Some("ghost")),
            ("meter", Some("known")),
            ("price", None),
        ];
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), None);
        assert_eq!(kept, [1, 4, 5]);
        let expected = "device \"ghost\" is not in the device registry \
                        (crm.unknown_devices = \"reject\"); register it with POST /api/v1/devices";
        assert_eq!(
            rejected,
            [LineError::new(2, expected), LineError::new(3, expected)]
        );
        assert_eq!(f.registry.shared.metrics.refused.get(), 2);
        f.registry.flush().await;
        assert!(
            f.crm
                .devices()
                .get_by_device_id("ghost")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(count_devices(&f.crm).await, 1);
    }

    #[tokio::test]
    async fn a_site_bound_writer_writes_only_for_its_site() {
        let f = fixture(UnknownDevices::Register).await;
        let ids = sites(&f.crm, "owner@example.com", 2).await;
        let (mine, theirs) = (ids[0], ids[1]);
        create(&f.crm, DeviceKind::Meter, "mine", Some(mine)).await;
        create(&f.crm, DeviceKind::Meter, "theirs", Some(theirs)).await;
        create(&f.crm, DeviceKind::SmartPlug, "loose", None).await;
        f.registry.reload().await.unwrap();
        let rows = [
            ("meter", Some("mine")),
            ("meter", Some("theirs")),
            ("smart_plug", Some("loose")),
            ("meter", Some("fresh")),
            ("price", None),
        ];
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), Some(mine));
        assert_eq!(kept, [1, 3, 4], "own, unassigned and unknown devices");
        assert_eq!(
            rejected,
            [
                LineError::new(
                    2,
                    format!(
                        "device \"theirs\" belongs to another site; a token bound to site {mine} \
                         may write only for devices of site {mine} (or unassigned ones)"
                    )
                ),
                LineError::new(
                    5,
                    format!(
                        "a token bound to site {mine} may write only rows with a device_id tag"
                    )
                ),
            ]
        );
        assert!(
            !rejected[0].reason.contains(&theirs.to_string()),
            "the other site is not named"
        );
        // The unknown device is registered unassigned, not to the writer's site.
        f.registry.flush().await;
        assert_eq!(device(&f.crm, "fresh").await.site_id, None);

        // An unconfined writer writes for any device, and rows without one.
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), None);
        assert_eq!(kept, [1, 2, 3, 4, 5]);
        assert!(rejected.is_empty());
        // The other site's own writer is refused this site's device.
        let (kept, rejected) = admit(&f.registry, lines(&rows[..2], now_ns()), Some(theirs));
        assert_eq!(kept, [2]);
        assert!(
            rejected[0]
                .reason
                .starts_with("device \"mine\" belongs to another site")
        );
    }

    #[tokio::test]
    async fn last_seen_is_written_in_one_batch_and_never_moves_back() {
        let f = fixture(UnknownDevices::Reject).await;
        for id in ["a", "b", "quiet"] {
            create(&f.crm, DeviceKind::Meter, id, None).await;
        }
        f.registry.reload().await.unwrap();
        // Whole minutes ago, plus sub-millisecond digits that must be cut, not rounded.
        let t = now_ns() - 600_000_000_000 + 999_999;
        let mut rows = Vec::new();
        for (i, (device, offset_ms)) in [("a", 0), ("b", 5), ("a", 30), ("a", 10), ("b", 2)]
            .into_iter()
            .enumerate()
        {
            rows.push(line(
                i + 1,
                "meter",
                Some(device),
                t + offset_ms * 1_000_000,
            ));
        }
        let mut rejected = Vec::new();
        f.registry.admit(&mut rows, &mut rejected, None);
        assert!(rejected.is_empty());
        // Nothing is written per reading.
        assert_eq!(device(&f.crm, "a").await.last_seen_ms, None);

        f.registry.flush().await;
        let t_ms = t.div_euclid(1_000_000);
        assert_eq!(device(&f.crm, "a").await.last_seen_ms, Some(t_ms + 30));
        assert_eq!(device(&f.crm, "b").await.last_seen_ms, Some(t_ms + 5));
        assert_eq!(device(&f.crm, "quiet").await.last_seen_ms, None);
        assert_eq!(
            f.registry.shared.metrics.last_seen.get(),
            2,
            "one batch of the two devices heard from"
        );

        // An older reading (a gateway sending its backlog) does not move it back; with
        // nothing new, a flush writes nothing.
        let mut old = vec![line(1, "meter", Some("a"), t - 60_000_000_000)];
        f.registry.admit(&mut old, &mut rejected, None);
        f.registry.flush().await;
        f.registry.flush().await;
        assert_eq!(device(&f.crm, "a").await.last_seen_ms, Some(t_ms + 30));
        assert_eq!(f.registry.shared.metrics.last_seen.get(), 3);
    }

    #[tokio::test]
    async fn the_task_writes_on_its_interval_and_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let config = CrmConfig {
            last_seen_interval: Duration::from_millis(50),
            ..CrmConfig::default()
        };
        let crm = Crm::open(&config, dir.path()).await.unwrap();
        let registry = DeviceRegistry::load(crm.clone(), &config).await.unwrap();
        let tasks = registry.start();
        let t = now_ns();
        admit(&registry, lines(&[("battery", Some("bat"))], t), None);
        // Registered promptly, its time written within an interval or two.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = crm.devices().get_by_device_id("bat").await.unwrap();
            if found.as_ref().is_some_and(|d| d.last_seen_ms.is_some()) {
                assert_eq!(found.unwrap().kind, DeviceKind::Battery);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not written in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The last times go out at shutdown, however long the interval.
        admit(
            &registry,
            lines(&[("battery", Some("bat"))], t + 7_000_000),
            None,
        );
        tasks.shutdown().await;
        assert_eq!(
            device(&crm, "bat").await.last_seen_ms,
            Some(t.div_euclid(1_000_000) + 7)
        );
    }

    #[tokio::test]
    async fn the_cache_follows_set_remove_and_reload() {
        let f = fixture(UnknownDevices::Reject).await;
        let ids = sites(&f.crm, "cache@example.com", 2).await;
        create(&f.crm, DeviceKind::Meter, "m1", Some(ids[0])).await;
        create(&f.crm, DeviceKind::Meter, "m2", None).await;
        // Loaded at start.
        let registry = DeviceRegistry::load(f.crm.clone(), &CrmConfig::default())
            .await
            .unwrap();
        assert_eq!(registry.site_of("m1"), Some(Some(ids[0])));
        assert_eq!(registry.site_of("m2"), Some(None));
        assert_eq!(registry.site_of("nope"), None);

        registry.set("m2", Some(ids[1]));
        registry.set("m3", None);
        assert_eq!(registry.site_of("m2"), Some(Some(ids[1])));
        assert_eq!(registry.site_of("m3"), Some(None));
        registry.remove("m1");
        assert_eq!(registry.site_of("m1"), None);

        // Reload reads the side store again: what the cache was told but the store
        // does not hold goes, what the store holds comes back.
        create(&f.crm, DeviceKind::Inverter, "m4", Some(ids[1])).await;
        assert_eq!(registry.reload().await.unwrap(), 3);
        assert_eq!(registry.site_of("m1"), Some(Some(ids[0])));
        assert_eq!(registry.site_of("m2"), Some(None));
        assert_eq!(registry.site_of("m3"), None);
        assert_eq!(registry.site_of("m4"), Some(Some(ids[1])));

        // A device deleted in the side store goes at the next reload.
        let m4 = device(&f.crm, "m4").await;
        f.crm.devices().delete(m4.id).await.unwrap();
        registry.reload().await.unwrap();
        assert_eq!(registry.site_of("m4"), None);

        // A change made while a reload reads the store is not lost.
        let reloading = Reloading::begin(&registry.shared.cache);
        let loaded = all_sites(&f.crm).await;
        registry.set("m1", Some(ids[1]));
        registry.remove("m2");
        registry.replace(loaded).unwrap();
        drop(reloading);
        assert_eq!(registry.site_of("m1"), Some(Some(ids[1])));
        assert_eq!(registry.site_of("m2"), None);
        assert!(read(&registry.shared.cache).journal.is_empty());
        // A reload abandoned half-way leaves no journal behind.
        let abandoned = {
            let mut reload = Box::pin(registry.reload());
            let waker = std::task::Waker::noop();
            let _ = reload
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            read(&registry.shared.cache).reloads
        };
        assert_eq!(abandoned, 1, "the first poll is inside the read");
        registry.set("m9", None);
        assert_eq!(read(&registry.shared.cache).reloads, 0);
        assert!(read(&registry.shared.cache).journal.is_empty());
        registry.remove("m9");
        registry.reload().await.unwrap();

        // A time noted before a reload is still written after it.
        let t = now_ns();
        admit(&registry, lines(&[("meter", Some("m2"))], t), None);
        registry.reload().await.unwrap();
        registry.flush().await;
        assert_eq!(
            device(&f.crm, "m2").await.last_seen_ms,
            Some(t.div_euclid(1_000_000))
        );
    }

    #[test]
    fn kinds_follow_the_table() {
        for (table, kind) in [
            ("meter", DeviceKind::Meter),
            ("inverter", DeviceKind::Inverter),
            ("battery", DeviceKind::Battery),
            ("ev_charger", DeviceKind::EvCharger),
            ("smart_plug", DeviceKind::SmartPlug),
            ("pv_production", DeviceKind::SolarSystem),
            ("rooftop_solar", DeviceKind::SolarSystem),
            ("shelly_plug", DeviceKind::SmartPlug),
            ("device_status", DeviceKind::Meter),
            ("plc", DeviceKind::Meter),
        ] {
            assert_eq!(kind_for_table(table), kind, "{table}");
        }
    }
}

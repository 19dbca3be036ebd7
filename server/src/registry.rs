//! The device registry on the write path: which site a reading's `device_id` belongs
//! to, what happens to devices the registry does not know, and when each device was
//! last heard from.
//!
//! ```text
//!  crm devices ──load, reload every crm.registry_reload_interval──► cache: device_id →
//!                                                    (site, row version, newest time)
//!  REST changes ──set / renamed / deleted (versioned)──┘   │
//!                                                          │ check: which rows may pass
//!                      HTTP, MQTT, Modbus rows ────────────┤ (Store::validate)
//!                                                          │ note_stored: the rows stored
//!                                                          ▼
//!       unknown device: cached at once (on the writer's site if it is bound to one),
//!                       queued ──────────────────────────────────┐
//!       every stored reading: its time noted in the cache entry  │
//!                                                                ▼
//!  background task: register (queued devices, at once) · touch_last_seen (every
//!                   crm.last_seen_interval, and once more at shutdown) · reload
//! ```
//!
//! The write path never waits for the side store: it reads an in-memory map under a
//! shared lock and records times with an atomic max, so concurrent requests do not
//! serialise on it, and a run of rows of one device costs one lookup. Everything that
//! needs the database is queued for the background task.
//!
//! The cache follows the side store, not the order its updates arrive in: every entry
//! carries the version of the row it reflects (its `updated_ms`, then its id), and an
//! update older than the entry is dropped. So the cache updates of two concurrent REST
//! changes, or a registration that lost the race with one, leave the newer state
//! whatever their order. A row deleted or renamed away leaves a tombstone until the
//! next reload, so a late update of that row does not bring its device back. Changes
//! made outside this process (another server on the same PostgreSQL, the `gridlake`
//! CLI) reach the cache with the periodic reload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crm::{Crm, CrmConfig, Device, DeviceFilter, DeviceKind, NewDevice, Page, UnknownDevices};
use devices::tables;
use ingest::gate::{self, DeviceGate};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use storage::{LineError, ParsedLine, WriteBatch};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// A cache entry's `seen` when no reading arrived since the last flush.
const NOT_SEEN: i64 = i64::MIN;

/// The longest `device_id` the crm accepts (`crm/src/devices.rs`, `check`); a test
/// keeps the two in step.
const MAX_DEVICE_ID_CHARS: usize = 256;

/// The shortest flush and reload interval: a zero interval would spin.
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
    /// How often last-seen times are written.
    interval: Duration,
    /// How often the whole cache is read again from the side store.
    reload_interval: Duration,
    cache: RwLock<Cache>,
    /// Devices first seen in telemetry, waiting for the background task to register
    /// them (`site_id` set when a site-bound writer sent them).
    queue: Mutex<Vec<NewDevice>>,
    /// Wakes the background task when devices are queued.
    wake: Notify,
    metrics: RegistryMetrics,
}

/// Which state of which side-store row a cache entry reflects. Ordered by the row's
/// `updated_ms`, then its id: the rows that carry one `device_id` (it is unique)
/// follow one another in time, so a later state has a later or equal update time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    updated_ms: i64,
    row: i64,
}

impl Version {
    /// An entry noted from telemetry and not yet registered: every stored state is
    /// newer.
    const UNSTORED: Self = Self {
        updated_ms: i64::MIN,
        row: i64::MIN,
    };

    fn of(device: &Device) -> Self {
        Self {
            updated_ms: device.updated_ms,
            row: device.id,
        }
    }
}

/// One row of the side store from its creation to its deletion. The creation time is
/// part of it because SQLite hands the id of a deleted last row to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowId {
    id: i64,
    created_ms: i64,
}

impl RowId {
    fn of(device: &Device) -> Self {
        Self {
            id: device.id,
            created_ms: device.created_ms,
        }
    }
}

/// What the write path knows of one device.
#[derive(Debug)]
struct Entry {
    /// Its site; `None` while unassigned.
    site: Option<i64>,
    version: Version,
    /// The newest reading time (ms) not yet written to the side store, or [`NOT_SEEN`].
    seen: AtomicI64,
}

impl Entry {
    fn new(site: Option<i64>, version: Version, seen: i64) -> Self {
        Self {
            site,
            version,
            seen: AtomicI64::new(seen),
        }
    }
}

/// A row that no longer carries a device id: deleted, or renamed as of `until_ms`
/// (`i64::MAX` for deleted: no later state of the row exists).
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    row: RowId,
    until_ms: i64,
}

/// A change to one device, as the side store made it.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Its row is in this state: on `site` (`None`: unassigned).
    Set {
        site: Option<i64>,
        version: Version,
        created_ms: i64,
    },
    /// Its row left it.
    Gone(Tombstone),
}

impl Change {
    fn set(device: &Device) -> Self {
        Self::Set {
            site: device.site_id,
            version: Version::of(device),
            created_ms: device.created_ms,
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    devices: HashMap<Box<str>, Entry>,
    /// Device ids whose row left them since the last reload, so that a late update of
    /// that row is not applied.
    gone: HashMap<Box<str>, Tombstone>,
    /// Reloads under way. While one reads the side store, changes are also journalled
    /// and replayed onto what it read (older ones are dropped there as here), so a
    /// change made meanwhile is not lost.
    reloads: usize,
    journal: Vec<(Box<str>, Change)>,
}

impl Cache {
    fn apply(&mut self, device_id: &str, change: Change) {
        apply(&mut self.devices, &mut self.gone, device_id, change);
        if self.reloads > 0 {
            self.journal.push((device_id.into(), change));
        }
    }
}

/// Applies `change` unless it is older than what `devices` and `gone` know.
fn apply(
    devices: &mut HashMap<Box<str>, Entry>,
    gone: &mut HashMap<Box<str>, Tombstone>,
    device_id: &str,
    change: Change,
) {
    match change {
        Change::Set {
            site,
            version,
            created_ms,
        } => {
            let row = RowId {
                id: version.row,
                created_ms,
            };
            if gone
                .get(device_id)
                .is_some_and(|t| t.row == row && version.updated_ms <= t.until_ms)
            {
                // A late update of a row that has left this device id since.
                return;
            }
            match devices.get_mut(device_id) {
                Some(entry) if entry.version > version => return,
                Some(entry) => {
                    entry.site = site;
                    entry.version = version;
                }
                None => {
                    devices.insert(device_id.into(), Entry::new(site, version, NOT_SEEN));
                }
            }
            gone.remove(device_id);
        }
        Change::Gone(tombstone) => {
            // The entry goes if it is that row's (up to then), or one noted from
            // telemetry that a registration would have found taken. An entry of a
            // later row stays.
            if devices.get(device_id).is_some_and(|entry| {
                entry.version == Version::UNSTORED
                    || (entry.version.row == tombstone.row.id
                        && entry.version.updated_ms <= tombstone.until_ms)
            }) {
                devices.remove(device_id);
            }
            gone.insert(device_id.into(), tombstone);
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
    /// `config.unknown_devices` says, writes last-seen times every
    /// `config.last_seen_interval` and reloads every `config.registry_reload_interval`
    /// once [`DeviceRegistry::start`] runs its task.
    pub(crate) async fn load(crm: Crm, config: &CrmConfig) -> crm::Result<Self> {
        let registry = Self {
            shared: Arc::new(Shared {
                crm,
                policy: config.unknown_devices,
                interval: config.last_seen_interval.max(MIN_INTERVAL),
                reload_interval: config.registry_reload_interval.max(MIN_INTERVAL),
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
    /// not see one by one (a deleted site or account takes its devices with it; another
    /// process changed them). Returns the number of devices. Times noted since the last
    /// flush are kept.
    pub(crate) async fn reload(&self) -> crm::Result<usize> {
        self.shared.reload().await
    }

    /// Records `device` as the side store returned it after a change (created,
    /// updated, assigned); an older state than the cache holds is dropped.
    pub(crate) fn stored(&self, device: &Device) {
        write(&self.shared.cache).apply(&device.device_id, Change::set(device));
    }

    /// Puts `device_id` in the cache on `site` (`None`: unassigned) whatever it held,
    /// as if just seen in telemetry: the next change from the side store replaces it.
    /// For tests that make devices in the side store behind the cache's back.
    #[cfg(test)]
    pub(crate) fn set(&self, device_id: &str, site: Option<i64>) {
        write(&self.shared.cache).devices.insert(
            device_id.into(),
            Entry::new(site, Version::UNSTORED, NOT_SEEN),
        );
    }

    /// Records that `device`'s row no longer carries the telemetry id `from` (it was
    /// renamed to `device.device_id`, which [`DeviceRegistry::stored`] records).
    pub(crate) fn renamed(&self, from: &str, device: &Device) {
        let tombstone = Tombstone {
            row: RowId::of(device),
            until_ms: device.updated_ms,
        };
        write(&self.shared.cache).apply(from, Change::Gone(tombstone));
    }

    /// Forgets `device`, after it was deleted from the side store.
    pub(crate) fn deleted(&self, device: &Device) {
        let tombstone = Tombstone {
            row: RowId::of(device),
            until_ms: i64::MAX,
        };
        write(&self.shared.cache).apply(&device.device_id, Change::Gone(tombstone));
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

    /// The newest reading time of `device_id` noted and not yet written, in ms.
    #[cfg(test)]
    pub(crate) fn noted_seen(&self, device_id: &str) -> Option<i64> {
        read(&self.shared.cache)
            .devices
            .get(device_id)
            .map(|entry| entry.seen.load(Ordering::Relaxed))
            .filter(|&ms| ms != NOT_SEEN)
    }

    /// The devices waiting for registration, with the site each will get.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> Vec<(String, Option<i64>)> {
        lock(&self.shared.queue)
            .iter()
            .map(|new| (new.device_id.clone(), new.site_id))
            .collect()
    }

    /// Starts the background task that registers new devices, writes last-seen times
    /// and reloads the cache. Must be called within a Tokio runtime; stop it with
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
            "Devices first seen in telemetry and registered (unassigned, or on the site of \
             the site-bound token that wrote for them)",
            m.registered.clone(),
        );
        registry.register(
            "gridlake_registry_rows_refused",
            "Rows refused by the device registry (an unknown device with crm.unknown_devices = \
             \"reject\", a site-bound token writing for a device not of its site)",
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
            "Registrations, last-seen batches and reloads the side store failed (retried \
             later)",
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
    fn check(&self, lines: &mut Vec<ParsedLine>, rejected: &mut Vec<LineError>, site: Option<i64>) {
        self.shared.check(lines, rejected, site);
    }

    fn note_stored(&self, batch: &WriteBatch, site: Option<i64>) {
        self.shared.note_stored(batch, site);
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

/// Where the stored rows of one device in a row go: one lookup, one atomic max for all
/// of them.
#[derive(Debug)]
enum Target<'g> {
    /// A device in the cache; its entry takes the newest time.
    Known(&'g Entry),
    /// A device first seen now (index into [`Fresh::devices`]).
    Fresh(usize),
    /// Neither: a device deleted since its rows were checked, in `reject` mode.
    Nowhere,
}

/// Devices first seen in one `note_stored` call, put in the cache after its pass.
#[derive(Debug, Default)]
struct Fresh {
    /// Device id, the kind it is registered as, its newest reading time.
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

impl Target<'_> {
    /// Hands a run's newest time to its device.
    fn note(&self, newest_ms: i64, fresh: &mut Fresh) {
        match *self {
            Target::Known(entry) => {
                entry.seen.fetch_max(newest_ms, Ordering::Relaxed);
            }
            Target::Fresh(i) => {
                let newest = &mut fresh.devices[i].2;
                *newest = (*newest).max(newest_ms);
            }
            Target::Nowhere => {}
        }
    }
}

impl Shared {
    /// [`DeviceGate::check`]: reads the cache, changes nothing.
    fn check(&self, lines: &mut Vec<ParsedLine>, rejected: &mut Vec<LineError>, site: Option<i64>) {
        if lines.is_empty() {
            return;
        }
        let refused_before = rejected.len();
        {
            let cache = read(&self.cache);
            // The device of the previous row and what was decided for it: rows of one
            // device in a row are judged once. The id's buffer is reused from run to
            // run, so there is no allocation per run once it is long enough.
            let mut run_device = String::new();
            let mut run: Option<Result<(), String>> = None;
            lines.retain(|line| {
                let Some(device_id) = gate::device_id(&line.row) else {
                    return match site {
                        None => true,
                        Some(site) => {
                            rejected.push(LineError::new(
                                line.line,
                                format!(
                                    "a token bound to site {site} may write only rows with a \
                                     device_id tag"
                                ),
                            ));
                            false
                        }
                    };
                };
                if run.is_none() || run_device != device_id {
                    run_device.clear();
                    run_device.push_str(device_id);
                    run = Some(self.judge(&cache, device_id, site));
                }
                if let Some(Err(reason)) = &run {
                    rejected.push(LineError::new(line.line, reason.clone()));
                    false
                } else {
                    true
                }
            });
        }
        let refused = rejected.len() - refused_before;
        if refused > 0 {
            self.metrics.refused.inc_by(refused as u64);
        }
    }

    /// Whether rows of `device_id` from a writer confined to `site` may be stored; if
    /// not, why, in words for the client.
    fn judge(&self, cache: &Cache, device_id: &str, site: Option<i64>) -> Result<(), String> {
        match (cache.devices.get(device_id), site) {
            (Some(_), None) => Ok(()),
            (Some(entry), Some(site)) if entry.site == Some(site) => Ok(()),
            // A device of another site, an unassigned one (it may be assigned to another
            // customer's site later, and these rows would show in their history) and,
            // in `reject` mode, an unknown one get the same answer: a gateway's token
            // must not learn which devices exist elsewhere.
            (Some(_), Some(site)) => Err(not_of_site(device_id, site)),
            (None, Some(site)) if self.policy == UnknownDevices::Reject => {
                Err(not_of_site(device_id, site))
            }
            (None, _) => match self.policy {
                UnknownDevices::Reject => Err(format!(
                    "device {device_id:?} is not in the device registry (crm.unknown_devices = \
                     \"reject\"); register it with POST /api/v1/devices"
                )),
                // Registered when its rows are stored: unassigned, or on the writer's
                // site (a gateway's new device is installed where the gateway is).
                UnknownDevices::Register => registrable(device_id).map_err(|why| {
                    format!(
                        "device {device_id:?} is not in the device registry and cannot be \
                         registered: its device_id {why}"
                    )
                }),
            },
        }
    }

    /// [`DeviceGate::note_stored`]: notes the newest time of each device, and puts
    /// devices the cache does not know in it (on `site`) and in the registration
    /// queue.
    fn note_stored(&self, batch: &WriteBatch, site: Option<i64>) {
        let mut fresh = Fresh::default();
        {
            let cache = read(&self.cache);
            // As in `check`: one lookup per run of rows of one device.
            let mut run_device = String::new();
            let mut run: Option<(Target<'_>, i64)> = None;
            for table in &batch.tables {
                for row in &table.rows {
                    let Some(device_id) = gate::device_id(row) else {
                        continue;
                    };
                    let ms = row.time.div_euclid(1_000_000);
                    if let Some((_, newest)) = &mut run
                        && run_device == device_id
                    {
                        *newest = (*newest).max(ms);
                        continue;
                    }
                    if let Some((target, newest)) = &run {
                        target.note(*newest, &mut fresh);
                    }
                    let target = match cache.devices.get(device_id) {
                        Some(entry) => Target::Known(entry),
                        None if self.policy == UnknownDevices::Register
                            && registrable(device_id).is_ok() =>
                        {
                            Target::Fresh(fresh.index(device_id, &table.table))
                        }
                        None => Target::Nowhere,
                    };
                    run_device.clear();
                    run_device.push_str(device_id);
                    run = Some((target, ms));
                }
            }
            if let Some((target, newest)) = &run {
                target.note(*newest, &mut fresh);
            }
        }
        if !fresh.devices.is_empty() {
            self.note_fresh(fresh, site);
        }
    }

    /// Puts devices first seen in telemetry in the cache, on `site` (`None`:
    /// unassigned), so their next rows find them, and queues their registration there.
    fn note_fresh(&self, fresh: Fresh, site: Option<i64>) {
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
                let mut new = NewDevice::new(kind, device_id.clone());
                new.site_id = site;
                cache
                    .devices
                    .insert(device_id, Entry::new(site, Version::UNSTORED, newest_ms));
                queue.push(new);
                queued += 1;
            }
        }
        if queued > 0 {
            tracing::debug!(
                devices = queued,
                site_id = ?site,
                "unknown devices queued for registration"
            );
            self.wake.notify_one();
        }
    }

    async fn reload(&self) -> crm::Result<usize> {
        let _reloading = Reloading::begin(&self.cache);
        let loaded = all_devices(&self.crm).await;
        self.replace(loaded)
    }

    /// The second half of [`Shared::reload`]: the cache becomes `loaded`, with the
    /// changes made while it was read replayed onto it.
    fn replace(&self, loaded: crm::Result<HashMap<Box<str>, Entry>>) -> crm::Result<usize> {
        let mut devices = loaded?;
        let mut cache = write(&self.cache);
        // Devices waiting for registration are not in the store yet.
        for new in lock(&self.queue).iter() {
            if !devices.contains_key(new.device_id.as_str()) {
                devices.insert(
                    new.device_id.as_str().into(),
                    Entry::new(new.site_id, Version::UNSTORED, NOT_SEEN),
                );
            }
        }
        // What the store says now needs no tombstones older than this read; the
        // changes journalled during it bring their own.
        let mut gone = HashMap::new();
        for (device_id, change) in &cache.journal {
            apply(&mut devices, &mut gone, device_id, *change);
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
        cache.gone = gone;
        Ok(count)
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let now = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(now + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reload = tokio::time::interval_at(now + self.reload_interval, self.reload_interval);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tick.tick() => self.flush().await,
                () = self.wake.notified() => self.register_queued().await,
                _ = reload.tick() => self.periodic_reload().await,
            }
        }
        self.flush().await;
        tracing::debug!("device registry task stopped");
    }

    /// Reloads for what the cache cannot see: changes by another server on the same
    /// side store or the `gridlake` CLI, and cascades in the store.
    async fn periodic_reload(&self) {
        match self.reload().await {
            Ok(devices) => tracing::debug!(devices, "device registry reloaded"),
            Err(e) => {
                self.metrics.store_failures.inc();
                tracing::warn!(
                    error = %e,
                    "the side store failed reloading the device registry; the cache stays \
                     as it is until the next reload"
                );
            }
        }
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
            match self.register(&new).await {
                Ok(Some((device, created))) => {
                    if created {
                        self.metrics.registered.inc();
                        tracing::info!(
                            device_id = %device.device_id,
                            kind = %device.kind,
                            site_id = ?device.site_id,
                            "a device first seen in telemetry was registered"
                        );
                    } else if device.site_id != new.site_id {
                        tracing::info!(
                            device_id = %device.device_id,
                            site_id = ?device.site_id,
                            noted_site_id = ?new.site_id,
                            "a device first seen in telemetry was registered elsewhere \
                             meanwhile; the registry follows the side store"
                        );
                    }
                    // What the store holds, unless the cache has seen a newer state
                    // (an assignment made since the row was read).
                    write(&self.cache).apply(&device.device_id, Change::set(&device));
                }
                Ok(None) => tracing::debug!(
                    device_id = %new.device_id,
                    "a device first seen in telemetry was registered and deleted meanwhile"
                ),
                Err(crm::Error::Database(e)) => {
                    last_error = Some(e);
                    retry.push(new);
                }
                Err(e) => {
                    // Not expected: `check` admits only ids the crm accepts, and a
                    // site-bound token goes with its site.
                    tracing::error!(
                        device_id = %new.device_id,
                        site_id = ?new.site_id,
                        error = %e,
                        "a device first seen in telemetry could not be registered; its \
                         readings are kept, the device stays out of the registry"
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

    /// Registers `new` (on its `site_id`, if any) unless its device id is taken by now;
    /// returns the device as the store holds it and whether this call created it. A
    /// taken id keeps its row as it is: someone else registered it first, perhaps on
    /// another site. `None` when it was taken and is gone again.
    async fn register(&self, new: &NewDevice) -> crm::Result<Option<(Device, bool)>> {
        let devices = self.crm.devices();
        match devices.create(new.clone()).await {
            Ok(device) => Ok(Some((device, true))),
            Err(crm::Error::Conflict { field, .. }) if field == "device_id" => Ok(devices
                .get_by_device_id(&new.device_id)
                .await?
                .map(|device| (device, false))),
            Err(e) => Err(e),
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

/// The refusal for a site-bound writer's row of a device that is not its site's.
fn not_of_site(device_id: &str, site: i64) -> String {
    format!(
        "device {device_id:?} is not a device of site {site}; a token bound to site {site} \
         writes only for its site's devices"
    )
}

/// Every device's cache entry, a page at a time.
///
/// Pages by offset: a device deleted from an earlier page while this runs shifts the
/// rest, and one device may be missed until the next reload (in `register` mode its
/// next reading registers it again, which finds it and its site).
async fn all_devices(crm: &Crm) -> crm::Result<HashMap<Box<str>, Entry>> {
    let filter = DeviceFilter::default();
    let mut entries = HashMap::new();
    let mut offset = 0;
    loop {
        let page = Page {
            limit: Page::MAX_LIMIT,
            offset,
        };
        let devices = crm.devices().list(&filter, page).await?;
        let count = devices.len();
        for device in devices {
            let entry = Entry::new(device.site_id, Version::of(&device), NOT_SEEN);
            entries.insert(device.device_id.into_boxed_str(), entry);
        }
        if count < Page::MAX_LIMIT as usize {
            return Ok(entries);
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

    use crm::{DeviceStatus, ManualClock, SiteAssignment};
    use storage::{FieldValue, Row, TableWrite};

    use super::*;

    /// A registry over a new SQLite side store whose clock moves only when told to.
    struct Fixture {
        crm: Crm,
        clock: Arc<ManualClock>,
        registry: DeviceRegistry,
        _dir: tempfile::TempDir,
    }

    async fn fixture(policy: UnknownDevices) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = CrmConfig {
            unknown_devices: policy,
            ..CrmConfig::default()
        };
        let clock = Arc::new(ManualClock::new(now_ns() / 1_000_000));
        let crm = Crm::open_with_clock(&config, dir.path(), clock.clone())
            .await
            .unwrap();
        let registry = DeviceRegistry::load(crm.clone(), &config).await.unwrap();
        Fixture {
            crm,
            clock,
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

    /// The rows grouped by table as `Store::validate` groups them (every row valid).
    fn batch(lines: &[ParsedLine]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for line in lines {
            match batch.tables.iter_mut().find(|t| t.table == line.table) {
                Some(table) => table.rows.push(line.row.clone()),
                None => batch.tables.push(TableWrite {
                    table: line.table.clone(),
                    rows: vec![line.row.clone()],
                }),
            }
        }
        batch
    }

    /// Both steps of the gate, as a write path runs them when every admitted row is
    /// stored: the numbers of the lines kept, and the refusals.
    fn admit(
        registry: &DeviceRegistry,
        mut lines: Vec<ParsedLine>,
        site: Option<i64>,
    ) -> (Vec<usize>, Vec<LineError>) {
        let mut rejected = Vec::new();
        registry.check(&mut lines, &mut rejected, site);
        registry.note_stored(&batch(&lines), site);
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

    async fn create(crm: &Crm, kind: DeviceKind, device_id: &str, site: Option<i64>) -> Device {
        let mut new = NewDevice::new(kind, device_id);
        new.site_id = site;
        crm.devices().create(new).await.unwrap()
    }

    /// Changes `device`'s site in the side store, as `PUT /api/v1/devices/{id}` does.
    async fn assign(crm: &Crm, device: &Device, site: Option<i64>) -> Device {
        let mut new = NewDevice::new(device.kind, device.device_id.clone());
        new.site_id = site;
        crm.devices().update(device.id, new).await.unwrap()
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
    async fn checking_changes_nothing_until_the_rows_are_stored() {
        let f = fixture(UnknownDevices::Register).await;
        create(&f.crm, DeviceKind::Meter, "known", None).await;
        f.registry.reload().await.unwrap();
        let mut rows = lines(
            &[("meter", Some("known")), ("meter", Some("new"))],
            now_ns(),
        );
        let mut rejected = Vec::new();
        f.registry.check(&mut rows, &mut rejected, None);
        assert_eq!(rows.len(), 2, "both may pass");
        assert!(rejected.is_empty(), "{rejected:?}");
        // Refused later (by the store, or with the rest of an all-or-nothing request):
        // the new device is not registered, the known one not heard from.
        assert_eq!(f.registry.site_of("new"), None);
        assert!(f.registry.queued().is_empty());
        assert_eq!(f.registry.noted_seen("known"), None);
        f.registry.flush().await;
        assert_eq!(count_devices(&f.crm).await, 1);
        assert_eq!(device(&f.crm, "known").await.last_seen_ms, None);

        // Told which rows were stored: only those count.
        let t = now_ns();
        let stored = [line(1, "meter", Some("new"), t)];
        f.registry.note_stored(&batch(&stored), None);
        assert_eq!(f.registry.site_of("new"), Some(None));
        assert_eq!(f.registry.noted_seen("known"), None);
        assert_eq!(f.registry.noted_seen("new"), Some(t / 1_000_000));
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
            .create(NewDevice::new(DeviceKind::Meter, long))
            .await
            .unwrap_err();
        assert!(matches!(err, crm::Error::Validation(_)), "{err:?}");
        f.crm
            .devices()
            .create(NewDevice::new(
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

        // Rows checked while a device existed, stored after it was deleted, do not
        // register it again.
        let known = device(&f.crm, "known").await;
        f.crm.devices().delete(known.id).await.unwrap();
        f.registry.deleted(&known);
        f.registry
            .note_stored(&batch(&lines(&rows[..1], now_ns())), None);
        assert_eq!(f.registry.site_of("known"), None);
        assert!(f.registry.queued().is_empty());
    }

    #[tokio::test]
    async fn a_site_bound_writer_writes_only_for_its_sites_devices() {
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
            ("inverter", Some("fresh")),
            ("price", None),
        ];
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), Some(mine));
        assert_eq!(kept, [1, 4], "its own device and a new one");
        let not_mine = |device: &str| {
            format!(
                "device \"{device}\" is not a device of site {mine}; a token bound to site \
                 {mine} writes only for its site's devices"
            )
        };
        assert_eq!(
            rejected,
            [
                // Another site's device and an unassigned one: the same answer, so the
                // token cannot tell which devices exist elsewhere.
                LineError::new(2, not_mine("theirs")),
                LineError::new(3, not_mine("loose")),
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
        // The new device is on the writer's site at once, and registered there.
        assert_eq!(f.registry.site_of("fresh"), Some(Some(mine)));
        assert_eq!(f.registry.queued(), [("fresh".to_owned(), Some(mine))]);
        let (kept, _) = admit(&f.registry, lines(&rows[3..4], now_ns()), Some(mine));
        assert_eq!(kept, [1], "its next rows pass");
        f.registry.flush().await;
        let fresh = device(&f.crm, "fresh").await;
        assert_eq!(
            (fresh.kind, fresh.site_id),
            (DeviceKind::Inverter, Some(mine))
        );
        assert_eq!(f.registry.site_of("fresh"), Some(Some(mine)));
        assert_eq!(f.registry.shared.metrics.registered.get(), 1);

        // The other site's writer is refused this site's devices, the new one included.
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), Some(theirs));
        assert_eq!(kept, [2]);
        assert!(
            rejected[0].reason.starts_with(&format!(
                "device \"mine\" is not a device of site {theirs};"
            )),
            "{rejected:?}"
        );
        assert!(
            rejected[2].reason.starts_with(&format!(
                "device \"fresh\" is not a device of site {theirs};"
            )),
            "{rejected:?}"
        );

        // An unconfined writer writes for any device and rows without one, and its
        // new devices are registered unassigned.
        let mut all = rows.to_vec();
        all.push(("meter", Some("stray")));
        let (kept, rejected) = admit(&f.registry, lines(&all, now_ns()), None);
        assert_eq!(kept, [1, 2, 3, 4, 5, 6]);
        assert!(rejected.is_empty());
        f.registry.flush().await;
        assert_eq!(device(&f.crm, "stray").await.site_id, None);
    }

    #[tokio::test]
    async fn a_site_bound_writer_is_refused_unknown_devices_in_reject_mode_like_others() {
        let f = fixture(UnknownDevices::Reject).await;
        let ids = sites(&f.crm, "owner@example.com", 2).await;
        create(&f.crm, DeviceKind::Meter, "theirs", Some(ids[1])).await;
        f.registry.reload().await.unwrap();
        let rows = [("meter", Some("ghost")), ("meter", Some("theirs"))];
        let (kept, rejected) = admit(&f.registry, lines(&rows, now_ns()), Some(ids[0]));
        assert!(kept.is_empty());
        // An unknown device and another site's read alike.
        assert_eq!(
            rejected[0].reason.replace("ghost", "theirs"),
            rejected[1].reason,
            "{rejected:?}"
        );
        assert!(f.registry.queued().is_empty());
    }

    #[tokio::test]
    async fn a_registration_that_lost_the_race_leaves_the_stored_site() {
        let f = fixture(UnknownDevices::Register).await;
        let ids = sites(&f.crm, "owner@example.com", 2).await;
        let (gateway_site, staff_site) = (ids[0], ids[1]);
        // A gateway's token writes for a new device...
        admit(
            &f.registry,
            lines(&[("meter", Some("contested"))], now_ns()),
            Some(gateway_site),
        );
        assert_eq!(f.registry.site_of("contested"), Some(Some(gateway_site)));
        // ...which another server registers on another site before this one does.
        let theirs = create(&f.crm, DeviceKind::Meter, "contested", Some(staff_site)).await;
        f.registry.flush().await;
        let stored = device(&f.crm, "contested").await;
        assert_eq!(
            (stored.site_id, stored.updated_ms),
            (Some(staff_site), theirs.updated_ms),
            "the stored device keeps its site"
        );
        assert_eq!(
            f.registry.site_of("contested"),
            Some(Some(staff_site)),
            "the cache follows the store"
        );
        assert_eq!(f.registry.shared.metrics.registered.get(), 0);
        // So the gateway's next rows for it are refused.
        let (kept, _) = admit(
            &f.registry,
            lines(&[("meter", Some("contested"))], now_ns()),
            Some(gateway_site),
        );
        assert!(kept.is_empty());

        // The same for an unconfined writer's device that staff registered meanwhile.
        admit(
            &f.registry,
            lines(&[("meter", Some("loose"))], now_ns()),
            None,
        );
        create(&f.crm, DeviceKind::Meter, "loose", Some(staff_site)).await;
        f.registry.flush().await;
        assert_eq!(device(&f.crm, "loose").await.site_id, Some(staff_site));
        assert_eq!(f.registry.site_of("loose"), Some(Some(staff_site)));
    }

    #[tokio::test]
    async fn cache_updates_apply_in_the_order_of_the_store_not_of_their_arrival() {
        let f = fixture(UnknownDevices::Reject).await;
        let ids = sites(&f.crm, "owner@example.com", 2).await;
        let v1 = create(&f.crm, DeviceKind::Meter, "m", None).await;
        f.clock.advance(1);
        let v2 = assign(&f.crm, &v1, Some(ids[0])).await;
        f.clock.advance(1);
        let v3 = assign(&f.crm, &v2, Some(ids[1])).await;

        // Two PUTs' cache updates, the later commit first.
        f.registry.stored(&v3);
        f.registry.stored(&v2);
        assert_eq!(f.registry.site_of("m"), Some(Some(ids[1])));
        // A registration's re-read of the row from before both.
        f.registry.stored(&v1);
        assert_eq!(f.registry.site_of("m"), Some(Some(ids[1])));

        // A deleted row stays deleted, whatever update of it arrives late.
        f.registry.deleted(&v3);
        f.registry.stored(&v3);
        assert_eq!(f.registry.site_of("m"), None);
        f.crm.devices().delete(v3.id).await.unwrap();
        // A new row of that device id is a new device, though SQLite hands it the
        // deleted row's id.
        f.clock.advance(1);
        let again = create(&f.crm, DeviceKind::Meter, "m", Some(ids[0])).await;
        assert_eq!(again.id, v3.id, "SQLite reuses the last row's id");
        f.registry.stored(&again);
        assert_eq!(f.registry.site_of("m"), Some(Some(ids[0])));

        // A renamed device's old id goes; a late update under the old id does not
        // bring it back, renaming it back does.
        f.clock.advance(1);
        let mut new = NewDevice::new(DeviceKind::Meter, "m-renamed");
        new.site_id = Some(ids[0]);
        let renamed = f.crm.devices().update(again.id, new).await.unwrap();
        f.registry.renamed("m", &renamed);
        f.registry.stored(&renamed);
        f.registry.stored(&again);
        assert_eq!(f.registry.site_of("m"), None);
        assert_eq!(f.registry.site_of("m-renamed"), Some(Some(ids[0])));
        f.clock.advance(1);
        let back = assign(&f.crm, &again, Some(ids[1])).await;
        f.registry.renamed("m-renamed", &back);
        f.registry.stored(&back);
        assert_eq!(f.registry.site_of("m"), Some(Some(ids[1])));
        assert_eq!(f.registry.site_of("m-renamed"), None);
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
        let (kept, rejected) = admit(&f.registry, rows, None);
        assert_eq!(kept.len(), 5);
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
        let old = vec![line(1, "meter", Some("a"), t - 60_000_000_000)];
        admit(&f.registry, old, None);
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
    async fn the_task_reloads_for_changes_made_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let config = CrmConfig {
            unknown_devices: UnknownDevices::Reject,
            registry_reload_interval: Duration::from_millis(50),
            ..CrmConfig::default()
        };
        let crm = Crm::open(&config, dir.path()).await.unwrap();
        let registry = DeviceRegistry::load(crm.clone(), &config).await.unwrap();
        let tasks = registry.start();
        // Another server (or the CLI) registers a device and then assigns it: this
        // server's cache learns of both without being told.
        let ids = sites(&crm, "owner@example.com", 1).await;
        let made = create(&crm, DeviceKind::Meter, "elsewhere", None).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while registry.site_of("elsewhere") != Some(None) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reloaded in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assign(&crm, &made, Some(ids[0])).await;
        while registry.site_of("elsewhere") != Some(Some(ids[0])) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reloaded in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks.shutdown().await;
    }

    #[tokio::test]
    async fn the_cache_follows_changes_and_reload() {
        let f = fixture(UnknownDevices::Reject).await;
        let ids = sites(&f.crm, "cache@example.com", 2).await;
        let m1 = create(&f.crm, DeviceKind::Meter, "m1", Some(ids[0])).await;
        let m2 = create(&f.crm, DeviceKind::Meter, "m2", None).await;
        // Loaded at start.
        let registry = DeviceRegistry::load(f.crm.clone(), &CrmConfig::default())
            .await
            .unwrap();
        assert_eq!(registry.site_of("m1"), Some(Some(ids[0])));
        assert_eq!(registry.site_of("m2"), Some(None));
        assert_eq!(registry.site_of("nope"), None);

        f.clock.advance(1);
        let m2 = assign(&f.crm, &m2, Some(ids[1])).await;
        registry.stored(&m2);
        registry.set("m3", None);
        assert_eq!(registry.site_of("m2"), Some(Some(ids[1])));
        assert_eq!(registry.site_of("m3"), Some(None));
        registry.deleted(&m1);
        assert_eq!(registry.site_of("m1"), None);

        // Reload reads the side store again: what the cache was told but the store
        // does not hold goes, what the store holds comes back.
        let m4 = create(&f.crm, DeviceKind::Inverter, "m4", Some(ids[1])).await;
        assert_eq!(registry.reload().await.unwrap(), 3);
        assert_eq!(registry.site_of("m1"), Some(Some(ids[0])));
        assert_eq!(registry.site_of("m2"), Some(Some(ids[1])));
        assert_eq!(registry.site_of("m3"), None);
        assert_eq!(registry.site_of("m4"), Some(Some(ids[1])));
        assert!(read(&registry.shared.cache).gone.is_empty());

        // A device deleted in the side store goes at the next reload.
        f.crm.devices().delete(m4.id).await.unwrap();
        registry.reload().await.unwrap();
        assert_eq!(registry.site_of("m4"), None);

        // A change made while a reload reads the store is not lost, and one older
        // than what the reload read is dropped.
        f.clock.advance(1);
        let m1_moved = assign(&f.crm, &m1, Some(ids[1])).await;
        let reloading = Reloading::begin(&registry.shared.cache);
        let loaded = all_devices(&f.crm).await;
        registry.stored(&m1);
        registry.stored(&m1_moved);
        registry.deleted(&m2);
        f.crm.devices().delete(m2.id).await.unwrap();
        registry.shared.replace(loaded).unwrap();
        drop(reloading);
        assert_eq!(registry.site_of("m1"), Some(Some(ids[1])));
        assert_eq!(registry.site_of("m2"), None);
        assert!(read(&registry.shared.cache).journal.is_empty());
        f.clock.advance(1);
        let m1_back = assign(&f.crm, &m1_moved, Some(ids[0])).await;
        let reloading = Reloading::begin(&registry.shared.cache);
        let loaded = all_devices(&f.crm).await;
        registry.stored(&m1_moved);
        registry.shared.replace(loaded).unwrap();
        drop(reloading);
        assert_eq!(
            registry.site_of("m1"),
            Some(Some(ids[0])),
            "the reload read a newer state than the journal holds"
        );
        assert_eq!(m1_back.site_id, Some(ids[0]));
        // A reload abandoned half-way leaves no journal behind. (The side store may
        // answer within the first poll: then try again.)
        let abandoned = (0..100).any(|_| {
            let mut reload = Box::pin(registry.reload());
            let waker = std::task::Waker::noop();
            let poll = reload
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            poll.is_pending() && read(&registry.shared.cache).reloads == 1
        });
        assert!(abandoned, "a first poll stopped inside the read");
        registry.stored(&m1_back);
        assert_eq!(read(&registry.shared.cache).reloads, 0);
        assert!(read(&registry.shared.cache).journal.is_empty());
        registry.reload().await.unwrap();

        // A time noted before a reload is still written after it.
        let t = now_ns();
        admit(&registry, lines(&[("meter", Some("m1"))], t), None);
        registry.reload().await.unwrap();
        registry.flush().await;
        assert_eq!(
            device(&f.crm, "m1").await.last_seen_ms,
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

//! The last-value cache: for every series of every table, the time of its newest row
//! and, per column, the newest value that is not null, kept in memory so that "what
//! does every meter read now" costs a copy of the answer rather than a scan.
//!
//! ```text
//!  WAL writer thread ── WriteObserver::written(table, batch) ──► LastValues::apply
//!   (every committed write, before its ack)                        per row: tag ids
//!                                                                   ─► series slot,
//!  warm-up thread at start ── Store::scan(last query.latest_warmup)   per column: newer
//!   (newest day first; merges, never replaces a newer value) ──────►  time wins
//!                                                                       │
//!  `<table>_latest` in SQL, GET /api/v1/latest ◄── snapshot (Arrow, filtered by tag) ◄┘
//! ```
//!
//! Rules:
//! - A series is the table's tag values (a tag the row lacks is null, and a tag column
//!   added later is null for the rows before it). Rollup tables (`_15m`, `_1h`, `_1d`)
//!   and `_rejected` are not cached: their "latest" means nothing a client wants.
//! - Per column, a later time wins; at an equal time the later write wins (the store's
//!   last write wins per point). A null never erases a value: a row rewritten at the
//!   same time without a field keeps the cache's earlier value of that field, where a
//!   scan of the table would show the rewrite's null.
//! - The warm-up reads each table's rows from `query.latest_warmup` before its newest
//!   row (or before now, when rows lie in the future) up to its newest row, and takes
//!   only what is newer than what the cache holds: a value the writer thread put in
//!   meanwhile is never replaced. A series silent for longer than the window is not in
//!   the cache until it writes again. The warm-up reads one UTC day at a time, and like
//!   every scan holds that day's rows of the table in memory while it merges them.
//!
//! Cost on the writer thread (the part every acknowledged write waits for): per batch,
//! one lookup per tag column and distinct tag value (the batch's dictionary); per row,
//! one lookup of the tag ids packed into a `u128` (skipped when the row's series is the
//! previous row's) and a comparison and store per field. A row of a series already
//! known allocates nothing (strings are overwritten in place). The `latest` bench
//! (`benches/benches/latest.rs`: 10,000 meters, 2 tags, 5 fields) measures about 55 ns
//! a row for known series and 250 ns for new ones.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, DictionaryArray, Int32Array, PrimitiveArray,
    RecordBatch, RecordBatchOptions, StringArray, StringBuilder, TimestampNanosecondArray,
    new_null_array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float64Type, Int32Type, Int64Type, SchemaRef, UInt64Type,
};
use arrow::error::ArrowError;
use parking_lot::{Mutex, RwLock};
use storage::{COLUMN_ROLE_KEY, Store, TIME_COLUMN, TimeRange, WriteObserver};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::rollup::is_rollup_table;

/// Hashes small keys (tag ids, column names) on the writer thread: foldhash rather
/// than SipHash, as the store does; the keys come from our own ids, not from clients.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A column time for "no value yet". A value written at exactly this instant
/// (1677-09-21T00:12:43.145224192Z) is indistinguishable from none, a price paid for
/// keeping each time in 8 bytes.
const NO_TIME: i64 = i64::MIN;

/// The tag id of a null tag.
const NULL_TAG: u32 = u32::MAX;

/// Series keys of up to this many tag ids are packed into one `u128` (a null tag is
/// [`NULL_TAG`], so `u128::MAX` is the key without tags): no allocation, one hash and
/// one integer comparison per lookup. Tables have two or three tags as a rule.
const PACKED_TAGS: usize = 4;

/// In the top slot of a packed key: the key of a series with more than
/// [`PACKED_TAGS`] tags, whose id in `TableCache::long_keys` fills the lowest slot.
/// Tag ids stay below it.
const LONG_KEY: u32 = u32::MAX - 1;

/// Nanoseconds in a day: the warm-up reads one UTC day at a time (the store's Parquet
/// files hold one UTC day each, so every file is read once).
const DAY_NS: i64 = 86_400_000_000_000;

/// The table rows that no ingest path could decode land in.
const REJECTED_TABLE: &str = "_rejected";

/// Whether the cache keeps the last values of `table`: every table but `_rejected` and
/// the rollup tables.
pub fn is_cached_table(table: &str) -> bool {
    table != REJECTED_TABLE && !is_rollup_table(table)
}

/// The last values of every series of every cached table. Cheap to clone; clones share
/// the cache. Register it with [`Store::observe`] so it sees every write; the
/// [`QueryEngine`](crate::QueryEngine) does that and warms it up at start.
#[derive(Clone, Default)]
pub struct LastValues {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    tables: RwLock<FastMap<String, Arc<RwLock<TableCache>>>>,
    /// True once the warm-up is over (or there is none).
    warm: watch::Sender<bool>,
    /// Asks a running warm-up to stop: the engine is gone.
    stop: AtomicBool,
}

impl fmt::Debug for LastValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastValues")
            .field("tables", &self.shared.tables.read().len())
            .field("warm", &self.is_warm())
            .finish_non_exhaustive()
    }
}

/// Which series a [`LastValues::snapshot`] returns: every series, or only those whose
/// tags have one of the given values, each value with the earliest time whose values
/// may be shown.
///
/// The time is for devices that moved: the readings a device sent before it arrived at
/// a site belong to the site it came from, so a site's view of its device starts at the
/// arrival. Columns whose newest value is older than that are null, and a series whose
/// newest row is older is left out.
#[derive(Debug, Clone, Default)]
pub struct LatestFilter {
    tags: Vec<(String, FastMap<String, i64>)>,
}

impl LatestFilter {
    /// Every series.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only series whose tag `column` is one of `values` (a series without the tag is
    /// left out). Filters on several columns must all match.
    pub fn only<S: Into<String>>(self, column: &str, values: impl IntoIterator<Item = S>) -> Self {
        self.only_since(column, values.into_iter().map(|v| (v, i64::MIN)))
    }

    /// Like [`LatestFilter::only`], each value with the earliest time (ns) whose values
    /// are shown for its series. A value given twice keeps the later time.
    pub fn only_since<S: Into<String>>(
        mut self,
        column: &str,
        values: impl IntoIterator<Item = (S, i64)>,
    ) -> Self {
        let mut map = FastMap::default();
        for (value, since) in values {
            let slot = map.entry(value.into()).or_insert(i64::MIN);
            *slot = since.max(*slot);
        }
        self.tags.push((column.to_owned(), map));
        self
    }
}

/// What a warm-up read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmUp {
    /// Tables read.
    pub tables: usize,
    /// Rows read (and merged) over all tables.
    pub rows: usize,
}

/// Which of two values at the same time wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ties {
    /// A committed write: it is later than whatever the cache holds.
    LaterWins,
    /// The warm-up: the store's rows are at best as new as what the writer thread put
    /// in meanwhile.
    CacheWins,
}

impl LastValues {
    /// An empty cache, not yet warm (see [`LastValues::is_warm`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a batch of `table` into the cache as a committed write. What
    /// [`WriteObserver::written`] does; public for tools that feed a cache by hand.
    pub fn apply(&self, table: &str, batch: &RecordBatch) {
        self.merge(table, batch, Ties::LaterWins);
    }

    fn merge(&self, table: &str, batch: &RecordBatch, ties: Ties) {
        if batch.num_rows() == 0 || !is_cached_table(table) {
            return;
        }
        let cache = self.table_or_insert(table);
        cache.write().apply(batch, ties);
    }

    fn table_or_insert(&self, table: &str) -> Arc<RwLock<TableCache>> {
        if let Some(cache) = self.shared.tables.read().get(table) {
            return Arc::clone(cache);
        }
        Arc::clone(
            self.shared
                .tables
                .write()
                .entry(table.to_owned())
                .or_default(),
        )
    }

    fn table(&self, table: &str) -> Option<Arc<RwLock<TableCache>>> {
        self.shared.tables.read().get(table).cloned()
    }

    /// Names of the tables the cache holds series of, sorted.
    pub fn tables(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.tables.read().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// How many series of `table` the cache holds.
    pub fn series(&self, table: &str) -> usize {
        self.table(table)
            .map_or(0, |cache| cache.read().times.len())
    }

    /// The last values of the series of `table` that `filter` selects, one row per
    /// series, with exactly the columns of `schema` (the table's schema or a
    /// projection of it): `time` is the series' newest row time, tags are its tag
    /// values, fields the newest non-null value of each (null when there is none, or
    /// when the filter's time hides it). A column the cache has not seen is null.
    /// Series come in the order the cache first saw them. `None` when the cache holds
    /// nothing of `table`.
    ///
    /// # Errors
    ///
    /// A column of `schema` whose type is not the one the cache holds (the store never
    /// changes a column's type, so this is a caller's mistake).
    pub fn snapshot(
        &self,
        table: &str,
        schema: &SchemaRef,
        filter: &LatestFilter,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        let Some(cache) = self.table(table) else {
            return Ok(None);
        };
        let cache = cache.read();
        cache.snapshot(schema, filter).map(Some)
    }

    /// True once the warm-up has finished (or was never to run). Before that, series
    /// that have not written since the start may be missing.
    pub fn is_warm(&self) -> bool {
        *self.shared.warm.borrow()
    }

    /// Waits until [`LastValues::is_warm`].
    pub async fn warmed(&self) {
        let mut warm = self.shared.warm.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = warm.wait_for(|warm| *warm).await;
    }

    fn mark_warm(&self) {
        self.shared.warm.send_replace(true);
    }

    /// Starts the warm-up on a thread of its own: every cached table's rows of the last
    /// `window` are merged in (see the module documentation). A zero window marks the
    /// cache warm at once and starts nothing.
    pub(crate) fn start_warm_up(&self, store: Store, window: Duration) -> Option<JoinHandle<()>> {
        if window.is_zero() {
            self.mark_warm();
            return None;
        }
        let latest = self.clone();
        let spawned = std::thread::Builder::new()
            .name("gridlake-latest".into())
            .spawn(move || {
                // Marks the cache warm however the warm-up ends (a panic included), so
                // nothing waits forever for a cache that is as warm as it gets.
                let _warm = MarkWarm(&latest);
                let started = Instant::now();
                let done = latest.warm_up(&store, window, now_ns());
                info!(
                    tables = done.tables,
                    rows = done.rows,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "last-value cache warmed up"
                );
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(error) => {
                warn!(%error, "could not start the last-value cache's warm-up; it fills from new writes only");
                self.mark_warm();
                None
            }
        }
    }

    /// Asks a running warm-up to stop after the day it is reading.
    pub(crate) fn stop_warm_up(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    /// Merges every cached table's rows from `window` before its newest row up to that
    /// row (newest UTC day first) into the cache, never replacing what the cache holds
    /// at the same or a later time. The window is counted back from `now_ns` instead
    /// when the newest row is later, so that one row dated years ahead (a device with a
    /// wrong clock) does not move the window away from the present; rows after now are
    /// read all the same. Blocking; a table that cannot be read is logged and skipped.
    pub fn warm_up(&self, store: &Store, window: Duration, now_ns: i64) -> WarmUp {
        let mut done = WarmUp::default();
        for table in store.table_names() {
            if !self.warm_table(store, &table, window, now_ns, &mut done) {
                break;
            }
        }
        done
    }

    /// After a delete in `table` of the series whose tags equal all of `tags`: reads
    /// the table again like the warm-up does (so the newest values of deleted rows are
    /// not shown, and the values before them are), and puts back what it held of every
    /// other series, which the delete did not touch (a series quiet for longer than
    /// `window` would otherwise be missing until it writes again). Blocking.
    pub fn reload_after_delete(
        &self,
        store: &Store,
        table: &str,
        tags: &[(String, String)],
        window: Duration,
    ) -> WarmUp {
        let kept = store.table_schema(table).and_then(|schema| {
            let all = self.snapshot(table, &schema, &LatestFilter::all()).ok()??;
            untouched(&all, tags).ok()
        });
        self.shared.tables.write().remove(table);
        let mut done = WarmUp::default();
        self.warm_table(store, table, window, now_ns(), &mut done);
        if let Some(kept) = kept {
            self.merge(table, &kept, Ties::CacheWins);
        }
        done
    }

    /// The warm-up of one table; false when asked to stop.
    fn warm_table(
        &self,
        store: &Store,
        table: &str,
        window: Duration,
        now_ns: i64,
        done: &mut WarmUp,
    ) -> bool {
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        if !is_cached_table(table) {
            return true;
        }
        let Some(newest) = newest_time(store, table) else {
            return true;
        };
        let oldest = newest.min(now_ns).saturating_sub(window_ns);
        let mut high = newest;
        done.tables += 1;
        while high >= oldest {
            if self.shared.stop.load(Ordering::Acquire) {
                return false;
            }
            // One day at a time, except beyond tomorrow: rows there are few (wrong
            // clocks) and may be years ahead, one read takes them all.
            let tomorrow = now_ns.saturating_add(DAY_NS);
            let low = if high > tomorrow {
                tomorrow
            } else {
                high.div_euclid(DAY_NS).saturating_mul(DAY_NS)
            }
            .max(oldest);
            match store.scan(
                table,
                None,
                TimeRange {
                    min: low,
                    max: high,
                },
            ) {
                Ok(batches) => {
                    for batch in &batches {
                        done.rows += batch.num_rows();
                        self.merge(table, batch, Ties::CacheWins);
                    }
                }
                Err(error) => {
                    warn!(%table, %error, "last-value cache warm-up could not read the table; its series fill from new writes");
                    break;
                }
            }
            if low == i64::MIN {
                break;
            }
            high = low - 1;
        }
        true
    }
}

/// The rows of a snapshot whose series a delete of `tags` did not name.
fn untouched(batch: &RecordBatch, tags: &[(String, String)]) -> Result<RecordBatch, ArrowError> {
    let named =
        storage::rows_with_tags(batch, tags).map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
    arrow::compute::filter_record_batch(batch, &arrow::compute::not(&named)?)
}

/// Marks the cache warm when dropped.
struct MarkWarm<'a>(&'a LastValues);

impl Drop for MarkWarm<'_> {
    fn drop(&mut self) {
        self.0.mark_warm();
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The newest row time of `table`, from the catalog's file ranges and the unpersisted
/// rows, without reading a file.
fn newest_time(store: &Store, table: &str) -> Option<i64> {
    let files = store.parquet_files(table).iter().map(|f| f.max_time).max();
    let memory = store.unpersisted_time_range(table).map(|r| r.max);
    files.max(memory)
}

impl WriteObserver for LastValues {
    fn written(&self, table: &str, batch: &RecordBatch) {
        self.apply(table, batch);
    }
}

/// The cache of one table. Series are rows of a columnar layout: `times[e]` and every
/// column's `e`-th slot belong to series `e`.
#[derive(Default)]
struct TableCache {
    /// Series by packed tag ids (see [`PACKED_TAGS`]). A tag column added later is null
    /// in the key of a series from before it, as in the rows the series had.
    index: FastMap<u128, u32>,
    /// Keys of more than [`PACKED_TAGS`] tags (trailing null tags cut) and their ids.
    long_keys: FastMap<Box<[u32]>, u32>,
    /// Tag ids per series (trailing null tags cut).
    keys: Vec<Box<[u32]>>,
    /// Newest row time per series.
    times: Vec<i64>,
    /// Tag columns in the order they appeared; a tag id's position in a key.
    tags: Vec<TagColumn>,
    fields: Vec<FieldColumn>,
    /// Column name to where it is kept.
    columns: FastMap<String, Slot>,
    /// Per-row series of the batch being applied, kept to reuse its allocation.
    rows: Vec<u32>,
    /// The key being looked up, likewise.
    key: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Tag(usize),
    Field(usize),
}

/// One tag column's distinct values, each with an id.
#[derive(Default)]
struct TagColumn {
    ids: FastMap<Arc<str>, u32>,
    values: Vec<Arc<str>>,
    /// `values` as Arrow, built by the first snapshot after a value was added.
    array: Mutex<Option<ArrayRef>>,
}

impl TagColumn {
    fn id(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = match u32::try_from(self.values.len()) {
            Ok(id) if id < LONG_KEY => id,
            // Four billion distinct values of one tag: the rest read as null rather
            // than as a value they are not.
            _ => return NULL_TAG,
        };
        let value: Arc<str> = value.into();
        self.values.push(Arc::clone(&value));
        self.ids.insert(value, id);
        *self.array.get_mut() = None;
        id
    }

    fn array(&self) -> ArrayRef {
        let mut array = self.array.lock();
        Arc::clone(array.get_or_insert_with(|| {
            Arc::new(StringArray::from_iter_values(
                self.values.iter().map(|v| &**v),
            ))
        }))
    }
}

/// One field column: per series its newest value and that value's time.
struct FieldColumn {
    times: Vec<i64>,
    values: Values,
}

enum Values {
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Utf8(Vec<String>),
}

impl Values {
    fn new(data_type: &DataType, len: usize) -> Option<Values> {
        Some(match data_type {
            DataType::Float64 => Values::F64(vec![0.0; len]),
            DataType::Int64 => Values::I64(vec![0; len]),
            DataType::UInt64 => Values::U64(vec![0; len]),
            DataType::Boolean => Values::Bool(vec![false; len]),
            DataType::Utf8 => Values::Utf8(vec![String::new(); len]),
            _ => return None,
        })
    }

    fn data_type(&self) -> DataType {
        match self {
            Values::F64(_) => DataType::Float64,
            Values::I64(_) => DataType::Int64,
            Values::U64(_) => DataType::UInt64,
            Values::Bool(_) => DataType::Boolean,
            Values::Utf8(_) => DataType::Utf8,
        }
    }

    fn push_empty(&mut self) {
        match self {
            Values::F64(v) => v.push(0.0),
            Values::I64(v) => v.push(0),
            Values::U64(v) => v.push(0),
            Values::Bool(v) => v.push(false),
            Values::Utf8(v) => v.push(String::new()),
        }
    }
}

/// What a batch column is, from its role metadata (or, for batches that lost it, its
/// type: tags are the only dictionaries).
enum Role {
    Time,
    Tag,
    Field,
}

fn role(field: &Field) -> Role {
    match field.metadata().get(COLUMN_ROLE_KEY).map(String::as_str) {
        Some("time") => Role::Time,
        Some("tag") => Role::Tag,
        Some("field") => Role::Field,
        _ if field.name() == TIME_COLUMN => Role::Time,
        _ if matches!(field.data_type(), DataType::Dictionary(..)) => Role::Tag,
        _ => Role::Field,
    }
}

impl TableCache {
    fn tag_position(&mut self, name: &str) -> Option<usize> {
        match self.columns.get(name) {
            Some(Slot::Tag(i)) => Some(*i),
            Some(Slot::Field(_)) => None,
            None => {
                self.tags.push(TagColumn::default());
                let i = self.tags.len() - 1;
                self.columns.insert(name.to_owned(), Slot::Tag(i));
                Some(i)
            }
        }
    }

    fn field_position(&mut self, name: &str, data_type: &DataType) -> Option<usize> {
        match self.columns.get(name) {
            Some(Slot::Field(i)) if self.fields[*i].values.data_type() == *data_type => Some(*i),
            Some(_) => None,
            None => {
                let values = Values::new(data_type, self.times.len())?;
                self.fields.push(FieldColumn {
                    times: vec![NO_TIME; self.times.len()],
                    values,
                });
                let i = self.fields.len() - 1;
                self.columns.insert(name.to_owned(), Slot::Field(i));
                Some(i)
            }
        }
    }

    fn insert_series(&mut self, packed: u128, key: Box<[u32]>) -> u32 {
        let e = u32::try_from(self.times.len()).unwrap_or(u32::MAX);
        self.keys.push(key);
        self.times.push(NO_TIME);
        for field in &mut self.fields {
            field.times.push(NO_TIME);
            field.values.push_empty();
        }
        self.index.insert(packed, e);
        e
    }

    /// The packed key of a series with more than [`PACKED_TAGS`] tags.
    fn long_key(&mut self, key: &[u32]) -> u128 {
        let id = match self.long_keys.get(key) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.long_keys.len()).unwrap_or(u32::MAX);
                self.long_keys.insert(key.into(), id);
                id
            }
        };
        u128::from(id) | (u128::from(LONG_KEY) << 96)
    }

    fn apply(&mut self, batch: &RecordBatch, ties: Ties) {
        let Some(times) = batch
            .column_by_name(TIME_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return;
        };
        let times = times.values().as_ref();

        // Tag columns: the batch's dictionary values mapped to our ids once, so a row
        // costs an index per tag.
        let mut tags: Vec<(usize, &Int32Array, Vec<u32>)> = Vec::new();
        let mut fields: Vec<(usize, &ArrayRef)> = Vec::new();
        for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            match role(field) {
                Role::Time => {}
                Role::Tag => {
                    let Some(dictionary) = column.as_dictionary_opt::<Int32Type>() else {
                        continue;
                    };
                    let Some(values) = dictionary.values().as_string_opt::<i32>() else {
                        continue;
                    };
                    let Some(position) = self.tag_position(field.name()) else {
                        continue;
                    };
                    let tag = &mut self.tags[position];
                    let ids = values
                        .iter()
                        .map(|v| v.map_or(NULL_TAG, |v| tag.id(v)))
                        .collect();
                    tags.push((position, dictionary.keys(), ids));
                }
                Role::Field => {
                    if let Some(position) = self.field_position(field.name(), field.data_type()) {
                        fields.push((position, column));
                    }
                }
            }
        }

        // Rows to series. Consecutive rows of one series (a device's backlog, its
        // phases' rows in a request) skip the lookup.
        let mut rows = std::mem::take(&mut self.rows);
        let mut key = std::mem::take(&mut self.key);
        rows.clear();
        let width = self.tags.len();
        let mut previous: Option<(u128, u32)> = None;
        for (row, &time) in times.iter().enumerate() {
            let tag_id = |keys: &Int32Array, ids: &[u32]| {
                if keys.is_valid(row) {
                    let k = usize::try_from(keys.value(row)).unwrap_or(usize::MAX);
                    ids.get(k).copied().unwrap_or(NULL_TAG)
                } else {
                    NULL_TAG
                }
            };
            let packed = if width <= PACKED_TAGS {
                let mut packed = u128::MAX;
                for (position, keys, ids) in &tags {
                    let shift = 32 * position;
                    packed &= !(u128::from(u32::MAX) << shift);
                    packed |= u128::from(tag_id(keys, ids)) << shift;
                }
                packed
            } else {
                key.clear();
                key.resize(width, NULL_TAG);
                for (position, keys, ids) in &tags {
                    key[*position] = tag_id(keys, ids);
                }
                trim(&mut key);
                if key.len() <= PACKED_TAGS {
                    pack(&key)
                } else {
                    self.long_key(&key)
                }
            };
            let e = match previous {
                Some((p, e)) if p == packed => e,
                _ => match self.index.get(&packed) {
                    Some(&e) => e,
                    None => {
                        let mut tags = unpack(packed, &key);
                        trim(&mut tags);
                        self.insert_series(packed, tags.into())
                    }
                },
            };
            previous = Some((packed, e));
            let newest = &mut self.times[e as usize];
            *newest = (*newest).max(time);
            rows.push(e);
        }

        for (position, column) in fields {
            self.fields[position].update(column, times, &rows, ties);
        }
        self.rows = rows;
        self.key = key;
    }

    fn snapshot(
        &self,
        schema: &SchemaRef,
        filter: &LatestFilter,
    ) -> Result<RecordBatch, ArrowError> {
        let selected = self.select(filter);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column: ArrayRef = match self.columns.get(field.name()) {
                _ if field.name() == TIME_COLUMN => {
                    let times: TimestampNanosecondArray = selected
                        .iter()
                        .map(|&(e, _)| Some(self.times[e as usize]))
                        .collect();
                    Arc::new(times.with_timezone_opt(timezone(field.data_type())))
                }
                Some(Slot::Tag(position)) => {
                    let keys: Int32Array = selected
                        .iter()
                        .map(|&(e, _)| {
                            self.keys[e as usize]
                                .get(*position)
                                .filter(|&&id| id != NULL_TAG)
                                .and_then(|&id| i32::try_from(id).ok())
                        })
                        .collect();
                    let values = self.tags[*position].array();
                    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values)?)
                }
                Some(Slot::Field(position)) => self.fields[*position].array(&selected),
                None => new_null_array(field.data_type(), selected.len()),
            };
            if column.data_type() != field.data_type() {
                return Err(ArrowError::SchemaError(format!(
                    "column {:?} is {} in the last-value cache, not {}",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )));
            }
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(selected.len()));
        RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
    }

    /// The series `filter` selects, each with the earliest time shown.
    fn select(&self, filter: &LatestFilter) -> Vec<(u32, i64)> {
        // Per filtered tag: its position in the keys and the wanted ids.
        let mut wanted: Vec<(usize, FastMap<u32, i64>)> = Vec::with_capacity(filter.tags.len());
        for (column, values) in &filter.tags {
            let Some(Slot::Tag(position)) = self.columns.get(column) else {
                // No series has a value for a column that is not a tag.
                return Vec::new();
            };
            let tag = &self.tags[*position];
            let ids: FastMap<u32, i64> = values
                .iter()
                .filter_map(|(value, &since)| tag.ids.get(value.as_str()).map(|&id| (id, since)))
                .collect();
            if ids.is_empty() {
                return Vec::new();
            }
            wanted.push((*position, ids));
        }
        let mut selected = Vec::new();
        'series: for (e, key) in self.keys.iter().enumerate() {
            let mut since = i64::MIN;
            for (position, ids) in &wanted {
                match key.get(*position).and_then(|id| ids.get(id)) {
                    Some(&s) => since = since.max(s),
                    None => continue 'series,
                }
            }
            if self.times[e] >= since {
                selected.push((u32::try_from(e).unwrap_or(u32::MAX), since));
            }
        }
        selected
    }
}

/// Cuts the trailing null tags of a key.
fn trim(key: &mut Vec<u32>) {
    while key.last() == Some(&NULL_TAG) {
        key.pop();
    }
}

/// Packs a key of at most [`PACKED_TAGS`] tag ids; missing ones are null.
fn pack(key: &[u32]) -> u128 {
    key.iter().enumerate().fold(u128::MAX, |packed, (i, &id)| {
        let shift = 32 * i;
        (packed & !(u128::from(u32::MAX) << shift)) | (u128::from(id) << shift)
    })
}

/// The tag ids of a packed key: its slots, or `long` for a key of more tags.
fn unpack(packed: u128, long: &[u32]) -> Vec<u32> {
    if (packed >> 96) as u32 == LONG_KEY {
        return long.to_vec();
    }
    (0..PACKED_TAGS)
        .map(|i| (packed >> (32 * i)) as u32)
        .collect()
}

fn timezone(data_type: &DataType) -> Option<Arc<str>> {
    match data_type {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    }
}

impl FieldColumn {
    /// Takes each row's value where it is newer than the one kept (or as new, for a
    /// committed write).
    fn update(&mut self, column: &ArrayRef, times: &[i64], rows: &[u32], ties: Ties) {
        let nulls = column.logical_nulls();
        let kept = &mut self.times;
        match &mut self.values {
            Values::F64(values) => {
                let source = column.as_primitive::<Float64Type>().values();
                merge_rows(kept, times, rows, nulls.as_ref(), ties, |e, row| {
                    values[e] = source[row];
                });
            }
            Values::I64(values) => {
                let source = column.as_primitive::<Int64Type>().values();
                merge_rows(kept, times, rows, nulls.as_ref(), ties, |e, row| {
                    values[e] = source[row];
                });
            }
            Values::U64(values) => {
                let source = column.as_primitive::<UInt64Type>().values();
                merge_rows(kept, times, rows, nulls.as_ref(), ties, |e, row| {
                    values[e] = source[row];
                });
            }
            Values::Bool(values) => {
                let source = column.as_boolean();
                merge_rows(kept, times, rows, nulls.as_ref(), ties, |e, row| {
                    values[e] = source.value(row);
                });
            }
            Values::Utf8(values) => {
                let source = column.as_string::<i32>();
                merge_rows(kept, times, rows, nulls.as_ref(), ties, |e, row| {
                    let value = source.value(row);
                    let slot = &mut values[e];
                    // Readings repeat their strings (`quality`, `source`): comparing
                    // first keeps the common case to a read.
                    if slot != value {
                        slot.clear();
                        slot.push_str(value);
                    }
                });
            }
        }
    }

    /// The values of the selected series as Arrow, null where hidden or never seen.
    fn array(&self, selected: &[(u32, i64)]) -> ArrayRef {
        let shown = |e: u32, since: i64| {
            let t = self.times[e as usize];
            t != NO_TIME && t >= since
        };
        match &self.values {
            Values::F64(values) => primitive::<Float64Type>(values, selected, shown),
            Values::I64(values) => primitive::<Int64Type>(values, selected, shown),
            Values::U64(values) => primitive::<UInt64Type>(values, selected, shown),
            Values::Bool(values) => {
                let mut builder = BooleanBuilder::with_capacity(selected.len());
                for &(e, since) in selected {
                    builder.append_option(shown(e, since).then(|| values[e as usize]));
                }
                Arc::new(builder.finish())
            }
            Values::Utf8(values) => {
                let bytes: usize = selected
                    .iter()
                    .map(|&(e, _)| values[e as usize].len())
                    .sum();
                let mut builder = StringBuilder::with_capacity(selected.len(), bytes);
                for &(e, since) in selected {
                    builder.append_option(shown(e, since).then(|| values[e as usize].as_str()));
                }
                Arc::new(builder.finish())
            }
        }
    }
}

fn primitive<T: ArrowPrimitiveType>(
    values: &[T::Native],
    selected: &[(u32, i64)],
    shown: impl Fn(u32, i64) -> bool,
) -> ArrayRef {
    let array: PrimitiveArray<T> = selected
        .iter()
        .map(|&(e, since)| shown(e, since).then(|| values[e as usize]))
        .collect();
    Arc::new(array)
}

/// For each row not null, with `rows[row]` its series: when the row's time beats the
/// kept time (`ties` decides equal times), keeps the time and calls `set(series, row)`.
#[inline]
fn merge_rows(
    kept: &mut [i64],
    times: &[i64],
    rows: &[u32],
    nulls: Option<&NullBuffer>,
    ties: Ties,
    mut set: impl FnMut(usize, usize),
) {
    for (row, (&e, &time)) in rows.iter().zip(times).enumerate() {
        if nulls.is_some_and(|n| n.is_null(row)) {
            continue;
        }
        let e = e as usize;
        let slot = &mut kept[e];
        let wins = match ties {
            Ties::LaterWins => time >= *slot,
            Ties::CacheWins => time > *slot,
        };
        if wins {
            *slot = time;
            set(e, row);
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Float64Array;
    use arrow::datatypes::Schema;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use storage::{FieldValue, ParsedLine, Row, StoreConfig};
    use tempfile::TempDir;

    use super::*;

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000_000_000;
    const SECOND: i64 = 1_000_000_000;

    /// A row to write: time, tags (sorted by key), fields.
    type TestRow<'a> = (i64, &'a [(&'a str, &'a str)], Vec<(&'a str, FieldValue)>);

    /// A store whose writes `latest` observes.
    struct Fixture {
        store: Store,
        latest: LastValues,
        _dir: TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path(), StoreConfig::default()).expect("store");
            let latest = LastValues::new();
            store.observe(Arc::new(latest.clone()));
            Self {
                store,
                latest,
                _dir: dir,
            }
        }

        /// Writes rows of `table` in one request.
        fn write(&self, table: &str, rows: &[TestRow<'_>]) {
            let lines = rows
                .iter()
                .enumerate()
                .map(|(i, (time, tags, fields))| ParsedLine {
                    line: i + 1,
                    table: table.to_owned(),
                    row: Row {
                        time: *time,
                        tags: tags
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                        fields: fields
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), v.clone()))
                            .collect(),
                    },
                })
                .collect();
            let (batch, errors) = self.store.validate(lines);
            assert!(errors.is_empty(), "{errors:?}");
            self.store
                .submit(batch, false)
                .expect("submit")
                .wait_blocking()
                .expect("written");
        }

        /// The cache's rows of `table` as text, one `column=value` list per series,
        /// sorted; nulls left out.
        fn rows(&self, table: &str, filter: &LatestFilter) -> Vec<String> {
            let schema = self.store.table_schema(table).expect("table exists");
            let batch = self
                .latest
                .snapshot(table, &schema, filter)
                .expect("snapshot")
                .expect("table cached");
            text(&batch)
        }
    }

    fn text(batch: &RecordBatch) -> Vec<String> {
        let options = FormatOptions::default();
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        let mut rows: Vec<String> = (0..batch.num_rows())
            .map(|row| {
                batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .zip(&formatters)
                    .filter(|((_, column), _)| column.is_valid(row))
                    .map(|((field, _), f)| format!("{}={}", field.name(), f.value(row)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        rows.sort();
        rows
    }

    fn f(v: f64) -> FieldValue {
        FieldValue::F64(v)
    }

    #[test]
    fn a_later_time_wins_whatever_the_order_of_arrival() {
        let fx = Fixture::new();
        let m1: &[(&str, &str)] = &[("device_id", "m1")];
        let m2: &[(&str, &str)] = &[("device_id", "m2")];
        fx.write(
            "meter",
            &[
                (T0 + 10 * SECOND, m1, vec![("power", f(10.0))]),
                (T0, m1, vec![("power", f(0.0))]),
                (T0 + 5 * SECOND, m2, vec![("power", f(5.0))]),
            ],
        );
        // A late reading of m1 (a gateway's backlog) and a newer one of m2.
        fx.write(
            "meter",
            &[
                (T0 + 9 * SECOND, m1, vec![("power", f(9.0))]),
                (T0 + 6 * SECOND, m2, vec![("power", f(6.0))]),
            ],
        );
        assert_eq!(
            fx.rows("meter", &LatestFilter::all()),
            [
                "time=2024-01-01T00:00:06Z device_id=m2 power=6.0",
                "time=2024-01-01T00:00:10Z device_id=m1 power=10.0",
            ]
        );
        assert_eq!(fx.latest.series("meter"), 2);
        assert_eq!(fx.latest.tables(), ["meter"]);
    }

    #[test]
    fn at_an_equal_time_the_later_write_wins() {
        let fx = Fixture::new();
        let m1: &[(&str, &str)] = &[("device_id", "m1")];
        // Within one request and across requests, as the store keeps the last write of
        // a point.
        fx.write(
            "meter",
            &[
                (T0, m1, vec![("power", f(1.0))]),
                (T0, m1, vec![("power", f(2.0))]),
            ],
        );
        assert_eq!(
            fx.rows("meter", &LatestFilter::all()),
            ["time=2024-01-01T00:00:00Z device_id=m1 power=2.0"]
        );
        fx.write("meter", &[(T0, m1, vec![("power", f(3.0))])]);
        assert_eq!(
            fx.rows("meter", &LatestFilter::all()),
            ["time=2024-01-01T00:00:00Z device_id=m1 power=3.0"]
        );
    }

    #[test]
    fn each_column_keeps_its_newest_non_null_value() {
        let fx = Fixture::new();
        let m1: &[(&str, &str)] = &[("device_id", "m1")];
        fx.write(
            "meter",
            &[
                (
                    T0,
                    m1,
                    vec![
                        ("power", f(1.0)),
                        ("energy_wh", FieldValue::I64(100)),
                        ("quality", FieldValue::String("good".into())),
                        ("online", FieldValue::Bool(true)),
                    ],
                ),
                // A newer row with only power: the others keep their values.
                (T0 + SECOND, m1, vec![("power", f(2.0))]),
            ],
        );
        // An older row brings a value the series never had, and loses where it has one.
        fx.write(
            "meter",
            &[(
                T0 - SECOND,
                m1,
                vec![
                    ("power", f(-1.0)),
                    ("count", FieldValue::U64(7)),
                    ("quality", FieldValue::String("bad".into())),
                ],
            )],
        );
        assert_eq!(
            fx.rows("meter", &LatestFilter::all()),
            [
                "time=2024-01-01T00:00:01Z device_id=m1 power=2.0 energy_wh=100 \
              quality=good online=true count=7"
            ]
        );
        // Strings are overwritten in place by a newer value.
        fx.write(
            "meter",
            &[(
                T0 + 2 * SECOND,
                m1,
                vec![("quality", FieldValue::String("estimated".into()))],
            )],
        );
        assert_eq!(
            fx.rows("meter", &LatestFilter::all()),
            [
                "time=2024-01-01T00:00:02Z device_id=m1 power=2.0 energy_wh=100 \
              quality=estimated online=true count=7"
            ]
        );
    }

    #[test]
    fn new_columns_mid_stream_keep_the_series_apart_correctly() {
        let fx = Fixture::new();
        fx.write(
            "meter",
            &[(T0, &[("device_id", "m1")], vec![("power", f(1.0))])],
        );
        // A new tag: rows without it are still m1's series; rows with it a new one. A
        // new field arrives at the same time.
        fx.write(
            "meter",
            &[
                (
                    T0 + SECOND,
                    &[("device_id", "m1"), ("phase", "L1")],
                    vec![("power", f(0.3)), ("voltage", f(230.0))],
                ),
                (
                    T0 + 2 * SECOND,
                    &[("device_id", "m1")],
                    vec![("power", f(1.2))],
                ),
                (T0 + 3 * SECOND, &[("phase", "L2")], vec![("power", f(9.0))]),
            ],
        );
        assert_eq!(
            fx.rows("meter", &LatestFilter::all()),
            [
                "time=2024-01-01T00:00:01Z device_id=m1 power=0.3 phase=L1 voltage=230.0",
                "time=2024-01-01T00:00:02Z device_id=m1 power=1.2",
                "time=2024-01-01T00:00:03Z power=9.0 phase=L2",
            ]
        );
        assert_eq!(fx.latest.series("meter"), 3);
    }

    #[test]
    fn series_with_many_tags_are_told_apart() {
        let fx = Fixture::new();
        let few: &[(&str, &str)] = &[("a", "1"), ("b", "1")];
        let six: &[(&str, &str)] = &[
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            ("e", "1"),
            ("f", "1"),
        ];
        let other: &[(&str, &str)] = &[
            ("a", "1"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            ("e", "1"),
            ("f", "2"),
        ];
        let fifth: &[(&str, &str)] = &[("a", "1"), ("e", "1")];
        fx.write("t", &[(T0, few, vec![("v", f(1.0))])]);
        fx.write(
            "t",
            &[
                (T0, six, vec![("v", f(6.0))]),
                (T0, other, vec![("v", f(7.0))]),
                (T0, fifth, vec![("v", f(5.0))]),
                // The first series again, now that the table has six tags.
                (T0 + SECOND, few, vec![("v", f(2.0))]),
            ],
        );
        fx.write("t", &[(T0 + SECOND, six, vec![("v", f(60.0))])]);
        assert_eq!(
            fx.rows("t", &LatestFilter::all()),
            [
                "time=2024-01-01T00:00:00Z a=1 b=1 v=7.0 c=1 d=1 e=1 f=2",
                "time=2024-01-01T00:00:00Z a=1 v=5.0 e=1",
                "time=2024-01-01T00:00:01Z a=1 b=1 v=2.0",
                "time=2024-01-01T00:00:01Z a=1 b=1 v=60.0 c=1 d=1 e=1 f=1",
            ]
        );
        assert_eq!(
            fx.rows("t", &LatestFilter::all().only("f", ["2"])),
            ["time=2024-01-01T00:00:00Z a=1 b=1 v=7.0 c=1 d=1 e=1 f=2"]
        );
    }

    #[test]
    fn filters_select_series_and_hide_values_before_their_time() {
        let fx = Fixture::new();
        fx.write(
            "meter",
            &[
                (
                    T0,
                    &[("device_id", "m1"), ("site_id", "s1")],
                    vec![("power", f(1.0)), ("energy", f(100.0))],
                ),
                (
                    T0 + 10 * SECOND,
                    &[("device_id", "m1"), ("site_id", "s1")],
                    vec![("power", f(2.0))],
                ),
                (
                    T0,
                    &[("device_id", "m2"), ("site_id", "s2")],
                    vec![("power", f(3.0))],
                ),
                (T0, &[("site_id", "s1")], vec![("power", f(4.0))]),
            ],
        );
        let devices = |filter: LatestFilter| fx.rows("meter", &filter);
        assert_eq!(
            devices(LatestFilter::all().only("device_id", ["m2", "nope"])),
            ["time=2024-01-01T00:00:00Z device_id=m2 site_id=s2 power=3.0"]
        );
        // Both filters must match; a series without the tag never does.
        assert_eq!(
            devices(
                LatestFilter::all()
                    .only("site_id", ["s1"])
                    .only("device_id", ["m1", "m2"])
            ),
            ["time=2024-01-01T00:00:10Z device_id=m1 site_id=s1 power=2.0 energy=100.0"]
        );
        assert!(devices(LatestFilter::all().only("device_id", ["nope"])).is_empty());
        assert!(devices(LatestFilter::all().only("power", ["2"])).is_empty());
        assert!(devices(LatestFilter::all().only("no_such_tag", ["x"])).is_empty());
        // m1 arrived at 00:00:05: its energy (00:00:00) is not the new site's; m2
        // arrived after its only reading.
        assert_eq!(
            devices(
                LatestFilter::all()
                    .only_since("device_id", [("m1", T0 + 5 * SECOND), ("m2", T0 + SECOND)])
            ),
            ["time=2024-01-01T00:00:10Z device_id=m1 site_id=s1 power=2.0"]
        );
        // At exactly the arrival time the value is shown.
        assert_eq!(
            devices(LatestFilter::all().only_since("device_id", [("m2", T0)])),
            ["time=2024-01-01T00:00:00Z device_id=m2 site_id=s2 power=3.0"]
        );
    }

    #[test]
    fn snapshots_have_the_columns_asked_for() {
        let fx = Fixture::new();
        fx.write(
            "meter",
            &[(T0, &[("device_id", "m1")], vec![("power", f(1.5))])],
        );
        let full = fx.store.table_schema("meter").unwrap();
        // A projection in another order, and a column the cache never saw.
        let schema = Arc::new(Schema::new(vec![
            full.field_with_name("power").unwrap().clone(),
            Field::new("later", DataType::Utf8, true),
            full.field_with_name("time").unwrap().clone(),
        ]));
        let batch = fx
            .latest
            .snapshot("meter", &schema, &LatestFilter::all())
            .unwrap()
            .unwrap();
        assert_eq!(batch.schema(), schema);
        assert_eq!(batch.num_rows(), 1);
        let power = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(power.value(0), 1.5);
        assert!(batch.column(1).is_null(0));
        // No columns at all still counts the rows (`SELECT count(*)`).
        let empty = Arc::new(Schema::empty());
        let batch = fx
            .latest
            .snapshot("meter", &empty, &LatestFilter::all())
            .unwrap()
            .unwrap();
        assert_eq!(batch.num_rows(), 1);
        // A type the column does not have is an error, not a silent null.
        let wrong = Arc::new(Schema::new(vec![Field::new(
            "power",
            DataType::Int64,
            true,
        )]));
        let error = fx
            .latest
            .snapshot("meter", &wrong, &LatestFilter::all())
            .expect_err("wrong type");
        assert!(error.to_string().contains("power"), "{error}");
        assert!(
            fx.latest
                .snapshot("nope", &full, &LatestFilter::all())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn rollup_tables_and_rejected_rows_are_not_cached() {
        let fx = Fixture::new();
        for table in ["meter_15m", "meter_1h", "meter_1d", "_rejected", "meter"] {
            fx.write(
                table,
                &[(T0, &[("device_id", "m1")], vec![("power", f(1.0))])],
            );
        }
        assert_eq!(fx.latest.tables(), ["meter"]);
        assert!(!is_cached_table("meter_1d"));
        assert!(!is_cached_table("_rejected"));
        assert!(is_cached_table("meter_1m"));
        assert!(is_cached_table("meter"));
    }

    #[test]
    fn warm_up_fills_in_but_never_replaces_newer_values() {
        let fx = Fixture::new();
        let m = |d: &'static str| -> &'static [(&'static str, &'static str)] {
            match d {
                "m1" => &[("device_id", "m1")],
                "m2" => &[("device_id", "m2")],
                "m3" => &[("device_id", "m3")],
                _ => &[("device_id", "old")],
            }
        };
        // The store's rows (written before this cache existed: a cache of its own saw
        // them): m1's energy at 11:00, m1 and m2 at 12:00, m3 at 12:01, a series
        // silent for two days, some of it in Parquet, and a rollup table.
        let noon = T0 + 12 * 3600 * SECOND;
        fx.write(
            "meter",
            &[
                (noon - 2 * DAY_NS, m("old"), vec![("power", f(-1.0))]),
                (noon - 3600 * SECOND, m("m1"), vec![("energy", f(11.0))]),
            ],
        );
        fx.store.persist_now().expect("persist");
        fx.write(
            "meter",
            &[
                (noon, m("m1"), vec![("power", f(1.0))]),
                (noon, m("m2"), vec![("power", f(2.0))]),
                (noon + 60 * SECOND, m("m3"), vec![("power", f(3.0))]),
            ],
        );
        fx.write("meter_15m", &[(noon, m("m1"), vec![("power", f(9.0))])]);

        // A new cache gets writes before the warm-up reads the store: m1 newer, m2 at
        // the same time as the stored row (the cache's is the later write). They go to
        // another store, so the scan below still finds the older rows.
        let live = Fixture::new();
        let cold = LastValues::new();
        live.store.observe(Arc::new(cold.clone()));
        live.write(
            "meter",
            &[
                (noon + SECOND, m("m1"), vec![("power", f(10.0))]),
                (noon, m("m2"), vec![("power", f(20.0))]),
            ],
        );
        assert!(!cold.is_warm());
        let done = cold.warm_up(&fx.store, Duration::from_secs(86_400), noon);
        assert_eq!(done.tables, 1, "meter only: rollups are not read");
        assert_eq!(
            done.rows, 4,
            "the rows of the last day, the silent series' not"
        );
        let schema = fx.store.table_schema("meter").unwrap();
        let rows = |cache: &LastValues| {
            text(
                &cache
                    .snapshot("meter", &schema, &LatestFilter::all())
                    .unwrap()
                    .unwrap(),
            )
        };
        assert_eq!(
            rows(&cold),
            [
                "time=2024-01-01T12:00:00Z device_id=m2 power=20.0",
                "time=2024-01-01T12:00:01Z device_id=m1 power=10.0 energy=11.0",
                "time=2024-01-01T12:01:00Z device_id=m3 power=3.0",
            ]
        );
        // A warm-up over a longer window finds the silent series too; one that runs
        // again changes nothing else.
        let done = cold.warm_up(&fx.store, Duration::from_secs(3 * 86_400), noon);
        assert_eq!(done.rows, 5);
        assert_eq!(cold.series("meter"), 4);
        // The cache the store had all along agrees on the series they share.
        assert_eq!(fx.latest.series("meter"), 4);
    }

    #[test]
    fn warm_up_counts_back_from_now_when_rows_lie_far_ahead() {
        let fx = Fixture::new();
        let d: &[(&str, &str)] = &[("device_id", "d")];
        let bogus: &[(&str, &str)] = &[("device_id", "bogus")];
        let now = T0;
        fx.write(
            "meter",
            &[
                (now - 3600 * SECOND, d, vec![("power", f(1.0))]),
                (now + 3650 * DAY_NS, bogus, vec![("power", f(2.0))]),
            ],
        );
        let cold = LastValues::new();
        let done = cold.warm_up(&fx.store, Duration::from_secs(86_400), now);
        assert_eq!(done.rows, 2);
        assert_eq!(cold.series("meter"), 2);
        // Without the cap the window would be the ten years' last day: only `bogus`.
        let done = cold.warm_up(&fx.store, Duration::from_secs(86_400), now + 3650 * DAY_NS);
        assert_eq!(done.rows, 1);
    }

    #[tokio::test]
    async fn a_started_warm_up_ends_warm() {
        let fx = Fixture::new();
        fx.write(
            "meter",
            &[(T0, &[("device_id", "m1")], vec![("power", f(1.0))])],
        );
        let cold = LastValues::new();
        let handle = cold
            .start_warm_up(fx.store.clone(), Duration::from_secs(3600))
            .expect("thread");
        cold.warmed().await;
        assert!(cold.is_warm());
        assert_eq!(cold.series("meter"), 1);
        handle.join().expect("no panic");
        // A zero window is warm at once, with nothing read.
        let off = LastValues::new();
        assert!(
            off.start_warm_up(fx.store.clone(), Duration::ZERO)
                .is_none()
        );
        assert!(off.is_warm());
        assert_eq!(off.series("meter"), 0);
    }
}

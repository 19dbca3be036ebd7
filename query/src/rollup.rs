//! Rollups (continuous aggregates): for every stored table `T` except rollup tables
//! and `_rejected`, the tables `T_15m`, `T_1h` and `T_1d`, kept up to date from the
//! writes and stored in the store itself (WAL, Parquet, last write wins on (tags,
//! time), so recomputing a bucket rewrites its row).
//!
//! ```text
//!  write ─► WAL writer ─► Marks::written (min/max time of the batch: stale ranges)
//!                                   │
//!  refresh (every query.rollup_refresh_interval, at shutdown, refresh_now)
//!    stale quarter hours that have ended, in chunks of ≤ 1 hour, ≤ 24 chunks per
//!    table per pass ─► Store::scan T [start - 1h, end) ─► T_15m rows
//!    ─► validate + submit, wait for the ack ─► Store::scan T_15m ─► T_1h, T_1d rows
//! ```
//!
//! # Schema
//!
//! A rollup row is one series (the tag columns of `T`, same names; NULL tags stay
//! absent) and one bucket; `time` is the bucket start. 15-minute and hourly buckets
//! are UTC-aligned; daily buckets are local calendar days in `query.rollup_timezone`.
//! For each numeric field `f` of `T` (Float64, Int64, UInt64; strings such as
//! `quality` and `source` and booleans are not rolled up):
//!
//! | column | type | value |
//! |---|---|---|
//! | `f_count` | Int64 | readings of `f` in the bucket (always present) |
//! | `f_min`, `f_max`, `f_sum`, `f_avg` | Float64 | over those readings (absent if none) |
//! | `f_last` | Float64 | the reading at the latest time in the bucket |
//! | `f_energy` | Float64 | only for `*_wh` registers: the sum of the energy steps ([`crate::counter::deltas`] with [`CounterRules::ROLLUP`](crate::counter::CounterRules::ROLLUP)) into the bucket's readings, each from the series' previous reading up to an hour before; absent when no step counts |
//!
//! NULL, NaN and infinite values are not readings. A row is written for each series
//! with at least one row in the bucket (so a table without numeric fields has no
//! rollups). 15-minute rows come from the raw rows; hourly and daily rows from the
//! 15-minute rows (counts, sums and energies add up, minima of minima, the last of
//! the latest bucket), which gives the same numbers because every energy step belongs
//! to the bucket of its later reading.
//!
//! # Staleness
//!
//! A write of rows at times `[a, b]` marks `[a, min(b + 1h, newest row of T)]` stale:
//! a late reading also changes the step into the series' next reading, which counts
//! only within an hour. At start, what the WAL replayed
//! ([`storage::Store::unpersisted_time_range`]), everything after the newest
//! 15-minute rollup (or all of `T` if one of its rollup tables is missing: a backfill),
//! and the marks saved in `rollups.json` in the data directory are marked stale.
//!
//! A refresh rolls up only quarter hours that have ended (by the system clock;
//! [`Rollups::refresh_at`] takes the time as an argument). The current quarter hour,
//! and any with future times, stay marked until they end: real-time data is rolled up
//! once, when its quarter hour closes (and again for late writes), not at every
//! refresh. Readers get the stale windows from [`Rollups::first_stale`] (or
//! [`Rollups::stale`]) and read them from `T`. Refreshing the quarter hours of a
//! table is cut into hour-long chunks, at most [`MAX_CHUNKS_PER_PASS`] per table per
//! pass, so that a backfill of one table does not hold up the fresh buckets of the
//! others; the background refresh runs the next pass at once while ended buckets are
//! left.
//!
//! # State file
//!
//! `rollups.json` in the data directory holds `{"timezone": ..., "stale": {...}}`: the
//! zone the daily rollups are computed in, and the stale ranges. It is written before
//! the first refresh of a process (not by a read-only store that never refreshes),
//! after every background pass that leaves (or clears) marks, and at shutdown.
//! A start with another `query.rollup_timezone` while `*_1d` tables exist is refused
//! ([`Error::RollupTimezoneChanged`]): the old days' rows would stay beside the new
//! ones.
//!
//! # Limits
//!
//! - A refresh writes rows for the series it finds and removes none: rows of a
//!   series go from the rollups only by a delete of the rollup tables themselves. The
//!   delete API (`POST /api/v1/delete`) deletes a raw table's rows and its rollup rows
//!   from the bucket holding the first deleted time on, inside
//!   [`Rollups::with_refresh_paused`], and marks the ends of the deleted range stale
//!   ([`Rollups::mark_stale`]) so the buckets that kept some rows are recomputed.
//!   Rollup tables take their own retention (`storage.retention`).
//! - A crash loses the marks made since the last save (at most
//!   `rollup_refresh_interval` plus a pass) of writes already snapshotted to Parquet,
//!   unless they are at the tail of the table (the start-up check finds those): late
//!   writes in that window stay unrolled until their buckets are written again.
//! - Each ended quarter hour's refresh rewrites the hour's and day's rows it belongs
//!   to (a day's row up to 96 times a day per series); without compaction each
//!   snapshot keeps one version of them per series.
//! - The daily level reads a whole day of 15-minute rows of a table at once.
//! - A bucket rolled up before `T` had the field `f` has no `f_*` columns (its
//!   `f_count` is NULL, not 0) until a write into it marks it stale again.
//! - Day boundaries that are not on a quarter hour (local mean time before time zones)
//!   put the quarter hour across them into the day it starts in.

mod compute;
mod marks;
mod task;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono_tz::Tz;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use storage::{ParsedLine, Row, Store, TimeRange, WriteObserver};
use tracing::{debug, info, warn};

use crate::bucket::{Bucketing, Width, parse_time_zone};
use crate::{Error, QueryConfig, Result};
use compute::NumericField;
use marks::{Marks, RangeSet};
pub use task::RollupRefresh;

/// Nanoseconds per minute.
const MINUTE_NS: i64 = 60_000_000_000;
/// How far back a refresh reads for the step into a bucket's first reading, and how
/// far after a write its marks reach: the longest gap a step is counted across
/// ([`CounterRules::ROLLUP`](crate::counter::CounterRules::ROLLUP)).
const LOOKBACK_NS: i64 = 60 * MINUTE_NS;
/// The longest time span one refresh step reads (plus the hour before it, of the
/// registers only): bounds the memory a refresh needs (10,000 devices writing every
/// 10 s: 3.6 million rows) and how long a shutdown waits for the step in progress.
const CHUNK_NS: i64 = LOOKBACK_NS;
/// How much of a table's quarter hours a refresh rolls up before it writes their hours
/// and days: each daily row is recomputed once per day's worth, not once per chunk.
const COARSE_FLUSH_NS: i64 = 24 * LOOKBACK_NS;
/// Chunks per table per refresh pass: one table's backfill does not hold up the
/// others' fresh buckets for longer than this many chunks.
const MAX_CHUNKS_PER_PASS: usize = 24;
/// Rollup rows per write request: far below the WAL's record limit.
const WRITE_ROWS: usize = 50_000;
/// How often, and how long apart, a write the store refuses as busy is retried.
const BUSY_RETRIES: u32 = 50;
const BUSY_WAIT: Duration = Duration::from_millis(100);
/// The table undecodable input goes to; not rolled up.
const REJECTED_TABLE: &str = "_rejected";
/// In the data directory: the zone of the daily rollups and the stale ranges not yet
/// refreshed (saved after each background pass and at shutdown).
const STATE_FILE: &str = "rollups.json";

/// The granularities of the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RollupLevel {
    /// 15 minutes, UTC-aligned (`T_15m`), from the raw rows.
    M15,
    /// One hour, UTC-aligned (`T_1h`), from the 15-minute rollups.
    H1,
    /// One local calendar day in `query.rollup_timezone` (`T_1d`), from the
    /// 15-minute rollups.
    D1,
}

impl RollupLevel {
    /// Every level, finest first.
    pub const ALL: [RollupLevel; 3] = [RollupLevel::M15, RollupLevel::H1, RollupLevel::D1];

    /// What the level's table names end with: `_15m`, `_1h` or `_1d`.
    pub fn suffix(self) -> &'static str {
        match self {
            RollupLevel::M15 => "_15m",
            RollupLevel::H1 => "_1h",
            RollupLevel::D1 => "_1d",
        }
    }
}

/// The rollup table of `base` at `level`: `meter` → `meter_15m`.
pub fn table_name(base: &str, level: RollupLevel) -> String {
    format!("{base}{}", level.suffix())
}

/// True for names that rollup tables have (ending `_15m`, `_1h` or `_1d`). Such tables
/// are never rolled up again, whoever wrote them.
pub fn is_rollup_table(name: &str) -> bool {
    RollupLevel::ALL
        .iter()
        .any(|level| name.ends_with(level.suffix()))
}

/// True for cumulative energy registers (fields named `*_wh`): their rollups have an
/// `<name>_energy` column, the sum of the steps of [`crate::counter::deltas`]. The one
/// place for this rule (the chart API asks it too).
pub fn is_counter(column: &str) -> bool {
    column.ends_with(compute::COUNTER_SUFFIX)
}

/// True for the tables that get rollups.
fn is_rolled_up(table: &str) -> bool {
    !is_rollup_table(table) && table != REJECTED_TABLE
}

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Tables with stale buckets that were worked on.
    pub tables: usize,
    /// Spans of at most an hour read from the raw tables.
    pub chunks: usize,
    /// Rows written to the `_15m` tables.
    pub rows_15m: usize,
    /// Rows written to the `_1h` tables.
    pub rows_1h: usize,
    /// Rows written to the `_1d` tables.
    pub rows_1d: usize,
    /// False when the refresh left stale buckets that have ended: it stopped early
    /// (shutdown), reached the per-pass chunk cap (one pass of the background
    /// refresh), or failed. Buckets that have not ended yet do not count: they are
    /// never refreshed before they end.
    pub complete: bool,
    /// How long the refresh took.
    pub elapsed: Duration,
    /// The current pass left ended buckets stale.
    more: bool,
}

/// The rollups of the store's tables: marks stale buckets as writes arrive (it is the
/// store's [`WriteObserver`]) and recomputes them on [`Rollups::refresh_now`] and in
/// the background task [`Rollups::start_refresh`] starts. Cheap to clone.
#[derive(Clone)]
pub struct Rollups {
    inner: Arc<Inner>,
}

impl fmt::Debug for Rollups {
    // Not the store's Debug: it would print the write buffer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollups")
            .field("data_dir", &self.inner.store.data_dir())
            .field("timezone", &self.inner.d1.tz())
            .field("interval", &self.inner.interval)
            .field("stale_tables", &self.inner.marks.pending().len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    /// Registered with the store. A separate object from `Rollups` so that the store
    /// does not own (through its observers) a handle to itself.
    marks: Arc<Marks>,
    m15: Bucketing,
    h1: Bucketing,
    d1: Bucketing,
    interval: Duration,
    /// One refresh at a time: the background task, `refresh_now` and the shutdown.
    refreshing: Mutex<()>,
    /// The state file names the zone of `d1`. Written before the first refresh
    /// rather than at start: a read-only store (`gridlake sql`) never writes it.
    zone_recorded: AtomicBool,
    /// The state file may list stale ranges: saved again after a refresh even when
    /// none are left, so that a restart does not redo them.
    marks_saved: AtomicBool,
}

/// The shape of [`STATE_FILE`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    /// The IANA name of `query.rollup_timezone` the daily rollups were computed in.
    #[serde(default)]
    timezone: Option<String>,
    /// Inclusive `[min, max]` nanosecond ranges by table.
    #[serde(default)]
    stale: BTreeMap<String, Vec<(i64, i64)>>,
}

impl WriteObserver for Rollups {
    fn written(&self, table: &str, batch: &RecordBatch) {
        self.inner.marks.written(table, batch);
    }
}

impl Rollups {
    /// Rollups over `store`: checks `query.rollup_timezone` (a valid zone, and the one
    /// the existing daily rollups were computed in), registers the stale-bucket marks
    /// with the store, marks what a restart may have left unrolled, and records the
    /// zone and the marks in `rollups.json`.
    pub(crate) fn new(store: Store, config: &QueryConfig) -> Result<Rollups> {
        // The SQL functions' lookup, so that a name one accepts the other does too.
        let tz = parse_time_zone(&config.rollup_timezone).map_err(|_| Error::UnknownTimezone {
            setting: "query.rollup_timezone",
            name: config.rollup_timezone.clone(),
        })?;
        let saved = read_state(&store.data_dir().join(STATE_FILE));
        check_timezone(&store, saved.as_ref(), tz)?;
        let zone_recorded = saved
            .as_ref()
            .and_then(|s| s.timezone.as_deref())
            .is_some_and(|recorded| parse_time_zone(recorded).is_ok_and(|r| r == tz));
        let bucketing =
            |width, tz| Bucketing::new(width, tz, None).expect("the rollup widths are positive");
        let marks = Arc::new(Marks::default());
        // Observe before looking at the tables: a write in between is marked twice
        // rather than not at all.
        store.observe(Arc::clone(&marks) as Arc<dyn WriteObserver>);
        let rollups = Rollups {
            inner: Arc::new(Inner {
                store,
                marks,
                m15: bucketing(
                    Width::Fixed {
                        nanos: 15 * MINUTE_NS,
                    },
                    Tz::UTC,
                ),
                h1: bucketing(Width::Fixed { nanos: LOOKBACK_NS }, Tz::UTC),
                d1: bucketing(Width::Days(1), tz),
                interval: config.rollup_refresh_interval,
                refreshing: Mutex::new(()),
                zone_recorded: AtomicBool::new(zone_recorded),
                marks_saved: AtomicBool::new(true),
            }),
        };
        rollups.mark_after_restart(saved);
        Ok(rollups)
    }

    /// Recomputes every stale bucket that has ended now, on this thread, and returns
    /// what it did. Buckets that could not be refreshed stay stale (the error says
    /// why); so do buckets that have not ended yet (the current quarter hour, and
    /// any with future times): they are rolled up once they have.
    pub fn refresh_now(&self) -> Result<RefreshStats> {
        self.refresh_at(now_ns())
    }

    /// [`Rollups::refresh_now`] as if the time were `now_ns` (UTC nanoseconds): only
    /// quarter hours that end at or before it are refreshed. For tests and tools that
    /// control the time; the background refresh uses the system clock.
    pub fn refresh_at(&self, now_ns: i64) -> Result<RefreshStats> {
        self.refresh(now_ns, &|| false, None, true)
    }

    /// Times whose rollups are out of date, by table: inclusive ranges of row times
    /// (the next refresh covers their whole 15-minute buckets). Clones every range:
    /// to ask about one table and window, use [`Rollups::first_stale`].
    pub fn stale(&self) -> BTreeMap<String, Vec<TimeRange>> {
        self.inner
            .marks
            .pending()
            .into_iter()
            .map(|(table, ranges)| {
                let ranges = ranges
                    .ranges()
                    .map(|(min, max)| TimeRange { min, max })
                    .collect();
                (table, ranges)
            })
            .collect()
    }

    /// The earliest time in `[from, to)` (UTC nanoseconds) whose rollups of the raw
    /// table `table` are out of date, including what a refresh running now has taken;
    /// `None` when every rollup bucket of the window is up to date. Every rollup
    /// bucket from the one holding it on may be stale: read those from `table`.
    /// Logarithmic in the number of stale ranges, copies nothing.
    pub fn first_stale(&self, table: &str, from: i64, to: i64) -> Option<i64> {
        self.inner.marks.first_stale(table, from, to)
    }

    /// Marks `[from, to]` (inclusive, UTC nanoseconds) of the raw table `table` stale,
    /// as it is (without the hour after a write's marks): the next refresh recomputes
    /// every rollup bucket holding a time of it from the rows left. For deletes: a
    /// bucket that lost some of its rows (the ones holding the ends of the deleted
    /// range, and the hour after it whose energy steps came from deleted readings).
    /// Saved to `rollups.json` at once, so a crash before the refresh keeps the marks.
    pub fn mark_stale(&self, table: &str, from: i64, to: i64) {
        if !is_rolled_up(table) || from > to {
            return;
        }
        self.inner.marks.mark(table, from, to);
        if let Err(e) = self.save_stale() {
            warn!(%table, error = %e, "cannot save the stale rollup buckets");
        }
    }

    /// Runs `f` while no refresh runs, waiting for a running one to finish. A delete
    /// of raw rows and their rollup rows runs here: a refresh that read the raw rows
    /// before the delete would otherwise write rollup rows of them after it, and those
    /// would stay (a refresh writes rows for the series it finds, it does not remove
    /// the others').
    pub fn with_refresh_paused<R>(&self, f: impl FnOnce() -> R) -> R {
        let _no_refresh = self.inner.refreshing.lock();
        f()
    }

    /// How the rollups at `level` bucket time: 15 minutes and one hour in UTC, one
    /// local calendar day in `query.rollup_timezone` (default origins). A rollup row's
    /// `time` is `bucketing(level).start(t)` of the rows it covers.
    pub fn bucketing(&self, level: RollupLevel) -> Bucketing {
        match level {
            RollupLevel::M15 => self.inner.m15,
            RollupLevel::H1 => self.inner.h1,
            RollupLevel::D1 => self.inner.d1,
        }
    }

    /// Starts the background refresh, every `query.rollup_refresh_interval` (none when
    /// it is zero). Stop it with [`RollupRefresh::shutdown`] before the store shuts
    /// down.
    pub fn start_refresh(&self) -> Result<RollupRefresh> {
        RollupRefresh::start(self.clone(), self.inner.interval)
    }

    fn state_path(&self) -> PathBuf {
        self.inner.store.data_dir().join(STATE_FILE)
    }

    /// Marks what may be missing from the rollups after a restart.
    fn mark_after_restart(&self, saved: Option<SavedState>) {
        let store = &self.inner.store;
        let marks = &self.inner.marks;
        for table in store.table_names() {
            if !is_rolled_up(&table) {
                continue;
            }
            let Some(extent) = stored_extent(store, &table) else {
                continue;
            };
            marks.raise_high_water(&table, extent.max);
            // Rows that came back from the WAL may never have been rolled up.
            if let Some(replayed) = store.unpersisted_time_range(&table) {
                marks.mark_write(&table, replayed.min, replayed.max);
            }
            // The tail after the newest 15-minute rollup: rows persisted before a
            // crash that the refresh had not reached. The whole table when a level is
            // missing: the first start with rollups, or rollup tables removed to be
            // rebuilt (the hourly and daily rows come from the 15-minute ones).
            let levels: Vec<Option<TimeRange>> = RollupLevel::ALL
                .iter()
                .map(|&level| stored_extent(store, &table_name(&table, level)))
                .collect();
            let from = match levels[..] {
                [Some(rolled), Some(_), Some(_)] => rolled.max,
                _ => extent.min,
            };
            if from <= extent.max {
                marks.mark(&table, from, extent.max);
            }
        }
        for (table, ranges) in saved.map(|s| s.stale).unwrap_or_default() {
            for (min, max) in ranges {
                marks.mark(&table, min, max);
            }
        }
    }

    /// Writes the zone of the daily rollups and the stale ranges (including those a
    /// refresh still running has taken) to the data directory for the next start.
    /// Replaced atomically; not fsynced (losing it loses marks, not data; the zone is
    /// written again at every start).
    fn save_stale(&self) -> Result<()> {
        let path = self.state_path();
        let error = |source| Error::RollupState {
            path: path.clone(),
            source,
        };
        let state = SavedState {
            timezone: Some(self.inner.d1.tz().name().to_owned()),
            stale: self
                .inner
                .marks
                .pending()
                .into_iter()
                .map(|(table, ranges)| (table, ranges.ranges().collect()))
                .collect(),
        };
        let any_marks = !state.stale.is_empty();
        let bytes = serde_json::to_vec(&state).map_err(|e| error(e.into()))?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, bytes).map_err(error)?;
        std::fs::rename(&temporary, &path).map_err(error)?;
        self.inner.zone_recorded.store(true, Ordering::Relaxed);
        self.inner.marks_saved.store(any_marks, Ordering::Relaxed);
        Ok(())
    }

    /// Saves the marks after a refresh when there are any, or the file lists some
    /// that are gone: a crash then loses at most the marks made since.
    fn save_after_refresh(&self) {
        let any_marks = !self.inner.marks.pending().is_empty();
        if (any_marks || self.inner.marks_saved.load(Ordering::Relaxed))
            && let Err(e) = self.save_stale()
        {
            warn!(error = %e, "cannot save the stale rollup buckets");
        }
    }

    /// Refreshes the stale quarter hours that end at or before `now_ns`, in passes
    /// of at most [`MAX_CHUNKS_PER_PASS`] chunks per table: one pass, or (`until_done`)
    /// passes until nothing that has ended is left, `stop` says so, `deadline` passes
    /// (both checked between chunks) or a pass fails.
    fn refresh(
        &self,
        now_ns: i64,
        stop: &dyn Fn() -> bool,
        deadline: Option<Instant>,
        until_done: bool,
    ) -> Result<RefreshStats> {
        let _one_at_a_time = self.inner.refreshing.lock();
        // The zone goes on record before the first daily row of it is written.
        if !self.inner.zone_recorded.load(Ordering::Relaxed) {
            self.save_stale()?;
        }
        let started = Instant::now();
        let halted = || stop() || deadline.is_some_and(|d| Instant::now() >= d);
        let mut stats = RefreshStats::default();
        loop {
            let pass = self.pass(now_ns, &halted, &mut stats);
            self.save_after_refresh();
            stats.complete = pass.is_ok() && !stats.more;
            pass?;
            if stats.complete || !until_done || halted() {
                break;
            }
            stats.more = false;
        }
        stats.elapsed = started.elapsed();
        if stats.tables > 0 {
            debug!(?stats, "rollups refreshed");
        }
        Ok(stats)
    }

    /// One pass over the stale tables; sets `stats.more` when it left ended buckets
    /// stale (the chunk cap, or halted).
    fn pass(&self, now_ns: i64, halted: &dyn Fn() -> bool, stats: &mut RefreshStats) -> Result<()> {
        // Quarter hours from this one on have not ended.
        let open_from = self.inner.m15.start(now_ns);
        let mut undone = BTreeMap::new();
        let mut first_error = None;
        for (table, ranges) in self.inner.marks.take() {
            // A failed table does not stop the others: its error may be its own (a
            // column a rollup row cannot have).
            if halted() {
                stats.more |= ranges.ranges().any(|(min, _)| min < open_from);
                undone.insert(table, ranges);
                continue;
            }
            let (left, result) = self.refresh_table(&table, &ranges, open_from, halted, stats);
            if !left.is_empty() {
                undone.insert(table.clone(), left);
            }
            if let Err(e) = result {
                warn!(%table, error = %e, "rollup refresh failed; its buckets stay stale");
                first_error.get_or_insert(e);
            }
        }
        self.inner.marks.finish(undone);
        first_error.map_or(Ok(()), Err)
    }

    /// Refreshes the stale `ranges` of one table that end before `open_from` (at most
    /// [`MAX_CHUNKS_PER_PASS`] chunks); returns what is left stale.
    fn refresh_table(
        &self,
        table: &str,
        ranges: &RangeSet,
        open_from: i64,
        halted: &dyn Fn() -> bool,
        stats: &mut RefreshStats,
    ) -> (RangeSet, Result<()>) {
        let inner = &self.inner;
        let Some(schema) = inner.store.table_schema(table) else {
            return (RangeSet::default(), Ok(()));
        };
        let fields = compute::numeric_fields(&schema);
        if fields.is_empty() {
            return (RangeSet::default(), Ok(()));
        }
        let tags = compute::tag_names(&schema);
        let mut left = RangeSet::default();
        // Whole 15-minute buckets that have ended, in runs split into chunks; the
        // open ones stay marked as they are (the chart API reads them raw) and are
        // rolled up once, when they have ended, rather than at every refresh.
        let mut runs = RangeSet::default();
        for (min, max) in ranges.ranges() {
            if max >= open_from {
                left.insert(min.max(open_from), max);
            }
            if min >= open_from {
                continue;
            }
            let max = max.min(open_from - 1);
            let start = inner.m15.start(min);
            let end = inner.m15.next(inner.m15.start(max));
            runs.insert(start, end - 1);
        }
        let chunks: Vec<(i64, i64)> = runs
            .ranges()
            .flat_map(|(min, max)| split(min, max.saturating_add(1), CHUNK_NS))
            .collect();
        if !chunks.is_empty() {
            stats.tables += 1;
        }
        // Quarter hours refreshed whose hours and days are not yet: flushed every day's
        // worth (so an interrupted backfill keeps its progress) and at the end (so a
        // refresh of scattered buckets reads each day's 15-minute rows once).
        let mut coarse = RangeSet::default();
        let mut coarse_ns = 0;
        let mut result = Ok(());
        for (i, &(start, end)) in chunks.iter().enumerate() {
            if i >= MAX_CHUNKS_PER_PASS || halted() {
                chunks[i..].iter().for_each(|&(s, e)| left.insert(s, e - 1));
                stats.more = true;
                break;
            }
            match self.refresh_raw(table, &schema, &tags, &fields, start, end) {
                Ok(rows) => stats.rows_15m += rows,
                Err(e) => {
                    chunks[i..].iter().for_each(|&(s, e)| left.insert(s, e - 1));
                    result = Err(e);
                    break;
                }
            }
            stats.chunks += 1;
            coarse.insert(start, end - 1);
            coarse_ns += end - start;
            if coarse_ns >= COARSE_FLUSH_NS && !halted() {
                if let Err(e) = self.refresh_coarse(table, &fields, &coarse, stats) {
                    // Marked again as a whole: redoing the quarter hours is harmless
                    // and redoes the coarser levels.
                    coarse.ranges().for_each(|(min, max)| left.insert(min, max));
                    chunks[i + 1..]
                        .iter()
                        .for_each(|&(s, e)| left.insert(s, e - 1));
                    return (left, Err(e));
                }
                coarse = RangeSet::default();
                coarse_ns = 0;
            }
        }
        // Stopped (a shutdown's deadline): the hours and days are left for the next
        // refresh, marked with their quarter hours (redone, harmlessly), so the stop
        // waits for one chunk only.
        if halted() {
            coarse.ranges().for_each(|(min, max)| left.insert(min, max));
            stats.more |= !coarse.is_empty();
        } else if let Err(e) = self.refresh_coarse(table, &fields, &coarse, stats) {
            coarse.ranges().for_each(|(min, max)| left.insert(min, max));
            result = result.and(Err(e));
        }
        (left, result)
    }

    /// Recomputes the 15-minute rows of `[start, end)` from the raw table.
    fn refresh_raw(
        &self,
        table: &str,
        schema: &arrow::datatypes::Schema,
        tags: &[String],
        fields: &[NumericField],
        start: i64,
        end: i64,
    ) -> Result<usize> {
        let store = &self.inner.store;
        let columns = |names: Vec<&str>| -> Result<Vec<usize>> {
            let mut projection: Vec<usize> = std::iter::once(storage::TIME_COLUMN)
                .chain(tags.iter().map(String::as_str))
                .chain(names)
                .map(|name| schema.index_of(name).map_err(|e| data_error(table, e)))
                .collect::<Result<_>>()?;
            projection.sort_unstable();
            Ok(projection)
        };
        // The hour before only gives the registers' steps into the chunk's first
        // readings: only they are read there, and nothing without a register.
        let mut batches = Vec::new();
        if fields.iter().any(|f| f.counter) {
            let counters = columns(
                fields
                    .iter()
                    .filter(|f| f.counter)
                    .map(|f| f.name.as_str())
                    .collect(),
            )?;
            let before = TimeRange {
                min: start.saturating_sub(LOOKBACK_NS),
                max: start - 1,
            };
            batches = store
                .scan(table, Some(&counters), before)
                .map_err(|e| store_error(table, e))?;
        }
        let all = columns(fields.iter().map(|f| f.name.as_str()).collect())?;
        let range = TimeRange {
            min: start,
            max: end - 1,
        };
        batches.extend(
            store
                .scan(table, Some(&all), range)
                .map_err(|e| store_error(table, e))?,
        );
        let rows = compute::from_raw(&batches, tags, fields, &self.inner.m15, start, end)
            .map_err(|e| data_error(table, e))?;
        self.write(table, &table_name(table, RollupLevel::M15), rows)
    }

    /// Recomputes the hourly and daily rows of the hours and days that `done` (whole
    /// quarter hours) touches.
    fn refresh_coarse(
        &self,
        table: &str,
        fields: &[NumericField],
        done: &RangeSet,
        stats: &mut RefreshStats,
    ) -> Result<()> {
        let inner = &self.inner;
        let mut hours = RangeSet::default();
        let mut days = RangeSet::default();
        for (min, max) in done.ranges() {
            hours.insert(inner.h1.start(min), inner.h1.next(inner.h1.start(max)) - 1);
            days.insert(inner.d1.start(min), inner.d1.next(inner.d1.start(max)) - 1);
        }
        for (min, max) in hours.ranges() {
            for (start, end) in split(min, max + 1, CHUNK_NS) {
                stats.rows_1h += self.refresh_level(table, fields, RollupLevel::H1, start, end)?;
            }
        }
        for (min, max) in days.ranges() {
            let mut day = min;
            while day <= max {
                let next = inner.d1.next(day);
                stats.rows_1d += self.refresh_level(table, fields, RollupLevel::D1, day, next)?;
                day = next;
            }
        }
        Ok(())
    }

    /// Recomputes the `level` rows of `[start, end)` (whole buckets) from the 15-minute
    /// table; returns the rows written.
    fn refresh_level(
        &self,
        table: &str,
        fields: &[NumericField],
        level: RollupLevel,
        start: i64,
        end: i64,
    ) -> Result<usize> {
        let source = table_name(table, RollupLevel::M15);
        let store = &self.inner.store;
        // No 15-minute table: the raw rows had no series with a row to roll up yet.
        let Some(schema) = store.table_schema(&source) else {
            return Ok(0);
        };
        let tags = compute::tag_names(&schema);
        let range = TimeRange {
            min: start,
            max: end - 1,
        };
        let batches = store
            .scan(&source, None, range)
            .map_err(|e| store_error(&source, e))?;
        let bucketing = match level {
            RollupLevel::M15 => &self.inner.m15,
            RollupLevel::H1 => &self.inner.h1,
            RollupLevel::D1 => &self.inner.d1,
        };
        let rows = compute::from_rollup(&batches, &tags, fields, bucketing, start, end)
            .map_err(|e| data_error(&source, e))?;
        self.write(table, &table_name(table, level), rows)
    }

    /// Writes rollup rows into `target` and waits until they are durable; returns how
    /// many the store took.
    fn write(&self, table: &str, target: &str, rows: Vec<Row>) -> Result<usize> {
        let store = &self.inner.store;
        let mut written = 0;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let lines: Vec<ParsedLine> = rows
                .by_ref()
                .take(WRITE_ROWS)
                .enumerate()
                .map(|(i, row)| ParsedLine {
                    line: i + 1,
                    table: target.to_owned(),
                    row,
                })
                .collect();
            let (batch, errors) = store.validate(lines);
            if let Some(first) = errors.first() {
                // A column of T whose name a rollup column also has, such as a tag
                // `power_w_sum`: the schema cannot hold both.
                warn!(%table, %target, refused = errors.len(), %first, "rollup rows refused by the store");
            }
            if batch.is_empty() {
                continue;
            }
            let rows_in_batch = batch.row_count();
            let mut write = store.prepare(batch).map_err(|e| store_error(target, e))?;
            let mut attempts = 0;
            let receipt = loop {
                match store.try_submit(write, true) {
                    Ok(receipt) => break receipt,
                    // Ingest is busy: rollups can wait a little, clients should not.
                    Err((storage::Error::Busy, back)) if attempts < BUSY_RETRIES => {
                        attempts += 1;
                        write = back;
                        std::thread::sleep(BUSY_WAIT);
                    }
                    Err((e, _)) => return Err(store_error(target, e)),
                }
            };
            receipt
                .wait_blocking()
                .map_err(|e| store_error(target, e))?;
            written += rows_in_batch;
        }
        Ok(written)
    }
}

/// The system time in UTC nanoseconds (0 before 1970, `i64::MAX` after 2262).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The saved state, or None when there is none (first start) or it is unreadable
/// (logged: its marks are lost, and the zone is recorded again).
fn read_state(path: &std::path::Path) -> Option<SavedState> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<SavedState>(&bytes) {
            Ok(saved) => Some(saved),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "ignoring an unreadable rollup state file");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the rollup state file");
            None
        }
    }
}

/// Refuses a `query.rollup_timezone` other than the one recorded while daily rollups
/// exist: days of the old zone start at other times than the new ones, so last write
/// wins would not replace them and sums over the table would count them twice.
fn check_timezone(store: &Store, saved: Option<&SavedState>, tz: Tz) -> Result<()> {
    let Some(recorded) = saved.and_then(|s| s.timezone.as_deref()) else {
        return Ok(());
    };
    if parse_time_zone(recorded).is_ok_and(|r| r == tz) {
        return Ok(());
    }
    let daily: Vec<String> = store
        .table_names()
        .into_iter()
        .filter(|name| {
            name.strip_suffix(RollupLevel::D1.suffix())
                .is_some_and(is_rolled_up)
        })
        .collect();
    if daily.is_empty() {
        return Ok(());
    }
    Err(Error::RollupTimezoneChanged {
        configured: tz.name().to_owned(),
        recorded: recorded.to_owned(),
        tables: daily.join(", "),
        data_dir: store.data_dir().to_path_buf(),
    })
}

/// `[start, end)` in pieces of at most `width`.
fn split(start: i64, end: i64, width: i64) -> impl Iterator<Item = (i64, i64)> {
    let mut at = start;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let piece = (at, at.saturating_add(width).min(end));
            at = piece.1;
            piece
        })
    })
}

/// The earliest and latest row time of `table`, from the catalog's file ranges and
/// the rows not yet in Parquet, without reading any rows.
fn stored_extent(store: &Store, table: &str) -> Option<TimeRange> {
    store
        .parquet_files(table)
        .iter()
        .map(|f| f.time_range())
        .chain(store.unpersisted_time_range(table))
        .reduce(|a, b| TimeRange {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
        })
}

fn store_error(table: &str, source: storage::Error) -> Error {
    Error::RollupStore {
        table: table.to_owned(),
        source,
    }
}

fn data_error(table: &str, source: ArrowError) -> Error {
    Error::RollupData {
        table: table.to_owned(),
        source,
    }
}

/// Logs what a refresh that ran at a moment worth noting did.
fn log_stats(context: &'static str, stats: &RefreshStats) {
    info!(
        context,
        tables = stats.tables,
        chunks = stats.chunks,
        rows_15m = stats.rows_15m,
        rows_1h = stats.rows_1h,
        rows_1d = stats.rows_1d,
        complete = stats.complete,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "rollups refreshed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_tables_are_named_by_suffix() {
        assert_eq!(table_name("meter", RollupLevel::M15), "meter_15m");
        assert_eq!(table_name("meter", RollupLevel::H1), "meter_1h");
        assert_eq!(table_name("meter", RollupLevel::D1), "meter_1d");
        for level in RollupLevel::ALL {
            assert!(is_rollup_table(&table_name("meter", level)));
            assert!(!is_rolled_up(&table_name("meter", level)));
        }
        assert!(!is_rollup_table("meter"));
        assert!(!is_rollup_table("meter_1"));
        assert!(!is_rollup_table("meter_15min"));
        assert!(is_rolled_up("meter"));
        assert!(!is_rolled_up(REJECTED_TABLE));
    }

    /// 2024-01-01T00:00:00Z.
    const JAN1: i64 = 1_704_067_200_000_000_000;

    fn write(store: &Store, table: &str, times: impl Iterator<Item = i64>) {
        let lines = times
            .enumerate()
            .map(|(i, time)| ParsedLine {
                line: i + 1,
                table: table.to_owned(),
                row: Row {
                    time,
                    tags: vec![("device_id".to_owned(), "m1".to_owned())],
                    fields: vec![("energy_wh".to_owned(), storage::FieldValue::F64(i as f64))],
                },
            })
            .collect();
        let (batch, errors) = store.validate(lines);
        assert!(errors.is_empty(), "{errors:?}");
        store
            .submit(batch, true)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
    }

    #[test]
    fn a_pass_caps_the_chunks_per_table_so_a_backfill_does_not_starve_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), storage::StoreConfig::default()).expect("store");
        let rollups = Rollups::new(store.clone(), &QueryConfig::default()).expect("rollups");
        // "a": 30 hours, a reading every 30 minutes; "b": one reading.
        write(&store, "a", (0..60).map(|i| JAN1 + i * 30 * MINUTE_NS));
        write(&store, "b", std::iter::once(JAN1));
        let now = JAN1 + 100 * LOOKBACK_NS;
        let stats = rollups
            .refresh(now, &|| false, None, false)
            .expect("one pass");
        assert!(!stats.complete);
        assert_eq!(stats.chunks, MAX_CHUNKS_PER_PASS + 1);
        let after_pass = JAN1 + MAX_CHUNKS_PER_PASS as i64 * CHUNK_NS;
        assert_eq!(rollups.first_stale("a", 0, i64::MAX), Some(after_pass));
        assert_eq!(rollups.first_stale("b", 0, i64::MAX), None);
        // The hours and days of the refreshed chunks were written in the same pass.
        assert!(stats.rows_1h >= MAX_CHUNKS_PER_PASS && stats.rows_1d >= 2);

        let stats = rollups.refresh_at(now).expect("the rest");
        assert!(stats.complete);
        assert_eq!(stats.chunks, 30 - MAX_CHUNKS_PER_PASS);
        assert!(rollups.stale().is_empty());
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn a_deadline_stops_between_chunks_and_leaves_the_rest_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), storage::StoreConfig::default()).expect("store");
        let rollups = Rollups::new(store.clone(), &QueryConfig::default()).expect("rollups");
        write(&store, "a", (0..20).map(|i| JAN1 + i * 30 * MINUTE_NS));
        let now = JAN1 + 100 * LOOKBACK_NS;
        // Passed already: nothing is started, and everything stays stale.
        let stats = rollups
            .refresh(now, &|| false, Some(Instant::now()), true)
            .expect("refresh");
        assert!(!stats.complete);
        assert_eq!(stats.chunks, 0);
        assert_eq!(rollups.first_stale("a", 0, i64::MAX), Some(JAN1));
        // Stopped after the first chunk (asked before the table and before each
        // chunk): its hours and days are left stale with it.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let stop = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2;
        let stats = rollups.refresh(now, &stop, None, true).expect("refresh");
        assert!(!stats.complete);
        assert_eq!((stats.chunks, stats.rows_1h), (1, 0));
        assert_eq!(rollups.first_stale("a", 0, i64::MAX), Some(JAN1));
        let stats = rollups.refresh_at(now).expect("the rest");
        assert!(stats.complete);
        assert_eq!(stats.chunks, 10);
        assert!(rollups.stale().is_empty());
        store.shutdown().expect("shutdown");
    }

    #[test]
    fn split_covers_the_range_in_pieces() {
        assert_eq!(
            split(0, 25, 10).collect::<Vec<_>>(),
            [(0, 10), (10, 20), (20, 25)]
        );
        assert_eq!(split(0, 10, 10).collect::<Vec<_>>(), [(0, 10)]);
        assert_eq!(split(5, 5, 10).count(), 0);
    }
}

//! Which times of which tables need their rollups recomputed: the write observer that
//! marks them, and the set of time ranges it keeps.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{max, min};
use storage::{TIME_COLUMN, WriteObserver};

use super::{LOOKBACK_NS, is_rolled_up};

/// Disjoint inclusive ranges of nanosecond times, merged on insert. A whole year of
/// late writes in one batch is one entry, so marking costs the same whatever a batch
/// spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RangeSet(BTreeMap<i64, i64>);

impl RangeSet {
    /// Adds `[min, max]` (inclusive), merging it with the ranges it overlaps or touches.
    pub(super) fn insert(&mut self, mut min: i64, mut max: i64) {
        if min > max {
            return;
        }
        let low = min.saturating_sub(1);
        let high = max.saturating_add(1);
        // Ranges are disjoint and sorted, so their ends fall as their starts do: walking
        // back from the last range starting at or before `high`, the ones that reach
        // `low` come first.
        let merged: Vec<(i64, i64)> = self
            .0
            .range(..=high)
            .rev()
            .take_while(|&(_, &end)| end >= low)
            .map(|(&start, &end)| (start, end))
            .collect();
        for (start, end) in merged {
            self.0.remove(&start);
            min = min.min(start);
            max = max.max(end);
        }
        self.0.insert(min, max);
    }

    /// The ranges, ascending.
    pub(super) fn ranges(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().map(|(&start, &end)| (start, end))
    }

    /// The earliest time in `[from, to)` that some range covers.
    pub(super) fn first_in(&self, from: i64, to: i64) -> Option<i64> {
        if from >= to {
            return None;
        }
        // The range starting at or before `from` covers it if it reaches it; else the
        // first range starting after it, if that starts before `to`.
        if let Some((_, &end)) = self.0.range(..=from).next_back()
            && end >= from
        {
            return Some(from);
        }
        self.0
            .range(from.saturating_add(1)..)
            .next()
            .map(|(&start, _)| start)
            .filter(|&start| start < to)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn extend(&mut self, other: &RangeSet) {
        for (start, end) in other.ranges() {
            self.insert(start, end);
        }
    }
}

/// What the marks know of one table.
#[derive(Debug, Default)]
struct TableMarks {
    /// The latest row time written to the table, as far as known: marks of a late
    /// write reach up to an hour past it, but never past the newest data.
    high_water: Option<i64>,
    /// Times whose rollups are out of date.
    stale: RangeSet,
}

#[derive(Debug, Default)]
struct State {
    tables: HashMap<String, TableMarks>,
    /// What the running refresh took, until it finishes: kept so that a shutdown that
    /// cannot wait for it still saves these times as stale.
    in_flight: HashMap<String, RangeSet>,
}

/// The stale times of every rolled-up table. Registered with the store as a
/// [`WriteObserver`]: it sees every write before its acknowledgement, so a client that
/// got its ack knows the next refresh includes its rows.
#[derive(Debug, Default)]
pub(super) struct Marks {
    state: Mutex<State>,
}

impl WriteObserver for Marks {
    fn written(&self, table: &str, batch: &RecordBatch) {
        if !is_rolled_up(table) {
            return;
        }
        let Some(times) = batch
            .column_by_name(TIME_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return;
        };
        // The only per-row work on the writer thread: one min and one max pass.
        if let (Some(first), Some(last)) = (min(times), max(times)) {
            self.mark_write(table, first, last);
        }
    }
}

impl Marks {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock left valid (if possibly partial)
        // marks: keep using them rather than stopping every write.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks what rows at times `[first, last]` of `table` change: their own buckets,
    /// and up to an hour after them (a late reading changes the energy step of the
    /// series' next reading, which counts only within an hour), but not past the newest
    /// row of the table.
    pub(super) fn mark_write(&self, table: &str, first: i64, last: i64) {
        let mut state = self.lock();
        // On the writer thread: no allocation for the name but at a table's first write.
        if !state.tables.contains_key(table) {
            state.tables.insert(table.to_owned(), TableMarks::default());
        }
        let Some(marks) = state.tables.get_mut(table) else {
            return;
        };
        let high_water = marks.high_water.map_or(last, |h| h.max(last));
        marks.high_water = Some(high_water);
        let end = last.saturating_add(LOOKBACK_NS).min(high_water);
        marks.stale.insert(first, end);
    }

    /// Marks `[first, last]` of `table` stale as it is, without the hour after.
    pub(super) fn mark(&self, table: &str, first: i64, last: i64) {
        let mut state = self.lock();
        state
            .tables
            .entry(table.to_owned())
            .or_default()
            .stale
            .insert(first, last);
    }

    /// Raises what is known of the newest row of `table` (at start, from the files).
    pub(super) fn raise_high_water(&self, table: &str, time: i64) {
        let mut state = self.lock();
        let marks = state.tables.entry(table.to_owned()).or_default();
        marks.high_water = Some(marks.high_water.map_or(time, |h| h.max(time)));
    }

    /// Takes every stale range for a refresh, by table name; they count as in flight
    /// until [`Marks::finish`].
    pub(super) fn take(&self) -> BTreeMap<String, RangeSet> {
        let mut state = self.lock();
        let mut taken = BTreeMap::new();
        for (table, marks) in &mut state.tables {
            if !marks.stale.is_empty() {
                taken.insert(table.clone(), std::mem::take(&mut marks.stale));
            }
        }
        state.in_flight = taken
            .iter()
            .map(|(table, ranges)| (table.clone(), ranges.clone()))
            .collect();
        taken
    }

    /// Ends a refresh: what it did not do is stale again.
    pub(super) fn finish(&self, undone: BTreeMap<String, RangeSet>) {
        let mut state = self.lock();
        state.in_flight.clear();
        for (table, ranges) in undone {
            state.tables.entry(table).or_default().stale.extend(&ranges);
        }
    }

    /// The earliest stale time of `table` in `[from, to)`, including what a running
    /// refresh has taken; copies nothing.
    pub(super) fn first_stale(&self, table: &str, from: i64, to: i64) -> Option<i64> {
        let state = self.lock();
        let marked = state
            .tables
            .get(table)
            .and_then(|m| m.stale.first_in(from, to));
        let taken = state
            .in_flight
            .get(table)
            .and_then(|r| r.first_in(from, to));
        marked.into_iter().chain(taken).min()
    }

    /// Stale ranges by table, including what a running refresh has taken.
    pub(super) fn pending(&self) -> BTreeMap<String, RangeSet> {
        let state = self.lock();
        let mut pending: BTreeMap<String, RangeSet> = BTreeMap::new();
        for (table, marks) in &state.tables {
            if !marks.stale.is_empty() {
                pending
                    .entry(table.clone())
                    .or_default()
                    .extend(&marks.stale);
            }
        }
        for (table, ranges) in &state.in_flight {
            pending.entry(table.clone()).or_default().extend(ranges);
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn set(ranges: &[(i64, i64)]) -> RangeSet {
        let mut s = RangeSet::default();
        for &(a, b) in ranges {
            s.insert(a, b);
        }
        s
    }

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let s = set(&[(10, 20), (30, 40), (21, 25), (50, 60), (0, 2)]);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            [(0, 2), (10, 25), (30, 40), (50, 60)]
        );
        let s = set(&[(10, 20), (30, 40), (50, 60), (15, 55)]);
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(10, 60)]);
        let s = set(&[(10, 20), (12, 13), (5, 5)]);
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(5, 5), (10, 20)]);
        let s = set(&[(i64::MIN, 0), (1, i64::MAX)]);
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(i64::MIN, i64::MAX)]);
        assert!(set(&[(5, 4)]).is_empty());
    }

    #[test]
    fn first_in_finds_the_earliest_covered_time_of_a_window() {
        let s = set(&[(10, 20), (30, 40)]);
        assert_eq!(s.first_in(0, 10), None);
        assert_eq!(s.first_in(0, 11), Some(10));
        assert_eq!(s.first_in(15, 100), Some(15));
        assert_eq!(s.first_in(20, 21), Some(20));
        assert_eq!(s.first_in(21, 30), None);
        assert_eq!(s.first_in(21, 31), Some(30));
        assert_eq!(s.first_in(41, 100), None);
        assert_eq!(s.first_in(15, 15), None);
        let marks = Marks::default();
        marks.mark("meter", 10, 20);
        marks.take();
        marks.mark("meter", 5, 6);
        // Taken by a refresh still counts, as does what was marked since.
        assert_eq!(marks.first_stale("meter", 0, 100), Some(5));
        assert_eq!(marks.first_stale("meter", 7, 100), Some(10));
        assert_eq!(marks.first_stale("meter", 21, 100), None);
        assert_eq!(marks.first_stale("other", 0, 100), None);
    }

    #[test]
    fn ranges_match_a_bitmap_on_random_inserts() {
        // A small exhaustive model: the set covers exactly the union of the inserts.
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 100) as i64
        };
        for _ in 0..200 {
            let mut s = RangeSet::default();
            let mut model = [false; 100];
            for _ in 0..6 {
                let (a, b) = (next(), next());
                let (a, b) = (a.min(b), a.max(b));
                s.insert(a, b);
                model[a as usize..=b as usize].fill(true);
            }
            let mut covered = [false; 100];
            let mut previous_end = None;
            for (a, b) in s.ranges() {
                assert!(previous_end.is_none_or(|e: i64| a > e + 1), "not merged");
                covered[a as usize..=b as usize].fill(true);
                previous_end = Some(b);
            }
            assert_eq!(covered, model);
        }
    }

    fn times(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            TIME_COLUMN,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )]));
        let column = TimestampNanosecondArray::from(values.to_vec()).with_timezone("UTC");
        RecordBatch::try_new(schema, vec![Arc::new(column)]).expect("batch")
    }

    #[test]
    fn a_write_marks_up_to_an_hour_after_it_but_not_past_the_newest_row() {
        let marks = Marks::default();
        marks.written("meter", &times(&[5 * LOOKBACK_NS, 10 * LOOKBACK_NS]));
        // The newest row so far: nothing after it to change.
        assert_eq!(
            marks.pending()["meter"].ranges().collect::<Vec<_>>(),
            [(5 * LOOKBACK_NS, 10 * LOOKBACK_NS)]
        );
        // A late write: its next hour may hold the next readings.
        marks.written("meter", &times(&[LOOKBACK_NS, LOOKBACK_NS + 7]));
        assert_eq!(
            marks.pending()["meter"].ranges().collect::<Vec<_>>(),
            [
                (LOOKBACK_NS, 2 * LOOKBACK_NS + 7),
                (5 * LOOKBACK_NS, 10 * LOOKBACK_NS)
            ]
        );
        // Within the last hour: capped at the newest row.
        marks.written("meter", &times(&[10 * LOOKBACK_NS - 3]));
        assert_eq!(
            marks.pending()["meter"].ranges().last(),
            Some((5 * LOOKBACK_NS, 10 * LOOKBACK_NS))
        );
    }

    #[test]
    fn rollup_tables_and_rejected_rows_are_not_marked() {
        let marks = Marks::default();
        for table in ["meter_15m", "meter_1h", "meter_1d", "_rejected"] {
            marks.written(table, &times(&[1, 2]));
        }
        assert!(marks.pending().is_empty());
    }

    #[test]
    fn taken_ranges_stay_pending_until_finished_and_undone_ones_come_back() {
        let marks = Marks::default();
        marks.mark("meter", 1, 5);
        let taken = marks.take();
        assert_eq!(taken["meter"].ranges().collect::<Vec<_>>(), [(1, 5)]);
        assert_eq!(
            marks.pending()["meter"].ranges().collect::<Vec<_>>(),
            [(1, 5)]
        );
        marks.mark("meter", 20, 30);
        assert_eq!(
            marks.pending()["meter"].ranges().collect::<Vec<_>>(),
            [(1, 5), (20, 30)]
        );
        marks.finish(BTreeMap::from([("meter".to_owned(), set(&[(3, 4)]))]));
        assert_eq!(
            marks.pending()["meter"].ranges().collect::<Vec<_>>(),
            [(3, 4), (20, 30)]
        );
        marks.take();
        marks.finish(BTreeMap::new());
        assert!(marks.pending().is_empty());
    }
}

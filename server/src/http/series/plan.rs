//! The chart API's decisions, free of I/O so they can be tested one by one: which
//! aggregate, which step (and the bucket grid it gives), which table to read (a rollup
//! only where its buckets tile the requested ones), and the SQL statement.
//!
//! The statement aggregates twice: per device and bucket first (a device's average
//! power, its last reading, its energy), then per bucket over the devices (summed, or
//! the min / max over devices), so a site with two meters shows their total.

use std::ops::Range;

use chrono::DateTime;
use chrono_tz::Tz;
use query::counter::CounterRules;
use query::rollup;
use query::{Bucketing, Width};
use storage::TIME_COLUMN;

use crate::http::rest::readings::{
    DEVICE_COLUMN, SiteDevice, device_filter, identifier, literal, rfc3339,
};

/// The tag naming a reading's site (written by some gateways beside `device_id`).
const SITE_COLUMN: &str = devices::tables::SITE_ID;

/// The steps `step=auto` chooses from, finest first.
pub(crate) const AUTO_STEPS: [Width; 6] = [
    Width::Fixed { nanos: 60 * SECOND },
    Width::Fixed {
        nanos: 5 * 60 * SECOND,
    },
    Width::Fixed {
        nanos: 15 * 60 * SECOND,
    },
    Width::Fixed {
        nanos: 3600 * SECOND,
    },
    Width::Days(1),
    Width::Months(1),
];

/// `step=auto` takes the finest step with at most this many buckets: about one per
/// pixel column of a wide chart.
pub(crate) const AUTO_MAX_BUCKETS: usize = 1500;

/// The most buckets one answer has (any step): beyond it the answer is megabytes of
/// JSON that no chart draws.
pub(crate) const MAX_BUCKETS: usize = 100_000;

/// Nanoseconds per second.
const SECOND: i64 = 1_000_000_000;

/// How the readings of a bucket become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agg {
    /// Mean of the readings (per device; summed over devices).
    Avg,
    /// Smallest reading (over all devices).
    Min,
    /// Largest reading (over all devices).
    Max,
    /// Sum of the readings (per device; summed over devices).
    Sum,
    /// The latest reading (per device; summed over devices).
    Last,
    /// Energy from a cumulative register (`_wh`): the steps between readings that end
    /// in the bucket (`query::counter`), summed over devices.
    Energy,
}

impl Agg {
    /// Every aggregate, in the order error messages list them.
    pub(crate) const ALL: [Agg; 6] = [
        Agg::Avg,
        Agg::Min,
        Agg::Max,
        Agg::Sum,
        Agg::Last,
        Agg::Energy,
    ];

    /// The name in `agg=`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Last => "last",
            Agg::Energy => "energy",
        }
    }

    /// The aggregate named `text`.
    pub(crate) fn parse(text: &str) -> Option<Agg> {
        Agg::ALL.into_iter().find(|a| a.name() == text.trim())
    }

    /// What a request without `agg` gets: the energy of a register (`_wh`), the mean
    /// of anything else.
    pub(crate) fn default_for(column: &str) -> Agg {
        if rollup::is_counter(column) {
            Agg::Energy
        } else {
            Agg::Avg
        }
    }

    /// How the devices' values of one bucket combine.
    fn over_devices(self) -> &'static str {
        match self {
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Avg | Agg::Sum | Agg::Last | Agg::Energy => "sum",
        }
    }
}

/// The canonical text of a step: what the answer's `step` says and what the statement
/// passes to `time_bucket` (`Width::parse` reads it back as the same width).
pub(crate) fn step_text(width: Width) -> String {
    const MILLI: i64 = 1_000_000;
    match width {
        Width::Fixed { nanos } if nanos % (3600 * SECOND) == 0 => {
            format!("{}h", nanos / (3600 * SECOND))
        }
        Width::Fixed { nanos } if nanos % (60 * SECOND) == 0 => {
            format!("{}m", nanos / (60 * SECOND))
        }
        Width::Fixed { nanos } if nanos % SECOND == 0 => format!("{}s", nanos / SECOND),
        Width::Fixed { nanos } if nanos % MILLI == 0 => format!("{}ms", nanos / MILLI),
        // `Width::parse` has no finer unit, so a request cannot ask for this.
        Width::Fixed { nanos } => format!("{nanos}ns"),
        Width::Days(n) => format!("{n}d"),
        Width::Months(n) => format!("{n}mo"),
    }
}

/// The buckets of an answer: their starts, ascending, and the end of the last one. The
/// window is widened to whole buckets, so the first and last bucket hold all their
/// readings whichever source answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grid {
    /// Width and time zone.
    pub(crate) bucketing: Bucketing,
    /// Bucket starts, UTC ns, ascending; not empty.
    pub(crate) starts: Vec<i64>,
    /// End of the last bucket (UTC ns).
    pub(crate) end: i64,
}

impl Grid {
    /// The buckets overlapping `[from, to)` (`from < to`), or `Err(limit)` when there
    /// are more than `limit`. Counting stops at the limit, so an absurd request (a
    /// 1-second step over a century) costs no more than a refused one.
    pub(crate) fn new(
        bucketing: Bucketing,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Grid, usize> {
        let mut starts = Vec::new();
        let mut s = bucketing.start(from);
        while s < to {
            if starts.len() == limit {
                return Err(limit);
            }
            starts.push(s);
            let next = bucketing.next(s);
            if next <= s {
                // Only at the end of the representable range.
                break;
            }
            s = next;
        }
        if starts.is_empty() {
            // Only when `from >= to`, which the request check refuses.
            starts.push(bucketing.start(from));
            s = bucketing.next(starts[0]);
        }
        Ok(Grid {
            bucketing,
            starts,
            end: s,
        })
    }

    /// `step=auto`: the finest of [`AUTO_STEPS`] with at most [`AUTO_MAX_BUCKETS`]
    /// buckets, else the coarsest.
    pub(crate) fn auto(tz: Tz, from: i64, to: i64) -> Grid {
        let mut coarsest = None;
        for width in AUTO_STEPS {
            let Ok(bucketing) = Bucketing::new(width, tz, None) else {
                continue;
            };
            match Grid::new(bucketing, from, to, AUTO_MAX_BUCKETS) {
                Ok(grid) => return grid,
                Err(_) => coarsest = Some(bucketing),
            }
        }
        // A window of more than 125 years: months, however many (the caller's cap
        // still applies).
        let bucketing = coarsest.unwrap_or_else(|| {
            Bucketing::new(Width::Months(1), tz, None).expect("a month is a valid width")
        });
        Grid::new(bucketing, from, to, usize::MAX).unwrap_or_else(|_| unreachable!())
    }

    /// Start of the first bucket.
    pub(crate) fn from(&self) -> i64 {
        self.starts[0]
    }

    /// The first `n` buckets and the rest, each `None` when empty.
    pub(crate) fn split_at(&self, n: usize) -> (Option<Grid>, Option<Grid>) {
        let n = n.min(self.starts.len());
        let part = |starts: &[i64], end: i64| {
            (!starts.is_empty()).then(|| Grid {
                bucketing: self.bucketing,
                starts: starts.to_vec(),
                end,
            })
        };
        let middle = self.starts.get(n).copied().unwrap_or(self.end);
        (
            part(&self.starts[..n], middle),
            part(&self.starts[n..], self.end),
        )
    }

    /// The buckets `range` (within the grid), or `None` when it is empty.
    pub(crate) fn part(&self, range: Range<usize>) -> Option<Grid> {
        let range = range.start.min(self.starts.len())..range.end.min(self.starts.len());
        (!range.is_empty()).then(|| Grid {
            bucketing: self.bucketing,
            starts: self.starts[range.clone()].to_vec(),
            end: self.starts.get(range.end).copied().unwrap_or(self.end),
        })
    }

    /// Whether every bucket of this grid is a whole number of `level`'s buckets: every
    /// boundary (each start, and the end) is one of `level`'s boundaries. Then no
    /// `level` bucket straddles two of ours, and reading `level` gives the same sums,
    /// counts, minima and maxima as reading the raw rows.
    pub(crate) fn tiled_by(&self, level: &Bucketing) -> bool {
        self.starts
            .iter()
            .chain(std::iter::once(&self.end))
            .all(|&t| level.start(t) == t)
    }
}

/// How far before a bucket raw energy reads: the longest gap a step is counted across
/// ([`CounterRules::ROLLUP`], which the rollups also scan back).
pub(crate) fn lookback() -> i64 {
    CounterRules::ROLLUP.max_gap_ns.unwrap_or(0)
}

/// Where a rollup cannot answer for a device that arrived on the site at `since` (ns):
/// the buckets of `grid` in the returned range are read from the raw table (cut at
/// `since`, no step measured across it); those before it hold none of the device's
/// rows from `since` on and are not read for it; those after it come from the rollup.
///
/// A rollup row of a bucket that starts before `since` mixes the previous owner's
/// readings with the new one's. For energy, a row starting less than the longest
/// counted gap after `since` may hold the step from the previous owner's last reading
/// to the new owner's first one; from there on every step is between readings at or
/// after `since`. So the raw rows answer exactly those buckets, and a rollup and the
/// raw table give the same numbers. Without a `since` everything comes from the rollup.
pub(crate) fn moved_buckets(grid: &Grid, agg: Agg, since: Option<i64>) -> Range<usize> {
    let Some(since) = since else {
        return 0..0;
    };
    let n = grid.starts.len();
    let first = if since >= grid.end {
        n
    } else {
        grid.starts
            .partition_point(|&s| s <= since)
            .saturating_sub(1)
    };
    let clean = match agg {
        Agg::Energy => since.saturating_add(lookback()),
        Agg::Avg | Agg::Min | Agg::Max | Agg::Sum | Agg::Last => since,
    };
    first..grid.starts.partition_point(|&s| s < clean).max(first)
}

/// What a statement reads, all checked by the caller: the table exists and `column`
/// is one of its numeric fields (or, for a rollup, `column`'s rollup columns exist).
#[derive(Debug)]
pub(crate) struct Read<'a> {
    /// The table read: the requested one, or its rollup.
    pub(crate) table: &'a str,
    /// Whether `table` is a rollup table (`<column>_sum`, `_count`, ... are read).
    pub(crate) rollup: bool,
    /// The requested column (of the base table).
    pub(crate) column: &'a str,
    /// The aggregate.
    pub(crate) agg: Agg,
    /// The bucket grid.
    pub(crate) grid: &'a Grid,
    /// Every tag of `table`. Only rows where all but `device_id` and `site_id` are
    /// NULL (a device's total series, not its phases or connectors) are read; energy
    /// steps are taken within each series (all tag values), as the rollups take them.
    pub(crate) tags: &'a [String],
    /// Whether the column is a float (NaN and infinities are not readings).
    pub(crate) float: bool,
    /// The devices (not empty), each with the time its rows start to count.
    pub(crate) devices: &'a [SiteDevice],
}

/// The rollup columns an aggregate reads; all must exist for a rollup to answer.
pub(crate) fn rollup_columns(column: &str, agg: Agg) -> Vec<String> {
    let suffixes: &[&str] = match agg {
        Agg::Avg | Agg::Sum => &["sum", "count"],
        Agg::Min => &["min", "count"],
        Agg::Max => &["max", "count"],
        Agg::Last => &["last"],
        Agg::Energy => &["energy"],
    };
    suffixes.iter().map(|s| format!("{column}_{s}")).collect()
}

/// The statement: every part is checked and quoted as an identifier, or a literal we
/// escape, or a number. Its result is `(b timestamp, v double)`, one row per bucket
/// with data, ascending.
pub(crate) fn statement(read: &Read<'_>) -> String {
    let time = identifier(TIME_COLUMN);
    let device = identifier(DEVICE_COLUMN);
    let table = identifier(read.table);
    let col = |suffix: &str| identifier(&format!("{}_{suffix}", read.column));
    let raw = identifier(read.column);
    let bucketing = &read.grid.bucketing;
    let bucket = format!(
        "time_bucket({}, {time}, {})",
        literal(&step_text(bucketing.width())),
        literal(bucketing.tz().name()),
    );
    let rules = CounterRules::ROLLUP;
    // Raw energy needs each device's reading before the window: the first step of the
    // window is measured from it (the rollups scan as far back when they refresh).
    // A moved device's rows are cut at its arrival by the device filter below the
    // window function, so no step starts at the previous owner's reading.
    let lookback = match (read.rollup, read.agg) {
        (false, Agg::Energy) => lookback(),
        _ => 0,
    };
    let mut conditions = vec![
        device_filter(read.devices),
        format!("{time} >= {}", time_literal(read.grid.from() - lookback)),
        format!("{time} < {}", time_literal(read.grid.end)),
    ];
    conditions.extend(
        read.tags
            .iter()
            .filter(|tag| *tag != DEVICE_COLUMN && *tag != SITE_COLUMN)
            .map(|tag| format!("{} IS NULL", identifier(tag))),
    );
    // The series of a device as the rollups key them: all its tag values.
    let series = std::iter::once(device.clone())
        .chain(
            read.tags
                .iter()
                .filter(|tag| *tag != DEVICE_COLUMN)
                .map(|tag| identifier(tag)),
        )
        .collect::<Vec<_>>()
        .join(", ");
    // The rollups skip NaN and infinities (not readings); DataFusion has `isnan` but
    // no `isinf`, and no finite value is as large as an infinity.
    let readable = if read.float {
        format!(
            "{raw} IS NOT NULL AND NOT isnan({raw}) AND abs({raw}) < CAST('Infinity' AS DOUBLE)"
        )
    } else {
        format!("{raw} IS NOT NULL")
    };
    // (value columns per row, row filter, aggregate per device and bucket)
    let double = |expr: String, alias: &str| format!("CAST({expr} AS DOUBLE) AS \"{alias}\"");
    let (values, filter, per_device) = match (read.rollup, read.agg) {
        (false, agg) => (
            // The energy steps come from the window function below.
            if agg == Agg::Energy {
                String::new()
            } else {
                double(raw.clone(), "x")
            },
            readable,
            match agg {
                Agg::Avg => "avg(\"x\")",
                Agg::Min => "min(\"x\")",
                Agg::Max => "max(\"x\")",
                Agg::Sum | Agg::Energy => "sum(\"x\")",
                Agg::Last => "last_value(\"x\" ORDER BY \"t\")",
            },
        ),
        // The mean of the bucket's readings, not the mean of the rollup rows' means.
        (true, Agg::Avg) => (
            format!("{}, {}", double(col("sum"), "x"), double(col("count"), "n")),
            format!("{} > 0", col("count")),
            "sum(\"x\") / sum(\"n\")",
        ),
        (true, Agg::Sum) => (
            double(col("sum"), "x"),
            format!("{} > 0", col("count")),
            "sum(\"x\")",
        ),
        (true, Agg::Min) => (
            double(col("min"), "x"),
            format!("{} > 0", col("count")),
            "min(\"x\")",
        ),
        (true, Agg::Max) => (
            double(col("max"), "x"),
            format!("{} > 0", col("count")),
            "max(\"x\")",
        ),
        (true, Agg::Last) => (
            double(col("last"), "x"),
            format!("{} IS NOT NULL", col("last")),
            "last_value(\"x\" ORDER BY \"t\")",
        ),
        (true, Agg::Energy) => (
            double(col("energy"), "x"),
            format!("{} IS NOT NULL", col("energy")),
            "sum(\"x\")",
        ),
    };
    conditions.push(filter);
    let conditions = conditions.join(" AND ");
    let rows = if read.agg == Agg::Energy && !read.rollup {
        // The steps are computed over the whole scan (each device's readings in time
        // order), and only then cut to the window: a filter on time below the window
        // function would drop the readings the first steps start from.
        let gap_s = rules.max_gap_ns.unwrap_or(i64::MAX) / SECOND;
        format!(
            "SELECT {bucket} AS \"b\", {device} AS \"d\", \"x\" FROM (\
             SELECT {time}, {device}, counter_delta(CAST({raw} AS DOUBLE), {time}, \
             INTERVAL '{gap_s} seconds', {max_power}) OVER (PARTITION BY {series} ORDER BY {time}) \
             AS \"x\" FROM {table} WHERE {conditions}) AS \"w\" WHERE {time} >= {from}",
            max_power = float_literal(rules.max_power_w),
            from = time_literal(read.grid.from()),
        )
    } else {
        format!(
            "SELECT {bucket} AS \"b\", {device} AS \"d\", {time} AS \"t\", {values} \
             FROM {table} WHERE {conditions}"
        )
    };
    format!(
        "SELECT \"b\", {over}(\"v\") AS \"v\" FROM (\
         SELECT \"b\", \"d\", {per_device} AS \"v\" FROM ({rows}) AS \"r\" GROUP BY \"b\", \"d\"\
         ) AS \"p\" GROUP BY \"b\" ORDER BY \"b\"",
        over = read.agg.over_devices(),
    )
}

/// A UTC time (ns) as an SQL literal the store's `time` compares with.
fn time_literal(ns: i64) -> String {
    literal(&rfc3339(DateTime::from_timestamp_nanos(ns)))
}

/// A float as an SQL literal (`1000000.0`), never in exponent form.
fn float_literal(value: f64) -> String {
    format!("{value:.1}")
}

#[cfg(test)]
mod tests {
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    use super::*;

    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .timestamp_nanos_opt()
            .expect("in range")
    }

    fn bucketing(step: &str, tz: Tz) -> Bucketing {
        Bucketing::new(Width::parse(step).expect("width"), tz, None).expect("bucketing")
    }

    #[test]
    fn step_text_reads_back_as_the_same_width() {
        for text in [
            "1m",
            "5m",
            "15m",
            "90m",
            "1h",
            "24h",
            "30s",
            "1d",
            "7d",
            "1w",
            "1mo",
            "3mo",
            "1y",
            "250ms",
            "15 minutes",
            "2 hours",
        ] {
            let width = Width::parse(text).expect(text);
            assert_eq!(Width::parse(&step_text(width)), Ok(width), "{text}");
        }
        assert_eq!(step_text(Width::parse("90 minutes").unwrap()), "90m");
        assert_eq!(step_text(Width::parse("120m").unwrap()), "2h");
        assert_eq!(step_text(Width::parse("1w").unwrap()), "7d");
        assert_eq!(step_text(Width::parse("1y").unwrap()), "12mo");
    }

    #[test]
    fn aggregates_parse_and_default_by_column() {
        for agg in Agg::ALL {
            assert_eq!(Agg::parse(agg.name()), Some(agg));
        }
        assert_eq!(Agg::parse("mean"), None);
        assert_eq!(Agg::default_for("energy_import_wh"), Agg::Energy);
        assert_eq!(Agg::default_for("power_w"), Agg::Avg);
    }

    /// The Berlin DST days: 92 and 100 quarter-hours, 23 and 25 hours.
    #[test]
    fn grids_follow_the_local_clock_across_dst() {
        let spring = Grid::new(
            bucketing("15m", Berlin),
            utc("2026-03-29T00:00:00+01:00"),
            utc("2026-03-30T00:00:00+02:00"),
            MAX_BUCKETS,
        )
        .unwrap();
        assert_eq!(spring.starts.len(), 92);
        let autumn = Grid::new(
            bucketing("15m", Berlin),
            utc("2026-10-25T00:00:00+02:00"),
            utc("2026-10-26T00:00:00+01:00"),
            MAX_BUCKETS,
        )
        .unwrap();
        assert_eq!(autumn.starts.len(), 100);
        assert_eq!(autumn.end, utc("2026-10-26T00:00:00+01:00"));
        let hours = Grid::new(
            bucketing("1h", Berlin),
            utc("2026-10-25T00:00:00+02:00"),
            utc("2026-10-26T00:00:00+01:00"),
            MAX_BUCKETS,
        )
        .unwrap();
        assert_eq!(hours.starts.len(), 25);
    }

    /// The window widens to whole buckets: a request from 10:07 to 10:52 in 15-minute
    /// steps answers 10:00 to 11:00.
    #[test]
    fn grids_cover_whole_buckets_and_stop_at_the_limit() {
        let grid = Grid::new(
            bucketing("15m", UTC),
            utc("2026-01-01T10:07:00Z"),
            utc("2026-01-01T10:52:00Z"),
            10,
        )
        .unwrap();
        assert_eq!(grid.from(), utc("2026-01-01T10:00:00Z"));
        assert_eq!(grid.end, utc("2026-01-01T11:00:00Z"));
        assert_eq!(grid.starts.len(), 4);
        assert_eq!(
            Grid::new(
                bucketing("15m", UTC),
                utc("2026-01-01T10:07:00Z"),
                utc("2026-01-01T10:52:00Z"),
                3
            ),
            Err(3)
        );
        // A second per bucket over a hundred years stops counting at the limit.
        let started = std::time::Instant::now();
        assert!(
            Grid::new(
                bucketing("1s", UTC),
                0,
                utc("2070-01-01T00:00:00Z"),
                MAX_BUCKETS
            )
            .is_err()
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn auto_picks_the_finest_step_with_at_most_1500_buckets() {
        let day = utc("2026-01-02T00:00:00Z") - utc("2026-01-01T00:00:00Z");
        let from = utc("2026-01-01T00:00:00Z");
        let cases = [
            (HOUR, "1m", 60),
            (day, "1m", 1440),
            (day + 61 * MINUTE, "5m", 301),
            (5 * day, "5m", 1440),
            (15 * day, "15m", 1440),
            (30 * day, "1h", 720),
            (4 * 365 * day, "1d", 1460),
            (10 * 365 * day, "1mo", 120),
        ];
        for (span, step, count) in cases {
            let grid = Grid::auto(UTC, from, from + span);
            assert_eq!(
                (
                    step_text(grid.bucketing.width()).as_str(),
                    grid.starts.len()
                ),
                (step, count),
                "{span}"
            );
        }
    }

    #[test]
    fn rollups_tile_only_where_their_boundaries_are_ours() {
        let berlin_day = Grid::new(
            bucketing("1d", Berlin),
            utc("2026-10-20T00:00:00+02:00"),
            utc("2026-10-30T00:00:00+01:00"),
            MAX_BUCKETS,
        )
        .unwrap();
        // Berlin days are whole UTC hours, not UTC days.
        assert!(berlin_day.tiled_by(&bucketing("15m", UTC)));
        assert!(berlin_day.tiled_by(&bucketing("1h", UTC)));
        assert!(!berlin_day.tiled_by(&bucketing("1d", UTC)));
        assert!(berlin_day.tiled_by(&bucketing("1d", Berlin)));
        let months = Grid::new(
            bucketing("1mo", Berlin),
            utc("2026-01-01T00:00:00+01:00"),
            utc("2027-01-01T00:00:00+01:00"),
            MAX_BUCKETS,
        )
        .unwrap();
        assert!(months.tiled_by(&bucketing("1d", Berlin)));
        assert!(!months.tiled_by(&bucketing("1d", UTC)));
        // India is UTC+05:30: its hours are UTC quarter-hours, not UTC hours.
        let kolkata = bucketing("1h", chrono_tz::Asia::Kolkata);
        let hours = Grid::new(kolkata, 0, 10 * HOUR, MAX_BUCKETS).unwrap();
        assert!(hours.tiled_by(&bucketing("15m", UTC)));
        assert!(!hours.tiled_by(&bucketing("1h", UTC)));
        // Five-minute steps are finer than any rollup.
        let fives = Grid::new(bucketing("5m", UTC), 0, HOUR, MAX_BUCKETS).unwrap();
        assert!(!fives.tiled_by(&bucketing("15m", UTC)));
    }

    /// A device that arrived at 10:07:30: the quarter of its arrival from the raw
    /// rows, and for energy also the quarters of the following hour (their first step
    /// may start at the previous owner's reading); nothing before; rollups after.
    #[test]
    fn a_moved_device_is_read_raw_until_its_rollup_rows_are_its_own() {
        let grid = Grid::new(
            bucketing("15m", UTC),
            utc("2026-01-01T09:00:00Z"),
            utc("2026-01-01T13:00:00Z"),
            MAX_BUCKETS,
        )
        .unwrap();
        let since = utc("2026-01-01T10:07:30Z");
        // Bucket 4 is 10:00; 10:15 is the first quarter wholly after the arrival, 11:15
        // the first whose steps all start after it.
        assert_eq!(moved_buckets(&grid, Agg::Avg, Some(since)), 4..5);
        assert_eq!(moved_buckets(&grid, Agg::Last, Some(since)), 4..5);
        assert_eq!(moved_buckets(&grid, Agg::Energy, Some(since)), 4..9);
        // On a boundary: nothing mixed, but energy still has an hour to go.
        let on = utc("2026-01-01T10:00:00Z");
        assert_eq!(moved_buckets(&grid, Agg::Max, Some(on)), 4..4);
        assert_eq!(moved_buckets(&grid, Agg::Energy, Some(on)), 4..8);
        // Long before the window: all from the rollup; after it: nothing to read.
        let before = utc("2026-01-01T07:00:00Z");
        assert_eq!(moved_buckets(&grid, Agg::Energy, Some(before)), 0..0);
        let nearly = utc("2026-01-01T08:30:00Z");
        assert_eq!(moved_buckets(&grid, Agg::Energy, Some(nearly)), 0..2);
        assert_eq!(moved_buckets(&grid, Agg::Sum, Some(nearly)), 0..0);
        let after = utc("2026-01-01T13:00:00Z");
        assert_eq!(moved_buckets(&grid, Agg::Energy, Some(after)), 16..16);
        assert_eq!(moved_buckets(&grid, Agg::Avg, None), 0..0);
        // Days: the day of the arrival, and the next one when it came in the last hour.
        let days = Grid::new(
            bucketing("1d", Berlin),
            utc("2026-01-01T00:00:00+01:00"),
            utc("2026-01-05T00:00:00+01:00"),
            MAX_BUCKETS,
        )
        .unwrap();
        let late = utc("2026-01-02T23:30:00+01:00");
        assert_eq!(moved_buckets(&days, Agg::Energy, Some(late)), 1..3);
        assert_eq!(moved_buckets(&days, Agg::Min, Some(late)), 1..2);
        assert_eq!(
            days.part(1..3).map(|g| (g.starts.len(), g.end)),
            Some((2, utc("2026-01-04T00:00:00+01:00")))
        );
        assert_eq!(days.part(2..2), None);
        assert_eq!(days.part(3..9).map(|g| g.end), Some(days.end));
    }

    fn device(id: &str, since: Option<&str>) -> SiteDevice {
        SiteDevice {
            device_id: id.to_owned(),
            kind: crm::DeviceKind::Meter,
            since: since.map(|s| DateTime::parse_from_rfc3339(s).unwrap().to_utc()),
        }
    }

    fn quarter_grid() -> Grid {
        Grid::new(
            bucketing("15m", Berlin),
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T01:00:00Z"),
            MAX_BUCKETS,
        )
        .unwrap()
    }

    #[test]
    fn raw_statements_quote_every_part_and_read_only_total_series() {
        let grid = quarter_grid();
        let tags = [
            "device_id".to_owned(),
            "site_id".to_owned(),
            "pha\"se".to_owned(),
        ];
        let devices = [
            device("a", None),
            device("b' OR '1'='1", Some("2026-01-01T00:20:00Z")),
        ];
        let read = Read {
            table: "met\"er",
            rollup: false,
            column: "power_w",
            agg: Agg::Avg,
            grid: &grid,
            tags: &tags,
            float: true,
            devices: &devices,
        };
        assert_eq!(
            statement(&read),
            "SELECT \"b\", sum(\"v\") AS \"v\" FROM (SELECT \"b\", \"d\", avg(\"x\") AS \"v\" FROM (\
             SELECT time_bucket('15m', \"time\", 'Europe/Berlin') AS \"b\", \"device_id\" AS \"d\", \
             \"time\" AS \"t\", CAST(\"power_w\" AS DOUBLE) AS \"x\" FROM \"met\"\"er\" \
             WHERE (\"device_id\" IN ('a') OR (\"device_id\" = 'b'' OR ''1''=''1' AND \"time\" >= '2026-01-01T00:20:00Z')) \
             AND \"time\" >= '2026-01-01T00:00:00Z' AND \"time\" < '2026-01-01T01:00:00Z' \
             AND \"pha\"\"se\" IS NULL AND \"power_w\" IS NOT NULL \
             AND NOT isnan(\"power_w\") AND abs(\"power_w\") < CAST('Infinity' AS DOUBLE)\
             ) AS \"r\" GROUP BY \"b\", \"d\") AS \"p\" GROUP BY \"b\" ORDER BY \"b\""
        );
        let max = statement(&Read {
            agg: Agg::Max,
            ..read
        });
        assert!(max.starts_with("SELECT \"b\", max(\"v\")"), "{max}");
        assert!(max.contains("max(\"x\") AS \"v\""), "{max}");
        let last = statement(&Read {
            agg: Agg::Last,
            ..read
        });
        assert!(last.contains("SELECT \"b\", sum(\"v\")"), "{last}");
        assert!(last.contains("last_value(\"x\" ORDER BY \"t\")"), "{last}");
    }

    /// Raw energy scans an hour before the window for each device's previous reading,
    /// computes the steps over the whole scan within each series (every tag value),
    /// and only then keeps the window.
    #[test]
    fn raw_energy_steps_from_the_reading_before_the_window() {
        let grid = quarter_grid();
        let devices = [device("a", None)];
        let tags = ["device_id".to_owned(), "site_id".to_owned()];
        let read = Read {
            table: "meter",
            rollup: false,
            column: "energy_import_wh",
            agg: Agg::Energy,
            grid: &grid,
            tags: &tags,
            float: true,
            devices: &devices,
        };
        assert_eq!(
            statement(&read),
            "SELECT \"b\", sum(\"v\") AS \"v\" FROM (SELECT \"b\", \"d\", sum(\"x\") AS \"v\" FROM (\
             SELECT time_bucket('15m', \"time\", 'Europe/Berlin') AS \"b\", \"device_id\" AS \"d\", \"x\" FROM (\
             SELECT \"time\", \"device_id\", counter_delta(CAST(\"energy_import_wh\" AS DOUBLE), \"time\", \
             INTERVAL '3600 seconds', 1000000.0) OVER (PARTITION BY \"device_id\", \"site_id\" ORDER BY \"time\") AS \"x\" \
             FROM \"meter\" WHERE \"device_id\" IN ('a') \
             AND \"time\" >= '2025-12-31T23:00:00Z' AND \"time\" < '2026-01-01T01:00:00Z' \
             AND \"energy_import_wh\" IS NOT NULL AND NOT isnan(\"energy_import_wh\") \
             AND abs(\"energy_import_wh\") < CAST('Infinity' AS DOUBLE)) AS \"w\" WHERE \"time\" >= '2026-01-01T00:00:00Z'\
             ) AS \"r\" GROUP BY \"b\", \"d\") AS \"p\" GROUP BY \"b\" ORDER BY \"b\""
        );
    }

    #[test]
    fn rollup_statements_read_the_aggregate_columns() {
        let grid = quarter_grid();
        let devices = [device("a", None)];
        let read = Read {
            table: "meter_15m",
            rollup: true,
            column: "power_w",
            agg: Agg::Avg,
            grid: &grid,
            tags: &[],
            float: false,
            devices: &devices,
        };
        let avg = statement(&read);
        assert!(
            avg.contains(
                "CAST(\"power_w_sum\" AS DOUBLE) AS \"x\", CAST(\"power_w_count\" AS DOUBLE) AS \"n\" \
                 FROM \"meter_15m\""
            ),
            "{avg}"
        );
        assert!(avg.contains("sum(\"x\") / sum(\"n\") AS \"v\""), "{avg}");
        assert!(avg.contains("AND \"power_w_count\" > 0)"), "{avg}");
        // No lookback: the rollup's energy already has each bucket's first step.
        let energy = statement(&Read {
            column: "energy_import_wh",
            agg: Agg::Energy,
            ..read
        });
        assert!(
            energy.contains("CAST(\"energy_import_wh_energy\" AS DOUBLE) AS \"x\""),
            "{energy}"
        );
        assert!(
            energy.contains("\"time\" >= '2026-01-01T00:00:00Z'"),
            "{energy}"
        );
        assert!(!energy.contains("counter_delta"), "{energy}");
        for (agg, column) in [
            (Agg::Min, "power_w_min"),
            (Agg::Max, "power_w_max"),
            (Agg::Sum, "power_w_sum"),
            (Agg::Last, "power_w_last"),
        ] {
            let sql = statement(&Read { agg, ..read });
            assert!(
                sql.contains(&format!("CAST(\"{column}\" AS DOUBLE) AS \"x\"")),
                "{sql}"
            );
            assert_eq!(
                rollup_columns("power_w", agg)[0],
                column,
                "the availability check names the column read"
            );
        }
    }
}

//! Time buckets on a time zone's wall clock: the one definition of "the 15-minute,
//! hourly, daily, weekly or monthly bucket a reading falls in" that the SQL functions
//! (`time_bucket`, `time_buckets`, `coverage`), the rollups and the chart API share.
//!
//! Times are UTC nanoseconds (the store's `time` column). A [`Bucketing`] is a
//! [`Width`], a time zone and an origin:
//!
//! - [`Width::Fixed`] (seconds, minutes, hours) buckets the local wall-clock time using
//!   the UTC offset at the reading: `start = floor((t + off(t) - origin) / w) * w +
//!   origin - off(t)`. In Europe/Berlin the spring day has 92 quarter-hours and the
//!   autumn day 100: the repeated hour 02:00-03:00 gives four buckets under CEST and
//!   four under CET, each 15 real minutes long. When the local floor does not carry the
//!   reading's offset (a width longer than the offset change, such as 4 hours across a
//!   DST switch), the local floor is resolved in the zone instead (earliest instant if
//!   repeated, the first instant after the gap if skipped), so starts stay monotone.
//! - [`Width::Days`] are local calendar days (23, 24 or 25 hours), starting at local
//!   midnight, or at the first instant of the day where midnight is skipped. `Days(7)`
//!   is a week starting on Monday with the default origin.
//! - [`Width::Months`] are local calendar months.
//!
//! A bucket is labelled by its start ([`Bucketing::start`]), or, for meters that report
//! interval-ending values, by its end ([`Bucketing::end_label`]: buckets are then
//! `(start, end]`).

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// Nanoseconds per second.
const SECOND: i64 = 1_000_000_000;

/// Why a bucket width, time zone or origin was refused. Each variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// The width text is not a positive whole number and a unit.
    #[error(
        "invalid bucket width '{text}': expected a positive whole number and a unit, such as \
         '30s', '15m', '1h', '1d', '1w', '1mo', '15 minutes', '1 hour', '1 week' or '1 month'"
    )]
    BadWidth {
        /// The text as given.
        text: String,
    },
    /// An interval width that mixes months, days and time, which have no common
    /// length (a month is 28 to 31 days, a day 23 to 25 hours).
    #[error(
        "invalid bucket width interval ({months} months, {days} days, {nanos} ns): use exactly \
         one of months, days or a time part, such as '1 month', '2 days' or '90 minutes'"
    )]
    MixedInterval {
        /// The interval's months.
        months: i32,
        /// The interval's days.
        days: i32,
        /// The interval's time part in nanoseconds.
        nanos: i64,
    },
    /// A zero or negative width.
    #[error("invalid bucket width '{width}': must be positive")]
    NotPositive {
        /// The width as given.
        width: String,
    },
    /// A time zone name that is not in the IANA database.
    #[error("unknown time zone '{name}': expected an IANA name such as 'Europe/Berlin' or 'UTC'")]
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
}

/// How long a bucket is. Fixed widths are real durations; days and months follow the
/// calendar of the bucketing's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// A fixed duration in nanoseconds (seconds, minutes, hours).
    Fixed {
        /// The duration; positive.
        nanos: i64,
    },
    /// Local calendar days; `Days(7)` is a week.
    Days(u32),
    /// Local calendar months.
    Months(u32),
}

impl Width {
    /// "15m", "1h", "1d", "1w" (= Days(7)), "1mo", also "15 minutes", "1 hour", "2 days",
    /// "1 week", "1 month", "30s". Errors name the text.
    ///
    /// Also accepted: `ms`/`millisecond(s)`, `sec`/`second(s)`, `min`/`minute(s)`,
    /// `hr`/`hour(s)`, `day(s)`, `week(s)`, `month(s)`, `y`/`year(s)` (= 12 months),
    /// with or without a space, in any letter case.
    pub fn parse(text: &str) -> Result<Width, BucketError> {
        let bad = || BucketError::BadWidth {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let digits = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(digits);
        let n: u32 = number.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(BucketError::NotPositive {
                width: text.to_owned(),
            });
        }
        let unit = unit.trim().to_ascii_lowercase();
        let fixed = |unit_nanos: i64| {
            i64::from(n)
                .checked_mul(unit_nanos)
                .map(|nanos| Width::Fixed { nanos })
                .ok_or_else(bad)
        };
        match unit.as_str() {
            "ms" | "millisecond" | "milliseconds" => fixed(1_000_000),
            "s" | "sec" | "secs" | "second" | "seconds" => fixed(SECOND),
            "m" | "min" | "mins" | "minute" | "minutes" => fixed(60 * SECOND),
            "h" | "hr" | "hrs" | "hour" | "hours" => fixed(3600 * SECOND),
            "d" | "day" | "days" => Ok(Width::Days(n)),
            "w" | "week" | "weeks" => n.checked_mul(7).map(Width::Days).ok_or_else(bad),
            "mo" | "mon" | "mons" | "month" | "months" => Ok(Width::Months(n)),
            "y" | "year" | "years" => n.checked_mul(12).map(Width::Months).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    /// From an SQL interval: only one of the three parts may be non-zero.
    pub fn from_interval(months: i32, days: i32, nanos: i64) -> Result<Width, BucketError> {
        let not_positive = || BucketError::NotPositive {
            width: format!("{months} months {days} days {nanos} ns"),
        };
        match (months, days, nanos) {
            (0, 0, 0) => Err(not_positive()),
            (m, 0, 0) => u32::try_from(m)
                .ok()
                .filter(|m| *m > 0)
                .map(Width::Months)
                .ok_or_else(not_positive),
            (0, d, 0) => u32::try_from(d)
                .ok()
                .filter(|d| *d > 0)
                .map(Width::Days)
                .ok_or_else(not_positive),
            (0, 0, n) if n > 0 => Ok(Width::Fixed { nanos: n }),
            (0, 0, _) => Err(not_positive()),
            _ => Err(BucketError::MixedInterval {
                months,
                days,
                nanos,
            }),
        }
    }
}

/// Looks an IANA time zone name up ("Europe/Berlin", "UTC").
pub(crate) fn parse_time_zone(name: &str) -> Result<Tz, BucketError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| BucketError::UnknownTimeZone {
            name: name.to_owned(),
        })
}

/// Where buckets are aligned, in the form each width needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Local wall-clock nanoseconds (UTC nanoseconds plus the offset at the origin).
    Local(i64),
    /// Days since 1970-01-01 of the origin's local date.
    Day(i64),
    /// Months since January 1970 of the origin's local month.
    Month(i64),
}

/// A width, a time zone and an origin: maps times to the bucket they fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketing {
    width: Width,
    tz: Tz,
    origin: Origin,
}

impl Bucketing {
    /// origin_ns: None = default (fixed: 1970-01-01T00:00 local wall clock, i.e. UTC
    /// epoch shifted by the local offset; days and weeks: local midnight of 2000-01-03, a
    /// Monday, so 7-day buckets start on Mondays; months: January 2000).
    ///
    /// A given origin is a UTC instant; fixed widths align to its local wall-clock time,
    /// days to its local date and months to its local month (the time of day, and the
    /// day of month, do not matter for them).
    pub fn new(width: Width, tz: Tz, origin_ns: Option<i64>) -> Result<Bucketing, BucketError> {
        let positive = match width {
            Width::Fixed { nanos } => nanos > 0,
            Width::Days(n) | Width::Months(n) => n > 0,
        };
        if !positive {
            return Err(BucketError::NotPositive {
                width: format!("{width:?}"),
            });
        }
        let origin = match (width, origin_ns) {
            (Width::Fixed { .. }, None) => Origin::Local(0),
            (Width::Fixed { .. }, Some(t)) => Origin::Local(local_nanos(tz, t)),
            (Width::Days(_), None) => Origin::Day(days_since_epoch(monday_2000_01_03())),
            (Width::Days(_), Some(t)) => Origin::Day(days_since_epoch(local_date(tz, t))),
            (Width::Months(_), None) => Origin::Month(2000 * 12),
            (Width::Months(_), Some(t)) => Origin::Month(month_index(local_date(tz, t))),
        };
        Ok(Bucketing { width, tz, origin })
    }

    /// The bucket width.
    pub fn width(&self) -> Width {
        self.width
    }

    /// The time zone whose wall clock and calendar the buckets follow.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Start (UTC ns) of the bucket containing t (UTC ns). Labels at bucket start.
    pub fn start(&self, t: i64) -> i64 {
        match (self.width, self.origin) {
            (Width::Fixed { nanos }, Origin::Local(origin)) => self.fixed_start(t, nanos, origin),
            (Width::Days(n), Origin::Day(origin)) => {
                let day = days_since_epoch(local_date(self.tz, t));
                let first = origin + (day - origin).div_euclid(i64::from(n)) * i64::from(n);
                first_instant_of_day(self.tz, first)
            }
            (Width::Months(n), Origin::Month(origin)) => {
                let month = month_index(local_date(self.tz, t));
                let first = origin + (month - origin).div_euclid(i64::from(n)) * i64::from(n);
                first_instant_of_day(self.tz, days_since_epoch(month_first_day(first)))
            }
            // `new` pairs each width with its origin.
            _ => unreachable!("bucketing origin does not match its width"),
        }
    }

    /// Start of the bucket after the one starting at `start`.
    pub fn next(&self, start: i64) -> i64 {
        match (self.width, self.origin) {
            (Width::Fixed { nanos }, Origin::Local(_)) => self.fixed_next(start, nanos),
            (Width::Days(n), Origin::Day(_)) => {
                let day = days_since_epoch(local_date(self.tz, start));
                first_instant_of_day(self.tz, day + i64::from(n))
            }
            (Width::Months(n), Origin::Month(_)) => {
                let month = month_index(local_date(self.tz, start)) + i64::from(n);
                first_instant_of_day(self.tz, days_since_epoch(month_first_day(month)))
            }
            _ => unreachable!("bucketing origin does not match its width"),
        }
    }

    /// Interval-ending label: buckets are (start, end], labelled by end. A reading at
    /// 00:15 belongs to the bucket labelled 00:15 (00:00, 00:15].
    pub fn end_label(&self, t: i64) -> i64 {
        let start = self.start(t);
        if start == t { t } else { self.next(start) }
    }

    /// Every bucket start s with [s, next(s)) overlapping [from, to), ascending.
    pub fn starts(&self, from: i64, to: i64) -> Vec<i64> {
        let mut starts = Vec::new();
        if from >= to {
            return starts;
        }
        let mut s = self.start(from);
        while s < to {
            starts.push(s);
            let next = self.next(s);
            if next <= s {
                // Only at the end of the representable range.
                break;
            }
            s = next;
        }
        starts
    }

    /// The contract's formula, with the local floor resolved in the zone when it does
    /// not carry the reading's own offset (see the module doc).
    fn fixed_start(&self, t: i64, width: i64, origin: i64) -> i64 {
        let offset = offset_nanos(self.tz, t);
        let local = i128::from(t) + i128::from(offset);
        let width = i128::from(width);
        let origin = i128::from(origin);
        let floor = (local - origin).div_euclid(width) * width + origin;
        let candidate = clamp(floor - i128::from(offset));
        if offset_nanos(self.tz, candidate) == offset {
            return candidate;
        }
        resolve_local(self.tz, clamp(floor))
    }

    /// The smallest bucket start after `start`: the bucket of `start + width` (further
    /// on while that is still `start`'s bucket, which happens when a DST change makes a
    /// bucket longer), then back while a bucket between was skipped (made shorter).
    fn fixed_next(&self, start: i64, width: i64) -> i64 {
        let mut probe = start.saturating_add(width);
        let mut next = self.start(probe);
        while next <= start {
            if probe == i64::MAX {
                return i64::MAX;
            }
            probe = probe.saturating_add(width);
            next = self.start(probe);
        }
        loop {
            let before = self.start(next - 1);
            if before <= start || before >= next {
                return next;
            }
            next = before;
        }
    }
}

/// The zone's UTC offset at `t`, in nanoseconds.
fn offset_nanos(tz: Tz, t: i64) -> i64 {
    let utc = DateTime::from_timestamp_nanos(t).naive_utc();
    i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()) * SECOND
}

/// Local wall-clock nanoseconds at `t` (UTC nanoseconds plus the offset).
fn local_nanos(tz: Tz, t: i64) -> i64 {
    t.saturating_add(offset_nanos(tz, t))
}

/// The local calendar date at `t`.
fn local_date(tz: Tz, t: i64) -> NaiveDate {
    DateTime::from_timestamp_nanos(t)
        .with_timezone(&tz)
        .date_naive()
}

fn monday_2000_01_03() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 3).expect("a valid date")
}

/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const EPOCH_DAYS_FROM_CE: i64 = 719_163;

fn days_since_epoch(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - EPOCH_DAYS_FROM_CE
}

fn month_index(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

fn month_first_day(index: i64) -> NaiveDate {
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(i32::MAX);
    let month0 = u32::try_from(index.rem_euclid(12)).unwrap_or(0);
    NaiveDate::from_ymd_opt(year, month0 + 1, 1).unwrap_or(NaiveDate::MAX)
}

/// The first instant (UTC ns) of the local day `day` (days since 1970-01-01).
fn first_instant_of_day(tz: Tz, day: i64) -> i64 {
    let local = i128::from(day) * 86_400 * i128::from(SECOND);
    resolve_local(tz, clamp(local))
}

/// The UTC instant (ns) of a local wall-clock date and time in `tz`, resolved like a
/// bucket start: the earliest instant if repeated, the end of the gap if skipped. None
/// outside the nanosecond range (years 1677 to 2262).
pub(crate) fn local_to_utc(tz: Tz, local: chrono::NaiveDateTime) -> Option<i64> {
    let local = local.and_utc().timestamp_nanos_opt()?;
    Some(resolve_local(tz, local))
}

/// The UTC instant of a local wall-clock time given in nanoseconds: the earliest one if
/// the local time happens twice, the first instant after the gap if it is skipped.
fn resolve_local(tz: Tz, local: i64) -> i64 {
    let naive = DateTime::from_timestamp_nanos(local).naive_utc();
    if let Some(earliest) = tz.from_local_datetime(&naive).earliest() {
        return earliest.timestamp_nanos_opt().unwrap_or(if local < 0 {
            i64::MIN
        } else {
            i64::MAX
        });
    }
    first_after_gap(tz, local)
}

/// The transition that skips the local time `local`: the first UTC instant whose
/// local time is later. Before it the local time is below the gap, after it above, so
/// a binary search over one day either side finds it.
fn first_after_gap(tz: Tz, local: i64) -> i64 {
    let day = 86_400 * SECOND;
    let mut low = local.saturating_sub(2 * day);
    let mut high = local.saturating_add(2 * day);
    // Invariant: local_nanos(low) <= local < local_nanos(high) around the gap.
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if local_nanos(tz, mid) > local {
            high = mid;
        } else {
            low = mid;
        }
    }
    high
}

fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .timestamp_nanos_opt()
            .expect("in range")
    }

    fn berlin() -> Tz {
        chrono_tz::Europe::Berlin
    }

    fn new_york() -> Tz {
        chrono_tz::America::New_York
    }

    fn bucketing(width: &str, tz: Tz) -> Bucketing {
        Bucketing::new(Width::parse(width).expect("width"), tz, None).expect("bucketing")
    }

    /// Distinct bucket starts of every minute in [from, to).
    fn distinct_starts(b: &Bucketing, from: i64, to: i64) -> Vec<i64> {
        let mut starts: Vec<i64> = (from..to)
            .step_by(MINUTE as usize)
            .map(|t| b.start(t))
            .collect();
        starts.dedup();
        starts
    }

    #[test]
    fn parses_short_and_long_widths() {
        assert_eq!(Width::parse("15m"), Ok(Width::Fixed { nanos: 15 * MINUTE }));
        assert_eq!(
            Width::parse("15 minutes"),
            Ok(Width::Fixed { nanos: 15 * MINUTE })
        );
        assert_eq!(Width::parse("1h"), Ok(Width::Fixed { nanos: HOUR }));
        assert_eq!(Width::parse("1 Hour"), Ok(Width::Fixed { nanos: HOUR }));
        assert_eq!(Width::parse("30s"), Ok(Width::Fixed { nanos: 30 * SECOND }));
        assert_eq!(Width::parse("1d"), Ok(Width::Days(1)));
        assert_eq!(Width::parse("2 days"), Ok(Width::Days(2)));
        assert_eq!(Width::parse("1w"), Ok(Width::Days(7)));
        assert_eq!(Width::parse("1 week"), Ok(Width::Days(7)));
        assert_eq!(Width::parse("1mo"), Ok(Width::Months(1)));
        assert_eq!(Width::parse("1 month"), Ok(Width::Months(1)));
        assert_eq!(Width::parse("1y"), Ok(Width::Months(12)));
    }

    #[test]
    fn bad_widths_name_the_text() {
        for text in ["", "m", "15", "15 fortnights", "-1h", "1.5h", "15 m x"] {
            let error = Width::parse(text).expect_err(text);
            assert_eq!(
                error,
                BucketError::BadWidth {
                    text: text.to_owned()
                }
            );
            assert!(error.to_string().contains(&format!("'{text}'")), "{error}");
        }
        assert!(matches!(
            Width::parse("0m"),
            Err(BucketError::NotPositive { .. })
        ));
    }

    #[test]
    fn intervals_must_have_one_part() {
        assert_eq!(Width::from_interval(1, 0, 0), Ok(Width::Months(1)));
        assert_eq!(Width::from_interval(0, 7, 0), Ok(Width::Days(7)));
        assert_eq!(
            Width::from_interval(0, 0, 15 * MINUTE),
            Ok(Width::Fixed { nanos: 15 * MINUTE })
        );
        assert_eq!(
            Width::from_interval(0, 1, 2 * HOUR),
            Err(BucketError::MixedInterval {
                months: 0,
                days: 1,
                nanos: 2 * HOUR
            })
        );
        assert!(matches!(
            Width::from_interval(0, 0, 0),
            Err(BucketError::NotPositive { .. })
        ));
        assert!(matches!(
            Width::from_interval(-1, 0, 0),
            Err(BucketError::NotPositive { .. })
        ));
    }

    #[test]
    fn unknown_time_zone_is_named() {
        let error = parse_time_zone("Europe/Atlantis").expect_err("unknown");
        assert!(error.to_string().contains("'Europe/Atlantis'"), "{error}");
        assert_eq!(parse_time_zone("Europe/Berlin"), Ok(berlin()));
    }

    #[test]
    fn utc_fixed_buckets_are_date_bin() {
        let b = bucketing("15m", Tz::UTC);
        let t = utc("2024-05-01T10:37:12Z");
        assert_eq!(b.start(t), utc("2024-05-01T10:30:00Z"));
        assert_eq!(b.next(b.start(t)), utc("2024-05-01T10:45:00Z"));
        // Before the epoch too.
        assert_eq!(
            b.start(utc("1969-12-31T23:59:00Z")),
            utc("1969-12-31T23:45:00Z")
        );
    }

    #[test]
    fn berlin_spring_day_has_92_quarter_hours() {
        let b = bucketing("15m", berlin());
        let (from, to) = (utc("2024-03-30T23:00:00Z"), utc("2024-03-31T22:00:00Z"));
        assert_eq!(to - from, 23 * HOUR);
        let starts = b.starts(from, to);
        assert_eq!(starts.len(), 92);
        assert_eq!(distinct_starts(&b, from, to), starts);
        // 01:45 CET is followed by 03:00 CEST, 15 real minutes later.
        assert_eq!(
            b.next(utc("2024-03-31T00:45:00Z")),
            utc("2024-03-31T01:00:00Z")
        );
    }

    #[test]
    fn berlin_autumn_day_has_100_quarter_hours() {
        let b = bucketing("15m", berlin());
        let (from, to) = (utc("2024-10-26T22:00:00Z"), utc("2024-10-27T23:00:00Z"));
        assert_eq!(to - from, 25 * HOUR);
        let starts = b.starts(from, to);
        assert_eq!(starts.len(), 100);
        assert_eq!(distinct_starts(&b, from, to), starts);
        // 02:20 CET (the second 02:20) is in the second 02:15 bucket.
        assert_eq!(
            b.start(utc("2024-10-27T01:20:00Z")),
            utc("2024-10-27T01:15:00Z")
        );
        assert_eq!(
            b.start(utc("2024-10-27T00:20:00Z")),
            utc("2024-10-27T00:15:00Z")
        );
        // Every bucket is 15 real minutes long.
        assert!(starts.windows(2).all(|w| w[1] - w[0] == 15 * MINUTE));
    }

    #[test]
    fn berlin_hours_on_dst_days() {
        let b = bucketing("1h", berlin());
        let spring = b.starts(utc("2024-03-30T23:00:00Z"), utc("2024-03-31T22:00:00Z"));
        assert_eq!(spring.len(), 23);
        let autumn = b.starts(utc("2024-10-26T22:00:00Z"), utc("2024-10-27T23:00:00Z"));
        assert_eq!(autumn.len(), 25);
    }

    #[test]
    fn long_fixed_widths_across_a_dst_change_stay_monotone() {
        // 4-hour buckets on local wall-clock time: 00:00-04:00 local on the spring day
        // is 3 real hours.
        let b = bucketing("4h", berlin());
        let from = utc("2024-03-30T20:00:00Z");
        let to = utc("2024-03-31T12:00:00Z");
        let starts = distinct_starts(&b, from, to);
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
        assert_eq!(b.starts(from, to), starts);
        assert!(starts.contains(&utc("2024-03-30T23:00:00Z"))); // 00:00 CET
        assert!(starts.contains(&utc("2024-03-31T02:00:00Z"))); // 04:00 CEST
    }

    #[test]
    fn new_york_days_are_23_and_25_hours() {
        let b = bucketing("1d", new_york());
        let spring = b.start(utc("2024-03-10T12:00:00Z"));
        assert_eq!(spring, utc("2024-03-10T05:00:00Z"));
        assert_eq!(b.next(spring) - spring, 23 * HOUR);
        let autumn = b.start(utc("2024-11-03T12:00:00Z"));
        assert_eq!(autumn, utc("2024-11-03T04:00:00Z"));
        assert_eq!(b.next(autumn) - autumn, 25 * HOUR);
        // A reading at 23:30 local on the autumn day is still that day.
        assert_eq!(b.start(utc("2024-11-04T04:30:00Z")), autumn);
    }

    #[test]
    fn skipped_midnight_starts_the_day_at_the_gap() {
        // America/Santiago moved clocks from 00:00 to 01:00 on 2022-09-11.
        let b = bucketing("1d", chrono_tz::America::Santiago);
        let start = b.start(utc("2022-09-11T12:00:00Z"));
        assert_eq!(start, utc("2022-09-11T04:00:00Z"));
        assert_eq!(
            DateTime::from_timestamp_nanos(start)
                .with_timezone(&chrono_tz::America::Santiago)
                .to_rfc3339(),
            "2022-09-11T01:00:00-03:00"
        );
    }

    #[test]
    fn berlin_months_across_a_year() {
        let b = bucketing("1mo", berlin());
        let starts = b.starts(utc("2023-12-31T23:00:00Z"), utc("2024-12-31T23:00:00Z"));
        let expected = [
            "2023-12-31T23:00:00Z",
            "2024-01-31T23:00:00Z",
            "2024-02-29T23:00:00Z",
            "2024-03-31T22:00:00Z",
            "2024-04-30T22:00:00Z",
            "2024-05-31T22:00:00Z",
            "2024-06-30T22:00:00Z",
            "2024-07-31T22:00:00Z",
            "2024-08-31T22:00:00Z",
            "2024-09-30T22:00:00Z",
            "2024-10-31T23:00:00Z",
            "2024-11-30T23:00:00Z",
        ];
        assert_eq!(starts, expected.map(utc));
        // The last instant of March (local) is in March.
        assert_eq!(
            b.start(utc("2024-03-31T21:59:59Z")),
            utc("2024-02-29T23:00:00Z")
        );
        // Quarters from the default origin (January 2000).
        let quarters = Bucketing::new(Width::Months(3), berlin(), None).expect("quarters");
        assert_eq!(
            quarters.start(utc("2024-05-15T00:00:00Z")),
            utc("2024-03-31T22:00:00Z")
        );
    }

    #[test]
    fn weeks_start_on_monday() {
        let b = bucketing("1w", berlin());
        // Sunday 2024-03-31 (a 23-hour day) is in the week of Monday 2024-03-25.
        let start = b.start(utc("2024-03-31T20:00:00Z"));
        assert_eq!(start, utc("2024-03-24T23:00:00Z"));
        assert_eq!(b.next(start), utc("2024-03-31T22:00:00Z"));
        assert_eq!(b.next(start) - start, 7 * 24 * HOUR - HOUR);
        // Monday 00:00 local starts a week.
        assert_eq!(
            b.start(utc("2024-04-01T00:00:00Z")),
            utc("2024-03-31T22:00:00Z")
        );
    }

    #[test]
    fn origin_shifts_the_alignment() {
        // Days aligned to the origin's local date, in pairs.
        let origin = utc("2024-01-02T12:00:00Z");
        let b = Bucketing::new(Width::Days(2), Tz::UTC, Some(origin)).expect("bucketing");
        assert_eq!(
            b.start(utc("2024-01-05T01:00:00Z")),
            utc("2024-01-04T00:00:00Z")
        );
        // Fixed widths aligned to the origin's wall-clock time.
        let origin = utc("2024-01-01T00:05:00Z");
        let b = Bucketing::new(Width::Fixed { nanos: 15 * MINUTE }, berlin(), Some(origin))
            .expect("bucketing");
        assert_eq!(
            b.start(utc("2024-06-01T10:04:00Z")),
            utc("2024-06-01T09:50:00Z")
        );
    }

    #[test]
    fn end_labels_close_the_interval() {
        let b = bucketing("15m", berlin());
        let midnight = utc("2024-03-31T00:00:00Z");
        assert_eq!(b.end_label(midnight), midnight);
        assert_eq!(b.end_label(midnight + 1), midnight + 15 * MINUTE);
        assert_eq!(b.end_label(midnight + 15 * MINUTE), midnight + 15 * MINUTE);
        // Across the gap: 01:50 CET belongs to the bucket ending at 03:00 CEST.
        assert_eq!(
            b.end_label(utc("2024-03-31T00:50:00Z")),
            utc("2024-03-31T01:00:00Z")
        );
        let days = bucketing("1d", new_york());
        assert_eq!(
            days.end_label(utc("2024-03-10T05:00:00Z")),
            utc("2024-03-10T05:00:00Z")
        );
        assert_eq!(
            days.end_label(utc("2024-03-10T12:00:00Z")),
            utc("2024-03-11T04:00:00Z")
        );
    }

    #[test]
    fn starts_overlap_the_range() {
        let b = bucketing("1h", Tz::UTC);
        let from = utc("2024-01-01T00:30:00Z");
        assert_eq!(
            b.starts(from, utc("2024-01-01T02:00:00Z")),
            vec![utc("2024-01-01T00:00:00Z"), utc("2024-01-01T01:00:00Z")]
        );
        assert_eq!(b.starts(from, from), Vec::<i64>::new());
        assert_eq!(b.starts(from, from + 1), vec![utc("2024-01-01T00:00:00Z")]);
    }

    #[test]
    fn epoch_is_day_zero() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("date");
        assert_eq!(days_since_epoch(epoch), 0);
    }

    #[test]
    fn zero_widths_are_refused() {
        for width in [Width::Fixed { nanos: 0 }, Width::Days(0), Width::Months(0)] {
            assert!(Bucketing::new(width, Tz::UTC, None).is_err());
        }
    }
}

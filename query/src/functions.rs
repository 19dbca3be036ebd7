//! gridlake's SQL functions for time series, registered on every [`QueryEngine`]
//! session by [`register`]. They share one definition of buckets ([`crate::Bucketing`])
//! and of counter steps ([`crate::counter`]) with the rollups and the chart API.
//!
//! | function | kind | what it gives |
//! |---|---|---|
//! | `time_bucket(width, time [, tz [, origin]])` | scalar | the start of `time`'s bucket |
//! | `time_bucket_end(width, time [, tz [, origin]])` | scalar | the interval-ending label |
//! | `time_buckets(width, from, to [, tz [, origin]])` | table | every bucket start of `[from, to)` |
//! | `locf(value)` | window | the last non-null value so far |
//! | `interpolate(value, time)` | window | linear in time between non-null neighbours |
//! | `counter_delta(register, time [, max_gap [, max_power_w]])` | window | energy of the step to each reading |
//! | `counter_energy(register, time [, max_gap [, max_power_w]])` | aggregate | energy between the group's readings |
//! | `integrate(power_w, time [, max_gap])` | aggregate | trapezoidal energy (Wh) |
//! | `coverage(time, sample_interval, bucket_width [, tz [, origin]])` | aggregate | share of sample slots present |
//!
//! Widths, zones, origins and the rules' limits must be constants; a wrong one is a
//! plan error that names the function and the argument (`time_bucket: argument 3 (tz):
//! unknown time zone 'Europe/Atlantis' ...`). docs/sql-functions.md describes each
//! function for users.
//!
//! [`QueryEngine`]: crate::QueryEngine

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, IntervalUnit, TimeUnit};
use chrono_tz::Tz;
use datafusion::common::{Result, ScalarValue, plan_datafusion_err, plan_err};
use datafusion::logical_expr::{AggregateUDF, Expr, ScalarUDF, WindowUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;

use crate::bucket::parse_time_zone;
use crate::{Bucketing, Width};

mod aggregates;
mod fill;
mod time_bucket;
mod time_buckets;
mod window_counter;

/// Registers every function of this module on `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(time_bucket::TimeBucket::new(
        time_bucket::Label::Start,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(time_bucket::TimeBucket::new(
        time_bucket::Label::End,
    )));
    ctx.register_udtf("time_buckets", Arc::new(time_buckets::TimeBuckets));
    ctx.register_udwf(WindowUDF::new_from_impl(fill::Locf::new()));
    ctx.register_udwf(WindowUDF::new_from_impl(fill::Interpolate::new()));
    ctx.register_udwf(WindowUDF::new_from_impl(window_counter::CounterDelta::new()));
    ctx.register_udaf(AggregateUDF::new_from_impl(aggregates::CounterEnergy::new()));
    ctx.register_udaf(AggregateUDF::new_from_impl(aggregates::Integrate::new()));
    ctx.register_udaf(AggregateUDF::new_from_impl(aggregates::Coverage::new()));
}

/// One argument of one function, for error messages: `time_bucket: argument 3 (tz)`.
#[derive(Debug, Clone, Copy)]
struct Arg {
    function: &'static str,
    /// Zero-based.
    index: usize,
    name: &'static str,
}

impl Arg {
    const fn new(function: &'static str, index: usize, name: &'static str) -> Arg {
        Arg {
            function,
            index,
            name,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: argument {} ({})",
            self.function,
            self.index + 1,
            self.name
        )
    }
}

/// Checks the number of arguments against `usage`, such as `(width, time [, tz])`.
fn check_arity(function: &str, usage: &str, given: usize, min: usize, max: usize) -> Result<()> {
    if (min..=max).contains(&given) {
        Ok(())
    } else {
        plan_err!("{function} expects {function}{usage}, got {given} arguments")
    }
}

// Type coercion: each argument kind accepts what a user naturally writes, and names
// the argument when it cannot.

/// An interval, or a string such as '15m' (parsed by [`Width::parse`]).
fn coerce_width(arg: Arg, data_type: &DataType) -> Result<DataType> {
    match data_type {
        DataType::Interval(_) => Ok(DataType::Interval(IntervalUnit::MonthDayNano)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(data_type.clone()),
        DataType::Null => Ok(DataType::Utf8),
        other => plan_err!("{arg} must be an interval or a string such as '15m', got {other}"),
    }
}

/// A string.
fn coerce_string(arg: Arg, data_type: &DataType) -> Result<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(data_type.clone()),
        DataType::Null => Ok(DataType::Utf8),
        other => plan_err!("{arg} must be a string, got {other}"),
    }
}

/// A timestamp of any unit and zone (kept), or a date or string (as a UTC timestamp,
/// the way DataFusion casts them).
fn coerce_timestamp(arg: Arg, data_type: &DataType) -> Result<DataType> {
    match data_type {
        DataType::Timestamp(..) => Ok(data_type.clone()),
        DataType::Null
        | DataType::Date32
        | DataType::Date64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => Ok(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        other => plan_err!("{arg} must be a timestamp, got {other}"),
    }
}

/// Any number, as Float64.
fn coerce_number(arg: Arg, data_type: &DataType) -> Result<DataType> {
    if data_type.is_numeric() || *data_type == DataType::Null {
        Ok(DataType::Float64)
    } else {
        plan_err!("{arg} must be a number, got {data_type}")
    }
}

/// A duration: an interval without months, or a string such as '1h'.
fn coerce_duration(arg: Arg, data_type: &DataType) -> Result<DataType> {
    coerce_width(arg, data_type).map_err(|_| {
        plan_datafusion_err!(
            "{arg} must be an interval or a string such as '1 hour', got {data_type}"
        )
    })
}

// Constant arguments: from a literal (plan time) or a scalar (run time).

/// A bucket width; None for NULL.
fn width_value(arg: Arg, value: &ScalarValue) -> Result<Option<Width>> {
    let width = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            Width::from_interval(v.months, v.days, v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Width::from_interval(0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(months)) => Width::from_interval(*months, 0, 0),
        other if other.is_null() => return Ok(None),
        other => match other.try_as_str() {
            Some(Some(text)) => Width::parse(text),
            _ => {
                return plan_err!(
                    "{arg} must be an interval or a string such as '15m', got {other}"
                );
            }
        },
    };
    width
        .map(Some)
        .map_err(|e| plan_datafusion_err!("{arg}: {e}"))
}

/// A fixed duration in nanoseconds (a day counts 24 hours); None for NULL.
fn duration_value(arg: Arg, value: &ScalarValue) -> Result<Option<i64>> {
    match width_value(arg, value)? {
        None => Ok(None),
        Some(Width::Fixed { nanos }) => Ok(Some(nanos)),
        Some(Width::Days(days)) => Ok(Some(i64::from(days) * 86_400_000_000_000)),
        Some(Width::Months(_)) => {
            plan_err!("{arg} must be a fixed duration such as '1 hour' or '1 day', not months")
        }
    }
}

/// A time zone; None for NULL.
fn time_zone_value(arg: Arg, value: &ScalarValue) -> Result<Option<Tz>> {
    match value.try_as_str() {
        Some(None) => Ok(None),
        Some(Some(name)) => parse_time_zone(name)
            .map(Some)
            .map_err(|e| plan_datafusion_err!("{arg}: {e}")),
        None if value.is_null() => Ok(None),
        None => plan_err!("{arg} must be a time zone name such as 'Europe/Berlin', got {value}"),
    }
}

/// A timestamp in UTC nanoseconds; None for NULL.
fn timestamp_value(arg: Arg, value: &ScalarValue) -> Result<Option<i64>> {
    let nanos = |v: &Option<i64>, unit: TimeUnit| v.map(|v| v.saturating_mul(unit_nanos(unit)));
    match value {
        ScalarValue::TimestampNanosecond(v, _) => Ok(nanos(v, TimeUnit::Nanosecond)),
        ScalarValue::TimestampMicrosecond(v, _) => Ok(nanos(v, TimeUnit::Microsecond)),
        ScalarValue::TimestampMillisecond(v, _) => Ok(nanos(v, TimeUnit::Millisecond)),
        ScalarValue::TimestampSecond(v, _) => Ok(nanos(v, TimeUnit::Second)),
        other if other.is_null() => Ok(None),
        other => plan_err!("{arg} must be a timestamp, got {other}"),
    }
}

/// A number; None for NULL.
fn number_value(arg: Arg, value: &ScalarValue) -> Result<Option<f64>> {
    if value.is_null() {
        return Ok(None);
    }
    match value.cast_to(&DataType::Float64) {
        Ok(ScalarValue::Float64(v)) => Ok(v),
        _ => plan_err!("{arg} must be a number, got {value}"),
    }
}

/// The value of a constant argument given as a logical expression (after the
/// simplifier folded constant expressions), for checks at plan time.
fn literal(arg: Arg, expr: &Expr) -> Result<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Ok(value),
        other => plan_err!("{arg} must be a constant, got {other}"),
    }
}

/// The value of a constant argument given as a physical expression.
fn physical_literal(arg: Arg, expr: &Arc<dyn PhysicalExpr>) -> Result<ScalarValue> {
    match expr.downcast_ref::<Literal>() {
        Some(literal) => Ok(literal.value().clone()),
        None => plan_err!("{arg} must be a constant, got {expr}"),
    }
}

/// The value of a constant argument in row 0 of an evaluated argument array (window
/// functions get their arguments as arrays); None for an empty array.
fn first_value(array: &ArrayRef) -> Result<Option<ScalarValue>> {
    if array.is_empty() {
        return Ok(None);
    }
    ScalarValue::try_from_array(array, 0).map(Some)
}

/// A bucketing from its optional zone and origin (UTC when no zone is given).
fn bucketing(arg: Arg, width: Width, tz: Option<Tz>, origin: Option<i64>) -> Result<Bucketing> {
    Bucketing::new(width, tz.unwrap_or(Tz::UTC), origin)
        .map_err(|e| plan_datafusion_err!("{arg}: {e}"))
}

/// Nanoseconds per `unit`.
fn unit_nanos(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// A timestamp array (any unit) as UTC nanoseconds, nulls kept. Times beyond the
/// nanosecond range (before 1677 or after 2262) saturate.
fn timestamps_as_nanos(arg: Arg, array: &ArrayRef) -> Result<Int64Array> {
    let factor = match array.data_type() {
        DataType::Timestamp(unit, _) => unit_nanos(*unit),
        DataType::Null => 1,
        other => return plan_err!("{arg} must be a timestamp, got {other}"),
    };
    let values = cast(array, &DataType::Int64)?;
    let values = values.as_primitive::<Int64Type>();
    Ok(values.unary(|v| v.saturating_mul(factor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARG: Arg = Arg::new("f", 0, "width");

    #[test]
    fn arguments_are_named() {
        assert_eq!(
            Arg::new("time_bucket", 2, "tz").to_string(),
            "time_bucket: argument 3 (tz)"
        );
    }

    #[test]
    fn widths_from_strings_and_intervals() {
        let text = ScalarValue::Utf8(Some("15m".into()));
        assert_eq!(
            width_value(ARG, &text).unwrap(),
            Some(Width::Fixed {
                nanos: 900_000_000_000
            })
        );
        let mixed = ScalarValue::new_interval_mdn(0, 1, 7_200_000_000_000);
        let error = width_value(ARG, &mixed).unwrap_err().to_string();
        assert!(error.contains("f: argument 1 (width)"), "{error}");
        assert!(error.contains("exactly one of months, days"), "{error}");
        assert_eq!(width_value(ARG, &ScalarValue::Utf8(None)).unwrap(), None);
    }

    #[test]
    fn durations_refuse_months() {
        let month = ScalarValue::new_interval_mdn(1, 0, 0);
        assert!(duration_value(ARG, &month).is_err());
        let day = ScalarValue::Utf8(Some("1 day".into()));
        assert_eq!(duration_value(ARG, &day).unwrap(), Some(86_400_000_000_000));
    }

    #[test]
    fn time_zones_are_named() {
        let bad = ScalarValue::Utf8(Some("Mars/Olympus".into()));
        let error = time_zone_value(ARG, &bad).unwrap_err().to_string();
        assert!(error.contains("'Mars/Olympus'"), "{error}");
    }
}

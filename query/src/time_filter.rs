//! Turns the filters DataFusion pushes into a scan into the [`TimeRange`] the store
//! uses to skip files and rows.
//!
//! Only the `time` column compared with constants is understood: `=`, `<`, `<=`, `>`,
//! `>=`, `BETWEEN`, `IN (...)`, combined with `AND` and `OR`. Constants may be
//! timestamps in any unit, with or without a time zone, dates, or strings; they are
//! converted with the same Arrow cast DataFusion applies when it compares them with
//! the column, so both agree on what a literal means. Anything else (the column
//! wrapped in a function or cast, `NOT`, non-constant bounds, a cast that fails) makes
//! the range unbounded on that side: the range may be too wide, never too narrow. The
//! filters stay `Inexact`, so DataFusion still applies them row by row.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{Between, BinaryExpr, Cast, Expr, Operator, TryCast};
use storage::{TIME_COLUMN, TimeRange};

/// A range that contains no time (`min > max`).
const EMPTY: TimeRange = TimeRange {
    min: i64::MAX,
    max: i64::MIN,
};

/// The times that can satisfy all `filters` (which DataFusion ANDs together).
pub(crate) fn time_range(filters: &[Expr]) -> TimeRange {
    filters.iter().map(range_of).fold(TimeRange::ALL, intersect)
}

/// True when `filter` narrows the time range, i.e. is worth pushing into the scan.
pub(crate) fn constrains_time(filter: &Expr) -> bool {
    range_of(filter) != TimeRange::ALL
}

/// True when the range holds no instant, so the scan can be skipped.
pub(crate) fn is_empty(range: &TimeRange) -> bool {
    range.min > range.max
}

fn range_of(expr: &Expr) -> TimeRange {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => intersect(range_of(left), range_of(right)),
            Operator::Or => hull(range_of(left), range_of(right)),
            _ if is_time(left) => literal_ns(right).map_or(TimeRange::ALL, |v| bound(*op, v)),
            _ if is_time(right) => match op.swap() {
                Some(op) => literal_ns(left).map_or(TimeRange::ALL, |v| bound(op, v)),
                None => TimeRange::ALL,
            },
            _ => TimeRange::ALL,
        },
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr) => TimeRange {
            min: literal_ns(low).unwrap_or(i64::MIN),
            max: literal_ns(high).unwrap_or(i64::MAX),
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_time(expr) => list
            .iter()
            .map(|item| literal_ns(item).map(|v| TimeRange { min: v, max: v }))
            .try_fold(EMPTY, |acc, point| point.map(|p| hull(acc, p)))
            .unwrap_or(TimeRange::ALL),
        _ => TimeRange::ALL,
    }
}

/// The times `time <op> value` admits.
fn bound(op: Operator, value: i64) -> TimeRange {
    match op {
        Operator::Eq => TimeRange {
            min: value,
            max: value,
        },
        Operator::GtEq => TimeRange {
            min: value,
            max: i64::MAX,
        },
        Operator::Gt => match value.checked_add(1) {
            Some(min) => TimeRange { min, max: i64::MAX },
            None => EMPTY,
        },
        Operator::LtEq => TimeRange {
            min: i64::MIN,
            max: value,
        },
        Operator::Lt => match value.checked_sub(1) {
            Some(max) => TimeRange { min: i64::MIN, max },
            None => EMPTY,
        },
        _ => TimeRange::ALL,
    }
}

fn intersect(a: TimeRange, b: TimeRange) -> TimeRange {
    TimeRange {
        min: a.min.max(b.min),
        max: a.max.min(b.max),
    }
}

/// The smallest range containing both.
fn hull(a: TimeRange, b: TimeRange) -> TimeRange {
    if is_empty(&a) {
        b
    } else if is_empty(&b) {
        a
    } else {
        TimeRange {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
        }
    }
}

fn is_time(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(column) if column.name == TIME_COLUMN)
}

/// The instant a constant stands for, in UTC nanoseconds, if it is a constant of a
/// type that compares with `time` and converts without error.
fn literal_ns(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) if is_time_like(&value.data_type()) => to_ns(value),
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field })
            if is_temporal(field.data_type()) =>
        {
            match expr.as_ref() {
                Expr::Literal(value, _) if is_time_like(&value.data_type()) => {
                    to_ns(&value.cast_to(field.data_type()).ok()?)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn to_ns(value: &ScalarValue) -> Option<i64> {
    let utc_ns = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    match value.cast_to(&utc_ns).ok()? {
        ScalarValue::TimestampNanosecond(ns, _) => ns,
        _ => None,
    }
}

fn is_temporal(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    )
}

fn is_time_like(data_type: &DataType) -> bool {
    is_temporal(data_type)
        || matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    const DAY_NS: i64 = 86_400_000_000_000;
    /// 2024-01-01T00:00:00Z
    const JAN1: i64 = 1_704_067_200_000_000_000;

    fn ts_ns(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    }

    fn range(min: i64, max: i64) -> TimeRange {
        TimeRange { min, max }
    }

    #[test]
    fn comparisons_give_inclusive_bounds() {
        let t = || col(TIME_COLUMN);
        assert_eq!(time_range(&[t().gt_eq(ts_ns(10))]), range(10, i64::MAX));
        assert_eq!(time_range(&[t().gt(ts_ns(10))]), range(11, i64::MAX));
        assert_eq!(time_range(&[t().lt_eq(ts_ns(10))]), range(i64::MIN, 10));
        assert_eq!(time_range(&[t().lt(ts_ns(10))]), range(i64::MIN, 9));
        assert_eq!(time_range(&[t().eq(ts_ns(10))]), range(10, 10));
        // Constant on the left: 10 < time.
        assert_eq!(time_range(&[ts_ns(10).lt(t())]), range(11, i64::MAX));
    }

    #[test]
    fn filters_and_conjunctions_intersect() {
        let t = || col(TIME_COLUMN);
        let and = t().gt_eq(ts_ns(10)).and(t().lt(ts_ns(20)));
        assert_eq!(time_range(&[and]), range(10, 19));
        let separate = [t().gt_eq(ts_ns(10)), t().lt_eq(ts_ns(20))];
        assert_eq!(time_range(&separate), range(10, 20));
        let between = t().between(ts_ns(5), ts_ns(7));
        assert_eq!(time_range(&[between]), range(5, 7));
        let contradiction = [t().gt(ts_ns(20)), t().lt(ts_ns(10))];
        assert!(is_empty(&time_range(&contradiction)));
    }

    #[test]
    fn disjunctions_and_lists_take_the_hull() {
        let t = || col(TIME_COLUMN);
        let or = t().eq(ts_ns(10)).or(t().eq(ts_ns(30)));
        assert_eq!(time_range(&[or]), range(10, 30));
        let in_list = t().in_list(vec![ts_ns(30), ts_ns(10), ts_ns(20)], false);
        assert_eq!(time_range(&[in_list]), range(10, 30));
        // One side unbounded makes the whole OR unbounded.
        let open = t().eq(ts_ns(10)).or(col("host").eq(lit("a")));
        assert_eq!(time_range(&[open]), TimeRange::ALL);
    }

    #[test]
    fn literal_styles_agree() {
        let t = || col(TIME_COLUMN);
        let styles = [
            lit("2024-01-01T00:00:00Z"),
            lit("2024-01-01 00:00:00"),
            lit(ScalarValue::TimestampSecond(
                Some(JAN1 / 1_000_000_000),
                None,
            )),
            lit(ScalarValue::TimestampMillisecond(
                Some(JAN1 / 1_000_000),
                Some("+02:00".into()),
            )),
            lit(ScalarValue::Date32(Some((JAN1 / DAY_NS) as i32))),
            Expr::Cast(Cast::new(
                Box::new(lit("2024-01-01T02:00:00+02:00")),
                DataType::Timestamp(TimeUnit::Microsecond, None),
            )),
        ];
        for style in styles {
            let filter = t().gt_eq(style.clone());
            assert_eq!(time_range(&[filter]), range(JAN1, i64::MAX), "{style}");
        }
    }

    #[test]
    fn anything_unclear_is_unbounded() {
        let t = || col(TIME_COLUMN);
        let unclear = [
            col("host").eq(lit("a")),
            t().gt_eq(lit("not a time")),
            t().gt_eq(lit(5_i64)),
            t().gt_eq(lit(ScalarValue::TimestampNanosecond(None, None))),
            t().not_between(ts_ns(5), ts_ns(7)),
            t().in_list(vec![ts_ns(1), col("other")], false),
            Expr::Not(Box::new(t().gt_eq(ts_ns(10)))),
            Expr::Cast(Cast::new(Box::new(t()), DataType::Date32)).gt_eq(ts_ns(10)),
            t().not_eq(ts_ns(10)),
        ];
        for filter in unclear {
            assert_eq!(
                time_range(std::slice::from_ref(&filter)),
                TimeRange::ALL,
                "{filter}"
            );
            assert!(!constrains_time(&filter), "{filter}");
        }
    }

    #[test]
    fn strict_bounds_at_the_edges_are_empty() {
        let t = || col(TIME_COLUMN);
        assert!(is_empty(&time_range(&[t().gt(ts_ns(i64::MAX))])));
        assert!(is_empty(&time_range(&[t().lt(ts_ns(i64::MIN))])));
    }
}

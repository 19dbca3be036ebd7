//! `time_buckets(width, from, to [, tz [, origin]])`: a table of every bucket start of
//! `[from, to)`, one column `bucket`, for filling gaps with a LEFT JOIN.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use super::{Arg, bucketing, check_arity, literal, time_zone_value, timestamp_value, width_value};
use crate::bucket::local_to_utc;

/// The most buckets one call may produce (8 MB of timestamps): more is a mistake
/// (a width of seconds over years) rather than a gap-filling query.
const MAX_BUCKETS: usize = 1_000_000;

const NAMES: [&str; 5] = ["width", "from", "to", "tz", "origin"];

fn arg(index: usize) -> Arg {
    Arg::new("time_buckets", index, NAMES[index])
}

/// The `time_buckets` table function.
#[derive(Debug)]
pub(super) struct TimeBuckets;

impl TableFunctionImpl for TimeBuckets {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        check_arity(
            "time_buckets",
            "(width, from, to [, tz [, origin]])",
            exprs.len(),
            3,
            5,
        )?;
        let values = constants(args.session(), exprs)?;
        // DataFusion tells table scans apart by table name and schema only, so two
        // calls with different arguments in one query would be merged as one common
        // subexpression; the arguments in the schema's metadata keep them apart.
        let call = values
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let schema = Arc::new(
            Schema::new(vec![Field::new(
                "bucket",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            )])
            .with_metadata(HashMap::from([("gridlake.time_buckets".to_owned(), call)])),
        );
        // A NULL argument: no buckets.
        let starts = bucket_starts(&values)?.unwrap_or_default();
        let column = TimestampNanosecondArray::from(starts).with_timezone("UTC");
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)])?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

/// The arguments folded to constants: `now() - INTERVAL '1 day'` is one too.
fn constants(session: &dyn Session, exprs: &[Expr]) -> Result<Vec<ScalarValue>> {
    let context = SimplifyContext::builder()
        .with_config_options(Arc::new(session.config_options().clone()))
        .with_query_execution_start_time(session.execution_props().query_execution_start_time)
        .build();
    let simplifier = ExprSimplifier::new(context);
    exprs
        .iter()
        .enumerate()
        .map(|(index, expr)| {
            let simplified = simplifier.simplify(expr.clone())?;
            literal(arg(index), &simplified).cloned()
        })
        .collect()
}

/// The bucket starts, or None when an argument is NULL.
fn bucket_starts(values: &[ScalarValue]) -> Result<Option<Vec<i64>>> {
    let Some(width) = width_value(arg(0), &values[0])? else {
        return Ok(None);
    };
    let tz = match values.get(3) {
        Some(tz) => match time_zone_value(arg(3), tz)? {
            Some(tz) => Some(tz),
            None => return Ok(None),
        },
        None => None,
    };
    let zone = tz.unwrap_or(Tz::UTC);
    let (Some(from), Some(to)) = (
        instant(arg(1), &values[1], zone)?,
        instant(arg(2), &values[2], zone)?,
    ) else {
        return Ok(None);
    };
    let origin = match values.get(4) {
        Some(origin) => match instant(arg(4), origin, zone)? {
            Some(origin) => Some(origin),
            None => return Ok(None),
        },
        None => None,
    };
    let bucketing = bucketing(arg(0), width, tz, origin)?;
    let mut starts = Vec::new();
    if from >= to {
        return Ok(Some(starts));
    }
    let mut start = bucketing.start(from);
    while start < to {
        if starts.len() == MAX_BUCKETS {
            return plan_err!(
                "time_buckets: more than {MAX_BUCKETS} buckets from argument 2 (from) to \
                 argument 3 (to); use a wider width or a shorter range"
            );
        }
        starts.push(start);
        let next = bucketing.next(start);
        if next <= start {
            break;
        }
        start = next;
    }
    Ok(Some(starts))
}

/// A point in time from a timestamp, a date (local midnight in `tz`) or text. Text
/// with a UTC offset (RFC 3339) is that instant; text without one is a local time in
/// `tz`, so `time_buckets('15m', '2024-03-31', '2024-04-01', 'Europe/Berlin')` is the
/// local day.
fn instant(arg: Arg, value: &ScalarValue, tz: Tz) -> Result<Option<i64>> {
    if value.is_null() {
        return Ok(None);
    }
    if let ScalarValue::Date32(Some(days)) = value {
        let date = NaiveDate::from_epoch_days(*days);
        return match date.and_then(|d| local_to_utc(tz, d.and_time(chrono::NaiveTime::MIN))) {
            Some(t) => Ok(Some(t)),
            None => plan_err!("{arg}: {value} is out of range"),
        };
    }
    let Some(Some(text)) = value.try_as_str() else {
        return timestamp_value(arg, value);
    };
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return match time.timestamp_nanos_opt() {
            Some(t) => Ok(Some(t)),
            None => plan_err!("{arg}: '{text}' is out of range"),
        };
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|d| d.and_time(chrono::NaiveTime::MIN))
    });
    match local.and_then(|local| local_to_utc(tz, local)) {
        Some(t) => Ok(Some(t)),
        None => plan_err!(
            "{arg}: '{text}' is not a time: expected '2024-03-31', '2024-03-31 02:30:00' \
             (local time in the tz argument) or '2024-03-31T00:30:00Z'"
        ),
    }
}

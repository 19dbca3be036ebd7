//! Gap filling window functions: `locf(value)` carries the last non-null value forward,
//! `interpolate(value, time)` draws a straight line in time between non-null values.
//! Both see the whole partition in the window's order (the frame is ignored).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, UInt64Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDFImpl};

use super::{Arg, check_arity, coerce_number};

/// `locf(value)`: last observation carried forward.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Locf {
    signature: Signature,
}

impl Locf {
    pub(super) fn new() -> Locf {
        Locf {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for Locf {
    fn name(&self) -> &str {
        "locf"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs<'_>,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(LocfEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs<'_>) -> Result<FieldRef> {
        let Some(input) = field_args.get_input_field(0) else {
            return plan_err!("locf expects locf(value), got no argument");
        };
        Ok(Arc::new(Field::new(
            field_args.name(),
            input.data_type().clone(),
            true,
        )))
    }
}

#[derive(Debug)]
struct LocfEvaluator;

impl PartitionEvaluator for LocfEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let value = &values[0];
        // Logical nulls: a NullArray (from `locf(NULL)`) has no null buffer.
        let nulls = value.logical_nulls();
        let mut last = None;
        let indices: UInt64Array = (0..num_rows)
            .map(|row| {
                if nulls.as_ref().is_none_or(|n| n.is_valid(row)) {
                    last = Some(row as u64);
                }
                last
            })
            .collect();
        Ok(take(value.as_ref(), &indices, None)?)
    }
}

/// `interpolate(value, time)`: linear interpolation in time.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Interpolate {
    signature: Signature,
}

impl Interpolate {
    pub(super) fn new() -> Interpolate {
        Interpolate {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const VALUE: Arg = Arg::new("interpolate", 0, "value");
const TIME: Arg = Arg::new("interpolate", 1, "time");

impl WindowUDFImpl for Interpolate {
    fn name(&self) -> &str {
        "interpolate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity("interpolate", "(value, time)", arg_types.len(), 2, 2)?;
        let time = match &arg_types[1] {
            DataType::Timestamp(..) => arg_types[1].clone(),
            DataType::Null => DataType::Int64,
            t if t.is_integer() => DataType::Int64,
            other => return plan_err!("{TIME} must be a timestamp or an integer, got {other}"),
        };
        Ok(vec![coerce_number(VALUE, &arg_types[0])?, time])
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs<'_>,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(InterpolateEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs<'_>) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }
}

#[derive(Debug)]
struct InterpolateEvaluator;

impl PartitionEvaluator for InterpolateEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let value = cast(&values[0], &DataType::Float64)?;
        let value = value.as_primitive::<Float64Type>();
        // The unit does not matter: only ratios of time differences are used.
        let time = cast(&values[1], &DataType::Int64)?;
        let time = time.as_primitive::<Int64Type>();
        let value_at = |row: usize| value.is_valid(row).then(|| value.value(row));
        let time_at = |row: usize| time.is_valid(row).then(|| time.value(row));

        check_order(num_rows, time_at)?;
        // Anchors: rows with both a value and a time, in row (= time) order.
        let anchors: Vec<usize> = (0..num_rows)
            .filter(|&row| value_at(row).is_some() && time_at(row).is_some())
            .collect();
        let mut next_anchor = 0;
        let result: Float64Array = (0..num_rows)
            .map(|row| {
                while next_anchor < anchors.len() && anchors[next_anchor] < row {
                    next_anchor += 1;
                }
                if let Some(v) = value_at(row) {
                    return Some(v);
                }
                let t = time_at(row)?;
                let before = *anchors.get(next_anchor.checked_sub(1)?)?;
                let after = *anchors.get(next_anchor)?;
                let (t0, v0) = (time_at(before)?, value_at(before)?);
                let (t1, v1) = (time_at(after)?, value_at(after)?);
                if t1 == t0 {
                    return Some(v0);
                }
                // Differences first: nanosecond epochs do not fit an f64 exactly.
                let fraction = (t - t0) as f64 / (t1 - t0) as f64;
                Some(v0 + (v1 - v0) * fraction)
            })
            .collect();
        Ok(Arc::new(result))
    }
}

/// Refuses rows whose times go backwards: the window must be ordered by the time.
fn check_order(num_rows: usize, time_at: impl Fn(usize) -> Option<i64>) -> Result<()> {
    let mut previous = i64::MIN;
    for row in 0..num_rows {
        if let Some(t) = time_at(row) {
            if t < previous {
                return exec_err!(
                    "interpolate: rows must be in the order of argument 2 (time): add ORDER \
                     BY <time> to the OVER clause"
                );
            }
            previous = t;
        }
    }
    Ok(())
}

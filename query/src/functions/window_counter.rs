//! `counter_delta(register, time [, max_gap [, max_power_w]]) OVER (PARTITION BY
//! <series> ORDER BY time)`: the energy of the step to each reading, by
//! [`counter::deltas`](crate::counter::deltas). Summed per bucket it is the exact energy
//! of the bucket, each step attributed to the bucket of its later reading.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::function::{
    PartitionEvaluatorArgs, WindowFunctionSimplification, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{Expr, PartitionEvaluator, Signature, Volatility, WindowUDFImpl};

use super::{
    Arg, check_arity, coerce_duration, coerce_number, coerce_timestamp, duration_value,
    first_value, literal, number_value, timestamps_as_nanos,
};
use crate::counter::{CounterRules, deltas};

const NAMES: [&str; 4] = ["register", "time", "max_gap", "max_power_w"];
pub(super) const USAGE: &str = "(register, time [, max_gap [, max_power_w]])";

fn arg(function: &'static str, index: usize) -> Arg {
    Arg::new(function, index, NAMES[index])
}

/// Coerces the arguments of `counter_delta` and `counter_energy`.
pub(super) fn coerce(function: &'static str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    check_arity(function, USAGE, arg_types.len(), 2, 4)?;
    arg_types
        .iter()
        .enumerate()
        .map(|(index, data_type)| match index {
            0 => coerce_number(arg(function, 0), data_type),
            1 => coerce_timestamp(arg(function, 1), data_type),
            2 => coerce_duration(arg(function, 2), data_type),
            _ => coerce_number(arg(function, 3), data_type),
        })
        .collect()
}

/// The rules from the optional constant arguments (`None` where not given). A NULL
/// max_gap means no gap limit, a NULL max_power_w the default (1 MW).
pub(super) fn rules(
    function: &'static str,
    max_gap: Option<&ScalarValue>,
    max_power_w: Option<&ScalarValue>,
) -> Result<CounterRules> {
    let mut rules = CounterRules::DEFAULT;
    if let Some(max_gap) = max_gap {
        rules.max_gap_ns = duration_value(arg(function, 2), max_gap)?;
    }
    if let Some(max_power_w) = max_power_w
        && let Some(limit) = number_value(arg(function, 3), max_power_w)?
    {
        if limit.is_nan() || limit <= 0.0 {
            return datafusion::common::plan_err!(
                "{} must be a positive number of watts, got {limit}",
                arg(function, 3)
            );
        }
        rules.max_power_w = limit;
    }
    Ok(rules)
}

/// Checks at plan time that the optional arguments are valid constants.
pub(super) fn check_constants(function: &'static str, args: &[Expr]) -> Result<()> {
    let max_gap = args
        .get(2)
        .map(|e| literal(arg(function, 2), e))
        .transpose()?;
    let max_power = args
        .get(3)
        .map(|e| literal(arg(function, 3), e))
        .transpose()?;
    rules(function, max_gap, max_power).map(|_| ())
}

/// The `counter_delta` window function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct CounterDelta {
    signature: Signature,
}

impl CounterDelta {
    pub(super) fn new() -> CounterDelta {
        CounterDelta {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for CounterDelta {
    fn name(&self) -> &str {
        "counter_delta"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce("counter_delta", arg_types)
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs<'_>,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(CounterDeltaEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs<'_>) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }

    /// Not a rewrite: checks the constant arguments while planning, so mistakes are
    /// plan errors.
    fn simplify(&self) -> Option<WindowFunctionSimplification> {
        Some(Box::new(|function: WindowFunction, _context| {
            check_constants("counter_delta", &function.params.args)?;
            Ok(Expr::WindowFunction(Box::new(function)))
        }))
    }
}

#[derive(Debug)]
struct CounterDeltaEvaluator;

impl PartitionEvaluator for CounterDeltaEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let max_gap = values.get(2).map(first_value).transpose()?.flatten();
        let max_power = values.get(3).map(first_value).transpose()?.flatten();
        let rules = rules("counter_delta", max_gap.as_ref(), max_power.as_ref())?;
        let register = cast(&values[0], &DataType::Float64)?;
        let register = register.as_primitive::<Float64Type>();
        let time = timestamps_as_nanos(arg("counter_delta", 1), &values[1])?;
        let (times, readings) = readings("counter_delta", register, &time, num_rows)?;
        let result: Float64Array = deltas(&rules, &times, &readings).into_iter().collect();
        Ok(Arc::new(result))
    }
}

/// Times and register values of the rows, a row without either as a missing (NaN)
/// reading at the previous time. Refuses times going backwards.
fn readings(
    function: &str,
    register: &arrow::array::Float64Array,
    time: &arrow::array::Int64Array,
    num_rows: usize,
) -> Result<(Vec<i64>, Vec<f64>)> {
    let mut times = Vec::with_capacity(num_rows);
    let mut values = Vec::with_capacity(num_rows);
    let mut previous = i64::MIN;
    for row in 0..num_rows {
        if time.is_valid(row) && register.is_valid(row) {
            let t = time.value(row);
            if t < previous {
                return exec_err!(
                    "{function}: rows must be in the order of argument 2 (time): add ORDER BY \
                     <time> to the OVER clause"
                );
            }
            previous = t;
            times.push(t);
            values.push(register.value(row));
        } else {
            times.push(previous);
            values.push(f64::NAN);
        }
    }
    Ok((times, values))
}

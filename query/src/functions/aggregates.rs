//! Aggregates over a group's readings, in time order whatever order the rows arrive
//! in: `counter_energy` (energy between the group's register readings), `integrate`
//! (trapezoidal energy of a power series) and `coverage` (share of sample slots
//! present in a bucket).
//!
//! Each keeps the group's times (and values) and sorts them when evaluated; the state
//! is the lists themselves, so partial aggregates from several partitions merge exactly.
//! Memory is 16 bytes per reading of the group, as for `array_agg`.

use std::collections::BTreeSet;
use std::mem::size_of;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use chrono_tz::Tz;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Expr, Signature, Volatility};

use super::window_counter::{check_constants, coerce as coerce_counter, rules};
use super::{
    Arg, bucketing, check_arity, coerce_duration, coerce_number, coerce_string, coerce_timestamp,
    coerce_width, duration_value, literal, physical_literal, time_zone_value, timestamp_value,
    timestamps_as_nanos, width_value,
};
use crate::Bucketing;
use crate::counter::{CounterRules, deltas};

/// Nanoseconds per hour.
const HOUR_NS: f64 = 3_600_000_000_000.0;

/// The constant argument at `index` of an accumulator, if given.
fn constant(args: &AccumulatorArgs<'_>, arg: Arg) -> Result<Option<ScalarValue>> {
    args.exprs
        .get(arg.index)
        .map(|expr| physical_literal(arg, expr))
        .transpose()
}

/// Readings of one group: UTC nanoseconds and values (unused by `coverage`).
#[derive(Debug, Default)]
struct Readings {
    times: Vec<i64>,
    values: Vec<f64>,
}

impl Readings {
    /// Adds the rows with a time and a finite value. `values` None: times only.
    fn update(&mut self, arg: Arg, time: &ArrayRef, values: Option<&ArrayRef>) -> Result<()> {
        let time = timestamps_as_nanos(arg, time)?;
        match values {
            Some(values) => {
                let values = cast(values, &DataType::Float64)?;
                let values = values.as_primitive::<Float64Type>();
                for row in 0..time.len() {
                    if time.is_valid(row) && values.is_valid(row) && values.value(row).is_finite() {
                        self.times.push(time.value(row));
                        self.values.push(values.value(row));
                    }
                }
            }
            None => self.times.extend(time.iter().flatten()),
        }
        Ok(())
    }

    /// The state: a list of times and, with values, a list of values.
    fn state(&self, with_values: bool) -> Vec<ScalarValue> {
        let times = Arc::new(Int64Array::from(self.times.clone())) as ArrayRef;
        let mut state = vec![list(times, DataType::Int64)];
        if with_values {
            let values = Arc::new(Float64Array::from(self.values.clone())) as ArrayRef;
            state.push(list(values, DataType::Float64));
        }
        state
    }

    fn merge(&mut self, states: &[ArrayRef]) -> Result<()> {
        let times = states[0].as_list::<i32>();
        for row in 0..times.len() {
            if times.is_valid(row) {
                let list = times.value(row);
                self.times
                    .extend(list.as_primitive::<Int64Type>().iter().flatten());
            }
        }
        if let Some(values) = states.get(1) {
            let values = values.as_list::<i32>();
            for row in 0..values.len() {
                if values.is_valid(row) {
                    let list = values.value(row);
                    self.values
                        .extend(list.as_primitive::<Float64Type>().iter().flatten());
                }
            }
            if self.values.len() != self.times.len() {
                return exec_err!("aggregate state with unequal times and values");
            }
        }
        Ok(())
    }

    /// Times and values sorted by time (stable: equal times keep their order).
    fn sorted(&self) -> (Vec<i64>, Vec<f64>) {
        let mut order: Vec<usize> = (0..self.times.len()).collect();
        order.sort_by_key(|&i| self.times[i]);
        let times = order.iter().map(|&i| self.times[i]).collect();
        let values = order
            .iter()
            .map(|&i| self.values.get(i).copied().unwrap_or(f64::NAN))
            .collect();
        (times, values)
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.times.capacity() * size_of::<i64>()
            + self.values.capacity() * size_of::<f64>()
    }
}

/// One row's list scalar holding `values`.
fn list(values: ArrayRef, item: DataType) -> ScalarValue {
    let offsets = OffsetBuffer::from_lengths([values.len()]);
    let field = Arc::new(Field::new_list_field(item, true));
    ScalarValue::List(Arc::new(ListArray::new(field, offsets, values, None)))
}

/// The state fields: `times` (and `values`) lists.
fn state_fields(name: &str, with_values: bool) -> Vec<FieldRef> {
    let mut fields = vec![Arc::new(Field::new_list(
        format_state_name(name, "times"),
        Field::new_list_field(DataType::Int64, true),
        true,
    ))];
    if with_values {
        fields.push(Arc::new(Field::new_list(
            format_state_name(name, "values"),
            Field::new_list_field(DataType::Float64, true),
            true,
        )));
    }
    fields
}

// counter_energy

/// `counter_energy(register, time [, max_gap [, max_power_w]])`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct CounterEnergy {
    signature: Signature,
}

impl CounterEnergy {
    pub(super) fn new() -> CounterEnergy {
        CounterEnergy {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for CounterEnergy {
    fn name(&self) -> &str {
        "counter_energy"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_counter("counter_energy", arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let max_gap = constant(&args, Arg::new("counter_energy", 2, "max_gap"))?;
        let max_power = constant(&args, Arg::new("counter_energy", 3, "max_power_w"))?;
        let rules = rules("counter_energy", max_gap.as_ref(), max_power.as_ref())?;
        Ok(Box::new(CounterEnergyAccumulator {
            rules,
            readings: Readings::default(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name, true))
    }

    /// Not a rewrite: checks the constant arguments while planning.
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(Box::new(|function: AggregateFunction, _context| {
            check_constants("counter_energy", &function.params.args)?;
            Ok(Expr::AggregateFunction(function))
        }))
    }
}

#[derive(Debug)]
struct CounterEnergyAccumulator {
    rules: CounterRules,
    readings: Readings,
}

impl Accumulator for CounterEnergyAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let time = Arg::new("counter_energy", 1, "time");
        self.readings.update(time, &values[1], Some(&values[0]))
    }

    /// The sum of the attributed steps; NULL when no step is (fewer than two readings,
    /// or every step longer than max_gap).
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (times, values) = self.readings.sorted();
        let steps = deltas(&self.rules, &times, &values);
        let energy = steps
            .into_iter()
            .flatten()
            .fold(None, |sum: Option<f64>, step| {
                Some(sum.unwrap_or(0.0) + step)
            });
        Ok(ScalarValue::Float64(energy))
    }

    fn size(&self) -> usize {
        self.readings.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.readings.state(true))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.readings.merge(states)
    }
}

// integrate

const INTEGRATE_NAMES: [&str; 3] = ["power_w", "time", "max_gap"];

fn integrate_arg(index: usize) -> Arg {
    Arg::new("integrate", index, INTEGRATE_NAMES[index])
}

/// `integrate(power_w, time [, max_gap])`: trapezoidal energy in Wh.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Integrate {
    signature: Signature,
}

impl Integrate {
    pub(super) fn new() -> Integrate {
        Integrate {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The gap limit from the optional argument (None: no limit).
fn integrate_max_gap(value: Option<&ScalarValue>) -> Result<Option<i64>> {
    match value {
        Some(value) => duration_value(integrate_arg(2), value),
        None => Ok(None),
    }
}

impl AggregateUDFImpl for Integrate {
    fn name(&self) -> &str {
        "integrate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(
            "integrate",
            "(power_w, time [, max_gap])",
            arg_types.len(),
            2,
            3,
        )?;
        arg_types
            .iter()
            .enumerate()
            .map(|(index, data_type)| match index {
                0 => coerce_number(integrate_arg(0), data_type),
                1 => coerce_timestamp(integrate_arg(1), data_type),
                _ => coerce_duration(integrate_arg(2), data_type),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let max_gap = integrate_max_gap(constant(&args, integrate_arg(2))?.as_ref())?;
        Ok(Box::new(IntegrateAccumulator {
            max_gap,
            readings: Readings::default(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name, true))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(Box::new(|function: AggregateFunction, _context| {
            if let Some(max_gap) = function.params.args.get(2) {
                integrate_max_gap(Some(literal(integrate_arg(2), max_gap)?))?;
            }
            Ok(Expr::AggregateFunction(function))
        }))
    }
}

#[derive(Debug)]
struct IntegrateAccumulator {
    max_gap: Option<i64>,
    readings: Readings,
}

impl Accumulator for IntegrateAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.readings
            .update(integrate_arg(1), &values[1], Some(&values[0]))
    }

    /// Sum over consecutive readings of (p0 + p1) / 2 × hours; a pair further apart
    /// than max_gap adds nothing. NULL when no pair counts.
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (times, values) = self.readings.sorted();
        let mut energy = None;
        for i in 1..times.len() {
            let gap = times[i] - times[i - 1];
            if self.max_gap.is_some_and(|max| gap > max) {
                continue;
            }
            let wh = (values[i - 1] + values[i]) / 2.0 * (gap as f64 / HOUR_NS);
            energy = Some(energy.unwrap_or(0.0) + wh);
        }
        Ok(ScalarValue::Float64(energy))
    }

    fn size(&self) -> usize {
        self.readings.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.readings.state(true))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.readings.merge(states)
    }
}

// coverage

const COVERAGE_NAMES: [&str; 5] = ["time", "sample_interval", "bucket_width", "tz", "origin"];

fn coverage_arg(index: usize) -> Arg {
    Arg::new("coverage", index, COVERAGE_NAMES[index])
}

/// `coverage(time, sample_interval, bucket_width [, tz [, origin]])`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Coverage {
    signature: Signature,
}

impl Coverage {
    pub(super) fn new() -> Coverage {
        Coverage {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// What coverage measures against; None when an argument is NULL.
#[derive(Debug, Clone, Copy)]
struct Slots {
    sample_ns: i64,
    bucketing: Bucketing,
}

fn slots(values: &[Option<&ScalarValue>]) -> Result<Option<Slots>> {
    let value = |index: usize| values.get(index).copied().flatten();
    let (Some(sample), Some(width)) = (value(1), value(2)) else {
        return plan_err!(
            "coverage expects coverage(time, sample_interval, bucket_width [, tz [, origin]])"
        );
    };
    let Some(sample_ns) = duration_value(coverage_arg(1), sample)? else {
        return Ok(None);
    };
    if sample_ns <= 0 {
        return plan_err!("{} must be positive", coverage_arg(1));
    }
    let Some(width) = width_value(coverage_arg(2), width)? else {
        return Ok(None);
    };
    let tz: Option<Tz> = match value(3) {
        Some(tz) => match time_zone_value(coverage_arg(3), tz)? {
            Some(tz) => Some(tz),
            None => return Ok(None),
        },
        None => None,
    };
    let origin = match value(4) {
        Some(origin) => match timestamp_value(coverage_arg(4), origin)? {
            Some(origin) => Some(origin),
            None => return Ok(None),
        },
        None => None,
    };
    let bucketing = bucketing(coverage_arg(2), width, tz, origin)?;
    Ok(Some(Slots {
        sample_ns,
        bucketing,
    }))
}

impl AggregateUDFImpl for Coverage {
    fn name(&self) -> &str {
        "coverage"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(
            "coverage",
            "(time, sample_interval, bucket_width [, tz [, origin]])",
            arg_types.len(),
            3,
            5,
        )?;
        arg_types
            .iter()
            .enumerate()
            .map(|(index, data_type)| match index {
                0 | 4 => coerce_timestamp(coverage_arg(index), data_type),
                1 => coerce_duration(coverage_arg(1), data_type),
                2 => coerce_width(coverage_arg(2), data_type),
                _ => coerce_string(coverage_arg(3), data_type),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        let constants = (1..args.exprs.len())
            .map(|index| constant(&args, coverage_arg(index)))
            .collect::<Result<Vec<_>>>()?;
        let mut values = vec![None];
        values.extend(constants.iter().map(Option::as_ref));
        Ok(Box::new(CoverageAccumulator {
            slots: slots(&values)?,
            readings: Readings::default(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name, false))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(Box::new(|function: AggregateFunction, _context| {
            let mut values = vec![None];
            for (index, expr) in function.params.args.iter().enumerate().skip(1) {
                values.push(Some(literal(coverage_arg(index), expr)?));
            }
            slots(&values)?;
            Ok(Expr::AggregateFunction(function))
        }))
    }
}

#[derive(Debug)]
struct CoverageAccumulator {
    slots: Option<Slots>,
    readings: Readings,
}

impl Accumulator for CoverageAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.readings.update(coverage_arg(0), &values[0], None)
    }

    /// Distinct sample slots with a reading / slots in the bucket of the earliest time.
    /// Slots start at the bucket start; times outside that bucket are ignored. NULL
    /// for an empty group or a NULL argument.
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (Some(slots), Some(&first)) = (self.slots, self.readings.times.iter().min()) else {
            return Ok(ScalarValue::Float64(None));
        };
        let start = slots.bucketing.start(first);
        let end = slots.bucketing.next(start);
        // Rounded up: a last, shorter slot still expects a reading. (`div_ceil` on
        // signed integers is unstable.)
        let sample = i128::from(slots.sample_ns);
        let expected = (i128::from(end) - i128::from(start) + sample - 1) / sample;
        let present: BTreeSet<i64> = self
            .readings
            .times
            .iter()
            .filter(|&&t| t >= start && t < end)
            .map(|&t| (t - start) / slots.sample_ns)
            .collect();
        Ok(ScalarValue::Float64(Some(
            present.len() as f64 / expected as f64,
        )))
    }

    fn size(&self) -> usize {
        self.readings.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.readings.state(false))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.readings.merge(states)
    }
}

//! `time_bucket(width, time [, tz [, origin]])` and `time_bucket_end(...)`: the bucket
//! a time falls in, labelled by its start or (for interval-ending meter values) its end.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{
    Arg, bucketing, check_arity, coerce_string, coerce_timestamp, coerce_width, literal,
    time_zone_value, timestamp_value, timestamps_as_nanos, unit_nanos, width_value,
};
use crate::Bucketing;

/// Which end of the bucket labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Label {
    /// `time_bucket`: buckets are `[start, end)`, labelled by start.
    Start,
    /// `time_bucket_end`: buckets are `(start, end]`, labelled by end.
    End,
}

/// `time_bucket` or `time_bucket_end`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct TimeBucket {
    label: Label,
    signature: Signature,
}

impl TimeBucket {
    pub(super) fn new(label: Label) -> TimeBucket {
        TimeBucket {
            label,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn function(&self) -> &'static str {
        match self.label {
            Label::Start => "time_bucket",
            Label::End => "time_bucket_end",
        }
    }

    fn arg(&self, index: usize) -> Arg {
        let name = ["width", "time", "tz", "origin"][index];
        Arg::new(self.function(), index, name)
    }

    /// The bucketing from the constant arguments (`None` at the index of `time`), or
    /// None when one of them is NULL.
    fn bucketing(&self, constants: &[Option<&ScalarValue>]) -> Result<Option<Bucketing>> {
        let value = |index: usize| constants.get(index).copied().flatten();
        let Some(width) = value(0) else {
            return Ok(None);
        };
        let Some(width) = width_value(self.arg(0), width)? else {
            return Ok(None);
        };
        let tz = match value(2) {
            Some(tz) => match time_zone_value(self.arg(2), tz)? {
                Some(tz) => Some(tz),
                None => return Ok(None),
            },
            None => None,
        };
        let origin = match value(3) {
            Some(origin) => match timestamp_value(self.arg(3), origin)? {
                Some(origin) => Some(origin),
                None => return Ok(None),
            },
            None => None,
        };
        bucketing(self.arg(0), width, tz, origin).map(Some)
    }

    /// Buckets every time of `times` (a timestamp array of any unit).
    fn bucket(&self, bucketing: &Bucketing, times: &ArrayRef) -> Result<ArrayRef> {
        let DataType::Timestamp(unit, _) = times.data_type() else {
            return exec_err!("{} must be a timestamp", self.arg(1));
        };
        let factor = unit_nanos(*unit);
        let nanos = timestamps_as_nanos(self.arg(1), times)?;
        let label = self.label;
        let labelled = nanos.unary::<_, arrow::datatypes::Int64Type>(|t| {
            let bucket = match label {
                Label::Start => bucketing.start(t),
                Label::End => bucketing.end_label(t),
            };
            // Back to the input's unit; a bucket boundary is a whole unit unless the
            // width is finer than the unit.
            bucket.div_euclid(factor)
        });
        Ok(cast(&labelled, times.data_type())?)
    }
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        self.function()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(
            self.function(),
            "(width, time [, tz [, origin]])",
            arg_types.len(),
            2,
            4,
        )?;
        arg_types
            .iter()
            .enumerate()
            .map(|(index, data_type)| match index {
                0 => coerce_width(self.arg(0), data_type),
                1 | 3 => coerce_timestamp(self.arg(index), data_type),
                _ => coerce_string(self.arg(2), data_type),
            })
            .collect()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(data_type @ DataType::Timestamp(..)) => Ok(data_type.clone()),
            Some(other) => plan_err!("{} must be a timestamp, got {other}", self.arg(1)),
            None => plan_err!("{} is missing", self.arg(1)),
        }
    }

    /// Checks the constant arguments while planning, so a bad width or zone is a plan
    /// error naming the argument rather than a failure halfway through a scan.
    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let return_type = self.return_type(&types)?;
        let mut constants: Vec<Option<&ScalarValue>> = args.scalar_arguments.to_vec();
        if let Some(time) = constants.get_mut(1) {
            *time = None;
        }
        self.bucketing(&constants)?;
        Ok(Arc::new(Field::new(self.function(), return_type, true)))
    }

    /// Not a rewrite: refuses a width, zone or origin that is not a constant while
    /// planning (the simplifier has folded constant expressions by now).
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        for (index, arg) in args.iter().enumerate() {
            if index != 1 {
                literal(self.arg(index), arg)?;
            }
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mut constants = Vec::with_capacity(args.args.len());
        for (index, value) in args.args.iter().enumerate() {
            match value {
                _ if index == 1 => constants.push(None),
                ColumnarValue::Scalar(scalar) => constants.push(Some(scalar)),
                ColumnarValue::Array(_) => {
                    return exec_err!("{} must be a constant", self.arg(index));
                }
            }
        }
        let return_type = args.return_type().clone();
        let Some(bucketing) = self.bucketing(&constants)? else {
            // A NULL width, zone or origin: every bucket is NULL.
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from(&return_type)?));
        };
        match &args.args[1] {
            ColumnarValue::Array(times) => {
                Ok(ColumnarValue::Array(self.bucket(&bucketing, times)?))
            }
            ColumnarValue::Scalar(time) => {
                let times = time.to_array()?;
                let bucketed = self.bucket(&bucketing, &times)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &bucketed, 0,
                )?))
            }
        }
    }
}

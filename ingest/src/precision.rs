//! Timestamp precision of a write request (`precision=` query parameter).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The unit in which a write request gives its timestamps.
///
/// Line protocol and integer JSON times are in this unit; they are stored as
/// nanoseconds, see [`Precision::to_nanos`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Nanoseconds (`ns`, `n`): the default, as in InfluxDB.
    #[default]
    Nanoseconds,
    /// Microseconds (`us`, `u`, `µs`, `µ`).
    Microseconds,
    /// Milliseconds (`ms`).
    Milliseconds,
    /// Seconds (`s`).
    Seconds,
}

impl Precision {
    /// How many nanoseconds one unit of this precision is.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        }
    }

    /// Converts `value`, a timestamp in this precision, to nanoseconds since the epoch.
    ///
    /// Returns `None` when the result does not fit in an `i64` (roughly the years
    /// 1677 to 2262), so that callers can reject the line instead of wrapping around.
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        value.checked_mul(self.nanos_per_unit())
    }

    /// The canonical short name (`ns`, `us`, `ms`, `s`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// Accepts the names InfluxDB v1 (`n`, `u`, `ms`, `s`) and v2/v3 (`ns`, `us`, `ms`,
    /// `s`) clients send, and `µ`/`µs` written with either the micro sign or Greek mu.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ns" | "n" => Ok(Precision::Nanoseconds),
            "us" | "u" | "µs" | "µ" | "μs" | "μ" => Ok(Precision::Microseconds),
            "ms" => Ok(Precision::Milliseconds),
            "s" => Ok(Precision::Seconds),
            other => Err(Error::UnknownPrecision(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_name() {
        for (name, want) in [
            ("ns", Precision::Nanoseconds),
            ("n", Precision::Nanoseconds),
            ("us", Precision::Microseconds),
            ("u", Precision::Microseconds),
            ("µs", Precision::Microseconds),
            ("µ", Precision::Microseconds),
            ("\u{3bc}s", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
        ] {
            assert_eq!(name.parse::<Precision>().unwrap(), want, "{name}");
        }
    }

    #[test]
    fn unknown_name_is_named_in_the_error() {
        for bad in ["h", "", "NS", "m", "sec"] {
            let err = bad.parse::<Precision>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("\"{bad}\"")), "{msg}");
            assert!(msg.contains("ns, n, us, u, µs, µ, ms, s"), "{msg}");
        }
    }

    #[test]
    fn default_is_nanoseconds() {
        assert_eq!(Precision::default(), Precision::Nanoseconds);
    }

    #[test]
    fn display_round_trips() {
        for p in [
            Precision::Nanoseconds,
            Precision::Microseconds,
            Precision::Milliseconds,
            Precision::Seconds,
        ] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
    }

    #[test]
    fn converts_to_nanoseconds() {
        assert_eq!(Precision::Nanoseconds.to_nanos(1_234), Some(1_234));
        assert_eq!(Precision::Microseconds.to_nanos(1_234), Some(1_234_000));
        assert_eq!(Precision::Milliseconds.to_nanos(1_234), Some(1_234_000_000));
        assert_eq!(Precision::Seconds.to_nanos(1_234), Some(1_234_000_000_000));
        assert_eq!(Precision::Seconds.to_nanos(-2), Some(-2_000_000_000));
        assert_eq!(Precision::Nanoseconds.to_nanos(i64::MIN), Some(i64::MIN));
    }

    #[test]
    fn conversion_overflow_is_none() {
        // 2262-04-11T23:47:16Z is the last second that fits.
        assert_eq!(
            Precision::Seconds.to_nanos(9_223_372_036),
            Some(9_223_372_036_000_000_000)
        );
        assert_eq!(Precision::Seconds.to_nanos(9_223_372_037), None);
        assert_eq!(Precision::Seconds.to_nanos(-9_223_372_037), None);
        assert_eq!(Precision::Milliseconds.to_nanos(i64::MAX / 1_000), None);
        assert_eq!(Precision::Microseconds.to_nanos(i64::MIN), None);
    }
}

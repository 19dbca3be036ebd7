//! Energy from cumulative registers (Wh counters such as `energy_import_wh`): the one
//! place that decides how much energy a step between two readings is. The SQL functions
//! `counter_delta` and `counter_energy`, the rollups' `_energy` columns and the chart
//! API all use [`step`] and [`deltas`], so they agree to the last watt-hour.
//!
//! The step from reading (t0, v0) to (t1, v1), t0 < t1, with `hours = (t1 - t0) / 1 h`:
//!
//! 0. A gap longer than [`CounterRules::max_gap_ns`] is not attributed: `None`. Nobody
//!    knows when in the gap the energy flowed, so no bucket gets it.
//! 1. `d = v1 - v0 >= 0`: `Some(d)` if `d / hours <= max_power_w`, else `Some(0.0)`: a
//!    rise faster than any real installation is a discontinuity (a meter swapped for
//!    one whose register starts higher), not energy.
//! 2. `d < 0` and a rollover: for some register size `W` in {10^k Wh, k = 4..=12} ∪
//!    {2^32 Wh}, `0.999 * W <= v0 <= W`, `0 <= v1 < 0.001 * W`, and `(W - v0 + v1) /
//!    hours <= max_power_w`: `Some(W - v0 + v1)` (the smallest such `W`).
//! 3. Any other drop (a reset, a meter swapped for one reading lower): `Some(0.0)`.
//!
//! So at most one reading interval of energy is lost at a discontinuity, and nothing
//! is ever negative or counted twice.

/// Nanoseconds per hour.
const HOUR_NS: f64 = 3_600_000_000_000.0;

/// The register sizes a rollover is recognised at, ascending: 10^4 .. 10^12 Wh, and
/// 2^32 Wh (a 32-bit register).
const ROLLOVER_SIZES: [f64; 10] = [
    1e4,
    1e5,
    1e6,
    1e7,
    1e8,
    1e9,
    4_294_967_296.0,
    1e10,
    1e11,
    1e12,
];

/// How steps between readings are judged; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterRules {
    /// A step across a longer gap between two readings is not attributed (None).
    pub max_gap_ns: Option<i64>,
    /// A rise faster than this (W) is a discontinuity (meter swapped for one reading
    /// higher): counted as 0.
    pub max_power_w: f64,
}

impl CounterRules {
    /// What SQL functions use without their optional arguments: no gap limit, 1 MW.
    pub const DEFAULT: CounterRules = CounterRules {
        max_gap_ns: None,
        max_power_w: 1_000_000.0,
    };

    /// What rollups and the chart API use: steps across gaps up to 1 hour, 1 MW.
    pub const ROLLUP: CounterRules = CounterRules {
        max_gap_ns: Some(3_600_000_000_000),
        max_power_w: 1_000_000.0,
    };
}

impl Default for CounterRules {
    fn default() -> Self {
        CounterRules::DEFAULT
    }
}

/// Energy (Wh, >= 0) of the step between consecutive readings (t0, v0) and (t1, v1),
/// t0 < t1, or None when the gap is longer than max_gap.
///
/// Two readings at the same time (t0 == t1) step by 0 whatever their values: no time
/// passed, so any change is a discontinuity.
pub fn step(rules: &CounterRules, t0: i64, v0: f64, t1: i64, v1: f64) -> Option<f64> {
    let gap = i128::from(t1) - i128::from(t0);
    if let Some(max_gap) = rules.max_gap_ns
        && gap > i128::from(max_gap)
    {
        return None;
    }
    if gap <= 0 {
        return Some(0.0);
    }
    // Precision: an f64 holds gaps up to 2^53 ns (104 days) exactly, and beyond that
    // the rounding is far below the power limit's tolerance.
    let hours = gap as f64 / HOUR_NS;
    let within_power = |energy: f64| energy / hours <= rules.max_power_w;
    let rise = v1 - v0;
    if rise >= 0.0 {
        return Some(if within_power(rise) { rise } else { 0.0 });
    }
    let rollover = ROLLOVER_SIZES.iter().find_map(|&size| {
        let wrapped = (0.999 * size..=size).contains(&v0) && (0.0..0.001 * size).contains(&v1);
        let energy = size - v0 + v1;
        (wrapped && within_power(energy)).then_some(energy)
    });
    Some(rollover.unwrap_or(0.0))
}

/// For time-sorted readings: element i is the step from reading i-1 to i (None for i = 0
/// and for unattributed steps). NaN values count as missing (skipped, the next reading
/// steps from the last real one).
///
/// Infinite values count as missing too. `times` and `values` have the same length; if
/// not, the extra elements of the longer one are ignored.
pub fn deltas(rules: &CounterRules, times: &[i64], values: &[f64]) -> Vec<Option<f64>> {
    let mut previous: Option<(i64, f64)> = None;
    times
        .iter()
        .zip(values)
        .map(|(&t, &v)| {
            if !v.is_finite() {
                return None;
            }
            let delta = previous.and_then(|(t0, v0)| step(rules, t0, v0, t, v));
            previous = Some((t, v));
            delta
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000_000;
    const HOUR: i64 = 60 * MINUTE;

    #[test]
    fn rise_is_energy() {
        let rules = CounterRules::DEFAULT;
        assert_eq!(step(&rules, 0, 1000.0, 15 * MINUTE, 1250.0), Some(250.0));
        assert_eq!(step(&rules, 0, 1000.0, 15 * MINUTE, 1000.0), Some(0.0));
    }

    #[test]
    fn reset_counts_zero() {
        let rules = CounterRules::DEFAULT;
        assert_eq!(step(&rules, 0, 5000.0, 15 * MINUTE, 3.0), Some(0.0));
        assert_eq!(
            deltas(
                &rules,
                &[0, MINUTE, 2 * MINUTE, 3 * MINUTE],
                &[5000.0, 5010.0, 2.0, 7.0]
            ),
            vec![None, Some(10.0), Some(0.0), Some(5.0)]
        );
    }

    #[test]
    fn rollover_wraps_the_register() {
        let rules = CounterRules::DEFAULT;
        // A 100,000 Wh register: 99,990 -> 15 is 10 + 15 = 25 Wh.
        assert_eq!(step(&rules, 0, 99_990.0, 15 * MINUTE, 15.0), Some(25.0));
        // A 32-bit register.
        let top = 4_294_967_296.0;
        assert_eq!(step(&rules, 0, top - 100.0, HOUR, 50.0), Some(150.0));
        // Far below the top is no rollover but a reset.
        assert_eq!(step(&rules, 0, 90_000.0, 15 * MINUTE, 15.0), Some(0.0));
    }

    #[test]
    fn rollover_faster_than_the_power_limit_is_a_reset() {
        let rules = CounterRules {
            max_gap_ns: None,
            max_power_w: 50.0,
        };
        // 25 Wh in 15 minutes is 100 W, above 50 W.
        assert_eq!(step(&rules, 0, 99_990.0, 15 * MINUTE, 15.0), Some(0.0));
    }

    #[test]
    fn swap_up_counts_zero() {
        let rules = CounterRules::DEFAULT;
        // +2,000,000 Wh in 15 minutes is 8 MW, above 1 MW.
        assert_eq!(step(&rules, 0, 1000.0, 15 * MINUTE, 2_001_000.0), Some(0.0));
        // +200,000 Wh in 15 minutes is 800 kW: still energy.
        assert_eq!(
            step(&rules, 0, 1000.0, 15 * MINUTE, 201_000.0),
            Some(200_000.0)
        );
    }

    #[test]
    fn swap_down_counts_zero() {
        let rules = CounterRules::DEFAULT;
        assert_eq!(
            deltas(
                &rules,
                &[0, 15 * MINUTE, 30 * MINUTE, 45 * MINUTE],
                &[50_000.0, 50_100.0, 1_200.0, 1_300.0]
            ),
            vec![None, Some(100.0), Some(0.0), Some(100.0)]
        );
    }

    #[test]
    fn gap_longer_than_max_gap_is_not_attributed() {
        let rules = CounterRules::ROLLUP;
        assert_eq!(step(&rules, 0, 100.0, HOUR, 200.0), Some(100.0));
        assert_eq!(step(&rules, 0, 100.0, HOUR + 1, 200.0), None);
        assert_eq!(
            step(&CounterRules::DEFAULT, 0, 100.0, 48 * HOUR, 200.0),
            Some(100.0)
        );
        assert_eq!(
            deltas(
                &rules,
                &[0, 2 * HOUR, 2 * HOUR + MINUTE],
                &[100.0, 200.0, 201.0]
            ),
            vec![None, None, Some(1.0)]
        );
    }

    #[test]
    fn nan_readings_are_skipped() {
        let rules = CounterRules::DEFAULT;
        assert_eq!(
            deltas(
                &rules,
                &[0, MINUTE, 2 * MINUTE, 3 * MINUTE],
                &[10.0, f64::NAN, 30.0, f64::INFINITY]
            ),
            vec![None, None, Some(20.0), None]
        );
        assert_eq!(deltas(&rules, &[], &[]), Vec::<Option<f64>>::new());
    }

    #[test]
    fn same_time_steps_by_zero() {
        assert_eq!(step(&CounterRules::DEFAULT, 5, 10.0, 5, 20.0), Some(0.0));
    }
}

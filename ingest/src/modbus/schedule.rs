//! When a device is polled: a fixed grid of cycles per device, spread by a phase, and
//! exponential backoff for failing devices. Pure arithmetic on nanoseconds since the
//! epoch, so that it is tested without sleeping.
//!
//! Cycle `k` of a device is due at `phase + k × interval`, aligned to the Unix epoch.
//! The phase, in `[0, interval)`, comes from a hash of the device id: thousands of
//! devices with one interval are spread evenly over it instead of polling in
//! lock-step, and a device keeps its phase across restarts.

use std::time::Duration;

/// One device's position on its grid.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    interval: i64,
    phase: i64,
    /// Longest backoff, at least one interval.
    cap: i64,
    seed: u64,
    /// The next cycle to poll.
    next: i64,
    /// The cycle being polled.
    current: i64,
    /// Consecutive failed cycles.
    failures: u32,
}

impl Schedule {
    /// A schedule whose first cycle is the first one due at or after `now`.
    pub(crate) fn new(
        device_id: &str,
        interval: Duration,
        backoff_max: Duration,
        now: i64,
    ) -> Self {
        let interval = i64::try_from(interval.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1);
        let seed = fnv1a(device_id.as_bytes());
        let phase = (seed % interval as u64) as i64;
        let cap = i64::try_from(backoff_max.as_nanos())
            .unwrap_or(i64::MAX)
            .max(interval);
        let next = ceil_div(now - phase, interval);
        Self {
            interval,
            phase,
            cap,
            seed,
            next,
            current: next,
            failures: 0,
        }
    }

    /// When the next cycle is due.
    pub(crate) fn due(&self) -> i64 {
        self.phase + self.next * self.interval
    }

    /// Called when the device's turn comes at `now` (at or after [`Schedule::due`]):
    /// the latest cycle due by now is polled, and the ones before it, whose turn
    /// passed while earlier polls ran, are missed. Returns how many were missed.
    pub(crate) fn begin(&mut self, now: i64) -> u64 {
        let latest = (now - self.phase).div_euclid(self.interval).max(self.next);
        let missed = (latest - self.next) as u64;
        self.current = latest;
        missed
    }

    /// The cycle being polled succeeded: the next one is the next on the grid.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.next = self.current + 1;
    }

    /// The cycle being polled failed at `now`: the next attempt is the first cycle due
    /// after the backoff. Returns how many cycles are skipped until then.
    pub(crate) fn failed(&mut self, now: i64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let earliest = now.saturating_add(self.backoff());
        self.next = ceil_div(earliest - self.phase, self.interval).max(self.current + 1);
        (self.next - self.current - 1) as u64
    }

    /// Consecutive failed cycles.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait after the latest failure: the interval doubled per consecutive failure,
    /// capped, times a factor in [0.5, 1) that differs between devices, so that
    /// devices failing together (a gateway restarting) do not return together.
    fn backoff(&self) -> i64 {
        let doubled = self
            .interval
            .saturating_mul(1i64 << self.failures.min(40))
            .min(self.cap);
        let spread = fnv1a(&(self.seed ^ u64::from(self.failures)).to_le_bytes()) % 1_000_000;
        let factor = 0.5 + spread as f64 / 2_000_000.0;
        (doubled as f64 * factor) as i64
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { q } else { q + 1 }
}

/// FNV-1a: stable across builds and platforms (the standard library's hasher is not
/// promised to be), so a device keeps its phase.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn phases_spread_devices_over_the_interval() {
        let now = 1_700_000_000 * S;
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let s = Schedule::new(
                &format!("dev-{i}"),
                Duration::from_secs(1),
                Duration::from_secs(300),
                now,
            );
            assert!(s.due() >= now && s.due() < now + S);
            assert_eq!(s.due() % S, s.phase);
            buckets[(s.phase / (S / 10)) as usize] += 1;
        }
        // 1000 devices over 10 slices of the second: none empty, none crowded.
        assert!(
            buckets.iter().all(|&n| (50..=150).contains(&n)),
            "{buckets:?}"
        );
        // The phase depends only on the id.
        let a = Schedule::new("inv-1", Duration::from_secs(1), Duration::ZERO, now);
        let b = Schedule::new("inv-1", Duration::from_secs(1), Duration::ZERO, now + 7 * S);
        assert_eq!(a.phase, b.phase);
    }

    #[test]
    fn cycles_that_passed_during_a_long_poll_are_missed_not_caught_up() {
        let mut s = Schedule::new("m", Duration::from_secs(1), Duration::from_secs(300), 0);
        let first = s.due();
        assert_eq!(s.begin(first), 0);
        s.succeeded();
        assert_eq!(s.due(), first + S);
        // The poll took 3.5 s: cycles 1 and 2 passed, cycle 3 is polled (once).
        assert_eq!(s.begin(first + 3 * S + S / 2), 2);
        s.succeeded();
        assert_eq!(s.due(), first + 4 * S);
        // Late within the cycle's own interval: polled, nothing missed.
        assert_eq!(s.begin(first + 4 * S + S / 3), 0);
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let interval = Duration::from_secs(1);
        let mut s = Schedule::new("inv-9", interval, Duration::from_secs(300), 0);
        let mut now = s.due();
        let mut waits = Vec::new();
        for _ in 0..12 {
            s.begin(now);
            let skipped = s.failed(now);
            let wait = s.due() - now;
            // Attempts stay on the grid; the cycles in between are skipped.
            assert_eq!(wait % S, 0);
            assert_eq!(skipped as i64, wait / S - 1);
            waits.push(wait);
            now = s.due();
        }
        for (n, wait) in waits.iter().enumerate() {
            // interval × 2^n × [0.5, 1), capped at 300 s, then rounded up to the grid.
            let step = (S << (n + 1)).min(300 * S);
            assert!(
                *wait >= step / 2 && *wait < step + S,
                "failure {}: {wait}",
                n + 1
            );
        }
        assert_eq!(s.failures(), 12);
        s.begin(now);
        s.succeeded();
        assert_eq!(s.failures(), 0);
        assert_eq!(s.due(), now + S);
    }

    #[test]
    fn a_short_backoff_cap_is_at_least_one_interval() {
        let mut s = Schedule::new("x", Duration::from_secs(10), Duration::from_secs(1), 0);
        let now = s.due();
        s.begin(now);
        assert_eq!(s.failed(now), 0);
        assert_eq!(s.due(), now + 10 * S);
    }
}

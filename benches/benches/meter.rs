//! Smart-meter readings shared by the store benches (`pipeline`, `group_commit`,
//! `snapshot`, `queries`): the rows the load tool (`src/main.rs`) sends. Tags `site_id`
//! and `device_id`; float fields `power_w`, `energy_import_wh`, `energy_export_wh`,
//! `voltage_v`, `current_a`; nanosecond timestamps.
//!
//! Not a bench itself: `autobenches = false` in Cargo.toml keeps cargo from taking it for
//! one, and each bench includes it with `mod meter;`.

use std::fmt::Write as _;

use ingest::{Precision, parse_line_protocol};
use storage::{Store, WriteBatch};

/// The benches write to their own table, not a canonical one, so nothing but the store
/// is measured.
pub(crate) const TABLE: &str = "bench_meter";

/// 2024-05-01T00:00:00Z. Data starts at midnight so that a few hours of readings fall
/// in one UTC day, that is one Parquet file per snapshot.
pub(crate) const START_NS: i64 = 1_714_521_600_000_000_000;

/// One second in nanoseconds.
pub(crate) const SECOND_NS: i64 = 1_000_000_000;

/// Meters spread evenly over sites, `site_id`s in contiguous blocks of `device_id`s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fleet {
    /// Meters, `meter0000000` onwards.
    pub(crate) devices: usize,
    /// Sites, `site00000` onwards.
    pub(crate) sites: usize,
}

impl Fleet {
    /// Rows in a body of `readings` readings per meter.
    pub(crate) fn rows(&self, readings: usize) -> usize {
        self.devices * readings
    }

    /// Line protocol for `readings` readings of every meter, `interval_ns` apart from
    /// `start_ns`, one round of the whole fleet after the other (as gateways report).
    /// Values are deterministic and vary per meter and reading, so Parquet encodes
    /// something realistic rather than constants.
    pub(crate) fn body(&self, start_ns: i64, interval_ns: i64, readings: usize) -> String {
        let mut body = String::with_capacity(self.rows(readings) * 170);
        for reading in 0..readings {
            let time = start_ns + reading as i64 * interval_ns;
            for device in 0..self.devices {
                let site = device * self.sites / self.devices;
                let power = 400.0 + (device % 37) as f64 * 55.0 + (reading % 60) as f64 * 2.5;
                let import = 1_000_000.0 + device as f64 * 1_000.0 + reading as f64 * 2.5;
                let export = if device % 4 == 0 {
                    reading as f64 * 0.75
                } else {
                    0.0
                };
                let voltage = 228.0 + ((device + reading) % 41) as f64 * 0.1;
                let current = power / voltage;
                writeln!(
                    body,
                    "{TABLE},site_id=site{site:05},device_id=meter{device:07} power_w={power:.1},\
                     energy_import_wh={import:.1},energy_export_wh={export:.2},\
                     voltage_v={voltage:.2},current_a={current:.3} {time}"
                )
                .expect("writing to a String cannot fail");
            }
        }
        body
    }
}

/// Parses and validates `body` as a client request would be, and panics if any line is
/// refused: a bench must not measure the error path.
pub(crate) fn validated(store: &Store, body: &str) -> WriteBatch {
    let (lines, errors) = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 0);
    assert!(errors.is_empty(), "parse errors: {errors:?}");
    let count = lines.len();
    let (batch, errors) = store.validate(lines);
    assert!(errors.is_empty(), "validation errors: {errors:?}");
    assert_eq!(batch.row_count(), count);
    batch
}

/// Writes `readings` readings of every meter of `fleet`, `interval_ns` apart from
/// `start_ns`, one request per round of the fleet with `sync = false`, and returns once
/// all of them are in the write buffer.
#[allow(
    dead_code,
    reason = "every bench includes this module; only the ones that preload data use it"
)]
pub(crate) fn load(store: &Store, fleet: Fleet, start_ns: i64, interval_ns: i64, readings: usize) {
    for reading in 0..readings {
        let time = start_ns + reading as i64 * interval_ns;
        let batch = validated(store, &fleet.body(time, interval_ns, 1));
        store
            .submit(batch, false)
            .expect("the queue has room")
            .wait_blocking()
            .expect("the write commits");
    }
}

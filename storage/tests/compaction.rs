//! Compaction through the store's public API, on both object storage backends: it never
//! changes what a scan returns (overwrites and deletes included), keeps the file count
//! bounded under a long backfill, and does not hold writes up while it runs.

#[macro_use]
mod common {
    #[macro_use]
    pub(crate) mod backend;
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType};
use bytesize::ByteSize;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use storage::{DeletePredicate, FieldValue, ParsedLine, Row, Store, StoreConfig, TimeRange};

use common::backend::Env;

const MINUTE: i64 = 60_000_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2020-01-01: backfilled data, long older than any compaction delay.
const START: i64 = 18_262 * DAY;

on_both_backends!(
    compaction_never_changes_what_a_scan_returns,
    a_week_long_backfill_stays_in_few_files,
    writes_are_not_held_up_by_a_running_compaction,
);

/// Compaction only when asked; small outputs, so they are cut too.
fn config(env: &Env) -> StoreConfig {
    StoreConfig {
        compaction_interval: Duration::ZERO,
        compaction_min_files: 2,
        compaction_delay: Duration::ZERO,
        compaction_target_size: ByteSize::kib(4),
        ..env.config()
    }
}

fn line(n: usize, device: &str, time: i64, power: f64) -> ParsedLine {
    ParsedLine {
        line: n,
        table: "meter".into(),
        row: Row {
            time,
            tags: vec![("device_id".into(), device.into())],
            fields: vec![("power_w".into(), FieldValue::F64(power))],
        },
    }
}

fn write(store: &Store, lines: Vec<ParsedLine>) {
    let (batch, errors) = store.validate(lines);
    assert!(errors.is_empty(), "{errors:?}");
    store.submit(batch, true).unwrap().wait_blocking().unwrap();
}

/// (device, time) → power of every visible row of `meter`; a row returned twice fails.
fn rows(store: &Store) -> BTreeMap<(String, i64), f64> {
    let Some(schema) = store.table_schema("meter") else {
        return BTreeMap::new();
    };
    let columns = ["time", "device_id", "power_w"].map(|c| schema.index_of(c).unwrap());
    let mut out = BTreeMap::new();
    for b in store.scan("meter", Some(&columns), TimeRange::ALL).unwrap() {
        let time = b.column(0).as_primitive::<TimestampNanosecondType>();
        let device = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
        let device = device.as_string::<i32>();
        let power = b.column(2).as_primitive::<Float64Type>();
        for row in 0..b.num_rows() {
            let key = (device.value(row).to_owned(), time.value(row));
            assert!(
                out.insert(key.clone(), power.value(row)).is_none(),
                "{key:?} returned twice"
            );
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    /// Rows of one device at minutes `from..from + count` (overwriting what is there).
    Write {
        device: usize,
        from: i64,
        count: i64,
        value: f64,
    },
    /// Deletes one device's (or every device's) minutes `from..=to`.
    Delete {
        device: Option<usize>,
        from: i64,
        to: i64,
    },
    Snapshot,
    Compact,
}

const DEVICES: [&str; 3] = ["m1", "m2", "m3"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..DEVICES.len(), 0i64..3000, 1i64..200, -1e6f64..1e6).prop_map(
            |(device, from, count, value)| Op::Write { device, from, count, value }
        ),
        1 => (proptest::option::of(0..DEVICES.len()), 0i64..3000, 0i64..500).prop_map(
            |(device, from, len)| Op::Delete { device, from, to: from + len }
        ),
        3 => Just(Op::Snapshot),
        1 => Just(Op::Compact),
    ]
}

/// Random writes (spanning three days, so several partitions), overwrites, deletes,
/// snapshots and compactions: the scan equals a last-write-wins model before a final
/// compaction, after it, and after a restart.
fn compaction_never_changes_what_a_scan_returns(env: &Env) {
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        // A fresh store per case, on the same backend.
        let env = env
            .backend()
            .env()
            .expect("the backend ran for the first case");
        let store = env.open_with(config(&env));
        let mut model: BTreeMap<(String, i64), f64> = BTreeMap::new();
        let mut n = 0;
        for op in &ops {
            match *op {
                Op::Write {
                    device,
                    from,
                    count,
                    value,
                } => {
                    let lines = (from..from + count)
                        .map(|m| {
                            n += 1;
                            let time = START + m * MINUTE;
                            model.insert((DEVICES[device].to_owned(), time), value + m as f64);
                            line(n, DEVICES[device], time, value + m as f64)
                        })
                        .collect();
                    write(&store, lines);
                }
                // Deleting from a table that was never written is refused (tested
                // elsewhere); there is nothing to compact then anyway.
                Op::Delete { .. } if store.table_schema("meter").is_none() => {}
                Op::Delete { device, from, to } => {
                    let range = TimeRange {
                        min: START + from * MINUTE,
                        max: START + to * MINUTE,
                    };
                    store
                        .delete(DeletePredicate {
                            table: "meter".into(),
                            tags: device
                                .map(|d| vec![("device_id".to_owned(), DEVICES[d].to_owned())])
                                .unwrap_or_default(),
                            range,
                        })
                        .unwrap();
                    model.retain(|(d, t), _| {
                        !(device.is_none_or(|x| DEVICES[x] == d)
                            && range.min <= *t
                            && *t <= range.max)
                    });
                }
                Op::Snapshot => store.persist_now().unwrap(),
                Op::Compact => {
                    store.compact_now().unwrap();
                }
            }
        }
        prop_assert_eq!(&rows(&store), &model, "before the final compaction");
        store.persist_now().unwrap();
        store.compact_now().unwrap();
        prop_assert_eq!(&rows(&store), &model, "after compaction");
        // Compaction settles: outputs cut early (the size estimate comes from the
        // inputs, whose per-file overhead inflates it) may merge once more, no more.
        let passes = (0..3)
            .take_while(|_| store.compact_now().unwrap().runs > 0)
            .count();
        prop_assert!(passes < 3, "compaction keeps rewriting the same rows");
        prop_assert_eq!(&rows(&store), &model, "after the passes that follow");
        // Overwritten rows may stay in a large file the plan leaves alone (scans
        // deduplicate them), but every delete is applied to the files.
        if let Some(stats) = store.table_stats("meter") {
            prop_assert_eq!(stats.tombstones, 0, "every delete applied to the files");
        }
        store.shutdown().unwrap();
        drop(store);
        let store = env.open_with(config(&env));
        prop_assert_eq!(&rows(&store), &model, "after a restart");
        store.shutdown().unwrap();
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A week of two meters' minute readings sent an hour at a time, each request
/// snapshotted at once (the worst case for small files), with a compaction pass every
/// twelve requests: after each pass every day is back to one file (a day of this data
/// is far under the target size), and no replaced file is left in storage.
fn a_week_long_backfill_stays_in_few_files(env: &Env) {
    let store = env.open_with(StoreConfig {
        compaction_interval: Duration::ZERO,
        ..env.config()
    });
    let mut model = BTreeMap::new();
    let mut most_files = 0;
    for hour in 0..7 * 24 {
        let mut lines = Vec::new();
        for device in ["m1", "m2"] {
            for m in 0..60 {
                let time = START + hour * HOUR + m * MINUTE;
                model.insert((device.to_owned(), time), (hour * 60 + m) as f64);
                lines.push(line(lines.len() + 1, device, time, (hour * 60 + m) as f64));
            }
        }
        write(&store, lines);
        store.persist_now().unwrap();
        most_files = most_files.max(store.parquet_files("meter").len());
        if hour % 12 == 11 {
            store.compact_now().unwrap();
            let files = store.parquet_files("meter");
            let days_so_far = (hour / 24 + 1) as usize;
            assert!(
                files.len() <= days_so_far,
                "{} files for {days_so_far} days after hour {hour}: {files:?}",
                files.len()
            );
            assert_eq!(
                env.parquet_files().len(),
                files.len(),
                "replaced files deleted"
            );
        }
    }
    assert!(
        most_files <= 7 + 12,
        "at most {most_files} files at any time"
    );
    assert_eq!(rows(&store), model);
    store.shutdown().unwrap();
}

/// A compaction of a few hundred thousand rows runs on its own thread while writes keep
/// being acknowledged; every write is found afterwards.
fn writes_are_not_held_up_by_a_running_compaction(env: &Env) {
    let store = Arc::new(env.open_with(StoreConfig {
        compaction_interval: Duration::ZERO,
        compaction_min_files: 2,
        compaction_delay: Duration::ZERO,
        ..env.config()
    }));
    let mut model = BTreeMap::new();
    let devices: Vec<String> = (0..100).map(|d| format!("m{d:03}")).collect();
    for snapshot in 0..12 {
        let mut lines = Vec::new();
        for device in &devices {
            for m in 0..200 {
                let time = START + (snapshot * 200 + m) * MINUTE;
                model.insert((device.clone(), time), m as f64);
                lines.push(line(lines.len() + 1, device, time, m as f64));
            }
        }
        write(&store, lines);
        store.persist_now().unwrap();
    }

    let done = Arc::new(AtomicBool::new(false));
    let compaction = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        std::thread::spawn(move || {
            let stats = store.compact_now();
            done.store(true, Ordering::Release);
            stats
        })
    };
    // Writes started while the compaction runs. One that was held until the
    // compaction ended would be acknowledged only after `done`: count the ones
    // acknowledged before it (no timing, so a slow machine cannot fail it).
    let mut sent = 0;
    let mut acked_during = 0;
    while !done.load(Ordering::Acquire) {
        let time = START + 3 * DAY + sent * MINUTE;
        model.insert(("live".to_owned(), time), 1.0);
        write(&store, vec![line(1, "live", time, 1.0)]);
        sent += 1;
        if !done.load(Ordering::Acquire) {
            acked_during += 1;
        }
    }
    let stats = compaction.join().unwrap().unwrap();
    assert!(stats.files_in >= 12, "{stats:?}");
    assert!(
        acked_during > 0,
        "no write was acknowledged while the compaction ran ({sent} sent)"
    );
    assert_eq!(rows(&store), model);
    store.shutdown().unwrap();
}

//! Deletes, retention and the catalog swap of compaction, through the store's public API,
//! on both object storage backends (local files and S3 on a moto server).

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
use arrow::datatypes::{Float64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use storage::{DeletePredicate, Error, FieldValue, ParsedLine, Row, Store, StoreConfig, TimeRange};

const MINUTE: i64 = 60_000_000_000;
const DAY: i64 = 86_400_000_000_000;

use common::backend::Env;

on_both_backends!(
    a_delete_hides_rows_at_once_keeps_later_writes_and_survives_a_restart,
    compaction_removes_deleted_rows_from_the_files_and_drops_the_tombstone,
    a_delete_during_a_compaction_is_not_undone_by_its_swap,
    deletes_name_their_problem,
    retention_hides_expired_rows_refuses_old_writes_and_drops_expired_files,
    scans_during_compaction_never_miss_or_double_a_row,
    tombstone_values_reach_the_api,
    an_overwrite_survives_compactions_that_split_a_group_of_outputs,
);

/// A store whose compaction runs only when asked, merging any two small files.
fn config(env: &Env) -> StoreConfig {
    StoreConfig {
        compaction_interval: Duration::ZERO,
        compaction_min_files: 2,
        compaction_delay: Duration::ZERO,
        ..env.config()
    }
}

fn line(n: usize, site: &str, device: &str, time: i64, power: f64) -> ParsedLine {
    ParsedLine {
        line: n,
        table: "meter".into(),
        row: Row {
            time,
            tags: vec![
                ("device_id".into(), device.into()),
                ("site_id".into(), site.into()),
            ],
            fields: vec![("power_w".into(), FieldValue::F64(power))],
        },
    }
}

fn write(store: &Store, lines: Vec<ParsedLine>) {
    let (batch, errors) = store.validate(lines);
    assert!(errors.is_empty(), "{errors:?}");
    store.submit(batch, true).unwrap().wait_blocking().unwrap();
}

/// (site, device, time) → power of every visible row of `meter`.
fn rows(store: &Store) -> BTreeMap<(String, String, i64), f64> {
    let schema = store.table_schema("meter").unwrap();
    let columns = ["time", "site_id", "device_id", "power_w"].map(|c| schema.index_of(c).unwrap());
    let batches = store.scan("meter", Some(&columns), TimeRange::ALL).unwrap();
    let mut out = BTreeMap::new();
    for b in &batches {
        collect(b, &mut out);
    }
    out
}

fn collect(b: &RecordBatch, out: &mut BTreeMap<(String, String, i64), f64>) {
    let time = b.column(0).as_primitive::<TimestampNanosecondType>();
    let tag = |i: usize, row: usize| -> String {
        let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
        c.as_string::<i32>().value(row).to_owned()
    };
    let power = b.column(3).as_primitive::<Float64Type>();
    for row in 0..b.num_rows() {
        let key = (tag(1, row), tag(2, row), time.value(row));
        assert!(
            out.insert(key.clone(), power.value(row)).is_none(),
            "{key:?} returned twice"
        );
    }
}

/// Two sites, two meters each, one reading a minute for `minutes` from `start`.
fn fleet(start: i64, minutes: i64, value: f64) -> Vec<ParsedLine> {
    let mut lines = Vec::new();
    for (site, devices) in [("s1", ["m1", "m2"]), ("s2", ["m3", "m4"])] {
        for device in devices {
            for m in 0..minutes {
                lines.push(line(
                    lines.len() + 1,
                    site,
                    device,
                    start + m * MINUTE,
                    value,
                ));
            }
        }
    }
    lines
}

fn delete_site(store: &Store, site: &str, range: TimeRange) -> storage::Tombstone {
    store
        .delete(DeletePredicate {
            table: "meter".into(),
            tags: vec![("site_id".into(), site.into())],
            range,
        })
        .unwrap()
}

fn a_delete_hides_rows_at_once_keeps_later_writes_and_survives_a_restart(env: &Env) {
    let store = env.open_with(config(env));
    let t0 = 10 * DAY;
    // Some rows in Parquet, some only in the write buffer when the delete comes.
    write(&store, fleet(t0, 30, 1.0));
    store.persist_now().unwrap();
    write(&store, fleet(t0 + 30 * MINUTE, 30, 2.0));
    let before = rows(&store);
    assert_eq!(before.len(), 4 * 60);

    let range = TimeRange {
        min: t0 + 10 * MINUTE,
        max: t0 + 49 * MINUTE,
    };
    let tombstone = delete_site(&store, "s1", range);
    assert_eq!(tombstone.table, "meter");
    let expected: BTreeMap<_, _> = before
        .iter()
        .filter(|((site, _, t), _)| !(site == "s1" && range.min <= *t && *t <= range.max))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(rows(&store).len(), 4 * 60 - 2 * 40);
    assert_eq!(rows(&store), expected);

    // A write after the delete, inside its range, is kept.
    write(&store, vec![line(1, "s1", "m1", t0 + 20 * MINUTE, 9.0)]);
    let mut expected = expected;
    expected.insert(("s1".into(), "m1".into(), t0 + 20 * MINUTE), 9.0);
    assert_eq!(rows(&store), expected);

    store.shutdown().unwrap();
    drop(store);
    let store = env.open_with(config(env));
    assert_eq!(rows(&store), expected, "after a restart");
    assert_eq!(store.tombstones().len(), 1);
}

fn compaction_removes_deleted_rows_from_the_files_and_drops_the_tombstone(env: &Env) {
    let store = env.open_with(config(env));
    let t0 = 20 * DAY;
    for part in 0..3 {
        write(&store, fleet(t0 + part * 20 * MINUTE, 20, part as f64));
        store.persist_now().unwrap();
    }
    assert_eq!(store.table_stats("meter").unwrap().file_rows, 240);
    delete_site(&store, "s2", TimeRange::ALL);
    let visible = rows(&store);
    assert_eq!(visible.len(), 120);

    let stats = store.compact_now().unwrap();
    assert!(stats.runs >= 1, "{stats:?}");
    assert_eq!(rows(&store), visible, "compaction changed what is visible");
    let table = store.table_stats("meter").unwrap();
    assert_eq!(
        table.file_rows, 120,
        "the deleted rows are still in the files"
    );
    assert_eq!(table.files, 1, "{table:?}");
    assert!(store.tombstones().is_empty(), "{:?}", store.tombstones());

    // What is on disk is what the catalog names: the replaced files are gone.
    assert_eq!(env.parquet_files().len(), 1);
    store.shutdown().unwrap();
    drop(store);
    let store = env.open_with(config(env));
    assert_eq!(rows(&store), visible);
}

fn a_delete_during_a_compaction_is_not_undone_by_its_swap(env: &Env) {
    // The compaction's outputs may have been merged before the tombstone existed: the
    // tombstone must still apply to them.
    let store = env.open_with(config(env));
    let t0 = 30 * DAY;
    for part in 0..4 {
        write(&store, fleet(t0 + part * 10 * MINUTE, 10, 1.0));
        store.persist_now().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let compactor = {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut passes = 0;
            while !stop.load(Ordering::Acquire) {
                store.compact_now().unwrap();
                passes += 1;
            }
            passes
        })
    };
    for round in 0..20 {
        write(&store, fleet(t0 + (4 + round) * 10 * MINUTE, 10, 1.0));
        store.persist_now().unwrap();
        delete_site(
            &store,
            "s1",
            TimeRange {
                min: t0 + round * 10 * MINUTE,
                max: t0 + round * 10 * MINUTE + MINUTE,
            },
        );
    }
    stop.store(true, Ordering::Release);
    compactor.join().unwrap();
    store.compact_now().unwrap();
    let visible = rows(&store);
    for round in 0..20 {
        for device in ["m1", "m2"] {
            for t in [t0 + round * 10 * MINUTE, t0 + round * 10 * MINUTE + MINUTE] {
                assert!(
                    !visible.contains_key(&("s1".to_string(), device.to_string(), t)),
                    "deleted row {device} {t} came back"
                );
            }
        }
    }
    assert_eq!(visible.len(), 4 * 240 - 20 * 2 * 2);
}

fn deletes_name_their_problem(env: &Env) {
    let store = env.open_with(config(env));
    write(&store, fleet(DAY, 1, 1.0));
    let bad = |table: &str, tag: &str, range: TimeRange| {
        store
            .delete(DeletePredicate {
                table: table.into(),
                tags: vec![(tag.into(), "x".into())],
                range,
            })
            .unwrap_err()
    };
    assert!(
        matches!(bad("nope", "site_id", TimeRange::ALL), Error::TableNotFound(t) if t == "nope")
    );
    let e = bad("meter", "power_w", TimeRange::ALL).to_string();
    assert!(e.contains("\"power_w\"") && e.contains("not a tag"), "{e}");
    let e = bad("meter", "phase", TimeRange::ALL).to_string();
    assert!(e.contains("no tag \"phase\""), "{e}");
    let e = bad("meter", "site_id", TimeRange { min: 5, max: 4 }).to_string();
    assert!(e.contains("ends"), "{e}");
    assert_eq!(rows(&store).len(), 4);
}

fn retention_hides_expired_rows_refuses_old_writes_and_drops_expired_files(env: &Env) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let today = now - now.rem_euclid(DAY);
    let store = env.open_with(config(env));
    for days_ago in [5, 3, 1, 0] {
        write(&store, fleet(today - days_ago * DAY, 10, days_ago as f64));
        store.persist_now().unwrap();
    }
    assert_eq!(rows(&store).len(), 4 * 40);
    assert_eq!(store.retention("meter"), None);

    store
        .set_retention("meter", Some(Some(Duration::from_secs(2 * 86_400))))
        .unwrap();
    assert_eq!(
        store.retention("meter"),
        Some(Duration::from_secs(2 * 86_400))
    );
    let visible = rows(&store);
    assert_eq!(
        visible.len(),
        2 * 40,
        "only yesterday's and today's rows are left"
    );
    assert!(visible.keys().all(|(_, _, t)| *t >= now - 2 * DAY - MINUTE));

    let (_, errors) = store.validate(vec![line(1, "s1", "m1", today - 3 * DAY, 1.0)]);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .reason
            .contains("older than the retention of table \"meter\" (2days)"),
        "{}",
        errors[0].reason
    );

    let files_before = store.table_stats("meter").unwrap().files;
    let stats = store.compact_now().unwrap();
    assert_eq!(stats.expired_files, 2, "{stats:?}");
    assert_eq!(store.table_stats("meter").unwrap().files, files_before - 2);
    assert_eq!(env.parquet_files().len(), files_before - 2);
    assert_eq!(rows(&store), visible);

    // Back to the configuration (none): the dropped days are gone for good, the rest
    // is visible again without a limit.
    store.set_retention("meter", None).unwrap();
    assert_eq!(store.retention_override("meter"), None);
    assert!(rows(&store).len() >= 2 * 40);
    store.shutdown().unwrap();
    drop(store);

    // The configured retention applies to tables the API did not set, and an API
    // setting survives a restart.
    let mut configured = config(env);
    configured
        .retention
        .insert("meter".into(), Duration::from_secs(86_400 / 2));
    let store = env.open_with(configured.clone());
    assert_eq!(store.retention("meter"), Some(Duration::from_secs(43_200)));
    store.set_retention("meter", Some(None)).unwrap();
    store.shutdown().unwrap();
    drop(store);
    let store = env.open_with(configured);
    assert_eq!(store.retention_override("meter"), Some(None));
    assert_eq!(store.retention("meter"), None);
}

fn scans_during_compaction_never_miss_or_double_a_row(env: &Env) {
    let store = env.open_with(config(env));
    let t0 = 40 * DAY;
    for part in 0..12 {
        // Overwrites too: every part rewrites the previous part's last ten minutes.
        write(&store, fleet(t0 + part * 20 * MINUTE, 30, part as f64));
        store.persist_now().unwrap();
    }
    let expected = rows(&store);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut scans = 0;
                while !stop.load(Ordering::Acquire) {
                    assert_eq!(rows(&store), expected, "scan {scans} differs");
                    scans += 1;
                }
                scans
            })
        })
        .collect();
    let mut passes = 0;
    while store.table_stats("meter").unwrap().files > 1 && passes < 20 {
        store.compact_now().unwrap();
        passes += 1;
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(store.table_stats("meter").unwrap().files, 1);
    assert_eq!(rows(&store), expected);
    store.compact_now().unwrap();
    assert_eq!(
        env.parquet_files().len(),
        1,
        "replaced files were not deleted"
    );
}

fn tombstone_values_reach_the_api(env: &Env) {
    let store = env.open_with(config(env));
    write(&store, fleet(DAY, 5, 1.0));
    let t = delete_site(
        &store,
        "s1",
        TimeRange {
            min: DAY,
            max: DAY + MINUTE,
        },
    );
    assert_eq!(t.tags, vec![("site_id".to_string(), "s1".to_string())]);
    assert_eq!((t.min_time, t.max_time), (DAY, DAY + MINUTE));
    assert!(t.id >= 1);
    let ids: Vec<u64> = store.tombstones().iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![t.id]);
    let stats = store.table_stats("meter").unwrap();
    assert_eq!(stats.tombstones, 1);
    assert!(store.table_stats("nope").is_none());
}

const SEC: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * SEC;
const RD: i64 = 20_000 * DAY;

fn rline(device: &str, site: &str, time: i64, v: f64) -> ParsedLine {
    ParsedLine {
        line: 1,
        table: "meter".into(),
        row: Row {
            time,
            tags: vec![
                ("device_id".into(), device.into()),
                ("site".into(), site.into()),
            ],
            fields: vec![("v".into(), FieldValue::F64(v))],
        },
    }
}

fn value_of(store: &Store, device: &str, time: i64) -> Vec<f64> {
    let schema = store.table_schema("meter").unwrap();
    let cols = ["time", "device_id", "v"].map(|c| schema.index_of(c).unwrap());
    let mut out = Vec::new();
    for b in store
        .scan(
            "meter",
            Some(&cols),
            TimeRange {
                min: time,
                max: time,
            },
        )
        .unwrap()
    {
        let t = b.column(0).as_primitive::<TimestampNanosecondType>();
        let d = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let d = d.as_string::<i32>();
        let v = b.column(2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            if t.value(i) == time && d.value(i) == device {
                out.push(v.value(i));
            }
        }
    }
    out
}

/// Outputs of one compaction share an id; a later run that ended in the middle of such a
/// group got the same id and a path that sorted after the rest of the group, so scans
/// read its older rows last and an overwritten value came back (found in review).
fn an_overwrite_survives_compactions_that_split_a_group_of_outputs(env: &Env) {
    let config = StoreConfig {
        compaction_interval: Duration::ZERO,
        compaction_min_files: 2,
        compaction_delay: Duration::from_secs(3600 * 24 * 365 * 100),
        compaction_target_size: bytesize::ByteSize::mib(1),
        ..env.config()
    };
    let store = env.open_with(config);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rng = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let t_a = RD + HOUR;

    // File 1 (big): series "a" = OLD, and filler of site "del" in the morning.
    let mut lines = vec![rline("a", "keep", t_a, 1.0)];
    for i in 0..100_000 {
        lines.push(rline("c", "del", RD + i * SEC / 10, rng()));
    }
    write(&store, lines);
    store.persist_now().unwrap();

    // Files 2..5 (small each): "a" = NEW (file 2), one big series "b" in the morning,
    // series "y*" in the afternoon only.
    for k in 0..4i64 {
        let mut lines = Vec::new();
        if k == 0 {
            lines.push(rline("a", "keep", t_a, 2.0));
        }
        for i in 0..40_000 {
            lines.push(rline("b", "x", RD + (k * 40_000 + i) * SEC / 4, rng()));
        }
        for i in 0..5_000 {
            lines.push(rline(
                &format!("y{}", i % 10),
                "x",
                RD + 13 * HOUR + (k * 5_000 + i) * SEC,
                rng(),
            ));
        }
        write(&store, lines);
        store.persist_now().unwrap();
    }
    assert_eq!(value_of(&store, "a", t_a), [2.0]);

    let now = RD + 2 * HOUR * 24;
    store.compact_at(now).unwrap();
    assert_eq!(value_of(&store, "a", t_a), [2.0]);

    // Delete the morning of site "del": F becomes small, the big output is rewritten
    // alone (a new, higher path), the small output is untouched.
    store
        .delete(DeletePredicate {
            table: "meter".into(),
            tags: vec![("site".into(), "del".into())],
            range: TimeRange {
                min: RD,
                max: RD + 12 * HOUR,
            },
        })
        .unwrap();
    store.compact_at(now).unwrap();
    assert_eq!(value_of(&store, "a", t_a), [2.0], "correct after pass 2");

    store.compact_at(now).unwrap();
    assert_eq!(
        value_of(&store, "a", t_a),
        [2.0],
        "the overwrite of a@t_a was lost after pass 3"
    );
    store.shutdown().unwrap();
}

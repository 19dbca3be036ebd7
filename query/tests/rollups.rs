//! Rollups (`<table>_15m`, `_1h`, `_1d`): their columns, late writes, restarts, what
//! is not rolled up, and equality with the same aggregation computed by SQL over the
//! raw rows on random data.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use query::rollup::{RollupLevel, is_rollup_table, table_name};
use query::{QueryConfig, QueryEngine};
use serde_json::{Value, json};
use storage::{FieldValue, ParsedLine, Store, StoreConfig};

use crate::common::{Fixture, JAN1, MINUTE, line};

const HOUR: i64 = 60 * MINUTE;

/// A reading of device `device` of table `meter`: power (omitted when None), the
/// energy register, and a string field that is not rolled up.
fn reading(device: &str, minute: i64, power: Option<f64>, energy: f64) -> ParsedLine {
    let mut fields = vec![
        ("energy_wh", FieldValue::F64(energy)),
        ("quality", FieldValue::String("good".into())),
    ];
    if let Some(power) = power {
        fields.push(("power_w", FieldValue::F64(power)));
    }
    line(
        "meter",
        JAN1 + minute * MINUTE,
        &[("device_id", device)],
        fields,
    )
}

fn refresh(fx: &Fixture) -> query::rollup::RefreshStats {
    fx.engine.rollups().refresh_now().expect("refresh")
}

/// Rows without their NULL columns: a rollup column that is absent is NULL.
fn without_nulls(rows: Vec<Value>) -> Vec<Value> {
    rows.into_iter()
        .map(|row| match row {
            Value::Object(map) => {
                Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
            }
            other => other,
        })
        .collect()
}

/// The rows of a rollup table, `time` as epoch nanoseconds in `t`.
async fn rollup(fx: &Fixture, table: &str) -> Vec<Value> {
    without_nulls(
        fx.rows(&format!(
            "SELECT CAST(time AS BIGINT) AS t, * EXCLUDE (time) FROM {table} ORDER BY device_id, t"
        ))
        .await,
    )
}

fn at(minute: i64) -> i64 {
    JAN1 + minute * MINUTE
}

/// One column of each row, in row order (`null` where absent).
fn column(rows: &[Value], name: &str) -> Vec<Value> {
    rows.iter()
        .map(|r| r.get(name).cloned().unwrap_or(Value::Null))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_have_one_row_per_series_and_bucket_with_the_documented_columns() {
    let fx = Fixture::new();
    fx.write(vec![
        reading("m1", 0, Some(10.0), 1000.0),
        reading("m1", 5, Some(20.0), 1010.0),
        reading("m1", 20, None, 1030.0),
        reading("m2", 61, Some(7.0), 5.0),
    ])
    .await;
    let stats = refresh(&fx);
    assert_eq!((stats.rows_15m, stats.rows_1h, stats.rows_1d), (3, 2, 2));
    assert!(stats.complete);

    let m15 = rollup(&fx, "meter_15m").await;
    assert_eq!(
        m15,
        vec![
            json!({"t": at(0), "device_id": "m1",
                "energy_wh_count": 2, "energy_wh_min": 1000.0, "energy_wh_max": 1010.0,
                "energy_wh_sum": 2010.0, "energy_wh_avg": 1005.0, "energy_wh_last": 1010.0,
                "energy_wh_energy": 10.0,
                "power_w_count": 2, "power_w_min": 10.0, "power_w_max": 20.0,
                "power_w_sum": 30.0, "power_w_avg": 15.0, "power_w_last": 20.0}),
            // No power reading: a count of 0 and no other power column.
            json!({"t": at(15), "device_id": "m1",
                "energy_wh_count": 1, "energy_wh_min": 1030.0, "energy_wh_max": 1030.0,
                "energy_wh_sum": 1030.0, "energy_wh_avg": 1030.0, "energy_wh_last": 1030.0,
                "energy_wh_energy": 20.0, "power_w_count": 0}),
            // The first reading of a series has no step: no energy.
            json!({"t": at(60), "device_id": "m2",
                "energy_wh_count": 1, "energy_wh_min": 5.0, "energy_wh_max": 5.0,
                "energy_wh_sum": 5.0, "energy_wh_avg": 5.0, "energy_wh_last": 5.0,
                "power_w_count": 1, "power_w_min": 7.0, "power_w_max": 7.0,
                "power_w_sum": 7.0, "power_w_avg": 7.0, "power_w_last": 7.0}),
        ]
    );
    let h1 = rollup(&fx, "meter_1h").await;
    assert_eq!(
        h1[0],
        json!({"t": at(0), "device_id": "m1",
            "energy_wh_count": 3, "energy_wh_min": 1000.0, "energy_wh_max": 1030.0,
            "energy_wh_sum": 3040.0, "energy_wh_avg": 3040.0 / 3.0, "energy_wh_last": 1030.0,
            "energy_wh_energy": 30.0,
            "power_w_count": 2, "power_w_min": 10.0, "power_w_max": 20.0,
            "power_w_sum": 30.0, "power_w_avg": 15.0, "power_w_last": 20.0})
    );
    assert_eq!(column(&h1, "t"), [json!(at(0)), json!(at(60))]);
    let d1 = rollup(&fx, "meter_1d").await;
    assert_eq!(column(&d1, "t"), [json!(JAN1), json!(JAN1)]);
    assert_eq!(d1[0]["energy_wh_energy"], json!(30.0));
    assert_eq!(d1[0]["power_w_last"], json!(20.0));

    // Strings are not rolled up; the schema is exactly the documented one.
    let columns = fx
        .rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'meter_15m' ORDER BY column_name")
        .await;
    let columns: Vec<(String, String)> = columns
        .iter()
        .map(|c| {
            (
                c["column_name"].as_str().expect("name").to_owned(),
                c["data_type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    let mut expected = vec![
        ("device_id".to_owned(), "Dictionary(Int32, Utf8)".to_owned()),
        ("time".to_owned(), "Timestamp(ns, \"UTC\")".to_owned()),
    ];
    for field in ["energy_wh", "power_w"] {
        expected.push((format!("{field}_count"), "Int64".to_owned()));
        for aggregate in ["min", "max", "sum", "avg", "last"] {
            expected.push((format!("{field}_{aggregate}"), "Float64".to_owned()));
        }
    }
    expected.push(("energy_wh_energy".to_owned(), "Float64".to_owned()));
    expected.sort();
    assert_eq!(columns, expected);

    // Nothing stale, nothing to do.
    assert!(fx.engine.rollups().stale().is_empty());
    assert_eq!(refresh(&fx).rows_15m, 0);
}

/// Readings of m1 at 00:00, 00:10, 00:20 and 00:40, 10 Wh per 10 minutes.
async fn write_regular(fx: &Fixture) {
    fx.write(vec![
        reading("m1", 0, Some(1.0), 1000.0),
        reading("m1", 10, Some(1.0), 1010.0),
        reading("m1", 20, Some(1.0), 1020.0),
        reading("m1", 40, Some(1.0), 1040.0),
    ])
    .await;
}

/// The late reading at 00:14 (1013 Wh).
async fn write_late(fx: &Fixture) {
    fx.write(vec![reading("m1", 14, Some(5.0), 1013.0)]).await;
}

/// Energy and power counts per quarter hour, and the hour's energy.
async fn energies(fx: &Fixture) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let m15 = rollup(fx, "meter_15m").await;
    let h1 = rollup(fx, "meter_1h").await;
    (
        column(&m15, "energy_wh_energy"),
        column(&m15, "power_w_count"),
        column(&h1, "energy_wh_energy"),
    )
}

/// What the rollups say after the late reading.
fn after_late() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    (
        // 00:00: 10 + 3; 00:15: the step into 00:20 now starts at 00:14 (7, was 10).
        vec![json!(13.0), json!(7.0), json!(20.0)],
        vec![json!(3), json!(1), json!(1)],
        vec![json!(40.0)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_marks_buckets_stale_and_a_refresh_fixes_them_and_the_next_step() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    refresh(&fx);
    let before = (
        vec![json!(10.0), json!(10.0), json!(20.0)],
        vec![json!(2), json!(1), json!(1)],
        vec![json!(40.0)],
    );
    assert_eq!(energies(&fx).await, before);

    write_late(&fx).await;
    // Marked before the ack: from the late reading up to an hour after it, capped at
    // the table's newest row.
    let stale = fx.engine.rollups().stale();
    let ranges = &stale["meter"];
    assert_eq!(ranges.len(), 1);
    assert_eq!((ranges[0].min, ranges[0].max), (at(14), at(40)));
    // Not refreshed yet: the old numbers.
    assert_eq!(energies(&fx).await, before);

    let stats = refresh(&fx);
    // The three quarter hours from 00:00 to 00:45, the hour, the day.
    assert_eq!((stats.rows_15m, stats.rows_1h, stats.rows_1d), (3, 1, 1));
    assert_eq!(energies(&fx).await, after_late());
    assert!(fx.engine.rollups().stale().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_write_that_replaces_a_reading_replaces_its_rollups() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    refresh(&fx);
    // 00:10 again, with another register value: last write wins.
    fx.write(vec![reading("m1", 10, Some(3.0), 1005.0)]).await;
    refresh(&fx);
    let m15 = rollup(&fx, "meter_15m").await;
    assert_eq!(
        column(&m15, "energy_wh_energy"),
        [json!(5.0), json!(15.0), json!(20.0)]
    );
    assert_eq!(
        column(&m15, "power_w_sum"),
        [json!(4.0), json!(1.0), json!(1.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_tag_combinations_and_null_tags_stay_absent() {
    let fx = Fixture::new();
    fx.write(vec![
        line(
            "meter",
            at(1),
            &[("device_id", "m1")],
            vec![("power_w", FieldValue::I64(100))],
        ),
        line(
            "meter",
            at(1),
            &[("device_id", "m1"), ("phase", "L1")],
            vec![("power_w", FieldValue::I64(30))],
        ),
        line(
            "meter",
            at(2),
            &[("device_id", "m1"), ("phase", "L1")],
            vec![("power_w", FieldValue::I64(40))],
        ),
    ])
    .await;
    refresh(&fx);
    let rows = without_nulls(
        fx.rows("SELECT device_id, phase, power_w_count, power_w_avg FROM meter_15m ORDER BY phase NULLS FIRST")
            .await,
    );
    assert_eq!(
        rows,
        vec![
            json!({"device_id": "m1", "power_w_count": 1, "power_w_avg": 100.0}),
            json!({"device_id": "m1", "phase": "L1", "power_w_count": 2, "power_w_avg": 35.0}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_tags_is_one_series() {
    let fx = Fixture::new();
    let weather = |minute, temperature, humidity| {
        line(
            "weather",
            at(minute),
            &[],
            vec![
                ("temperature", FieldValue::F64(temperature)),
                ("humidity", FieldValue::U64(humidity)),
            ],
        )
    };
    fx.write(vec![weather(0, 3.0, 50), weather(50, 5.0, 70)])
        .await;
    refresh(&fx);
    let rows = fx
        .rows(
            "SELECT temperature_count AS n, temperature_avg AS t, humidity_max AS h \
             FROM weather_1d",
        )
        .await;
    assert_eq!(rows, vec![json!({"n": 2, "t": 4.0, "h": 70.0})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_tables_are_not_rolled_up_again_and_rejected_rows_are_skipped() {
    let fx = Fixture::new();
    fx.write(vec![
        reading("m1", 0, Some(1.0), 1.0),
        line("_rejected", at(0), &[], vec![("size", FieldValue::I64(12))]),
        // A table someone named like a rollup: left alone as well.
        line(
            "weather_1h",
            at(0),
            &[],
            vec![("temperature", FieldValue::F64(3.5))],
        ),
        // No numeric field: nothing to roll up.
        line(
            "notes",
            at(0),
            &[],
            vec![("text", FieldValue::String("hello".into()))],
        ),
    ])
    .await;
    refresh(&fx);
    // Twice: the first refresh's rollup rows must not mark anything.
    assert!(fx.engine.rollups().stale().is_empty());
    refresh(&fx);
    let tables = fx.store.table_names();
    assert_eq!(
        tables,
        [
            "_rejected",
            "meter",
            "meter_15m",
            "meter_1d",
            "meter_1h",
            "notes",
            "weather_1h"
        ]
    );
    assert!(is_rollup_table("weather_1h"));
    assert_eq!(table_name("meter", RollupLevel::D1), "meter_1d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_rollups_like_any_table() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    refresh(&fx);
    let rows = fx
        .rows(
            "SELECT time_bucket('30m', time) AS half, sum(energy_wh_energy) AS wh \
             FROM meter_15m WHERE device_id = 'm1' AND time >= '2024-01-01T00:00:00Z' \
             GROUP BY half ORDER BY half",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"half": "2024-01-01T00:00:00Z", "wh": 20.0}),
            json!({"half": "2024-01-01T00:30:00Z", "wh": 20.0}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_rollup_timezone_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("store");
    let config = QueryConfig {
        rollup_timezone: "Europe/Berln".into(),
        ..QueryConfig::default()
    };
    let error = QueryEngine::new(store.clone(), config).expect_err("bad zone");
    let message = error.to_string();
    assert!(message.contains("query.rollup_timezone"), "{message}");
    assert!(message.contains("Europe/Berln"), "{message}");
    store.shutdown().expect("shutdown");
}

/// The state file the rollups keep in the data directory.
fn saved_state(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("rollups.json")).expect("rollups.json"))
        .expect("JSON")
}

/// The stale ranges saved in the state file, by table.
fn saved_stale(dir: &Path) -> Value {
    saved_state(dir)["stale"].clone()
}

/// Copies a data directory as a crash would leave it: what is on disk now.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// An engine over the store in `dir`, as a restarted server would have.
fn reopen(dir: &Path) -> Fixture {
    Fixture::open(dir, QueryConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_acked_before_a_crash_are_rolled_up_after_the_restart() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    write_late(&fx).await;
    // Crash before any refresh: the rows are only in the WAL.
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_dir(fx.store.data_dir(), crashed.path());
    let restarted = reopen(crashed.path());
    assert!(!restarted.engine.rollups().stale().is_empty());
    refresh(&restarted);
    assert_eq!(energies(&restarted).await, after_late());
    restarted.store.shutdown().expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_replayed_from_the_wal_is_rolled_up_after_the_restart() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    refresh(&fx);
    // Everything so far in Parquet, rollups up to date; then a late reading, acked,
    // and a crash before the refresh: only the WAL holds it.
    fx.store.persist_now().expect("persist");
    write_late(&fx).await;
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_dir(fx.store.data_dir(), crashed.path());
    let restarted = reopen(crashed.path());
    let stale = restarted.engine.rollups().stale();
    assert_eq!(
        stale["meter"]
            .iter()
            .map(|r| (r.min, r.max))
            .collect::<Vec<_>>(),
        // The replayed late reading (and the hour after it, up to the newest row),
        // and the tail from the newest quarter-hour rollup on.
        [(at(14), at(40))]
    );
    refresh(&restarted);
    assert_eq!(energies(&restarted).await, after_late());
    restarted.store.shutdown().expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_in_parquet_without_rollups_is_backfilled_after_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let fx = Fixture::open(dir.path(), QueryConfig::default());
        write_regular(&fx).await;
        write_late(&fx).await;
        // Never refreshed (as written by a version without rollups); all in Parquet.
        fx.store.shutdown().expect("shutdown");
    }
    let fx = Fixture::open(dir.path(), QueryConfig::default());
    assert_eq!(fx.store.stats().buffer_rows, 0);
    let stale = fx.engine.rollups().stale();
    assert_eq!(
        stale["meter"]
            .iter()
            .map(|r| (r.min, r.max))
            .collect::<Vec<_>>(),
        [(at(0), at(40))]
    );
    refresh(&fx);
    assert_eq!(energies(&fx).await, after_late());
    fx.store.shutdown().expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_refreshes_what_is_stale() {
    // A background refresh that would not run for an hour.
    let fx = Fixture::with_config(QueryConfig {
        rollup_refresh_interval: Duration::from_secs(3600),
        ..QueryConfig::default()
    });
    write_regular(&fx).await;
    refresh(&fx);
    let task = fx.engine.rollups().start_refresh().expect("start");
    write_late(&fx).await;
    task.shutdown();
    assert_eq!(energies(&fx).await, after_late());
    assert!(fx.engine.rollups().stale().is_empty());
    assert_eq!(saved_stale(fx.store.data_dir()), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_refresh_off_stale_buckets_survive_a_clean_restart() {
    let config = QueryConfig {
        rollup_refresh_interval: Duration::ZERO,
        ..QueryConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let fx = Fixture::open(dir.path(), config.clone());
        write_regular(&fx).await;
        fx.engine.rollups().refresh_now().expect("refresh");
        let task = fx.engine.rollups().start_refresh().expect("start");
        write_late(&fx).await;
        // Off: no last refresh, the stale buckets are saved instead.
        task.shutdown();
        assert_eq!(
            column(&rollup(&fx, "meter_15m").await, "energy_wh_energy"),
            [json!(10.0), json!(10.0), json!(20.0)]
        );
        fx.store.shutdown().expect("shutdown");
    }
    assert_eq!(
        saved_stale(dir.path()),
        json!({"meter": [[at(14), at(40)]]})
    );
    let fx = Fixture::open(dir.path(), config);
    // Everything is in Parquet now: only the saved list knows about 00:14.
    assert_eq!(fx.store.stats().buffer_rows, 0);
    refresh(&fx);
    assert_eq!(energies(&fx).await, after_late());
    let task = fx.engine.rollups().start_refresh().expect("start");
    task.shutdown();
    assert_eq!(saved_stale(dir.path()), json!({}));
    fx.store.shutdown().expect("shutdown");
}

// ---- equality with SQL over the raw rows, on random data ----

/// One generated reading: minute and second offsets from 18:00 UTC on Jan 1 (the
/// data crosses midnight in Berlin and in UTC), and the values.
#[derive(Debug, Clone)]
struct Generated {
    series: usize,
    second: i64,
    power: Option<f64>,
    /// The register's rise since the previous reading of the series, or a reset.
    rise: Option<f64>,
    status: i64,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        0..3usize,
        0..(12 * 3600i64),
        prop::option::weighted(0.8, -50.0..5000.0f64),
        prop::option::weighted(0.95, 0.0..200.0f64),
        0..10i64,
    )
        .prop_map(|(series, second, power, rise, status)| Generated {
            series,
            second,
            power,
            rise,
            status,
        })
}

/// The series: (device_id, phase).
const SERIES: [(&str, Option<&str>); 3] = [("m1", None), ("m1", Some("L1")), ("m2", None)];

/// Rows in time order per series with a cumulative register (resets to a small value
/// where `rise` is None), then in the order given by `order`.
fn lines(readings: &[Generated]) -> Vec<ParsedLine> {
    let mut sorted: Vec<&Generated> = readings.iter().collect();
    sorted.sort_by_key(|g| (g.series, g.second));
    sorted.dedup_by_key(|g| (g.series, g.second));
    let mut register = [10_000.0f64; 3];
    let mut out = Vec::new();
    for g in sorted {
        register[g.series] = match g.rise {
            Some(rise) => register[g.series] + rise,
            None => 3.0,
        };
        let (device, phase) = SERIES[g.series];
        let mut tags = vec![("device_id", device)];
        if let Some(phase) = phase {
            tags.push(("phase", phase));
        }
        let mut fields = vec![
            ("energy_wh", FieldValue::F64(register[g.series])),
            ("status", FieldValue::I64(g.status)),
            ("quality", FieldValue::String("good".into())),
        ];
        if let Some(power) = g.power {
            fields.push(("power_w", FieldValue::F64(power)));
        }
        out.push(line(
            "meter",
            JAN1 + 18 * HOUR + g.second * 1_000_000_000,
            &tags,
            fields,
        ));
    }
    out
}

/// The raw aggregation per bucket in SQL, with the rollups' column names. Without a
/// `phase` column (no such series was generated), phase is NULL everywhere.
fn raw_sql(width: &str, tz: &str, has_phase: bool, fields: &[&str]) -> String {
    let (partition, phase) = if has_phase {
        ("device_id, phase", "phase")
    } else {
        ("device_id", "CAST(NULL AS VARCHAR) AS phase")
    };
    let mut columns = Vec::new();
    for field in fields {
        columns.push(format!(
            "count({field}) AS {field}_count, CAST(min({field}) AS DOUBLE) AS {field}_min, \
             CAST(max({field}) AS DOUBLE) AS {field}_max, CAST(sum({field}) AS DOUBLE) AS {field}_sum, \
             avg({field}) AS {field}_avg, \
             CAST(last_value({field} ORDER BY time) FILTER (WHERE {field} IS NOT NULL) AS DOUBLE) AS {field}_last"
        ));
    }
    format!(
        "WITH steps AS ( \
           SELECT *, counter_delta(energy_wh, time, INTERVAL '1 hour') \
             OVER (PARTITION BY {partition} ORDER BY time) AS step \
           FROM meter) \
         SELECT CAST(time_bucket('{width}', time, '{tz}') AS BIGINT) AS t, device_id, {phase}, \
           {}, sum(step) AS energy_wh_energy \
         FROM steps GROUP BY 1, 2, 3",
        columns.join(", ")
    )
}

/// Rows keyed by (t, device_id, phase).
fn keyed(rows: Vec<Value>) -> BTreeMap<String, Value> {
    rows.into_iter()
        .map(|r| {
            let key = format!("{} {} {}", r["t"], r["device_id"], r["phase"]);
            (key, r)
        })
        .collect()
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// Compares every column of the raw aggregation with the rollup's.
fn assert_same(level: &str, raw: BTreeMap<String, Value>, rolled: BTreeMap<String, Value>) {
    assert_eq!(
        raw.keys().collect::<Vec<_>>(),
        rolled.keys().collect::<Vec<_>>(),
        "{level}: buckets and series"
    );
    for (key, expected) in &raw {
        let got = &rolled[key];
        for (column, want) in expected.as_object().expect("object") {
            let have = got.get(column).unwrap_or(&Value::Null);
            // A bucket rolled up before the table had the field has no count for it
            // (documented): NULL where SQL counts 0.
            let unknown_field = column.ends_with("_count") && have.is_null() && want == &json!(0);
            assert!(
                unknown_field || close(want, have),
                "{level} {key} {column}: SQL says {want}, the rollup {have}"
            );
        }
        // Nothing more than SQL has (absent = NULL there too).
        for (column, have) in got.as_object().expect("object") {
            if !expected.as_object().expect("object").contains_key(column) {
                assert!(have.is_null(), "{level} {key} {column}: extra {have}");
            }
        }
    }
}

async fn check_against_sql(fx: &Fixture, tz: &str) {
    for (level, width, zone) in [
        (RollupLevel::M15, "15 minutes", "UTC"),
        (RollupLevel::H1, "1 hour", "UTC"),
        (RollupLevel::D1, "1 day", tz),
    ] {
        let has_phase = fx
            .store
            .table_schema("meter")
            .is_some_and(|s| s.index_of("phase").is_ok());
        // Only the fields some generated row had.
        let fields: Vec<&str> = ["energy_wh", "power_w", "status"]
            .into_iter()
            .filter(|f| {
                fx.store
                    .table_schema("meter")
                    .is_some_and(|s| s.index_of(f).is_ok())
            })
            .collect();
        let raw = keyed(fx.rows(&raw_sql(width, zone, has_phase, &fields)).await);
        let table = table_name("meter", level);
        let rolled = keyed(
            fx.rows(&format!(
                "SELECT CAST(time AS BIGINT) AS t, * EXCLUDE (time) FROM {table}"
            ))
            .await,
        );
        assert_same(&table, raw, rolled);
    }
}

/// How the generated rows reach the store.
#[derive(Debug, Clone, Copy)]
enum Arrival {
    /// Shuffled: out of order within and across batches.
    Shuffled,
    /// In time order, as a live meter sends them.
    InOrder,
    /// In time order, except every `n`-th row, which comes at the end (late).
    Late(usize),
}

fn arrival() -> impl Strategy<Value = Arrival> {
    prop_oneof![
        Just(Arrival::Shuffled),
        Just(Arrival::InOrder),
        (2..6usize).prop_map(Arrival::Late),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Writes random readings in batches with refreshes between some of them
    /// (in-order, out-of-order and late data, resets, gaps over an hour, missing power,
    /// rewritten points), then compares all three levels with SQL over the raw rows.
    #[test]
    fn rollups_equal_the_raw_aggregation_in_sql(
        readings in prop::collection::vec(generated(), 1..80),
        order in prop::collection::vec(any::<u32>(), 80),
        arrival in arrival(),
        batches in 1..6usize,
        refresh_between in any::<bool>(),
        rewrite in prop::option::of((any::<prop::sample::Index>(), 0.0..100.0f64)),
        berlin in any::<bool>(),
    ) {
        let tz = if berlin { "Europe/Berlin" } else { "UTC" };
        let config = QueryConfig { rollup_timezone: tz.into(), ..QueryConfig::default() };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let fx = Fixture::with_config(config);
            let mut lines = lines(&readings);
            match arrival {
                Arrival::Shuffled => {
                    let mut keyed: Vec<(u32, ParsedLine)> =
                        order.iter().copied().cycle().zip(lines.drain(..)).collect();
                    keyed.sort_by_key(|(k, _)| *k);
                    lines = keyed.into_iter().map(|(_, l)| l).collect();
                }
                Arrival::InOrder => lines.sort_by_key(|l| l.row.time),
                Arrival::Late(n) => {
                    lines.sort_by_key(|l| l.row.time);
                    let (late, on_time): (Vec<_>, Vec<_>) =
                        lines.drain(..).enumerate().partition(|(i, _)| i % n == n - 1);
                    lines = on_time.into_iter().chain(late).map(|(_, l)| l).collect();
                }
            }
            if let Some((index, power)) = rewrite {
                // The same point again, later, with other values: last write wins.
                let mut again = lines[index.index(lines.len())].clone();
                again.row.fields.retain(|(name, _)| name != "power_w");
                again.row.fields.push(("power_w".into(), FieldValue::F64(power)));
                lines.push(again);
            }
            let per_batch = lines.len().div_ceil(batches);
            for chunk in lines.chunks(per_batch) {
                fx.write(chunk.to_vec()).await;
                if refresh_between {
                    refresh(&fx);
                }
            }
            refresh(&fx);
            check_against_sql(&fx, tz).await;
        });
    }
}

// ---- what has not ended yet, the time zone record, windows for the chart API ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_hour_that_has_not_ended_stays_stale_until_it_has() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    let rollups = fx.engine.rollups();
    // 00:20: the quarter hour from 00:15 is open, the one from 00:30 in the future.
    let stats = rollups.refresh_at(at(20)).expect("refresh");
    assert!(stats.complete);
    assert_eq!((stats.rows_15m, stats.rows_1h, stats.rows_1d), (1, 1, 1));
    assert_eq!(column(&rollup(&fx, "meter_15m").await, "t"), [json!(at(0))]);
    // The hour so far holds the ended quarter hour only.
    assert_eq!(
        column(&rollup(&fx, "meter_1h").await, "energy_wh_count"),
        [json!(2)]
    );
    let ranges: Vec<(i64, i64)> = rollups.stale()["meter"]
        .iter()
        .map(|r| (r.min, r.max))
        .collect();
    assert_eq!(ranges, [(at(15), at(40))]);
    assert_eq!(rollups.first_stale("meter", at(0), at(60)), Some(at(15)));
    // Still open a moment before it ends: nothing is done again.
    let stats = rollups.refresh_at(at(30) - 1).expect("refresh");
    assert_eq!(stats.rows_15m, 0);
    assert_eq!(rollups.first_stale("meter", at(0), at(60)), Some(at(15)));

    // 00:30 has come: the quarter hour from 00:15 is rolled up, 00:30 still open.
    let stats = rollups.refresh_at(at(30)).expect("refresh");
    assert_eq!(stats.rows_15m, 1);
    assert_eq!(rollups.first_stale("meter", at(0), at(60)), Some(at(30)));
    // After 00:45 all of it.
    rollups.refresh_at(at(46)).expect("refresh");
    assert!(rollups.stale().is_empty());
    assert_eq!(rollups.first_stale("meter", at(0), at(60)), None);
    assert_eq!(
        column(&rollup(&fx, "meter_15m").await, "t"),
        [json!(at(0)), json!(at(15)), json!(at(30))]
    );
    assert_eq!(
        column(&rollup(&fx, "meter_1h").await, "energy_wh_energy"),
        [json!(40.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_stale_answers_for_a_window_of_one_table() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    refresh(&fx);
    write_late(&fx).await;
    let rollups = fx.engine.rollups();
    // Marked: [00:14, 00:40].
    assert_eq!(rollups.first_stale("meter", at(0), at(60)), Some(at(14)));
    assert_eq!(rollups.first_stale("meter", at(20), at(60)), Some(at(20)));
    assert_eq!(rollups.first_stale("meter", at(0), at(14)), None);
    assert_eq!(rollups.first_stale("meter", at(41), at(60)), None);
    assert_eq!(rollups.first_stale("weather", at(0), at(60)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_stale_marks_the_range_as_given_and_saves_it_at_once() {
    let fx = Fixture::new();
    write_regular(&fx).await;
    refresh(&fx);
    let rollups = fx.engine.rollups();
    assert!(rollups.stale().is_empty());
    rollups.mark_stale("meter", at(5), at(5));
    // Rollup tables are never rolled up: marking one changes nothing.
    rollups.mark_stale("meter_15m", at(5), at(5));
    // An empty range neither.
    rollups.mark_stale("meter", at(9), at(8));
    let stale = rollups.stale();
    assert_eq!(stale.keys().collect::<Vec<_>>(), ["meter"]);
    assert_eq!(
        stale["meter"]
            .iter()
            .map(|r| (r.min, r.max))
            .collect::<Vec<_>>(),
        // As given: without the hour after that a write's marks reach.
        [(at(5), at(5))]
    );
    // On disk before any refresh: a crash keeps the mark.
    assert_eq!(
        saved_stale(fx.store.data_dir()),
        json!({"meter": [[at(5), at(5)]]})
    );
    let stats = refresh(&fx);
    assert_eq!((stats.chunks, stats.rows_15m), (1, 1), "{stats:?}");
    assert!(rollups.stale().is_empty());
    fx.store.shutdown().expect("shutdown");
}

#[test]
fn the_chart_api_gets_the_rules_from_the_rollups() {
    use query::rollup::is_counter;
    use query::{Bucketing, Width};
    assert!(is_counter("energy_wh"));
    assert!(!is_counter("power_w"));
    assert!(!is_counter("energy_wh_sum"));
    let dir = tempfile::tempdir().expect("tempdir");
    let fx = Fixture::open(
        dir.path(),
        QueryConfig {
            rollup_timezone: "Europe/Berlin".into(),
            ..QueryConfig::default()
        },
    );
    let rollups = fx.engine.rollups();
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("zone");
    let expected = [
        (
            RollupLevel::M15,
            Width::Fixed { nanos: 15 * MINUTE },
            chrono_tz::Tz::UTC,
        ),
        (
            RollupLevel::H1,
            Width::Fixed { nanos: HOUR },
            chrono_tz::Tz::UTC,
        ),
        (RollupLevel::D1, Width::Days(1), berlin),
    ];
    for (level, width, tz) in expected {
        let bucketing = rollups.bucketing(level);
        assert_eq!(
            bucketing,
            Bucketing::new(width, tz, None).expect("bucketing"),
            "{level:?}"
        );
    }
    // Berlin's day starts at 23:00 UTC in winter.
    assert_eq!(rollups.bucketing(RollupLevel::D1).start(JAN1), JAN1 - HOUR);
    fx.store.shutdown().expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_longer_than_a_pass_is_done_by_refresh_now() {
    let fx = Fixture::new();
    // 30 hours of readings every 30 minutes: 30 hour-long chunks, more than a pass.
    let lines: Vec<ParsedLine> = (0..60)
        .map(|i| reading("m1", i * 30, Some(1.0), 1000.0 + i as f64))
        .collect();
    fx.write(lines).await;
    let stats = refresh(&fx);
    assert!(stats.complete);
    assert_eq!(stats.chunks, 30);
    assert_eq!(stats.rows_15m, 60);
    assert_eq!(stats.rows_1h, 30);
    assert!(fx.engine.rollups().stale().is_empty());
    // The end of time: every bucket has ended, nothing overflows, nothing to do.
    let stats = fx.engine.rollups().refresh_at(i64::MAX).expect("refresh");
    assert_eq!((stats.chunks, stats.rows_15m), (0, 0));
    let days = rollup(&fx, "meter_1d").await;
    assert_eq!(
        column(&days, "energy_wh_energy"),
        // 48 readings on the first day (the first has no step), 12 on the second.
        [json!(47.0), json!(12.0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_time_zone_is_recorded_and_a_change_is_refused_while_daily_rollups_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = |name: &str| QueryConfig {
        rollup_timezone: name.into(),
        ..QueryConfig::default()
    };
    {
        let fx = Fixture::open(dir.path(), zone("UTC"));
        // Recorded by the first refresh, even one with nothing to do.
        assert!(!dir.path().join("rollups.json").exists());
        refresh(&fx);
        assert_eq!(saved_state(dir.path())["timezone"], json!("UTC"));
        fx.store.shutdown().expect("shutdown");
    }
    {
        // No daily rollups yet: another zone is fine, and recorded.
        let fx = Fixture::open(dir.path(), zone("Europe/Berlin"));
        write_regular(&fx).await;
        refresh(&fx);
        assert_eq!(saved_state(dir.path())["timezone"], json!("Europe/Berlin"));
        fx.store.shutdown().expect("shutdown");
    }
    let store = Store::open(dir.path(), StoreConfig::default()).expect("store");
    let error = QueryEngine::new(store.clone(), zone("UTC")).expect_err("zone changed");
    let message = error.to_string();
    assert!(message.contains("\"UTC\""), "{message}");
    assert!(message.contains("\"Europe/Berlin\""), "{message}");
    assert!(message.contains("meter_1d"), "{message}");
    assert!(message.contains("query.rollup_timezone"), "{message}");
    // The same zone again starts.
    let engine = QueryEngine::new(store.clone(), zone("Europe/Berlin")).expect("same zone");
    drop(engine);
    store.shutdown().expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresh_saves_the_marks_it_leaves_after_each_pass() {
    let fx = Fixture::with_config(QueryConfig {
        rollup_refresh_interval: Duration::from_millis(20),
        ..QueryConfig::default()
    });
    let task = fx.engine.rollups().start_refresh().expect("start");
    let dir = fx.store.data_dir().to_path_buf();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The first pass records the zone (with no marks yet).
    while !dir.join("rollups.json").exists() {
        assert!(std::time::Instant::now() < deadline, "no state file");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(saved_stale(&dir), json!({}));
    // A reading an hour ahead (so that no quarter hour can end during the test): its
    // quarter hour has not ended, so it stays marked, as the current one would.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
        + HOUR;
    fx.write(vec![line(
        "meter",
        now,
        &[("device_id", "m1")],
        vec![("energy_wh", FieldValue::F64(1.0))],
    )])
    .await;
    // Not waiting for a shutdown: a crash now would still find the marks.
    let saved =
        |dir: &Path| dir.join("rollups.json").exists() && saved_stale(dir).get("meter").is_some();
    while !saved(&dir) {
        assert!(std::time::Instant::now() < deadline, "not saved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(saved_stale(&dir)["meter"], json!([[now, now]]));
    assert_eq!(
        fx.engine
            .rollups()
            .first_stale("meter", now - HOUR, now + 1),
        Some(now)
    );
    task.shutdown();
    // Still open at the shutdown: saved, not rolled up.
    assert_eq!(saved_stale(&dir)["meter"], json!([[now, now]]));
    assert!(fx.store.table_schema("meter_15m").is_none());
}

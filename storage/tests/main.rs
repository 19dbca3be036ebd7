//! Store behaviour through its public API, on real files in temporary directories.

use std::path::Path;

use arrow::array::{
    Array, ArrayAccessor, AsArray, DictionaryArray, Float64Array, TimestampNanosecondArray,
};
use arrow::datatypes::{Int32Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use storage::{FieldValue, ParsedLine, Row, Store, StoreConfig, TimeRange, WriteBatch};

fn line(
    n: usize,
    table: &str,
    dev: &str,
    time: i64,
    fields: Vec<(&str, FieldValue)>,
) -> ParsedLine {
    ParsedLine {
        line: n,
        table: table.into(),
        row: Row {
            time,
            tags: vec![("device_id".into(), dev.into())],
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        },
    }
}

fn power(n: usize, dev: &str, time: i64, p: f64) -> ParsedLine {
    line(n, "meter", dev, time, vec![("power_w", FieldValue::F64(p))])
}

fn write(store: &Store, lines: Vec<ParsedLine>) -> WriteBatch {
    let (batch, errors) = store.validate(lines);
    assert!(errors.is_empty(), "{errors:?}");
    store
        .submit(batch.clone(), true)
        .unwrap()
        .wait_blocking()
        .unwrap();
    batch
}

/// (device_id, time, power_w) of every row of `meter`, sorted.
fn rows(store: &Store) -> Vec<(String, i64, Option<f64>)> {
    let schema = store.table_schema("meter").unwrap();
    let dev = schema.index_of("device_id").unwrap();
    let p = schema.index_of("power_w").unwrap();
    let batches = store
        .scan("meter", Some(&[0, dev, p]), TimeRange::ALL)
        .unwrap();
    let mut out = collect(&batches);
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn collect(batches: &[RecordBatch]) -> Vec<(String, i64, Option<f64>)> {
    let mut out = Vec::new();
    for b in batches {
        let t = b.column(0).as_primitive::<TimestampNanosecondType>();
        let d = b
            .column(1)
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .unwrap();
        let d = d.downcast_dict::<arrow::array::StringArray>().unwrap();
        let p = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            let v = if p.is_null(i) { None } else { Some(p.value(i)) };
            out.push((d.value(i).to_string(), t.value(i), v));
        }
    }
    out
}

fn parquet_files(dir: &Path) -> usize {
    fn walk(p: &Path, n: &mut usize) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    if dir.join("tables").exists() {
        walk(&dir.join("tables"), &mut n);
    }
    n
}

const DAY: i64 = 86_400_000_000_000;

#[test]
fn type_conflicts_are_per_line_and_schema_grows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    write(&store, vec![power(1, "a", 1, 1.0)]);
    let (batch, errors) = store.validate(vec![
        line(1, "meter", "a", 2, vec![("power_w", FieldValue::I64(5))]),
        line(
            2,
            "meter",
            "a",
            3,
            vec![("status", FieldValue::String("ok".into()))],
        ),
        line(3, "meter", "a", 4, vec![("status", FieldValue::Bool(true))]),
        line(
            4,
            "meter",
            "a",
            5,
            vec![("device_id", FieldValue::F64(1.0))],
        ),
        line(5, "../x", "a", 5, vec![("v", FieldValue::F64(1.0))]),
    ]);
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 3, 4, 5], "{errors:?}");
    assert!(
        errors[0].reason.contains("\"power_w\" is float"),
        "{}",
        errors[0].reason
    );
    assert!(errors[1].reason.contains("string"), "{}", errors[1].reason);
    assert!(errors[2].reason.contains("tag"), "{}", errors[2].reason);
    assert!(errors[3].reason.contains("'/'"), "{}", errors[3].reason);
    assert_eq!(batch.row_count(), 1);
    let names: Vec<String> = store
        .table_schema("meter")
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["time", "device_id", "power_w", "status"]);
    store.shutdown().unwrap();
}

#[test]
fn last_write_wins_in_buffer_files_and_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    write(
        &store,
        vec![
            power(1, "a", 10, 1.0),
            power(2, "a", 10, 2.0),
            power(3, "b", 10, 3.0),
        ],
    );
    assert_eq!(
        rows(&store),
        [("a".into(), 10, Some(2.0)), ("b".into(), 10, Some(3.0))]
    );

    store.persist_now().unwrap();
    assert_eq!(parquet_files(dir.path()), 1);
    assert_eq!(store.stats().buffer_rows, 0);
    // A retry of an old point and a correction of another, now in the buffer.
    write(
        &store,
        vec![
            power(1, "a", 10, 2.0),
            power(2, "b", 10, 30.0),
            power(3, "a", 10 + DAY, 4.0),
        ],
    );
    let expected = vec![
        ("a".to_string(), 10, Some(2.0)),
        ("a".to_string(), 10 + DAY, Some(4.0)),
        ("b".to_string(), 10, Some(30.0)),
    ];
    assert_eq!(rows(&store), expected);
    // Persisting again gives one more file per UTC day, and the same answer.
    store.persist_now().unwrap();
    assert_eq!(parquet_files(dir.path()), 3);
    assert_eq!(rows(&store), expected);
    store.shutdown().unwrap();

    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(rows(&store), expected);
    store.shutdown().unwrap();
}

#[test]
fn time_range_and_projection_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    write(
        &store,
        (0..10)
            .map(|i| power(i + 1, "a", i as i64 * 100, i as f64))
            .collect(),
    );
    store.persist_now().unwrap();
    write(
        &store,
        (10..20)
            .map(|i| power(i + 1, "a", i as i64 * 100, i as f64))
            .collect(),
    );
    let batches = store
        .scan(
            "meter",
            Some(&[0]),
            TimeRange {
                min: 550,
                max: 1400,
            },
        )
        .unwrap();
    let times: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            assert_eq!(b.num_columns(), 1);
            let t = b
                .column(0)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap();
            t.values().to_vec()
        })
        .collect();
    assert_eq!(times, [600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400]);
    // An empty projection still counts rows (SELECT count(*)).
    let batches = store.scan("meter", Some(&[]), TimeRange::ALL).unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 20);
    assert!(store.scan("nope", None, TimeRange::ALL).is_err());
    store.shutdown().unwrap();
}

#[test]
fn unacknowledged_state_is_rebuilt_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    write(&store, vec![power(1, "a", 1, 1.0)]);
    store.persist_now().unwrap();
    write(&store, vec![power(1, "a", 2, 2.0), power(2, "a", 1, 10.0)]);
    // Without a shutdown nothing more is persisted: a reader replays the WAL.
    let reader = Store::open_read_only(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(
        rows(&reader),
        [("a".into(), 1, Some(10.0)), ("a".into(), 2, Some(2.0))]
    );
    assert!(matches!(
        reader.submit(WriteBatch::default(), true),
        Err(storage::Error::ReadOnly)
    ));
    store.shutdown().unwrap();
    assert!(matches!(
        store.submit(WriteBatch::default(), true),
        Err(storage::Error::ShuttingDown)
    ));
    // Shutdown persisted everything: the WAL holds no rows any more.
    assert_eq!(store.stats().wal_segments, 1);
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(store.stats().buffer_rows, 0);
    assert_eq!(
        rows(&store),
        [("a".into(), 1, Some(10.0)), ("a".into(), 2, Some(2.0))]
    );
    store.shutdown().unwrap();
}

#[test]
fn snapshots_happen_on_their_own_at_the_row_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        snapshot_rows: 100,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).unwrap();
    for chunk in 0..5 {
        write(
            &store,
            (0..50)
                .map(|i| power(i + 1, "a", chunk * 50 + i as i64, 1.0))
                .collect(),
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.stats().parquet_files < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot: {:?}",
            store.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(rows(&store).len(), 250);
    store.shutdown().unwrap();
}

#[test]
fn parquet_files_of_an_interrupted_snapshot_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    write(&store, vec![power(1, "a", 1, 1.0)]);
    store.persist_now().unwrap();
    store.shutdown().unwrap();
    let day = dir.path().join("tables/meter/1970-01-01");
    let orphan = day.join("00000000000000000099.parquet");
    std::fs::copy(day.join("00000000000000000001.parquet"), &orphan).unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(!orphan.exists());
    assert_eq!(rows(&store), [("a".into(), 1, Some(1.0))]);
    store.shutdown().unwrap();
}

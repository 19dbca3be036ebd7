//! Store behaviour through its public API, on both object storage backends: files in a
//! temporary directory, and a bucket on a real S3 server (moto). Every test below runs
//! as `local::<name>` and `s3::<name>`.

mod common {
    pub(crate) mod backend;
}

use arrow::array::{
    Array, ArrayAccessor, AsArray, DictionaryArray, Float64Array, TimestampNanosecondArray,
};
use arrow::datatypes::{Int32Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use storage::{FieldValue, ParsedLine, Row, Store, StoreConfig, TimeRange, WriteBatch};

use common::backend::{Backend, Env};

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

const DAY: i64 = 86_400_000_000_000;

on_both_backends!(
    type_conflicts_are_per_line_and_schema_grows,
    last_write_wins_in_buffer_files_and_across_them,
    time_range_and_projection_are_applied,
    unacknowledged_state_is_rebuilt_from_the_wal,
    snapshots_happen_on_their_own_at_the_row_threshold,
    parquet_files_of_an_interrupted_snapshot_are_removed_at_start,
    files_bigger_than_a_read_block_read_back_whole,
    a_damaged_catalog_is_an_error_naming_where_it_is,
);

fn type_conflicts_are_per_line_and_schema_grows(env: &Env) {
    let store = env.open();
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

fn last_write_wins_in_buffer_files_and_across_them(env: &Env) {
    let store = env.open();
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
    assert_eq!(env.parquet_files().len(), 1);
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
    assert_eq!(env.parquet_files().len(), 3);
    assert_eq!(rows(&store), expected);
    store.shutdown().unwrap();

    let store = env.open();
    assert_eq!(rows(&store), expected);
    store.shutdown().unwrap();
}

fn time_range_and_projection_are_applied(env: &Env) {
    let store = env.open();
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

fn unacknowledged_state_is_rebuilt_from_the_wal(env: &Env) {
    let store = env.open();
    write(&store, vec![power(1, "a", 1, 1.0)]);
    store.persist_now().unwrap();
    write(&store, vec![power(1, "a", 2, 2.0), power(2, "a", 1, 10.0)]);
    // Without a shutdown nothing more is persisted: a reader replays the WAL.
    let reader = env.open_read_only();
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
    let store = env.open();
    assert_eq!(store.stats().buffer_rows, 0);
    assert_eq!(
        rows(&store),
        [("a".into(), 1, Some(10.0)), ("a".into(), 2, Some(2.0))]
    );
    store.shutdown().unwrap();
}

fn snapshots_happen_on_their_own_at_the_row_threshold(env: &Env) {
    let store = env.open_with(StoreConfig {
        snapshot_rows: 100,
        ..env.config()
    });
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

fn parquet_files_of_an_interrupted_snapshot_are_removed_at_start(env: &Env) {
    let store = env.open();
    write(&store, vec![power(1, "a", 1, 1.0)]);
    store.persist_now().unwrap();
    store.shutdown().unwrap();
    let day = "tables/meter/1970-01-01";
    let orphan = format!("{day}/00000000000000000099.parquet");
    let file = env
        .read(&format!("{day}/00000000000000000001.parquet"))
        .expect("the snapshot's file");
    env.write(&orphan, file);
    assert!(env.exists(&orphan));
    let store = env.open();
    assert!(!env.exists(&orphan));
    assert_eq!(
        env.parquet_files(),
        [format!("{day}/00000000000000000001.parquet")]
    );
    assert_eq!(rows(&store), [("a".into(), 1, Some(1.0))]);
    store.shutdown().unwrap();
}

/// Parquet files are read from S3 in blocks of a few MiB; a file of several blocks,
/// with columns spanning block boundaries, reads back exactly.
fn files_bigger_than_a_read_block_read_back_whole(env: &Env) {
    let store = env.open();
    // Values that do not compress: a file of about 8 bytes a row.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64
    };
    let mut expected = Vec::new();
    for chunk in 0..13 {
        let lines: Vec<ParsedLine> = (0..100_000)
            .map(|i| {
                let dev = format!("d{}", i % 50);
                let t = chunk * 100_000 + i as i64;
                let p = next();
                expected.push((dev.clone(), t, Some(p)));
                power(i + 1, &dev, t, p)
            })
            .collect();
        write(&store, lines);
    }
    store.persist_now().unwrap();
    let files = env.parquet_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let size = env.read(&files[0]).unwrap().len();
    assert!(
        size > 8 << 20,
        "the file is only {size} bytes: fewer than three read blocks"
    );
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(rows(&store), expected);
    store.shutdown().unwrap();
}

/// A catalog that cannot be read stops the store from opening (rather than starting
/// empty), and the error says where it is: the file, or the bucket and prefix.
fn a_damaged_catalog_is_an_error_naming_where_it_is(env: &Env) {
    env.write("catalog.json", b"{not json".to_vec());
    let err = Store::open(env.dir(), env.config())
        .expect_err("a damaged catalog")
        .to_string();
    let config = env.config();
    let place = match env.backend() {
        Backend::Local => format!("file://{}/catalog.json", env.dir().display()),
        Backend::S3 => format!(
            "s3://{}/{}/catalog.json",
            config.s3_bucket, config.s3_prefix
        ),
    };
    assert!(err.contains(&place), "{err}");
}

/// On S3 the catalog and the Parquet files are objects under the configured prefix,
/// and the data directory holds only the WAL.
#[test]
fn on_s3_only_the_wal_is_on_local_disk() {
    let Some(env) = Backend::S3.env() else {
        return;
    };
    let store = env.open();
    write(
        &store,
        vec![power(1, "a", 1, 1.0), power(2, "a", 1 + DAY, 2.0)],
    );
    store.persist_now().unwrap();
    store.shutdown().unwrap();
    assert_eq!(
        env.list(""),
        [
            "catalog.json",
            "tables/meter/1970-01-01/00000000000000000001.parquet",
            "tables/meter/1970-01-02/00000000000000000002.parquet",
        ]
    );
    let local: Vec<String> = std::fs::read_dir(env.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(local, ["wal"]);
    let catalog = String::from_utf8(env.read("catalog.json").unwrap()).unwrap();
    assert!(
        catalog.contains("00000000000000000002.parquet"),
        "{catalog}"
    );
}

/// A bucket that does not exist is refused at start, naming it, rather than read as an
/// empty store.
#[test]
fn on_s3_a_missing_bucket_is_an_error_naming_it() {
    let Some(env) = Backend::S3.env() else {
        return;
    };
    let config = StoreConfig {
        s3_bucket: "no-such-bucket".into(),
        ..env.config()
    };
    for read_only in [false, true] {
        let result = if read_only {
            Store::open_read_only(env.dir(), config.clone())
        } else {
            Store::open(env.dir(), config.clone())
        };
        let err = result.expect_err("a missing bucket").to_string();
        assert!(err.contains("s3://no-such-bucket"), "{err}");
    }
}

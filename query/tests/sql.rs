//! Queries over the store: time filters, aggregates, catalog views, evolution, dedup.

use serde_json::{Value, json};
use storage::FieldValue;

use crate::common::{Fixture, JAN1, MINUTE, line};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_filters_in_every_literal_style_select_the_right_rows() {
    let fx = Fixture::new();
    fx.write_meters().await;
    // (filter, expected rows out of 10: minutes 0..=4 for two sites)
    let cases = [
        ("time >= '2024-01-01T00:02:00Z'", 6),
        ("time >= '2024-01-01T02:02:00+02:00'", 6),
        ("time >= TIMESTAMP '2024-01-01 00:02:00'", 6),
        ("time >= CAST('2024-01-01T00:02:00Z' AS TIMESTAMP)", 6),
        ("time > to_timestamp_seconds(1704067320)", 4),
        ("time <= to_timestamp_millis(1704067260000)", 4),
        ("time < to_timestamp_micros(1704067260000000)", 2),
        ("time = '2024-01-01T00:04:00Z'", 2),
        ("'2024-01-01T00:03:00Z' < time", 2),
        (
            "time BETWEEN '2024-01-01T00:01:00Z' AND '2024-01-01T00:03:00Z'",
            6,
        ),
        (
            "time >= '2024-01-01T00:01:00Z' AND time < '2024-01-01T00:03:00Z' AND site = 'a'",
            2,
        ),
        (
            "time < '2024-01-01T00:01:00Z' OR time > '2024-01-01T00:03:00Z'",
            4,
        ),
        (
            "time IN ('2024-01-01T00:00:00Z', '2024-01-01T00:04:00Z')",
            4,
        ),
        (
            "time NOT BETWEEN '2024-01-01T00:01:00Z' AND '2024-01-01T00:03:00Z'",
            4,
        ),
        ("time >= DATE '2024-01-01'", 10),
        ("time < DATE '2024-01-01'", 0),
        ("time < now()", 10),
        ("time > now() - INTERVAL '1 hour'", 0),
        ("date_trunc('minute', time) = '2024-01-01T00:02:00Z'", 2),
        (
            "time > '2024-01-01T00:04:00Z' AND time < '2024-01-01T00:01:00Z'",
            0,
        ),
    ];
    for (filter, expected) in cases {
        let sql = format!("SELECT time, site, power FROM meter WHERE {filter}");
        assert_eq!(fx.count(&sql).await, expected, "{sql}");
        let sql = format!("SELECT count(*) AS n FROM meter WHERE {filter}");
        assert_eq!(fx.rows(&sql).await, vec![json!({ "n": expected })], "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_filters_are_pushed_into_the_scan() {
    let fx = Fixture::new();
    fx.write_meters().await;
    let plan = fx
        .rows("EXPLAIN SELECT power FROM meter WHERE time >= '2024-01-01T00:02:00Z' AND site = 'a'")
        .await;
    let text = serde_json::to_string(&plan).expect("json");
    assert!(text.contains("partial_filters=[meter.time >="), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_group_by_tags_and_time_buckets() {
    let fx = Fixture::new();
    fx.write_meters().await;
    let rows = fx
        .rows(
            "SELECT site, device, count(*) AS n, sum(power) AS power, max(energy) AS energy \
             FROM meter GROUP BY site, device ORDER BY site",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"site": "a", "device": "m1", "n": 5, "power": 10.0, "energy": 400}),
            json!({"site": "b", "device": "m2", "n": 5, "power": 60.0, "energy": 400}),
        ]
    );

    let rows = fx
        .rows(
            "SELECT date_bin(INTERVAL '2 minutes', time) AS bucket, avg(power) AS power \
             FROM meter WHERE site = 'a' GROUP BY bucket ORDER BY bucket",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"bucket": "2024-01-01T00:00:00Z", "power": 0.5}),
            json!({"bucket": "2024-01-01T00:02:00Z", "power": 2.5}),
            json!({"bucket": "2024-01-01T00:04:00Z", "power": 4.0}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_count_without_columns() {
    let fx = Fixture::new();
    fx.write_meters().await;
    assert_eq!(fx.count("SELECT * FROM meter LIMIT 3").await, 3);
    assert_eq!(
        fx.rows("SELECT count(*) AS n FROM meter").await,
        vec![json!({"n": 10})]
    );
    assert_eq!(
        fx.rows("SELECT power FROM meter ORDER BY time DESC, site DESC LIMIT 1")
            .await,
        vec![json!({"power": 14.0})]
    );
    // Tables are found with and without qualification.
    assert_eq!(fx.count("SELECT * FROM public.meter").await, 10);
    assert_eq!(fx.count("SELECT * FROM public.public.meter").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_views_list_tables_and_columns() {
    let fx = Fixture::new();
    fx.write_meters().await;

    let tables = fx.rows("SHOW TABLES").await;
    assert!(
        tables.contains(&json!({
            "table_catalog": "public",
            "table_schema": "public",
            "table_name": "meter",
            "table_type": "BASE TABLE",
        })),
        "{tables:?}"
    );

    let columns = fx
        .rows(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_name = 'meter' ORDER BY ordinal_position",
        )
        .await;
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["column_name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["time", "device", "site", "power", "energy"]);
    let types: Vec<&str> = columns
        .iter()
        .map(|c| c["data_type"].as_str().expect("type"))
        .collect();
    assert!(types[0].starts_with("Timestamp"), "{types:?}");
    assert!(types[1].starts_with("Dictionary"), "{types:?}");
    assert_eq!(&types[3..], ["Float64", "Int64"]);
    assert_eq!(columns[0]["is_nullable"], "NO");
    assert_eq!(columns[3]["is_nullable"], "YES");

    let show = fx.rows("SHOW COLUMNS FROM meter").await;
    assert_eq!(show.len(), 5, "{show:?}");
    let describe = fx.rows("DESCRIBE meter").await;
    assert_eq!(describe.len(), 5, "{describe:?}");
    assert_eq!(describe[0]["column_name"], "time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tables_and_columns_are_visible_without_reregistering() {
    let fx = Fixture::new();
    let missing = fx
        .engine
        .sql("SELECT * FROM meter")
        .await
        .expect_err("no table yet");
    assert!(missing.is_client_error(), "{missing}");
    assert!(missing.to_string().contains("meter"), "{missing}");

    fx.write_meters().await;
    assert_eq!(fx.count("SELECT * FROM meter").await, 10);

    // A new field and a new tag on the existing table, and a new table.
    fx.write(vec![
        line(
            "meter",
            JAN1 + 5 * MINUTE,
            &[("device", "m1"), ("phase", "L1"), ("site", "a")],
            vec![
                ("power", FieldValue::F64(5.0)),
                ("voltage", FieldValue::F64(230.5)),
            ],
        ),
        line(
            "battery",
            JAN1,
            &[("site", "a")],
            vec![
                ("soc", FieldValue::U64(80)),
                ("charging", FieldValue::Bool(true)),
            ],
        ),
    ])
    .await;

    let rows = fx
        .rows("SELECT site, phase, voltage, energy FROM meter WHERE voltage IS NOT NULL")
        .await;
    assert_eq!(
        rows,
        vec![json!({"site": "a", "phase": "L1", "voltage": 230.5, "energy": null})]
    );
    assert_eq!(
        fx.rows("SELECT count(*) AS n FROM meter WHERE voltage IS NULL AND phase IS NULL")
            .await,
        vec![json!({"n": 10})]
    );
    assert_eq!(
        fx.rows("SELECT soc, charging FROM battery").await,
        vec![json!({"soc": 80, "charging": true})]
    );
    let tables: Vec<Value> = fx
        .rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")
        .await;
    assert_eq!(
        tables,
        vec![
            json!({"table_name": "battery"}),
            json!({"table_name": "meter"})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_and_buffer_read_as_one_table_last_write_wins() {
    let fx = Fixture::new();
    fx.write_meters().await;
    fx.store.persist_now().expect("persist");
    let stats = fx.store.stats();
    assert!(stats.parquet_files >= 1, "{stats:?}");
    assert_eq!(stats.buffer_rows, 0, "{stats:?}");

    // Rewrite one persisted point and add a new one; both stay in the buffer.
    fx.write(vec![
        line(
            "meter",
            JAN1 + 2 * MINUTE,
            &[("device", "m1"), ("site", "a")],
            vec![
                ("power", FieldValue::F64(99.0)),
                ("energy", FieldValue::I64(999)),
            ],
        ),
        line(
            "meter",
            JAN1 + 5 * MINUTE,
            &[("device", "m1"), ("site", "a")],
            vec![
                ("power", FieldValue::F64(5.0)),
                ("energy", FieldValue::I64(500)),
            ],
        ),
    ])
    .await;
    assert!(fx.store.stats().buffer_rows >= 2);

    let rows = fx
        .rows(
            "SELECT time, power, energy FROM meter WHERE site = 'a' \
             AND time >= '2024-01-01T00:02:00Z' ORDER BY time",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"time": "2024-01-01T00:02:00Z", "power": 99.0, "energy": 999}),
            json!({"time": "2024-01-01T00:03:00Z", "power": 3.0, "energy": 300}),
            json!({"time": "2024-01-01T00:04:00Z", "power": 4.0, "energy": 400}),
            json!({"time": "2024-01-01T00:05:00Z", "power": 5.0, "energy": 500}),
        ]
    );
    assert_eq!(
        fx.rows("SELECT count(*) AS n FROM meter").await,
        vec![json!({"n": 11})]
    );

    // The same after everything is in Parquet.
    fx.store.persist_now().expect("persist again");
    assert_eq!(fx.store.stats().buffer_rows, 0);
    assert_eq!(
        fx.rows("SELECT count(*) AS n FROM meter").await,
        vec![json!({"n": 11})]
    );
    assert_eq!(
        fx.rows("SELECT power FROM meter WHERE site = 'a' AND time = '2024-01-01T00:02:00Z'")
            .await,
        vec![json!({"power": 99.0})]
    );
}

//! `<table>_latest`: the last-value cache in SQL, live and after a restart.

use query::{QueryConfig, QueryEngine};
use serde_json::json;
use storage::FieldValue;

use crate::common::{Fixture, JAN1, MINUTE, line};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_tables_hold_the_newest_row_of_every_series() {
    let fx = Fixture::new();
    fx.write_meters().await;
    let sql = "SELECT time, device, site, power, energy FROM meter_latest ORDER BY device";
    assert_eq!(
        fx.rows(sql).await,
        [
            json!({"time": "2024-01-01T00:04:00Z", "device": "m1", "site": "a", "power": 4.0, "energy": 400}),
            json!({"time": "2024-01-01T00:04:00Z", "device": "m2", "site": "b", "power": 14.0, "energy": 400}),
        ]
    );
    // The same as the raw table's newest rows, computed by SQL.
    assert_eq!(
        fx.rows(
            "SELECT device, max(time) AS time, last_value(power ORDER BY time) AS power \
             FROM meter GROUP BY device ORDER BY device"
        )
        .await,
        fx.rows("SELECT device, time, power FROM meter_latest ORDER BY device")
            .await
    );

    // A write is in the cache by the time it is acknowledged; a late one is not newer.
    fx.write(vec![
        line(
            "meter",
            JAN1 + 10 * MINUTE,
            &[("device", "m1"), ("site", "a")],
            vec![("power", FieldValue::F64(99.0))],
        ),
        line(
            "meter",
            JAN1 - MINUTE,
            &[("device", "m2"), ("site", "b")],
            vec![("power", FieldValue::F64(-1.0))],
        ),
    ])
    .await;
    assert_eq!(
        fx.rows(
            "SELECT device, time, power, energy FROM meter_latest WHERE power > 10 ORDER BY device"
        )
        .await,
        [
            json!({"device": "m1", "time": "2024-01-01T00:10:00Z", "power": 99.0, "energy": 400}),
            json!({"device": "m2", "time": "2024-01-01T00:04:00Z", "power": 14.0, "energy": 400}),
        ]
    );
    assert_eq!(
        fx.rows("SELECT count(*) AS n FROM meter_latest").await,
        [json!({"n": 2})]
    );
    assert_eq!(fx.count("SELECT * FROM meter_latest LIMIT 1").await, 1);
    assert_eq!(fx.engine.latest().series("meter"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_tables_are_resolved_by_name_and_stored_tables_win() {
    let fx = Fixture::new();
    fx.write_meters().await;
    // Not listed: SHOW TABLES says what is stored.
    let tables = fx.rows("SHOW TABLES").await;
    assert!(
        !tables.iter().any(|t| t["table_name"] == "meter_latest"),
        "{tables:?}"
    );
    // Columns as the table's.
    let columns: Vec<String> = fx
        .rows("DESCRIBE meter_latest")
        .await
        .iter()
        .map(|c| c["column_name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(columns, ["time", "device", "site", "power", "energy"]);
    // No table, no latest; rollup tables have none.
    for missing in ["nope_latest", "meter_15m_latest"] {
        if missing == "meter_15m_latest" {
            fx.write(vec![line(
                "meter_15m",
                JAN1,
                &[("device", "m1")],
                vec![("power_avg", FieldValue::F64(1.0))],
            )])
            .await;
        }
        let error = fx
            .engine
            .sql(&format!("SELECT * FROM {missing}"))
            .await
            .expect_err(missing);
        assert!(error.is_client_error(), "{missing}: {error}");
        assert!(error.to_string().contains(missing), "{error}");
    }
    // A stored table of that name is what the name means.
    fx.write(vec![line(
        "meter_latest",
        JAN1,
        &[("device", "stored")],
        vec![("power", FieldValue::F64(7.0))],
    )])
    .await;
    assert_eq!(
        fx.rows("SELECT device, power FROM meter_latest").await,
        [json!({"device": "stored", "power": 7.0})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_latest_table_is_warmed_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let fx = Fixture::open(dir.path(), QueryConfig::default());
        fx.write_meters().await;
        // Part in Parquet, part only in the WAL.
        fx.store.persist_now().expect("persist");
        fx.write(vec![line(
            "meter",
            JAN1 + 5 * MINUTE,
            &[("device", "m1"), ("site", "a")],
            vec![("power", FieldValue::F64(5.0))],
        )])
        .await;
        fx.store.shutdown().expect("shutdown");
    }
    let fx = Fixture::open(dir.path(), QueryConfig::default());
    // The query waits for the warm-up rather than answering without it.
    assert_eq!(
        fx.rows("SELECT device, time, power FROM meter_latest ORDER BY device")
            .await,
        [
            json!({"device": "m1", "time": "2024-01-01T00:05:00Z", "power": 5.0}),
            json!({"device": "m2", "time": "2024-01-01T00:04:00Z", "power": 14.0}),
        ]
    );
    assert!(fx.engine.latest().is_warm());

    // With the warm-up off, only what is written after the start.
    let config = QueryConfig {
        latest_warmup: std::time::Duration::ZERO,
        ..QueryConfig::default()
    };
    let cold = QueryEngine::new(fx.store.clone(), config).expect("engine");
    let output = cold
        .sql("SELECT * FROM meter_latest")
        .await
        .expect("an empty table");
    assert_eq!(output.num_rows(), 0);
    fx.store.shutdown().expect("shutdown");
}

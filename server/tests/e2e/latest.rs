//! `GET /api/v1/latest` and `<table>_latest` on the real binary: the last-value cache
//! is filled again from the store after a restart, graceful (Parquet) or not (WAL).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::Server;

/// How long the warm-up of a few rows may take in a debug build on two cores.
const WARM_TIMEOUT: Duration = Duration::from_secs(60);

/// `/api/v1/latest?{query}` once the cache is warm: its rows.
async fn warm_latest(server: &Server, query: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WARM_TIMEOUT;
    loop {
        let (status, body) = server.get(&format!("/api/v1/latest?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        if body["complete"] == true {
            return body["rows"].as_array().expect("rows").clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache was not warm within {WARM_TIMEOUT:?}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(device_id, time, power_w)` of each row.
fn values(rows: &[Value]) -> Vec<(String, String, f64)> {
    rows.iter()
        .map(|r| {
            (
                r["tags"]["device_id"]
                    .as_str()
                    .expect("device_id")
                    .to_owned(),
                r["time"].as_str().expect("time").to_owned(),
                r["values"]["power_w"].as_f64().expect("power_w"),
            )
        })
        .collect()
}

fn expected(rows: &[(&str, &str, f64)]) -> Vec<(String, String, f64)> {
    rows.iter()
        .map(|(d, t, p)| ((*d).to_owned(), (*t).to_owned(), *p))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_is_warm_again_after_a_restart() {
    let mut server = Server::start().await;
    server
        .write_lp(
            "lv,device_id=a power_w=1 1000\n\
             lv,device_id=a power_w=2 2000\n\
             lv,device_id=b power_w=3 1500",
        )
        .await;
    let before = warm_latest(&server, "table=lv").await;
    assert_eq!(
        values(&before),
        expected(&[
            ("a", "1970-01-01T00:00:00.000002Z", 2.0),
            ("b", "1970-01-01T00:00:00.000001500Z", 3.0),
        ])
    );

    // Graceful: the rows are in Parquet now.
    server.stop().await;
    server.start_again().await;
    assert_eq!(warm_latest(&server, "table=lv").await, before);
    let rows = server
        .sql("SELECT device_id, power_w FROM lv_latest ORDER BY device_id")
        .await;
    assert_eq!(
        Value::from(rows),
        json!([{"device_id": "a", "power_w": 2.0}, {"device_id": "b", "power_w": 3.0}])
    );

    // Killed: the newest row is only in the WAL.
    server.write_lp("lv,device_id=b power_w=30 2500").await;
    server.kill().await;
    server.start_again().await;
    assert_eq!(
        values(&warm_latest(&server, "").await),
        expected(&[
            ("a", "1970-01-01T00:00:00.000002Z", 2.0),
            ("b", "1970-01-01T00:00:00.000002500Z", 30.0),
        ])
    );
    server.stop().await;
}

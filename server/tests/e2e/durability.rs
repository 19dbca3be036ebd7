//! Restarts, SIGKILL under load, and data that has moved to Parquet files.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::{Options, Server, files_with_suffix, float, int, string};

/// `(device_id, time)` to `power_w` of every row of `table`.
async fn all_rows(server: &Server, table: &str) -> HashMap<(String, i64), f64> {
    let rows = server
        .sql(&format!(
            "SELECT device_id, CAST(time AS BIGINT) AS t, power_w FROM {table}"
        ))
        .await;
    let count = rows.len();
    let map: HashMap<(String, i64), f64> = rows
        .iter()
        .map(|r| {
            (
                (string(r, "device_id").to_owned(), int(r, "t")),
                float(r, "power_w"),
            )
        })
        .collect();
    assert_eq!(
        map.len(),
        count,
        "duplicate (device_id, time) rows in {table}"
    );
    map
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_restart_keeps_data() {
    let mut server = Server::start().await;
    server
        .write_lp("rs,device_id=a power_w=1 1000\nrs,device_id=b power_w=2 2000")
        .await;
    server
        .write_ok(
            "/api/v1/write/json",
            r#"[{"table":"rs","time":3000,"tags":{"device_id":"c"},"fields":{"power_w":3.0}}]"#,
        )
        .await;
    server.stop().await;
    // Shutdown persists the buffer (Store::shutdown: fsync + persist).
    assert!(
        !files_with_suffix(&server.data_dir(), ".parquet").is_empty(),
        "a graceful stop must persist the buffer to Parquet under {}",
        server.data_dir().display()
    );

    server.start_again().await;
    let rows = all_rows(&server, "rs").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[&("a".to_owned(), 1000)], 1.0);
    assert_eq!(rows[&("b".to_owned(), 2000)], 2.0);
    assert_eq!(rows[&("c".to_owned(), 3000)], 3.0);

    // New writes after the restart dedup against the persisted rows; the schema is
    // still there (a conflicting type is still refused).
    server.write_lp("rs,device_id=a power_w=10 1000").await;
    let (status, body) = server
        .post("/api/v3/write_lp?db=x", "rs,device_id=z power_w=\"s\" 9")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let rows = all_rows(&server, "rs").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[&("a".to_owned(), 1000)], 10.0);

    // And once more, stopped with Ctrl-C: the second generation survives too.
    server.interrupt().await;
    server.start_again().await;
    let rows = all_rows(&server, "rs").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[&("a".to_owned(), 1000)], 10.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_replays_the_wal() {
    let mut server = Server::start().await;
    let body: String = (0..200)
        .map(|i| format!("wal,device_id=d{} power_w={i} {}\n", i % 7, 1_000 + i))
        .collect();
    server.write_lp(&body).await;
    server.write_lp("wal,device_id=d0 power_w=-1 1000").await; // overwrites i = 0
    server.kill().await;
    assert!(
        files_with_suffix(&server.data_dir(), ".parquet").is_empty(),
        "nothing should have been persisted yet; this test is about the WAL"
    );

    server.start_again().await;
    let rows = all_rows(&server, "wal").await;
    assert_eq!(rows.len(), 200);
    assert_eq!(rows[&("d0".to_owned(), 1000)], -1.0);
    for i in 1..200 {
        assert_eq!(rows[&(format!("d{}", i % 7), 1_000 + i)], i as f64);
    }
    // The replayed schema is live: writes extend it, a conflict is still refused.
    server
        .write_lp("wal,device_id=d1,phase=L1 power_w=5 5000")
        .await;
    let (status, _) = server
        .post("/api/v3/write_lp?db=x", "wal,device_id=d1 power_w=t 6000")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A second crash after the replay loses nothing either.
    server.kill().await;
    server.start_again().await;
    assert_eq!(server.count("wal").await, 201);
}

/// Several writers post continuously; the server is SIGKILLed under load. After a
/// restart every acknowledged row must be there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_acknowledged_row() {
    stop_under_load_then_check(Stop::Kill).await;
}

/// The same with SIGTERM: the server finishes in-flight requests, exits 0, and every
/// acknowledged row is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_acknowledged_row() {
    stop_under_load_then_check(Stop::Term).await;
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Kill,
    Term,
}

async fn stop_under_load_then_check(how: Stop) {
    const WRITERS: usize = 4;
    const BATCH: i64 = 50;
    const LOAD: Duration = Duration::from_secs(3);

    let mut server = Server::start().await;
    let url = server.url("/api/v3/write_lp?db=crash");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let http = server.http().clone();
        let url = url.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            // (first time, last time) of every batch that got a 204.
            let mut acked: Vec<(i64, i64)> = Vec::new();
            let mut next: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let first = next;
                next += BATCH;
                let body: String = (first..next)
                    .map(|t| format!("crash,device_id=w{w} power_w={t}.5,seq={t}i {t}\n"))
                    .collect();
                match http.post(&url).body(body).send().await {
                    Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                        acked.push((first, next - 1))
                    }
                    // Queue full, or shutting down: not acknowledged.
                    Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        panic!("writer {w}: unexpected {status}: {text}");
                    }
                    // The server is gone: the batch was not acknowledged.
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(LOAD).await;
    match how {
        Stop::Kill => server.kill().await,
        Stop::Term => server.stop().await,
    }
    stop.store(true, Ordering::Relaxed);

    let mut acked_keys: HashSet<(String, i64)> = HashSet::new();
    let mut acked_batches = 0;
    for (w, writer) in writers.into_iter().enumerate() {
        let acked = writer.await.expect("writer task");
        acked_batches += acked.len();
        for (first, last) in acked {
            for t in first..=last {
                acked_keys.insert((format!("w{w}"), t));
            }
        }
    }
    assert!(
        acked_batches >= WRITERS,
        "the load must have been acknowledged a few times before the kill, got {acked_batches}"
    );

    server.start_again().await;
    let duplicates = server
        .sql(
            "SELECT device_id, time, count(*) AS n FROM crash \
             GROUP BY device_id, time HAVING count(*) > 1",
        )
        .await;
    assert!(duplicates.is_empty(), "duplicated points: {duplicates:?}");
    let rows = all_rows(&server, "crash").await;
    let missing: Vec<&(String, i64)> = acked_keys
        .iter()
        .filter(|key| !rows.contains_key(*key))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged rows are missing after {how:?} + restart, e.g. {missing:?}",
        acked_keys.iter().filter(|k| !rows.contains_key(*k)).count(),
        acked_keys.len()
    );
    // Whatever came back (acked or not) is intact.
    for ((_, t), power) in &rows {
        assert_eq!(*power, *t as f64 + 0.5, "row at {t} came back damaged");
    }
    let check = server
        .sql("SELECT count(*) AS n FROM crash WHERE seq <> CAST(time AS BIGINT)")
        .await;
    assert_eq!(int(&check[0], "n"), 0);
}

/// With a tiny snapshot threshold the buffer moves to Parquet files while writes go on;
/// queries see buffer and files as one table, deduplicated.
#[tokio::test(flavor = "multi_thread")]
async fn persisted_parquet_is_queryable_and_deduplicated() {
    let mut server = Server::start_with(
        Options::default().config("[storage]\nsnapshot_rows = 100\n\n[log]\nfilter = \"info\"\n"),
    )
    .await;
    for batch in 0..5 {
        let body: String = (0..100)
            .map(|i| {
                let t = batch * 100 + i;
                format!("pq,device_id=d{} power_w={t} {}\n", t % 10, 1_000_000 + t)
            })
            .collect();
        server.write_lp(&body).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_with_suffix(&server.data_dir(), ".parquet").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no Parquet file under {} after 500 rows with snapshot_rows = 100",
            server.data_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Newer values for points that are (at least partly) in files now.
    let body: String = (0..500)
        .step_by(5)
        .map(|t| format!("pq,device_id=d{} power_w=-{t} {}\n", t % 10, 1_000_000 + t))
        .collect();
    server.write_lp(&body).await;

    let check = |rows: HashMap<(String, i64), f64>| {
        assert_eq!(rows.len(), 500);
        for t in 0..500i64 {
            let expected = if t % 5 == 0 { -(t as f64) } else { t as f64 };
            assert_eq!(
                rows[&(format!("d{}", t % 10), 1_000_000 + t)],
                expected,
                "t = {t}"
            );
        }
    };
    check(all_rows(&server, "pq").await);
    let sums = server
        .sql("SELECT count(*) AS n, sum(power_w) AS s FROM pq WHERE device_id = 'd0'")
        .await;
    assert_eq!(int(&sums[0], "n"), 50);
    // d0 holds t = 0, 10, ..., 490, all multiples of 5: all overwritten with -t.
    assert_eq!(
        float(&sums[0], "s"),
        -(0..500).step_by(10).sum::<i64>() as f64
    );

    server.stop().await;
    server.start_again().await;
    check(all_rows(&server, "pq").await);
    server.kill().await;
    server.start_again().await;
    check(all_rows(&server, "pq").await);
}

//! The storage lifecycle with the real binary: a SIGKILL at each step of a compaction
//! (failpoints, and random moments while writes go on) loses no acknowledged row and
//! leaves exactly the files the catalog names; deleting one site's rows hides them from
//! SQL and the charts at once and compaction removes them from the Parquet files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Options, Server};

/// 2026-01-01T00:00:00Z in nanoseconds.
const JAN1_NS: i64 = 1_767_225_600_000_000_000;
const SECOND_NS: i64 = 1_000_000_000;

/// Rows per write request, and per snapshot: every request ends up in a file of its own.
const BATCH: i64 = 40;
/// Write requests before the compaction.
const REQUESTS: i64 = 25;

/// The line of key `k`: one reading a second, spread over four devices.
fn line(k: i64) -> String {
    format!(
        "meter,device_id=crash-{} power_w={k} {}\n",
        k % 4,
        JAN1_NS + k * SECOND_NS
    )
}

fn lines(keys: std::ops::Range<i64>) -> String {
    keys.map(line).collect()
}

/// Every `.parquet` file under `dir`, with its size.
fn parquet_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            found.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            found.push((path, entry.metadata().expect("metadata").len()));
        }
    }
    found.sort();
    found
}

/// `GET /api/v1/tables/{table}`, which must answer 200.
async fn table(server: &Server, table: &str) -> Value {
    let (status, body) = server.get(&format!("/api/v1/tables/{table}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// `POST path` with a JSON body; the status and the body.
async fn post_json(server: &Server, path: &str, body: &Value) -> (StatusCode, String) {
    let response = server
        .http()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// The Parquet files of `table` on disk are exactly the ones the catalog lists (their
/// number and bytes), and they hold each stored row once. Waits a little for replaced
/// files to go: the last scan holding one deletes it when it ends.
async fn files_match_the_catalog(server: &Server, name: &str) {
    let dir = server.data_dir().join("tables").join(name);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = table(server, name).await;
        let on_disk = parquet_files(&dir);
        let bytes: u64 = on_disk.iter().map(|(_, size)| size).sum();
        let listed = (
            info["files"].as_u64().unwrap(),
            info["bytes"].as_u64().unwrap(),
        );
        if listed == (on_disk.len() as u64, bytes) {
            let count = server.count(name).await;
            let stored =
                info["file_rows"].as_i64().unwrap() + info["buffer_rows"].as_i64().unwrap();
            // Keys are never written twice: a file listed twice, or the input and
            // output of a merge both listed, would show as more rows than the table has.
            assert_eq!(
                stored, count,
                "rows in files and buffer vs rows of {name}: {info}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog lists {listed:?} (files, bytes) of {name}, the disk holds {:?}",
            on_disk
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How the server dies during the compaction.
#[derive(Debug, Clone, Copy)]
enum Death {
    /// Aborts itself at this failpoint of the storage crate.
    Failpoint(&'static str),
    /// SIGKILL this long after the compaction request was sent.
    After(Duration),
}

/// Writes [`REQUESTS`] small requests (one snapshot each), starts a compaction and lets
/// the server die as `death` says while a writer goes on writing; restarts and checks
/// that every acknowledged row is there once, nothing else is, and the files on disk
/// are the catalog's, before and after a compaction that completes.
async fn crash_during_compaction(death: Death) {
    let mut options = Options::default()
        .env("GRIDLAKE_STORAGE_SNAPSHOT_ROWS", &BATCH.to_string())
        // Only the API compacts, so the death comes where the test puts it.
        .env("GRIDLAKE_STORAGE_COMPACTION_INTERVAL", "0s")
        .env("GRIDLAKE_QUERY_ROLLUP_REFRESH_INTERVAL", "0s");
    if let Death::Failpoint(point) = death {
        options = options.env("GRIDLAKE_FAILPOINTS", point);
    }
    let mut server = Server::start_with(options).await;
    for request in 0..REQUESTS {
        server
            .write_lp(&lines(request * BATCH..(request + 1) * BATCH))
            .await;
    }
    let mut acked: BTreeSet<i64> = (0..REQUESTS * BATCH).collect();
    // Snapshots run behind the acks: wait for the small files.
    let deadline = Instant::now() + Duration::from_secs(30);
    while table(&server, "meter").await["files"].as_u64().unwrap() < 10 {
        assert!(Instant::now() < deadline, "no small files after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A writer that goes on while the compaction runs and the server dies.
    let http = server.http().clone();
    let write_url = server.url("/api/v3/write_lp?db=test");
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut attempted = Vec::new();
        let mut next = REQUESTS * BATCH;
        loop {
            let keys = next..next + 10;
            next += 10;
            attempted.extend(keys.clone());
            match http.post(&write_url).body(lines(keys.clone())).send().await {
                Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                    acked.extend(keys);
                }
                _ => return (acked, attempted),
            }
        }
    });
    let compaction = {
        let http = server.http().clone();
        let url = server.url("/api/v1/admin/compact");
        tokio::spawn(async move { http.post(url).send().await })
    };
    match death {
        Death::Failpoint(point) => {
            let answer = compaction.await.expect("compaction task");
            // The server aborted in the middle of answering: no 200.
            assert!(
                answer.is_err(),
                "the compaction answered although failpoint {point} should have aborted \
                 the server: {answer:?}; log:\n{}",
                server.log()
            );
            assert!(
                server.log().contains(point),
                "the log does not name failpoint {point}:\n{}",
                server.log()
            );
        }
        Death::After(delay) => tokio::time::sleep(delay).await,
    }
    server.kill().await;
    let (written, attempted) = writer.await.expect("writer task");
    acked.extend(written);
    let attempted: BTreeSet<i64> = attempted.into_iter().collect();

    let meter_dir = server.data_dir().join("tables").join("meter");
    let at_death = parquet_files(&meter_dir);

    server.set_env("GRIDLAKE_FAILPOINTS", None);
    server.start_again().await;
    // A death between writing the merged files and deleting the replaced ones leaves
    // files the catalog does not name (the outputs, or the inputs): the start removes
    // them.
    let after_start = parquet_files(&meter_dir);
    let removed: Vec<&PathBuf> = at_death
        .iter()
        .map(|(path, _)| path)
        .filter(|path| !after_start.iter().any(|(p, _)| p == *path))
        .collect();
    if let Death::Failpoint(point) = death {
        assert!(
            !removed.is_empty(),
            "no stray file to remove after dying at {point}: the failpoint is not where              the test expects it"
        );
    }
    let rows = server
        .sql("SELECT CAST(power_w AS BIGINT) AS k FROM meter ORDER BY k")
        .await;
    let stored: Vec<i64> = rows.iter().map(|r| r["k"].as_i64().unwrap()).collect();
    let distinct: BTreeSet<i64> = stored.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        stored.len(),
        "a row is there twice ({death:?})"
    );
    let lost: Vec<&i64> = acked.difference(&distinct).collect();
    assert!(
        lost.is_empty(),
        "acknowledged rows lost ({death:?}): {lost:?}"
    );
    let unknown: Vec<&i64> = distinct
        .iter()
        .filter(|k| !acked.contains(k) && !attempted.contains(k))
        .collect();
    assert!(
        unknown.is_empty(),
        "rows never written ({death:?}): {unknown:?}"
    );
    files_match_the_catalog(&server, "meter").await;

    // A compaction that completes leaves the same rows in fewer files.
    let (status, body) = post_json(&server, "/api/v1/admin/compact", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = server
        .sql("SELECT CAST(power_w AS BIGINT) AS k FROM meter ORDER BY k")
        .await;
    assert_eq!(after, rows, "compaction changed the rows ({death:?})");
    files_match_the_catalog(&server, "meter").await;
    let files = table(&server, "meter").await["files"].as_u64().unwrap();
    assert!(
        files <= 3,
        "{files} files after a full compaction ({death:?})"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_after_the_merged_files_are_written_loses_nothing() {
    crash_during_compaction(Death::Failpoint("compact-after-write")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_after_the_catalog_swap_loses_nothing() {
    crash_during_compaction(Death::Failpoint("compact-after-swap")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_of_a_compaction_loses_nothing() {
    // A seed from the clock, printed so a failure can be replayed by hand.
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    eprintln!("random kill delays from seed {seed}");
    let mut state = u64::from(seed) | 1;
    for _ in 0..3 {
        // xorshift: no dependency for three numbers.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(state % 60);
        crash_during_compaction(Death::After(delay)).await;
    }
}

/// The `site_id` values of the rows in the Parquet files of `table`, read from disk.
fn sites_in_files(server: &Server, table: &str) -> Vec<String> {
    let mut sites = Vec::new();
    for (path, _) in parquet_files(&server.data_dir().join("tables").join(table)) {
        let file = std::fs::File::open(&path).expect("open Parquet file");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let column = batch.column_by_name("site_id").expect("site_id column");
            let column = arrow::compute::cast(column, &DataType::Utf8).expect("cast");
            let column = column.as_string::<i32>();
            sites.extend((0..column.len()).map(|i| column.value(i).to_owned()));
        }
    }
    sites
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_one_site_hides_it_at_once_and_compaction_removes_it_from_the_files() {
    let server =
        Server::start_with(Options::default().env("GRIDLAKE_QUERY_ROLLUP_REFRESH_INTERVAL", "1s"))
            .await;
    // Two hours of minute readings of a meter at each site.
    let mut body = String::new();
    for minute in 0..120_i64 {
        let t = JAN1_NS + minute * 60 * SECOND_NS;
        for (site, device) in [("site-a", "a-meter"), ("site-b", "b-meter")] {
            body.push_str(&format!(
                "meter,site_id={site},device_id={device} power_w={minute},energy_import_wh={} {t}\n",
                1000 + minute
            ));
        }
    }
    server.write_lp(&body).await;
    // Wait for the rollups, so the delete has rollup rows to remove.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if server.has_table("meter_1d").await
            && server.count("meter_15m").await == 16
            && server.count("meter_1d").await == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "no rollups after 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let series = |device: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server
                .get(&format!(
                    "/api/v1/series?device_id={device}&table=meter&column=power_w&agg=avg\
                     &from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z&step=15m"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_str::<Value>(&body).expect("JSON")
        }
    };
    let a_before = series("a-meter").await;
    assert_eq!(a_before["source"], "meter_15m", "{a_before}");
    assert_eq!(a_before["v"][0], 7.0, "{a_before}");
    let b_before = series("b-meter").await;

    let (status, body) = post_json(
        &server,
        "/api/v1/delete",
        &json!({"tags": {"site_id": "site-a"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    let tables: BTreeSet<&str> = answer["tombstones"]
        .as_array()
        .expect("tombstones")
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        BTreeSet::from(["meter", "meter_15m", "meter_1h", "meter_1d"]),
        "{body}"
    );

    // Gone at once: SQL, rollups, charts; the other site untouched.
    let count = |table: &str, site: &str| {
        format!("SELECT count(*) AS n FROM {table} WHERE site_id = '{site}'")
    };
    for (table, b_rows) in [
        ("meter", 120),
        ("meter_15m", 8),
        ("meter_1h", 2),
        ("meter_1d", 1),
    ] {
        assert_eq!(
            server.sql(&count(table, "site-a")).await[0]["n"],
            0,
            "{table}"
        );
        assert_eq!(
            server.sql(&count(table, "site-b")).await[0]["n"],
            b_rows,
            "{table}"
        );
    }
    let a_after = series("a-meter").await;
    let values = a_after["v"].as_array().expect("v");
    assert!(
        !values.is_empty() && values.iter().all(Value::is_null),
        "{a_after}"
    );
    assert_eq!(series("b-meter").await, b_before);

    // Compaction removes the rows from the files.
    assert!(sites_in_files(&server, "meter").contains(&"site-a".to_owned()));
    let (status, body) = post_json(&server, "/api/v1/admin/compact", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for name in ["meter", "meter_15m"] {
        let info = table(&server, name).await;
        assert_eq!(info["pending_deletes"], 0, "{name}: {info}");
        let sites = sites_in_files(&server, name);
        assert!(
            !sites.iter().any(|s| s == "site-a"),
            "{name}'s files still hold site-a rows"
        );
        assert!(sites.iter().any(|s| s == "site-b"), "{name}: {sites:?}");
        files_match_the_catalog(&server, name).await;
    }
    assert_eq!(server.sql(&count("meter", "site-b")).await[0]["n"], 120);
    assert_eq!(series("b-meter").await, b_before);
}

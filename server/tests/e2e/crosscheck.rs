//! gridlake's bucketed answers checked against DuckDB, an implementation that is not
//! ours, reading the very Parquet files gridlake wrote.
//!
//! The data are two meters' minute readings over the days around both 2026 DST
//! changes in Europe/Berlin (29 March: a 23-hour day; 25 October: a 25-hour day), with
//! missing minutes, a half-hour outage and a register reset. Both engines bucket them by
//! 15 minutes (UTC) and by local Berlin days and months, and compute counts, sums,
//! averages, minima, maxima and the energy from the cumulative register.
//!
//! Needs python3 with `duckdb` (`scripts/test.sh` installs it); skipped with a message
//! without it, except under `GRIDLAKE_REQUIRE_PEERS` or `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Stdio;

use serde_json::{Map, Value};

use crate::common::{Server, files_with_suffix, python_peer_available};

/// 2026-03-28T00:00:00Z and 2026-10-24T00:00:00Z in seconds: each window is three UTC
/// days and holds one Berlin DST change.
const WINDOWS: [i64; 2] = [1_774_656_000, 1_792_800_000];
/// Minutes per window.
const WINDOW_MINUTES: i64 = 3 * 24 * 60;

/// One reading of the data set.
struct Reading {
    device: &'static str,
    seconds: i64,
    power_w: f64,
    energy_wh: f64,
}

/// The data set: deterministic, so a failure can be reproduced. m1 loses every 7th
/// minute and is offline for 30 minutes on each DST day; m2's register is reset to 0
/// once (a replaced meter's first reading).
fn readings() -> Vec<Reading> {
    let mut readings = Vec::new();
    // A linear congruential generator: any fixed sequence will do.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as f64 / f64::from(1u32 << 31)
    };
    for (device, start_wh) in [("m1", 1_250_000.0), ("m2", 5_000_000.0)] {
        let mut energy: f64 = start_wh;
        for window in WINDOWS {
            for minute in 0..WINDOW_MINUTES {
                let seconds = window + minute * 60;
                // Whole watts and watt-hours in quarters: both engines then sum
                // exactly representable numbers.
                let power_w = (next() * 4000.0).round();
                energy += (power_w / 60.0 * 4.0).round() / 4.0;
                if device == "m2" && minute == 2000 && window == WINDOWS[1] {
                    energy = 12.0;
                }
                let offline = (1800..1830).contains(&minute);
                if device == "m1" && (minute % 7 == 3 || offline) {
                    continue;
                }
                readings.push(Reading {
                    device,
                    seconds,
                    power_w,
                    energy_wh: energy,
                });
            }
        }
    }
    readings
}

/// The comparisons: a name, gridlake's SQL and DuckDB's SQL over a view `meter` of
/// the Parquet files. Both answer `device_id`, `bucket` (epoch ms) and the same
/// numeric columns, ordered by device and bucket.
fn comparisons() -> Vec<(&'static str, String, String)> {
    let gridlake_energy = "SELECT device_id, time, \
         counter_delta(energy_import_wh, time) OVER (PARTITION BY device_id ORDER BY time) AS step \
         FROM meter";
    // The same rule from first principles: the rise since the previous reading, and
    // nothing across a drop (the reset).
    let duck_energy = "SELECT device_id, time, \
         greatest(energy_import_wh - lag(energy_import_wh) OVER (PARTITION BY device_id ORDER BY time), 0) AS step \
         FROM meter";
    vec![
        (
            "15-minute buckets (UTC)",
            "SELECT device_id, CAST(time_bucket(INTERVAL '15 minutes', time) AS BIGINT) / 1000000 AS bucket, \
             count(power_w) AS n, sum(power_w) AS total, avg(power_w) AS mean, \
             min(power_w) AS low, max(power_w) AS high \
             FROM meter GROUP BY 1, 2 ORDER BY 1, 2"
                .to_owned(),
            "SELECT device_id, epoch_ms(time_bucket(INTERVAL '15 minutes', time)) AS bucket, \
             count(power_w) AS n, sum(power_w) AS total, avg(power_w) AS mean, \
             min(power_w) AS low, max(power_w) AS high \
             FROM meter GROUP BY 1, 2 ORDER BY 1, 2"
                .to_owned(),
        ),
        (
            "local days in Europe/Berlin",
            "SELECT device_id, CAST(time_bucket(INTERVAL '1 day', time, 'Europe/Berlin') AS BIGINT) / 1000000 AS bucket, \
             count(power_w) AS n, sum(power_w) AS total, max(power_w) AS high \
             FROM meter GROUP BY 1, 2 ORDER BY 1, 2"
                .to_owned(),
            "SELECT device_id, epoch_ms(time_bucket(INTERVAL '1 day', time, 'Europe/Berlin')) AS bucket, \
             count(power_w) AS n, sum(power_w) AS total, max(power_w) AS high \
             FROM meter GROUP BY 1, 2 ORDER BY 1, 2"
                .to_owned(),
        ),
        (
            "energy per local day in Europe/Berlin",
            format!(
                "SELECT device_id, CAST(time_bucket(INTERVAL '1 day', time, 'Europe/Berlin') AS BIGINT) / 1000000 AS bucket, \
                 sum(step) AS energy FROM ({gridlake_energy}) GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            format!(
                "SELECT device_id, epoch_ms(time_bucket(INTERVAL '1 day', time, 'Europe/Berlin')) AS bucket, \
                 sum(step) AS energy FROM ({duck_energy}) GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            "energy per local month in Europe/Berlin",
            format!(
                "SELECT device_id, CAST(time_bucket(INTERVAL '1 month', time, 'Europe/Berlin') AS BIGINT) / 1000000 AS bucket, \
                 sum(step) AS energy FROM ({gridlake_energy}) GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            format!(
                "SELECT device_id, epoch_ms(time_bucket(INTERVAL '1 month', time, 'Europe/Berlin')) AS bucket, \
                 sum(step) AS energy FROM ({duck_energy}) GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
    ]
}

/// Runs DuckDB over the Parquet files under `tables/meter` and returns each query's
/// rows.
async fn duckdb(parquet_glob: &str, queries: &[String]) -> Vec<Vec<Map<String, Value>>> {
    let script = "import duckdb, json, sys\n\
        glob, queries = sys.argv[1], json.loads(sys.stdin.read())\n\
        con = duckdb.connect()\n\
        con.execute(\"SET TimeZone = 'UTC'\")\n\
        con.execute(f\"CREATE VIEW meter AS SELECT * REPLACE (time::TIMESTAMPTZ AS time) FROM read_parquet('{glob}')\")\n\
        out = []\n\
        for q in queries:\n\
        \x20   cur = con.execute(q)\n\
        \x20   names = [d[0] for d in cur.description]\n\
        \x20   out.append([dict(zip(names, row)) for row in cur.fetchall()])\n\
        print(json.dumps(out))\n";
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script, parquet_glob])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = serde_json::to_vec(queries).expect("queries as JSON");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &input)
        .await
        .expect("send the queries");
    drop(stdin);
    let output = child.wait_with_output().await.expect("python3 output");
    assert!(
        output.status.success(),
        "DuckDB failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("DuckDB's answer is JSON")
}

/// The rows keyed by (device, bucket), numbers as f64.
fn keyed(rows: &[Map<String, Value>]) -> BTreeMap<(String, i64), BTreeMap<String, f64>> {
    rows.iter()
        .map(|row| {
            let device = row["device_id"].as_str().expect("device_id").to_owned();
            let bucket = row["bucket"].as_i64().expect("bucket is epoch ms");
            let values = row
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "device_id" | "bucket"))
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
                .collect();
            ((device, bucket), values)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bucketed_results_match_duckdb_on_the_same_parquet_files() {
    if !python_peer_available("import duckdb", "duckdb", "\"duckdb==1.5.*\"") {
        return;
    }
    let mut server = Server::start().await;
    let data = readings();
    for chunk in data.chunks(5000) {
        let mut body = String::new();
        for r in chunk {
            writeln!(
                body,
                "meter,device_id={},site_id=s1 power_w={},energy_import_wh={} {}",
                r.device,
                r.power_w,
                r.energy_wh,
                r.seconds * 1_000_000_000
            )
            .expect("write to a String");
        }
        server.write_lp(&body).await;
    }
    // A graceful stop persists the buffer: afterwards every row is in Parquet, and the
    // restarted server reads the same files DuckDB reads.
    server.stop().await;
    let tables = server.data_dir().join("tables").join("meter");
    assert!(
        !files_with_suffix(&tables, ".parquet").is_empty(),
        "the stop wrote Parquet files under {}",
        tables.display()
    );
    server.start_again().await;
    assert_eq!(server.count("meter").await, data.len() as i64);

    let comparisons = comparisons();
    let glob = format!("{}/*/*.parquet", tables.display());
    let duck_queries: Vec<String> = comparisons.iter().map(|(_, _, d)| d.clone()).collect();
    let duck_answers = duckdb(&glob, &duck_queries).await;
    for ((name, ours, _), theirs) in comparisons.iter().zip(&duck_answers) {
        let ours = keyed(&server.sql(ours).await);
        let theirs = keyed(theirs);
        assert!(!ours.is_empty(), "{name}: gridlake answered no rows");
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}: the buckets differ"
        );
        for (key, values) in &ours {
            let other = &theirs[key];
            assert_eq!(
                values.keys().collect::<Vec<_>>(),
                other.keys().collect::<Vec<_>>(),
                "{name} {key:?}: the columns differ"
            );
            for (column, value) in values {
                let expected = other[column];
                let tolerance = 1e-9 * expected.abs().max(1.0);
                assert!(
                    (value - expected).abs() <= tolerance,
                    "{name} {key:?} {column}: gridlake {value}, DuckDB {expected}"
                );
            }
        }
    }

    // The days around the changes have the lengths the calendar says: m2 reports every
    // minute, so its local-day counts are 23 and 25 hours of minutes.
    let days = keyed(&duck_answers[1]);
    let count = |ms: i64| days[&("m2".to_owned(), ms)]["n"];
    // 2026-03-29 and 2026-10-25, local midnight in Berlin.
    assert_eq!(count(1_774_738_800_000), 23.0 * 60.0);
    assert_eq!(count(1_792_879_200_000), 25.0 * 60.0);
}

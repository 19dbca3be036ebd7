//! Health, metrics, the `gridlake sql` and `gridlake config` commands.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Server, gridlake_bin};

#[tokio::test(flavor = "multi_thread")]
async fn health() {
    let server = Server::start().await;
    let (status, body) = server.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let health: Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(health["status"], "pass", "{body}");
    let version = health["version"].as_str().expect("version string");
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "{body}");
    assert!(health["uptime_seconds"].is_number(), "{body}");
}

/// Sum of every sample of `name` (with or without labels) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name 5`, `name{label="x"} 5`, not `name_suffix 5`.
        let value = if let Some(after_labels) = rest.strip_prefix('{') {
            after_labels.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(value) = value.and_then(|v| v.split_whitespace().next()) {
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics() {
    let server = Server::start().await;
    server
        .write_lp("mx,device_id=a power_w=1 1\nmx,device_id=b power_w=2 2")
        .await;
    server.sql("SELECT * FROM mx").await;
    let (status, before) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "gridlake_rows_written_total",
        "gridlake_lines_rejected_total",
        "gridlake_wal_fsync_seconds_bucket",
        "gridlake_wal_fsync_seconds_count",
        "gridlake_buffer_rows",
        "gridlake_buffer_bytes",
        "gridlake_parquet_files",
        "gridlake_queries_total",
        "gridlake_query_seconds_bucket",
        "gridlake_http_requests_total",
    ] {
        assert!(
            metric(&before, name).is_some(),
            "metric {name} missing:\n{before}"
        );
    }
    let rows_before = metric(&before, "gridlake_rows_written_total").unwrap_or_default();
    assert!(rows_before >= 2.0, "{before}");
    assert!(metric(&before, "gridlake_buffer_rows").unwrap_or_default() >= 2.0);
    assert!(metric(&before, "gridlake_buffer_bytes").unwrap_or_default() > 0.0);
    assert!(metric(&before, "gridlake_wal_fsync_seconds_count").unwrap_or_default() >= 1.0);

    server
        .write_lp(
            "mx,device_id=c power_w=3 3\nmx,device_id=d power_w=4 4\nmx,device_id=e power_w=5 5",
        )
        .await;
    let (status, _) = server
        .post(
            "/api/v3/write_lp?db=x",
            "mx,device_id=f power_w=6 6\nbroken",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.sql("SELECT count(*) FROM mx").await;
    let (_, after) = server.get("/metrics").await;
    let rows_after = metric(&after, "gridlake_rows_written_total").unwrap_or_default();
    assert_eq!(
        rows_after - rows_before,
        4.0,
        "3 + 1 rows written:\n{after}"
    );
    let rejected = |t: &str| metric(t, "gridlake_lines_rejected_total").unwrap_or_default();
    assert_eq!(rejected(&after) - rejected(&before), 1.0, "{after}");
    let queries = |t: &str| metric(t, "gridlake_queries_total").unwrap_or_default();
    assert!(queries(&after) > queries(&before), "{after}");
    let requests = |t: &str| metric(t, "gridlake_http_requests_total").unwrap_or_default();
    assert!(requests(&after) >= requests(&before) + 3.0, "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_answer_for_line_protocol_clients() {
    let server = Server::start().await;
    let (status, body) = server.get("/settings").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let settings: Value = serde_json::from_str(&body).expect("settings are JSON");
    let versions = settings["config"]["line.proto.support.versions"]
        .as_array()
        .unwrap_or_else(|| panic!("config.line.proto.support.versions missing: {body}"));
    assert!(versions.contains(&Value::from(1)), "{body}");
}

fn run_cli(args: &[&str]) -> String {
    let output = Command::new(gridlake_bin())
        .args(args)
        .env_remove("GRIDLAKE_DATA_DIR")
        .output()
        .expect("run gridlake");
    assert!(
        output.status.success(),
        "gridlake {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_command_reads_a_stopped_servers_data() {
    let mut server = Server::start().await;
    server
        .write_lp(concat!(
            "cli,site_id=s1,device_id=meter-17 power_w=1234.5 1700000000000000000\n",
            "cli,site_id=s1,device_id=meter-18 power_w=-7.25 1700000000000000001\n",
        ))
        .await;
    server.stop().await;
    let dir = server.data_dir();
    let dir = dir.to_str().expect("UTF-8 path");
    let sql = "SELECT device_id, CAST(time AS BIGINT) AS t, power_w FROM cli ORDER BY t";

    let table = run_cli(&["sql", sql, "--data-dir", dir]);
    for needle in [
        "device_id",
        "meter-17",
        "meter-18",
        "1700000000000000000",
        "1700000000000000001",
        "1234.5",
        "-7.25",
    ] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }

    let csv_text = run_cli(&["sql", sql, "--data-dir", dir, "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("csv records");
    let got: Vec<Vec<&str>> = records.iter().map(|r| r.iter().collect()).collect();
    assert_eq!(
        got,
        [
            ["meter-17", "1700000000000000000", "1234.5"],
            ["meter-18", "1700000000000000001", "-7.25"]
        ]
    );

    let json_text = run_cli(&["sql", sql, "--data-dir", dir, "--format", "json"]);
    let rows: Value = serde_json::from_str(&json_text).expect("json output");
    assert_eq!(rows[1]["device_id"], "meter-18");
    assert_eq!(rows[1]["power_w"], -7.25);

    // The data directory is untouched: the server starts again and sees the rows.
    server.start_again().await;
    assert_eq!(server.count("cli").await, 2);
}

#[test]
fn config_command_applies_flag_over_env_over_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("gridlake.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from/file\"\n\n[http]\naddr = \"127.0.0.1:1111\"\n\n[storage]\nsnapshot_rows = 1234\n",
    )
    .expect("write config");
    let file = file.to_str().expect("UTF-8 path");

    let effective = |env: &[(&str, &str)], flags: &[&str]| -> toml::Table {
        let mut cmd = Command::new(gridlake_bin());
        cmd.arg("config").arg("--config").arg(file).args(flags);
        for (key, _) in std::env::vars() {
            if key.starts_with("GRIDLAKE_") {
                cmd.env_remove(key);
            }
        }
        let output = cmd
            .envs(env.iter().copied())
            .output()
            .expect("gridlake config");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        text.parse()
            .unwrap_or_else(|e| panic!("config output must be TOML ({e}):\n{text}"))
    };

    let from_file = effective(&[], &[]);
    assert_eq!(from_file["data_dir"].as_str(), Some("/from/file"));
    assert_eq!(from_file["http"]["addr"].as_str(), Some("127.0.0.1:1111"));
    assert_eq!(
        from_file["storage"]["snapshot_rows"].as_integer(),
        Some(1234)
    );

    let env = [
        ("GRIDLAKE_DATA_DIR", "/from/env"),
        ("GRIDLAKE_HTTP_ADDR", "127.0.0.1:2222"),
        ("GRIDLAKE_STORAGE_SNAPSHOT_ROWS", "99"),
    ];
    let from_env = effective(&env, &[]);
    assert_eq!(from_env["data_dir"].as_str(), Some("/from/env"));
    assert_eq!(from_env["http"]["addr"].as_str(), Some("127.0.0.1:2222"));
    assert_eq!(from_env["storage"]["snapshot_rows"].as_integer(), Some(99));

    let from_flags = effective(
        &env,
        &["--data-dir", "/from/flag", "--http-addr", "127.0.0.1:3333"],
    );
    assert_eq!(from_flags["data_dir"].as_str(), Some("/from/flag"));
    assert_eq!(from_flags["http"]["addr"].as_str(), Some("127.0.0.1:3333"));
    assert_eq!(
        from_flags["storage"]["snapshot_rows"].as_integer(),
        Some(99)
    );
}

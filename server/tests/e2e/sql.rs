//! SQL over HTTP: read-only statements, errors, every output format parsed back.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::common::{Server, float, int, parse_error, parse_json_rows, string};

/// Three meter rows with a null, a negative and a string that needs CSV quoting.
const ROWS: &str = concat!(
    "fmt,site_id=s1,device_id=m1 power_w=1.5,energy_wh=10i,online=t,note=\"a, \\\"b\\\"\" 1000\n",
    "fmt,site_id=s1,device_id=m2 power_w=-2.25,energy_wh=20i,online=f 2000\n",
    "fmt,site_id=s2,device_id=m3 power_w=3,energy_wh=-30i,online=t,note=\"x\" 3000\n",
);

const SELECT: &str = "SELECT time, site_id, device_id, power_w, energy_wh, online, note \
                      FROM fmt ORDER BY time";

/// The expected rows: (time ns, site, device, power, energy, online, note).
type Expected = (
    i64,
    &'static str,
    &'static str,
    f64,
    i64,
    bool,
    Option<&'static str>,
);
const EXPECTED: [Expected; 3] = [
    (1000, "s1", "m1", 1.5, 10, true, Some("a, \"b\"")),
    (2000, "s1", "m2", -2.25, 20, false, None),
    (3000, "s2", "m3", 3.0, -30, true, Some("x")),
];

async fn fmt_server() -> Server {
    let server = Server::start().await;
    server.write_lp(ROWS).await;
    server
}

async fn fetch(server: &Server, format: &str) -> (String, Bytes) {
    let response = server.sql_response(SELECT, format).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("response body");
    assert_eq!(
        status,
        StatusCode::OK,
        "format {format}: {}",
        String::from_utf8_lossy(&body)
    );
    (content_type, body)
}

/// Checks JSON row objects (json and jsonl) against [`EXPECTED`].
fn check_json_rows(rows: &[Map<String, Value>]) {
    assert_eq!(rows.len(), EXPECTED.len(), "{rows:?}");
    for (row, (_, site, device, power, energy, online, note)) in rows.iter().zip(EXPECTED) {
        assert!(row.contains_key("time"), "{row:?}");
        assert_eq!(string(row, "site_id"), site);
        assert_eq!(string(row, "device_id"), device);
        assert_eq!(float(row, "power_w"), power);
        assert_eq!(int(row, "energy_wh"), energy);
        assert_eq!(row["online"], Value::Bool(online));
        match note {
            Some(note) => assert_eq!(string(row, "note"), note),
            None => assert!(row.get("note").is_none_or(Value::is_null), "{row:?}"),
        }
    }
}

/// Checks Arrow batches (from IPC or Parquet) against [`EXPECTED`].
fn check_batches(batches: &[RecordBatch]) {
    let batch = arrow::compute::concat_batches(&batches[0].schema(), batches)
        .expect("batches share a schema");
    assert_eq!(batch.num_rows(), EXPECTED.len());
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "time",
            "site_id",
            "device_id",
            "power_w",
            "energy_wh",
            "online",
            "note"
        ]
    );
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("UTC")))
    );
    let time = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>();
    let time = time.expect("time is a nanosecond timestamp");
    // Tags may come back dictionary-encoded or plain: compare them as strings.
    let as_strings = |i: usize| {
        let column = cast(batch.column(i), &DataType::Utf8).expect("cast to Utf8");
        column.as_string::<i32>().clone()
    };
    let site: StringArray = as_strings(1);
    let device: StringArray = as_strings(2);
    let power = batch.column(3).as_any().downcast_ref::<Float64Array>();
    let power = power.expect("power_w is Float64");
    let energy = batch.column(4).as_any().downcast_ref::<Int64Array>();
    let energy = energy.expect("energy_wh is Int64");
    let online = batch.column(5).as_any().downcast_ref::<BooleanArray>();
    let online = online.expect("online is Boolean");
    let note: StringArray = as_strings(6);
    for (i, (t, s, d, p, e, o, n)) in EXPECTED.into_iter().enumerate() {
        assert_eq!(time.value(i), t);
        assert_eq!(site.value(i), s);
        assert_eq!(device.value(i), d);
        assert_eq!(power.value(i), p);
        assert_eq!(energy.value(i), e);
        assert_eq!(online.value(i), o);
        match n {
            Some(n) => assert_eq!(note.value(i), n),
            None => assert!(note.is_null(i)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_format() {
    let server = fmt_server().await;
    let (content_type, body) = fetch(&server, "json").await;
    assert!(content_type.contains("json"), "{content_type}");
    let rows = parse_json_rows(std::str::from_utf8(&body).expect("UTF-8"));
    check_json_rows(&rows);
    // The default format is json.
    let url =
        reqwest::Url::parse_with_params(&server.url("/api/v1/sql"), &[("q", SELECT)]).expect("URL");
    let response = server.http().get(url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    check_json_rows(&parse_json_rows(&response.text().await.expect("body")));
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonl_format() {
    let server = fmt_server().await;
    let (content_type, body) = fetch(&server, "jsonl").await;
    assert!(content_type.contains("json"), "{content_type}");
    let text = std::str::from_utf8(&body).expect("UTF-8");
    let rows: Vec<Map<String, Value>> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("jsonl line {l:?}: {e}")))
        .collect();
    check_json_rows(&rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_format() {
    let server = fmt_server().await;
    let (content_type, body) = fetch(&server, "csv").await;
    assert!(content_type.contains("csv"), "{content_type}");
    let mut reader = csv::Reader::from_reader(body.as_ref());
    let header = reader.headers().expect("csv header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [
            "time",
            "site_id",
            "device_id",
            "power_w",
            "energy_wh",
            "online",
            "note"
        ]
    );
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .expect("csv records");
    assert_eq!(records.len(), EXPECTED.len());
    for (record, (_, site, device, power, energy, online, note)) in records.iter().zip(EXPECTED) {
        assert!(!record[0].is_empty(), "time must be present: {record:?}");
        assert_eq!(&record[1], site);
        assert_eq!(&record[2], device);
        assert_eq!(record[3].parse::<f64>().expect("power_w"), power);
        assert_eq!(record[4].parse::<i64>().expect("energy_wh"), energy);
        assert_eq!(record[5].parse::<bool>().expect("online"), online);
        assert_eq!(&record[6], note.unwrap_or(""));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn arrow_ipc_format() {
    let server = fmt_server().await;
    let (content_type, body) = fetch(&server, "arrow").await;
    assert!(content_type.contains("arrow"), "{content_type}");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .expect("Arrow IPC stream");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("IPC batches");
    check_batches(&batches);
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_format() {
    let server = fmt_server().await;
    let (content_type, body) = fetch(&server, "parquet").await;
    assert!(content_type.contains("parquet"), "{content_type}");
    let reader = ParquetRecordBatchReaderBuilder::try_new(body)
        .expect("Parquet file")
        .build()
        .expect("Parquet reader");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("Parquet batches");
    check_batches(&batches);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_sql_and_unknown_format() {
    let server = fmt_server().await;
    let response = server
        .http()
        .post(server.url("/api/v1/sql"))
        .json(&json!({"sql": SELECT}))
        .send()
        .await
        .expect("POST /api/v1/sql");
    assert_eq!(response.status(), StatusCode::OK);
    check_json_rows(&parse_json_rows(&response.text().await.expect("body")));

    // Format in the body and as a query parameter.
    let response = server
        .http()
        .post(server.url("/api/v1/sql"))
        .json(&json!({"sql": SELECT, "format": "jsonl"}))
        .send()
        .await
        .expect("POST /api/v1/sql");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 3, "{text}");
    let response = server
        .http()
        .post(server.url("/api/v1/sql?format=csv"))
        .json(&json!({"sql": SELECT}))
        .send()
        .await
        .expect("POST /api/v1/sql");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(text.starts_with("time,site_id,device_id"), "{text}");

    let response = server.sql_response(SELECT, "xml").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.expect("body");
    assert!(
        parse_error(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("xml"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_that_are_not_reads_are_refused() {
    let server = Server::start().await;
    server.write_lp("guarded,device_id=a v=1 1").await;
    for statement in [
        "CREATE TABLE t (a INT)",
        "CREATE TABLE t2 AS SELECT * FROM guarded",
        "INSERT INTO guarded (time, device_id, v) VALUES (2, 'b', 2.0)",
        "DROP TABLE guarded",
        "DELETE FROM guarded",
        "UPDATE guarded SET v = 3",
        "CREATE VIEW gv AS SELECT * FROM guarded",
        "COPY guarded TO '/tmp/gridlake-e2e-copy.csv'",
        "CREATE EXTERNAL TABLE ext STORED AS CSV LOCATION '/etc/passwd'",
    ] {
        let (status, body) = server.sql_status(statement).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{statement}: {body}");
        parse_error(&body);
    }
    // Nothing changed.
    let rows = server.sql("SELECT device_id, v FROM guarded").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(float(&rows[0], "v"), 1.0);
    let tables = server
        .sql("SELECT table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'")
        .await;
    // The background refresh may have written the table's rollups by now.
    let names: Vec<&str> = tables
        .iter()
        .map(|t| string(t, "table_name"))
        .filter(|name| !query::rollup::is_rollup_table(name))
        .collect();
    assert_eq!(names, ["guarded"]);
    assert!(!std::path::Path::new("/tmp/gridlake-e2e-copy.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_errors_are_400_naming_the_problem() {
    let server = Server::start().await;
    server.write_lp("known,device_id=a v=1 1").await;
    for (sql, needle) in [
        ("SELECT no_such_column FROM known", "no_such_column"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELEC 1", "SELEC"),
    ] {
        let (status, body) = server.sql_status(sql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        let error = parse_error(&body);
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{sql}: error must name {needle:?}: {message}"
        );
    }
    // An empty query is a client error too.
    let (status, _) = server.sql_status("").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn show_tables_and_information_schema() {
    let server = Server::start().await;
    server.write_lp("meter,device_id=m1 power_w=1 1").await;
    server
        .write_lp("inverter,device_id=i1 ac_power_w=2,dc_voltage_v=600 1")
        .await;
    let tables = server.sql("SHOW TABLES").await;
    let mut names: Vec<&str> = tables
        .iter()
        .filter(|t| t.get("table_schema") != Some(&Value::from("information_schema")))
        .map(|t| string(t, "table_name"))
        // The background refresh may have written the tables' rollups by now.
        .filter(|name| !query::rollup::is_rollup_table(name))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["inverter", "meter"], "{tables:?}");

    let columns = server
        .sql(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_name = 'inverter' ORDER BY ordinal_position",
        )
        .await;
    let got: Vec<(&str, &str)> = columns
        .iter()
        .map(|c| (string(c, "column_name"), string(c, "is_nullable")))
        .collect();
    assert_eq!(
        got,
        [
            ("time", "NO"),
            ("device_id", "YES"),
            ("ac_power_w", "YES"),
            ("dc_voltage_v", "YES"),
            // Canonical tables record every row's provenance.
            ("quality", "YES"),
            ("source", "YES")
        ]
    );
    assert_eq!(string(&columns[2], "data_type"), "Float64");

    let rows = server
        .sql("SELECT i.device_id AS i, m.device_id AS m FROM inverter i JOIN meter m ON i.time = m.time")
        .await;
    assert_eq!(rows.len(), 1, "tables are joinable: {rows:?}");
}

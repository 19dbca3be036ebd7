//! Every output format parses back with a standard reader and carries the values.

use std::io::Cursor;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
use arrow::ipc::reader::StreamReader;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use query::{OutputFormat, QueryOutput, encode, pretty};
use serde_json::{Value, json};

use crate::common::{Fixture, JAN1, MINUTE};

const SITE_A: &str = "SELECT time, site, power, energy FROM meter WHERE site = 'a' ORDER BY time";
const NOTHING: &str = "SELECT time, site, power, energy FROM meter WHERE site = 'zzz'";

async fn query(sql: &str) -> QueryOutput {
    let fx = Fixture::new();
    fx.write_meters().await;
    fx.engine.sql(sql).await.expect("query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_an_array_of_objects_with_rfc3339_times() {
    let output = query(SITE_A).await;
    let rows: Value = serde_json::from_slice(&encode(&output, OutputFormat::Json).expect("json"))
        .expect("parses");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0],
        json!({"time": "2024-01-01T00:00:00Z", "site": "a", "power": 0.0, "energy": 0})
    );
    assert_eq!(
        rows[4],
        json!({"time": "2024-01-01T00:04:00Z", "site": "a", "power": 4.0, "energy": 400})
    );

    let nulls = query("SELECT CAST(NULL AS DOUBLE) AS x, 1 AS y").await;
    let bytes = encode(&nulls, OutputFormat::Json).expect("json");
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).expect("parses"),
        json!([{"x": null, "y": 1}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_has_one_object_per_line() {
    let output = query(SITE_A).await;
    let bytes = encode(&output, OutputFormat::Jsonl).expect("jsonl");
    let text = String::from_utf8(bytes).expect("utf-8");
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("line parses"))
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[2],
        json!({"time": "2024-01-01T00:02:00Z", "site": "a", "power": 2.0, "energy": 200})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_has_a_header_and_rfc3339_times() {
    let output = query(SITE_A).await;
    let bytes = encode(&output, OutputFormat::Csv).expect("csv");
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, ["time", "site", "power", "energy"]);
    let records: Vec<csv::StringRecord> =
        reader.records().collect::<Result<_, _>>().expect("records");
    assert_eq!(records.len(), 5);
    assert_eq!(&records[3][0], "2024-01-01T00:03:00Z");
    assert_eq!(&records[3][1], "a");
    assert_eq!(records[3][2].parse::<f64>().expect("f64"), 3.0);
    assert_eq!(records[3][3].parse::<i64>().expect("i64"), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_ipc_stream_keeps_types_and_values() {
    let output = query(SITE_A).await;
    let bytes = encode(&output, OutputFormat::Arrow).expect("arrow");
    let reader = StreamReader::try_new(Cursor::new(bytes), None).expect("stream");
    let schema = reader.schema();
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    );
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let times: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<TimestampNanosecondType>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(times, (0..5).map(|m| JAN1 + m * MINUTE).collect::<Vec<_>>());
    let energy: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(3).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(energy, [0, 100, 200, 300, 400]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_file_reads_back() {
    let output = query(SITE_A).await;
    let bytes = encode(&output, OutputFormat::Parquet).expect("parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
        .expect("parquet file")
        .build()
        .expect("reader");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
    let power: Vec<f64> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name("power").expect("power column");
            column.as_primitive::<Float64Type>().values().to_vec()
        })
        .collect();
    assert_eq!(power, [0.0, 1.0, 2.0, 3.0, 4.0]);
    let first = &batches[0];
    let time = first.column_by_name("time").expect("time column");
    assert_eq!(
        time.as_primitive::<TimestampNanosecondType>().value(0),
        JAN1
    );
    assert_eq!(
        time.as_primitive::<TimestampNanosecondType>().timezone(),
        Some("UTC")
    );
    assert!(!time.is_null(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_results_are_valid_in_every_format() {
    let output = query(NOTHING).await;
    assert_eq!(output.num_rows(), 0);
    assert_eq!(encode(&output, OutputFormat::Json).expect("json"), b"[]");
    assert!(
        encode(&output, OutputFormat::Jsonl)
            .expect("jsonl")
            .is_empty()
    );
    let csv = String::from_utf8(encode(&output, OutputFormat::Csv).expect("csv")).expect("utf-8");
    assert_eq!(csv.trim_end(), "time,site,power,energy");

    let arrow = encode(&output, OutputFormat::Arrow).expect("arrow");
    let reader = StreamReader::try_new(Cursor::new(arrow), None).expect("stream");
    assert_eq!(reader.schema().fields().len(), 4);
    assert_eq!(
        reader.map(|b| b.expect("batch").num_rows()).sum::<usize>(),
        0
    );

    let parquet = encode(&output, OutputFormat::Parquet).expect("parquet");
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(parquet)).expect("file");
    assert_eq!(builder.schema().fields().len(), 4);
    assert_eq!(builder.metadata().file_metadata().num_rows(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_prints_a_table() {
    let output = query(SITE_A).await;
    let table = pretty(&output).expect("table");
    assert!(table.contains("| time "), "{table}");
    assert!(table.contains("2024-01-01T00:04:00Z"), "{table}");
    assert_eq!(table.lines().count(), 5 + 4, "{table}");

    let empty = pretty(&query(NOTHING).await).expect("table");
    assert!(empty.contains("| site "), "{empty}");
}

#[test]
fn formats_parse_by_name_and_name_their_content_type() {
    for format in OutputFormat::ALL {
        assert_eq!(format.name().parse::<OutputFormat>(), Ok(format));
        assert_eq!(
            format.to_string().to_uppercase().parse::<OutputFormat>(),
            Ok(format)
        );
    }
    assert_eq!("ndjson".parse::<OutputFormat>(), Ok(OutputFormat::Jsonl));
    assert_eq!(OutputFormat::default(), OutputFormat::Json);
    let error = "xml".parse::<OutputFormat>().expect_err("unknown");
    assert!(error.to_string().contains("\"xml\""), "{error}");
    assert!(error.to_string().contains("parquet"), "{error}");
    let types: std::collections::HashSet<_> =
        OutputFormat::ALL.iter().map(|f| f.content_type()).collect();
    assert_eq!(types.len(), OutputFormat::ALL.len());
    assert_eq!(OutputFormat::Json.content_type(), "application/json");
}

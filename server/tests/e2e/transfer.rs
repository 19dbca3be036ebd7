//! `gridlake export` and `gridlake import`, the real binary against real servers: a
//! table exported from one server and imported into a fresh one reads back identical
//! (Parquet and CSV), other tools' Parquet and plain CSV import, and rejected rows are
//! counted with their place in the file and fail the command.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Int32Array, LargeStringArray, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use reqwest::StatusCode;

use crate::common::{Options, Server, int, is_null, string};

const TABLE: &str = "transfer";

/// 2024-02-27T22:00:00Z: the rows run over several UTC midnights from here.
const BASE_NS: i64 = 1_709_071_200_000_000_000;

/// Runs `gridlake ARGS --url .. --token ..` against `server`.
async fn gridlake(server: &Server, args: &[&str]) -> Output {
    server
        .command()
        .args(args)
        .args(["--url", server.base_url(), "--token", server.admin_token()])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run gridlake")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the command and asserts it succeeded; its stderr.
async fn gridlake_ok(server: &Server, args: &[&str]) -> String {
    let output = gridlake(server, args).await;
    assert!(
        output.status.success(),
        "gridlake {args:?} failed: {}",
        stderr(&output)
    );
    stderr(&output)
}

/// Escapes a measurement, tag key, tag value or field key for line protocol.
fn name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A quoted line protocol string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Tag values and strings that need escaping in line protocol and quoting in CSV.
const AWKWARD: [&str; 8] = [
    "plain",
    "with space",
    "comma,here",
    "equals=here",
    "quote\"here",
    "back\\slash\\",
    "ünïcödé ⚡ 電力",
    "all of ,=\\\" them",
];

const FLOATS: [f64; 10] = [
    -0.0,
    1e300,
    -1e-300,
    5e-324,
    f64::MAX,
    f64::MIN_POSITIVE,
    0.1 + 0.2,
    123_456_789.123_456_79,
    -1.5,
    0.0,
];
const INTS: [i64; 5] = [i64::MIN, i64::MAX, 0, -1, 42];
const UINTS: [u64; 4] = [u64::MAX, i64::MAX as u64 + 1, 0, 7];

/// Writes 60 rows over six days: every field type with extreme values, nulls (fields
/// left out of some rows, a tag left out), awkward tags and strings, odd nanoseconds.
/// With `empty_string`, one string field is "" (which CSV cannot tell from a null).
async fn write_dataset(server: &Server, empty_string: bool) {
    let mut body = String::new();
    for i in 0..60usize {
        let time = BASE_NS + i as i64 * (2 * 3_600 + 17 * 60) * 1_000_000_000 + i as i64 * 7 + 1;
        let mut line = name(TABLE);
        if i % 9 != 4 {
            line.push_str(&format!(",site={}", name(AWKWARD[i % AWKWARD.len()])));
        }
        line.push_str(&format!(",device={}", name(&format!("d {}", i % 3))));
        let mut fields = Vec::new();
        if i % 7 != 3 {
            fields.push(format!("f={:?}", FLOATS[i % FLOATS.len()]));
        }
        if i % 4 != 1 {
            fields.push(format!("i={}i", INTS[i % INTS.len()]));
        }
        if i % 3 != 2 {
            fields.push(format!("u={}u", UINTS[i % UINTS.len()]));
        }
        // (Every row keeps at least one field: b is there whenever f is not.)
        if i % 6 != 5 || i % 7 == 3 {
            fields.push(format!("b={}", i % 2 == 0));
        }
        if i % 2 == 0 {
            let text = if empty_string && i == 10 {
                ""
            } else {
                AWKWARD[(i / 2) % AWKWARD.len()]
            };
            fields.push(format!("{}={}", name("note text"), quoted(text)));
        }
        line.push(' ');
        line.push_str(&fields.join(","));
        line.push_str(&format!(" {time}\n"));
        body.push_str(&line);
    }
    server.write_lp(&body).await;
    assert_eq!(server.count(TABLE).await, 60);
}

/// Runs `sql` and returns its Arrow result.
async fn arrow_rows(server: &Server, sql: &str) -> (Arc<Schema>, Vec<RecordBatch>) {
    let response = server.sql_response(sql, "arrow").await;
    assert_eq!(response.status(), StatusCode::OK, "{sql}");
    let bytes = response.bytes().await.expect("body");
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("Arrow IPC");
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().expect("batches");
    (schema, batches)
}

/// A table as text: its columns (name, type, gridlake role) sorted by name, and every
/// row's values in that column order, ordered by time and tags. Floats print in their
/// shortest exact form, so `-0.0` and `0.0` differ, as do any two distinct bit patterns.
async fn table_text(server: &Server, table: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let (schema, _) = arrow_rows(server, &format!("SELECT * FROM \"{table}\" LIMIT 0")).await;
    let mut columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{}: {} ({})",
                f.name(),
                f.data_type(),
                f.metadata()
                    .get(storage::COLUMN_ROLE_KEY)
                    .map_or("no role", String::as_str)
            )
        })
        .collect();
    columns.sort();
    let mut names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    names.sort();
    let select = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (_, batches) = arrow_rows(
        server,
        &format!("SELECT {select} FROM \"{table}\" ORDER BY time, site, device"),
    )
    .await;
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in &batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    (columns, rows)
}

/// Exports the dataset from one server in `format`, imports it into a fresh one, and
/// compares the tables.
async fn round_trip(format: &str, empty_string: bool) {
    let source = Server::start().await;
    write_dataset(&source, empty_string).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(format!("export.{format}"));
    let file = file.to_str().expect("utf-8 path");
    let summary = gridlake_ok(&source, &["export", "--table", TABLE, "--output", file]).await;
    assert!(summary.contains("exported 60 rows"), "{summary}");
    assert!(
        !Path::new(&format!("{file}.partial")).exists(),
        "the partial file is renamed"
    );

    let target = Server::start().await;
    let mut args = vec!["import", file];
    if format == "csv" {
        // CSV does not name its table; a gridlake Parquet export does.
        args.extend(["--table", TABLE]);
    }
    let summary = gridlake_ok(&target, &args).await;
    assert!(
        summary.contains("60 rows read, 60 stored, 0 rejected"),
        "{summary}"
    );

    let (source_columns, source_rows) = table_text(&source, TABLE).await;
    let (target_columns, target_rows) = table_text(&target, TABLE).await;
    assert_eq!(source_rows.len(), 60);
    // The dataset really holds the values that are easy to lose.
    let all: Vec<&String> = source_rows.iter().flatten().collect();
    for value in [
        "-0.0",
        "5e-324",
        "18446744073709551615",
        "-9223372036854775808",
    ] {
        assert!(all.iter().any(|v| *v == value), "dataset lacks {value}");
    }
    assert!(
        all.iter().any(|v| v.contains("2024-03-02T")),
        "several days"
    );
    assert_eq!(source_columns, target_columns, "columns, types and roles");
    for (i, (a, b)) in source_rows.iter().zip(&target_rows).enumerate() {
        assert_eq!(a, b, "row {i} of {source_columns:?}");
    }
    assert_eq!(source_rows.len(), target_rows.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_export_imports_into_another_server_identically() {
    round_trip("parquet", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_export_imports_into_another_server_identically() {
    round_trip("csv", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_export_marks_types_in_its_header_and_takes_a_time_range() {
    let server = Server::start().await;
    write_dataset(&server, false).await;
    // One UTC day, in hour-long chunks.
    let output = gridlake(
        &server,
        &[
            "export",
            "--table",
            TABLE,
            "--format",
            "csv",
            "--from",
            "2024-02-29T00:00:00Z",
            "--to",
            "2024-03-01T00:00:00Z",
            "--chunk",
            "1h",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).expect("utf-8 CSV");
    let header = text.lines().next().expect("header");
    let mut marks: Vec<&str> = header.split(',').collect();
    marks.sort();
    assert_eq!(
        marks,
        [
            "b:bool",
            "device:tag",
            "f:f64",
            "i:i64",
            "note text:string",
            "site:tag",
            "time",
            "u:u64"
        ],
        "{header}"
    );
    let expected = server
        .sql(&format!(
            "SELECT count(*) AS n FROM {TABLE} WHERE time >= '2024-02-29T00:00:00Z' \
             AND time < '2024-03-01T00:00:00Z'"
        ))
        .await;
    let rows = text.lines().count() - 1;
    assert!(rows > 0);
    assert_eq!(rows as i64, int(&expected[0], "n"), "{text}");
    assert!(
        text.lines().skip(1).all(|l| l.starts_with("2024-02-29T")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_from_another_writer_imports_by_name_and_type() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("foreign.parquet");
    // Types gridlake never writes itself: millisecond times without a zone, 32-bit
    // numbers, large strings, dates; no role metadata.
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("site", DataType::Utf8, true),
        Field::new("power", DataType::Float32, true),
        Field::new("count", DataType::Int32, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("note", DataType::LargeUtf8, true),
        Field::new("day", DataType::Date32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(vec![
            1_709_251_200_000,
            1_709_251_200_001,
            1_709_337_600_002,
        ])),
        Arc::new(StringArray::from(vec![Some("s 1"), None, Some("s,2")])),
        Arc::new(Float32Array::from(vec![Some(1.5), Some(-0.25), None])),
        Arc::new(Int32Array::from(vec![Some(-7), None, Some(i32::MAX)])),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        Arc::new(LargeStringArray::from(vec![Some("x"), None, Some("\"q\"")])),
        Arc::new(Date32Array::from(vec![Some(19_783), None, None])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let path = path.to_str().unwrap();
    let output = gridlake(&server, &["import", path]).await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--table"), "{}", stderr(&output));
    let output = gridlake(&server, &["import", path, "--table", "foreign"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--time-column"),
        "{}",
        stderr(&output)
    );

    let summary = gridlake_ok(
        &server,
        &[
            "import",
            path,
            "--table",
            "foreign",
            "--time-column",
            "ts",
            "--tag",
            "site",
        ],
    )
    .await;
    assert!(summary.contains("3 rows read, 3 stored"), "{summary}");
    let rows = server
        .sql(
            "SELECT CAST(time AS BIGINT) AS t, site, power, count, ok, note, day, \
             arrow_typeof(site) AS site_type, arrow_typeof(power) AS power_type, \
             arrow_typeof(count) AS count_type FROM foreign ORDER BY time",
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(int(&rows[0], "t"), 1_709_251_200_000_000_000);
    assert_eq!(int(&rows[1], "t"), 1_709_251_200_001_000_000);
    assert_eq!(string(&rows[0], "site"), "s 1");
    assert!(is_null(&rows[1], "site"));
    assert_eq!(string(&rows[2], "site"), "s,2");
    assert_eq!(rows[0]["power"], 1.5);
    assert_eq!(rows[1]["power"], -0.25);
    assert_eq!(int(&rows[0], "count"), -7);
    assert_eq!(int(&rows[2], "count"), i64::from(i32::MAX));
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(string(&rows[2], "note"), "\"q\"");
    assert_eq!(string(&rows[0], "day"), "2024-03-01");
    assert_eq!(string(&rows[0], "site_type"), "Dictionary(Int32, Utf8)");
    assert_eq!(string(&rows[0], "power_type"), "Float64");
    assert_eq!(string(&rows[0], "count_type"), "Int64");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_csv_header_imports_with_tag_flags_and_inferred_numbers() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain.csv");
    std::fs::write(
        &path,
        "time,site,power,count:i64,ok,label\n\
         2024-03-01T00:00:00Z,s1,5,1,true,hello\n\
         2024-03-01 00:00:01,s2,5.5,,false,\"a,b\"\n\
         2024-03-01T00:00:02.000000003Z,,7,3,,x\n\
         2024-03-01T00:00:03Z,s1,8,four,true,y\n",
    )
    .unwrap();
    let output = gridlake(
        &server,
        &[
            "import",
            path.to_str().unwrap(),
            "--table",
            "plain",
            "--tag",
            "site",
        ],
    )
    .await;
    let err = stderr(&output);
    assert!(!output.status.success(), "a row was rejected: {err}");
    assert!(err.contains("4 rows read, 3 stored, 1 rejected"), "{err}");
    assert!(
        err.contains("plain.csv line 5: column \"count\""),
        "the bad row is named by its line: {err}"
    );
    let rows = server
        .sql(
            "SELECT CAST(time AS BIGINT) AS t, site, power, count, ok, label, \
             arrow_typeof(power) AS pt, arrow_typeof(count) AS ct, arrow_typeof(ok) AS bt, \
             arrow_typeof(site) AS st FROM plain ORDER BY time",
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(int(&rows[0], "t"), 1_709_251_200_000_000_000);
    assert_eq!(
        int(&rows[1], "t"),
        1_709_251_201_000_000_000,
        "no offset is UTC"
    );
    assert_eq!(int(&rows[2], "t"), 1_709_251_202_000_000_003);
    assert_eq!(
        string(&rows[0], "pt"),
        "Float64",
        "integers in a plain column are f64"
    );
    assert_eq!(string(&rows[0], "ct"), "Int64", "the header mark wins");
    assert_eq!(string(&rows[0], "bt"), "Boolean");
    assert_eq!(string(&rows[0], "st"), "Dictionary(Int32, Utf8)");
    assert_eq!(rows[1]["power"], 5.5);
    assert!(is_null(&rows[1], "count"));
    assert_eq!(string(&rows[1], "label"), "a,b");
    assert!(is_null(&rows[2], "site"));
}

#[tokio::test(flavor = "multi_thread")]
async fn line_protocol_rejections_are_counted_by_file_line_and_fail_the_command() {
    // A small body limit: the 10,000-line batch must be split to get through.
    let server =
        Server::start_with(Options::default().env("GRIDLAKE_HTTP_MAX_BODY_SIZE", "2048")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("backfill.lp");
    let mut text = String::from("# exported by a gateway\nlp,site=a v=1 1\nnot line protocol\n\n");
    for i in 0..200 {
        text.push_str(&format!("lp,site=b v={i} {}\n", 10 + i));
    }
    text.push_str("lp,site=c v=\"text\" 5\n"); // line 205: v is a float
    std::fs::write(&path, text).unwrap();

    let output = gridlake(&server, &["import", path.to_str().unwrap()]).await;
    let err = stderr(&output);
    assert!(
        !output.status.success(),
        "rejections fail the command: {err}"
    );
    assert!(
        err.contains("203 rows read, 201 stored, 2 rejected"),
        "{err}"
    );
    assert!(err.contains("backfill.lp line 3: "), "{err}");
    assert!(err.contains("backfill.lp line 205: "), "{err}");
    assert!(err.contains("2 of 203 rows were rejected"), "{err}");
    assert_eq!(server.count("lp").await, 201);

    // Seconds precision applies to the file's timestamps.
    let path = dir.path().join("seconds.txt");
    std::fs::write(&path, "secs,site=a v=1 1700000000\n").unwrap();
    gridlake_ok(
        &server,
        &["import", path.to_str().unwrap(), "--precision", "s"],
    )
    .await;
    let rows = server
        .sql("SELECT CAST(time AS BIGINT) AS t FROM secs")
        .await;
    assert_eq!(int(&rows[0], "t"), 1_700_000_000_000_000_000);
}

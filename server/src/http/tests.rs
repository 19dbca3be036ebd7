//! Router-level tests: requests go through the real router, store and query engine,
//! without a socket. End-to-end tests over HTTP live in `server/tests/`.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytesize::ByteSize;
use serde_json::{Value, json};

use crate::testing::Answer;

/// The shared fixture with auth off: these tests are about writes and SQL.
struct TestApp(crate::testing::TestApp);

impl std::ops::Deref for TestApp {
    type Target = crate::testing::TestApp;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl TestApp {
    async fn new(max_body_size: ByteSize) -> Self {
        Self(crate::testing::TestApp::open(max_body_size).await)
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, uri: &str, body: impl Into<Body>) -> Answer {
        self.send(Request::post(uri).body(body.into()).unwrap())
            .await
    }

    async fn rows(&self, sql: &str) -> Value {
        let answer = self
            .post("/api/v1/sql", json!({ "sql": sql }).to_string())
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
        answer.json()
    }

    async fn finish(self) {
        self.0.finish().await;
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_pass_and_version() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app.get("/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["status"], "pass");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].is_u64());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_offer_only_line_protocol_v1() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let body = app.get("/settings").await.json();
    assert_eq!(body["config"]["line.proto.support.versions"], json!([1]));
    assert_eq!(body["config"]["cairo.max.file.name.length"], 127);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn write_then_query_round_trip() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app
        .post(
            "/write?db=x&precision=s",
            "meter,site=a power=1.5 1700000000\nmeter,site=b power=2.5 1700000001\n",
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert!(answer.body.is_empty());
    let rows = app
        .rows("SELECT site, power FROM meter ORDER BY site")
        .await;
    assert_eq!(
        rows,
        json!([{"site": "a", "power": 1.5}, {"site": "b", "power": 2.5}])
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_lines_are_listed_and_valid_ones_stored() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app
        .post(
            "/api/v3/write_lp",
            "meter,site=a power=1 1\nmeter,site=a power=oops 2\nmeter,site=a power=3 3\n",
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["accepted"], 2);
    let rejected = body["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["line"], 2);
    assert!(rejected[0]["reason"].is_string());
    let rows = app.rows("SELECT count(*) AS n FROM meter").await;
    assert_eq!(rows, json!([{"n": 2}]));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parse_and_schema_errors_come_back_in_line_order() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app.post("/api/v3/write_lp", "meter power=1 1\n").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    // Line 2 conflicts with the table's float column (a schema error, found by
    // validation); line 3 does not parse. The client reads them in line order.
    let answer = app
        .post(
            "/api/v3/write_lp",
            "meter power=2 2\nmeter power=\"text\" 3\nnot line protocol\n",
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    let lines: Vec<u64> = body["rejected"]
        .as_array()
        .expect("rejected list")
        .iter()
        .map(|r| r["line"].as_u64().expect("line number"))
        .collect();
    assert_eq!(lines, [2, 3]);
    assert_eq!(body["accepted"], 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_partial_false_stores_nothing() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app
        .post(
            "/api/v3/write_lp?accept_partial=false",
            "meter,site=a power=1 1\nmeter,site=a power=oops 2\n",
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"][0]["line"], 2);
    assert_eq!(app.store.stats().buffer_rows, 0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_readings_are_written() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let body = json!([
        {"table": "battery", "time": 1_700_000_000_000i64, "tags": {"site": "a"}, "fields": {"soc": 55.0}}
    ]);
    let answer = app
        .post("/api/v1/write/json?precision=ms", body.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    let rows = app.rows("SELECT site, soc FROM battery").await;
    assert_eq!(rows[0]["site"], "a");
    assert_eq!(rows[0]["soc"].as_f64(), Some(55.0));
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_write_that_is_not_an_array_is_400() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app.post("/api/v1/write/json", r#"{"table": "x"}"#).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.json()["error"].as_str().unwrap().contains("array"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bodies_are_decoded() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let request = Request::post("/api/v2/write?bucket=b&org=o&precision=ms")
        .header(header::CONTENT_ENCODING, "gzip")
        .header(header::AUTHORIZATION, "Token whatever")
        .body(Body::from(gzip(b"meter power=7 1700000000000\n")))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    let rows = app.rows("SELECT power FROM meter").await;
    assert_eq!(rows[0]["power"].as_f64(), Some(7.0));
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_413_before_and_after_gzip() {
    let app = TestApp::new(ByteSize::b(64)).await;
    let big = "meter power=1 1\n".repeat(10);
    let answer = app.post("/write", big.clone()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("max_body_size")
    );

    let packed = gzip(big.as_bytes());
    assert!(packed.len() <= 64, "gzip of repeated lines is small");
    let request = Request::post("/write")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(packed))
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.store.stats().buffer_rows, 0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_encoding_is_415_and_bad_gzip_400() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let request = Request::post("/write")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from("meter power=1 1\n"))
        .unwrap();
    assert_eq!(
        app.send(request).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let request = Request::post("/write")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("not gzip at all"))
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_precision_is_400_naming_it() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app
        .post("/write?precision=fortnight", "meter power=1 1\n")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("fortnight")
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_errors_are_400_with_json() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app.get("/api/v1/sql?q=SELEC%201").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.json()["error"].is_string());

    let answer = app.get("/api/v1/sql").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.json()["error"].as_str().unwrap().contains("q"));

    let answer = app.post("/api/v1/sql", "SELECT 1").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.json()["error"].as_str().unwrap().contains("\"sql\""));

    let answer = app.get("/api/v1/sql?q=SELECT%201&format=xml").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_format_sets_content_type() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app
        .get("/api/v1/sql?q=SELECT%201%20AS%20one&format=csv")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(String::from_utf8_lossy(&answer.body).trim(), "one\n1");

    // The body's format wins over the query parameter.
    let answer = app
        .post(
            "/api/v1/sql?format=csv",
            json!({"sql": "SELECT 1 AS one", "format": "jsonl"}).to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/jsonl");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    let answer = app.get("/nope").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json()["error"].as_str().unwrap().contains("/nope"));

    let answer = app.get("/write").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer.json()["error"].as_str().unwrap().contains("GET"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_and_status_class() {
    let app = TestApp::new(ByteSize::mib(1)).await;
    app.get("/health").await;
    app.post("/write?precision=bogus", "x").await;
    app.post("/write", "meter power=1 1\nbad\n").await;
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(answer.body.to_vec()).expect("metrics are UTF-8");
    for expected in [
        r#"gridlake_http_requests_total{route="/health",status="2xx"} 1"#,
        r#"gridlake_http_requests_total{route="/write",status="4xx"} 2"#,
        "gridlake_lines_rejected_total 1",
        "gridlake_rows_written_total 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    app.finish().await;
}

//! Writes through every HTTP endpoint and precision, read back with SQL.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Options, Server, float, gzip, int, is_null, parse_error, string};

/// 2023-11-14T22:13:20.123456789Z in nanoseconds.
const T_NS: i64 = 1_700_000_000_123_456_789;

/// A timestamp as written in `precision`, and the nanoseconds the server must store.
fn stamp(precision: &str) -> (i64, i64) {
    match precision {
        "" | "n" | "ns" => (T_NS, T_NS),
        "u" | "us" => (T_NS / 1_000, T_NS / 1_000 * 1_000),
        "ms" => (T_NS / 1_000_000, T_NS / 1_000_000 * 1_000_000),
        "s" => (T_NS / 1_000_000_000, T_NS / 1_000_000_000 * 1_000_000_000),
        other => panic!("no test stamp for precision {other}"),
    }
}

/// Writes one line per precision through `endpoint` (a path with its own query
/// parameters, to which `&precision=P` is appended) and checks the stored times exactly.
async fn round_trip(server: &Server, endpoint: &str, table: &str, precisions: &[&str]) {
    for (i, precision) in precisions.iter().enumerate() {
        let (written, expected) = stamp(precision);
        let line = format!("{table},device_id=d{i},prec=p{precision} power_w={i}.5 {written}");
        let path = if precision.is_empty() {
            endpoint.to_owned()
        } else {
            format!("{endpoint}&precision={precision}")
        };
        server.write_ok(&path, line).await;
        let rows = server
            .sql(&format!(
                "SELECT CAST(time AS BIGINT) AS t, power_w FROM {table} WHERE device_id = 'd{i}'"
            ))
            .await;
        assert_eq!(
            rows.len(),
            1,
            "precision {precision:?} via {endpoint}: {rows:?}"
        );
        assert_eq!(
            int(&rows[0], "t"),
            expected,
            "precision {precision:?} via {endpoint}: stored time"
        );
        assert_eq!(float(&rows[0], "power_w"), i as f64 + 0.5);
    }
    assert_eq!(server.count(table).await, precisions.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_write_every_precision() {
    let server = Server::start().await;
    // v1 clients send n/u/ms/s; ns/us are accepted too; none means nanoseconds.
    round_trip(
        &server,
        "/write?db=telemetry",
        "v1",
        &["", "n", "u", "ms", "s", "ns", "us"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_write_every_precision() {
    let server = Server::start().await;
    round_trip(
        &server,
        "/api/v2/write?bucket=telemetry&org=acme",
        "v2",
        &["", "ns", "us", "ms", "s"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_write_every_precision() {
    let server = Server::start().await;
    round_trip(
        &server,
        "/api/v3/write_lp?db=telemetry",
        "v3",
        &["", "ns", "us", "ms", "s"],
    )
    .await;
    // no_sync=true is an opt-out of the fsync wait, not of storing.
    server
        .write_ok(
            "/api/v3/write_lp?db=telemetry&no_sync=true",
            "v3,device_id=nosync power_w=9 42",
        )
        .await;
    let rows = server
        .sql("SELECT CAST(time AS BIGINT) AS t FROM v3 WHERE device_id = 'nosync'")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(int(&rows[0], "t"), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_precision_is_400() {
    let server = Server::start().await;
    for path in [
        "/write?db=x&precision=fortnight",
        "/api/v2/write?bucket=x&precision=fortnight",
        "/api/v3/write_lp?db=x&precision=fortnight",
        "/api/v1/write/json?precision=fortnight",
    ] {
        let body = if path.contains("json") {
            r#"[{"table":"p","tags":{},"fields":{"v":1}}]"#
        } else {
            "p v=1 1"
        };
        let (status, text) = server.post(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
        let error = parse_error(&text);
        assert!(
            error["error"]
                .as_str()
                .unwrap_or_default()
                .contains("fortnight"),
            "{path}: error must name the bad precision: {text}"
        );
    }
    assert!(!server.has_table("p").await, "nothing may be stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn field_types_round_trip() {
    // Not a canonical table: the line-protocol types are kept as written (a canonical
    // table would turn `energy_wh=-42i` into a float and add quality and source).
    let server = Server::start().await;
    server
        .write_lp(concat!(
            "gauge,site_id=s1,device_id=m1 power_w=1234.5,energy_wh=-42i,pulses=7u,online=t,",
            "note=\"hello, \\\"grid\\\"\" 1000\n",
            "gauge,site_id=s1,device_id=m2 power_w=-0.25,energy_wh=9223372036854775807i,",
            "pulses=18446744073709551615u,online=F,note=\"\" 2000\n",
        ))
        .await;
    let rows = server
        .sql(
            "SELECT site_id, device_id, CAST(time AS BIGINT) AS t, power_w, energy_wh, \
             CAST(pulses AS VARCHAR) AS pulses, online, note FROM gauge ORDER BY device_id",
        )
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(string(&rows[0], "site_id"), "s1");
    assert_eq!(string(&rows[0], "device_id"), "m1");
    assert_eq!(int(&rows[0], "t"), 1000);
    assert_eq!(float(&rows[0], "power_w"), 1234.5);
    assert_eq!(int(&rows[0], "energy_wh"), -42);
    assert_eq!(string(&rows[0], "pulses"), "7");
    assert_eq!(rows[0]["online"], Value::Bool(true));
    assert_eq!(string(&rows[0], "note"), "hello, \"grid\"");
    assert_eq!(string(&rows[1], "device_id"), "m2");
    assert_eq!(int(&rows[1], "t"), 2000);
    assert_eq!(float(&rows[1], "power_w"), -0.25);
    assert_eq!(int(&rows[1], "energy_wh"), i64::MAX);
    assert_eq!(string(&rows[1], "pulses"), u64::MAX.to_string());
    assert_eq!(rows[1]["online"], Value::Bool(false));
    assert_eq!(string(&rows[1], "note"), "");

    // The column types follow the line protocol suffixes.
    let columns = server
        .sql(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'gauge' ORDER BY ordinal_position",
        )
        .await;
    let columns: Vec<(String, String)> = columns
        .iter()
        .map(|c| {
            (
                string(c, "column_name").to_owned(),
                string(c, "data_type").to_owned(),
            )
        })
        .collect();
    let mut names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "time", "time comes first: {columns:?}");
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "device_id",
            "energy_wh",
            "note",
            "online",
            "power_w",
            "pulses",
            "site_id",
            "time"
        ]
    );
    let type_of = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("column {name} missing in {columns:?}"))
    };
    // Arrow spells the unit `ns` (arrow 59) or `Nanosecond` (older) in this name.
    let time = type_of("time");
    assert!(
        (time.starts_with("Timestamp(ns") || time.starts_with("Timestamp(Nanosecond"))
            && time.contains("UTC"),
        "{columns:?}"
    );
    assert!(
        type_of("device_id").starts_with("Dictionary(Int32, Utf8"),
        "{columns:?}"
    );
    assert_eq!(type_of("power_w"), "Float64");
    assert_eq!(type_of("energy_wh"), "Int64");
    assert_eq!(type_of("pulses"), "UInt64");
    assert_eq!(type_of("online"), "Boolean");
    assert_eq!(type_of("note"), "Utf8");
}

/// The credentials InfluxDB clients send are accepted with a gridlake token: v2's
/// `Token`, `Bearer`, v1's Basic auth with the token as the password and v1's `p`
/// parameter; an unknown token is refused.
#[tokio::test(flavor = "multi_thread")]
async fn influx_client_credentials_are_accepted() {
    use base64::Engine as _;
    let server = Server::start().await;
    let token = server.admin_token();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{token}"));
    // A client without the harness's default admin header.
    let bare = reqwest::Client::new();
    let attempts = [
        (
            "/api/v2/write?bucket=b&org=o",
            Some(format!("Token {token}")),
        ),
        (
            "/api/v2/write?bucket=b&org=o",
            Some(format!("Bearer {token}")),
        ),
        ("/write?db=x", Some(format!("Basic {basic}"))),
        (&*format!("/write?db=x&u=telegraf&p={token}"), None),
    ];
    for (i, (path, auth)) in attempts.iter().enumerate() {
        let mut request = bare
            .post(server.url(path))
            .body(format!("auth,device_id=d{i} v=1 {i}"));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.expect("POST a write");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::NO_CONTENT, "{path} {auth:?}: {body}");
    }
    for auth in ["Token secret", "Bearer glk_unknown"] {
        let response = bare
            .post(server.url("/api/v2/write?bucket=b&org=o"))
            .header("Authorization", auth)
            .body("auth,device_id=x v=1 9")
            .send()
            .await
            .expect("POST /api/v2/write");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    assert_eq!(server.count("auth").await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_write_endpoint() {
    let server = Server::start().await;
    let body = json!([
        {"table": "readings", "time": T_NS / 1_000_000,
         "tags": {"site_id": "s1", "device_id": "plug1"},
         "fields": {"power_w": 12.5, "on": true, "state": "ok"}},
        {"table": "readings", "time": "2023-11-14T22:13:20.5Z",
         "tags": {"site_id": "s1", "device_id": "plug2"},
         "fields": {"power_w": 3.25}},
    ]);
    server
        .write_ok("/api/v1/write/json?precision=ms", body.to_string())
        .await;
    let rows = server
        .sql(
            "SELECT device_id, site_id, CAST(time AS BIGINT) AS t, power_w, \"on\", state \
             FROM readings ORDER BY device_id",
        )
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(string(&rows[0], "device_id"), "plug1");
    assert_eq!(string(&rows[0], "site_id"), "s1");
    assert_eq!(int(&rows[0], "t"), T_NS / 1_000_000 * 1_000_000);
    assert_eq!(float(&rows[0], "power_w"), 12.5);
    assert_eq!(rows[0]["on"], Value::Bool(true));
    assert_eq!(string(&rows[0], "state"), "ok");
    assert_eq!(string(&rows[1], "device_id"), "plug2");
    assert_eq!(int(&rows[1], "t"), 1_700_000_000_500_000_000);
    assert_eq!(float(&rows[1], "power_w"), 3.25);
    assert!(is_null(&rows[1], "on"), "{rows:?}");

    // Every precision applies to integer times; none means nanoseconds.
    for precision in ["", "ns", "us", "ms", "s"] {
        let (written, expected) = stamp(precision);
        let body = json!([{"table": "jp", "time": written,
                           "tags": {"prec": format!("p{precision}")},
                           "fields": {"v": 1.0}}]);
        let path = format!("/api/v1/write/json?precision={precision}");
        let path = if precision.is_empty() {
            "/api/v1/write/json"
        } else {
            path.as_str()
        };
        server.write_ok(path, body.to_string()).await;
        let rows = server
            .sql(&format!(
                "SELECT CAST(time AS BIGINT) AS t FROM jp WHERE prec = 'p{precision}'"
            ))
            .await;
        assert_eq!(rows.len(), 1, "precision {precision:?}");
        assert_eq!(int(&rows[0], "t"), expected, "precision {precision:?}");
    }

    // A reading without time gets the server's clock.
    let before = now_ns();
    server
        .write_ok(
            "/api/v1/write/json",
            json!([{"table": "jnow", "tags": {"d": "x"}, "fields": {"v": 1.0}}]).to_string(),
        )
        .await;
    let after = now_ns();
    let rows = server
        .sql("SELECT CAST(time AS BIGINT) AS t FROM jnow")
        .await;
    let t = int(&rows[0], "t");
    assert!(
        (before - 1_000_000_000..=after + 1_000_000_000).contains(&t),
        "time {t} must be the server's now ({before}..{after})"
    );

    // One bad reading is rejected, the rest stored (accept_partial defaults to true).
    let body = json!([
        {"table": "jbad", "time": 1, "tags": {"d": "a"}, "fields": {"v": 1.0}},
        {"table": "jbad", "time": 2, "tags": {"d": "b"}, "fields": {}},
        {"table": "jbad", "time": 3, "tags": {"d": "c"}, "fields": {"v": 3.0}},
    ]);
    let (status, text) = server.post("/api/v1/write/json", body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = parse_error(&text);
    assert_eq!(error["accepted"], json!(2), "{text}");
    assert_eq!(
        error["rejected"].as_array().map(Vec::len),
        Some(1),
        "{text}"
    );
    assert_eq!(server.count("jbad").await, 2);

    // Not a JSON array at all.
    let (status, text) = server.post("/api/v1/write/json", "{\"table\":").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    parse_error(&text);
}

fn now_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_nanos()).expect("time fits i64")
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bodies() {
    let server = Server::start().await;
    let lines: String = (0..100)
        .map(|i| format!("gz,device_id=d{} power_w={i} {}\n", i % 10, 1_000 + i))
        .collect();
    for (i, path) in [
        "/api/v3/write_lp?db=x",
        "/api/v2/write?bucket=x&org=y",
        "/write?db=x",
    ]
    .iter()
    .enumerate()
    {
        let table = format!("gz{i}");
        let body = gzip(lines.replace("gz,", &format!("{table},")).as_bytes());
        let response = server
            .http()
            .post(server.url(path))
            .header("Content-Encoding", "gzip")
            .body(body)
            .send()
            .await
            .expect("POST gzip");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {text}");
        assert_eq!(server.count(&table).await, 100, "{path}");
        let rows = server
            .sql(&format!(
                "SELECT sum(power_w) AS s, max(CAST(time AS BIGINT)) AS t FROM {table}"
            ))
            .await;
        assert_eq!(float(&rows[0], "s"), (0..100).sum::<i32>() as f64);
        assert_eq!(int(&rows[0], "t"), 1_099);
    }

    // A body that says gzip but is not: 400, nothing stored.
    let response = server
        .http()
        .post(server.url("/api/v3/write_lp?db=x"))
        .header("Content-Encoding", "gzip")
        .body("notgz v=1 1")
        .send()
        .await
        .expect("POST bad gzip");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!server.has_table("notgz").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn type_conflict_rejects_the_line_and_keeps_the_others() {
    let server = Server::start().await;
    server.write_lp("tc,device_id=a power_w=1.5 1000").await;
    let body = concat!(
        "tc,device_id=b power_w=2.5 2000\n",
        "tc,device_id=c power_w=\"high\" 3000\n",
        "tc,device_id=d power_w=t 4000\n",
        "tc,device_id=e power_w=5.5 5000\n",
    );
    let (status, text) = server.post("/api/v3/write_lp?db=x", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = parse_error(&text);
    assert_eq!(error["accepted"], json!(2), "{text}");
    let rejected = error["rejected"].as_array().expect("rejected list");
    let lines: Vec<i64> = rejected
        .iter()
        .map(|r| r["line"].as_i64().expect("line number"))
        .collect();
    assert_eq!(lines, [2, 3], "{text}");
    for r in rejected {
        let reason = r["reason"].as_str().expect("reason");
        assert!(
            reason.contains("power_w"),
            "the reason must name the field: {reason}"
        );
    }
    let rows = server
        .sql("SELECT device_id, power_w FROM tc ORDER BY device_id")
        .await;
    let stored: Vec<(&str, f64)> = rows
        .iter()
        .map(|r| (string(r, "device_id"), float(r, "power_w")))
        .collect();
    assert_eq!(stored, [("a", 1.5), ("b", 2.5), ("e", 5.5)]);

    // The same conflict inside one request, against the line before it, and a line
    // that does not parse at all.
    let body = "tc2,device_id=a v=1i 1\ntc2,device_id=b v=2.5 2\nthis is not line protocol\n";
    let (status, text) = server.post("/write?db=x", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = parse_error(&text);
    assert_eq!(error["accepted"], json!(1), "{text}");
    let lines: Vec<i64> = error["rejected"]
        .as_array()
        .expect("rejected list")
        .iter()
        .map(|r| r["line"].as_i64().expect("line number"))
        .collect();
    assert_eq!(lines, [2, 3], "{text}");
    assert_eq!(server.count("tc2").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn canonical_tables_get_their_column_types_and_provenance() {
    let server = Server::start().await;
    // An integer where the canonical type is a float becomes a float, so that this first
    // write cannot fix `power_w` as an integer column for every later reading.
    let body = concat!(
        "meter,site_id=s1,device_id=m1 power_w=5i,energy_import_wh=100i 1000\n",
        "meter,site_id=s1,device_id=m1 power_w=\"high\" 2000\n",
        "meter,site_id=s1,device_id=m1 power_w=7.5,quality=\"estimated\" 3000\n",
        "meter,site_id=s1,device_id=m1 power_w=8.5,quality=\"valid\" 4000\n",
        "battery,site_id=s1,device_id=b1 cycles=12,soc_pct=55i 1000\n",
    );
    let (status, text) = server.post("/api/v3/write_lp?db=x", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = parse_error(&text);
    assert_eq!(error["accepted"], json!(3), "{text}");
    let rejected = error["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 2, "{text}");
    assert_eq!(rejected[0]["line"], json!(2));
    assert_eq!(
        rejected[0]["reason"],
        json!("column \"power_w\" of table \"meter\" is a float in W; got the string \"high\"")
    );
    assert_eq!(rejected[1]["line"], json!(4));
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("substituted"),
        "{text}"
    );

    let rows = server
        .sql("SELECT power_w, energy_import_wh, quality, source FROM meter ORDER BY time")
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(float(&rows[0], "power_w"), 5.0);
    assert_eq!(float(&rows[0], "energy_import_wh"), 100.0);
    assert_eq!(string(&rows[0], "quality"), "actual");
    assert_eq!(string(&rows[0], "source"), "http");
    assert_eq!(string(&rows[1], "quality"), "estimated");
    let types = server
        .sql(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'battery' AND column_name IN ('cycles', 'soc_pct') \
             ORDER BY column_name",
        )
        .await;
    assert_eq!(string(&types[0], "data_type"), "Int64");
    assert_eq!(string(&types[1], "data_type"), "Float64");
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_partial_false_is_all_or_nothing() {
    let server = Server::start().await;
    server.write_lp("aon,device_id=a v=1.5 1000").await;
    let body =
        "aon,device_id=b v=2.5 2000\naon,device_id=c v=\"x\" 3000\naon,device_id=d v=4 4000\n";
    let (status, text) = server
        .post("/api/v3/write_lp?db=x&accept_partial=false", body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = parse_error(&text);
    assert_eq!(error["accepted"], json!(0), "{text}");
    assert_eq!(error["rejected"][0]["line"], json!(2), "{text}");
    assert_eq!(
        server.count("aon").await,
        1,
        "nothing of the request is stored"
    );

    // Also new tables and columns of a refused request must not show up with rows.
    let body = "aon_new,device_id=z v=1 1\naon,device_id=y v=t 5\n";
    let (status, text) = server
        .post("/api/v3/write_lp?db=x&accept_partial=false", body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    if server.has_table("aon_new").await {
        assert_eq!(server.count("aon_new").await, 0);
    }

    let body = json!([
        {"table": "aon", "time": 6000, "tags": {"device_id": "f"}, "fields": {"v": 6.0}},
        {"table": "aon", "time": 7000, "tags": {"device_id": "g"}, "fields": {"v": "seven"}},
    ]);
    let (status, text) = server
        .post("/api/v1/write/json?accept_partial=false", body.to_string())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(parse_error(&text)["accepted"], json!(0), "{text}");
    assert_eq!(server.count("aon").await, 1);

    // With accept_partial=true (the default) the valid lines are stored.
    let (status, text) = server
        .post(
            "/api/v3/write_lp?db=x&accept_partial=true",
            "aon,device_id=b v=2.5 2000\naon,device_id=c v=\"x\" 3000\n",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(parse_error(&text)["accepted"], json!(1), "{text}");
    assert_eq!(server.count("aon").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_body_is_413() {
    let server =
        Server::start_with(Options::default().env("GRIDLAKE_HTTP_MAX_BODY_SIZE", "1024")).await;
    let line = |i: usize| format!("big,device_id=d{i:04} power_w={i}.0 {i}\n");
    let small: String = (0..10).map(line).collect();
    assert!(small.len() < 1024);
    server.write_lp(&small).await;

    let large: String = (0..100).map(line).collect();
    assert!(large.len() > 1024);
    let (status, text) = server.post("/api/v3/write_lp?db=x", large.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    let (status, _) = server.post("/write?db=x", large.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The limit holds for the decoded size of a gzip body too.
    let packed = gzip(large.as_bytes());
    assert!(
        packed.len() < 1024,
        "test body must compress below the limit"
    );
    let response = server
        .http()
        .post(server.url("/api/v2/write?bucket=x"))
        .header("Content-Encoding", "gzip")
        .body(packed)
        .send()
        .await
        .expect("POST gzip");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(
        server.count("big").await,
        10,
        "refused bodies store nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn same_point_is_deduplicated_last_write_wins() {
    let server = Server::start().await;
    server
        .write_lp("dd,device_id=a,site_id=s power_w=1 1000")
        .await;
    server
        .write_lp("dd,device_id=a,site_id=s power_w=2 1000")
        .await;
    // Same time, different tag set: a different point.
    server
        .write_lp("dd,device_id=b,site_id=s power_w=3 1000")
        .await;
    // Tag order in the line does not make a different series.
    server
        .write_lp("dd,site_id=s,device_id=b power_w=4 1000")
        .await;
    // Duplicates inside one request: the later line wins.
    server
        .write_lp(
            "dd,device_id=c,site_id=s power_w=5 1000\ndd,device_id=c,site_id=s power_w=6 1000",
        )
        .await;
    let rows = server
        .sql("SELECT device_id, power_w FROM dd ORDER BY device_id")
        .await;
    let got: Vec<(&str, f64)> = rows
        .iter()
        .map(|r| (string(r, "device_id"), float(r, "power_w")))
        .collect();
    assert_eq!(got, [("a", 2.0), ("b", 4.0), ("c", 6.0)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_tags_and_fields_extend_the_schema() {
    let server = Server::start().await;
    server.write_lp("se,device_id=a power_w=1 1000").await;
    server
        .write_lp("se,device_id=b,site_id=s1 power_w=2,voltage_v=230.5 2000")
        .await;
    server
        .write_lp("se,device_id=c,phase=L1 power_w=3,online=t 3000")
        .await;
    let columns = server
        .sql(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_name = 'se' ORDER BY ordinal_position",
        )
        .await;
    let names: Vec<&str> = columns.iter().map(|c| string(c, "column_name")).collect();
    assert_eq!(
        names,
        [
            "time",
            "device_id",
            "power_w",
            "site_id",
            "voltage_v",
            "phase",
            "online"
        ]
    );
    let rows = server
        .sql("SELECT device_id, site_id, voltage_v, phase, online FROM se ORDER BY device_id")
        .await;
    assert_eq!(rows.len(), 3);
    assert!(is_null(&rows[0], "site_id"), "{rows:?}");
    assert!(is_null(&rows[0], "voltage_v"), "{rows:?}");
    assert_eq!(string(&rows[1], "site_id"), "s1");
    assert_eq!(float(&rows[1], "voltage_v"), 230.5);
    assert!(is_null(&rows[1], "phase"), "{rows:?}");
    assert_eq!(string(&rows[2], "phase"), "L1");
    assert_eq!(rows[2]["online"], Value::Bool(true));
}

//! The storage lifecycle endpoints through the real router over a real store: tables,
//! retention, deletes (with their rollups) and compaction on demand.

use axum::http::StatusCode;
use crm::Role;
use serde_json::{Value, json};

use crate::testing::{Answer, TestApp};

/// 2026-01-01T00:00:00Z in seconds.
const JAN1: i64 = 1_767_225_600;

async fn admin(app: &TestApp) -> String {
    app.user(Role::Admin, "admin@example.com").await.1
}

async fn call(app: &TestApp, token: &str, method: &str, uri: &str, body: Option<Value>) -> Answer {
    app.call(method, uri, Some(token), body).await
}

/// `sql`'s rows, as `token`.
async fn sql(app: &TestApp, token: &str, sql: &str) -> Value {
    let answer = call(
        app,
        token,
        "POST",
        "/api/v1/sql",
        Some(json!({ "sql": sql })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{sql}: {}", answer.text());
    answer.json()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn persist(app: &TestApp) {
    let store = app.store.clone();
    blocking(move || store.persist_now())
        .await
        .expect("persist");
}

async fn refresh_rollups(app: &TestApp) {
    let engine = app.state.engine().clone();
    blocking(move || engine.rollups().refresh_now())
        .await
        .expect("refresh");
}

/// The fields of a 422, as `field: message` lines.
fn fields(answer: &Answer) -> Vec<String> {
    answer
        .validation_errors()
        .into_iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_show_columns_sizes_and_retention() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    app.write_lp(
        &token,
        &format!(
            "plant,site_id=s1 power_w=1.5,on=true,count=3i {JAN1}\n\
             plant,site_id=s1 power_w=2.5,on=false,count=4i {}\n",
            JAN1 + 86_400
        ),
    )
    .await;
    // One more row in the buffer only.
    persist(&app).await;
    app.write_lp(
        &token,
        &format!("plant,site_id=s2 power_w=3 {}\n", JAN1 + 60),
    )
    .await;

    let answer = call(&app, &token, "GET", "/api/v1/tables/plant", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let table = answer.json();
    assert_eq!(
        table["columns"],
        json!([
            {"name": "time", "role": "time", "type": "timestamp"},
            {"name": "site_id", "role": "tag", "type": "string"},
            {"name": "power_w", "role": "field", "type": "f64"},
            {"name": "on", "role": "field", "type": "bool"},
            {"name": "count", "role": "field", "type": "i64"},
        ])
    );
    // Two UTC days: two files.
    assert_eq!(table["files"], 2, "{table}");
    assert!(table["bytes"].as_u64().unwrap() > 0, "{table}");
    assert_eq!(table["file_rows"], 2, "{table}");
    assert_eq!(table["buffer_rows"], 1, "{table}");
    assert_eq!(table["min_time"], "2026-01-01T00:00:00Z");
    assert_eq!(table["max_time"], "2026-01-02T00:00:00Z");
    assert_eq!(table["pending_deletes"], 0);
    assert_eq!(table["rollup_of"], Value::Null);
    assert_eq!(
        table["retention"],
        json!({"ttl": null, "ttl_seconds": null, "source": "config"})
    );

    let answer = call(&app, &token, "GET", "/api/v1/tables", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let names: Vec<String> = answer.json()["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["plant"]);

    let answer = call(&app, &token, "GET", "/api/v1/tables/plantt", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    assert!(answer.text().contains("plantt"), "{}", answer.text());

    // Rollup tables say what they roll up.
    refresh_rollups(&app).await;
    let answer = call(&app, &token, "GET", "/api/v1/tables/plant_15m", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["rollup_of"], "plant");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_set_through_the_api_hides_old_rows_and_can_be_reset() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    let now = chrono::Utc::now().timestamp();
    let day = 86_400;
    app.write_lp(
        &token,
        &format!(
            "plant,site_id=s1 power_w=1 {}\nplant,site_id=s1 power_w=2 {}\n",
            now - 60 * day,
            now - day
        ),
    )
    .await;
    let count = "SELECT count(*) AS n FROM plant";
    assert_eq!(sql(&app, &token, count).await, json!([{"n": 2}]));

    let uri = "/api/v1/tables/plant/retention";
    let answer = call(&app, &token, "PUT", uri, Some(json!({"ttl": "30d"}))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json()["retention"],
        json!({"ttl": "30days", "ttl_seconds": 30 * day, "source": "api"})
    );
    assert_eq!(sql(&app, &token, count).await, json!([{"n": 1}]));
    // And a write of such an old row is refused, naming the retention.
    let answer = app
        .send(
            axum::http::Request::post("/api/v3/write_lp?precision=s")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(format!(
                    "plant,site_id=s1 power_w=3 {}\n",
                    now - 40 * day
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert!(answer.text().contains("retention"), "{}", answer.text());

    // Forever, set through the API.
    let answer = call(&app, &token, "PUT", uri, Some(json!({"ttl": null}))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json()["retention"],
        json!({"ttl": null, "ttl_seconds": null, "source": "api"})
    );
    assert_eq!(sql(&app, &token, count).await, json!([{"n": 2}]));

    // Back to the configuration (forever: the table is not listed).
    call(&app, &token, "PUT", uri, Some(json!({"ttl": "30d"}))).await;
    let answer = call(&app, &token, "DELETE", uri, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json()["retention"],
        json!({"ttl": null, "ttl_seconds": null, "source": "config"})
    );
    assert_eq!(sql(&app, &token, count).await, json!([{"n": 2}]));

    // Bad input names the field; an unknown table is 404.
    let bad = |body: Value| call(&app, &token, "PUT", uri, Some(body));
    let answer = bad(json!({})).await;
    assert!(
        fields(&answer)[0].starts_with("ttl: is required"),
        "{:?}",
        fields(&answer)
    );
    let answer = bad(json!({"ttl": "0s"})).await;
    assert!(
        fields(&answer)[0].contains("longer than zero"),
        "{:?}",
        fields(&answer)
    );
    let answer = bad(json!({"ttl": "soon"})).await;
    assert!(
        fields(&answer)[0].contains("\"soon\""),
        "{:?}",
        fields(&answer)
    );
    let answer = bad(json!({"ttl": "1d", "tll": "2d"})).await;
    assert!(
        fields(&answer)[0].starts_with("tll"),
        "{:?}",
        fields(&answer)
    );
    let answer = call(
        &app,
        &token,
        "PUT",
        "/api/v1/tables/nope/retention",
        Some(json!({"ttl": "1d"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    let answer = call(
        &app,
        &token,
        "DELETE",
        "/api/v1/tables/nope/retention",
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    app.finish().await;
}

/// Readings of site `site` at 00:00, 00:10, 00:20 and 00:40 of 2026-01-01, an energy
/// register growing 1 Wh a minute.
fn readings(site: &str) -> String {
    [0, 10, 20, 40]
        .iter()
        .map(|minute| {
            format!(
                "plant,site_id={site} power_w=1,energy_wh={} {}\n",
                1000 + minute,
                JAN1 + minute * 60
            )
        })
        .collect()
}

/// `(site, minute of the bucket, column)` of a rollup table, ordered.
async fn rollup_column(app: &TestApp, token: &str, table: &str, column: &str) -> Vec<Value> {
    let rows = sql(
        app,
        token,
        &format!(
            "SELECT site_id, (CAST(time AS BIGINT) / 1000000000 - {JAN1}) / 60 AS minute, \
             {column} AS v FROM {table} ORDER BY site_id, minute"
        ),
    )
    .await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["site_id"], r["minute"], r["v"]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_hides_one_sites_rows_and_rollups_at_once_and_compaction_removes_them() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    app.write_lp(&token, &format!("{}{}", readings("s1"), readings("s2")))
        .await;
    refresh_rollups(&app).await;
    persist(&app).await;
    let energies = || rollup_column(&app, &token, "plant_15m", "energy_wh_energy");
    let before = vec![
        json!(["s1", 0, 10.0]),
        json!(["s1", 15, 10.0]),
        json!(["s1", 30, 20.0]),
        json!(["s2", 0, 10.0]),
        json!(["s2", 15, 10.0]),
        json!(["s2", 30, 20.0]),
    ];
    assert_eq!(energies().await, before);

    // s1's readings at 00:10 and 00:20.
    let answer = call(
        &app,
        &token,
        "POST",
        "/api/v1/delete",
        Some(json!({
            "tags": {"site_id": "s1"},
            "from": "2026-01-01T00:05:00Z",
            "to": (JAN1 + 25 * 60) * 1_000_000_000_i64,
        })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let tombstones = answer.json()["tombstones"].clone();
    let summary: Vec<Value> = tombstones
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!([t["table"], t["tags"], t["from"], t["to"]]))
        .collect();
    let to = "2026-01-01T00:25:00Z";
    let tags = json!({"site_id": "s1"});
    assert_eq!(
        summary,
        [
            json!(["plant", tags, "2026-01-01T00:05:00Z", to]),
            // Rollups from the start of the bucket holding `from`.
            json!(["plant_15m", tags, "2026-01-01T00:00:00Z", to]),
            json!(["plant_1h", tags, "2026-01-01T00:00:00Z", to]),
            json!(["plant_1d", tags, "2026-01-01T00:00:00Z", to]),
        ]
    );

    // Gone from SQL at once, the other site untouched.
    let raw = "SELECT site_id, (CAST(time AS BIGINT) / 1000000000 - 1767225600) / 60 AS minute \
               FROM plant ORDER BY site_id, minute";
    let minutes = |rows: Value| -> Vec<Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| json!([r["site_id"], r["minute"]]))
            .collect()
    };
    let after_delete = vec![
        json!(["s1", 0]),
        json!(["s1", 40]),
        json!(["s2", 0]),
        json!(["s2", 10]),
        json!(["s2", 20]),
        json!(["s2", 40]),
    ];
    assert_eq!(minutes(sql(&app, &token, raw).await), after_delete);
    // The rollup rows from the bucket holding `from` to `to` are gone; the rest stay.
    assert_eq!(
        energies().await,
        [
            before[2].clone(),
            before[3].clone(),
            before[4].clone(),
            before[5].clone()
        ]
    );
    // The next refresh recomputes the buckets that kept rows: 00:00 from the reading at
    // 00:00, and 00:30, whose step now comes from 00:00 (40 Wh in 40 minutes).
    let stale = app.state.engine().rollups().stale();
    assert!(stale.contains_key("plant"), "{stale:?}");
    refresh_rollups(&app).await;
    let after_refresh = vec![
        // A row for the reading at 00:00 again, without energy (no step into it).
        json!(["s1", 0, null]),
        json!(["s1", 30, 40.0]),
        json!(["s2", 0, 10.0]),
        json!(["s2", 15, 10.0]),
        json!(["s2", 30, 20.0]),
    ];
    assert_eq!(energies().await, after_refresh);
    assert_eq!(
        rollup_column(&app, &token, "plant_15m", "power_w_count").await,
        [
            json!(["s1", 0, 1]),
            json!(["s1", 30, 1]),
            json!(["s2", 0, 2]),
            json!(["s2", 15, 1]),
            json!(["s2", 30, 1]),
        ]
    );
    assert_eq!(
        rollup_column(&app, &token, "plant_1h", "energy_wh_energy").await,
        [json!(["s1", 0, 40.0]), json!(["s2", 0, 40.0])]
    );

    // Writes after the delete are kept, even at a deleted time.
    app.write_lp(
        &token,
        &format!("plant,site_id=s1 power_w=7,energy_wh=1010 {}\n", JAN1 + 600),
    )
    .await;
    let mut expected = after_delete.clone();
    expected.insert(1, json!(["s1", 10]));
    assert_eq!(minutes(sql(&app, &token, raw).await), expected);

    // Compaction applies the deletes: no pending delete, the same answers.
    let info = call(&app, &token, "GET", "/api/v1/tables/plant", None).await;
    assert_eq!(info.json()["pending_deletes"], 1, "{}", info.text());
    persist(&app).await;
    let answer = call(&app, &token, "POST", "/api/v1/admin/compact", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let stats = answer.json();
    assert!(stats["files_in"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["rows_out"].as_u64().unwrap() < stats["rows_in"].as_u64().unwrap(),
        "{stats}"
    );
    let info = call(&app, &token, "GET", "/api/v1/tables/plant", None).await;
    assert_eq!(info.json()["pending_deletes"], 0, "{}", info.text());
    assert_eq!(info.json()["file_rows"], 7, "{}", info.text());
    assert_eq!(minutes(sql(&app, &token, raw).await), expected);

    // All of s1: its newest values leave the last-value cache too.
    let latest = "SELECT site_id FROM plant_latest ORDER BY site_id";
    assert_eq!(
        sql(&app, &token, latest).await,
        json!([{"site_id": "s1"}, {"site_id": "s2"}])
    );
    let answer = call(
        &app,
        &token,
        "POST",
        "/api/v1/delete",
        Some(json!({"table": "plant", "tags": {"site_id": "s1"}})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sql(&app, &token, latest).await, json!([{"site_id": "s2"}]));
    app.finish().await;
}

/// The last-value cache is read again after a delete, but only over the warm-up window
/// before the table's newest row: a series quiet for longer must keep its values unless
/// the delete named it (found in review: deleting nothing of s1 emptied s2).
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_keeps_the_last_values_of_series_it_did_not_name() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    const DAY_S: i64 = 86_400;
    let jan1 = JAN1;
    app.write_lp(
        &token,
        &format!(
            "plant,site_id=s2 power_w=2 {jan1}\nplant,site_id=s1 power_w=1 {}\nplant,site_id=s3 power_w=3 {}\n",
            jan1 + 3 * DAY_S,
            jan1 + 3 * DAY_S
        ),
    )
    .await;
    let latest = "SELECT site_id, power_w FROM plant_latest ORDER BY site_id";
    let all = json!([
        {"site_id": "s1", "power_w": 1.0},
        {"site_id": "s2", "power_w": 2.0},
        {"site_id": "s3", "power_w": 3.0}
    ]);
    assert_eq!(sql(&app, &token, latest).await, all);
    // A delete of s1 in 2020 deletes nothing; s2 is three days older than the newest
    // row, outside the one-day warm-up window.
    let answer = call(
        &app,
        &token,
        "POST",
        "/api/v1/delete",
        Some(json!({"table": "plant", "tags": {"site_id": "s1"}, "from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(sql(&app, &token, latest).await, all);
    // Deleting s3 for good removes it, and only it.
    let answer = call(
        &app,
        &token,
        "POST",
        "/api/v1/delete",
        Some(json!({"table": "plant", "tags": {"site_id": "s3"}})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        sql(&app, &token, latest).await,
        json!([{"site_id": "s1", "power_w": 1.0}, {"site_id": "s2", "power_w": 2.0}])
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_a_table_with_no_tags_and_unbounded_times() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    app.write_lp(&token, &format!("{}{}", readings("s1"), readings("s2")))
        .await;
    app.write_lp(&token, &format!("other,site_id=s1 v=1 {JAN1}\n"))
        .await;
    // Everything of plant before 00:15 (its rollups have none yet).
    let answer = call(
        &app,
        &token,
        "POST",
        "/api/v1/delete",
        Some(json!({"table": "plant", "to": "2026-01-01T00:15:00Z"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json()["tombstones"],
        json!([{"id": 1, "table": "plant", "tags": {}, "from": null, "to": "2026-01-01T00:15:00Z"}])
    );
    assert_eq!(
        sql(&app, &token, "SELECT count(*) AS n FROM plant").await,
        json!([{"n": 4}])
    );
    assert_eq!(
        sql(&app, &token, "SELECT count(*) AS n FROM other").await,
        json!([{"n": 1}])
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_refuses_bad_requests_naming_the_field() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    app.write_lp(&token, &readings("s1")).await;
    let delete = |body: Value| call(&app, &token, "POST", "/api/v1/delete", Some(body));
    for (body, expected) in [
        (json!({}), "table: name a table"),
        (json!({"table": "plnt"}), "table: no table named \"plnt\""),
        (
            json!({"table": "plant", "tags": {"power_w": "1"}}),
            "tags.power_w: column \"power_w\" of table \"plant\" is not a tag",
        ),
        (
            json!({"table": "plant", "tags": {"site": "s1"}}),
            "tags.site: table \"plant\" has no tag column \"site\"",
        ),
        (
            json!({"tags": {"site": "s1"}}),
            "tags: no table has all the tag columns site",
        ),
        (
            json!({"table": "plant", "from": "yesterday"}),
            "from: \"yesterday\" must be an RFC 3339 time",
        ),
        (
            json!({"table": "plant", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
            "to: must be after from",
        ),
        (json!({"table": "plant", "where": "x"}), "where"),
    ] {
        let answer = delete(body.clone()).await;
        let got = fields(&answer);
        assert!(
            got.iter().any(|f| f.starts_with(expected)),
            "{body}: {got:?}"
        );
    }
    // Nothing was deleted.
    assert_eq!(
        sql(&app, &token, "SELECT count(*) AS n FROM plant").await,
        json!([{"n": 4}])
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_on_demand_merges_small_files() {
    let app = TestApp::new().await;
    let token = admin(&app).await;
    for i in 0..5 {
        app.write_lp(
            &token,
            &format!("plant,site_id=s1 power_w={i} {}\n", JAN1 + i),
        )
        .await;
        persist(&app).await;
    }
    // One overwrite in a sixth file.
    app.write_lp(&token, &format!("plant,site_id=s1 power_w=9 {JAN1}\n"))
        .await;
    persist(&app).await;
    let files = || async {
        call(&app, &token, "GET", "/api/v1/tables/plant", None)
            .await
            .json()["files"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(files().await, 6);
    let values = "SELECT power_w FROM plant ORDER BY time";
    let expected = json!([
        {"power_w": 9.0}, {"power_w": 1.0}, {"power_w": 2.0}, {"power_w": 3.0}, {"power_w": 4.0}
    ]);
    assert_eq!(
        sql(&app, &token, values).await,
        expected,
        "before compaction"
    );
    let answer = call(&app, &token, "POST", "/api/v1/admin/compact", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let stats = answer.json();
    assert_eq!(
        (
            &stats["files_in"],
            &stats["files_out"],
            &stats["rows_in"],
            &stats["rows_out"]
        ),
        (&json!(6), &json!(1), &json!(6), &json!(5)),
        "{stats}"
    );
    assert_eq!(files().await, 1);
    assert_eq!(
        sql(&app, &token, values).await,
        expected,
        "the overwrite in the newest file must win after the merge"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_storage_endpoints_are_for_admins_only() {
    let app = TestApp::new().await;
    let admin = admin(&app).await;
    app.write_lp(&admin, &readings("s1")).await;
    let (_, support) = app.user(Role::Support, "support@example.com").await;
    for (method, uri, body) in [
        ("GET", "/api/v1/tables", None),
        ("GET", "/api/v1/tables/plant", None),
        (
            "PUT",
            "/api/v1/tables/plant/retention",
            Some(json!({"ttl": "1d"})),
        ),
        ("DELETE", "/api/v1/tables/plant/retention", None),
        ("POST", "/api/v1/delete", Some(json!({"table": "plant"}))),
        ("POST", "/api/v1/admin/compact", None),
    ] {
        let answer = call(&app, &support, method, uri, body).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            answer.text()
        );
    }
    assert_eq!(
        sql(&app, &admin, "SELECT count(*) AS n FROM plant").await,
        json!([{"n": 4}])
    );
    app.finish().await;
}

//! `GET /api/v1/latest` through the real router: values after writes, filters, customer
//! scoping (others' sites and devices answer like missing ones, a moved device shows
//! its new site only what it sent there), and the table checks.

use axum::http::StatusCode;
use crm::Role;
use serde_json::{Value, json};

use crate::testing::{Answer, TestApp};

/// GETs `/api/v1/latest?{query}` as `token`, expecting 200; returns the rows.
async fn latest(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let answer = get(app, token, query).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.text());
    let body = answer.json();
    assert_eq!(body["complete"], true, "{body}");
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {body}"))
        .clone()
}

async fn get(app: &TestApp, token: &str, query: &str) -> Answer {
    app.call("GET", &format!("/api/v1/latest?{query}"), Some(token), None)
        .await
}

/// `(table, device_id)` of each row, in answer order.
fn series(rows: &[Value]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["table"].as_str().unwrap().to_owned(),
                r["tags"]["device_id"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// 2026-01-01T00:00:00Z in ns.
const T: i64 = 1_767_225_600_000_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn latest_values_follow_writes_and_filters() {
    let app = TestApp::new().await;
    app.state.engine().latest().warmed().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (owner, _) = app.user(Role::Customer, "owner@example.com").await;
    let (_, site) = app.home(&owner, "ACC-1").await;
    app.device(&admin, "meter", "m1", site.id).await;
    app.write_lp_in(
        &admin,
        "ns",
        &format!(
            "sensor,device_id=m1 power=1,energy_wh=10i,quality=\"good\" {T}\n\
             sensor,device_id=m1 power=2 {}\n\
             sensor,device_id=m2 power=3,ok=true,count=4u {}\n\
             sensor,device_id=m1,phase=L1 power=0.5 {T}\n\
             weather temp=7 {T}\n",
            T + 1_250_000_000,
            T + 123_456_789,
        ),
    )
    .await;

    let rows = latest(&app, &admin, "").await;
    assert_eq!(
        series(&rows),
        pairs(&[
            ("sensor", "m1"),
            ("sensor", "m1"),
            ("sensor", "m2"),
            ("weather", "-")
        ])
    );
    assert_eq!(
        rows[0],
        json!({
            "table": "sensor",
            "time": "2026-01-01T00:00:01.250Z",
            "tags": {"device_id": "m1"},
            "values": {"power": 2.0, "energy_wh": 10, "quality": "good"},
        })
    );
    assert_eq!(rows[1]["tags"], json!({"device_id": "m1", "phase": "L1"}));
    assert_eq!(
        (&rows[2]["time"], &rows[2]["values"]),
        (
            &json!("2026-01-01T00:00:00.123456789Z"),
            &json!({"power": 3.0, "ok": true, "count": 4})
        )
    );
    assert_eq!(
        (&rows[3]["time"], &rows[3]["tags"], &rows[3]["values"]),
        (
            &json!("2026-01-01T00:00:00Z"),
            &json!({}),
            &json!({"temp": 7.0})
        )
    );

    // A newer write is there as soon as it is acknowledged.
    app.write_lp_in(
        &admin,
        "ns",
        &format!("sensor,device_id=m2 power=30 {}\n", T + 2_000_000_000),
    )
    .await;
    // Filters: a table, a device, a site (its registered devices only).
    let rows = latest(&app, &admin, "table=sensor&device_id=m2").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["values"]["power"], 30.0);
    assert_eq!(
        series(&latest(&app, &admin, "table=weather").await),
        pairs(&[("weather", "-")])
    );
    assert_eq!(
        series(&latest(&app, &admin, &format!("site_id={}", site.id)).await),
        pairs(&[("sensor", "m1"), ("sensor", "m1")])
    );
    assert_eq!(
        series(
            &latest(
                &app,
                &admin,
                &format!("site_id={}&device_id=m1&table=sensor", site.id)
            )
            .await
        ),
        pairs(&[("sensor", "m1"), ("sensor", "m1")])
    );
    // Staff read any device id, registered or not; one without values has no rows.
    assert!(latest(&app, &admin, "device_id=nothing").await.is_empty());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_see_only_their_devices_and_others_look_missing() {
    let app = TestApp::new().await;
    app.state.engine().latest().warmed().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice_user, alice) = app.user(Role::Customer, "alice@example.com").await;
    let (bob_user, bob) = app.user(Role::Customer, "bob@example.com").await;
    let (_, alice_site) = app.home(&alice_user, "ACC-A").await;
    let (_, alice_second) = app.home(&alice_user, "ACC-A2").await;
    let (_, bob_site) = app.home(&bob_user, "ACC-B").await;
    app.device(&admin, "meter", "a-meter", alice_site.id).await;
    app.device(&admin, "meter", "a-plug", alice_second.id).await;
    app.device(&admin, "meter", "b-meter", bob_site.id).await;
    app.write_lp_in(
        &admin,
        "ns",
        &format!(
            "meter,device_id=a-meter power=1 {T}\n\
             plug,device_id=a-plug power=2 {T}\n\
             meter,device_id=b-meter power=3 {T}\n\
             meter,device_id=ghost power=4 {T}\n\
             weather temp=7 {T}\n"
        ),
    )
    .await;

    // Everything of hers, over both sites and tables; nothing of Bob's, no ghost, no
    // table without devices.
    assert_eq!(
        series(&latest(&app, &alice, "").await),
        pairs(&[("meter", "a-meter"), ("plug", "a-plug")])
    );
    assert_eq!(
        series(&latest(&app, &alice, &format!("site_id={}", alice_second.id)).await),
        pairs(&[("plug", "a-plug")])
    );
    assert_eq!(
        series(&latest(&app, &alice, "device_id=a-meter").await),
        pairs(&[("meter", "a-meter")])
    );
    assert!(latest(&app, &alice, "table=weather").await.is_empty());
    assert_eq!(
        series(&latest(&app, &bob, "").await),
        pairs(&[("meter", "b-meter")])
    );

    // Bob's site answers like a site that does not exist, Bob's device (and a ghost)
    // like a device that does not exist.
    let theirs = get(&app, &alice, &format!("site_id={}", bob_site.id)).await;
    let none = get(&app, &alice, "site_id=999999").await;
    assert_eq!(
        (theirs.status, none.status),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        theirs.json()["error"]
            .as_str()
            .unwrap()
            .replace(&bob_site.id.to_string(), "N"),
        none.json()["error"]
            .as_str()
            .unwrap()
            .replace("999999", "N"),
    );
    for device in ["b-meter", "ghost", "never-heard-of"] {
        let answer = get(&app, &alice, &format!("device_id={device}")).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{device}");
        assert_eq!(
            answer.json(),
            json!({"error": format!("device \"{device}\" not found")}),
            "{device}"
        );
    }
    // Her own site with Bob's device.
    let answer = get(
        &app,
        &alice,
        &format!("site_id={}&device_id=b-meter", alice_site.id),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    app.finish().await;
}

/// A meter moves from Alice's site to Bob's: Bob sees only what it sent from its
/// arrival (column by column), Alice nothing of it any more.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_device_hides_its_previous_owners_values() {
    let app = TestApp::new().await;
    app.state.engine().latest().warmed().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice_user, alice) = app.user(Role::Customer, "alice@example.com").await;
    let (bob_user, bob) = app.user(Role::Customer, "bob@example.com").await;
    let (_, alice_site) = app.home(&alice_user, "ACC-A").await;
    let (_, bob_site) = app.home(&bob_user, "ACC-B").await;
    let mover = app.device(&admin, "meter", "mover", alice_site.id).await;
    app.write_lp_in(
        &admin,
        "ns",
        &format!("meter,device_id=mover power=1,energy_wh=100 {T}\n"),
    )
    .await;
    assert_eq!(latest(&app, &alice, "").await.len(), 1);

    let moved_ns = app
        .move_device(&admin, mover, "meter", "mover", bob_site.id)
        .await
        * 1_000_000;

    // Before its first reading at Bob's, the meter's newest values are Alice's.
    assert!(latest(&app, &bob, "").await.is_empty());
    assert!(latest(&app, &bob, "device_id=mover").await.is_empty());
    assert!(latest(&app, &alice, "").await.is_empty());
    let answer = get(&app, &alice, "device_id=mover").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());

    // Bob's first reading has power only: the energy register's value is Alice's.
    app.write_lp_in(
        &admin,
        "ns",
        &format!(
            "meter,device_id=mover power=10 {}\n",
            moved_ns + 1_000_000_000
        ),
    )
    .await;
    for query in [
        String::new(),
        "device_id=mover".to_owned(),
        format!("site_id={}", bob_site.id),
    ] {
        let rows = latest(&app, &bob, &query).await;
        assert_eq!(rows.len(), 1, "{query}");
        assert_eq!(
            rows[0]["values"],
            json!({"power": 10.0, "quality": "actual", "source": "http"}),
            "{query}"
        );
    }
    // Staff asking for the device see all of it; asking for Bob's site, what is his.
    let rows = latest(&app, &admin, "device_id=mover").await;
    assert_eq!(
        (&rows[0]["values"]["power"], &rows[0]["values"]["energy_wh"]),
        (&json!(10.0), &json!(100.0))
    );
    let rows = latest(&app, &admin, &format!("site_id={}", bob_site.id)).await;
    assert_eq!(
        rows[0]["values"],
        json!({"power": 10.0, "quality": "actual", "source": "http"})
    );
    assert!(latest(&app, &alice, "").await.is_empty());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_must_exist_and_have_last_values() {
    let app = TestApp::new().await;
    app.state.engine().latest().warmed().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    app.write_lp_in(
        &admin,
        "ns",
        &format!("meter_15m,device_id=m power_avg=1 {T}\nmeter,device_id=m power=1 {T}\n"),
    )
    .await;
    for table in ["nope", "meter_15m"] {
        let answer = get(&app, &admin, &format!("table={table}")).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.text()
        );
        let body = answer.json();
        assert_eq!(body["fields"][0]["field"], "table", "{body}");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains(table),
            "{body}"
        );
    }
    // Every table means every cached one: no rollups.
    assert_eq!(
        series(&latest(&app, &admin, "").await),
        pairs(&[("meter", "m")])
    );
    let answer = get(&app, &admin, "sql=1").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = get(&app, &admin, "site_id=x").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    app.finish().await;
}

/// The hand-written time format is chrono's `AutoSi` RFC 3339, for times with and
/// without fractions, before 1970, at both ends of what nanoseconds in an i64 reach.
#[test]
fn times_are_written_as_chrono_writes_them() {
    use chrono::{DateTime, SecondsFormat};
    let mut times = vec![
        0,
        1,
        999,
        1_000,
        1_000_000,
        1_500,
        T,
        T + 123_456_789,
        T + 250_000_000,
        T + 250_001_000,
        -1,
        -1_000_000_000,
        i64::MIN,
        i64::MAX,
    ];
    let mut x: i64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        times.push(x);
    }
    for t in times {
        let ours: String =
            serde_json::from_slice(&serde_json::to_vec(&super::Rfc3339(t)).unwrap()).unwrap();
        let chrono = DateTime::from_timestamp_nanos(t).to_rfc3339_opts(SecondsFormat::AutoSi, true);
        assert_eq!(ours, chrono, "{t}");
    }
}

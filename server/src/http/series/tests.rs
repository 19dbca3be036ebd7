//! The chart API through the real router, over real writes and real rollups: numbers
//! checked by hand, rollups against raw data in Europe/Berlin across a DST day,
//! customer scoping, a moved device, the energy balance, bad parameters, and the
//! automatic step.

use axum::http::StatusCode;
use bytesize::ByteSize;
use chrono::DateTime;
use crm::{CrmConfig, Role};
use query::QueryConfig;
use serde_json::{Value, json};

use super::Balance;
use crate::auth::AuthConfig;
use crate::testing::{Answer, TestApp};

/// `GET uri` as `token`, which must answer 200.
async fn get(app: &TestApp, token: &str, uri: &str) -> Value {
    let answer = app.call("GET", uri, Some(token), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
    answer.json()
}

/// The values of an answer's column.
fn numbers(body: &Value, key: &str) -> Vec<Option<f64>> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {body}"))
        .iter()
        .map(Value::as_f64)
        .collect()
}

/// Bucket starts as RFC 3339 (UTC), for readable failures.
fn times(body: &Value) -> Vec<String> {
    body["t"]
        .as_array()
        .unwrap_or_else(|| panic!("no t: {body}"))
        .iter()
        .map(|t| {
            DateTime::from_timestamp_millis(t.as_i64().expect("ms"))
                .expect("in range")
                .to_rfc3339()
        })
        .collect()
}

fn seconds(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .expect("rfc3339")
        .timestamp()
}

/// `text` for a query string (`+` of an offset is a space there).
fn q(text: &str) -> String {
    text.replace('+', "%2B")
}

/// Equal up to floating-point summation order.
fn assert_close(got: &[Option<f64>], want: &[Option<f64>], context: &str) {
    assert_eq!(got.len(), want.len(), "{context}: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = match (g, w) {
            (Some(g), Some(w)) => (g - w).abs() <= 1e-6 + 1e-9 * w.abs(),
            (None, None) => true,
            _ => false,
        };
        assert!(
            same,
            "{context}: bucket {i}: {g:?} vs {w:?}\n{got:?}\n{want:?}"
        );
    }
}

/// The fields a 422 names, in order.
fn fields(answer: &Answer) -> Vec<String> {
    answer
        .validation_errors()
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

/// Refreshes every stale rollup bucket, also those of readings written ahead of the
/// clock (the tests that move a device write around the registry's real time).
async fn refresh_rollups(app: &TestApp) {
    let engine = app.state.engine().clone();
    let later =
        chrono::Utc::now().timestamp_nanos_opt().expect("in range") + 7 * 86_400 * 1_000_000_000;
    let stats = tokio::task::spawn_blocking(move || engine.rollups().refresh_at(later))
        .await
        .expect("refresh task")
        .expect("rollups refresh");
    assert!(stats.complete, "{stats:?}");
    assert!(app.state.engine().rollups().stale().is_empty());
}

/// Two meters on a site, a phase row that is not the total, a counter reset: every
/// aggregate by hand, from the raw rows and from the rollups.
#[tokio::test(flavor = "multi_thread")]
async fn a_sites_series_combines_its_devices_total_series() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (_, site) = app.home(&alice, "ACC-A").await;
    app.device(&admin, "meter", "a", site.id).await;
    app.device(&admin, "meter", "b", site.id).await;
    let t = |minute: i64| seconds("2026-01-01T00:00:00Z") + minute * 60;
    let mut lines = String::new();
    for (device, minute, power, energy) in [
        ("a", 0, 100.0, 1000.0),
        ("a", 5, 200.0, 1010.0),
        ("a", 10, 300.0, 1020.0),
        // A reset: the step into it counts nothing, the next one counts again.
        ("a", 20, 400.0, 5.0),
        ("a", 25, 500.0, 15.0),
        ("b", 0, 10.0, 0.0),
        ("b", 20, 20.0, 100.0),
    ] {
        lines.push_str(&format!(
            "meter,device_id={device} power_w={power},energy_import_wh={energy} {}\n",
            t(minute)
        ));
    }
    // Phase L1 of meter a: not its total, never counted.
    lines.push_str(&format!(
        "meter,device_id=a,phase=L1 power_w=9999,energy_import_wh=99999 {}\n",
        t(5)
    ));
    app.write_lp(&admin, &lines).await;

    let uri = |column: &str, agg: &str, source: &str| {
        format!(
            "/api/v1/series?site_id={}&table=meter&column={column}&agg={agg}&step=15m&tz=UTC\
             &from=2026-01-01T00:00:00Z&to=2026-01-01T00:30:00Z&source={source}",
            site.id
        )
    };
    let expected = [
        ("power_w", "avg", [210.0, 470.0]),
        ("power_w", "min", [10.0, 20.0]),
        ("power_w", "max", [300.0, 500.0]),
        ("power_w", "sum", [610.0, 920.0]),
        ("power_w", "last", [310.0, 520.0]),
        // a: 10 + 10, then 0 (reset) + 10; b: no step before its first reading,
        // then 100 over 20 minutes.
        ("energy_import_wh", "energy", [20.0, 110.0]),
    ];
    for (refreshed, source, answered_by) in [
        (false, "raw", "meter"),
        // Not refreshed yet: the rollups are stale, the raw table answers.
        (false, "auto", "meter"),
        (true, "auto", "meter_15m"),
        (true, "raw", "meter"),
    ] {
        if refreshed {
            refresh_rollups(&app).await;
        }
        for (column, agg, want) in expected {
            let body = get(&app, &alice_token, &uri(column, agg, source)).await;
            let context = format!("{agg} of {column}, source={source}, refreshed={refreshed}");
            assert_eq!(
                numbers(&body, "v"),
                want.map(Some).to_vec(),
                "{context}: {body}"
            );
            assert_eq!(body["source"], answered_by, "{context}");
            assert_eq!(
                (&body["step"], &body["tz"]),
                (&json!("15m"), &json!("UTC")),
                "{context}"
            );
            assert_eq!(
                times(&body),
                ["2026-01-01T00:00:00+00:00", "2026-01-01T00:15:00+00:00"]
            );
        }
    }

    // The default aggregate: energy for a register, the mean otherwise.
    let default = |column: &str| {
        format!(
            "/api/v1/series?site_id={}&table=meter&column={column}&step=15m&tz=UTC\
             &from=2026-01-01T00:00:00Z&to=2026-01-01T00:30:00Z",
            site.id
        )
    };
    let body = get(&app, &alice_token, &default("energy_import_wh")).await;
    assert_eq!(numbers(&body, "v"), [Some(20.0), Some(110.0)]);
    let body = get(&app, &alice_token, &default("power_w")).await;
    assert_eq!(numbers(&body, "v"), [Some(210.0), Some(470.0)]);

    // One device of the site; buckets without readings are null.
    let body = get(
        &app,
        &alice_token,
        "/api/v1/series?device_id=b&table=meter&column=power_w&agg=max&step=5m&tz=UTC\
         &from=2026-01-01T00:00:00Z&to=2026-01-01T00:25:00Z",
    )
    .await;
    assert_eq!(
        numbers(&body, "v"),
        [Some(10.0), None, None, None, Some(20.0)]
    );
    assert_eq!(
        body["source"], "meter",
        "5 minutes are finer than any rollup"
    );

    // A reading arriving after the refresh: its quarter hour comes from the raw rows
    // until the next refresh, the one before still from the rollup.
    app.write_lp(
        &admin,
        &format!("meter,device_id=a power_w=600 {}\n", t(29)),
    )
    .await;
    let body = get(&app, &alice_token, &uri("power_w", "avg", "auto")).await;
    assert_eq!(numbers(&body, "v"), [Some(210.0), Some(520.0)], "{body}");
    assert_eq!(body["source"], "meter_15m");
    app.finish().await;
}

/// Two meters every 10 minutes over five weeks in October 2026 (Berlin leaves summer
/// time on the 25th), with a counter reset, a rollover, a gap longer than an hour and
/// phase rows: every aggregate at 15m, 1h, 1d and 1mo is the same from the rollups as
/// from the raw rows. With `query.rollup_timezone` = UTC the Berlin days come from the
/// hourly rollups, with Europe/Berlin from the daily ones.
#[tokio::test(flavor = "multi_thread")]
async fn rollups_and_raw_rows_agree_in_berlin_across_dst() {
    for (rollup_tz, daily) in [("UTC", "meter_1h"), ("Europe/Berlin", "meter_1d")] {
        let query = QueryConfig {
            rollup_timezone: rollup_tz.to_owned(),
            ..QueryConfig::default()
        };
        let app = TestApp::with_query(
            AuthConfig::default(),
            CrmConfig::default(),
            ByteSize::mib(1),
            query,
        )
        .await;
        let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
        let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
        let (_, site) = app.home(&alice, "ACC-A").await;
        app.device(&admin, "meter", "m1", site.id).await;
        app.device(&admin, "meter", "m2", site.id).await;
        write_october(&app, &admin).await;
        refresh_rollups(&app).await;

        let cases = [
            // (step, from, to, buckets, source)
            (
                "15m",
                "2026-10-25T00:00:00+02:00",
                "2026-10-26T00:00:00+01:00",
                100,
                "meter_15m",
            ),
            (
                "1h",
                "2026-10-25T00:00:00+02:00",
                "2026-10-26T00:00:00+01:00",
                25,
                "meter_1h",
            ),
            (
                "1d",
                "2026-10-20T00:00:00+02:00",
                "2026-10-30T00:00:00+01:00",
                10,
                daily,
            ),
            (
                "1mo",
                "2026-10-01T00:00:00+02:00",
                "2026-12-01T00:00:00+01:00",
                2,
                daily,
            ),
        ];
        for (step, from, to, buckets, source) in cases {
            for (column, agg) in [
                ("power_w", "avg"),
                ("power_w", "min"),
                ("power_w", "max"),
                ("power_w", "sum"),
                ("power_w", "last"),
                ("energy_import_wh", "energy"),
            ] {
                let uri = |source: &str| {
                    format!(
                        "/api/v1/series?site_id={}&table=meter&column={column}&agg={agg}\
                         &step={step}&from={}&to={}&source={source}",
                        site.id,
                        q(from),
                        q(to)
                    )
                };
                let context = format!("{agg} of {column} per {step}, rollups in {rollup_tz}");
                let rolled = get(&app, &alice_token, &uri("auto")).await;
                let raw = get(&app, &alice_token, &uri("raw")).await;
                assert_eq!(rolled["source"], source, "{context}");
                assert_eq!(raw["source"], "meter", "{context}");
                assert_eq!(rolled["tz"], "Europe/Berlin", "{context}: the site's zone");
                assert_eq!(rolled["t"], raw["t"], "{context}");
                assert_eq!(times(&rolled).len(), buckets, "{context}");
                let values = numbers(&raw, "v");
                assert!(
                    values.iter().any(Option::is_some),
                    "{context}: no data to compare: {values:?}"
                );
                assert_close(&numbers(&rolled, "v"), &values, &context);
            }
        }
        // The repeated hour is four quarter-hours under CEST and four under CET.
        let body = get(
            &app,
            &alice_token,
            &format!(
                "/api/v1/series?site_id={}&table=meter&column=power_w&step=15m\
                 &from={}&to={}",
                site.id,
                q("2026-10-25T02:00:00+02:00"),
                q("2026-10-25T03:00:00+01:00")
            ),
        )
        .await;
        assert_eq!(times(&body).len(), 8, "{body}");
        app.finish().await;
    }
}

/// Readings of two meters every 10 minutes from 2026-09-30T20:00Z for 33 days, in
/// requests the body limit takes. Reading 3468 is at local midnight of the DST day
/// (2026-10-24T22:00Z); the reset, the gap and the rollover are on that day.
async fn write_october(app: &TestApp, admin: &str) {
    let start = seconds("2026-09-30T20:00:00Z");
    let mut lines = Vec::new();
    let mut m1_energy = 5_000.0;
    for i in 0..(33 * 144) {
        let time = start + i * 600;
        // A gap of 100 minutes: the step across it is not counted.
        if (3500..3510).contains(&i) {
            continue;
        }
        m1_energy += ((i * 7) % 13) as f64;
        if i == 3480 {
            m1_energy = 0.0;
        }
        let m1_power = ((i * 37) % 101) as f64 * 10.0 - 200.0;
        // A 6-digit register rolling over at 1 MWh, at reading 3490.
        let m2_energy = (982_550.0 + 5.0 * i as f64) % 1_000_000.0;
        let m2_power = ((i * 53) % 89) as f64 * 7.5;
        lines.push(format!(
            "meter,device_id=m1 power_w={m1_power},energy_import_wh={m1_energy} {time}"
        ));
        lines.push(format!(
            "meter,device_id=m2 power_w={m2_power},energy_import_wh={m2_energy} {time}"
        ));
        if i % 6 == 0 {
            lines.push(format!(
                "meter,device_id=m1,phase=L1 power_w=123456,energy_import_wh={} {time}",
                i * 1000
            ));
        }
    }
    for chunk in lines.chunks(4000) {
        app.write_lp(admin, &(chunk.join("\n") + "\n")).await;
    }
}

/// Another customer's site or device answers exactly like one that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn customers_see_only_their_own_sites_and_devices() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (bob, bob_token) = app.user(Role::Customer, "bob@example.com").await;
    let (_, alice_site) = app.home(&alice, "ACC-A").await;
    let (_, bob_site) = app.home(&bob, "ACC-B").await;
    app.device(&admin, "meter", "a-meter", alice_site.id).await;
    app.device(&admin, "meter", "b-meter", bob_site.id).await;
    app.write_lp(
        &admin,
        &format!(
            "meter,device_id=b-meter power_w=5 {0}\nmeter,device_id=ghost power_w=7 {0}\n",
            seconds("2026-01-01T00:00:00Z")
        ),
    )
    .await;
    let window =
        "table=meter&column=power_w&step=1h&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z";
    let call = |token: &str, target: String| {
        let uri = format!("/api/v1/series?{target}&{window}");
        let token = token.to_owned();
        let app = &app;
        async move { app.call("GET", &uri, Some(&token), None).await }
    };

    for path in ["series", "energy"] {
        let uri = |site: i64| {
            format!(
                "/api/v1/{path}?site_id={site}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
            )
        };
        let uri = |site| {
            if path == "series" {
                format!("{}&table=meter&column=power_w", uri(site))
            } else {
                uri(site)
            }
        };
        let others = app
            .call("GET", &uri(bob_site.id), Some(&alice_token), None)
            .await;
        let nothing = app
            .call("GET", &uri(999_999), Some(&alice_token), None)
            .await;
        assert_eq!(
            others.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            others.text()
        );
        assert_eq!(nothing.status, StatusCode::NOT_FOUND);
        assert_eq!(
            others.text().replace(&bob_site.id.to_string(), "ID"),
            nothing.text().replace("999999", "ID"),
            "{path}"
        );
        let own = app
            .call("GET", &uri(bob_site.id), Some(&bob_token), None)
            .await;
        assert_eq!(own.status, StatusCode::OK, "{path}: {}", own.text());
    }

    // Bob's meter, an unregistered device and a made-up one: all alike for Alice.
    let mut bodies = Vec::new();
    for id in ["b-meter", "ghost", "nothing"] {
        let answer = call(&alice_token, format!("device_id={id}")).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{id}: {}",
            answer.text()
        );
        bodies.push(answer.text().replace(id, "ID"));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    let answer = call(&bob_token, "device_id=b-meter".to_owned()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(numbers(&answer.json(), "v"), [Some(5.0)]);
    assert_eq!(
        answer.json()["tz"],
        "Europe/Berlin",
        "the device's site's zone"
    );

    // Staff may chart any device id, registered or not (UTC without a site).
    let answer = call(&admin, "device_id=ghost".to_owned()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        (numbers(&answer.json(), "v"), answer.json()["tz"].clone()),
        (vec![Some(7.0)], json!("UTC"))
    );
    let answer = call(&admin, format!("site_id={}", alice_site.id)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    app.finish().await;
}

/// A meter moving from Alice's site to Bob's: Bob's charts show it from its arrival
/// (the rollups where they hold only Bob's readings, the raw rows before: the same
/// numbers), Alice's not at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_device_counts_for_its_new_site_from_its_arrival() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (bob, bob_token) = app.user(Role::Customer, "bob@example.com").await;
    let (_, alice_site) = app.home(&alice, "ACC-A").await;
    let (_, bob_site) = app.home(&bob, "ACC-B").await;
    let mover = app.device(&admin, "meter", "mover", alice_site.id).await;
    let moved_ms = app
        .move_device(&admin, mover, "meter", "mover", bob_site.id)
        .await;
    let moved_s = moved_ms.div_euclid(1000);
    // The quarter hour of the move, and the ones before and after it.
    let quarter = 900;
    let first = moved_s.div_euclid(quarter) * quarter - quarter;
    // Readings every minute: Alice's power 1 before the move, Bob's 100 after it.
    let mut lines = String::new();
    for time in (first..first + 3 * quarter).step_by(60) {
        let power = if time * 1000 < moved_ms { 1 } else { 100 };
        lines.push_str(&format!("meter,device_id=mover power_w={power} {time}\n"));
    }
    app.write_lp(&admin, &lines).await;
    let at = |s: i64| {
        DateTime::from_timestamp(s, 0)
            .expect("in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let uri = |target: String, source: &str| {
        format!(
            "/api/v1/series?{target}&table=meter&column=power_w&step=15m&tz=UTC&from={}&to={}&source={source}",
            at(first),
            at(first + 3 * quarter)
        )
    };
    let bob_site_uri = |source| uri(format!("site_id={}", bob_site.id), source);
    let raw = get(&app, &bob_token, &bob_site_uri("raw")).await;
    // The move's quarter holds Bob's readings from the first whole minute after it
    // (none if the move was in its last minute).
    let next_minute = (moved_ms + 59_999).div_euclid(60_000) * 60;
    let from_raw = (next_minute < first + 2 * quarter).then_some(100.0);
    assert_eq!(numbers(&raw, "v"), [None, from_raw, Some(100.0)], "{raw}");
    let body = get(&app, &bob_token, &uri("device_id=mover".to_owned(), "raw")).await;
    assert_eq!(body["v"], raw["v"]);

    refresh_rollups(&app).await;
    let rolled = get(&app, &bob_token, &bob_site_uri("auto")).await;
    assert_eq!(rolled["source"], "meter_15m");
    assert_eq!(
        rolled["v"], raw["v"],
        "no bucket mixes Alice's readings with Bob's: {rolled}"
    );
    // A late reading of Bob's at the end of the move's quarter: that quarter is read
    // from the raw rows now, still only from the arrival.
    let late = first + 2 * quarter - 1;
    if late * 1000 >= moved_ms {
        app.write_lp(
            &admin,
            &format!("meter,device_id=mover power_w=100 {late}\n"),
        )
        .await;
        let mixed = get(&app, &bob_token, &bob_site_uri("auto")).await;
        // The quarter before the arrival holds none of the mover's rows, the later
        // ones are stale: no rollup answers for it.
        assert_eq!(mixed["source"], "meter", "{mixed}");
        assert_eq!(
            numbers(&mixed, "v"),
            [None, Some(100.0), Some(100.0)],
            "{mixed}"
        );
    }

    // Alice: the meter is gone from her site, and its id looks missing.
    let body = get(
        &app,
        &alice_token,
        &uri(format!("site_id={}", alice_site.id), "auto"),
    )
    .await;
    assert_eq!(numbers(&body, "v"), [None, None, None]);
    let answer = app
        .call(
            "GET",
            &uri("device_id=mover".to_owned(), "raw"),
            Some(&alice_token),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    // Staff see the device's whole history.
    let body = get(&app, &admin, &uri("device_id=mover".to_owned(), "raw")).await;
    assert_eq!(numbers(&body, "v")[0], Some(1.0));
    app.finish().await;
}

/// A meter moving from Alice's site to Bob's, read by Bob over windows that start off
/// a bucket boundary after the move (the chart still reads whole buckets, and raw
/// energy an hour before them) and before it, per 15 minutes, hour and day, from the
/// raw rows and the rollups: no bucket shows Alice's readings or an energy step from
/// her last reading, and rollups and raw rows agree.
///
/// Alice's register climbs 1000 Wh a minute, Bob's 1 Wh; Bob's first reading comes 5
/// minutes into the quarter after the move, 5000 Wh above Alice's last one.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_devices_previous_owner_never_shows() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, _) = app.user(Role::Customer, "alice@example.com").await;
    let (bob, bob_token) = app.user(Role::Customer, "bob@example.com").await;
    let (_, alice_site) = app.home(&alice, "ACC-A").await;
    let (_, bob_site) = app.home(&bob, "ACC-B").await;
    let mover = app.device(&admin, "meter", "mover", alice_site.id).await;
    let moved_ms = app
        .move_device(&admin, mover, "meter", "mover", bob_site.id)
        .await;
    let quarter = 900;
    // The quarter after the one of the move.
    let next_quarter = moved_ms.div_euclid(1000 * quarter) * quarter + quarter;
    let mut readings = Vec::new();
    let mut energy = 50_000.0;
    let mut time = moved_ms.div_euclid(60_000) * 60 - 3600;
    while time * 1000 < moved_ms {
        readings.push((time, 1.0, energy));
        energy += 1000.0;
        time += 60;
    }
    energy += 5000.0;
    let bob_first = next_quarter + 300;
    for time in (bob_first..bob_first + 3600).step_by(60) {
        readings.push((time, 100.0, energy));
        energy += 1.0;
    }
    let lines: String = readings
        .iter()
        .map(|(time, power, energy)| {
            format!("meter,device_id=mover power_w={power},energy_import_wh={energy} {time}\n")
        })
        .collect();
    app.write_lp(&admin, &lines).await;
    let bobs: Vec<(i64, f64, f64)> = readings
        .iter()
        .copied()
        .filter(|(time, _, _)| time * 1000 >= moved_ms)
        .collect();
    assert!(bobs.len() == 60 && bobs[0].0 == bob_first);

    let at = |s: i64| {
        DateTime::from_timestamp(s, 0)
            .expect("in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // Off a boundary and after the move (its arrival is before `from`); and before it.
    let after = moved_ms.div_euclid(1000) + 1;
    let windows = [(after, bob_first + 3600), (after - 7200, bob_first + 3600)];
    // What Bob's meter gives per bucket (`start` of each bucket as it answers): its
    // smallest power, and its steps, each in the bucket of its later reading.
    let expected = |body: &Value, agg: &str| -> Vec<Option<f64>> {
        let starts: Vec<i64> = body["t"]
            .as_array()
            .expect("t")
            .iter()
            .map(|t| t.as_i64().expect("ms") / 1000)
            .collect();
        let bucket = |time: i64| starts.iter().rposition(|&s| s <= time);
        let mut values = vec![None; starts.len()];
        for (i, &(time, power, energy)) in bobs.iter().enumerate() {
            let Some(b) = bucket(time) else { continue };
            let value: &mut Option<f64> = &mut values[b];
            if agg == "min" {
                *value = Some(value.map_or(power, |v: f64| v.min(power)));
            } else if i > 0 {
                *value = Some(value.unwrap_or(0.0) + energy - bobs[i - 1].2);
            }
        }
        values
    };
    for refreshed in [false, true] {
        if refreshed {
            refresh_rollups(&app).await;
        }
        for (from, to) in windows {
            for step in ["15m", "1h", "1d"] {
                // The energy balance reads the same way: Bob's import only.
                for source in ["raw", "auto"] {
                    let body = get(
                        &app,
                        &bob_token,
                        &format!(
                            "/api/v1/energy?site_id={}&step={step}&tz=UTC&from={}&to={}\
                             &source={source}",
                            bob_site.id,
                            at(from),
                            at(to)
                        ),
                    )
                    .await;
                    let want: Vec<Option<f64>> = expected(&body, "energy")
                        .into_iter()
                        .map(|v| Some(v.unwrap_or(0.0)))
                        .collect();
                    assert_eq!(
                        numbers(&body, "grid_import_wh"),
                        want,
                        "energy per {step} from {}, source={source}, refreshed={refreshed}: {body}",
                        at(from)
                    );
                }
                for (column, agg) in [("power_w", "min"), ("energy_import_wh", "energy")] {
                    let uri = |source: &str| {
                        format!(
                            "/api/v1/series?site_id={}&table=meter&column={column}&agg={agg}\
                             &step={step}&tz=UTC&from={}&to={}&source={source}",
                            bob_site.id,
                            at(from),
                            at(to)
                        )
                    };
                    let raw = get(&app, &bob_token, &uri("raw")).await;
                    let auto = get(&app, &bob_token, &uri("auto")).await;
                    let context = format!(
                        "{agg} of {column} per {step} from {} (moved {}), refreshed={refreshed}",
                        at(from),
                        moved_ms
                    );
                    let want = expected(&raw, agg);
                    assert!(want.iter().any(Option::is_some), "{context}: {raw}");
                    assert_eq!(numbers(&raw, "v"), want, "{context}: {raw}");
                    assert_eq!(auto["t"], raw["t"], "{context}");
                    assert_eq!(numbers(&auto, "v"), want, "{context}: {auto}");
                    // A rollup answers the buckets that start after the arrival (for
                    // energy: an hour after it) and the raw rows those before.
                    let clean_ms = moved_ms + if agg == "energy" { 3_600_000 } else { 0 };
                    let rolled = raw["t"]
                        .as_array()
                        .expect("t")
                        .iter()
                        .any(|t| t.as_i64().expect("ms") >= clean_ms);
                    if refreshed {
                        let source = if rolled {
                            format!("meter_{step}")
                        } else {
                            "meter".to_owned()
                        };
                        assert_eq!(auto["source"], source, "{context}");
                    }
                }
            }
        }
    }
    app.finish().await;
}

/// NaN and infinities (which line protocol refuses, but other writers may store) are
/// not readings, and one device's series with and without a `site_id` tag are two
/// series, each with its own energy steps: the raw rows give the rollups' numbers.
#[tokio::test(flavor = "multi_thread")]
async fn raw_reads_skip_non_finite_values_and_step_within_each_series() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (_, site) = app.home(&alice, "ACC-A").await;
    app.device(&admin, "meter", "a", site.id).await;
    let start = seconds("2026-01-01T00:00:00Z");
    let mut lines = String::new();
    for i in 0..120_i64 {
        let time = start + i * 60;
        let n = i as f64;
        // Alternate minutes: the gateway's series (with the site tag) and the
        // device's own, with registers far apart.
        if i % 2 == 0 {
            lines.push_str(&format!(
                "meter,device_id=a,site_id={} power_w={},energy_import_wh={} {time}\n",
                site.id,
                10.0 + n,
                500_000.0 + 7.0 * n
            ));
        } else {
            lines.push_str(&format!(
                "meter,device_id=a power_w={},energy_import_wh={} {time}\n",
                1000.0 - n,
                1000.0 + 3.0 * n
            ));
        }
    }
    app.write_lp(&admin, &lines).await;
    // Non-finite values beside them, in the device's own series.
    let store = app.state.store();
    let odd = [
        (5, f64::NAN),
        (17, f64::INFINITY),
        (43, f64::NEG_INFINITY),
        (77, f64::NAN),
    ];
    let parsed = odd
        .iter()
        .enumerate()
        .map(|(i, &(second, value))| storage::ParsedLine {
            line: i + 1,
            table: "meter".to_owned(),
            row: storage::Row {
                time: (start + second) * 1_000_000_000,
                tags: vec![("device_id".to_owned(), "a".to_owned())],
                fields: vec![
                    (
                        "energy_import_wh".to_owned(),
                        storage::FieldValue::F64(value),
                    ),
                    ("power_w".to_owned(), storage::FieldValue::F64(value)),
                ],
            },
        })
        .collect();
    let (batch, errors) = store.validate(parsed);
    assert!(errors.is_empty(), "{errors:?}");
    store
        .submit(batch, true)
        .expect("submit")
        .wait()
        .await
        .expect("written");
    refresh_rollups(&app).await;
    for step in ["15m", "1h"] {
        for (column, agg) in [
            ("power_w", "avg"),
            ("power_w", "min"),
            ("power_w", "max"),
            ("power_w", "sum"),
            // Not `last`: a rollup row has no time of its last reading, so which of a
            // device's two series read last in a bucket is not known from the rollups.
            ("energy_import_wh", "energy"),
        ] {
            let uri = |source: &str| {
                format!(
                    "/api/v1/series?site_id={}&table=meter&column={column}&agg={agg}&step={step}\
                     &tz=UTC&from=2026-01-01T00:00:00Z&to=2026-01-01T02:00:00Z&source={source}",
                    site.id
                )
            };
            let context = format!("{agg} of {column} per {step}");
            let rolled = get(&app, &alice_token, &uri("auto")).await;
            let raw = get(&app, &alice_token, &uri("raw")).await;
            assert_eq!(rolled["source"], format!("meter_{step}"), "{context}");
            let values = numbers(&raw, "v");
            assert!(values.iter().all(Option::is_some), "{context}: {raw}");
            assert_close(&numbers(&rolled, "v"), &values, &context);
        }
    }
    // By hand, the first quarter: the tagged series read at minutes 0, 2, ..., 14 (7
    // steps of 14 Wh), the other at minutes 1, 3, ..., 13 (6 steps of 6 Wh).
    let body = get(
        &app,
        &alice_token,
        &format!(
            "/api/v1/series?site_id={}&table=meter&column=energy_import_wh&step=15m&tz=UTC\
             &from=2026-01-01T00:00:00Z&to=2026-01-01T00:15:00Z&source=raw",
            site.id
        ),
    )
    .await;
    assert_eq!(
        numbers(&body, "v"),
        [Some(7.0 * 14.0 + 6.0 * 6.0)],
        "{body}"
    );
    app.finish().await;
}

/// A Berlin site with a meter, an inverter (whose register resets once) and a battery,
/// readings every 30 minutes for two days; and a site with only a meter.
#[tokio::test(flavor = "multi_thread")]
async fn energy_balances_grid_solar_and_battery_per_day() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (carol, carol_token) = app.user(Role::Customer, "carol@example.com").await;
    let (_, site) = app.home(&carol, "ACC-C").await;
    let (_, plain) = app.home(&carol, "ACC-C2").await;
    app.device(&admin, "meter", "c-meter", site.id).await;
    app.device(&admin, "inverter", "c-pv", site.id).await;
    app.device(&admin, "battery", "c-bat", site.id).await;
    app.device(&admin, "meter", "p-meter", plain.id).await;
    let start = seconds("2026-03-10T00:00:00+01:00");
    let mut lines = String::new();
    let mut production = 50_000.0;
    for i in 0..96_i64 {
        let time = start + i * 1800;
        let n = i as f64;
        production += 6.0;
        if i == 60 {
            // Inverter replaced: the step into this reading counts 0.
            production = 0.0;
        }
        lines.push_str(&format!(
            "meter,device_id=c-meter energy_import_wh={},energy_export_wh={} {time}\n\
             inverter,device_id=c-pv energy_wh={production} {time}\n\
             battery,device_id=c-bat energy_charged_wh={},energy_discharged_wh={} {time}\n\
             meter,device_id=p-meter energy_import_wh={},energy_export_wh=0 {time}\n",
            1000.0 + 10.0 * n,
            2000.0 + 4.0 * n,
            300.0 + 3.0 * n,
            400.0 + 2.0 * n,
            7.0 * n,
        ));
    }
    app.write_lp(&admin, &lines).await;
    let uri = |site_id: i64, source: &str| {
        format!(
            "/api/v1/energy?site_id={site_id}&from={}&to={}&source={source}",
            q("2026-03-10T00:00:00+01:00"),
            q("2026-03-12T00:00:00+01:00")
        )
    };
    // Day 1: 47 steps (the first reading has none before it); day 2: 48 steps, one of
    // the inverter's counting 0.
    let home = |import: f64, export: f64, production: f64, charge: f64, discharge: f64| {
        import + production + discharge - export - charge
    };
    let (home1, home2) = (
        home(470.0, 188.0, 282.0, 141.0, 94.0),
        home(480.0, 192.0, 282.0, 144.0, 96.0),
    );
    assert_eq!((home1, home2), (517.0, 522.0));
    for (refreshed, source) in [(false, "raw"), (true, "auto"), (true, "raw")] {
        if refreshed {
            refresh_rollups(&app).await;
        }
        let body = get(&app, &carol_token, &uri(site.id, source)).await;
        let context = format!("source={source}, refreshed={refreshed}: {body}");
        assert_eq!(
            times(&body),
            ["2026-03-09T23:00:00+00:00", "2026-03-10T23:00:00+00:00"],
            "{context}"
        );
        for (key, want) in [
            ("grid_import_wh", [470.0, 480.0]),
            ("grid_export_wh", [188.0, 192.0]),
            ("production_wh", [282.0, 282.0]),
            ("battery_charge_wh", [141.0, 144.0]),
            ("battery_discharge_wh", [94.0, 96.0]),
            ("home_consumption_wh", [home1, home2]),
            ("self_consumption_wh", [94.0, 90.0]),
        ] {
            assert_close(
                &numbers(&body, key),
                &want.map(Some),
                &format!("{key}, {context}"),
            );
        }
        assert_close(
            &numbers(&body, "self_sufficiency"),
            &[Some(1.0 - 470.0 / home1), Some(1.0 - 480.0 / home2)],
            &context,
        );
        assert_eq!(
            (&body["step"], &body["tz"]),
            (&json!("1d"), &json!("Europe/Berlin"))
        );
        let expected_source = if source == "raw" { "meter" } else { "meter_1h" };
        assert_eq!(
            body["sources"]["grid_import_wh"], expected_source,
            "{context}"
        );
        assert_eq!(
            body["sources"]["production_wh"],
            expected_source.replace("meter", "inverter")
        );

        // Only a meter: no solar, no battery (null), the home uses what it imports.
        let body = get(&app, &carol_token, &uri(plain.id, source)).await;
        assert_eq!(numbers(&body, "production_wh"), [None, None], "{body}");
        assert_eq!(numbers(&body, "battery_charge_wh"), [None, None]);
        assert_eq!(numbers(&body, "grid_import_wh"), [Some(329.0), Some(336.0)]);
        assert_eq!(numbers(&body, "grid_export_wh"), [Some(0.0), Some(0.0)]);
        assert_eq!(
            numbers(&body, "home_consumption_wh"),
            [Some(329.0), Some(336.0)]
        );
        assert_eq!(numbers(&body, "self_sufficiency"), [Some(0.0), Some(0.0)]);
        assert_eq!(
            body["sources"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["grid_export_wh", "grid_import_wh"]
        );
    }

    // Months: March holds both days.
    let body = get(
        &app,
        &carol_token,
        &format!(
            "/api/v1/energy?site_id={}&step=1mo&from={}&to={}",
            site.id,
            q("2026-03-01T00:00:00+01:00"),
            q("2026-04-01T00:00:00+02:00")
        ),
    )
    .await;
    assert_eq!(numbers(&body, "grid_import_wh"), [Some(950.0)], "{body}");
    assert_eq!(numbers(&body, "home_consumption_wh"), [Some(home1 + home2)]);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_are_named() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (_, site) = app.home(&alice, "ACC-A").await;
    app.device(&admin, "meter", "a", site.id).await;
    app.write_lp(
        &admin,
        &format!(
            "meter,device_id=a power_w=1,quality=\"actual\" {0}\nweather temp=3 {0}\n",
            seconds("2026-01-01T00:00:00Z")
        ),
    )
    .await;
    refresh_rollups(&app).await;
    let base = format!("/api/v1/series?site_id={}", site.id);
    let window = "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{base}&table=nope&column=power_w&{window}"),
            vec!["table"],
        ),
        (
            format!("{base}&table=weather&column=temp&{window}"),
            vec!["table"],
        ),
        (
            format!("{base}&table=meter_15m&column=power_w_avg&{window}"),
            vec!["table"],
        ),
        (
            format!("{base}&table=meter&column=nope&{window}"),
            vec!["column"],
        ),
        (
            format!("{base}&table=meter&column=quality&{window}"),
            vec!["column"],
        ),
        (
            format!("{base}&table=meter&column=device_id&{window}"),
            vec!["column"],
        ),
        (
            format!("{base}&table=meter&column=power_w&agg=median&{window}"),
            vec!["agg"],
        ),
        (
            format!("{base}&table=meter&column=power_w&agg=energy&{window}"),
            vec!["agg"],
        ),
        (
            format!("{base}&table=meter&column=power_w&from=yesterday"),
            vec!["from"],
        ),
        (
            format!(
                "{base}&table=meter&column=power_w&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"
            ),
            vec!["to"],
        ),
        (
            format!("{base}&table=meter&column=power_w&from=2999-01-01T00:00:00Z"),
            vec!["from"],
        ),
        (
            format!(
                "{base}&table=meter&column=power_w&from=1500-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"
            ),
            vec!["from"],
        ),
        (
            format!("{base}&table=meter&column=power_w&to=2300-01-01T00:00:00Z"),
            vec!["to"],
        ),
        (
            format!("{base}&table=meter&column=power_w&step=7x&{window}"),
            vec!["step"],
        ),
        (
            format!("{base}&table=meter&column=power_w&step=0m&{window}"),
            vec!["step"],
        ),
        (
            format!(
                "{base}&table=meter&column=power_w&step=1s\
                 &from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"
            ),
            vec!["step"],
        ),
        (
            format!("{base}&table=meter&column=power_w&tz=Mars/Base&{window}"),
            vec!["tz"],
        ),
        (
            format!("{base}&table=meter&column=power_w&source=cache&{window}"),
            vec!["source"],
        ),
        (
            format!("{base}&table=nope&column=x&agg=mean&tz=Nowhere&step=x&{window}"),
            vec!["table", "agg", "tz", "step"],
        ),
        (
            format!("{base}&device_id=a&table=meter&column=power_w&{window}"),
            vec!["site_id", "device_id"],
        ),
        (
            format!("/api/v1/series?table=meter&column=power_w&{window}"),
            vec!["site_id"],
        ),
        (
            format!("/api/v1/energy?site_id={}&step=fortnight&{window}", site.id),
            vec!["step"],
        ),
        (
            format!(
                "/api/v1/energy?site_id={}&tz=CEST&source=x&{window}",
                site.id
            ),
            vec!["tz", "source"],
        ),
    ];
    for (uri, expected) in cases {
        let answer = app.call("GET", &uri, Some(&alice_token), None).await;
        assert_eq!(fields(&answer), expected, "{uri}");
    }
    // A step of a million buckets is refused, and says so.
    let answer = app
        .call(
            "GET",
            &format!(
                "{base}&table=meter&column=power_w&step=1s\
                 &from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z"
            ),
            Some(&alice_token),
            None,
        )
        .await;
    assert!(
        answer.text().contains("100000 buckets"),
        "{}",
        answer.text()
    );
    // Unknown, malformed and missing parameters: 400 naming them.
    for (uri, name) in [
        (format!("{base}&table=meter&column=power_w&sql=1"), "sql"),
        (format!("{base}&column=power_w"), "table"),
        (
            "/api/v1/series?site_id=seven&table=meter&column=power_w".to_owned(),
            "",
        ),
        (
            "/api/v1/energy?from=2026-01-01T00:00:00Z".to_owned(),
            "site_id",
        ),
    ] {
        let answer = app.call("GET", &uri, Some(&alice_token), None).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            answer.text()
        );
        assert!(answer.text().contains(name), "{uri}: {}", answer.text());
    }
    app.finish().await;
}

/// `step=auto` over windows from an hour to ten years; the Berlin DST days give 1380
/// and 1500 minutes, both within the 1500 a chart gets at most.
#[tokio::test(flavor = "multi_thread")]
async fn auto_steps_give_at_most_1500_points() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (_, site) = app.home(&alice, "ACC-A").await;
    app.device(&admin, "meter", "a", site.id).await;
    app.write_lp(
        &admin,
        &format!(
            "meter,device_id=a power_w=1 {}\n",
            seconds("2026-01-01T00:00:00Z")
        ),
    )
    .await;
    let cases = [
        (
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            "UTC",
            "1m",
            60,
        ),
        (
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "UTC",
            "1m",
            1440,
        ),
        (
            "2026-01-01T00:00:00Z",
            "2026-01-04T00:00:00Z",
            "UTC",
            "5m",
            864,
        ),
        (
            "2026-01-01T00:00:00Z",
            "2026-01-11T00:00:00Z",
            "UTC",
            "15m",
            960,
        ),
        (
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "UTC",
            "1h",
            744,
        ),
        (
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "UTC",
            "1d",
            365,
        ),
        (
            "2026-01-01T00:00:00Z",
            "2036-01-01T00:00:00Z",
            "UTC",
            "1mo",
            120,
        ),
        (
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
            "Europe/Berlin",
            "1m",
            1380,
        ),
        (
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00",
            "Europe/Berlin",
            "1m",
            1500,
        ),
        // A minute more than the autumn day: 1501 minutes are too many.
        (
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:01:00+01:00",
            "Europe/Berlin",
            "5m",
            301,
        ),
    ];
    for (from, to, tz, step, count) in cases {
        let body = get(
            &app,
            &alice_token,
            &format!(
                "/api/v1/series?site_id={}&table=meter&column=power_w&from={}&to={}&tz={tz}",
                site.id,
                q(from),
                q(to)
            ),
        )
        .await;
        let context = format!("{from} to {to} in {tz}");
        assert_eq!(body["step"], step, "{context}");
        assert_eq!(body["t"].as_array().unwrap().len(), count, "{context}");
        assert_eq!(body["v"].as_array().unwrap().len(), count, "{context}");
    }
    // The 15-minute grid of the spring day: 92 quarter hours.
    let body = get(
        &app,
        &alice_token,
        &format!(
            "/api/v1/series?site_id={}&table=meter&column=power_w&step=15m&from={}&to={}",
            site.id,
            q("2026-03-29T00:00:00+01:00"),
            q("2026-03-30T00:00:00+02:00")
        ),
    )
    .await;
    assert_eq!(body["t"].as_array().unwrap().len(), 92);
    // Without from and to: the last 24 hours in minutes.
    let body = get(
        &app,
        &alice_token,
        &format!(
            "/api/v1/series?site_id={}&table=meter&column=power_w",
            site.id
        ),
    )
    .await;
    assert_eq!(body["step"], "1m");
    let count = body["t"].as_array().unwrap().len();
    assert!(count == 1440 || count == 1441, "{count}");
    app.finish().await;
}

/// The derived flows by hand: a battery charged from the grid, a day without
/// consumption, and a site without a meter (nothing derived) or without solar and
/// battery (those count as 0).
#[test]
fn the_balance_derives_consumption_and_shares() {
    let balance = Balance::new(
        Some(&[100.0, 0.0, 500.0]),
        Some(&[0.0, 30.0, 0.0]),
        Some(&[50.0, 30.0, 0.0]),
        Some(&[0.0, 0.0, 400.0]),
        Some(&[50.0, 0.0, 0.0]),
        3,
    );
    assert_eq!(
        balance,
        Balance {
            // 100 + 50 + 50; 0 + 30 - 30; 500 - 400.
            home_consumption: vec![Some(200.0), Some(0.0), Some(100.0)],
            self_consumption: vec![Some(50.0), Some(0.0), Some(0.0)],
            // 1 - 100/200; nothing consumed; 1 - 500/100 clamped to 0.
            self_sufficiency: vec![Some(0.5), None, Some(0.0)],
        }
    );
    let no_meter = Balance::new(None, None, Some(&[50.0]), None, None, 1);
    assert_eq!(
        no_meter,
        Balance {
            home_consumption: vec![None],
            self_consumption: vec![None],
            self_sufficiency: vec![None],
        }
    );
    let meter_only = Balance::new(Some(&[80.0]), Some(&[0.0]), None, None, None, 1);
    assert_eq!(meter_only.home_consumption, [Some(80.0)]);
    assert_eq!(meter_only.self_consumption, [Some(0.0)]);
    assert_eq!(meter_only.self_sufficiency, [Some(0.0)]);
    let exporting = Balance::new(Some(&[0.0]), Some(&[70.0]), Some(&[100.0]), None, None, 1);
    assert_eq!(exporting.home_consumption, [Some(30.0)]);
    assert_eq!(exporting.self_consumption, [Some(30.0)]);
    assert_eq!(exporting.self_sufficiency, [Some(1.0)]);
}

/// A statement of ours that fails is a 500 with the detail in the log, not a 400
/// quoting DataFusion; running out of time stays a 408.
#[tokio::test(flavor = "multi_thread")]
async fn failing_statements_are_the_servers_fault() {
    let app = TestApp::new().await;
    let sql = "SELECT \"nope\" FROM \"nowhere\"";
    let error = app
        .state
        .engine()
        .sql(sql)
        .await
        .expect_err("no such table");
    assert!(error.is_client_error(), "DataFusion's own view: {error}");
    let answer = super::engine_error(error, sql);
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.to_string().contains("nowhere"), "logged: {answer}");
    let timeout = query::Error::Timeout(std::time::Duration::from_secs(30));
    assert_eq!(
        super::engine_error(timeout, sql).status(),
        StatusCode::REQUEST_TIMEOUT
    );
    app.finish().await;
}

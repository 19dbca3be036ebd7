//! The REST endpoints through the real router, with authentication on: CRUD per entity,
//! 422 bodies naming fields, pagination and filters, customer scoping, tokens shown
//! once, the site readings endpoint, and the registry cache kept in step. Which roles
//! may call which endpoint is the authorization-matrix test's job (`auth::tests`).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use crm::Role;
use serde_json::{Value, json};

use crate::testing::{Answer, TestApp};

/// Every key anywhere in `value`.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
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

fn ids(body: &Value) -> Vec<i64> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a listing: {body}"))
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

fn site_body(account_id: i64, name: &str) -> Value {
    json!({
        "account_id": account_id,
        "name": name,
        "city": "Berlin",
        "country": "de",
        "latitude": 52.52,
        "longitude": 13.405,
        "time_zone": "Europe/Berlin",
        "property_type": "residential",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn users_crud_never_shows_a_password_hash() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin.as_str());

    let created = app
        .call(
            "POST",
            "/api/v1/users",
            admin,
            Some(json!({
                "email": " Carol@Example.com ",
                "display_name": "Carol",
                "role": "customer",
                "password": "a long enough password",
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let carol = created.json();
    assert_eq!(carol["email"], "carol@example.com");
    assert_eq!(carol["role"], "customer");
    let id = carol["id"].as_i64().unwrap();

    let got = app
        .call("GET", &format!("/api/v1/users/{id}"), admin, None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), carol);

    let patched = app
        .call(
            "PATCH",
            &format!("/api/v1/users/{id}"),
            admin,
            Some(json!({"display_name": "Carol B.", "password": "another long password"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text());
    assert_eq!(patched.json()["display_name"], "Carol B.");
    assert_eq!(patched.json()["email"], "carol@example.com");

    let listed = app
        .call("GET", "/api/v1/users?role=customer", admin, None)
        .await;
    assert_eq!(ids(&listed.json()), [id]);
    let by_email = app
        .call("GET", "/api/v1/users?email=CAROL", admin, None)
        .await;
    assert_eq!(ids(&by_email.json()), [id]);
    let all = app.call("GET", "/api/v1/users", admin, None).await;
    assert_eq!(ids(&all.json()).len(), 2);

    // No response carries a password or its hash.
    for answer in [&created, &got, &patched, &listed, &all] {
        let mut names = Vec::new();
        keys(&answer.json(), &mut names);
        assert!(
            !names.iter().any(|k| k.contains("password")),
            "{}",
            answer.text()
        );
        assert!(!answer.text().contains("$argon2"), "{}", answer.text());
    }

    let deleted = app
        .call("DELETE", &format!("/api/v1/users/{id}"), admin, None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    let gone = app
        .call("GET", &format!("/api/v1/users/{id}"), admin, None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json(),
        json!({"error": format!("user {id} not found")})
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_bodies_are_422_naming_each_field() {
    let app = TestApp::new().await;
    let (alice, admin_token) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin_token.as_str());
    let (account, _) = app.home(&alice, "ACC-1").await;

    // Values the crm refuses: every bad field named at once.
    let mut bad = site_body(account.id, " ");
    bad["country"] = json!("Germany");
    bad["latitude"] = json!(91.0);
    bad["time_zone"] = json!("Mars/Olympus_Mons");
    let answer = app.call("POST", "/api/v1/sites", admin, Some(bad)).await;
    assert_eq!(
        fields(&answer),
        ["name", "country", "latitude", "time_zone"]
    );

    // Bodies that do not deserialize: missing, unknown, mistyped, bad enum value.
    let cases = [
        (
            "/api/v1/users",
            json!({"display_name": "x", "role": "customer"}),
            "email",
        ),
        (
            "/api/v1/users",
            json!({"email": "x@example.com", "display_name": "x", "role": "customer", "is_admin": true}),
            "is_admin",
        ),
        (
            "/api/v1/users",
            json!({"email": "x@example.com", "display_name": "x", "role": "overlord"}),
            "role",
        ),
        (
            "/api/v1/devices",
            json!({"kind": "meter", "device_id": "m-1", "site_id": "seven"}),
            "site_id",
        ),
        (
            "/api/v1/accounts",
            json!({"user_id": alice.id, "account_number": 12, "account_type": "residential"}),
            "account_number",
        ),
    ];
    for (uri, body, field) in cases {
        let answer = app.call("POST", uri, admin, Some(body.clone())).await;
        assert_eq!(fields(&answer), [field], "{body}: {}", answer.text());
    }

    // A device status that does not fit its kind, and a malformed MAC address.
    let answer = app
        .call(
            "POST",
            "/api/v1/devices",
            admin,
            Some(json!({"kind": "meter", "device_id": "m-1", "status": "charging", "mac_address": "nope"})),
        )
        .await;
    assert_eq!(fields(&answer), ["mac_address", "status"]);

    // A reference to a row that does not exist names the reference.
    let answer = app
        .call(
            "POST",
            "/api/v1/sites",
            admin,
            Some(site_body(987_654, "Nowhere")),
        )
        .await;
    assert_eq!(fields(&answer), ["account_id"]);

    // A taken unique value is 409 naming the field.
    let answer = app
        .call(
            "POST",
            "/api/v1/users",
            admin,
            Some(json!({"email": "ADMIN@example.com", "display_name": "x", "role": "support"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(
        answer.json()["error"].as_str().unwrap().contains("email"),
        "{}",
        answer.text()
    );

    // Malformed JSON is a 400, a non-integer id a 400.
    let answer = app
        .send(
            Request::post("/api/v1/users")
                .header(header::AUTHORIZATION, format!("Bearer {admin_token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"email\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    let answer = app.call("GET", "/api/v1/sites/abc", admin, None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_paginate_filter_and_refuse_unknown_parameters() {
    let app = TestApp::new().await;
    let (owner, admin) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin.as_str());
    let (_, site) = app.home(&owner, "ACC-1").await;
    let mut made = Vec::new();
    for (i, kind) in ["meter", "inverter", "battery", "meter", "smart_plug"]
        .into_iter()
        .enumerate()
    {
        let site_id = (i % 2 == 0).then_some(site.id);
        let answer = app
            .call(
                "POST",
                "/api/v1/devices",
                admin,
                Some(json!({"kind": kind, "device_id": format!("dev-{i}"), "site_id": site_id})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        made.push(answer.json()["id"].as_i64().unwrap());
    }

    let first = app
        .call("GET", "/api/v1/devices?limit=2", admin, None)
        .await
        .json();
    assert_eq!(ids(&first), made[..2]);
    assert_eq!(
        (&first["limit"], &first["offset"], &first["next_offset"]),
        (&json!(2), &json!(0), &json!(2))
    );
    let second = app
        .call("GET", "/api/v1/devices?limit=2&offset=2", admin, None)
        .await
        .json();
    assert_eq!(ids(&second), made[2..4]);
    assert_eq!(second["next_offset"], 4);
    let last = app
        .call("GET", "/api/v1/devices?limit=2&offset=4", admin, None)
        .await
        .json();
    assert_eq!(ids(&last), made[4..]);
    assert_eq!(last["next_offset"], Value::Null);
    let all = app.call("GET", "/api/v1/devices", admin, None).await.json();
    assert_eq!(
        (all["limit"].as_u64(), all["next_offset"].is_null()),
        (Some(100), true)
    );
    let clamped = app
        .call("GET", "/api/v1/devices?limit=5000", admin, None)
        .await
        .json();
    assert_eq!(clamped["limit"], 1000);

    let meters = app
        .call("GET", "/api/v1/devices?kind=meter", admin, None)
        .await
        .json();
    assert_eq!(ids(&meters), [made[0], made[3]]);
    let on_site = app
        .call(
            "GET",
            &format!("/api/v1/devices?site_id={}", site.id),
            admin,
            None,
        )
        .await
        .json();
    assert_eq!(ids(&on_site), [made[0], made[2], made[4]]);
    let unassigned = app
        .call("GET", "/api/v1/devices?unassigned=true", admin, None)
        .await
        .json();
    assert_eq!(ids(&unassigned), [made[1], made[3]]);
    let both = app
        .call(
            "GET",
            &format!("/api/v1/devices?unassigned=true&site_id={}", site.id),
            admin,
            None,
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);

    let accounts = app
        .call("GET", "/api/v1/accounts?status=closed", admin, None)
        .await
        .json();
    assert!(ids(&accounts).is_empty());

    // Unknown parameters and malformed values are refused, naming them.
    for (uri, named) in [
        ("/api/v1/devices?sight_id=1", "sight_id"),
        ("/api/v1/users?page=2", "page"),
        ("/api/v1/sites?limit=many", "limit"),
        ("/api/v1/accounts?status=dormant", "dormant"),
    ] {
        let answer = app.call("GET", uri, admin, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(named), "{uri}: {error}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_see_only_their_own_and_others_ids_look_missing() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin.as_str());
    let (alice, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (bob, _) = app.user(Role::Prosumer, "bob@example.com").await;
    let (alice_account, alice_site) = app.home(&alice, "ACC-A").await;
    let (bob_account, bob_site) = app.home(&bob, "ACC-B").await;
    let mut devices = Vec::new();
    for (name, site) in [("a-meter", alice_site.id), ("b-meter", bob_site.id)] {
        let answer = app
            .call(
                "POST",
                "/api/v1/devices",
                admin,
                Some(json!({"kind": "meter", "device_id": name, "site_id": site})),
            )
            .await;
        devices.push(answer.json()["id"].as_i64().unwrap());
    }
    // An unassigned device belongs to nobody's portal.
    let answer = app
        .call(
            "POST",
            "/api/v1/devices",
            admin,
            Some(json!({"kind": "battery", "device_id": "stray"})),
        )
        .await;
    let stray = answer.json()["id"].as_i64().unwrap();

    let alice = Some(alice_token.as_str());
    // Lists: only her own, whatever user_id she asks for.
    for uri in [
        "/api/v1/accounts",
        &format!("/api/v1/accounts?user_id={}", bob.id),
    ] {
        let answer = app.call("GET", uri, alice, None).await;
        assert_eq!(ids(&answer.json()), [alice_account.id], "{uri}");
    }
    for uri in [
        "/api/v1/sites",
        &format!("/api/v1/sites?user_id={}", bob.id),
    ] {
        let answer = app.call("GET", uri, alice, None).await;
        assert_eq!(ids(&answer.json()), [alice_site.id], "{uri}");
    }
    let answer = app
        .call(
            "GET",
            &format!("/api/v1/sites?account_id={}", bob_account.id),
            alice,
            None,
        )
        .await;
    assert!(ids(&answer.json()).is_empty());
    let answer = app.call("GET", "/api/v1/devices", alice, None).await;
    assert_eq!(ids(&answer.json()), [devices[0]]);
    let answer = app
        .call("GET", "/api/v1/devices?unassigned=true", alice, None)
        .await;
    assert!(ids(&answer.json()).is_empty());
    // Staff see everything.
    let answer = app.call("GET", "/api/v1/sites", admin, None).await;
    assert_eq!(ids(&answer.json()), [alice_site.id, bob_site.id]);

    // By id: her own are there; Bob's answer exactly like ids that do not exist.
    for (entity, own, other) in [
        ("accounts", alice_account.id, bob_account.id),
        ("sites", alice_site.id, bob_site.id),
        ("devices", devices[0], devices[1]),
    ] {
        let answer = app
            .call("GET", &format!("/api/v1/{entity}/{own}"), alice, None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{entity}");
        assert_eq!(answer.json()["id"], own);

        let singular = entity.trim_end_matches('s');
        let others = app
            .call("GET", &format!("/api/v1/{entity}/{other}"), alice, None)
            .await;
        let nobody = 9_999_999;
        let missing = app
            .call("GET", &format!("/api/v1/{entity}/{nobody}"), alice, None)
            .await;
        assert_eq!(others.status, StatusCode::NOT_FOUND, "{entity}");
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{entity}");
        assert_eq!(
            others.json(),
            json!({"error": format!("{singular} {other} not found")})
        );
        assert_eq!(
            missing.json(),
            json!({"error": format!("{singular} {nobody} not found")})
        );
        // The same headers too, but for the length of the id in the message.
        let names = |a: &Answer| {
            let mut names: Vec<String> = a.headers.keys().map(|k| k.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&others), names(&missing), "{entity}");
        assert_eq!(
            others.headers[header::CONTENT_TYPE],
            missing.headers[header::CONTENT_TYPE]
        );
    }
    let answer = app
        .call("GET", &format!("/api/v1/devices/{stray}"), alice, None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_and_sites_crud_with_owner_transfer_and_one_primary_site() {
    let app = TestApp::new().await;
    let (_, support) = app.user(Role::Support, "support@example.com").await;
    let support = Some(support.as_str());
    let (alice, _) = app.user(Role::Customer, "alice@example.com").await;
    let (bob, _) = app.user(Role::Customer, "bob@example.com").await;

    let created = app
        .call(
            "POST",
            "/api/v1/accounts",
            support,
            Some(json!({"user_id": alice.id, "account_number": "ACC-9", "account_type": "business", "tax_id": "DE1"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let account = created.json();
    assert_eq!(account["status"], "active");
    let id = account["id"].as_i64().unwrap();
    let uri = format!("/api/v1/accounts/{id}");

    let duplicate = app
        .call(
            "POST",
            "/api/v1/accounts",
            support,
            Some(json!({"user_id": bob.id, "account_number": "ACC-9", "account_type": "residential"})),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert!(duplicate.text().contains("account_number"));

    // An edit naming another owner is refused unless it says transfer_owner.
    let edit = json!({"user_id": bob.id, "account_number": "ACC-9", "account_type": "business", "status": "suspended"});
    let refused = app.call("PUT", &uri, support, Some(edit.clone())).await;
    assert_eq!(fields(&refused), ["user_id"]);
    let unchanged = app.call("GET", &uri, support, None).await.json();
    assert_eq!(
        (&unchanged["user_id"], &unchanged["status"]),
        (&json!(alice.id), &json!("active"))
    );
    let same_owner = app
        .call(
            "PUT",
            &uri,
            support,
            Some(json!({"user_id": alice.id, "account_number": "ACC-9", "account_type": "business", "status": "suspended"})),
        )
        .await;
    assert_eq!(same_owner.status, StatusCode::OK, "{}", same_owner.text());
    assert_eq!(same_owner.json()["status"], "suspended");
    let mut transfer = edit;
    transfer["transfer_owner"] = json!(true);
    let moved = app.call("PUT", &uri, support, Some(transfer)).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text());
    assert_eq!(moved.json()["user_id"], bob.id);

    // Sites: one primary per account.
    let mut ids_made = Vec::new();
    for name in ["Home", "Cabin"] {
        let mut body = site_body(id, name);
        body["is_primary"] = json!(true);
        let answer = app.call("POST", "/api/v1/sites", support, Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        ids_made.push(answer.json()["id"].as_i64().unwrap());
    }
    let listed = app
        .call(
            "GET",
            &format!("/api/v1/sites?account_id={id}"),
            support,
            None,
        )
        .await
        .json();
    let primary: Vec<bool> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["is_primary"].as_bool().unwrap())
        .collect();
    assert_eq!(primary, [false, true]);
    let mut renamed = site_body(id, "Summer cabin");
    renamed["time_zone"] = json!("Europe/Oslo");
    let updated = app
        .call(
            "PUT",
            &format!("/api/v1/sites/{}", ids_made[1]),
            support,
            Some(renamed),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    assert_eq!(
        (&updated.json()["name"], &updated.json()["time_zone"]),
        (&json!("Summer cabin"), &json!("Europe/Oslo"))
    );

    // Deleting the account takes its sites.
    let deleted = app.call("DELETE", &uri, support, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    for site in ids_made {
        let answer = app
            .call("GET", &format!("/api/v1/sites/{site}"), support, None)
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
    let again = app.call("DELETE", &uri, support, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn device_changes_reach_the_registry_cache() {
    let app = TestApp::new().await;
    let (owner, admin) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin.as_str());
    let (_, home) = app.home(&owner, "ACC-1").await;
    let (_, cabin) = app.home(&owner, "ACC-2").await;
    let registry = app.state.devices();

    let created = app
        .call(
            "POST",
            "/api/v1/devices",
            admin,
            Some(json!({"kind": "inverter", "device_id": "inv-1", "site_id": home.id, "serial_number": "SN1"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = created.json()["id"].as_i64().unwrap();
    assert_eq!(registry.site_of("inv-1"), Some(Some(home.id)));

    // Moving the device, then renaming its telemetry id.
    let answer = app
        .call(
            "PUT",
            &format!("/api/v1/devices/{id}"),
            admin,
            Some(json!({"kind": "inverter", "device_id": "inv-1", "site_id": cabin.id, "status": "warning"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["status"], "warning");
    assert_eq!(registry.site_of("inv-1"), Some(Some(cabin.id)));
    let answer = app
        .call(
            "PUT",
            &format!("/api/v1/devices/{id}"),
            admin,
            Some(json!({"kind": "inverter", "device_id": "inv-1b", "site_id": cabin.id})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(registry.site_of("inv-1"), None);
    assert_eq!(registry.site_of("inv-1b"), Some(Some(cabin.id)));

    // Deleting the site unassigns the device, in the store and in the cache.
    let answer = app
        .call(
            "DELETE",
            &format!("/api/v1/sites/{}", cabin.id),
            admin,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(registry.site_of("inv-1b"), Some(None));
    let device = app
        .call("GET", &format!("/api/v1/devices/{id}"), admin, None)
        .await
        .json();
    assert_eq!(device["site_id"], Value::Null);

    let answer = app
        .call("DELETE", &format!("/api/v1/devices/{id}"), admin, None)
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(registry.site_of("inv-1b"), None);
    let answer = app
        .call("GET", &format!("/api/v1/devices/{id}"), admin, None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_shown_once_then_only_their_metadata() {
    let app = TestApp::new().await;
    let (owner, admin) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin.as_str());
    let (_, site) = app.home(&owner, "ACC-1").await;

    let answer = app
        .call(
            "POST",
            "/api/v1/tokens",
            admin,
            Some(json!({"name": "gateway home", "scope": "write"})),
        )
        .await;
    assert_eq!(fields(&answer), ["site_id"]);

    let created = app
        .call(
            "POST",
            "/api/v1/tokens",
            admin,
            Some(json!({"name": "gateway home", "scope": "write", "site_id": site.id})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let token = body["token"].as_str().expect("the plain token").to_owned();
    assert!(token.starts_with("glk_"), "{token}");
    assert_eq!(
        (
            &body["name"],
            &body["scope"],
            &body["site_id"],
            &body["revoked"]
        ),
        (
            &json!("gateway home"),
            &json!("write"),
            &json!(site.id),
            &json!(false)
        )
    );
    let id = body["id"].as_i64().unwrap();

    let listed = app
        .call(
            "GET",
            &format!("/api/v1/tokens?site_id={}", site.id),
            admin,
            None,
        )
        .await;
    assert_eq!(ids(&listed.json()), [id]);
    assert!(!listed.text().contains(&token[4..]), "{}", listed.text());
    let mut names = Vec::new();
    keys(&listed.json(), &mut names);
    assert!(
        !names.iter().any(|k| k == "token" || k.contains("hash")),
        "{names:?}"
    );

    // The token works until revoked.
    let me = app.call("GET", "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    let revoked = app
        .call("DELETE", &format!("/api/v1/tokens/{id}"), admin, None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let me = app.call("GET", "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    let listed = app.call("GET", "/api/v1/tokens", admin, None).await.json();
    let revoked: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"] == id)
        .collect();
    assert_eq!(revoked[0]["revoked"], true);
    let answer = app
        .call("DELETE", "/api/v1/tokens/424242", admin, None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn site_readings_are_the_sites_devices_and_scoped() {
    let app = TestApp::new().await;
    let (_, admin_token) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin_token.as_str());
    let (alice_user, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (bob, bob_token) = app.user(Role::Customer, "bob@example.com").await;
    let (_, alice_site) = app.home(&alice_user, "ACC-A").await;
    let (_, bob_site) = app.home(&bob, "ACC-B").await;
    for (device, site) in [
        ("a-meter", alice_site.id),
        ("a-plug", alice_site.id),
        ("b-meter", bob_site.id),
    ] {
        let answer = app
            .call(
                "POST",
                "/api/v1/devices",
                admin,
                Some(json!({"kind": "meter", "device_id": device, "site_id": site})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    }
    // 2026-01-01T00:00:00Z and a minute later.
    app.write_lp(
        &admin_token,
        "meter,device_id=a-meter power=1 1767225600\n\
         meter,device_id=a-plug power=2 1767225600\n\
         meter,device_id=b-meter power=3 1767225600\n\
         meter,device_id=a-meter power=4 1767225660\n\
         meter,device_id=ghost power=5 1767225600\n\
         weather temp=7 1767225600\n",
    )
    .await;
    let window = "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z";
    let alice = Some(alice_token.as_str());
    let uri = |site: i64, extra: &str| {
        format!("/api/v1/sites/{site}/readings?table=meter&{window}{extra}")
    };

    let answer = app.call("GET", &uri(alice_site.id, ""), alice, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    let rows: Vec<(String, f64)> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["device_id"].as_str().unwrap().to_owned(),
                r["power"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a-meter".to_owned(), 1.0),
            ("a-plug".to_owned(), 2.0),
            ("a-meter".to_owned(), 4.0)
        ]
    );
    assert_eq!(body["rows"][0]["time"], "2026-01-01T00:00:00Z");
    assert_eq!(
        (
            &body["site_id"],
            &body["from"],
            &body["to"],
            &body["truncated"]
        ),
        (
            &json!(alice_site.id),
            &json!("2026-01-01T00:00:00Z"),
            &json!("2026-01-02T00:00:00Z"),
            &json!(false)
        )
    );

    // One device, a limit, a narrower window.
    let body = app
        .call(
            "GET",
            &uri(alice_site.id, "&device_id=a-meter&limit=1"),
            alice,
            None,
        )
        .await
        .json();
    assert_eq!(body["rows"].as_array().unwrap().len(), 1);
    assert_eq!(body["rows"][0]["power"], 1.0);
    assert_eq!(body["truncated"], true);
    let body = app
        .call(
            "GET",
            &format!(
                "/api/v1/sites/{}/readings?table=meter&from=2026-01-01T00:00:30%2B00:00&to=2026-01-01T01:00:00Z",
                alice_site.id
            ),
            alice,
            None,
        )
        .await
        .json();
    assert_eq!(body["rows"].as_array().unwrap().len(), 1, "{body}");

    // Bob's site is not found for Alice; neither is his device on her site, nor a
    // device id that tries to break out of the literal.
    let others = app.call("GET", &uri(bob_site.id, ""), alice, None).await;
    assert_eq!(others.status, StatusCode::NOT_FOUND);
    assert_eq!(
        others.json(),
        json!({"error": format!("site {} not found", bob_site.id)})
    );
    for device in ["b-meter", "a-meter'%20OR%20'1'='1"] {
        let answer = app
            .call(
                "GET",
                &uri(alice_site.id, &format!("&device_id={device}")),
                alice,
                None,
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{device}: {}",
            answer.text()
        );
    }
    let bobs = app
        .call("GET", &uri(bob_site.id, ""), Some(&bob_token), None)
        .await
        .json();
    assert_eq!(bobs["rows"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["rows"][0]["device_id"], "b-meter");
    let staff = app.call("GET", &uri(bob_site.id, ""), admin, None).await;
    assert_eq!(staff.json()["rows"].as_array().unwrap().len(), 1);

    // The table must exist and have a device_id column; times must parse.
    let answer = app
        .call(
            "GET",
            &format!(
                "/api/v1/sites/{}/readings?table=nope&from=yesterday",
                alice_site.id
            ),
            alice,
            None,
        )
        .await;
    assert_eq!(fields(&answer), ["table", "from"]);
    let answer = app
        .call(
            "GET",
            &format!("/api/v1/sites/{}/readings?table=weather", alice_site.id),
            alice,
            None,
        )
        .await;
    assert_eq!(fields(&answer), ["table"]);
    let answer = app
        .call(
            "GET",
            &format!(
                "/api/v1/sites/{}/readings?table=meter&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
                alice_site.id
            ),
            alice,
            None,
        )
        .await;
    assert_eq!(fields(&answer), ["to"]);
    let answer = app
        .call(
            "GET",
            &format!("/api/v1/sites/{}/readings?table=meter&sql=1", alice_site.id),
            alice,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("sql"), "{}", answer.text());
    let answer = app
        .call(
            "GET",
            &format!("/api/v1/sites/{}/readings", alice_site.id),
            alice,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("table"), "{}", answer.text());

    // A site with no devices has no readings (and runs no query).
    let (_, empty) = app.home(&alice_user, "ACC-A2").await;
    let body = app
        .call("GET", &uri(empty.id, ""), alice, None)
        .await
        .json();
    assert_eq!(
        (body["rows"].clone(), body["device_ids"].clone()),
        (json!([]), json!([]))
    );
    app.finish().await;
}

/// A meter that moves from Alice's site to Bob's (a house sale): Bob's portal shows only
/// the readings from its arrival on, Alice's none of it any more, and staff SQL all.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_device_shows_the_new_site_only_its_new_readings() {
    let app = TestApp::new().await;
    let (_, admin_token) = app.user(Role::Admin, "admin@example.com").await;
    let admin = Some(admin_token.as_str());
    let (alice_user, alice_token) = app.user(Role::Customer, "alice@example.com").await;
    let (bob_user, bob_token) = app.user(Role::Customer, "bob@example.com").await;
    let (alice, bob) = (Some(alice_token.as_str()), Some(bob_token.as_str()));
    let (_, alice_site) = app.home(&alice_user, "ACC-A").await;
    let (_, bob_site) = app.home(&bob_user, "ACC-B").await;
    let mut mover = 0;
    for (device, site) in [("mover", alice_site.id), ("b-meter", bob_site.id)] {
        let answer = app
            .call(
                "POST",
                "/api/v1/devices",
                admin,
                Some(json!({"kind": "meter", "device_id": device, "site_id": site})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        assert_eq!(answer.json()["assigned_ms"], Value::Null);
        if device == "mover" {
            mover = answer.json()["id"].as_i64().unwrap();
        }
    }
    // Alice's and Bob's own history, 2026-01-01T00:00:00Z.
    app.write_lp(
        &admin_token,
        "meter,device_id=mover power=1 1767225600\n\
         meter,device_id=b-meter power=3 1767225600\n",
    )
    .await;

    let answer = app
        .call(
            "PUT",
            &format!("/api/v1/devices/{mover}"),
            admin,
            Some(json!({"kind": "meter", "device_id": "mover", "site_id": bob_site.id})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let moved_ms = answer.json()["assigned_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("no assigned_ms: {}", answer.text()));
    // One of Alice's readings arriving late (a gateway's buffer), then Bob's.
    let moved_s = moved_ms.div_euclid(1000);
    app.write_lp(
        &admin_token,
        &format!(
            "meter,device_id=mover power=2 {}\n\
             meter,device_id=mover power=10 {}\n\
             meter,device_id=mover power=11 {}\n",
            moved_s - 1,
            moved_s + 1,
            moved_s + 2
        ),
    )
    .await;

    let to = chrono::DateTime::from_timestamp_millis(moved_ms + 3_600_000)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let uri = |site: i64, extra: &str| {
        format!(
            "/api/v1/sites/{site}/readings?table=meter&from=2026-01-01T00:00:00Z&to={to}{extra}"
        )
    };
    let rows = |body: &Value| -> Vec<(String, f64)> {
        body["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows: {body}"))
            .iter()
            .map(|r| {
                (
                    r["device_id"].as_str().unwrap().to_owned(),
                    r["power"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let owned = |items: &[(&str, f64)]| -> Vec<(String, f64)> {
        items.iter().map(|(d, p)| ((*d).to_owned(), *p)).collect()
    };

    // Bob: his own meter's whole history, the mover's only from its arrival.
    let answer = app.call("GET", &uri(bob_site.id, ""), bob, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        rows(&answer.json()),
        owned(&[("b-meter", 3.0), ("mover", 10.0), ("mover", 11.0)])
    );
    let answer = app
        .call("GET", &uri(bob_site.id, "&device_id=mover"), bob, None)
        .await;
    assert_eq!(
        rows(&answer.json()),
        owned(&[("mover", 10.0), ("mover", 11.0)])
    );

    // Alice: the meter is not hers any more, old readings included.
    let answer = app.call("GET", &uri(alice_site.id, ""), alice, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        (
            answer.json()["rows"].clone(),
            answer.json()["device_ids"].clone()
        ),
        (json!([]), json!([]))
    );
    let answer = app
        .call("GET", &uri(alice_site.id, "&device_id=mover"), alice, None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());

    // Staff reading the table through SQL see every row.
    let answer = app
        .call(
            "POST",
            "/api/v1/sql",
            admin,
            Some(json!({"sql": "SELECT power FROM meter WHERE device_id = 'mover' ORDER BY time"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.json(),
        json!([{"power": 1.0}, {"power": 2.0}, {"power": 10.0}, {"power": 11.0}])
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_is_public_json() {
    let app = TestApp::new().await;
    let answer = app.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let doc = answer.json();
    assert!(doc["paths"]["/api/v1/sites/{id}/readings"]["get"].is_object());
    app.finish().await;
}

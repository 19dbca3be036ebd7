//! Authentication, authorization and the device registry through the real binary: the
//! README's first steps (an admin from the CLI, a login, a customer with a site and a
//! device, a gateway token), customers kept apart, sessions that end, auth switched off
//! on purpose, unknown devices, and the OpenAPI document checked by an independent
//! validator.
//!
//! Every response body a test sees goes through a [`Caller`], which keeps it; each test
//! ends by checking that none of them carried a password hash or a password.
//!
//! The OpenAPI test needs python3 with `openapi-spec-validator` (`scripts/test.sh`
//! installs it). Without it the test is skipped with a message, except when `CI=true` or
//! `GRIDLAKE_REQUIRE_PEERS` is set, where a missing validator fails the test instead of
//! hiding it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::common::{Options, Server, parse_error, python_peer_available};

/// How long a test waits for something the server does in the background (the
/// last-seen flush): generous for a debug build on two cores.
const WAIT: Duration = Duration::from_secs(30);

/// The first admin's password in the README flow.
const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// What must never appear in a response: argon2 hashes, the column that holds them, and
/// (checked separately) the plain passwords the test used.
const SECRET_MARKERS: [&str; 2] = ["$argon2", "password_hash"];

/// Every response body (and CLI output) a test saw.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, body: &str) {
        self.0.lock().expect("seen lock").push(body.to_owned());
    }

    /// Asserts that no response carried a password hash or one of `passwords`.
    fn assert_no_secrets(&self, passwords: &[&str]) {
        let bodies = self.0.lock().expect("seen lock");
        assert!(!bodies.is_empty(), "the test recorded no responses");
        for body in bodies.iter() {
            for marker in SECRET_MARKERS {
                assert!(
                    !body.contains(marker),
                    "a response contains {marker:?}: {body}"
                );
            }
            for password in passwords {
                assert!(
                    !body.contains(password),
                    "a response contains the password {password:?}: {body}"
                );
            }
        }
    }
}

/// An HTTP client with one identity (or none) that records every response body. Built
/// on its own `reqwest::Client`, without the admin header [`Server::http`] sends.
#[derive(Debug, Clone)]
struct Caller {
    http: reqwest::Client,
    base: String,
    /// The whole `Authorization` header value, if any.
    authorization: Option<String>,
    seen: Seen,
}

impl Caller {
    /// No credentials.
    fn anonymous(server: &Server, seen: &Seen) -> Caller {
        Caller {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build HTTP client"),
            base: server.base_url().to_owned(),
            authorization: None,
            seen: seen.clone(),
        }
    }

    /// `Authorization: Bearer <token>` (a session or an API token).
    fn bearer(server: &Server, seen: &Seen, token: &str) -> Caller {
        Caller {
            authorization: Some(format!("Bearer {token}")),
            ..Caller::anonymous(server, seen)
        }
    }

    /// InfluxDB's `Authorization: Token <token>`.
    fn influx_token(server: &Server, seen: &Seen, token: &str) -> Caller {
        Caller {
            authorization: Some(format!("Token {token}")),
            ..Caller::anonymous(server, seen)
        }
    }

    /// Sends a request; returns the status and the body (recorded).
    async fn send(&self, method: Method, path: &str, body: Option<Body>) -> (StatusCode, String) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(value) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request = match body {
            Some(Body::Json(value)) => request.json(&value),
            Some(Body::Text(text)) => request.body(text),
            None => request,
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("response body");
        self.seen.push(&text);
        (status, text)
    }

    /// GET; the status and the body as JSON (`Null` when empty).
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.send(Method::GET, path, None).await;
        (status, json_or_null(&text))
    }

    /// POSTs JSON; the status and the body as JSON.
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, text) = self.send(Method::POST, path, Some(Body::Json(body))).await;
        (status, json_or_null(&text))
    }

    /// POSTs `body` to a REST collection, asserts 201 and returns the entity.
    async fn create(&self, path: &str, body: Value) -> Value {
        let (status, created) = self.post(path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "POST {path} {body} must answer 201: {created}"
        );
        created
    }

    /// POSTs line protocol to `path`; the status and the raw body.
    async fn write(&self, path: &str, lines: &str) -> (StatusCode, String) {
        self.send(Method::POST, path, Some(Body::Text(lines.to_owned())))
            .await
    }

    /// GETs a REST list and returns its items (asserting the list shape).
    async fn items(&self, path: &str) -> Vec<Value> {
        let (status, list) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {list}");
        for key in ["limit", "offset", "next_offset"] {
            assert!(list.get(key).is_some(), "GET {path} lacks {key:?}: {list}");
        }
        list["items"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path} has no items array: {list}"))
            .clone()
    }
}

/// A request body.
#[derive(Debug)]
enum Body {
    Json(Value),
    Text(String),
}

fn json_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
    }
}

/// The `id` of an entity.
fn id(entity: &Value) -> i64 {
    entity["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer id in {entity}"))
}

/// The ids of a list's items, sorted.
fn ids(items: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = items.iter().map(id).collect();
    ids.sort_unstable();
    ids
}

fn now_s() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_secs()).expect("seconds fit i64")
}

fn now_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(now.as_millis()).expect("ms fit i64")
}

/// `gridlake user create ARGS` with `password` as the first line of stdin; returns the
/// printed user (and records the output).
async fn cli_user_create(server: &Server, seen: &Seen, args: &[&str], password: &str) -> Value {
    let mut child = server
        .command()
        .args(["user", "create"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gridlake user create");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .expect("write the password");
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .expect("gridlake user create");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "gridlake user create {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    seen.push(&stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("user create prints the user as JSON ({e}): {stdout}"))
}

/// `POST /api/v1/auth/login`; asserts 200 and returns the session token.
async fn login(anonymous: &Caller, email: &str, password: &str) -> String {
    let (status, body) = anonymous
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "login as {email}: {body}");
    let token = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login answers a token: {body}"));
    assert!(
        token.starts_with("gls_"),
        "session tokens start with gls_: {body}"
    );
    assert!(
        body["expires_ms"].as_i64().is_some_and(|t| t > now_ms()),
        "the session expires in the future: {body}"
    );
    token.to_owned()
}

/// A customer with an account, a site and a device on it, made by `staff`.
#[derive(Debug)]
struct Customer {
    email: String,
    password: String,
    user: i64,
    account: i64,
    site: i64,
    /// The registry id of the device.
    device: i64,
    /// Its telemetry `device_id`.
    device_id: String,
}

impl Customer {
    async fn create(staff: &Caller, name: &str) -> Customer {
        let email = format!("{name}@example.com");
        let password = format!("{name}'s long password");
        let user = staff
            .create(
                "/api/v1/users",
                json!({
                    "email": email,
                    "display_name": name,
                    "role": "customer",
                    "password": password,
                }),
            )
            .await;
        assert_eq!(user["email"], email.as_str(), "{user}");
        assert_eq!(user["role"], "customer", "{user}");
        let account = staff
            .create(
                "/api/v1/accounts",
                json!({
                    "user_id": id(&user),
                    "account_number": format!("ACC-{name}"),
                    "account_type": "residential",
                }),
            )
            .await;
        let site = staff
            .create(
                "/api/v1/sites",
                json!({
                    "account_id": id(&account),
                    "name": format!("{name}'s home"),
                    "city": "Berlin",
                    "country": "DE",
                    "latitude": 52.52,
                    "longitude": 13.405,
                    "time_zone": "Europe/Berlin",
                    "property_type": "residential",
                }),
            )
            .await;
        let device_id = format!("meter-{name}");
        let device = staff
            .create(
                "/api/v1/devices",
                json!({
                    "kind": "meter",
                    "device_id": device_id,
                    "site_id": id(&site),
                    "meter_number": format!("MN-{name}"),
                }),
            )
            .await;
        assert_eq!(device["site_id"], id(&site), "{device}");
        Customer {
            email,
            password,
            user: id(&user),
            account: id(&account),
            site: id(&site),
            device: id(&device),
            device_id,
        }
    }
}

/// The README's first steps: the first admin from the CLI, a login, a customer with an
/// account, a site and a device, and a gateway token for that site, which writes for
/// the site's device and is refused for another site's.
#[tokio::test(flavor = "multi_thread")]
async fn readme_flow_admin_login_customer_site_device_gateway_token() {
    let server = Server::start().await;
    let seen = Seen::default();
    let created = cli_user_create(
        &server,
        &seen,
        &["--email", "Admin@Example.com", "--role", "admin"],
        ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(
        created["email"], "admin@example.com",
        "emails are lower-cased: {created}"
    );
    assert_eq!(created["role"], "admin", "{created}");

    let anonymous = Caller::anonymous(&server, &seen);
    let session = login(&anonymous, "admin@example.com", ADMIN_PASSWORD).await;
    let admin = Caller::bearer(&server, &seen, &session);
    let (status, me) = admin.get("/api/v1/auth/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["email"], "admin@example.com", "{me}");

    let home = Customer::create(&admin, "alice").await;
    // Another site of the same account, with its own meter: the gateway of the first
    // site must not write for it.
    let other_site = admin
        .create(
            "/api/v1/sites",
            json!({
                "account_id": home.account,
                "name": "alice's garage",
                "time_zone": "Europe/Berlin",
                "property_type": "residential",
            }),
        )
        .await;
    admin
        .create(
            "/api/v1/devices",
            json!({"kind": "meter", "device_id": "meter-garage", "site_id": id(&other_site)}),
        )
        .await;

    let site = home.site.to_string();
    let gateway_token = server
        .create_token(&["--scope", "write", "--site-id", &site])
        .await;
    assert!(gateway_token.starts_with("glk_"), "{gateway_token}");
    let gateway = Caller::influx_token(&server, &seen, &gateway_token);
    let write = "/api/v2/write?org=home&bucket=readings&precision=s";
    let t = now_s() - 60;
    let (status, body) = gateway
        .write(
            write,
            &format!(
                "meter,device_id={} power_w=1500,energy_import_wh=42 {t}",
                home.device_id
            ),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the site's own meter: {body}"
    );

    let (status, body) = gateway
        .write(
            write,
            &format!("meter,device_id=meter-garage power_w=7 {t}"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "another site's meter: {body}"
    );
    let error = parse_error(&body);
    let rejected = error["rejected"].as_array().expect("rejected lines");
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["line"], 1, "{body}");
    let reason = rejected[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("meter-garage"),
        "the reason names the device: {body}"
    );

    // The admin token sees what was stored: the site's reading, nothing of the garage.
    let rows = server
        .sql("SELECT device_id, power_w FROM meter ORDER BY device_id")
        .await;
    let stored: Vec<&str> = rows
        .iter()
        .map(|r| r["device_id"].as_str().expect("device_id"))
        .collect();
    assert_eq!(stored, [home.device_id.as_str()], "{rows:?}");

    // The gateway writes, and does nothing else.
    let (status, body) = gateway.get("/api/v1/sites").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = gateway.get("/api/v1/sql?q=SELECT%201").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The customer logs in and sees the reading through the portal.
    let alice = Caller::bearer(
        &server,
        &seen,
        &login(&anonymous, &home.email, &home.password).await,
    );
    let (status, readings) = alice
        .get(&format!("/api/v1/sites/{}/readings?table=meter", home.site))
        .await;
    assert_eq!(status, StatusCode::OK, "{readings}");
    let rows = readings["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{readings}");
    assert_eq!(rows[0]["device_id"], home.device_id.as_str(), "{readings}");
    assert_eq!(rows[0]["power_w"], 1500.0, "{readings}");

    seen.assert_no_secrets(&[ADMIN_PASSWORD, &home.password]);
}

/// Customer A cannot see customer B's sites, devices, accounts or readings: not by id,
/// not through a list filter, not by guessing ids; and SQL is not for customers.
#[tokio::test(flavor = "multi_thread")]
async fn customers_see_only_their_own() {
    let server = Server::start().await;
    let seen = Seen::default();
    let admin = Caller::bearer(&server, &seen, server.admin_token());
    let a = Customer::create(&admin, "anna").await;
    let b = Customer::create(&admin, "bert").await;
    // A second site and device for A, so lists of one are not all that is checked.
    let a_site2 = admin
        .create(
            "/api/v1/sites",
            json!({
                "account_id": a.account,
                "name": "anna's cabin",
                "time_zone": "Europe/Oslo",
                "property_type": "residential",
            }),
        )
        .await;
    let a_device2 = admin
        .create(
            "/api/v1/devices",
            json!({"kind": "battery", "device_id": "battery-anna", "site_id": id(&a_site2)}),
        )
        .await;

    let t = now_s() - 120;
    let (status, body) = admin
        .write(
            "/api/v3/write_lp?precision=s",
            &format!(
                "meter,device_id={} power_w=100 {t}\nmeter,device_id={} power_w=200 {t}\n\
                 meter,device_id={} power_w=101 {}",
                a.device_id,
                b.device_id,
                a.device_id,
                t + 10
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let anonymous = Caller::anonymous(&server, &seen);
    let anna = Caller::bearer(
        &server,
        &seen,
        &login(&anonymous, &a.email, &a.password).await,
    );

    // By id: B's site answers exactly like a site that does not exist.
    let missing_id = 999_999;
    let (status, theirs) = anna
        .send(Method::GET, &format!("/api/v1/sites/{}", b.site), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    let (status, nothing) = anna
        .send(Method::GET, &format!("/api/v1/sites/{missing_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{nothing}");
    assert_eq!(
        theirs.replace(&b.site.to_string(), "ID"),
        nothing.replace(&missing_id.to_string(), "ID"),
        "another customer's site must look like a missing one"
    );
    let (status, mine) = anna.get(&format!("/api/v1/sites/{}", a.site)).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(id(&mine), a.site);

    // Lists: only A's, whatever the filters ask for.
    assert_eq!(
        ids(&anna.items("/api/v1/sites").await),
        [a.site, id(&a_site2)]
    );
    assert_eq!(
        ids(&anna
            .items(&format!("/api/v1/sites?user_id={}", b.user))
            .await),
        [a.site, id(&a_site2)],
        "a customer's own id replaces any user_id filter: B's user_id still lists A's"
    );
    assert_eq!(
        ids(&anna
            .items(&format!("/api/v1/sites?account_id={}", b.account))
            .await),
        Vec::<i64>::new()
    );
    assert_eq!(ids(&anna.items("/api/v1/accounts").await), [a.account]);
    assert_eq!(
        ids(&anna.items("/api/v1/devices").await),
        [a.device, id(&a_device2)]
    );
    assert_eq!(
        ids(&anna
            .items(&format!("/api/v1/devices?site_id={}", b.site))
            .await),
        Vec::<i64>::new()
    );

    // Readings: B's site is missing; A's holds A's rows only.
    let (status, theirs) = anna
        .send(
            Method::GET,
            &format!("/api/v1/sites/{}/readings?table=meter", b.site),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    let (_, nothing) = anna
        .send(
            Method::GET,
            &format!("/api/v1/sites/{missing_id}/readings?table=meter"),
            None,
        )
        .await;
    assert_eq!(
        theirs.replace(&b.site.to_string(), "ID"),
        nothing.replace(&missing_id.to_string(), "ID")
    );
    let (status, readings) = anna
        .get(&format!("/api/v1/sites/{}/readings?table=meter", a.site))
        .await;
    assert_eq!(status, StatusCode::OK, "{readings}");
    let rows = readings["rows"].as_array().expect("rows");
    let powers: Vec<f64> = rows
        .iter()
        .map(|r| {
            assert_eq!(r["device_id"], a.device_id.as_str(), "{readings}");
            r["power_w"].as_f64().expect("power_w")
        })
        .collect();
    assert_eq!(powers, [100.0, 101.0], "{readings}");
    // Naming B's device on A's site does not reach it either.
    let (status, body) = anna
        .get(&format!(
            "/api/v1/sites/{}/readings?table=meter&device_id={}",
            a.site, b.device_id
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Guessing ids: only A's own answer.
    let own = [
        ("sites", vec![a.site, id(&a_site2)]),
        ("devices", vec![a.device, id(&a_device2)]),
        ("accounts", vec![a.account]),
    ];
    for (collection, own_ids) in own {
        let mut found = Vec::new();
        for guess in 1..=20 {
            let (status, body) = anna.get(&format!("/api/v1/{collection}/{guess}")).await;
            match status {
                StatusCode::OK => found.push(id(&body)),
                StatusCode::NOT_FOUND => {}
                other => panic!("GET /api/v1/{collection}/{guess}: {other} {body}"),
            }
        }
        assert_eq!(found, own_ids, "{collection} 1..=20 as seen by A");
    }

    // SQL reads every customer's rows: not for customers.
    let (status, body) = anna.get("/api/v1/sql?q=SELECT%20*%20FROM%20meter").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    parse_error(&body.to_string());
    // Nor are the staff's endpoints.
    let (status, body) = anna.get("/api/v1/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    seen.assert_no_secrets(&[&a.password, &b.password]);
}

/// Users go through every endpoint that returns them, and the CLI's listing; no
/// answer carries a hash or a password.
#[tokio::test(flavor = "multi_thread")]
async fn password_hashes_are_never_returned() {
    let server = Server::start().await;
    let seen = Seen::default();
    let admin_created = cli_user_create(
        &server,
        &seen,
        &[
            "--email",
            "root@example.com",
            "--role",
            "admin",
            "--name",
            "Root",
        ],
        ADMIN_PASSWORD,
    )
    .await;
    let anonymous = Caller::anonymous(&server, &seen);
    let admin = Caller::bearer(
        &server,
        &seen,
        &login(&anonymous, "root@example.com", ADMIN_PASSWORD).await,
    );
    let customer = Customer::create(&admin, "carla").await;
    let new_password = "carla's newer password";
    let (status, body) = admin
        .send(
            Method::PATCH,
            &format!("/api/v1/users/{}", customer.user),
            Some(Body::Json(
                json!({"password": new_password, "display_name": "Carla"}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    admin.get(&format!("/api/v1/users/{}", customer.user)).await;
    admin
        .get(&format!("/api/v1/users/{}", id(&admin_created)))
        .await;
    let users = admin.items("/api/v1/users").await;
    assert_eq!(users.len(), 2, "{users:?}");
    admin.get("/api/v1/auth/me").await;
    // The old password no longer works; the new one does.
    let (status, body) = anonymous
        .post(
            "/api/v1/auth/login",
            json!({"email": customer.email, "password": customer.password}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let carla = Caller::bearer(
        &server,
        &seen,
        &login(&anonymous, &customer.email, new_password).await,
    );
    carla.get("/api/v1/auth/me").await;
    // A wrong password's answer does not echo it.
    anonymous
        .post(
            "/api/v1/auth/login",
            json!({"email": customer.email, "password": "not carla's password"}),
        )
        .await;
    // API tokens are listed by metadata only.
    admin.get("/api/v1/tokens").await;

    let output = server
        .command()
        .args(["user", "list"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run gridlake user list");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    seen.push(&listed);

    seen.assert_no_secrets(&[
        ADMIN_PASSWORD,
        &customer.password,
        new_password,
        "not carla's password",
    ]);
}

/// Without credentials only the public endpoints answer; a session that logged out is
/// refused like an unknown one; so is an API token that was revoked.
#[tokio::test(flavor = "multi_thread")]
async fn missing_logged_out_and_revoked_credentials_are_refused() {
    let server = Server::start().await;
    let seen = Seen::default();
    let admin = Caller::bearer(&server, &seen, server.admin_token());
    let customer = Customer::create(&admin, "dora").await;
    let anonymous = Caller::anonymous(&server, &seen);

    for path in ["/health", "/metrics", "/api/v1/openapi.json"] {
        let (status, body) = anonymous.send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path} is public: {body}");
    }
    for path in [
        "/api/v1/sites",
        "/api/v1/auth/me",
        "/api/v1/sql?q=SELECT%201",
    ] {
        let (status, body) = anonymous.send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "GET {path}: {body}");
        parse_error(&body);
    }
    let (status, body) = anonymous
        .write(
            "/api/v2/write?bucket=b",
            &format!("meter,device_id={} power_w=1", customer.device_id),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = Caller::bearer(&server, &seen, "gls_not_a_session")
        .send(Method::GET, "/api/v1/sites", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let session = login(&anonymous, &customer.email, &customer.password).await;
    let dora = Caller::bearer(&server, &seen, &session);
    assert_eq!(ids(&dora.items("/api/v1/sites").await), [customer.site]);
    let (status, body) = dora.send(Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for path in ["/api/v1/sites", "/api/v1/auth/me"] {
        let (status, body) = dora.send(Method::GET, path, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "GET {path} after logout: {body}"
        );
    }
    // A second logout with the same token is refused too.
    let (status, body) = dora.send(Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A revoked API token (`gridlake token revoke`) stops working at once.
    let (status, created) = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "analyst", "scope": "read"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let analyst = Caller::bearer(
        &server,
        &seen,
        created["token"].as_str().expect("token in the answer"),
    );
    let (status, body) = analyst
        .send(Method::GET, "/api/v1/sql?q=SELECT%201", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let output = server
        .command()
        .args(["token", "revoke", &id(&created).to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run gridlake token revoke");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, body) = analyst
        .send(Method::GET, "/api/v1/sql?q=SELECT%201", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    seen.assert_no_secrets(&[&customer.password]);
}

/// `auth.enabled = false` is possible, and loud: a WARN at start, and requests without
/// credentials do everything.
#[tokio::test(flavor = "multi_thread")]
async fn auth_off_is_announced_and_open() {
    let server = Server::start_with(Options::default().env("GRIDLAKE_AUTH_ENABLED", "false")).await;
    let log = server.log();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("AUTHENTICATION IS OFF")),
        "the server must warn that authentication is off; log:\n{log}"
    );
    let seen = Seen::default();
    let anonymous = Caller::anonymous(&server, &seen);
    let (status, body) = anonymous
        .write(
            "/api/v2/write?bucket=b&precision=s",
            &format!("meter,device_id=open-1 power_w=3 {}", now_s()),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, rows) = anonymous
        .get("/api/v1/sql?q=SELECT%20power_w%20FROM%20meter")
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows, json!([{"power_w": 3.0}]));
    let (status, me) = anonymous.get("/api/v1/auth/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["kind"], "open", "{me}");
    let user = anonymous
        .create(
            "/api/v1/users",
            json!({"email": "eve@example.com", "display_name": "Eve", "role": "customer", "password": "eve's password"}),
        )
        .await;
    assert_eq!(user["email"], "eve@example.com");
    assert_eq!(anonymous.items("/api/v1/users").await.len(), 1);

    // With authentication on (the default) the same requests are refused.
    let guarded = Server::start().await;
    assert!(
        !guarded.log().contains("AUTHENTICATION IS OFF"),
        "no warning when auth is on"
    );
    let (status, body) = Caller::anonymous(&guarded, &seen)
        .send(Method::GET, "/api/v1/users", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    seen.assert_no_secrets(&["eve's password"]);
}

/// The default policy registers a reading's unknown device, unassigned, and its
/// last-seen time follows the readings (flushed in batches).
#[tokio::test(flavor = "multi_thread")]
async fn unknown_devices_are_registered_unassigned_and_seen() {
    let server =
        Server::start_with(Options::default().env("GRIDLAKE_CRM_LAST_SEEN_INTERVAL", "200ms"))
            .await;
    let seen = Seen::default();
    let admin = Caller::bearer(&server, &seen, server.admin_token());
    let t = now_s();
    let (status, body) = admin
        .write(
            "/api/v2/write?bucket=b&precision=s",
            &format!(
                "meter,device_id=stray-1 power_w=5 {}\nmeter,device_id=stray-1 power_w=6 {t}",
                t - 30
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(server.count("meter").await, 2, "the readings are stored");

    let started = Instant::now();
    let device = loop {
        let unassigned = admin.items("/api/v1/devices?unassigned=true").await;
        let found = unassigned
            .iter()
            .find(|d| d["device_id"] == "stray-1")
            .cloned();
        if let Some(device) = found.filter(|d| d["last_seen_ms"].is_i64()) {
            break device;
        }
        assert!(
            started.elapsed() < WAIT,
            "stray-1 must be registered with a last-seen time within {WAIT:?}; unassigned: {unassigned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(device["site_id"].is_null(), "unassigned: {device}");
    assert_eq!(
        device["kind"], "meter",
        "the kind follows the table: {device}"
    );
    assert_eq!(
        device["last_seen_ms"],
        t * 1000,
        "last-seen is the time of the device's newest reading: {device}"
    );
    // A site filter does not list it.
    let (status, list) = admin.get("/api/v1/devices?site_id=1").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([]), "{list}");

    seen.assert_no_secrets(&[]);
}

/// With `crm.unknown_devices = "reject"` a reading of an unknown device is refused,
/// naming it, and nothing of it is stored; registered devices still write.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_devices_are_rejected_when_configured() {
    let server =
        Server::start_with(Options::default().env("GRIDLAKE_CRM_UNKNOWN_DEVICES", "reject")).await;
    let seen = Seen::default();
    let admin = Caller::bearer(&server, &seen, server.admin_token());
    let t = now_s();
    let (status, body) = admin
        .write(
            "/api/v2/write?bucket=b&precision=s",
            &format!("meter,device_id=stray-2 power_w=5 {t}"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = parse_error(&body);
    let reason = error["rejected"][0]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("stray-2"),
        "the reason names the device: {body}"
    );
    assert!(
        !server.has_table("meter").await || server.count("meter").await == 0,
        "nothing of stray-2 is stored"
    );
    assert_eq!(
        admin.items("/api/v1/devices").await,
        Vec::<Value>::new(),
        "a refused device is not registered"
    );

    admin
        .create(
            "/api/v1/devices",
            json!({"kind": "meter", "device_id": "known-1"}),
        )
        .await;
    let (status, body) = admin
        .write(
            "/api/v2/write?bucket=b&precision=s",
            &format!("meter,device_id=known-1 power_w=6 {t}"),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a registered device writes: {body}"
    );
    assert_eq!(server.count("meter").await, 1);

    seen.assert_no_secrets(&[]);
}

/// A gateway's token writes for its site's devices, registers the new devices it writes
/// for on its own site, and is refused another site's device and an unassigned one
/// with one answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_registers_new_devices_on_its_site_and_writes_for_no_other() {
    let server = Server::start().await;
    let seen = Seen::default();
    let admin = Caller::bearer(&server, &seen, server.admin_token());
    let home = Customer::create(&admin, "gina").await;
    let neighbour = Customer::create(&admin, "nick").await;
    admin
        .create(
            "/api/v1/devices",
            json!({"kind": "meter", "device_id": "loose-1"}),
        )
        .await;
    let site = home.site.to_string();
    let token = server
        .create_token(&["--scope", "write", "--site-id", &site])
        .await;
    let gateway = Caller::influx_token(&server, &seen, &token);
    let t = now_s();
    let (status, body) = gateway
        .write(
            "/api/v2/write?precision=s",
            &format!(
                "meter,device_id={} power_w=1 {t}\nmeter,device_id=meter-new power_w=2 {t}\n\
                 meter,device_id={} power_w=3 {t}\nmeter,device_id=loose-1 power_w=4 {t}",
                home.device_id, neighbour.device_id
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = parse_error(&body);
    let rejected = error["rejected"].as_array().expect("rejected lines");
    let lines: Vec<i64> = rejected
        .iter()
        .map(|r| r["line"].as_i64().expect("line"))
        .collect();
    assert_eq!(lines, [3, 4], "{body}");
    let reason = |i: usize| rejected[i]["reason"].as_str().expect("reason");
    assert!(reason(0).contains(&neighbour.device_id), "{body}");
    assert_eq!(
        reason(0).replace(&neighbour.device_id, "loose-1"),
        reason(1),
        "another site's device and an unassigned one get the same answer: {body}"
    );
    assert_eq!(
        server.count("meter").await,
        2,
        "the site's meter and the new one"
    );

    // The new device is registered on the gateway's site.
    let started = Instant::now();
    loop {
        let on_site = admin
            .items(&format!("/api/v1/devices?site_id={}", home.site))
            .await;
        if on_site.iter().any(|d| d["device_id"] == "meter-new") {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "meter-new must be registered on site {} within {WAIT:?}: {on_site:?}",
            home.site
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unassigned = admin.items("/api/v1/devices?unassigned=true").await;
    let unassigned: Vec<&str> = unassigned
        .iter()
        .map(|d| d["device_id"].as_str().expect("device_id"))
        .collect();
    assert_eq!(unassigned, ["loose-1"], "nothing registered unassigned");

    seen.assert_no_secrets(&[&home.password, &neighbour.password]);
}

/// `/api/v1/openapi.json` is public and a valid OpenAPI document by
/// `openapi-spec-validator`, an implementation that is not ours.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_is_public_and_valid() {
    let server = Server::start().await;
    let seen = Seen::default();
    let (status, text) = Caller::anonymous(&server, &seen)
        .send(Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let document: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document: {}",
        &text[..text.len().min(200)]
    );
    for path in [
        "/api/v1/auth/login",
        "/api/v1/sites/{id}",
        "/api/v1/sites/{id}/readings",
        "/api/v2/write",
        "/api/v1/sql",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }

    if !python_peer_available(
        "import openapi_spec_validator",
        "openapi-spec-validator",
        "\"openapi-spec-validator==0.9.*\"",
    ) {
        return;
    }
    let mut child = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(sys.stdin))\n\
             print('valid')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("write the document");
    drop(stdin);
    let output = child.wait_with_output().await.expect("python3 output");
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses the document:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "valid");
}

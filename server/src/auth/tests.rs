//! The authorization matrix over every endpoint of `http::routes`, and the login,
//! session and token behaviour, through the real router and a real SQLite side store.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use bytesize::ByteSize;
use crm::{CrmConfig, Role, TokenScope};
use serde_json::json;

use super::{AuthConfig, Rule};
use crate::http::routes::endpoints;
use crate::testing::{Answer, PASSWORD, TestApp};

/// Who calls, in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Anonymous,
    User(Role),
    Token(TokenScope),
}

const CALLERS: [Caller; 11] = [
    Caller::Anonymous,
    Caller::User(Role::Customer),
    Caller::User(Role::Prosumer),
    Caller::User(Role::Business),
    Caller::User(Role::Admin),
    Caller::User(Role::Support),
    Caller::User(Role::Analyst),
    Caller::User(Role::Gateway),
    Caller::Token(TokenScope::Write),
    Caller::Token(TokenScope::Read),
    Caller::Token(TokenScope::Admin),
];

/// The specification, written out rather than derived from `Rule::check`: which callers
/// each rule lets through.
fn allowed(rule: Rule, caller: Caller) -> bool {
    use Caller::{Anonymous, Token, User};
    use Role::{Admin, Analyst, Business, Customer, Prosumer, Support};
    match (rule, caller) {
        (Rule::Public, _) => true,
        (_, Anonymous) => false,
        (Rule::SignedIn, _) => true,
        (Rule::Portal, User(Customer | Prosumer | Business | Admin | Support | Analyst)) => true,
        (Rule::Portal, Token(TokenScope::Read | TokenScope::Admin)) => true,
        (Rule::Write, User(Admin)) => true,
        (Rule::Write, Token(TokenScope::Write | TokenScope::Admin)) => true,
        (Rule::Sql, User(Admin | Analyst)) => true,
        (Rule::Sql, Token(TokenScope::Read | TokenScope::Admin)) => true,
        (Rule::Staff, User(Admin | Support)) => true,
        (Rule::Staff, Token(TokenScope::Admin)) => true,
        (Rule::Admin, User(Admin)) => true,
        (Rule::Admin, Token(TokenScope::Admin)) => true,
        _ => false,
    }
}

/// Every endpoint and the rule it must have.
const EXPECTED_RULES: &[(&str, &str, Rule)] = &[
    ("GET", "/health", Rule::Public),
    ("GET", "/metrics", Rule::Public),
    ("POST", "/api/v1/auth/login", Rule::Public),
    ("GET", "/api/v1/openapi.json", Rule::Public),
    ("POST", "/api/v1/auth/logout", Rule::SignedIn),
    ("GET", "/api/v1/auth/me", Rule::SignedIn),
    ("GET", "/settings", Rule::Public),
    ("POST", "/write", Rule::Write),
    ("POST", "/api/v2/write", Rule::Write),
    ("POST", "/api/v3/write_lp", Rule::Write),
    ("POST", "/api/v1/write/json", Rule::Write),
    ("GET", "/api/v1/sql", Rule::Sql),
    ("POST", "/api/v1/sql", Rule::Sql),
    ("GET", "/api/v1/series", Rule::Portal),
    ("GET", "/api/v1/energy", Rule::Portal),
    ("GET", "/api/v1/latest", Rule::Portal),
    ("GET", "/api/v1/modbus/devices", Rule::Staff),
    ("GET", "/api/v1/users", Rule::Staff),
    ("GET", "/api/v1/users/{id}", Rule::Staff),
    ("POST", "/api/v1/users", Rule::Admin),
    ("PATCH", "/api/v1/users/{id}", Rule::Admin),
    ("DELETE", "/api/v1/users/{id}", Rule::Admin),
    ("GET", "/api/v1/accounts", Rule::Portal),
    ("GET", "/api/v1/accounts/{id}", Rule::Portal),
    ("POST", "/api/v1/accounts", Rule::Staff),
    ("PUT", "/api/v1/accounts/{id}", Rule::Staff),
    ("DELETE", "/api/v1/accounts/{id}", Rule::Staff),
    ("GET", "/api/v1/sites", Rule::Portal),
    ("GET", "/api/v1/sites/{id}", Rule::Portal),
    ("GET", "/api/v1/sites/{id}/readings", Rule::Portal),
    ("POST", "/api/v1/sites", Rule::Staff),
    ("PUT", "/api/v1/sites/{id}", Rule::Staff),
    ("DELETE", "/api/v1/sites/{id}", Rule::Staff),
    ("GET", "/api/v1/devices", Rule::Portal),
    ("GET", "/api/v1/devices/{id}", Rule::Portal),
    ("POST", "/api/v1/devices", Rule::Staff),
    ("PUT", "/api/v1/devices/{id}", Rule::Staff),
    ("DELETE", "/api/v1/devices/{id}", Rule::Staff),
    ("GET", "/api/v1/tokens", Rule::Admin),
    ("POST", "/api/v1/tokens", Rule::Admin),
    ("DELETE", "/api/v1/tokens/{id}", Rule::Admin),
    ("GET", "/api/v1/tables", Rule::Admin),
    ("GET", "/api/v1/tables/{table}", Rule::Admin),
    ("PUT", "/api/v1/tables/{table}/retention", Rule::Admin),
    ("DELETE", "/api/v1/tables/{table}/retention", Rule::Admin),
    ("POST", "/api/v1/delete", Rule::Admin),
    ("POST", "/api/v1/admin/compact", Rule::Admin),
];

/// A concrete path for a route pattern: ids that exist nowhere, so an allowed call ends
/// in the handler (404, 400, 422, ...) and changes nothing.
fn concrete(path: &str) -> String {
    path.replace("{id}", "999999")
        .replace("{table}", "no_such_table")
}

/// Ids of real entities, for reads: what an allowed read returns is then real data, which
/// the password-hash check looks through.
struct Real {
    user: i64,
    account: i64,
    site: i64,
    device: i64,
}

impl Real {
    /// `path` with a real id when `method` only reads; [`concrete`] otherwise.
    fn path(&self, method: &axum::http::Method, path: &str) -> String {
        if method != axum::http::Method::GET {
            return concrete(path);
        }
        let id = if path.starts_with("/api/v1/users/") {
            self.user
        } else if path.starts_with("/api/v1/accounts/") {
            self.account
        } else if path.starts_with("/api/v1/sites/") {
            self.site
        } else if path.starts_with("/api/v1/devices/") {
            self.device
        } else {
            return concrete(path);
        };
        path.replace("{id}", &id.to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_refuses_or_admits_every_caller_as_its_rule_says() {
    let app = TestApp::new().await;
    let (owner, _) = app.user(Role::Customer, "owner@example.com").await;
    let (account, site) = app.home(&owner, "ACC-1").await;
    let mut device = crm::NewDevice::new(crm::DeviceKind::Meter, "matrix-meter");
    device.site_id = Some(site.id);
    let device = app.crm.devices().create(device).await.unwrap();
    app.state.devices().stored(&device);
    let real = Real {
        user: owner.id,
        account: account.id,
        site: site.id,
        device: device.id,
    };
    let mut credentials = Vec::new();
    for caller in CALLERS {
        let token = match caller {
            Caller::Anonymous => None,
            Caller::User(role) => {
                let email = format!("{}@example.com", role.as_str());
                Some(app.user(role, &email).await.1)
            }
            Caller::Token(scope) => {
                let site_id = (scope == TokenScope::Write).then_some(site.id);
                Some(app.token(scope, site_id).await.1)
            }
        };
        credentials.push((caller, token));
    }

    let endpoints = endpoints();
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for endpoint in &endpoints {
        assert!(
            seen.insert((endpoint.path, endpoint.method.as_str().to_owned())),
            "{} {} is declared twice",
            endpoint.method,
            endpoint.path
        );
        let path = real.path(&endpoint.method, endpoint.path);
        for (caller, token) in &credentials {
            // Logging out ends the session: give that call a session of its own.
            let token = match (endpoint.path, caller) {
                ("/api/v1/auth/logout", Caller::User(role)) => {
                    let user = app
                        .crm
                        .users()
                        .find_by_email(&format!("{}@example.com", role.as_str()))
                        .await
                        .unwrap()
                        .unwrap();
                    let (_, token) = app
                        .crm
                        .sessions()
                        .create(user.id, Duration::from_secs(60))
                        .await
                        .unwrap();
                    Some(token)
                }
                _ => token.clone(),
            };
            let answer = app
                .call(endpoint.method.as_str(), &path, token.as_deref(), None)
                .await;
            assert!(
                !answer.text().contains("$argon2"),
                "{} {path} as {caller:?} returned a password hash",
                endpoint.method
            );
            let expected_ok = allowed(endpoint.rule, *caller);
            let got = answer.status;
            let ok = if expected_ok {
                got != StatusCode::UNAUTHORIZED && got != StatusCode::FORBIDDEN
            } else if *caller == Caller::Anonymous {
                got == StatusCode::UNAUTHORIZED
            } else {
                got == StatusCode::FORBIDDEN
            };
            if !ok {
                failures.push(format!(
                    "{} {path} ({:?}) as {caller:?}: {got} {}",
                    endpoint.method,
                    endpoint.rule,
                    answer.text()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The declared rules, spelled out: changing who may call an endpoint means changing
    // this list too, in the same review.
    let declared: BTreeSet<(String, &str, Rule)> = endpoints
        .iter()
        .map(|e| (e.method.to_string(), e.path, e.rule))
        .collect();
    let expected: BTreeSet<(String, &str, Rule)> = EXPECTED_RULES
        .iter()
        .map(|&(method, path, rule)| (method.to_owned(), path, rule))
        .collect();
    assert_eq!(
        declared.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, &str, Rule)>::new(),
        "declared but not expected"
    );
    assert_eq!(
        expected.difference(&declared).collect::<Vec<_>>(),
        Vec::<&(String, &str, Rule)>::new(),
        "expected but not declared"
    );
    for rule in Rule::ALL {
        assert!(
            endpoints.iter().any(|e| e.rule == rule),
            "no endpoint uses {rule:?}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_auth_off_every_endpoint_is_open() {
    let app = TestApp::open(ByteSize::mib(1)).await;
    for endpoint in endpoints() {
        let path = concrete(endpoint.path);
        let answer = app.call(endpoint.method.as_str(), &path, None, None).await;
        assert!(
            answer.status != StatusCode::UNAUTHORIZED && answer.status != StatusCode::FORBIDDEN,
            "{} {path}: {} {}",
            endpoint.method,
            answer.status,
            answer.text()
        );
    }
    app.finish().await;
}

async fn login(app: &TestApp, email: &str, password: &str) -> Answer {
    app.call(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({ "email": email, "password": password })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn login_gives_a_session_that_logout_ends() {
    let app = TestApp::new().await;
    let (user, _) = app.user(Role::Customer, "Ann@Example.com").await;
    let answer = login(&app, "ANN@example.com", PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert!(!answer.text().contains("password"), "{}", answer.text());
    assert_eq!(body["user"]["id"], user.id);
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("gls_"));
    assert!(body["expires_ms"].as_i64().unwrap() > 0);

    let me = app.call("GET", "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["kind"], "user");
    assert_eq!(me.json()["user"]["email"], "ann@example.com");

    let out = app
        .call("POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = app.call("GET", "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(
        after.json()["error"]
            .as_str()
            .unwrap()
            .contains("logged out")
    );
    assert!(after.headers.contains_key(header::WWW_AUTHENTICATE));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_sessions_and_revoked_tokens_are_refused() {
    let app = TestApp::new().await;
    let (user, _) = app.user(Role::Analyst, "ana@example.com").await;
    let (_, short) = app
        .crm
        .sessions()
        // Long enough that the first request is surely inside it on a loaded CI
        // machine (20 ms was not: the suite saw a 401 there once).
        .create(user.id, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        app.call("GET", "/api/v1/auth/me", Some(&short), None)
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = app.call("GET", "/api/v1/auth/me", Some(&short), None).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(
        expired.json()["error"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    let (record, token) = app.token(TokenScope::Read, None).await;
    let sql = "/api/v1/sql?q=SELECT%201";
    assert_eq!(
        app.call("GET", sql, Some(&token), None).await.status,
        StatusCode::OK
    );
    app.crm.api_tokens().revoke(record.id).await.unwrap();
    let revoked = app.call("GET", sql, Some(&token), None).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);

    let garbage = app.call("GET", sql, Some("not-a-token"), None).await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert!(garbage.json()["error"].as_str().unwrap().contains("glk_"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failed_logins_are_limited_per_email_and_per_address() {
    let auth = AuthConfig {
        login_max_failures: 3,
        // Every attempt that is not a success counts, refused ones too: bob's three
        // failures and one refusal, then two more failures, reach it.
        login_max_failures_per_ip: 6,
        ..AuthConfig::default()
    };
    let app = TestApp::with(auth, CrmConfig::default(), ByteSize::mib(1)).await;
    app.user(Role::Customer, "bob@example.com").await;
    app.user(Role::Customer, "carol@example.com").await;
    for _ in 0..3 {
        let answer = login(&app, "bob@example.com", "wrong password").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.json()["error"], "wrong email or password");
    }
    // The fourth try is refused before the password is checked, even the right one.
    let limited = login(&app, "bob@example.com", PASSWORD).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text()
    );
    assert_eq!(limited.headers[header::RETRY_AFTER], "900");
    assert!(
        limited.json()["error"]
            .as_str()
            .unwrap()
            .contains("login_max_failures")
    );
    // Another account is not affected by bob's limit...
    assert_eq!(
        login(&app, "carol@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    // ...until the address has failed too often, whatever the email.
    for email in ["x@example.com", "y@example.com"] {
        assert_eq!(
            login(&app, email, "nope").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let by_address = login(&app, "carol@example.com", PASSWORD).await;
    assert_eq!(by_address.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        by_address.json()["error"]
            .as_str()
            .unwrap()
            .contains("login_max_failures_per_ip")
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_errors_name_the_problem() {
    let app = TestApp::new().await;
    let missing = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "a@b.c" })),
        )
        .await;
    assert_eq!(
        missing.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        missing.text()
    );
    assert_eq!(missing.json()["fields"][0]["field"], "password");
    let unknown = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "a@b.c", "password": "x", "remember": true })),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.json()["fields"][0]["field"], "remember");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn influx_clients_authenticate_with_token_basic_or_p() {
    let app = TestApp::new().await;
    let (owner, _) = app.user(Role::Customer, "o@example.com").await;
    let (_, site) = app.home(&owner, "ACC-9").await;
    let (_, token) = app.token(TokenScope::Write, Some(site.id)).await;
    let line = "meter,device_id=m-1 power_w=1.5 1700000000000000000";
    let send = |request: Request<Body>| app.send(request);

    let v2 = Request::post("/api/v2/write")
        .header(header::AUTHORIZATION, format!("Token {token}"))
        .body(Body::from(line))
        .unwrap();
    let answer = send(v2).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{token}"));
    let v1 = Request::post("/write?db=x")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::from(line))
        .unwrap();
    assert_eq!(send(v1).await.status, StatusCode::NO_CONTENT);

    let query = Request::post(format!("/write?db=x&u=gw&p={token}"))
        .body(Body::from(line))
        .unwrap();
    assert_eq!(send(query).await.status, StatusCode::NO_CONTENT);

    // `p` counts only on the v1 route.
    let v3 = Request::post(format!("/api/v3/write_lp?p={token}"))
        .body(Body::from(line))
        .unwrap();
    assert_eq!(send(v3).await.status, StatusCode::UNAUTHORIZED);

    let wrong = Request::post("/api/v2/write")
        .header(header::AUTHORIZATION, "Digest abc")
        .body(Body::from(line))
        .unwrap();
    let answer = send(wrong).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.json()["error"].as_str().unwrap().contains("Digest"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_failed_logins_get_no_more_guesses_than_the_limit() {
    let auth = AuthConfig {
        login_max_failures: 5,
        login_max_failures_per_ip: 1000,
        ..AuthConfig::default()
    };
    let app =
        std::sync::Arc::new(TestApp::with(auth, CrmConfig::default(), ByteSize::mib(1)).await);
    app.user(Role::Customer, "victim@example.com").await;
    // Case and spaces do not make another email.
    let emails = [
        "victim@example.com",
        "  VICTIM@Example.com ",
        "Victim@example.COM",
    ];
    let mut tasks = Vec::new();
    for i in 0..30 {
        let app = app.clone();
        let email = emails[i % emails.len()];
        tasks.push(tokio::spawn(async move {
            login(&app, email, "not the password").await.status
        }));
    }
    let mut guesses = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::UNAUTHORIZED => guesses += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    // However the requests interleave, no more than the limit reach a password check
    // (when all arrive at once, none may).
    assert!(
        guesses <= 5,
        "{guesses} passwords were checked; the limit is 5"
    );
    // The right password is refused too while the limit holds.
    assert_eq!(
        login(&app, "victim@example.com", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let long = login(&app, &"a".repeat(300), "x").await;
    assert_eq!(long.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(long.json()["fields"][0]["field"], "email");
    let Ok(app) = std::sync::Arc::try_unwrap(app) else {
        panic!("tasks are done")
    };
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivation_and_password_change_end_live_sessions() {
    let app = TestApp::new().await;
    let (_, admin) = app.user(Role::Admin, "root@example.com").await;
    let (ann, ann_session) = app.user(Role::Customer, "ann@example.com").await;
    let (bob, bob_session) = app.user(Role::Customer, "bob@example.com").await;
    let me = |token: String| {
        let app = &app;
        async move {
            app.call("GET", "/api/v1/auth/me", Some(&token), None)
                .await
                .status
        }
    };
    assert_eq!(me(ann_session.clone()).await, StatusCode::OK);
    assert_eq!(me(bob_session.clone()).await, StatusCode::OK);

    let path = format!("/api/v1/users/{}", ann.id);
    let changed = app
        .call(
            "PATCH",
            &path,
            Some(&admin),
            Some(json!({ "password": "a new long password" })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(me(ann_session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(&app, "ann@example.com", "a new long password")
            .await
            .status,
        StatusCode::OK
    );

    let path = format!("/api/v1/users/{}", bob.id);
    let off = app
        .call(
            "PATCH",
            &path,
            Some(&admin),
            Some(json!({ "active": false })),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    assert_eq!(me(bob_session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(&app, "bob@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.finish().await;
}

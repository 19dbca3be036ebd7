//! The router over real parts, for unit tests: a store and a SQLite side store in a temp
//! directory, the query engine, the registry cache; requests go through the real router
//! without a socket.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use bytesize::ByteSize;
use crm::{
    Account, AccountStatus, AccountType, ApiToken, Crm, CrmConfig, NewAccount, NewApiToken,
    NewSite, NewUser, PropertyType, Role, Site, TokenScope, User,
};
use prometheus_client::registry::Registry;
use query::{QueryConfig, QueryEngine};
use serde_json::Value;
use storage::{Store, StoreConfig};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::auth::AuthConfig;
use crate::http::{Access, AppState, router};
use crate::registry::DeviceRegistry;

/// The password every test user gets.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) struct TestApp {
    /// Holds the store's and the side store's files until the test ends.
    _dir: TempDir,
    pub(crate) store: Store,
    pub(crate) crm: Crm,
    pub(crate) state: AppState,
    pub(crate) app: Router,
}

/// A response, read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: bytes::Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `(field, message)` pairs of a 422, in order; fails unless the answer is a
    /// 422 with an `error` text and a non-empty message for every field.
    pub(crate) fn validation_errors(&self) -> Vec<(String, String)> {
        assert_eq!(
            self.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            self.text()
        );
        let body = self.json();
        assert!(body["error"].is_string(), "{body}");
        body["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("no fields: {body}"))
            .iter()
            .map(|f| {
                let message = f["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{f}");
                let field = f["field"].as_str().expect("field name");
                (field.to_owned(), message.to_owned())
            })
            .collect()
    }
}

impl TestApp {
    /// Auth on, registry registering unknown devices.
    pub(crate) async fn new() -> Self {
        Self::with(
            AuthConfig::default(),
            CrmConfig::default(),
            ByteSize::mib(1),
        )
        .await
    }

    /// `auth.enabled = false`, for tests about something else.
    pub(crate) async fn open(max_body_size: ByteSize) -> Self {
        let auth = AuthConfig {
            enabled: false,
            ..AuthConfig::default()
        };
        Self::with(auth, CrmConfig::default(), max_body_size).await
    }

    pub(crate) async fn with(
        auth: AuthConfig,
        crm_config: CrmConfig,
        max_body_size: ByteSize,
    ) -> Self {
        Self::with_query(auth, crm_config, max_body_size, QueryConfig::default()).await
    }

    /// [`TestApp::with`] and query settings (the rollups' time zone, ...). The rollups
    /// are not refreshed in the background: call `engine().rollups().refresh_now()`.
    pub(crate) async fn with_query(
        auth: AuthConfig,
        crm_config: CrmConfig,
        max_body_size: ByteSize,
        query: QueryConfig,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("store opens");
        let engine = QueryEngine::new(store.clone(), query).expect("engine");
        let mut registry = Registry::default();
        store.register_metrics(&mut registry);
        engine.register_metrics(&mut registry);
        let crm = Crm::open(&crm_config, dir.path()).await.expect("crm opens");
        let devices = DeviceRegistry::load(crm.clone(), &crm_config)
            .await
            .expect("registry loads");
        let access = Access {
            crm: crm.clone(),
            auth,
            devices,
        };
        let state = AppState::new(store.clone(), engine, registry, max_body_size, access);
        Self {
            _dir: dir,
            store,
            crm,
            app: router(state.clone()),
            state,
        }
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with `token` as `Authorization: Bearer`, if given; a JSON body is sent
    /// with its content type.
    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).expect("request builds")).await
    }

    /// Writes line protocol (times in seconds) as `token`, a write-capable caller;
    /// panics unless every line is stored.
    pub(crate) async fn write_lp(&self, token: &str, lines: &str) {
        self.write_lp_in(token, "s", lines).await;
    }

    /// [`TestApp::write_lp`] with times in `precision` (`ns`, `us`, `ms`, `s`).
    pub(crate) async fn write_lp_in(&self, token: &str, precision: &str, lines: &str) {
        let request = Request::post(format!("/api/v3/write_lp?precision={precision}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(lines.to_owned()))
            .expect("request builds");
        let answer = self.send(request).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
    }

    /// A user with `role` and [`PASSWORD`], signed in: the user and a session token.
    pub(crate) async fn user(&self, role: Role, email: &str) -> (User, String) {
        let user = self
            .crm
            .users()
            .create(NewUser {
                email: email.to_owned(),
                display_name: email.to_owned(),
                role,
                password: Some(PASSWORD.to_owned()),
            })
            .await
            .expect("user created");
        let (_, token) = self
            .crm
            .sessions()
            .create(user.id, std::time::Duration::from_secs(3600))
            .await
            .expect("session created");
        (user, token)
    }

    /// An account of `user` with one site.
    pub(crate) async fn home(&self, user: &User, number: &str) -> (Account, Site) {
        let account = self
            .crm
            .accounts()
            .create(NewAccount {
                user_id: user.id,
                account_number: number.to_owned(),
                account_type: AccountType::Residential,
                status: AccountStatus::Active,
                billing_email: None,
                tax_id: None,
            })
            .await
            .expect("account created");
        let site = self
            .crm
            .sites()
            .create(NewSite {
                account_id: account.id,
                name: format!("home of {number}"),
                street: None,
                street_number: None,
                city: Some("Berlin".to_owned()),
                postal_code: None,
                state: None,
                country: Some("DE".to_owned()),
                latitude: None,
                longitude: None,
                time_zone: "Europe/Berlin".to_owned(),
                property_type: PropertyType::Residential,
                is_primary: true,
            })
            .await
            .expect("site created");
        (account, site)
    }

    /// Registers `device_id` of `kind` on `site_id` through the API as `admin` (so the
    /// registry cache learns it too); returns its crm id.
    pub(crate) async fn device(
        &self,
        admin: &str,
        kind: &str,
        device_id: &str,
        site_id: i64,
    ) -> i64 {
        let answer = self
            .call(
                "POST",
                "/api/v1/devices",
                Some(admin),
                Some(serde_json::json!({"kind": kind, "device_id": device_id, "site_id": site_id})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        answer.json()["id"].as_i64().expect("id")
    }

    /// Moves device `id` (`device_id` of `kind`) to `site_id` through the API as `admin`;
    /// returns its `assigned_ms`, the time from which its readings are the new site's.
    pub(crate) async fn move_device(
        &self,
        admin: &str,
        id: i64,
        kind: &str,
        device_id: &str,
        site_id: i64,
    ) -> i64 {
        let answer = self
            .call(
                "PUT",
                &format!("/api/v1/devices/{id}"),
                Some(admin),
                Some(serde_json::json!({"kind": kind, "device_id": device_id, "site_id": site_id})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer.json()["assigned_ms"]
            .as_i64()
            .expect("a moved device has assigned_ms")
    }

    /// An API token.
    pub(crate) async fn token(
        &self,
        scope: TokenScope,
        site_id: Option<i64>,
    ) -> (ApiToken, String) {
        self.crm
            .api_tokens()
            .create(NewApiToken {
                name: format!("{} token", scope.as_str()),
                scope,
                site_id,
                expires_ms: None,
            })
            .await
            .expect("token created")
    }

    pub(crate) async fn finish(self) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.shutdown())
            .await
            .expect("shutdown task")
            .expect("store shuts down");
        self.crm.close().await;
    }
}

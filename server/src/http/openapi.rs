//! The OpenAPI 3.1 document of the HTTP API, served at `GET /api/v1/openapi.json`.
//!
//! Derived from the code: every handler carries a `#[utoipa::path]` annotation next to
//! its definition, and the request and response types derive their schemas, so the
//! document changes with the code. [`ApiDoc`] lists the handlers; a test checks that
//! every row of the endpoint table (`routes::endpoints`) is in the document with its
//! method, so a new route cannot be left out.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

// The handler modules: `paths(...)` below names their functions.
use super::rest::{accounts, devices, readings, sites, tokens, users};
use super::{delete, latest, ops, series, sql, tables, write};
use crate::auth;

/// The document's source: handlers, shared schemas, security schemes, tags.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "gridlake",
        description = "Energy telemetry: InfluxDB-compatible writes, SQL over the readings, \
            and the portal's users, accounts, sites, devices and API tokens.\n\n\
            Authenticate with a session token from `POST /api/v1/auth/login` or an API token \
            (`glk_...`), sent as `Authorization: Bearer <token>`; the write endpoints also \
            take InfluxDB's `Authorization: Token <token>`. Customers see only their own \
            accounts, sites, devices and readings: an id outside their scope answers 404, \
            like one that does not exist.\n\n\
            Lists take `limit` (1 to 1000, default 100) and `offset` and answer \
            `{\"items\": [...], \"limit\", \"offset\", \"next_offset\"}`; `next_offset` is \
            null on the last page. Unknown query parameters are refused (400). Invalid \
            bodies answer 422 with every bad field named in `fields`."
    ),
    paths(
        ops::health,
        ops::metrics,
        ops::settings,
        ops::modbus_devices,
        openapi_json,
        auth::login,
        auth::logout,
        auth::me,
        write::write_v1,
        write::write_v2,
        write::write_lp,
        write::write_json,
        sql::sql_get,
        sql::sql_post,
        series::series,
        series::energy,
        latest::latest,
        users::list_users,
        users::create_user,
        users::get_user,
        users::update_user,
        users::delete_user,
        accounts::list_accounts,
        accounts::create_account,
        accounts::get_account,
        accounts::update_account,
        accounts::delete_account,
        sites::list_sites,
        sites::create_site,
        sites::get_site,
        sites::update_site,
        sites::delete_site,
        readings::site_readings,
        devices::list_devices,
        devices::create_device,
        devices::get_device,
        devices::update_device,
        devices::delete_device,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
        tables::list_tables,
        tables::get_table,
        tables::set_retention,
        tables::reset_retention,
        tables::compact,
        delete::delete,
    ),
    components(schemas(ErrorBody, ValidationErrorBody, crm::FieldError)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ops", description = "Health, metrics, the OpenAPI document"),
        (name = "auth", description = "Login sessions"),
        (name = "write", description = "Writing readings (InfluxDB line protocol, JSON)"),
        (name = "sql", description = "Read-only SQL over the readings"),
        (name = "charts", description = "Readings per time bucket, and a site's energy balance (portal, scoped)"),
        (name = "latest", description = "The newest values of every device (portal, scoped)"),
        (name = "users", description = "Users (staff read, admins change)"),
        (name = "accounts", description = "Billing accounts (portal reads, staff change)"),
        (name = "sites", description = "Sites and their readings (portal reads, staff change)"),
        (name = "devices", description = "The device registry (portal reads, staff change)"),
        (name = "tokens", description = "API tokens (admins)"),
        (name = "storage", description = "Tables, retention, deletes and compaction (admins)"),
    )
)]
pub(crate) struct ApiDoc;

/// The body of every error but validation errors.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong and, for client errors, what to fix.
    error: String,
}

/// The body of a 422: the invalid fields, each with its reason.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ValidationErrorBody {
    /// All the reasons in one line.
    error: String,
    /// One entry per invalid field.
    fields: Vec<crm::FieldError>,
}

/// Adds the two ways to present a token: `bearer` (`Authorization: Bearer <token>`,
/// sessions and API tokens) and `token` (InfluxDB's `Authorization: Token <token>`).
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token (`gls_...`, from POST /api/v1/auth/login) or an API \
                         token (`glk_...`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "InfluxDB style: `Token <token>` (also accepted: HTTP Basic auth with the \
                 token as the password)",
            ))),
        );
    }
}

/// The document as JSON, built once: it depends only on the code.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()));

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub(crate) async fn openapi_json() -> Response {
    match &*DOCUMENT {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => super::error::ApiError::Internal(
            format!("the OpenAPI document does not serialize: {e}").into(),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::http::routes;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT.as_ref().expect("document serializes"))
            .expect("document is JSON")
    }

    #[test]
    fn every_endpoint_is_documented_with_its_method() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut missing = Vec::new();
        for endpoint in routes::endpoints() {
            let method = endpoint.method.as_str().to_ascii_lowercase();
            if paths
                .get(endpoint.path)
                .and_then(|p| p.get(&method))
                .is_none()
            {
                missing.push(format!("{} {}", endpoint.method, endpoint.path));
            }
        }
        assert!(
            missing.is_empty(),
            "not in the OpenAPI document: {missing:?}"
        );
        // And nothing documented that the router does not serve.
        let served: Vec<(String, String)> = routes::endpoints()
            .iter()
            .map(|e| (e.path.to_owned(), e.method.as_str().to_ascii_lowercase()))
            .collect();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                assert!(
                    served.contains(&(path.clone(), method.clone())),
                    "documented but not routed: {method} {path}"
                );
            }
        }
    }

    #[test]
    fn no_schema_has_a_password_hash() {
        fn walk(value: &Value, at: &str, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        if key.contains("password_hash") {
                            found.push(format!("{at}/{key}"));
                        }
                        walk(child, &format!("{at}/{key}"), found);
                    }
                }
                Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(child, &format!("{at}/{i}"), found);
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&document(), "", &mut found);
        assert!(found.is_empty(), "{found:?}");
    }

    /// The document validates against the OpenAPI 3.1 specification, by the Python
    /// `openapi-spec-validator` (skipped, saying so, when it is not installed, unless
    /// CI requires it).
    #[test]
    fn document_passes_the_openapi_spec_validator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("openapi.json");
        std::fs::write(&path, DOCUMENT.as_ref().expect("document serializes"))
            .expect("write document");
        let run = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&path)
            .output();
        let required = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var_os("GRIDLAKE_REQUIRE_PEERS").is_some();
        let output = match run {
            Ok(output) if output.status.success() => return,
            Ok(output) => output,
            Err(e) => {
                assert!(!required, "python3 is required: {e}");
                eprintln!("SKIPPED: python3 not found ({e})");
                return;
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named openapi_spec_validator") {
            assert!(!required, "openapi-spec-validator is required: {stderr}");
            eprintln!("SKIPPED: pip install openapi-spec-validator to validate the document");
            return;
        }
        panic!(
            "the OpenAPI document does not validate:\n{}{stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    #[test]
    fn schemas_and_security_are_declared() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "User",
            "NewUser",
            "UserUpdate",
            "Account",
            "NewAccount",
            "AccountUpdate",
            "Site",
            "NewSite",
            "Device",
            "NewDevice",
            "ApiToken",
            "NewApiToken",
            "CreatedToken",
            "Readings",
            "Latest",
            "LatestRow",
            "Series",
            "Energy",
            "Role",
            "DeviceKind",
            "ErrorBody",
            "ValidationErrorBody",
        ] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        assert_eq!(
            doc["components"]["schemas"]["Role"]["enum"],
            serde_json::json!([
                "customer", "prosumer", "business", "admin", "support", "analyst", "gateway"
            ])
        );
        let user = &doc["components"]["schemas"]["NewUser"]["properties"]["password"];
        assert_eq!(user["writeOnly"], true, "{user}");
        let security = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        assert!(security.contains_key("bearer") && security.contains_key("token"));
        // A scoped endpoint declares its security and its 404.
        let get_site = &doc["paths"]["/api/v1/sites/{id}"]["get"];
        assert!(get_site["security"].is_array(), "{get_site}");
        assert!(get_site["responses"]["404"].is_object(), "{get_site}");
        let create = &doc["paths"]["/api/v1/devices"]["post"]["responses"]["422"];
        assert!(create.is_object(), "{create}");
    }
}

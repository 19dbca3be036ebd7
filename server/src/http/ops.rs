//! Routes for operators and client libraries: health, metrics, questdb-rs settings, and
//! the answers for paths and methods that do not exist.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// The OpenMetrics text format `prometheus_client` writes; Prometheus scrapes it.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /health`: 200 while the server runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    responses((status = 200, description = "Running: status, version, uptime", body = serde_json::Value))
)]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "pass",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.uptime().as_secs(),
    }))
}

/// `GET /metrics`: storage, query and HTTP metrics in Prometheus' text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, state.registry())
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response())
}

/// `GET /api/v1/modbus/devices`: every configured Modbus device with its state (online,
/// last error, counts of ok, failed, missed and skipped cycles, next poll) and what SunSpec
/// discovery found (models and their addresses, manufacturer, model, serial).
#[utoipa::path(
    get,
    path = "/api/v1/modbus/devices",
    tag = "ops",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The Modbus collector's devices and their state", body = serde_json::Value),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "Needs an admin or support user, or an admin token"),
    )
)]
pub(crate) async fn modbus_devices(State(state): State<AppState>) -> Json<Value> {
    match state.modbus() {
        Some(devices) => Json(json!({ "enabled": true, "devices": devices.snapshot() })),
        None => Json(json!({ "enabled": false, "devices": [] })),
    }
}

/// `GET /settings`: what questdb-rs's HTTP sender reads before its first write.
///
/// The client (7.x, `read_server_settings`) picks the first of its protocol versions
/// that appears in `config["line.proto.support.versions"]` and takes its table and column
/// name limit from `config["cairo.max.file.name.length"]`. We offer only version 1, text
/// line protocol with decimal doubles, which is what the ingest parser reads; version 2
/// would send binary doubles. The sender then POSTs to `/write?precision=n`.
#[utoipa::path(
    get,
    path = "/settings",
    tag = "write",
    responses(
        (status = 200, description = "Line-protocol versions and name limits for questdb-rs", body = serde_json::Value),
    )
)]
pub(crate) async fn settings() -> Json<Value> {
    Json(json!({
        "config": {
            "release.type": "OSS",
            "release.version": concat!("gridlake ", env!("CARGO_PKG_VERSION")),
            "line.proto.support.versions": [1],
            "ilp.proto.transports": ["http"],
            "cairo.max.file.name.length": 127,
        },
        "preferences.version": 0,
        "preferences": {},
    }))
}

/// Any path without a route.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// A route called with a method it does not take.
pub(crate) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

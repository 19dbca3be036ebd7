//! The HTTP API: routes, shared state, and the per-request span and metrics.

mod delete;
pub(crate) mod error;
mod latest;
mod openapi;
mod ops;
mod rest;
pub(crate) mod routes;
mod series;
mod sql;
mod tables;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use bytesize::ByteSize;
use crm::Crm;
use ingest::modbus::DeviceList;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use query::QueryEngine;
use storage::Store;
use tracing::Instrument;

use crate::auth::AuthConfig;
use crate::registry::DeviceRegistry;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    engine: QueryEngine,
    /// Storage, query and HTTP metrics; read-only once the server runs.
    registry: Registry,
    metrics: HttpMetrics,
    max_body_size: usize,
    started: Instant,
    next_request_id: AtomicU64,
    /// The Modbus collector's devices, when it runs.
    modbus: Option<DeviceList>,
    /// Users, accounts, sites, the device registry, sessions and tokens.
    crm: Crm,
    /// `[auth]`.
    auth: AuthConfig,
    /// The device registry's in-memory side: device id to site, on the write path.
    devices: DeviceRegistry,
}

/// The side store and what the API needs of it, for [`AppState::new`].
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// The side store.
    pub(crate) crm: Crm,
    /// `[auth]`.
    pub(crate) auth: AuthConfig,
    /// The registry cache over `crm`.
    pub(crate) devices: DeviceRegistry,
}

/// Metrics the HTTP layer owns.
#[derive(Debug, Clone, Default)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    /// Parse and validation errors; storage only sees the lines that parsed.
    lines_rejected: Counter,
}

/// Labels of `gridlake_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route pattern (`/api/v3/write_lp`), or `unmatched`: never the raw path, so
    /// a scanner probing random paths cannot blow up the series count.
    route: String,
    /// `2xx`, `4xx`, `5xx`, ...
    status: &'static str,
}

impl AppState {
    /// State over an open store and its query engine. Registers the HTTP metrics in
    /// `registry`, which should already hold the store's and the engine's.
    pub(crate) fn new(
        store: Store,
        engine: QueryEngine,
        mut registry: Registry,
        max_body_size: ByteSize,
        access: Access,
    ) -> Self {
        let metrics = HttpMetrics::default();
        registry.register(
            "gridlake_http_requests",
            "HTTP requests answered, by route and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "gridlake_lines_rejected",
            "Lines of write requests refused as invalid (parse or schema errors)",
            metrics.lines_rejected.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                store,
                engine,
                registry,
                metrics,
                // A limit beyond the address space cannot be reached anyway.
                max_body_size: usize::try_from(max_body_size.as_u64()).unwrap_or(usize::MAX),
                started: Instant::now(),
                next_request_id: AtomicU64::new(1),
                modbus: None,
                crm: access.crm,
                auth: access.auth,
                devices: access.devices,
            }),
        }
    }

    /// The same state with the Modbus collector's device list, for
    /// `/api/v1/modbus/devices`. Call before the state is cloned.
    pub(crate) fn with_modbus(mut self, devices: DeviceList) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.modbus = Some(devices);
        }
        self
    }

    pub(crate) fn modbus(&self) -> Option<&DeviceList> {
        self.inner.modbus.as_ref()
    }

    pub(crate) fn crm(&self) -> &Crm {
        &self.inner.crm
    }

    pub(crate) fn auth(&self) -> &AuthConfig {
        &self.inner.auth
    }

    pub(crate) fn devices(&self) -> &DeviceRegistry {
        &self.inner.devices
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn engine(&self) -> &QueryEngine {
        &self.inner.engine
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// `http.max_body_size` in bytes.
    pub(crate) fn max_body_size(&self) -> usize {
        self.inner.max_body_size
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub(crate) fn count_rejected_lines(&self, lines: usize) {
        self.inner
            .metrics
            .lines_rejected
            .inc_by(u64::try_from(lines).unwrap_or(u64::MAX));
    }
}

/// The API over `state`: the routes of [`routes::endpoints`], each behind its access
/// rule, and the per-request span and metrics around them all.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.max_body_size();
    routes::routes(&state)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // The raw body limit; the write routes apply the same limit again after gzip
        // decoding.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Wraps every request in a span with an id, method and route, and counts it by route
/// and status class.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = state.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id, %method, route = %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed = ?started.elapsed(),
            "answered"
        );
    });
    state
        .inner
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: status_class(status.as_u16()),
        })
        .inc();
    response
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests;

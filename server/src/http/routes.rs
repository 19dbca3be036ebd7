//! Every endpoint of the API with its access rule, in one table.
//!
//! The router is built from [`endpoints`] and nothing else, so a route cannot exist
//! without a [`Rule`]; the authorization-matrix test walks the same table with every
//! kind of caller.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{AppState, delete, latest, ops, rest, series, sql, tables, write};
use crate::auth::{self, Rule};

/// One route and method, the rule that guards it, and its handler.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The HTTP method (also inside `handler`; kept for the tests that walk the table).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the tests that walk the table")
    )]
    pub(crate) method: Method,
    /// The path in axum's syntax (`/api/v1/sites/{id}`).
    pub(crate) path: &'static str,
    /// Who may call it.
    pub(crate) rule: Rule,
    /// The handler, routed for `method` only.
    pub(crate) handler: MethodRouter<AppState>,
}

impl Endpoint {
    /// A row of the table: `handler` answers `method` on `path` for callers `rule` admits.
    pub(crate) fn new<H, T>(method: Method, path: &'static str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // The table holds only the standard methods, which all have a filter; a typo is
        // caught by every test that builds the router.
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Self {
            method,
            path,
            rule,
            handler: on(filter, handler),
        }
    }
}

/// The whole API.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let mut endpoints = vec![
        // Operations.
        Endpoint::new(M::GET, "/health", Rule::Public, ops::health),
        // Prometheus scrapers rarely carry credentials; the metrics hold counts, not
        // readings or names.
        Endpoint::new(M::GET, "/metrics", Rule::Public, ops::metrics),
        // questdb-rs's HTTP sender reads this before writing, without its token (7.2
        // sends the token only on writes); the answer is the same static document for
        // everyone.
        Endpoint::new(M::GET, "/settings", Rule::Public, ops::settings),
        Endpoint::new(
            M::GET,
            "/api/v1/modbus/devices",
            Rule::Staff,
            ops::modbus_devices,
        ),
        // Authentication.
        Endpoint::new(M::POST, "/api/v1/auth/login", Rule::Public, auth::login),
        Endpoint::new(M::POST, "/api/v1/auth/logout", Rule::SignedIn, auth::logout),
        Endpoint::new(M::GET, "/api/v1/auth/me", Rule::SignedIn, auth::me),
        // Writes: InfluxDB v1, v2, v3 and JSON.
        Endpoint::new(M::POST, "/write", Rule::Write, write::write_v1),
        Endpoint::new(M::POST, "/api/v2/write", Rule::Write, write::write_v2),
        Endpoint::new(M::POST, "/api/v3/write_lp", Rule::Write, write::write_lp),
        Endpoint::new(
            M::POST,
            "/api/v1/write/json",
            Rule::Write,
            write::write_json,
        ),
        // SQL.
        Endpoint::new(M::GET, "/api/v1/sql", Rule::Sql, sql::sql_get),
        Endpoint::new(M::POST, "/api/v1/sql", Rule::Sql, sql::sql_post),
        // Charts: scoped like the site readings.
        Endpoint::new(M::GET, "/api/v1/series", Rule::Portal, series::series),
        Endpoint::new(M::GET, "/api/v1/energy", Rule::Portal, series::energy),
        // The newest values of the caller's devices, from the last-value cache.
        Endpoint::new(M::GET, "/api/v1/latest", Rule::Portal, latest::latest),
        // Storage lifecycle: what is stored, how long it is kept, deletes, compaction.
        // Admins only: a retention change or a delete removes data.
        Endpoint::new(M::GET, "/api/v1/tables", Rule::Admin, tables::list_tables),
        Endpoint::new(
            M::GET,
            "/api/v1/tables/{table}",
            Rule::Admin,
            tables::get_table,
        ),
        Endpoint::new(
            M::PUT,
            "/api/v1/tables/{table}/retention",
            Rule::Admin,
            tables::set_retention,
        ),
        Endpoint::new(
            M::DELETE,
            "/api/v1/tables/{table}/retention",
            Rule::Admin,
            tables::reset_retention,
        ),
        Endpoint::new(M::POST, "/api/v1/delete", Rule::Admin, delete::delete),
        Endpoint::new(
            M::POST,
            "/api/v1/admin/compact",
            Rule::Admin,
            tables::compact,
        ),
    ];
    endpoints.extend(rest::endpoints());
    endpoints
}

/// The routes of [`endpoints`], each behind its rule's [`auth::authorize`].
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    for endpoint in endpoints() {
        let guarded = endpoint.handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), endpoint.rule),
            auth::authorize,
        ));
        router = router.route(endpoint.path, guarded);
    }
    router
}

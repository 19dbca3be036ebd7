//! REST over the side store under `/api/v1`: users, accounts, sites, devices, API tokens,
//! and the portal's reading endpoint.
//!
//! ```text
//!  request ─► authorize(rule) ─► extractors ─────────► handler ──► crm repository
//!             (routes table:      Params: 400 naming    │ Scope::Owner(user):
//!              401 / 403)         the bad parameter     │   lists filtered to the user,
//!                                 JsonBody: 422 naming  │   others' ids answer 404
//!                                 each bad field        ▼
//!                                                  Listing { items, limit, offset,
//!                                                  next_offset } or the entity;
//!                                                  device changes ─► registry cache
//! ```
//!
//! Customers (`Scope::Owner`) see only what hangs off their own accounts. A list forces
//! their user id into the filter whatever the query says; an id outside their scope is
//! answered exactly like an id that does not exist, so ids cannot be probed. Changes to
//! devices, sites and accounts are mirrored into the registry cache the write path
//! resolves device ids with.

// Visible to `http::openapi`, which lists their handlers.
pub(super) mod accounts;
pub(super) mod devices;
pub(super) mod readings;
pub(super) mod sites;
pub(super) mod tokens;
pub(super) mod users;

#[cfg(test)]
mod tests;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::{Extension, Json};
use crm::{Crm, Page, Site};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use super::error::ApiError;
use super::openapi;
use super::routes::Endpoint;
use crate::auth::{Principal, Rule, Scope};

/// The REST rows of the endpoint table (`routes::endpoints` appends them).
pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        Endpoint::new(
            M::GET,
            "/api/v1/openapi.json",
            Rule::Public,
            openapi::openapi_json,
        ),
        // Users: staff read them, admins change them.
        Endpoint::new(M::GET, "/api/v1/users", Rule::Staff, users::list_users),
        Endpoint::new(M::POST, "/api/v1/users", Rule::Admin, users::create_user),
        Endpoint::new(M::GET, "/api/v1/users/{id}", Rule::Staff, users::get_user),
        Endpoint::new(
            M::PATCH,
            "/api/v1/users/{id}",
            Rule::Admin,
            users::update_user,
        ),
        Endpoint::new(
            M::DELETE,
            "/api/v1/users/{id}",
            Rule::Admin,
            users::delete_user,
        ),
        // Accounts, sites and devices: the portal reads (scoped), staff change them.
        Endpoint::new(
            M::GET,
            "/api/v1/accounts",
            Rule::Portal,
            accounts::list_accounts,
        ),
        Endpoint::new(
            M::POST,
            "/api/v1/accounts",
            Rule::Staff,
            accounts::create_account,
        ),
        Endpoint::new(
            M::GET,
            "/api/v1/accounts/{id}",
            Rule::Portal,
            accounts::get_account,
        ),
        Endpoint::new(
            M::PUT,
            "/api/v1/accounts/{id}",
            Rule::Staff,
            accounts::update_account,
        ),
        Endpoint::new(
            M::DELETE,
            "/api/v1/accounts/{id}",
            Rule::Staff,
            accounts::delete_account,
        ),
        Endpoint::new(M::GET, "/api/v1/sites", Rule::Portal, sites::list_sites),
        Endpoint::new(M::POST, "/api/v1/sites", Rule::Staff, sites::create_site),
        Endpoint::new(M::GET, "/api/v1/sites/{id}", Rule::Portal, sites::get_site),
        Endpoint::new(
            M::PUT,
            "/api/v1/sites/{id}",
            Rule::Staff,
            sites::update_site,
        ),
        Endpoint::new(
            M::DELETE,
            "/api/v1/sites/{id}",
            Rule::Staff,
            sites::delete_site,
        ),
        Endpoint::new(
            M::GET,
            "/api/v1/sites/{id}/readings",
            Rule::Portal,
            readings::site_readings,
        ),
        Endpoint::new(
            M::GET,
            "/api/v1/devices",
            Rule::Portal,
            devices::list_devices,
        ),
        Endpoint::new(
            M::POST,
            "/api/v1/devices",
            Rule::Staff,
            devices::create_device,
        ),
        Endpoint::new(
            M::GET,
            "/api/v1/devices/{id}",
            Rule::Portal,
            devices::get_device,
        ),
        Endpoint::new(
            M::PUT,
            "/api/v1/devices/{id}",
            Rule::Staff,
            devices::update_device,
        ),
        Endpoint::new(
            M::DELETE,
            "/api/v1/devices/{id}",
            Rule::Staff,
            devices::delete_device,
        ),
        // API tokens: admins only.
        Endpoint::new(M::GET, "/api/v1/tokens", Rule::Admin, tokens::list_tokens),
        Endpoint::new(M::POST, "/api/v1/tokens", Rule::Admin, tokens::create_token),
        Endpoint::new(
            M::DELETE,
            "/api/v1/tokens/{id}",
            Rule::Admin,
            tokens::revoke_token,
        ),
    ]
}

/// One page of a list. `next_offset` is set when the page came back full, so there may
/// be more: ask again with `offset=next_offset`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Listing<T> {
    /// The rows, by id.
    pub(crate) items: Vec<T>,
    /// The page size used (the request's `limit`, clamped to 1..=1000).
    pub(crate) limit: u32,
    /// Rows skipped.
    pub(crate) offset: u64,
    /// The offset of the next page, or null when this page was the last.
    pub(crate) next_offset: Option<u64>,
}

impl<T> Listing<T> {
    fn new(items: Vec<T>, page: Page) -> Self {
        let limit = page.limit.clamp(1, Page::MAX_LIMIT);
        let full = items.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
        Self {
            items,
            limit,
            offset: page.offset,
            next_offset: full.then(|| page.offset.saturating_add(u64::from(limit))),
        }
    }
}

/// The `limit` a list uses when the request gives none.
const DEFAULT_LIMIT: u32 = 100;

/// The page a list request asks for.
fn page(limit: Option<u32>, offset: Option<u64>) -> Page {
    Page {
        limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, Page::MAX_LIMIT),
        offset: offset.unwrap_or(0),
    }
}

/// The caller's principal, as the authorize middleware left it.
pub(crate) type Caller = Extension<Principal>;

/// The user whose data a scoped read is limited to, if any.
pub(crate) fn owner(principal: &Principal) -> Option<i64> {
    match principal.scope() {
        Scope::All => None,
        Scope::Owner(user_id) => Some(user_id),
    }
}

/// The answer for an id that does not exist or is outside the caller's scope: the
/// same text either way, so a customer learns nothing from another customer's ids.
pub(crate) fn missing(entity: &'static str, id: impl ToString) -> ApiError {
    crm::Error::NotFound {
        entity,
        id: id.to_string(),
    }
    .into()
}

/// Whether `user_id` holds the account that `site` belongs to.
async fn owns_site(crm: &Crm, user_id: i64, site: &Site) -> Result<bool, ApiError> {
    match crm.accounts().get(site.account_id).await {
        Ok(account) => Ok(account.user_id == user_id),
        Err(crm::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The site with this id if the caller may see it; otherwise 404 as if it did not exist.
pub(crate) async fn visible_site(
    crm: &Crm,
    principal: &Principal,
    id: i64,
) -> Result<Site, ApiError> {
    let site = crm.sites().get(id).await?;
    match owner(principal) {
        Some(user_id) if !owns_site(crm, user_id, &site).await? => Err(missing("site", id)),
        _ => Ok(site),
    }
}

/// Query parameters; a malformed or unknown parameter is a 400 that names it.
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// A JSON body; a missing, unknown or mistyped field is a 422 that names it.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body: Result<Json<T>, JsonRejection> = Json::from_request(request, state).await;
        let Json(value) = body?;
        Ok(JsonBody(value))
    }
}

/// The `{id}` of a path; one that is not an integer is a 400.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Id(pub(crate) i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<i64>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    ApiError::BadRequest(format!(
        "the id in the path must be an integer: {}",
        rejection.body_text()
    ))
}

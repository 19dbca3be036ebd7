//! `/api/v1/sites`: the portal reads sites (customers only those of their own
//! accounts), staff create, change and delete them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crm::{NewSite, Site, SiteFilter};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Caller, Id, JsonBody, Listing, Params, owner, page, visible_site};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::{ErrorBody, ValidationErrorBody};

/// Query parameters of `GET /api/v1/sites`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SitesQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip (default 0).
    offset: Option<u64>,
    /// Only this account's sites.
    account_id: Option<i64>,
    /// Only the sites of this user's accounts (a customer always gets only their own).
    user_id: Option<i64>,
}

/// Lists sites by id; a customer sees only the sites of their own accounts.
#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "sites",
    security(("bearer" = []), ("token" = [])),
    params(SitesQuery),
    responses(
        (status = 200, description = "One page of sites", body = Listing<Site>),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
    )
)]
pub(crate) async fn list_sites(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<SitesQuery>,
) -> Result<Json<Listing<Site>>, ApiError> {
    let page = page(query.limit, query.offset);
    let filter = SiteFilter {
        account_id: query.account_id,
        user_id: owner(&caller).or(query.user_id),
    };
    let sites = state.crm().sites().list(&filter, page).await?;
    Ok(Json(Listing::new(sites, page)))
}

/// Creates a site under an existing account. A primary site makes the account's other
/// sites non-primary.
#[utoipa::path(
    post,
    path = "/api/v1/sites",
    tag = "sites",
    security(("bearer" = []), ("token" = [])),
    request_body = NewSite,
    responses(
        (status = 201, description = "The site as stored", body = Site),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named (account_id when the account does not exist)", body = ValidationErrorBody),
    )
)]
pub(crate) async fn create_site(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewSite>,
) -> Result<(StatusCode, Json<Site>), ApiError> {
    let site = state.crm().sites().create(new).await?;
    tracing::info!(
        site_id = site.id,
        account_id = site.account_id,
        "site created"
    );
    Ok((StatusCode::CREATED, Json(site)))
}

/// One site; a site of another customer's account is "not found".
#[utoipa::path(
    get,
    path = "/api/v1/sites/{id}",
    tag = "sites",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Site id")),
    responses(
        (status = 200, description = "The site", body = Site),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such site, or not the caller's", body = ErrorBody),
    )
)]
pub(crate) async fn get_site(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Site>, ApiError> {
    Ok(Json(visible_site(state.crm(), &caller, id).await?))
}

/// Replaces the site's fields. Making it primary makes the account's other sites
/// non-primary.
#[utoipa::path(
    put,
    path = "/api/v1/sites/{id}",
    tag = "sites",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Site id")),
    request_body = NewSite,
    responses(
        (status = 200, description = "The site as stored", body = Site),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn update_site(
    State(state): State<AppState>,
    Id(id): Id,
    JsonBody(new): JsonBody<NewSite>,
) -> Result<Json<Site>, ApiError> {
    let site = state.crm().sites().update(id, new).await?;
    tracing::info!(site_id = id, account_id = site.account_id, "site updated");
    Ok(Json(site))
}

/// Deletes the site and its API tokens; its devices stay registered, unassigned.
#[utoipa::path(
    delete,
    path = "/api/v1/sites/{id}",
    tag = "sites",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Site id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    )
)]
pub(crate) async fn delete_site(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    // The delete and the cache reload finish together even if the client goes.
    super::devices::to_the_end(async move {
        state.crm().sites().delete(id).await?;
        tracing::info!(site_id = id, "site deleted");
        super::devices::reload_registry(&state).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

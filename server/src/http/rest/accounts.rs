//! `/api/v1/accounts`: the portal reads accounts (customers only their own), staff
//! create, change and delete them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crm::{Account, AccountFilter, AccountStatus, AccountUpdate, NewAccount};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Caller, Id, JsonBody, Listing, Params, missing, owner, page};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::{ErrorBody, ValidationErrorBody};

/// Query parameters of `GET /api/v1/accounts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AccountsQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip (default 0).
    offset: Option<u64>,
    /// Only this user's accounts (a customer always gets only their own).
    user_id: Option<i64>,
    /// Only accounts in this status.
    status: Option<AccountStatus>,
}

/// Lists accounts by id; a customer sees only their own.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    security(("bearer" = []), ("token" = [])),
    params(AccountsQuery),
    responses(
        (status = 200, description = "One page of accounts", body = Listing<Account>),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
    )
)]
pub(crate) async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<AccountsQuery>,
) -> Result<Json<Listing<Account>>, ApiError> {
    let page = page(query.limit, query.offset);
    let filter = AccountFilter {
        // A customer's own id replaces whatever user_id they asked for.
        user_id: owner(&caller).or(query.user_id),
        status: query.status,
    };
    let accounts = state.crm().accounts().list(&filter, page).await?;
    Ok(Json(Listing::new(accounts, page)))
}

/// Creates an account for an existing user.
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    security(("bearer" = []), ("token" = [])),
    request_body = NewAccount,
    responses(
        (status = 201, description = "The account as stored", body = Account),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 409, description = "The account number is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named (user_id when the user does not exist)", body = ValidationErrorBody),
    )
)]
pub(crate) async fn create_account(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let account = state.crm().accounts().create(new).await?;
    tracing::info!(
        account_id = account.id,
        user_id = account.user_id,
        "account created"
    );
    Ok((StatusCode::CREATED, Json(account)))
}

/// One account; another customer's account is "not found".
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}",
    tag = "accounts",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such account, or not the caller's", body = ErrorBody),
    )
)]
pub(crate) async fn get_account(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Account>, ApiError> {
    let account = state.crm().accounts().get(id).await?;
    match owner(&caller) {
        Some(user_id) if account.user_id != user_id => Err(missing("account", id)),
        _ => Ok(Json(account)),
    }
}

/// Replaces the account's fields. The owner stays unless `transfer_owner` is true: a
/// `user_id` naming someone else without it is refused (422 on `user_id`), so an edit
/// from a stale copy cannot hand the account, its sites and devices to another user.
#[utoipa::path(
    put,
    path = "/api/v1/accounts/{id}",
    tag = "accounts",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Account id")),
    request_body = AccountUpdate,
    responses(
        (status = 200, description = "The account as stored", body = Account),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "The account number is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn update_account(
    State(state): State<AppState>,
    Id(id): Id,
    JsonBody(update): JsonBody<AccountUpdate>,
) -> Result<Json<Account>, ApiError> {
    let account = state.crm().accounts().update(id, update).await?;
    tracing::info!(
        account_id = id,
        user_id = account.user_id,
        "account updated"
    );
    Ok(Json(account))
}

/// Deletes the account and its sites; their devices stay registered, unassigned.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{id}",
    tag = "accounts",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub(crate) async fn delete_account(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    // The delete and the cache reload finish together even if the client goes.
    super::devices::to_the_end(async move {
        state.crm().accounts().delete(id).await?;
        tracing::info!(account_id = id, "account deleted");
        // The cascade unassigned the devices of the account's sites.
        super::devices::reload_registry(&state).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `/api/v1/users`: staff read users, admins create, change and delete them. A user as
//! shown here never carries a password hash ([`crm::User`] has none to show).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crm::{NewUser, Role, User, UserFilter, UserUpdate};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Id, JsonBody, Listing, Params, page};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::{ErrorBody, ValidationErrorBody};

/// Query parameters of `GET /api/v1/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip (default 0).
    offset: Option<u64>,
    /// Only users with this role.
    role: Option<Role>,
    /// Only active (true) or only inactive (false) users.
    active: Option<bool>,
    /// Only users whose email contains this text (case-insensitive).
    email: Option<String>,
}

/// Lists users by id.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = []), ("token" = [])),
    params(UsersQuery),
    responses(
        (status = 200, description = "One page of users", body = Listing<User>),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
    )
)]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    Params(query): Params<UsersQuery>,
) -> Result<Json<Listing<User>>, ApiError> {
    let page = page(query.limit, query.offset);
    let filter = UserFilter {
        role: query.role,
        active: query.active,
        email: query.email,
    };
    let users = state.crm().users().list(&filter, page).await?;
    Ok(Json(Listing::new(users, page)))
}

/// Creates a user; the password is stored as an argon2id hash and never shown.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = []), ("token" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "The user as stored", body = User),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = state.crm().users().create(new).await?;
    tracing::info!(user_id = user.id, role = user.role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user.
#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.crm().users().get(id).await?))
}

/// Changes the fields given; absent fields stay. Deactivating a user or changing the
/// password ends the user's sessions.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "User id")),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "The user as stored", body = User),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The email is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    Id(id): Id,
    JsonBody(update): JsonBody<UserUpdate>,
) -> Result<Json<User>, ApiError> {
    let user = state.crm().users().update(id, update).await?;
    tracing::info!(user_id = id, "user updated");
    Ok(Json(user))
}

/// Deletes the user with their accounts, sites and sessions; devices on those sites
/// stay registered, unassigned.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    // The delete and the cache reload finish together even if the client goes.
    super::devices::to_the_end(async move {
        state.crm().users().delete(id).await?;
        tracing::info!(user_id = id, "user deleted");
        // The cascade unassigned the devices of the user's sites.
        super::devices::reload_registry(&state).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

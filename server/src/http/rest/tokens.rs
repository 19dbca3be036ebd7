//! `/api/v1/tokens`: API tokens for gateways (write, bound to one site), analysts
//! (read) and automation (admin). The plain token is shown once, in the answer to its
//! creation; afterwards only its metadata is.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crm::{ApiToken, NewApiToken};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Id, JsonBody, Listing, Params, page};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::{ErrorBody, ValidationErrorBody};

/// Query parameters of `GET /api/v1/tokens`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokensQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip (default 0).
    offset: Option<u64>,
    /// Only the write tokens of this site.
    site_id: Option<i64>,
}

/// A token just created: its metadata and, this once, the token itself. Its `Debug`
/// hides the token.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    /// The token (`glk_...`). Send it as `Authorization: Bearer <token>` (or
    /// `Authorization: Token <token>` from InfluxDB clients). The server keeps only
    /// its digest: it cannot be shown again.
    token: String,
    /// The token's metadata, as `GET /api/v1/tokens` shows it.
    #[serde(flatten)]
    api_token: ApiToken,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("api_token", &self.api_token)
            .finish()
    }
}

/// Lists API tokens by id (metadata only; the tokens themselves are not stored).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("bearer" = []), ("token" = [])),
    params(TokensQuery),
    responses(
        (status = 200, description = "One page of tokens", body = Listing<ApiToken>),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
    )
)]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    Params(query): Params<TokensQuery>,
) -> Result<Json<Listing<ApiToken>>, ApiError> {
    let page = page(query.limit, query.offset);
    let tokens = state.crm().api_tokens().list(query.site_id, page).await?;
    Ok(Json(Listing::new(tokens, page)))
}

/// Creates a token. A write token needs `site_id` and writes only for that site's
/// devices; read and admin tokens take no site.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    security(("bearer" = []), ("token" = [])),
    request_body = NewApiToken,
    responses(
        (status = 201, description = "The token, shown this once, with its metadata", body = CreatedToken),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewApiToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (api_token, token) = state.crm().api_tokens().create(new).await?;
    tracing::info!(
        token_id = api_token.id,
        scope = api_token.scope.as_str(),
        site_id = ?api_token.site_id,
        "API token created"
    );
    Ok((StatusCode::CREATED, Json(CreatedToken { token, api_token })))
}

/// Revokes a token: it is refused from now on. Revoking a revoked token is a no-op.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    state.crm().api_tokens().revoke(id).await?;
    tracing::info!(token_id = id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

//! `POST /api/v1/auth/login`, `POST /api/v1/auth/logout`, `GET /api/v1/auth/me`.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use crm::{ApiToken, User};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use super::{Principal, credentials};
use crate::http::AppState;
use crate::http::error::ApiError;

/// Body of `POST /api/v1/auth/login`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// The user's email (case does not matter).
    email: String,
    /// The user's password.
    password: String,
}

/// Password checks that may run at once.
static VERIFYING: Semaphore = Semaphore::const_new(4);

/// The longest email a login takes (RFC 5321's path limit), and the longest password
/// (crm's limit when a password is set).
const MAX_EMAIL: usize = 254;
const MAX_PASSWORD: usize = 1024;

impl LoginRequest {
    /// Bounds the input before it reaches the store or the log: an unauthenticated
    /// client must not be able to fill either.
    fn check(&self) -> Result<(), ApiError> {
        let mut fields = Vec::new();
        let email = self.email.trim();
        if email.is_empty() || email.chars().count() > MAX_EMAIL {
            fields.push(crm::FieldError::new(
                "email",
                format!("must be 1 to {MAX_EMAIL} characters"),
            ));
        } else if email.chars().any(char::is_control) {
            fields.push(crm::FieldError::new(
                "email",
                "must not contain control characters",
            ));
        }
        if self.password.is_empty() || self.password.chars().count() > MAX_PASSWORD {
            fields.push(crm::FieldError::new(
                "password",
                format!("must be 1 to {MAX_PASSWORD} characters"),
            ));
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Unprocessable(fields))
        }
    }
}

/// The start of an email for the log (printed with `?`, so control characters are
/// escaped): enough to recognise it, not a password typed into the wrong field.
fn shorten(email: &str) -> String {
    email.chars().take(64).collect()
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A new session. Its `Debug` hides the token.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    /// The session token (`gls_...`): send it as `Authorization: Bearer <token>`. It is
    /// shown once; the server keeps only its digest.
    token: String,
    /// When the session ends, ms since the epoch.
    expires_ms: i64,
    /// The signed-in user.
    user: User,
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("token", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .field("user", &self.user)
            .finish()
    }
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Me {
    /// A signed-in user.
    User {
        /// The user.
        user: User,
        /// When the session ends, ms since the epoch.
        session_expires_ms: i64,
    },
    /// An API token (its metadata; never the token itself).
    Token {
        /// The token.
        token: ApiToken,
    },
    /// `auth.enabled = false`: no credentials are checked.
    Open,
}

/// Logs in with email and password; returns a session token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 401, description = "Wrong email or password"),
        (status = 422, description = "The body is not a login request"),
        (status = 429, description = "Too many failed logins for this email or from this address; see Retry-After"),
    )
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<LoginResponse>, ApiError> {
    let ip = client_ip(&request);
    let body: Result<Json<LoginRequest>, JsonRejection> =
        <Json<LoginRequest> as FromRequest<AppState>>::from_request(request, &state).await;
    let Json(body) = body.map_err(ApiError::from)?;
    body.check()?;
    let config = state.auth();
    let crm = state.crm();
    let attempts = crm.login_attempts();
    let window = config.login_window;
    let retry_after_s = window.as_secs().max(1);
    // The attempt is recorded before the password is checked, and the counts include
    // it: of any number of parallel attempts, at most the limit get to a password
    // check. A successful login deletes it again.
    attempts.record_failure(&body.email, &ip).await?;
    if attempts.failures_for_email(&body.email, window).await?
        > u64::from(config.login_max_failures)
    {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "too many failed logins for this email (auth.login_max_failures = {} within {}); \
                 try again later",
                config.login_max_failures,
                humantime::format_duration(window)
            ),
            retry_after_s,
        });
    }
    if attempts.failures_from_ip(&ip, window).await? > u64::from(config.login_max_failures_per_ip) {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "too many failed logins from this address (auth.login_max_failures_per_ip = {} \
                 within {}); try again later",
                config.login_max_failures_per_ip,
                humantime::format_duration(window)
            ),
            retry_after_s,
        });
    }
    // Each check hashes with argon2 (about 19 MiB and tens of ms of CPU): a bounded
    // number at a time, so a burst of logins queues instead of exhausting memory.
    let verified = {
        let _permit = VERIFYING.acquire().await.map_err(ApiError::internal)?;
        crm.users()
            .verify_password(&body.email, &body.password)
            .await?
    };
    let Some(user) = verified else {
        tracing::info!(email = ?shorten(&body.email), %ip, "failed login");
        // One message for an unknown email, a wrong password and an inactive user, so
        // the answer does not tell which emails exist.
        return Err(ApiError::Unauthorized("wrong email or password".to_owned()));
    };
    attempts.clear(&body.email, &ip).await?;
    let (session, token) = crm.sessions().create(user.id, config.session_ttl).await?;
    tracing::info!(user_id = user.id, role = user.role.as_str(), "signed in");
    Ok(Json(LoginResponse {
        token,
        expires_ms: session.expires_ms,
        user,
    }))
}

/// Ends the session the request presents.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The session is over; its token is refused from now on"),
        (status = 400, description = "The request did not present a session token"),
        (status = 401, description = "No valid credentials"),
    )
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    if !matches!(principal, Principal::User { .. }) {
        return Err(ApiError::BadRequest(
            "logout ends a login session; revoke an API token with DELETE /api/v1/tokens/{id}"
                .to_owned(),
        ));
    }
    if let Some(token) = credentials::token(&request)? {
        state.crm().sessions().delete(&token).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller: the signed-in user or the API token's metadata.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid credentials"),
    )
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Me>, ApiError> {
    let crm = state.crm();
    Ok(Json(match principal {
        Principal::Open => Me::Open,
        Principal::User {
            id,
            session_expires_ms,
            ..
        } => Me::User {
            user: crm.users().get(id).await?,
            session_expires_ms,
        },
        Principal::Token { id, .. } => Me::Token {
            token: crm.api_tokens().get(id).await?,
        },
    }))
}

/// The client's address for the per-address login limit. The peer address of the TCP
/// connection: behind a reverse proxy, every client shares the proxy's address, which
/// makes the per-address limit stricter, never looser.
fn client_ip(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

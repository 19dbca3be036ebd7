//! Finding a request's token and turning it into a [`Principal`].

use axum::extract::Request;
use axum::http::header;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm::{API_TOKEN_PREFIX, SESSION_PREFIX};

use super::Principal;
use crate::http::AppState;
use crate::http::error::ApiError;

/// The caller behind the request's credentials; 401 when there are none, or they are
/// unknown, expired, revoked or logged out.
pub(super) async fn authenticate(
    state: &AppState,
    token: Option<String>,
) -> Result<Principal, ApiError> {
    let Some(token) = token else {
        return Err(ApiError::Unauthorized(
            "this endpoint needs credentials: send `Authorization: Bearer <token>` \
             (a session from POST /api/v1/auth/login, or an API token)"
                .to_owned(),
        ));
    };
    let crm = state.crm();
    if token.starts_with(SESSION_PREFIX) {
        let session = crm.sessions().lookup(&token).await?;
        let Some(session) = session else {
            return Err(ApiError::Unauthorized(
                "the session token is unknown, expired or logged out; log in again".to_owned(),
            ));
        };
        let user = crm.users().get(session.user_id).await?;
        return Ok(Principal::User {
            id: user.id,
            role: user.role,
            session_expires_ms: session.expires_ms,
        });
    }
    if token.starts_with(API_TOKEN_PREFIX) {
        let Some(api_token) = crm.api_tokens().lookup(&token).await? else {
            return Err(ApiError::Unauthorized(
                "the API token is unknown, expired or revoked".to_owned(),
            ));
        };
        return Ok(Principal::Token {
            id: api_token.id,
            scope: api_token.scope,
            site_id: api_token.site_id,
        });
    }
    Err(ApiError::Unauthorized(format!(
        "the token is not a gridlake token: session tokens start with {SESSION_PREFIX} \
         and API tokens with {API_TOKEN_PREFIX}"
    )))
}

/// The token the request presents, if any.
///
/// Written by hand rather than with axum-extra's `TypedHeader<Authorization<_>>`: that
/// takes one scheme per extractor, and gridlake accepts three (Bearer, InfluxDB's
/// Token, and Basic with the token as the password).
pub(super) fn token(request: &Request) -> Result<Option<String>, ApiError> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not ASCII".to_owned())
        })?;
        let (scheme, rest) = value.trim().split_once(' ').ok_or_else(|| {
            ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`, `Token <token>` or Basic"
                    .to_owned(),
            )
        })?;
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            Ok(Some(rest.to_owned()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Basic credentials are not base64 of `user:password`".to_owned(),
                    )
                })?;
            // InfluxDB v1 clients put the token in the password; the user name is free.
            let password = decoded.split_once(':').map_or("", |(_, p)| p);
            Ok(Some(password.to_owned()))
        } else {
            Err(ApiError::Unauthorized(format!(
                "unsupported Authorization scheme {scheme:?}; use Bearer, Token or Basic"
            )))
        };
    }
    // InfluxDB v1's `/write?u=&p=`: the token as the password parameter.
    if request.uri().path() == "/write"
        && let Some(query) = request.uri().query()
    {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "p" && !value.is_empty() {
                return Ok(Some(value.into_owned()));
            }
        }
    }
    Ok(None)
}

//! Who is asking, and may they.
//!
//! Every route is declared with a [`Rule`] in one table (`http::routes`); the router wraps
//! each route in [`authorize`], which turns the request's credentials into a
//! [`Principal`] and checks the rule before the handler runs. Handlers that show data
//! read the principal (`Extension<Principal>`) to narrow what they return to the
//! caller's [`Scope`].
//!
//! ```text
//! request ─► authorize(rule) ─► credentials ─► Principal ─► Rule::check ─► handler
//!              │ Public: no lookup        gls_… session ─► user, role
//!              │ auth.enabled = false:    glk_… API token ─► scope, site
//!              │ Principal::Open          401 unknown/expired · 403 refused by the rule
//! ```
//!
//! Credentials are read from `Authorization: Bearer <token>`, InfluxDB's
//! `Authorization: Token <token>`, HTTP Basic auth with the token as the password
//! (InfluxDB v1 clients and Telegraf), or, on the InfluxDB v1 `/write` route only, the
//! `p` query parameter.

mod config;
mod credentials;
mod handlers;
mod rules;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crm::{Role, TokenScope};

pub use config::AuthConfig;
pub(crate) use handlers::{__path_login, __path_logout, __path_me, login, logout, me};
pub(crate) use rules::Rule;

use crate::http::AppState;
use crate::http::error::ApiError;

/// The caller of a request that passed its route's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// `auth.enabled = false`: every request may do everything.
    Open,
    /// A user signed in with a session token.
    User {
        /// The user's id.
        id: i64,
        /// The user's role.
        role: Role,
        /// When the presented session ends, ms since the epoch.
        session_expires_ms: i64,
    },
    /// An API token.
    Token {
        /// The token's id.
        id: i64,
        /// What it may do.
        scope: TokenScope,
        /// The one site a write token writes for.
        site_id: Option<i64>,
    },
}

/// What a caller may see of the portal's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything: staff, analysts, read and admin tokens, or auth off.
    All,
    /// Only the accounts this user holds, their sites and those sites' devices.
    Owner(i64),
}

impl Principal {
    /// What portal reads may return to this caller.
    pub(crate) fn scope(&self) -> Scope {
        match self {
            Principal::Open | Principal::Token { .. } => Scope::All,
            Principal::User { id, role, .. } => match role {
                Role::Admin | Role::Support | Role::Analyst => Scope::All,
                Role::Customer | Role::Prosumer | Role::Business | Role::Gateway => {
                    Scope::Owner(*id)
                }
            },
        }
    }

    /// The site a write by this caller is confined to: a write token's site.
    pub(crate) fn write_site(&self) -> Option<i64> {
        match self {
            Principal::Token {
                scope: TokenScope::Write,
                site_id,
                ..
            } => *site_id,
            _ => None,
        }
    }
}

/// The middleware around every route: authenticates the caller unless the rule is
/// [`Rule::Public`], checks the rule, and hands the [`Principal`] to the handler.
pub(crate) async fn authorize(
    State((state, rule)): State<(AppState, Rule)>,
    mut request: Request,
    next: Next,
) -> Response {
    if rule == Rule::Public {
        return next.run(request).await;
    }
    let principal = if state.auth().enabled {
        // The token is taken out first: the request (its body) must not be held across
        // the lookup, or the future would not be `Send`.
        let token = match credentials::token(&request) {
            Ok(token) => token,
            Err(error) => return error.into_response(),
        };
        match credentials::authenticate(&state, token).await {
            Ok(principal) => principal,
            Err(error) => return error.into_response(),
        }
    } else {
        Principal::Open
    };
    if let Err(refusal) = rule.check(&principal) {
        return ApiError::Forbidden(refusal).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests;

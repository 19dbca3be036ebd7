//! The access rules a route can declare.

use crm::{Role, TokenScope};

use super::Principal;

/// Who may call a route. Every route declares exactly one (`http::routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Rule {
    /// Anyone, without credentials: health, metrics, login, the OpenAPI document.
    Public,
    /// Any valid session or API token: who am I, logout.
    SignedIn,
    /// The portal's reads: users of every role but `gateway`, and read and admin tokens.
    /// Handlers narrow the data to the caller's [`super::Scope`].
    Portal,
    /// Writing readings: write and admin tokens, admin users. A write token writes only
    /// for the devices of its site. Gateway users write with their site's write token,
    /// not with a session: a session carries no site to confine the writes to.
    Write,
    /// SQL over all data: analysts and admins, read and admin tokens.
    Sql,
    /// Changing accounts, sites and devices, and reading users: admin and support
    /// users, admin tokens.
    Staff,
    /// Users, API tokens and server settings: admin users and admin tokens.
    Admin,
}

impl Rule {
    /// Every rule, for tests that go through them all.
    #[cfg(test)]
    pub(crate) const ALL: [Rule; 7] = [
        Rule::Public,
        Rule::SignedIn,
        Rule::Portal,
        Rule::Write,
        Rule::Sql,
        Rule::Staff,
        Rule::Admin,
    ];

    /// Whether `principal` may call a route with this rule; the refusal says why.
    pub(crate) fn check(self, principal: &Principal) -> Result<(), String> {
        if self.allows(principal) {
            Ok(())
        } else {
            Err(format!(
                "{} may not {}",
                describe(principal),
                self.requirement()
            ))
        }
    }

    fn allows(self, principal: &Principal) -> bool {
        use Role::{Admin, Analyst, Business, Customer, Prosumer, Support};
        let (role, scope) = match principal {
            Principal::Open => return true,
            Principal::User { role, .. } => (Some(*role), None),
            Principal::Token { scope, .. } => (None, Some(*scope)),
        };
        match self {
            Rule::Public | Rule::SignedIn => true,
            Rule::Portal => {
                matches!(
                    role,
                    Some(Customer | Prosumer | Business | Admin | Support | Analyst)
                ) || matches!(scope, Some(TokenScope::Read | TokenScope::Admin))
            }
            Rule::Write => {
                role == Some(Admin) || matches!(scope, Some(TokenScope::Write | TokenScope::Admin))
            }
            Rule::Sql => {
                matches!(role, Some(Admin | Analyst))
                    || matches!(scope, Some(TokenScope::Read | TokenScope::Admin))
            }
            Rule::Staff => {
                matches!(role, Some(Admin | Support)) || scope == Some(TokenScope::Admin)
            }
            Rule::Admin => role == Some(Admin) || scope == Some(TokenScope::Admin),
        }
    }

    /// What the rule asks for, completing "... may not".
    fn requirement(self) -> &'static str {
        match self {
            Rule::Public | Rule::SignedIn => "call this endpoint",
            Rule::Portal => {
                "read portal data (it needs a customer, staff or analyst user, or a read or admin token)"
            }
            Rule::Write => "write readings (it needs a write or admin token, or an admin user)",
            Rule::Sql => "run SQL (it needs an analyst or admin user, or a read or admin token)",
            Rule::Staff => {
                "change accounts, sites or devices (it needs an admin or support user, or an admin token)"
            }
            Rule::Admin => "do this (it needs an admin user or an admin token)",
        }
    }
}

fn describe(principal: &Principal) -> String {
    match principal {
        Principal::Open => "anyone".to_owned(),
        Principal::User { role, .. } => format!("a user with role {}", role.as_str()),
        Principal::Token { scope, .. } => format!("an API token with scope {}", scope.as_str()),
    }
}

//! API tokens (gateways, analysts, admins) and the token helpers sessions share.

use std::fmt::Write as _;

use blake2::{Blake2b256, Digest};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result, map_write};
use crate::sql::{Arg, Page, Stmt, flag, parsed, query, text_enum};
use crate::store::Crm;
use crate::validate::Checks;

/// Prefix of API tokens, so a leaked one is recognisable (secret scanners, logs).
pub const API_TOKEN_PREFIX: &str = "glk_";

/// A new random token: `prefix` and 32 random bytes in hex.
pub(crate) fn generate(prefix: &str) -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Crypto(format!("random source: {e}")))?;
    let mut token = String::with_capacity(prefix.len() + 64);
    token.push_str(prefix);
    for b in bytes {
        let _ = write!(token, "{b:02x}");
    }
    Ok(token)
}

/// What the store keeps instead of a token: its BLAKE2b-256 digest in hex. A token has
/// 256 random bits, so an unsalted fast hash is enough (nothing to brute-force), and
/// lookup stays one indexed equality.
pub(crate) fn digest(token: &str) -> String {
    let mut out = String::with_capacity(64);
    for b in Blake2b256::digest(token.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

text_enum! {
    /// What an API token may do.
    TokenScope {
        /// Write readings, for one site only (gateways).
        Write = "write",
        /// Read and query everything (analysts).
        Read = "read",
        /// Everything.
        Admin = "admin",
    }
}

/// An API token as stored (the plain token is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// Id.
    pub id: i64,
    /// What it is for ("gateway home-1").
    pub name: String,
    /// Scope.
    pub scope: TokenScope,
    /// The one site a write token may write for.
    pub site_id: Option<i64>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Expiry, ms since the epoch; none for tokens that do not expire.
    pub expires_ms: Option<i64>,
    /// Revoked tokens are refused.
    pub revoked: bool,
}

/// Input for [`ApiTokens::create`].
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    /// What it is for.
    pub name: String,
    /// Scope.
    pub scope: TokenScope,
    /// Required for write tokens, refused for others.
    #[serde(default)]
    pub site_id: Option<i64>,
    /// Optional expiry, ms since the epoch.
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

const COLUMNS: &str = "id, name, scope, site_id, created_ms, expires_ms, revoked";

fn from_row(row: &AnyRow) -> sqlx::Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: parsed(row, "scope")?,
        site_id: row.try_get("site_id")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        revoked: flag(row, "revoked")?,
    })
}

/// The API token repository; see [`Crm::api_tokens`].
#[derive(Debug, Clone, Copy)]
pub struct ApiTokens<'a> {
    crm: &'a Crm,
}

impl<'a> ApiTokens<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    /// Creates a token; returns it with the plain token (`glk_...`), which is not
    /// stored and cannot be shown again.
    pub async fn create(&self, new: NewApiToken) -> Result<(ApiToken, String)> {
        let mut checks = Checks::default();
        let name = checks.text("name", &new.name, 200);
        match (new.scope, new.site_id) {
            (TokenScope::Write, None) => checks.fail("site_id", "is required for a write token"),
            (TokenScope::Read | TokenScope::Admin, Some(_)) => {
                checks.fail("site_id", "is only allowed for a write token")
            }
            _ => {}
        }
        let now = self.crm.now_ms();
        if new.expires_ms.is_some_and(|e| e <= now) {
            checks.fail("expires_ms", "must be in the future");
        }
        checks.finish()?;
        let token = generate(API_TOKEN_PREFIX)?;
        let sql = format!(
            "INSERT INTO api_tokens (token_hash, name, scope, site_id, created_ms, expires_ms, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let row = query(&sql)
            .bind(digest(&token))
            .bind(name)
            .bind(new.scope.as_str())
            .bind(new.site_id)
            .bind(now)
            .bind(new.expires_ms)
            .bind(false)
            .fetch_one(self.crm.pool())
            .await
            .map_err(|e| map_write("api_token", "site_id", e))?;
        Ok((from_row(&row)?, token))
    }

    /// The token a client presented, if it exists, is not revoked and has not expired.
    pub async fn lookup(&self, token: &str) -> Result<Option<ApiToken>> {
        if !token.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 \
             AND revoked = $2 AND (expires_ms IS NULL OR expires_ms > $3)"
        );
        let row = query(&sql)
            .bind(digest(token))
            .bind(false)
            .bind(self.crm.now_ms())
            .fetch_optional(self.crm.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The token with this id (revoked and expired ones too).
    pub async fn get(&self, id: i64) -> Result<ApiToken> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1");
        let row = query(&sql)
            .bind(id)
            .fetch_optional(self.crm.pool())
            .await?
            .ok_or_else(|| Error::not_found("api_token", id))?;
        Ok(from_row(&row)?)
    }

    /// Tokens by id, optionally only one site's, one page.
    pub async fn list(&self, site_id: Option<i64>, page: Page) -> Result<Vec<ApiToken>> {
        let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM api_tokens"));
        let mut first = true;
        if let Some(site_id) = site_id {
            stmt.filter(&mut first, "site_id =", Arg::Int(site_id));
        }
        stmt.sql.push_str(" ORDER BY id");
        stmt.page(page);
        let rows = stmt.query().fetch_all(self.crm.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<sqlx::Result<_>>()?)
    }

    /// Revokes the token; lookups refuse it from now on.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        let done = query("UPDATE api_tokens SET revoked = $1 WHERE id = $2")
            .bind(true)
            .bind(id)
            .execute(self.crm.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api_token", id));
        }
        Ok(())
    }

    /// Deletes the token.
    pub async fn delete(&self, id: i64) -> Result<()> {
        let done = query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(self.crm.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api_token", id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_hex_and_digests_differ() {
        let a = generate(API_TOKEN_PREFIX).unwrap();
        let b = generate(API_TOKEN_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("glk_"));
        assert_eq!(a.len(), 4 + 64);
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert!(!digest(&a).contains(&a[4..]));
    }
}

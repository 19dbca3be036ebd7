//! Login sessions: a random token given to the client once, its digest and expiry kept.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result, map_write};
use crate::sql::query;
use crate::store::Crm;
use crate::tokens::{digest, generate};

/// Prefix of session tokens (distinct from API tokens' `glk_`): the server tells the two
/// apart by it.
pub const SESSION_PREFIX: &str = "gls_";

/// A session as stored (the plain token is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Id.
    pub id: i64,
    /// The logged-in user.
    pub user_id: i64,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Lookups refuse the session from this time on, ms since the epoch.
    pub expires_ms: i64,
}

const COLUMNS: &str = "id, user_id, created_ms, expires_ms";

fn from_row(row: &AnyRow) -> sqlx::Result<Session> {
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
    })
}

/// The sessions repository; see [`Crm::sessions`].
#[derive(Debug, Clone, Copy)]
pub struct Sessions<'a> {
    crm: &'a Crm,
}

impl<'a> Sessions<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    /// Starts a session for `user_id` lasting `ttl`; returns it with the plain token
    /// (`gls_...`), which is not stored and cannot be shown again.
    pub async fn create(&self, user_id: i64, ttl: Duration) -> Result<(Session, String)> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if ttl_ms <= 0 {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let token = generate(SESSION_PREFIX)?;
        let now = self.crm.now_ms();
        let sql = format!(
            "INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        );
        let row = query(&sql)
            .bind(digest(&token))
            .bind(user_id)
            .bind(now)
            .bind(now.saturating_add(ttl_ms))
            .fetch_one(self.crm.pool())
            .await
            .map_err(|e| map_write("session", "user_id", e))?;
        Ok((from_row(&row)?, token))
    }

    /// The unexpired session for a token a client presented.
    pub async fn lookup(&self, token: &str) -> Result<Option<Session>> {
        if !token.starts_with(SESSION_PREFIX) {
            return Ok(None);
        }
        let sql =
            // A deactivated user's sessions end with the deactivation.
            format!(
                "SELECT {COLUMNS} FROM sessions WHERE token_hash = $1 AND expires_ms > $2 \
                 AND user_id IN (SELECT id FROM users WHERE active)"
            );
        let row = query(&sql)
            .bind(digest(token))
            .bind(self.crm.now_ms())
            .fetch_optional(self.crm.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Ends the session for this token (logout); `false` if there was none.
    pub async fn delete(&self, token: &str) -> Result<bool> {
        let done = query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(digest(token))
            .execute(self.crm.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session of a user (password change, deactivation); returns how many.
    pub async fn delete_for_user(&self, user_id: i64) -> Result<u64> {
        let done = query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(self.crm.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes expired sessions (a background task calls this); returns how many.
    pub async fn delete_expired(&self) -> Result<u64> {
        let done = query("DELETE FROM sessions WHERE expires_ms <= $1")
            .bind(self.crm.now_ms())
            .execute(self.crm.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

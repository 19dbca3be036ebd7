//! Failed logins per (email, client address), for rate limiting.

use std::time::Duration;

use sqlx::Row;

use crate::error::Result;
use crate::sql::query;
use crate::store::Crm;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn count(row: &sqlx::any::AnyRow) -> Result<u64> {
    let n: i64 = row.try_get("n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The login-attempt log; see [`Crm::login_attempts`].
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempts<'a> {
    crm: &'a Crm,
}

impl<'a> LoginAttempts<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    /// Records a failed login for `email` (compared lower-cased) from `ip`.
    pub async fn record_failure(&self, email: &str, ip: &str) -> Result<()> {
        query("INSERT INTO login_attempts (email, ip, at_ms) VALUES ($1, $2, $3)")
            .bind(email.trim().to_lowercase())
            .bind(ip)
            .bind(self.crm.now_ms())
            .execute(self.crm.pool())
            .await?;
        Ok(())
    }

    /// Failed logins for `email` from `ip` within the last `window`.
    pub async fn failures(&self, email: &str, ip: &str, window: Duration) -> Result<u64> {
        let since = self.crm.now_ms().saturating_sub(ms(window));
        let row = query(
            "SELECT COUNT(*) AS n FROM login_attempts WHERE email = $1 AND ip = $2 AND at_ms > $3",
        )
        .bind(email.trim().to_lowercase())
        .bind(ip)
        .bind(since)
        .fetch_one(self.crm.pool())
        .await?;
        count(&row)
    }

    /// Failed logins for `email` from any address within the last `window`: the limit
    /// that stops password guessing spread over many addresses.
    pub async fn failures_for_email(&self, email: &str, window: Duration) -> Result<u64> {
        let since = self.crm.now_ms().saturating_sub(ms(window));
        let row = query("SELECT COUNT(*) AS n FROM login_attempts WHERE email = $1 AND at_ms > $2")
            .bind(email.trim().to_lowercase())
            .bind(since)
            .fetch_one(self.crm.pool())
            .await?;
        count(&row)
    }

    /// Failed logins from `ip` for any email within the last `window`: the limit that
    /// stops one address trying many accounts.
    pub async fn failures_from_ip(&self, ip: &str, window: Duration) -> Result<u64> {
        let since = self.crm.now_ms().saturating_sub(ms(window));
        let row = query("SELECT COUNT(*) AS n FROM login_attempts WHERE ip = $1 AND at_ms > $2")
            .bind(ip)
            .bind(since)
            .fetch_one(self.crm.pool())
            .await?;
        count(&row)
    }

    /// Forgets the failures for `email` from `ip` (after a successful login).
    pub async fn clear(&self, email: &str, ip: &str) -> Result<()> {
        query("DELETE FROM login_attempts WHERE email = $1 AND ip = $2")
            .bind(email.trim().to_lowercase())
            .bind(ip)
            .execute(self.crm.pool())
            .await?;
        Ok(())
    }

    /// Deletes failures older than `max_age` (a background task calls this); returns how
    /// many.
    pub async fn prune(&self, max_age: Duration) -> Result<u64> {
        let before = self.crm.now_ms().saturating_sub(ms(max_age));
        let done = query("DELETE FROM login_attempts WHERE at_ms <= $1")
            .bind(before)
            .execute(self.crm.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

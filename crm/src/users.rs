//! Users: email (unique, lower-cased), role, argon2id password hash, active flag.

use std::fmt;
use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result, map_write};
use crate::sql::{Arg, Page, Stmt, flag, parsed, query, text_enum};
use crate::store::Crm;
use crate::validate::Checks;

text_enum! {
    /// What a user may do; `gateway` is the machine role field gateways log in with.
    Role {
        /// A consumer who sees their own home.
        Customer = "customer",
        /// A consumer who also produces (solar, battery).
        Prosumer = "prosumer",
        /// A business customer.
        Business = "business",
        /// Full access.
        Admin = "admin",
        /// Support staff.
        Support = "support",
        /// Runs SQL over everything, writes nothing.
        Analyst = "analyst",
        /// A machine identity that writes readings for one site.
        Gateway = "gateway",
    }
}

/// A user as the API may show it: no password hash here, by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Lower-cased, trimmed, unique.
    pub email: String,
    /// Name shown in the portal.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Inactive users cannot log in.
    pub active: bool,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last update time, ms since the epoch.
    pub updated_ms: i64,
}

/// Input for [`Users::create`]. Its `Debug` hides the password.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Email; trimmed and lower-cased before it is stored.
    pub email: String,
    /// Name shown in the portal.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Plain password (8 to 1024 characters), or none for a user who cannot log in
    /// with one (a gateway identity that uses API tokens).
    #[schema(format = Password, write_only)]
    pub password: Option<String>,
}

/// A partial update for [`Users::update`]: absent fields stay as they are. Its `Debug`
/// hides the password.
#[derive(Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserUpdate {
    /// New email.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// New password (re-hashed); ends the user's sessions.
    #[schema(format = Password, write_only)]
    pub password: Option<String>,
}

/// What a `Debug` print shows of a password: whether there is one, never what it is.
fn redacted(password: &Option<String>) -> Option<&'static str> {
    password.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("password", &redacted(&self.password))
            .finish()
    }
}

impl fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserUpdate")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("active", &self.active)
            .field("password", &redacted(&self.password))
            .finish()
    }
}

/// Filters for [`Users::list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserFilter {
    /// Only this role.
    pub role: Option<Role>,
    /// Only active (or only inactive) users.
    pub active: Option<bool>,
    /// Only users whose email contains this text (case-insensitive).
    pub email: Option<String>,
}

const COLUMNS: &str = "id, email, display_name, role, active, created_ms, updated_ms";

fn from_row(row: &AnyRow) -> sqlx::Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: parsed(row, "role")?,
        active: flag(row, "active")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// `text` with LIKE's wildcards (`%`, `_`) and the escape character (`\`) escaped, so
/// a search for `a_b` finds only `a_b`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn check_password(checks: &mut Checks, password: &str) {
    let n = password.chars().count();
    if n < 8 {
        checks.fail("password", "must be at least 8 characters");
    } else if n > 1024 {
        checks.fail("password", "must be at most 1024 characters");
    }
}

/// Hashes on the blocking pool: argon2id takes tens of milliseconds of CPU by design.
async fn hash_password(password: String) -> Result<String> {
    let hashed = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await;
    match hashed {
        Ok(Ok(hash)) => Ok(hash),
        Ok(Err(e)) => Err(Error::Crypto(format!("password hashing failed: {e}"))),
        Err(e) => Err(Error::Crypto(format!("password hashing task failed: {e}"))),
    }
}

/// A hash to verify against when the email is unknown, so a miss costs as long as a hit
/// and response times do not reveal which emails exist.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(b"not a real password")
        .ok()
        .map(|h| h.to_string())
});

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The users repository; see [`Crm::users`].
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    crm: &'a Crm,
}

impl<'a> Users<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    /// Creates a user; the password is hashed with argon2id.
    pub async fn create(&self, new: NewUser) -> Result<User> {
        let mut checks = Checks::default();
        let email = checks.email("email", &new.email);
        let display_name = checks.text("display_name", &new.display_name, 200);
        if let Some(p) = &new.password {
            check_password(&mut checks, p);
        }
        checks.finish()?;
        let hash = match new.password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let now = self.crm.now_ms();
        let sql = format!(
            "INSERT INTO users (email, display_name, role, password_hash, active, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {COLUMNS}"
        );
        let row = query(&sql)
            .bind(email)
            .bind(display_name)
            .bind(new.role.as_str())
            .bind(hash)
            .bind(true)
            .bind(now)
            .fetch_one(self.crm.pool())
            .await
            .map_err(|e| map_write("user", "", e))?;
        Ok(from_row(&row)?)
    }

    /// The user with this id.
    pub async fn get(&self, id: i64) -> Result<User> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let row = query(&sql)
            .bind(id)
            .fetch_optional(self.crm.pool())
            .await?
            .ok_or_else(|| Error::not_found("user", id))?;
        Ok(from_row(&row)?)
    }

    /// The user with this email (compared trimmed and lower-cased), if any.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1");
        let row = query(&sql)
            .bind(email.trim().to_lowercase())
            .fetch_optional(self.crm.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Users by id, filtered, one page.
    pub async fn list(&self, filter: &UserFilter, page: Page) -> Result<Vec<User>> {
        let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM users"));
        let mut first = true;
        if let Some(role) = filter.role {
            stmt.filter(&mut first, "role =", Arg::Text(role.as_str().to_owned()));
        }
        if let Some(active) = filter.active {
            stmt.filter(&mut first, "active =", Arg::Bool(active));
        }
        if let Some(part) = filter
            .email
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            // Emails are stored lower-cased, so a lower-cased pattern matches on both
            // backends (PostgreSQL's LIKE is case-sensitive, SQLite's is not).
            let pattern = format!("%{}%", escape_like(&part.to_lowercase()));
            stmt.filter(&mut first, "email LIKE", Arg::Text(pattern));
            stmt.sql.push_str(" ESCAPE '\\'");
        }
        stmt.sql.push_str(" ORDER BY id");
        stmt.page(page);
        let rows = stmt.query().fetch_all(self.crm.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<sqlx::Result<_>>()?)
    }

    /// Applies `update` and returns the user as stored.
    pub async fn update(&self, id: i64, update: UserUpdate) -> Result<User> {
        let mut checks = Checks::default();
        let email = update.email.as_deref().map(|e| checks.email("email", e));
        let display_name = update
            .display_name
            .as_deref()
            .map(|n| checks.text("display_name", n, 200));
        if let Some(p) = &update.password {
            check_password(&mut checks, p);
        }
        checks.finish()?;
        let hash = match update.password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        // A deactivated user, or one whose password changed (perhaps because it
        // leaked), keeps no session: removed in the same transaction as the change.
        let end_sessions = update.active == Some(false) || hash.is_some();
        let mut stmt = Stmt::new("UPDATE users SET updated_ms = ");
        let now = stmt.arg(Arg::Int(self.crm.now_ms()));
        stmt.sql.push_str(&now);
        let set = |stmt: &mut Stmt, column: &str, arg: Arg| {
            let p = stmt.arg(arg);
            stmt.sql.push_str(&format!(", {column} = {p}"));
        };
        if let Some(v) = email {
            set(&mut stmt, "email", Arg::Text(v));
        }
        if let Some(v) = display_name {
            set(&mut stmt, "display_name", Arg::Text(v));
        }
        if let Some(v) = update.role {
            set(&mut stmt, "role", Arg::Text(v.as_str().to_owned()));
        }
        if let Some(v) = update.active {
            set(&mut stmt, "active", Arg::Bool(v));
        }
        if let Some(v) = hash {
            set(&mut stmt, "password_hash", Arg::Text(v));
        }
        let p = stmt.arg(Arg::Int(id));
        stmt.sql
            .push_str(&format!(" WHERE id = {p} RETURNING {COLUMNS}"));
        let mut tx = self.crm.pool().begin().await?;
        let row = stmt
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_write("user", "", e))?
            .ok_or_else(|| Error::not_found("user", id))?;
        if end_sessions {
            query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Deletes the user and, through the foreign keys, their accounts, sites and
    /// sessions (devices on those sites become unassigned, as having left them: see
    /// [`crate::Sites::delete`]).
    pub async fn delete(&self, id: i64) -> Result<()> {
        let sites = "SELECT s.id FROM sites s JOIN accounts a ON a.id = s.account_id \
                     WHERE a.user_id = $2";
        let mut tx = self.crm.pool().begin().await?;
        self.crm.devices().leave_sites(&mut tx, sites, id).await?;
        let done = query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user", id));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The active user with this email and password, or `None` (unknown email, wrong
    /// password, no password set, or inactive). Takes about as long either way.
    pub async fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {COLUMNS}, password_hash FROM users WHERE email = $1");
        let row = query(&sql)
            .bind(email.trim().to_lowercase())
            .fetch_optional(self.crm.pool())
            .await?;
        let (user, hash) = match &row {
            Some(row) => (
                Some(from_row(row)?),
                row.try_get::<Option<String>, _>("password_hash")?,
            ),
            None => (None, None),
        };
        let known = hash.is_some();
        let password = password.to_owned();
        // The dummy hash is made on first use, which is argon2 work: on the blocking
        // pool too, never on an async worker.
        let ok = tokio::task::spawn_blocking(move || {
            let hash = hash.or_else(|| DUMMY_HASH.clone());
            hash.is_some_and(|h| verify(&h, &password)) && known
        })
        .await
        .unwrap_or(false);
        Ok(user.filter(|u| ok && u.active))
    }
}

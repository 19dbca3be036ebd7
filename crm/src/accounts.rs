//! Billing accounts: one user may hold several (personal and business).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result, map_write};
use crate::sql::{Arg, Page, Stmt, parsed, query, text_enum};
use crate::store::Crm;
use crate::validate::Checks;

text_enum! {
    /// Residential or business.
    AccountType {
        /// A household.
        Residential = "residential",
        /// A company.
        Business = "business",
    }
}

text_enum! {
    /// Account lifecycle.
    AccountStatus {
        /// In use.
        Active = "active",
        /// Temporarily blocked.
        Suspended = "suspended",
        /// Ended.
        Closed = "closed",
    }
}

/// A billing account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Account {
    /// Id.
    pub id: i64,
    /// The owning user.
    pub user_id: i64,
    /// Unique, e.g. `ACC-2025-001234`.
    pub account_number: String,
    /// Residential or business.
    pub account_type: AccountType,
    /// Lifecycle status.
    pub status: AccountStatus,
    /// Where invoices go, if not the user's email (lower-cased).
    pub billing_email: Option<String>,
    /// VAT or tax id, for business accounts.
    pub tax_id: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last update time, ms since the epoch.
    pub updated_ms: i64,
}

/// Input for [`Accounts::create`].
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// The owning user.
    pub user_id: i64,
    /// Unique account number.
    pub account_number: String,
    /// Residential or business.
    pub account_type: AccountType,
    /// Defaults to active.
    #[serde(default = "active")]
    pub status: AccountStatus,
    /// Billing email, if different from the user's.
    #[serde(default)]
    pub billing_email: Option<String>,
    /// Tax id.
    #[serde(default)]
    pub tax_id: Option<String>,
}

/// Input for [`Accounts::update`], which replaces every field but the owner.
///
/// Moving an account to another user hands that user its sites, devices and readings,
/// so it is never a side effect of an edit: `user_id` alone only confirms the current
/// owner (an edit made from a stale copy that names another owner is refused, naming
/// `user_id`), and the owner changes only when `transfer_owner` is also true.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountUpdate {
    /// The owning user: must be the current owner, unless `transfer_owner` is true,
    /// when it is the new owner. Absent keeps the owner.
    #[serde(default)]
    pub user_id: Option<i64>,
    /// Set to move the account (and its sites and devices) to `user_id`.
    #[serde(default)]
    pub transfer_owner: bool,
    /// Unique account number.
    pub account_number: String,
    /// Residential or business.
    pub account_type: AccountType,
    /// Defaults to active.
    #[serde(default = "active")]
    pub status: AccountStatus,
    /// Billing email, if different from the user's.
    #[serde(default)]
    pub billing_email: Option<String>,
    /// Tax id.
    #[serde(default)]
    pub tax_id: Option<String>,
}

impl AccountUpdate {
    /// An update that sets the fields of `new` and keeps the owner, which must be
    /// `new.user_id`.
    pub fn from_new(new: NewAccount) -> Self {
        Self {
            user_id: Some(new.user_id),
            transfer_owner: false,
            account_number: new.account_number,
            account_type: new.account_type,
            status: new.status,
            billing_email: new.billing_email,
            tax_id: new.tax_id,
        }
    }
}

fn active() -> AccountStatus {
    AccountStatus::Active
}

/// Filters for [`Accounts::list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountFilter {
    /// Only this user's accounts.
    pub user_id: Option<i64>,
    /// Only accounts in this status.
    pub status: Option<AccountStatus>,
}

const COLUMNS: &str = "id, user_id, account_number, account_type, status, billing_email, tax_id, created_ms, updated_ms";

fn from_row(row: &AnyRow) -> sqlx::Result<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        account_number: row.try_get("account_number")?,
        account_type: parsed(row, "account_type")?,
        status: parsed(row, "status")?,
        billing_email: row.try_get("billing_email")?,
        tax_id: row.try_get("tax_id")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

struct Checked {
    account_number: String,
    billing_email: Option<String>,
    tax_id: Option<String>,
}

fn check_fields(
    checks: &mut Checks,
    account_number: &str,
    billing_email: Option<&str>,
    tax_id: Option<&str>,
) -> Checked {
    let account_number = checks.text("account_number", account_number, 64);
    let billing_email = billing_email
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| checks.email("billing_email", e));
    let tax_id = checks.optional_text("tax_id", tax_id, 64);
    Checked {
        account_number,
        billing_email,
        tax_id,
    }
}

fn check(new: &NewAccount) -> Result<Checked> {
    let mut checks = Checks::default();
    let checked = check_fields(
        &mut checks,
        &new.account_number,
        new.billing_email.as_deref(),
        new.tax_id.as_deref(),
    );
    checks.finish()?;
    Ok(checked)
}

/// The accounts repository; see [`Crm::accounts`].
#[derive(Debug, Clone, Copy)]
pub struct Accounts<'a> {
    crm: &'a Crm,
}

impl<'a> Accounts<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    /// Creates an account for an existing user.
    pub async fn create(&self, new: NewAccount) -> Result<Account> {
        let c = check(&new)?;
        let sql = format!(
            "INSERT INTO accounts (user_id, account_number, account_type, status, billing_email, tax_id, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {COLUMNS}"
        );
        let row = query(&sql)
            .bind(new.user_id)
            .bind(c.account_number)
            .bind(new.account_type.as_str())
            .bind(new.status.as_str())
            .bind(c.billing_email)
            .bind(c.tax_id)
            .bind(self.crm.now_ms())
            .fetch_one(self.crm.pool())
            .await
            .map_err(|e| map_write("account", "user_id", e))?;
        Ok(from_row(&row)?)
    }

    /// The account with this id.
    pub async fn get(&self, id: i64) -> Result<Account> {
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
        let row = query(&sql)
            .bind(id)
            .fetch_optional(self.crm.pool())
            .await?
            .ok_or_else(|| Error::not_found("account", id))?;
        Ok(from_row(&row)?)
    }

    /// Accounts by id, filtered, one page.
    pub async fn list(&self, filter: &AccountFilter, page: Page) -> Result<Vec<Account>> {
        let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM accounts"));
        let mut first = true;
        if let Some(user_id) = filter.user_id {
            stmt.filter(&mut first, "user_id =", Arg::Int(user_id));
        }
        if let Some(status) = filter.status {
            stmt.filter(
                &mut first,
                "status =",
                Arg::Text(status.as_str().to_owned()),
            );
        }
        stmt.sql.push_str(" ORDER BY id");
        stmt.page(page);
        let rows = stmt.query().fetch_all(self.crm.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<sqlx::Result<_>>()?)
    }

    /// Replaces every field of the account but the owner, which changes only with
    /// `transfer_owner` (see [`AccountUpdate`]).
    pub async fn update(&self, id: i64, update: AccountUpdate) -> Result<Account> {
        let mut checks = Checks::default();
        let c = check_fields(
            &mut checks,
            &update.account_number,
            update.billing_email.as_deref(),
            update.tax_id.as_deref(),
        );
        if update.transfer_owner && update.user_id.is_none() {
            checks.fail(
                "user_id",
                "is required when transfer_owner is true (the new owner)",
            );
        }
        checks.finish()?;
        // No transaction: the update below applies only while the owner is still the
        // one checked here, so a transfer in between cannot be undone by this edit.
        let owner: i64 = query("SELECT user_id FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.crm.pool())
            .await?
            .ok_or_else(|| Error::not_found("account", id))?
            .try_get("user_id")?;
        let new_owner = match update.user_id {
            Some(user_id) if update.transfer_owner => user_id,
            Some(user_id) if user_id != owner => {
                return Err(Error::invalid(
                    "user_id",
                    format!(
                        "is not the account's owner ({owner}); to move the account, its sites \
                         and devices to user {user_id}, also set transfer_owner to true"
                    ),
                ));
            }
            _ => owner,
        };
        let sql = format!(
            "UPDATE accounts SET user_id = $1, account_number = $2, account_type = $3, status = $4, \
             billing_email = $5, tax_id = $6, updated_ms = $7 WHERE id = $8 AND user_id = $9 \
             RETURNING {COLUMNS}"
        );
        let row = query(&sql)
            .bind(new_owner)
            .bind(c.account_number)
            .bind(update.account_type.as_str())
            .bind(update.status.as_str())
            .bind(c.billing_email)
            .bind(c.tax_id)
            .bind(self.crm.now_ms())
            .bind(id)
            .bind(owner)
            .fetch_optional(self.crm.pool())
            .await
            .map_err(|e| map_write("account", "user_id", e))?
            // Deleted, or transferred by someone else, since the read above.
            .ok_or_else(|| Error::not_found("account", id))?;
        let account = from_row(&row)?;
        if account.user_id != owner {
            tracing::info!(
                account_id = id,
                from_user = owner,
                to_user = account.user_id,
                "account transferred to another owner"
            );
        }
        Ok(account)
    }

    /// Deletes the account and its sites (whose devices become unassigned, as having
    /// left them: see [`crate::Sites::delete`]).
    pub async fn delete(&self, id: i64) -> Result<()> {
        let mut tx = self.crm.pool().begin().await?;
        self.crm
            .devices()
            .leave_sites(&mut tx, "SELECT id FROM sites WHERE account_id = $2", id)
            .await?;
        let done = query("DELETE FROM accounts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("account", id));
        }
        tx.commit().await?;
        Ok(())
    }
}

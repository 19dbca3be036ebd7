//! The side store: who owns what.
//!
//! Users own accounts, accounts own sites, sites own devices; the device registry maps a
//! reading's `device_id` tag to its site. Sessions, API tokens and login attempts back
//! authentication. Everything lives in one relational database:
//!
//! ```text
//!  CrmConfig ──► Crm::open ──► SQLite file `crm.sqlite` in the data dir (default, WAL)
//!                    │          or PostgreSQL (`url = "postgres://..."`)
//!                    │          migrations (crm/migrations/<backend>/*.sql) run at open
//!                    ▼
//!  crm.users() · accounts() · sites() · devices() · sessions() · api_tokens() · login_attempts()
//!                    │
//!                    └─ one code path over `sqlx::Any`: `$n` placeholders, BIGINT ids,
//!                       times as BIGINT ms since the epoch (the unit readings and the
//!                       portal use; it sorts and compares the same on both backends,
//!                       where RFC 3339 text would need care with offsets and precision).
//! ```
//!
//! Secrets never leave as stored: password hashes stay out of [`User`] (which derives
//! `Serialize`), and sessions and API tokens are stored as digests; the plain token is
//! returned once, at creation.

mod accounts;
mod clock;
mod config;
mod devices;
mod error;
mod login_attempts;
mod sessions;
mod sites;
mod sql;
mod store;
mod tokens;
mod users;
mod validate;

pub use accounts::{
    Account, AccountFilter, AccountStatus, AccountType, AccountUpdate, Accounts, NewAccount,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CrmConfig, UnknownDevices};
pub use devices::{
    Device, DeviceFilter, DeviceKind, DeviceStatus, Devices, NewDevice, SiteAssignment,
};
pub use error::{Error, FieldError, Result};
pub use login_attempts::LoginAttempts;
pub use sessions::{SESSION_PREFIX, Session, Sessions};
pub use sites::{NewSite, PropertyType, Site, SiteFilter, Sites};
pub use sql::Page;
pub use store::{Backend, Crm, SQLITE_FILE};
pub use tokens::{API_TOKEN_PREFIX, ApiToken, ApiTokens, NewApiToken, TokenScope};
pub use users::{NewUser, Role, User, UserFilter, UserUpdate, Users};

/// A name that is not one of an enumeration's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownName(pub String);

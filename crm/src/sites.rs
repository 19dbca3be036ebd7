//! Sites: physical locations with an address, coordinates and an IANA time zone.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result, map_write};
use crate::sql::{Arg, Page, Stmt, flag, parsed, query, text_enum};
use crate::store::Crm;
use crate::validate::Checks;

text_enum! {
    /// What kind of building the site is.
    PropertyType {
        /// A home.
        Residential = "residential",
        /// Offices, shops.
        Commercial = "commercial",
        /// Factories, plants.
        Industrial = "industrial",
    }
}

/// A site.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Site {
    /// Id.
    pub id: i64,
    /// The owning account.
    pub account_id: i64,
    /// User-friendly name ("Home").
    pub name: String,
    /// Street.
    pub street: Option<String>,
    /// House number.
    pub street_number: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// State or region.
    pub state: Option<String>,
    /// ISO 3166-1 alpha-2 country code, upper case.
    pub country: Option<String>,
    /// Degrees, -90..=90.
    pub latitude: Option<f64>,
    /// Degrees, -180..=180.
    pub longitude: Option<f64>,
    /// IANA time zone; daily and monthly buckets follow it.
    pub time_zone: String,
    /// Building kind.
    pub property_type: PropertyType,
    /// The account's primary site; an account has at most one.
    pub is_primary: bool,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last update time, ms since the epoch.
    pub updated_ms: i64,
}

/// Input for [`Sites::create`] and [`Sites::update`] (which replaces every field).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    /// The owning account.
    pub account_id: i64,
    /// Name.
    pub name: String,
    /// Street.
    #[serde(default)]
    pub street: Option<String>,
    /// House number.
    #[serde(default)]
    pub street_number: Option<String>,
    /// City.
    #[serde(default)]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default)]
    pub postal_code: Option<String>,
    /// State or region.
    #[serde(default)]
    pub state: Option<String>,
    /// ISO 3166-1 alpha-2 country code (case-insensitive on input).
    #[serde(default)]
    pub country: Option<String>,
    /// Latitude; give both coordinates or neither.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// Longitude.
    #[serde(default)]
    pub longitude: Option<f64>,
    /// IANA time zone name (`Europe/Berlin`).
    pub time_zone: String,
    /// Building kind.
    pub property_type: PropertyType,
    /// Primary site of the account; setting it clears it on the account's other sites.
    #[serde(default)]
    pub is_primary: bool,
}

/// Filters for [`Sites::list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteFilter {
    /// Only this account's sites.
    pub account_id: Option<i64>,
    /// Only the sites of accounts this user holds (customer scoping).
    pub user_id: Option<i64>,
}

const COLUMNS: &str = "id, account_id, name, street, street_number, city, postal_code, state, country, \
     latitude, longitude, time_zone, property_type, is_primary, created_ms, updated_ms";

fn from_row(row: &AnyRow) -> sqlx::Result<Site> {
    Ok(Site {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        street: row.try_get("street")?,
        street_number: row.try_get("street_number")?,
        city: row.try_get("city")?,
        postal_code: row.try_get("postal_code")?,
        state: row.try_get("state")?,
        country: row.try_get("country")?,
        latitude: row.try_get("latitude")?,
        longitude: row.try_get("longitude")?,
        time_zone: row.try_get("time_zone")?,
        property_type: parsed(row, "property_type")?,
        is_primary: flag(row, "is_primary")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// The validated, normalised text fields of a [`NewSite`], in column order.
fn check(new: &NewSite) -> Result<[Arg; 10]> {
    let mut checks = Checks::default();
    let name = checks.text("name", &new.name, 200);
    let street = checks.optional_text("street", new.street.as_deref(), 200);
    let street_number = checks.optional_text("street_number", new.street_number.as_deref(), 32);
    let city = checks.optional_text("city", new.city.as_deref(), 200);
    let postal_code = checks.optional_text("postal_code", new.postal_code.as_deref(), 32);
    let state = checks.optional_text("state", new.state.as_deref(), 200);
    let country = new
        .country
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_ascii_uppercase);
    if country
        .as_deref()
        .is_some_and(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        checks.fail("country", "must be an ISO 3166-1 alpha-2 code such as DE");
    }
    match (new.latitude, new.longitude) {
        (Some(_), None) => checks.fail("longitude", "is required when latitude is given"),
        (None, Some(_)) => checks.fail("latitude", "is required when longitude is given"),
        _ => {}
    }
    if new
        .latitude
        .is_some_and(|v| !v.is_finite() || !(-90.0..=90.0).contains(&v))
    {
        checks.fail("latitude", "must be between -90 and 90");
    }
    if new
        .longitude
        .is_some_and(|v| !v.is_finite() || !(-180.0..=180.0).contains(&v))
    {
        checks.fail("longitude", "must be between -180 and 180");
    }
    let time_zone = new.time_zone.trim().to_owned();
    if time_zone.parse::<chrono_tz::Tz>().is_err() {
        checks.fail(
            "time_zone",
            "must be an IANA time zone such as Europe/Berlin",
        );
    }
    checks.finish()?;
    Ok([
        Arg::Text(name),
        Arg::OptText(street),
        Arg::OptText(street_number),
        Arg::OptText(city),
        Arg::OptText(postal_code),
        Arg::OptText(state),
        Arg::OptText(country),
        Arg::OptFloat(new.latitude),
        Arg::OptFloat(new.longitude),
        Arg::Text(time_zone),
    ])
}

/// The sites repository; see [`Crm::sites`].
#[derive(Debug, Clone, Copy)]
pub struct Sites<'a> {
    crm: &'a Crm,
}

impl<'a> Sites<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    /// Creates a site under an existing account.
    pub async fn create(&self, new: NewSite) -> Result<Site> {
        let fields = check(&new)?;
        let mut stmt = Stmt::new("");
        let account = stmt.arg(Arg::Int(new.account_id));
        let values: Vec<String> = fields.into_iter().map(|a| stmt.arg(a)).collect();
        let property = stmt.arg(Arg::Text(new.property_type.as_str().to_owned()));
        let primary = stmt.arg(Arg::Bool(new.is_primary));
        let now = stmt.arg(Arg::Int(self.crm.now_ms()));
        stmt.sql = format!(
            "INSERT INTO sites (account_id, name, street, street_number, city, postal_code, state, country, \
             latitude, longitude, time_zone, property_type, is_primary, created_ms, updated_ms) \
             VALUES ({account}, {}, {property}, {primary}, {now}, {now}) RETURNING {COLUMNS}",
            values.join(", ")
        );
        let mut tx = self.crm.pool().begin().await?;
        if new.is_primary {
            self.clear_primary(&mut tx, new.account_id, None).await?;
        }
        let row = stmt
            .query()
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| map_write("site", "account_id", e))?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Makes no site of `account_id` but `except` primary, in `tx`, before the caller
    /// writes a primary site there: an account has one primary site, and setting it on
    /// one site is how a client moves it.
    ///
    /// Locks the account row first (a no-op update: row lock on PostgreSQL, the write
    /// lock on SQLite), so two transactions that each make a different site primary
    /// run one after the other and leave one primary, not two.
    async fn clear_primary(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        account_id: i64,
        except: Option<i64>,
    ) -> Result<()> {
        query("UPDATE accounts SET updated_ms = updated_ms WHERE id = $1")
            .bind(account_id)
            .execute(&mut **tx)
            .await?;
        let mut stmt = Stmt::new("UPDATE sites SET is_primary = ");
        let no = stmt.arg(Arg::Bool(false));
        let now = stmt.arg(Arg::Int(self.crm.now_ms()));
        let account = stmt.arg(Arg::Int(account_id));
        let yes = stmt.arg(Arg::Bool(true));
        stmt.sql.push_str(&format!(
            "{no}, updated_ms = {now} WHERE account_id = {account} AND is_primary = {yes}"
        ));
        if let Some(id) = except {
            let id = stmt.arg(Arg::Int(id));
            stmt.sql.push_str(&format!(" AND id <> {id}"));
        }
        stmt.query().execute(&mut **tx).await?;
        Ok(())
    }

    /// The site with this id.
    pub async fn get(&self, id: i64) -> Result<Site> {
        let sql = format!("SELECT {COLUMNS} FROM sites WHERE id = $1");
        let row = query(&sql)
            .bind(id)
            .fetch_optional(self.crm.pool())
            .await?
            .ok_or_else(|| Error::not_found("site", id))?;
        Ok(from_row(&row)?)
    }

    /// Sites by id, filtered, one page.
    pub async fn list(&self, filter: &SiteFilter, page: Page) -> Result<Vec<Site>> {
        let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM sites"));
        let mut first = true;
        if let Some(account_id) = filter.account_id {
            stmt.filter(&mut first, "account_id =", Arg::Int(account_id));
        }
        if let Some(user_id) = filter.user_id {
            stmt.filter(
                &mut first,
                "account_id IN (SELECT id FROM accounts WHERE user_id =",
                Arg::Int(user_id),
            );
            stmt.sql.push(')');
        }
        stmt.sql.push_str(" ORDER BY id");
        stmt.page(page);
        let rows = stmt.query().fetch_all(self.crm.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<sqlx::Result<_>>()?)
    }

    /// Replaces every field of the site.
    pub async fn update(&self, id: i64, new: NewSite) -> Result<Site> {
        let fields = check(&new)?;
        let mut stmt = Stmt::new("");
        let account = stmt.arg(Arg::Int(new.account_id));
        let columns = [
            "name",
            "street",
            "street_number",
            "city",
            "postal_code",
            "state",
            "country",
            "latitude",
            "longitude",
            "time_zone",
        ];
        let sets: Vec<String> = columns
            .iter()
            .zip(fields)
            .map(|(c, a)| format!("{c} = {}", stmt.arg(a)))
            .collect();
        let property = stmt.arg(Arg::Text(new.property_type.as_str().to_owned()));
        let primary = stmt.arg(Arg::Bool(new.is_primary));
        let now = stmt.arg(Arg::Int(self.crm.now_ms()));
        let id_p = stmt.arg(Arg::Int(id));
        stmt.sql = format!(
            "UPDATE sites SET account_id = {account}, {}, property_type = {property}, is_primary = {primary}, \
             updated_ms = {now} WHERE id = {id_p} RETURNING {COLUMNS}",
            sets.join(", ")
        );
        let mut tx = self.crm.pool().begin().await?;
        if new.is_primary {
            self.clear_primary(&mut tx, new.account_id, Some(id))
                .await?;
        }
        let row = stmt
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_write("site", "account_id", e))?
            .ok_or_else(|| Error::not_found("site", id))?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Deletes the site; its devices become unassigned, as having left it (their readings
    /// so far stay hidden from the next site, see [`crate::Devices::update`]); its API
    /// tokens are deleted.
    pub async fn delete(&self, id: i64) -> Result<()> {
        let mut tx = self.crm.pool().begin().await?;
        self.crm.devices().leave_sites(&mut tx, "$2", id).await?;
        let done = query("DELETE FROM sites WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("site", id));
        }
        tx.commit().await?;
        Ok(())
    }
}

//! The device registry: which site a telemetry `device_id` belongs to, and when it was
//! last heard from.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result, map_write};
use crate::sql::{Arg, Page, Stmt, parsed, query, text_enum};
use crate::store::Crm;
use crate::validate::{Checks, normalize_mac};

text_enum! {
    /// What a device is (the energy portal's device entities).
    DeviceKind {
        /// An electricity or gas meter.
        Meter = "meter",
        /// A PV system as a whole.
        SolarSystem = "solar_system",
        /// A PV inverter.
        Inverter = "inverter",
        /// A home battery.
        Battery = "battery",
        /// An EV charger.
        EvCharger = "ev_charger",
        /// A smart plug.
        SmartPlug = "smart_plug",
    }
}

text_enum! {
    /// Device status; which values a kind may take follows the portal data model
    /// (see [`DeviceStatus::allowed_for`]).
    DeviceStatus {
        /// In service (meters, solar systems).
        Active = "active",
        /// Out of service (meters, solar systems).
        Inactive = "inactive",
        /// Meter fault.
        Faulty = "faulty",
        /// Solar system under maintenance.
        Maintenance = "maintenance",
        /// Reporting.
        Online = "online",
        /// Not reporting.
        Offline = "offline",
        /// Inverter warning.
        Warning = "warning",
        /// Device fault.
        Fault = "fault",
        /// Battery or EV charger charging.
        Charging = "charging",
        /// Battery discharging.
        Discharging = "discharging",
        /// Battery idle.
        Idle = "idle",
        /// EV charger free.
        Available = "available",
        /// Smart plug switched on.
        On = "on",
        /// Smart plug switched off.
        Off = "off",
    }
}

impl DeviceStatus {
    /// The statuses a device of `kind` can have.
    pub fn allowed_for(kind: DeviceKind) -> &'static [DeviceStatus] {
        use DeviceStatus::*;
        match kind {
            DeviceKind::Meter => &[Active, Inactive, Faulty],
            DeviceKind::SolarSystem => &[Active, Inactive, Maintenance],
            DeviceKind::Inverter => &[Online, Offline, Warning, Fault],
            DeviceKind::Battery => &[Online, Offline, Charging, Discharging, Idle, Fault],
            DeviceKind::EvCharger => &[Online, Offline, Charging, Available, Fault],
            DeviceKind::SmartPlug => &[Online, Offline, On, Off],
        }
    }

    /// The status of a newly registered device of `kind`: in service.
    pub fn initial(kind: DeviceKind) -> DeviceStatus {
        match kind {
            DeviceKind::Meter | DeviceKind::SolarSystem => DeviceStatus::Active,
            _ => DeviceStatus::Online,
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Device {
    /// Id.
    pub id: i64,
    /// Kind.
    pub kind: DeviceKind,
    /// The telemetry `device_id` tag; unique.
    pub device_id: String,
    /// The site it belongs to; `None` while unassigned.
    pub site_id: Option<i64>,
    /// Readings before this time (ms since the epoch) belong to the device's previous
    /// site; set when the device leaves a site, `None` when its history has only ever
    /// belonged to its current site or none.
    pub assigned_ms: Option<i64>,
    /// User-friendly name ("Washing machine").
    pub name: Option<String>,
    /// Utility meter number; unique when present.
    pub meter_number: Option<String>,
    /// Serial number; unique when present.
    pub serial_number: Option<String>,
    /// MAC address in lower-case colon form; unique when present.
    pub mac_address: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Status.
    pub status: DeviceStatus,
    /// Time of the newest reading seen, ms since the epoch.
    pub last_seen_ms: Option<i64>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Last update time (not counting `last_seen_ms`), ms since the epoch.
    pub updated_ms: i64,
}

/// Input for [`Devices::create`], [`Devices::update`] (which replaces every field but the
/// last-seen time) and [`Devices::register_unassigned`] (which ignores `site_id`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Kind.
    pub kind: DeviceKind,
    /// The telemetry `device_id` tag.
    pub device_id: String,
    /// Site, or none for unassigned.
    #[serde(default)]
    pub site_id: Option<i64>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Meter number.
    #[serde(default)]
    pub meter_number: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// MAC address in any common notation; stored as `aa:bb:cc:dd:ee:ff`.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Manufacturer.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// Status; defaults to [`DeviceStatus::initial`].
    #[serde(default)]
    pub status: Option<DeviceStatus>,
}

impl NewDevice {
    /// A device of `kind` with only its telemetry id set.
    pub fn new(kind: DeviceKind, device_id: impl Into<String>) -> Self {
        Self {
            kind,
            device_id: device_id.into(),
            site_id: None,
            name: None,
            meter_number: None,
            serial_number: None,
            mac_address: None,
            manufacturer: None,
            model: None,
            status: None,
        }
    }
}

/// Which devices [`Devices::list`] returns by site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteAssignment {
    /// Devices of this site.
    Site(i64),
    /// Devices with no site.
    Unassigned,
}

/// Filters for [`Devices::list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceFilter {
    /// By site, or only unassigned devices.
    pub site: Option<SiteAssignment>,
    /// Only this kind.
    pub kind: Option<DeviceKind>,
    /// Only this status.
    pub status: Option<DeviceStatus>,
    /// Only devices on sites of accounts this user holds (customer scoping).
    pub user_id: Option<i64>,
}

const COLUMNS: &str = "id, kind, device_id, site_id, assigned_ms, name, meter_number, \
     serial_number, mac_address, manufacturer, model, status, last_seen_ms, created_ms, updated_ms";

/// Column names of [`check`]'s result, in order.
const FIELDS: [&str; 9] = [
    "kind",
    "device_id",
    "name",
    "meter_number",
    "serial_number",
    "mac_address",
    "manufacturer",
    "model",
    "status",
];

fn from_row(row: &AnyRow) -> sqlx::Result<Device> {
    Ok(Device {
        id: row.try_get("id")?,
        kind: parsed(row, "kind")?,
        device_id: row.try_get("device_id")?,
        site_id: row.try_get("site_id")?,
        assigned_ms: row.try_get("assigned_ms")?,
        name: row.try_get("name")?,
        meter_number: row.try_get("meter_number")?,
        serial_number: row.try_get("serial_number")?,
        mac_address: row.try_get("mac_address")?,
        manufacturer: row.try_get("manufacturer")?,
        model: row.try_get("model")?,
        status: parsed(row, "status")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn check(new: &NewDevice) -> Result<[Arg; 9]> {
    let mut checks = Checks::default();
    let device_id = checks.text("device_id", &new.device_id, 256);
    let name = checks.optional_text("name", new.name.as_deref(), 200);
    let meter_number = checks.optional_text("meter_number", new.meter_number.as_deref(), 64);
    let serial_number = checks.optional_text("serial_number", new.serial_number.as_deref(), 128);
    let mac_address = match new.mac_address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(mac) => {
            let normal = normalize_mac(mac);
            if normal.is_none() {
                checks.fail(
                    "mac_address",
                    "must be 6 hex bytes such as aa:bb:cc:dd:ee:ff",
                );
            }
            normal
        }
    };
    let manufacturer = checks.optional_text("manufacturer", new.manufacturer.as_deref(), 200);
    let model = checks.optional_text("model", new.model.as_deref(), 200);
    let status = new.status.unwrap_or(DeviceStatus::initial(new.kind));
    let allowed = DeviceStatus::allowed_for(new.kind);
    if !allowed.contains(&status) {
        let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        checks.fail(
            "status",
            format!("must be one of {} for a {}", names.join(", "), new.kind),
        );
    }
    checks.finish()?;
    Ok([
        Arg::Text(new.kind.as_str().to_owned()),
        Arg::Text(device_id),
        Arg::OptText(name),
        Arg::OptText(meter_number),
        Arg::OptText(serial_number),
        Arg::OptText(mac_address),
        Arg::OptText(manufacturer),
        Arg::OptText(model),
        Arg::Text(status.as_str().to_owned()),
    ])
}

/// Bound pairs per `touch_last_seen` statement: well under SQLite's 32766 and
/// PostgreSQL's 65535 parameters.
const TOUCH_CHUNK: usize = 1000;

/// How far ahead of the store's clock a last-seen time may be.
const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;

/// The device registry; see [`Crm::devices`].
#[derive(Debug, Clone, Copy)]
pub struct Devices<'a> {
    crm: &'a Crm,
}

impl<'a> Devices<'a> {
    pub(crate) fn new(crm: &'a Crm) -> Self {
        Self { crm }
    }

    async fn insert(
        &self,
        new: &NewDevice,
        site_id: Option<i64>,
        on_conflict: &str,
    ) -> Result<Option<Device>> {
        let fields = check(new)?;
        let mut stmt = Stmt::new("");
        let values: Vec<String> = fields.into_iter().map(|a| stmt.arg(a)).collect();
        let site = stmt.arg(Arg::OptInt(site_id));
        let now = stmt.arg(Arg::Int(self.crm.now_ms()));
        stmt.sql = format!(
            "INSERT INTO devices ({}, site_id, created_ms, updated_ms) VALUES ({}, {site}, {now}, {now}) \
             {on_conflict} RETURNING {COLUMNS}",
            FIELDS.join(", "),
            values.join(", ")
        );
        let row = stmt
            .query()
            .fetch_optional(self.crm.pool())
            .await
            .map_err(|e| map_write("device", "site_id", e))?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Registers a device.
    pub async fn create(&self, new: NewDevice) -> Result<Device> {
        self.insert(&new, new.site_id, "")
            .await?
            .ok_or_else(|| Error::not_found("device", &new.device_id))
    }

    /// Registers a device first seen in telemetry, with no site; returns the registered
    /// device, new or existing (idempotent: a second call, or a race with another
    /// writer, returns the same row unchanged). Fails with a conflict when one of the
    /// identifiers belongs to another device.
    pub async fn register_unassigned(&self, new: NewDevice) -> Result<Device> {
        if let Some(d) = self
            .insert(&new, None, "ON CONFLICT (device_id) DO NOTHING")
            .await?
        {
            tracing::info!(device_id = %d.device_id, kind = %d.kind, "unknown device registered as unassigned");
            return Ok(d);
        }
        self.get_by_device_id(new.device_id.trim())
            .await?
            .ok_or_else(|| Error::not_found("device", &new.device_id))
    }

    /// The device with this id.
    pub async fn get(&self, id: i64) -> Result<Device> {
        let sql = format!("SELECT {COLUMNS} FROM devices WHERE id = $1");
        let row = query(&sql)
            .bind(id)
            .fetch_optional(self.crm.pool())
            .await?
            .ok_or_else(|| Error::not_found("device", id))?;
        Ok(from_row(&row)?)
    }

    /// The device with this telemetry `device_id`, if registered.
    pub async fn get_by_device_id(&self, device_id: &str) -> Result<Option<Device>> {
        let sql = format!("SELECT {COLUMNS} FROM devices WHERE device_id = $1");
        let row = query(&sql)
            .bind(device_id)
            .fetch_optional(self.crm.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Resolves a reading's `device_id` to the registered device and its site (`None`
    /// for an unassigned device); `None` when the device is unknown.
    pub async fn resolve(&self, device_id: &str) -> Result<Option<(Device, Option<i64>)>> {
        Ok(self.get_by_device_id(device_id).await?.map(|d| {
            let site = d.site_id;
            (d, site)
        }))
    }

    /// Devices by id, filtered, one page.
    pub async fn list(&self, filter: &DeviceFilter, page: Page) -> Result<Vec<Device>> {
        let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM devices"));
        let mut first = true;
        match filter.site {
            Some(SiteAssignment::Site(site)) => {
                stmt.filter(&mut first, "site_id =", Arg::Int(site))
            }
            Some(SiteAssignment::Unassigned) => {
                stmt.sql.push_str(" WHERE site_id IS NULL");
                first = false;
            }
            None => {}
        }
        if let Some(kind) = filter.kind {
            stmt.filter(&mut first, "kind =", Arg::Text(kind.as_str().to_owned()));
        }
        if let Some(status) = filter.status {
            stmt.filter(
                &mut first,
                "status =",
                Arg::Text(status.as_str().to_owned()),
            );
        }
        if let Some(user_id) = filter.user_id {
            stmt.filter(
                &mut first,
                "site_id IN (SELECT s.id FROM sites s JOIN accounts a ON a.id = s.account_id \
                 WHERE a.user_id =",
                Arg::Int(user_id),
            );
            stmt.sql.push(')');
        }
        stmt.sql.push_str(" ORDER BY id");
        stmt.page(page);
        let rows = stmt.query().fetch_all(self.crm.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<sqlx::Result<_>>()?)
    }

    /// Replaces every field but the last-seen time (assigning a site is an update).
    ///
    /// A device that leaves a site (for another site or for none) gets `assigned_ms` set
    /// to now, so the readings it sent until then stay with the site it left: the
    /// portal shows a site's customer only what came after. Coming to a site from none
    /// keeps the time, so a device moved A → none → B still hides A's readings from B.
    pub async fn update(&self, id: i64, new: NewDevice) -> Result<Device> {
        let fields = check(&new)?;
        let mut stmt = Stmt::new("");
        let sets: Vec<String> = FIELDS
            .iter()
            .zip(fields)
            .map(|(c, a)| format!("{c} = {}", stmt.arg(a)))
            .collect();
        let site = stmt.arg(Arg::OptInt(new.site_id));
        let now = stmt.arg(Arg::Int(self.crm.now_ms()));
        let id_p = stmt.arg(Arg::Int(id));
        // In one statement, so a concurrent move cannot slip between reading the old
        // site and writing the new one. `site_id` on the right of SET is the old value
        // (on both backends); `IS DISTINCT FROM` treats NULLs as values (SQLite 3.39+).
        stmt.sql = format!(
            "UPDATE devices SET {}, \
             assigned_ms = CASE WHEN site_id IS NOT NULL AND site_id IS DISTINCT FROM {site} \
             THEN {now} ELSE assigned_ms END, \
             site_id = {site}, updated_ms = {now} WHERE id = {id_p} RETURNING {COLUMNS}",
            sets.join(", ")
        );
        let row = stmt
            .query()
            .fetch_optional(self.crm.pool())
            .await
            .map_err(|e| map_write("device", "site_id", e))?
            .ok_or_else(|| Error::not_found("device", id))?;
        Ok(from_row(&row)?)
    }

    /// Unassigns the devices on the sites `sites` names (SQL for a list of site ids, over
    /// `$2`) as having left them now, inside `tx` and before a delete of those sites
    /// (directly or through their account or user). The foreign key's `ON DELETE SET
    /// NULL` would unassign them too, but past [`Devices::update`]'s bookkeeping: the
    /// next site's customer would then see the deleted site's readings.
    pub(crate) async fn leave_sites(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        sites: &str,
        id: i64,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE devices SET site_id = NULL, assigned_ms = $1, updated_ms = $1 \
             WHERE site_id IN ({sites})"
        );
        query(&sql)
            .bind(self.crm.now_ms())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Removes the device from the registry.
    pub async fn delete(&self, id: i64) -> Result<()> {
        let done = query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(self.crm.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("device", id));
        }
        Ok(())
    }

    /// Records that readings with these `(device_id, time_ms)` arrived: each device's
    /// `last_seen_ms` becomes the newest time given, and never moves backwards. One
    /// transaction with one `UPDATE ... FROM (VALUES ...)` per thousand devices, so a
    /// batch of readings costs one commit whatever its size. Unknown device ids are
    /// ignored. Returns the number of devices whose time moved.
    ///
    /// Times more than five minutes ahead of the store's clock count as now plus five
    /// minutes.
    pub async fn touch_last_seen(&self, seen: &[(String, i64)]) -> Result<u64> {
        // A device whose clock runs ahead (a gateway set to 2100) must not pin its
        // last-seen time in the future, where the monotonic rule would keep it.
        let limit = self.crm.now_ms().saturating_add(MAX_CLOCK_AHEAD_MS);
        let mut newest: HashMap<&str, i64> = HashMap::with_capacity(seen.len());
        for (device_id, t) in seen {
            let t = &(*t).min(limit);
            newest
                .entry(device_id.as_str())
                .and_modify(|cur| *cur = (*cur).max(*t))
                .or_insert(*t);
        }
        if newest.is_empty() {
            return Ok(0);
        }
        // Sorted, so concurrent batches lock rows in the same order (PostgreSQL).
        let mut newest: Vec<(&str, i64)> = newest.into_iter().collect();
        newest.sort_unstable();
        let mut tx = self.crm.pool().begin().await?;
        let mut moved = 0;
        for chunk in newest.chunks(TOUCH_CHUNK) {
            let mut stmt = Stmt::new("");
            let rows: Vec<String> = chunk
                .iter()
                .map(|(d, t)| {
                    let d = stmt.arg(Arg::Text((*d).to_owned()));
                    let t = stmt.arg(Arg::Int(*t));
                    format!("({d}, {t})")
                })
                .collect();
            // VALUES columns are named column1, column2 on both SQLite and PostgreSQL.
            stmt.sql = format!(
                "UPDATE devices SET last_seen_ms = v.column2 FROM (VALUES {}) AS v \
                 WHERE devices.device_id = v.column1 \
                 AND (devices.last_seen_ms IS NULL OR devices.last_seen_ms < v.column2)",
                rows.join(", ")
            );
            moved += stmt.query().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(moved)
    }
}

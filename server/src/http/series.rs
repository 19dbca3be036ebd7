//! The chart API: `GET /api/v1/series` (one column of one table, per time bucket, for
//! a site's devices or one device) and `GET /api/v1/energy` (a site's energy balance
//! per day or month, in Home Assistant's Energy terms).
//!
//! ```text
//!  request ─► scope (404 like missing) ─► check (422 naming fields) ─► Grid (step,
//!             site: visible_site           table, column, agg,          tz; ≤ 100,000
//!             device: its site visible     from/to, step, tz, source    buckets)
//!                                                                        │
//!         ┌── source: the coarsest rollup (<table>_1d, _1h, _15m) whose ◄┘
//!         │   buckets tile the grid's in its tz, else the raw table
//!         ▼
//!  SQL from checked parts (plan::statement) ─► engine ─► {t, v, step, source, tz}
//! ```
//!
//! Scoping is the site readings endpoint's (`rest::readings`): the site's devices as
//! the registry knows them, a moved device only from its arrival, whatever the window:
//! every read (whole buckets, raw energy an hour before them) is cut there, and the
//! buckets whose rollup rows may hold the previous owner's readings or energy steps
//! are read from the raw rows (`plan::moved_buckets`). Only a device's total series is
//! read: rows whose other tags (`phase`, `connector`, ...) are NULL.
//!
//! The statements are built here from checked parts: when one fails for anything but
//! time or memory, that is the server's fault (500, the detail in the log).

mod plan;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use crm::{DeviceKind, FieldError, Site};
use devices::tables;
use query::rollup::{self, RollupLevel};
use query::{Bucketing, Width};
use serde::{Deserialize, Serialize};
use storage::COLUMN_ROLE_KEY;
use utoipa::{IntoParams, ToSchema};

use self::plan::{Agg, Grid, MAX_BUCKETS, Read};
use super::AppState;
use super::error::ApiError;
use super::openapi::{ErrorBody, ValidationErrorBody};
use super::rest::readings::{DEFAULT_WINDOW, SiteDevice, parse_time, site_devices};
use super::rest::{Caller, Params, missing, owner, visible_site};

/// Query parameters of `GET /api/v1/series`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SeriesQuery {
    /// The table (`meter`, `inverter`, ...); it must have a `device_id` column.
    table: String,
    /// A numeric column of the table (`power_w`, `energy_import_wh`, ...).
    column: String,
    /// The site whose devices are read (exactly one of `site_id` and `device_id`).
    site_id: Option<i64>,
    /// The device read (its telemetry `device_id`).
    device_id: Option<String>,
    /// Start of the window, RFC 3339 (default: 24 hours before `to`). Widened to the
    /// start of its bucket.
    from: Option<String>,
    /// End of the window, exclusive, RFC 3339 (default: now). Widened to the end of its
    /// bucket.
    to: Option<String>,
    /// Bucket width: `auto` (default: the finest of 1m, 5m, 15m, 1h, 1d, 1mo giving at
    /// most 1500 buckets), or a width such as `15m`, `1h`, `1d`, `1w`, `1mo`,
    /// `90 minutes`. At most 100000 buckets.
    step: Option<String>,
    /// `avg`, `min`, `max`, `sum`, `last` or `energy` (registers ending in `_wh`).
    /// Default: `energy` for a `_wh` column, else `avg`.
    agg: Option<String>,
    /// IANA time zone of the buckets (default: the site's, else UTC).
    tz: Option<String>,
    /// `auto` (default: rollups where they give the same numbers) or `raw`.
    source: Option<String>,
}

/// One column per bucket. `t[i]` is the start of bucket i, `v[i]` its value (null when
/// no reading falls in it).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Series {
    /// Bucket starts, milliseconds since the epoch, ascending.
    t: Vec<i64>,
    /// The value of each bucket, or null.
    v: Vec<Option<f64>>,
    /// The step used (`15m`, `1h`, `1d`, `1mo`, ...).
    step: String,
    /// The table read: the requested one (`meter`) or a rollup of it (`meter_15m`).
    source: String,
    /// The time zone of the buckets.
    tz: String,
}

/// A chart of one column over time.
#[utoipa::path(
    get,
    path = "/api/v1/series",
    tag = "charts",
    security(("bearer" = []), ("token" = [])),
    params(SeriesQuery),
    responses(
        (status = 200, description = "One value per bucket", body = Series),
        (status = 400, description = "An unknown or malformed query parameter (table and column are required)", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such site or device, or not the caller's", body = ErrorBody),
        (status = 408, description = "The query ran longer than query.timeout", body = ErrorBody),
        (status = 422, description = "Invalid site_id/device_id, table, column, agg, from, to, step, tz or source, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<SeriesQuery>,
) -> Result<Json<Series>, ApiError> {
    let target = match (query.site_id, query.device_id.as_deref()) {
        (Some(site_id), None) => Target::site(&state, &caller, site_id).await?,
        (None, Some(device_id)) => Target::device(&state, &caller, device_id).await?,
        (None, None) => {
            return Err(unprocessable("site_id", "give site_id or device_id"));
        }
        (Some(_), Some(_)) => {
            let message = "give either site_id or device_id, not both";
            return Err(ApiError::Unprocessable(vec![
                FieldError::new("site_id", message.to_owned()),
                FieldError::new("device_id", message.to_owned()),
            ]));
        }
    };

    let mut errors = Vec::new();
    let table = check_table(&state, &mut errors, &query.table, &query.column);
    let agg = match query.agg.as_deref() {
        None => Some(Agg::default_for(&query.column)),
        Some(text) => {
            let agg = Agg::parse(text);
            if agg.is_none() {
                errors.push(FieldError::new(
                    "agg",
                    format!(
                        "unknown aggregate {text:?}: use one of {}",
                        Agg::ALL.map(Agg::name).join(", ")
                    ),
                ));
            }
            agg
        }
    };
    if agg == Some(Agg::Energy) && !rollup::is_counter(&query.column) {
        errors.push(FieldError::new(
            "agg",
            format!(
                "energy needs a cumulative register (a column ending in _wh); {:?} is not one",
                query.column
            ),
        ));
    }
    let common = Common {
        from: query.from.as_deref(),
        to: query.to.as_deref(),
        step: query.step.as_deref(),
        tz: query.tz.as_deref(),
        source: query.source.as_deref(),
    };
    let window = common.check(&mut errors, target.time_zone(), Utc::now());
    let (Some(window), Some(table), Some(agg), true) = (window, table, agg, errors.is_empty())
    else {
        return Err(ApiError::Unprocessable(errors));
    };

    let devices = target.devices(&state).await?;
    let read = read(
        &state,
        &table,
        &query.column,
        agg,
        &window.grid,
        window.raw,
        &devices,
    )
    .await?;
    tracing::debug!(table = %query.table, column = %query.column, agg = agg.name(),
        buckets = window.grid.starts.len(), source = %read.source, "series");
    Ok(Json(Series {
        t: millis(&window.grid),
        v: read.values,
        step: plan::step_text(window.grid.bucketing.width()),
        source: read.source,
        tz: window.grid.bucketing.tz().name().to_owned(),
    }))
}

/// Query parameters of `GET /api/v1/energy`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EnergyQuery {
    /// The site.
    site_id: i64,
    /// Start of the window, RFC 3339 (default: 24 hours before `to`). Widened to the
    /// start of its bucket.
    from: Option<String>,
    /// End of the window, exclusive, RFC 3339 (default: now). Widened to the end of its
    /// bucket.
    to: Option<String>,
    /// IANA time zone of the buckets (default: the site's).
    tz: Option<String>,
    /// Bucket width: `1d` (default), `1mo`, or any step `/api/v1/series` takes.
    step: Option<String>,
    /// `auto` (default: rollups where they give the same numbers) or `raw`.
    source: Option<String>,
}

/// A site's energy balance per bucket, in Wh, as Home Assistant's Energy dashboard
/// defines it. A flow is null throughout when the site has no device of its kind
/// (no battery: no battery flows), and 0 in buckets without readings.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct Energy {
    /// Bucket starts, milliseconds since the epoch, ascending.
    t: Vec<i64>,
    /// Energy drawn from the grid (the meters' `energy_import_wh`).
    grid_import_wh: Vec<Option<f64>>,
    /// Energy fed into the grid (the meters' `energy_export_wh`).
    grid_export_wh: Vec<Option<f64>>,
    /// Solar energy produced (the inverters' `energy_wh`).
    production_wh: Vec<Option<f64>>,
    /// Energy charged into batteries (`energy_charged_wh`).
    battery_charge_wh: Vec<Option<f64>>,
    /// Energy discharged from batteries (`energy_discharged_wh`).
    battery_discharge_wh: Vec<Option<f64>>,
    /// import + production + discharge - export - charge; null without a meter.
    home_consumption_wh: Vec<Option<f64>>,
    /// Solar energy used on site: production - export, at least 0; null without a meter.
    self_consumption_wh: Vec<Option<f64>>,
    /// 1 - import / home consumption, clamped to 0..1; null without a meter or when
    /// the home consumed nothing.
    self_sufficiency: Vec<Option<f64>>,
    /// The step used.
    step: String,
    /// The time zone of the buckets.
    tz: String,
    /// The table each flow was read from (a rollup or the raw table), by flow name;
    /// flows the site has no device for are absent.
    sources: BTreeMap<String, String>,
}

/// A flow of the balance: where it is read from and which devices have it.
#[derive(Debug, Clone, Copy)]
struct Flow {
    /// The answer's field.
    name: &'static str,
    /// The table and its register.
    table: &'static str,
    column: &'static str,
    /// The device kinds whose rows count (a sub-meter registered as a smart plug does
    /// not add to the grid import).
    kinds: &'static [DeviceKind],
}

/// The five measured flows, in the order of [`Energy`]'s fields.
const FLOWS: [Flow; 5] = [
    Flow {
        name: "grid_import_wh",
        table: tables::METER.name,
        column: "energy_import_wh",
        kinds: &[DeviceKind::Meter],
    },
    Flow {
        name: "grid_export_wh",
        table: tables::METER.name,
        column: "energy_export_wh",
        kinds: &[DeviceKind::Meter],
    },
    Flow {
        name: "production_wh",
        table: tables::INVERTER.name,
        column: "energy_wh",
        kinds: &[DeviceKind::Inverter, DeviceKind::SolarSystem],
    },
    Flow {
        name: "battery_charge_wh",
        table: tables::BATTERY.name,
        column: "energy_charged_wh",
        kinds: &[DeviceKind::Battery],
    },
    Flow {
        name: "battery_discharge_wh",
        table: tables::BATTERY.name,
        column: "energy_discharged_wh",
        kinds: &[DeviceKind::Battery],
    },
];

/// A site's energy balance per bucket.
#[utoipa::path(
    get,
    path = "/api/v1/energy",
    tag = "charts",
    security(("bearer" = []), ("token" = [])),
    params(EnergyQuery),
    responses(
        (status = 200, description = "The balance, one value per bucket and flow", body = Energy),
        (status = 400, description = "An unknown or malformed query parameter (site_id is required)", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such site, or not the caller's", body = ErrorBody),
        (status = 408, description = "The query ran longer than query.timeout", body = ErrorBody),
        (status = 422, description = "Invalid from, to, step, tz or source, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn energy(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<EnergyQuery>,
) -> Result<Json<Energy>, ApiError> {
    let site = visible_site(state.crm(), &caller, query.site_id).await?;
    let mut errors = Vec::new();
    let common = Common {
        from: query.from.as_deref(),
        to: query.to.as_deref(),
        step: Some(query.step.as_deref().unwrap_or("1d")),
        tz: query.tz.as_deref(),
        source: query.source.as_deref(),
    };
    let window = common.check(&mut errors, Some(site.time_zone.as_str()), Utc::now());
    let (Some(window), true) = (window, errors.is_empty()) else {
        return Err(ApiError::Unprocessable(errors));
    };
    // Every arrival kept: the statements read before `from` (see `Target::devices`).
    let devices = site_devices(&state, site.id, DateTime::<Utc>::MIN_UTC).await?;

    let grid = &window.grid;
    let mut measured: Vec<Option<Vec<f64>>> = Vec::with_capacity(FLOWS.len());
    let mut sources = BTreeMap::new();
    for flow in FLOWS {
        let theirs: Vec<SiteDevice> = devices
            .iter()
            .filter(|d| flow.kinds.contains(&d.kind))
            .cloned()
            .collect();
        if theirs.is_empty() {
            measured.push(None);
            continue;
        }
        let table = checked_table(&state, flow.table, flow.column);
        let read = match table {
            Some(table) => {
                read(
                    &state,
                    &table,
                    flow.column,
                    Agg::Energy,
                    grid,
                    window.raw,
                    &theirs,
                )
                .await?
            }
            // Nothing written yet: no energy, not unknown energy.
            None => Values {
                values: vec![None; grid.starts.len()],
                source: flow.table.to_owned(),
            },
        };
        sources.insert(flow.name.to_owned(), read.source);
        measured.push(Some(
            read.values.into_iter().map(|v| v.unwrap_or(0.0)).collect(),
        ));
    }
    let [import, export, production, charge, discharge] =
        <[Option<Vec<f64>>; 5]>::try_from(measured)
            .map_err(|_| ApiError::internal(std::io::Error::other("one series per energy flow")))?;
    let balance = Balance::new(
        import.as_deref(),
        export.as_deref(),
        production.as_deref(),
        charge.as_deref(),
        discharge.as_deref(),
        grid.starts.len(),
    );
    let optional = |values: Option<Vec<f64>>| match values {
        Some(values) => values.into_iter().map(Some).collect(),
        None => vec![None; grid.starts.len()],
    };
    Ok(Json(Energy {
        t: millis(grid),
        grid_import_wh: optional(import),
        grid_export_wh: optional(export),
        production_wh: optional(production),
        battery_charge_wh: optional(charge),
        battery_discharge_wh: optional(discharge),
        home_consumption_wh: balance.home_consumption,
        self_consumption_wh: balance.self_consumption,
        self_sufficiency: balance.self_sufficiency,
        step: plan::step_text(grid.bucketing.width()),
        tz: grid.bucketing.tz().name().to_owned(),
        sources,
    }))
}

/// The derived flows of [`Energy`], per bucket.
#[derive(Debug, PartialEq)]
struct Balance {
    home_consumption: Vec<Option<f64>>,
    self_consumption: Vec<Option<f64>>,
    self_sufficiency: Vec<Option<f64>>,
}

impl Balance {
    /// From the measured flows (`None`: the site has no device of that kind). Without a
    /// meter nothing is derived: the grid flows are the balance's unknowns. A site
    /// without solar or battery has none of that energy, so those count as 0.
    fn new(
        import: Option<&[f64]>,
        export: Option<&[f64]>,
        production: Option<&[f64]>,
        charge: Option<&[f64]>,
        discharge: Option<&[f64]>,
        buckets: usize,
    ) -> Balance {
        let at =
            |flow: Option<&[f64]>, i: usize| flow.and_then(|f| f.get(i)).copied().unwrap_or(0.0);
        let mut balance = Balance {
            home_consumption: Vec::with_capacity(buckets),
            self_consumption: Vec::with_capacity(buckets),
            self_sufficiency: Vec::with_capacity(buckets),
        };
        for i in 0..buckets {
            let (Some(import), Some(export)) = (import, export) else {
                balance.home_consumption.push(None);
                balance.self_consumption.push(None);
                balance.self_sufficiency.push(None);
                continue;
            };
            let (import, export) = (at(Some(import), i), at(Some(export), i));
            let production = at(production, i);
            let home = import + production + at(discharge, i) - export - at(charge, i);
            balance.home_consumption.push(Some(home));
            balance
                .self_consumption
                .push(Some((production - export).max(0.0)));
            // A battery charged from the grid can make the import exceed the home's
            // consumption; the share of the home supplied on site is then 0, not less.
            balance
                .self_sufficiency
                .push((home > 0.0).then(|| (1.0 - import / home).clamp(0.0, 1.0)));
        }
        balance
    }
}

/// The parameters both endpoints share, as given.
#[derive(Debug)]
struct Common<'a> {
    from: Option<&'a str>,
    to: Option<&'a str>,
    step: Option<&'a str>,
    tz: Option<&'a str>,
    source: Option<&'a str>,
}

/// [`Common`], checked.
#[derive(Debug)]
struct Window {
    /// The buckets.
    grid: Grid,
    /// `source=raw`.
    raw: bool,
}

impl Common<'_> {
    /// Checks the window, step, time zone and source; every bad one is added to
    /// `errors`. `default_tz` is the site's zone, if any.
    fn check(
        &self,
        errors: &mut Vec<FieldError>,
        default_tz: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Window> {
        let to = parse_time(errors, "to", self.to);
        let from = parse_time(errors, "from", self.from);
        let to = to.unwrap_or(now);
        let window = chrono::Duration::from_std(DEFAULT_WINDOW).unwrap_or(chrono::Duration::zero());
        let from = from.unwrap_or(to - window);
        if from >= to && !errors.iter().any(|e| e.field == "from" || e.field == "to") {
            // Without `to` the window ends now: the `from` given is the one to change.
            if self.to.is_none() {
                errors.push(FieldError::new(
                    "from",
                    "must be in the past (to defaults to now)".to_owned(),
                ));
            } else {
                errors.push(FieldError::new("to", "must be after from".to_owned()));
            }
        }
        let tz = match self.tz {
            Some(name) => match name.trim().parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    errors.push(FieldError::new(
                        "tz",
                        format!("unknown time zone {name:?}: use an IANA name such as Europe/Berlin or UTC"),
                    ));
                    None
                }
            },
            // The crm checks a site's zone when it is stored; one it no longer knows
            // (an older tz database) falls back to UTC rather than failing the chart.
            None => Some(
                default_tz
                    .and_then(|name| name.parse().ok())
                    .unwrap_or(Tz::UTC),
            ),
        };
        let width = match self.step.map(str::trim) {
            None | Some("auto") => None,
            Some(text) => match Width::parse(text) {
                Ok(width) => Some(width),
                Err(e) => {
                    errors.push(FieldError::new("step", format!("{e}, or auto")));
                    None
                }
            },
        };
        let raw = match self.source.map(str::trim) {
            None | Some("auto") => false,
            Some("raw") => true,
            Some(other) => {
                errors.push(FieldError::new(
                    "source",
                    format!("unknown source {other:?}: use auto or raw"),
                ));
                false
            }
        };
        let tz = tz?;
        if !errors.is_empty() {
            return None;
        }
        let (from_ns, to_ns) = match (from.timestamp_nanos_opt(), to.timestamp_nanos_opt()) {
            (Some(from), Some(to)) => (from, to),
            (from_ns, to_ns) => {
                // A `from` not given is a day before `to`: then `to` is the one to change.
                let from_bad = from_ns.is_none() && self.from.is_some();
                let to_bad = to_ns.is_none() || !from_bad;
                for (field, bad) in [("from", from_bad), ("to", to_bad)] {
                    if bad {
                        errors.push(FieldError::new(
                            field,
                            "must be between the years 1678 and 2262".to_owned(),
                        ));
                    }
                }
                return None;
            }
        };
        let grid = match width {
            Some(width) => {
                let bucketing = match Bucketing::new(width, tz, None) {
                    Ok(bucketing) => bucketing,
                    Err(e) => {
                        errors.push(FieldError::new("step", e.to_string()));
                        return None;
                    }
                };
                match Grid::new(bucketing, from_ns, to_ns, MAX_BUCKETS) {
                    Ok(grid) => grid,
                    Err(limit) => {
                        errors.push(FieldError::new(
                            "step",
                            format!(
                                "{} gives more than {limit} buckets from {} to {}: choose a \
                                 coarser step or a shorter window",
                                plan::step_text(width),
                                from.to_rfc3339(),
                                to.to_rfc3339()
                            ),
                        ));
                        return None;
                    }
                }
            }
            None => Grid::auto(tz, from_ns, to_ns),
        };
        Some(Window { grid, raw })
    }
}

/// A 422 naming one field.
fn unprocessable(field: &str, message: &str) -> ApiError {
    ApiError::Unprocessable(vec![FieldError::new(field, message.to_owned())])
}

/// What a series request is about, once it is known to be in the caller's scope.
#[derive(Debug)]
enum Target {
    /// A site the caller may see.
    Site(Site),
    /// One device. `site` is its site (if any); `scoped` when the caller is a
    /// customer, who sees the device's rows only from its arrival on their site.
    Device {
        device_id: String,
        site: Option<Site>,
        scoped: bool,
    },
}

impl Target {
    async fn site(state: &AppState, caller: &Caller, site_id: i64) -> Result<Target, ApiError> {
        Ok(Target::Site(
            visible_site(state.crm(), caller, site_id).await?,
        ))
    }

    /// A customer's device must be registered on one of their sites; anything else is
    /// answered like a device that does not exist. Staff may ask for any device id,
    /// registered or not.
    async fn device(
        state: &AppState,
        caller: &Caller,
        device_id: &str,
    ) -> Result<Target, ApiError> {
        let found = state.crm().devices().get_by_device_id(device_id).await?;
        let site_id = found.as_ref().and_then(|d| d.site_id);
        let scoped = owner(caller).is_some();
        let site = match site_id {
            Some(site_id) => match visible_site(state.crm(), caller, site_id).await {
                Ok(site) => Some(site),
                Err(ApiError::Missing(_)) if scoped => return Err(missing("device", device_id)),
                // A site deleted under the device: staff still see the device, in UTC.
                Err(ApiError::Missing(_)) => None,
                Err(e) => return Err(e),
            },
            None if scoped => return Err(missing("device", device_id)),
            None => None,
        };
        Ok(Target::Device {
            device_id: device_id.to_owned(),
            site,
            scoped,
        })
    }

    /// The zone buckets follow when the request names none.
    fn time_zone(&self) -> Option<&str> {
        match self {
            Target::Site(site)
            | Target::Device {
                site: Some(site), ..
            } => Some(&site.time_zone),
            Target::Device { site: None, .. } => None,
        }
    }

    /// The devices read, each from when its rows count. Every arrival is kept, also one
    /// before the request's `from`: the statements read from the start of the first
    /// bucket, raw energy an hour before it, and a rollup row is only a moved device's
    /// own from some time after its arrival (`plan::moved_buckets`).
    async fn devices(&self, state: &AppState) -> Result<Vec<SiteDevice>, ApiError> {
        let from = DateTime::<Utc>::MIN_UTC;
        match self {
            Target::Site(site) => site_devices(state, site.id, from).await,
            Target::Device {
                device_id,
                site: Some(site),
                scoped: true,
            } => {
                let mut devices = site_devices(state, site.id, from).await?;
                devices.retain(|d| d.device_id == *device_id);
                if devices.is_empty() {
                    // Moved away between the two look-ups.
                    return Err(missing("device", device_id));
                }
                Ok(devices)
            }
            // Staff see a device's whole history (the SQL endpoint shows them as much).
            Target::Device { device_id, .. } => Ok(vec![SiteDevice {
                device_id: device_id.clone(),
                // Not read by a series (only the energy balance picks devices by kind),
                // and an unregistered device has none.
                kind: DeviceKind::Meter,
                since: None,
            }]),
        }
    }
}

/// A table the chart API may read `column` of: the table exists, is not itself a
/// rollup, has a `device_id` tag, and `column` is one of its numeric fields.
#[derive(Debug)]
struct Table {
    /// The requested table.
    name: String,
}

/// [`Table`] for a request; a bad table or column is added to `errors`.
fn check_table(
    state: &AppState,
    errors: &mut Vec<FieldError>,
    table: &str,
    column: &str,
) -> Option<Table> {
    let Some(schema) = state.store().table_schema(table) else {
        errors.push(FieldError::new(
            "table",
            format!("there is no table {table:?}"),
        ));
        return None;
    };
    if rollup::is_rollup_table(table) {
        errors.push(FieldError::new(
            "table",
            format!("{table:?} is a rollup; ask for its table, rollups are read where they fit"),
        ));
        return None;
    }
    if role(schema.field_with_name(tables::DEVICE_ID).ok()) != Some("tag") {
        errors.push(FieldError::new(
            "table",
            format!("table {table:?} has no {} tag", tables::DEVICE_ID),
        ));
        return None;
    }
    let field = schema.field_with_name(column).ok();
    let numeric = field.is_some_and(|f| {
        role(Some(f)) == Some("field")
            && matches!(
                f.data_type(),
                DataType::Float64 | DataType::Int64 | DataType::UInt64
            )
    });
    if !numeric {
        let why = if field.is_some() {
            "is not a numeric field of"
        } else {
            "is not a column of"
        };
        errors.push(FieldError::new(
            "column",
            format!("{column:?} {why} table {table:?}"),
        ));
        return None;
    }
    Some(Table {
        name: table.to_owned(),
    })
}

/// [`check_table`] without a request: for the energy flows, whose table or column may
/// simply not have been written yet.
fn checked_table(state: &AppState, table: &str, column: &str) -> Option<Table> {
    check_table(state, &mut Vec::new(), table, column)
}

/// What a store column is (`time`, `tag`, `field`), from its schema metadata.
fn role(field: Option<&arrow::datatypes::Field>) -> Option<&str> {
    field?.metadata().get(COLUMN_ROLE_KEY).map(String::as_str)
}

/// The values of one read, one per bucket of the grid, and the table they came from.
#[derive(Debug)]
struct Values {
    values: Vec<Option<f64>>,
    source: String,
}

/// Reads `column` of `table` for `devices` over the grid: from the coarsest rollup that
/// tiles the grid and has the columns `agg` needs (unless `raw`), else from the table.
///
/// Rollups trail the writes by up to `query.rollup_refresh_interval`: the buckets from
/// the first one with stale rollup marks on are read from the table itself, so a chart
/// of today is as fresh as the raw data. A device that moved to the site is read from
/// the table where its rollup rows may hold its previous owner's readings
/// ([`plan::moved_buckets`]). `source` names the rollup when it answered any bucket.
async fn read(
    state: &AppState,
    table: &Table,
    column: &str,
    agg: Agg,
    grid: &Grid,
    raw: bool,
    devices: &[SiteDevice],
) -> Result<Values, ApiError> {
    let rollup = if raw {
        None
    } else {
        rollup_for(state, table, column, agg, grid)
    };
    let Some(name) = rollup else {
        let values = run(state, &table.name, false, column, agg, grid, devices).await?;
        return Ok(Values {
            values,
            source: table.name.clone(),
        });
    };
    let fresh = fresh_buckets(state, &table.name, grid);
    let (rolled, recent) = grid.split_at(fresh);
    let mut values = vec![None; grid.starts.len()];
    let mut rollup_read = false;
    if let Some(rolled) = &rolled {
        // Devices with the same buckets to read raw share their statements; usually
        // that is every device, with none.
        let mut groups: BTreeMap<(usize, usize), Vec<SiteDevice>> = BTreeMap::new();
        for d in devices {
            let since = d.since.map(|t| t.timestamp_nanos_opt().unwrap_or(i64::MAX));
            let moved = plan::moved_buckets(rolled, agg, since);
            groups
                .entry((moved.start, moved.end))
                .or_default()
                .push(d.clone());
        }
        for ((start, end), theirs) in groups {
            if let Some(part) = rolled.part(start..end) {
                let read = run(state, &table.name, false, column, agg, &part, &theirs).await?;
                merge(agg, &mut values[start..], read);
            }
            if let Some(part) = rolled.part(end..rolled.starts.len()) {
                let read = run(state, &name, true, column, agg, &part, &theirs).await?;
                merge(agg, &mut values[end..], read);
                rollup_read = true;
            }
        }
    }
    if let Some(recent) = &recent {
        let read = run(state, &table.name, false, column, agg, recent, devices).await?;
        merge(agg, &mut values[fresh..], read);
    }
    Ok(Values {
        values,
        source: if rollup_read {
            name
        } else {
            table.name.clone()
        },
    })
}

/// Adds the values of one statement (over some of the devices) to `values`, bucket by
/// bucket from the first, as the statement combines devices: summed, or the min / max.
fn merge(agg: Agg, values: &mut [Option<f64>], read: Vec<Option<f64>>) {
    for (value, new) in values.iter_mut().zip(read) {
        let Some(new) = new else { continue };
        *value = Some(match (*value, agg) {
            (None, _) => new,
            (Some(old), Agg::Min) => old.min(new),
            (Some(old), Agg::Max) => old.max(new),
            (Some(old), Agg::Avg | Agg::Sum | Agg::Last | Agg::Energy) => old + new,
        });
    }
}

/// How many of the grid's buckets, from the first, have up-to-date rollups: those
/// before the first bucket a stale mark of `table` falls in. The marks include what a
/// refresh running now has taken, and a write is marked before it is acknowledged.
fn fresh_buckets(state: &AppState, table: &str, grid: &Grid) -> usize {
    let first_stale = state
        .engine()
        .rollups()
        .first_stale(table, grid.from(), grid.end);
    match first_stale {
        // The bucket holding it, and every later one, come from the raw table.
        Some(t) => grid.starts.partition_point(|&s| s <= t).saturating_sub(1),
        None => grid.starts.len(),
    }
}

/// Runs the statement for `devices` over `grid` on `table` (a rollup when `rollup`);
/// one value per bucket.
async fn run(
    state: &AppState,
    table: &str,
    rollup: bool,
    column: &str,
    agg: Agg,
    grid: &Grid,
    devices: &[SiteDevice],
) -> Result<Vec<Option<f64>>, ApiError> {
    let mut values = vec![None; grid.starts.len()];
    if devices.is_empty() {
        return Ok(values);
    }
    // No such table yet: nothing was written (or rolled up) for it.
    let Some(schema) = state.store().table_schema(table) else {
        return Ok(values);
    };
    let tags: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| role(Some(f)) == Some("tag"))
        .map(|f| f.name().clone())
        .collect();
    let float = !rollup
        && schema
            .field_with_name(column)
            .is_ok_and(|f| f.data_type() == &DataType::Float64);
    let sql = plan::statement(&Read {
        table,
        rollup,
        column,
        agg,
        grid,
        tags: &tags,
        float,
        devices,
    });
    let output = state
        .engine()
        .sql(&sql)
        .await
        .map_err(|e| engine_error(e, &sql))?;
    for batch in &output.batches {
        let (Some(buckets), Some(numbers)) = (
            batch
                .column(0)
                .as_primitive_opt::<TimestampNanosecondType>(),
            batch.column(1).as_primitive_opt::<Float64Type>(),
        ) else {
            return Err(ApiError::internal(std::io::Error::other(format!(
                "the series statement answered columns of types {:?}, not (timestamp, double)",
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect::<Vec<_>>()
            ))));
        };
        for row in 0..batch.num_rows() {
            if buckets.is_null(row) || numbers.is_null(row) {
                continue;
            }
            // `time_bucket` and the grid bucket alike; a start outside the grid would
            // be a disagreement between the two, and is left out rather than misplaced.
            match grid.starts.binary_search(&buckets.value(row)) {
                Ok(i) => values[i] = Some(numbers.value(row)),
                Err(_) => tracing::warn!(
                    table,
                    column,
                    bucket = buckets.value(row),
                    step = %plan::step_text(grid.bucketing.width()),
                    tz = %grid.bucketing.tz().name(),
                    "time_bucket answered a bucket that is not on the chart's grid; left out"
                ),
            }
        }
    }
    Ok(values)
}

/// The error of a statement this module built: the request was checked before, so
/// anything but running out of time or memory is our fault (5xx, the detail and the
/// statement in the log), never a 400 quoting DataFusion.
fn engine_error(error: query::Error, sql: &str) -> ApiError {
    match error {
        query::Error::Timeout(_) | query::Error::ResourcesExhausted(_) => ApiError::from(error),
        other => ApiError::internal(std::io::Error::other(format!(
            "chart statement failed: {other}; statement: {sql}"
        ))),
    }
}

/// The rollup table to read for this grid, if one fits: the coarsest whose buckets
/// (as the rollups define them, `Rollups::bucketing`) tile the grid's and that has the
/// columns `agg` reads.
fn rollup_for(
    state: &AppState,
    table: &Table,
    column: &str,
    agg: Agg,
    grid: &Grid,
) -> Option<String> {
    let needed = plan::rollup_columns(column, agg);
    let rollups = state.engine().rollups();
    // Coarsest first: the fewest rows to read.
    RollupLevel::ALL.iter().rev().find_map(|&level| {
        if !grid.tiled_by(&rollups.bucketing(level)) {
            return None;
        }
        let name = rollup::table_name(&table.name, level);
        let schema = state.store().table_schema(&name)?;
        needed
            .iter()
            .all(|c| schema.field_with_name(c).is_ok())
            .then_some(name)
    })
}

/// The grid's bucket starts in milliseconds.
fn millis(grid: &Grid) -> Vec<i64> {
    grid.starts
        .iter()
        .map(|ns| ns.div_euclid(1_000_000))
        .collect()
}

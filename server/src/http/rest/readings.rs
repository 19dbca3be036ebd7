//! `GET /api/v1/sites/{id}/readings`: the portal's reading endpoint. Rows of one
//! table for the devices registered on one site, over a time window.
//!
//! The caller names neither SQL nor devices outside the site: the site must be in the
//! caller's scope (else 404, as for a missing site), the devices are the site's as the
//! registry knows them, and the statement is built here from checked parts (a table
//! that exists and has a `device_id` column, quoted as an identifier; device ids and
//! times as escaped literals) and run through the engine's read-only path with its
//! timeout.
//!
//! A device that came from another site (the registry's `assigned_ms`) contributes only
//! the rows from its arrival on: the readings before belong to the previous site's
//! customer, who must not show up in the new one's portal.

use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, SecondsFormat, Utc};
use crm::{Device, DeviceFilter, DeviceKind, FieldError, Page, SiteAssignment};
use query::OutputFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::TIME_COLUMN;
use utoipa::{IntoParams, ToSchema};

use super::{Caller, Id, Params, missing, visible_site};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::{ErrorBody, ValidationErrorBody};

/// The tag that names a reading's device; the registry maps it to a site.
pub(crate) const DEVICE_COLUMN: &str = "device_id";

/// The window when the request gives no `from` (also the chart API's, `http::series`).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Rows returned when the request gives no `limit`.
const DEFAULT_LIMIT: u32 = 1000;

/// The most rows one request returns.
const MAX_LIMIT: u32 = 10_000;

/// Query parameters of `GET /api/v1/sites/{id}/readings`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadingsQuery {
    /// The table to read (`meter`, `inverter`, ...); it must have a `device_id` column.
    table: String,
    /// Start of the window, inclusive, RFC 3339 (default: 24 hours before `to`).
    from: Option<String>,
    /// End of the window, exclusive, RFC 3339 (default: now).
    to: Option<String>,
    /// Only this device (its telemetry `device_id`); it must be on the site.
    device_id: Option<String>,
    /// Most rows to return, 1 to 10000 (default 1000; larger values count as 10000).
    limit: Option<u32>,
}

/// Readings of one site's devices, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readings {
    /// The site.
    site_id: i64,
    /// The table read.
    table: String,
    /// Start of the window (inclusive), RFC 3339.
    from: String,
    /// End of the window (exclusive), RFC 3339.
    to: String,
    /// The devices the rows were read for (telemetry `device_id`s).
    device_ids: Vec<String>,
    /// The row limit used.
    limit: u32,
    /// True when `limit` rows came back: there may be more; ask again with `from` set
    /// to the last row's time (rows at that exact time come again).
    truncated: bool,
    /// The rows, one object per row keyed by column name; `time` is RFC 3339.
    #[schema(value_type = Vec<Object>)]
    rows: Vec<Value>,
}

/// Readings of the site's devices from one table over a time window.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{id}/readings",
    tag = "sites",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Site id"), ReadingsQuery),
    responses(
        (status = 200, description = "The rows, oldest first", body = Readings),
        (status = 400, description = "An unknown or malformed query parameter (table is required)", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such site, not the caller's, or device_id is not on it", body = ErrorBody),
        (status = 408, description = "The query ran longer than query.timeout", body = ErrorBody),
        (status = 422, description = "Invalid table, from or to, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn site_readings(
    State(state): State<AppState>,
    caller: Caller,
    Id(site_id): Id,
    Params(query): Params<ReadingsQuery>,
) -> Result<Json<Readings>, ApiError> {
    // Scope first: a site the caller may not see is 404 whatever else is wrong.
    visible_site(state.crm(), &caller, site_id).await?;
    let checked = check(&state, &query, Utc::now())?;

    let mut devices = site_devices(&state, site_id, checked.from).await?;
    if let Some(wanted) = &query.device_id {
        devices.retain(|d| d.device_id == *wanted);
        if devices.is_empty() {
            return Err(missing("device", format!("{wanted:?} on site {site_id}")));
        }
    }
    let mut readings = Readings {
        site_id,
        table: query.table.clone(),
        from: rfc3339(checked.from),
        to: rfc3339(checked.to),
        device_ids: devices.iter().map(|d| d.device_id.clone()).collect(),
        limit: checked.limit,
        truncated: false,
        rows: Vec::new(),
    };
    if devices.is_empty() {
        return Ok(Json(readings));
    }
    let sql = statement(&readings, &devices);
    tracing::debug!(site_id, table = %readings.table, devices = readings.device_ids.len(), "site readings");
    let output = state.engine().sql(&sql).await?;
    let encoded =
        tokio::task::spawn_blocking(move || query::encode(&output, OutputFormat::Json)).await??;
    readings.rows = serde_json::from_slice(&encoded).map_err(ApiError::internal)?;
    readings.truncated =
        readings.rows.len() >= usize::try_from(checked.limit).unwrap_or(usize::MAX);
    Ok(Json(readings))
}

/// The request's window and limit, checked.
#[derive(Debug)]
struct Checked {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u32,
}

/// Checks the table and the window, and clamps the limit; every bad field is named.
fn check(state: &AppState, query: &ReadingsQuery, now: DateTime<Utc>) -> Result<Checked, ApiError> {
    let mut errors = Vec::new();
    match state.store().table_schema(&query.table) {
        None => errors.push(FieldError::new(
            "table",
            format!("there is no table {:?}", query.table),
        )),
        Some(schema) if schema.field_with_name(DEVICE_COLUMN).is_err() => {
            errors.push(FieldError::new(
                "table",
                format!("table {:?} has no {DEVICE_COLUMN} column", query.table),
            ))
        }
        Some(_) => {}
    }
    let to = parse_time(&mut errors, "to", query.to.as_deref());
    let from = parse_time(&mut errors, "from", query.from.as_deref());
    let to = to.unwrap_or(now);
    let window = chrono::Duration::from_std(DEFAULT_WINDOW).unwrap_or(chrono::Duration::zero());
    let from = from.unwrap_or(to - window);
    if from >= to && errors.is_empty() {
        errors.push(FieldError::new("to", "must be after from".to_owned()));
    }
    // Clamped like the lists' limit; the answer says which limit was used.
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    if errors.is_empty() {
        Ok(Checked { from, to, limit })
    } else {
        Err(ApiError::Unprocessable(errors))
    }
}

/// An optional RFC 3339 time; a bad one is added to `errors`.
pub(crate) fn parse_time(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(value?.trim()) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            errors.push(FieldError::new(
                field,
                format!("must be an RFC 3339 time such as 2026-01-01T00:00:00Z ({e})"),
            ));
            None
        }
    }
}

/// A device of the site, and from when its readings are the site's.
#[derive(Debug, Clone)]
pub(crate) struct SiteDevice {
    /// The telemetry `device_id`.
    pub(crate) device_id: String,
    /// What the registry says the device is (the energy balance picks meters,
    /// inverters and batteries by it).
    pub(crate) kind: DeviceKind,
    /// Rows before this time belong to a site the device left; `None` when every row
    /// in the window is this site's.
    pub(crate) since: Option<DateTime<Utc>>,
}

/// Every device registered on the site, each with the time its rows start to count.
///
/// `from` is the earliest time the caller's statements read: a `since` at or before
/// it hides nothing and is dropped (a shorter condition). A caller that reads before
/// its request's window (the chart API widens it to whole buckets and looks back for
/// energy steps; the last-value cache has no window) passes [`DateTime::MIN_UTC`],
/// which keeps every `since`.
pub(crate) async fn site_devices(
    state: &AppState,
    site_id: i64,
    from: DateTime<Utc>,
) -> Result<Vec<SiteDevice>, ApiError> {
    let filter = DeviceFilter {
        site: Some(SiteAssignment::Site(site_id)),
        ..DeviceFilter::default()
    };
    let mut found = Vec::new();
    for d in all_devices(state, &filter).await? {
        // The store's own clock wrote it; out of range means a damaged row.
        let since = d
            .assigned_ms
            .map(|ms| {
                DateTime::from_timestamp_millis(ms).ok_or_else(|| {
                    ApiError::internal(std::io::Error::other(format!(
                        "device {:?} has assigned_ms {ms}, out of range",
                        d.device_id
                    )))
                })
            })
            .transpose()?;
        found.push(SiteDevice {
            device_id: d.device_id,
            kind: d.kind,
            since: since.filter(|t| *t > from),
        });
    }
    Ok(found)
}

/// Every device of the registry that `filter` matches, however many pages that takes.
/// Shared with the last-value endpoint (`http::latest`).
pub(crate) async fn all_devices(
    state: &AppState,
    filter: &DeviceFilter,
) -> Result<Vec<Device>, ApiError> {
    let mut found = Vec::new();
    let mut page = Page::first(Page::MAX_LIMIT);
    loop {
        let devices = state.crm().devices().list(filter, page).await?;
        let full = devices.len() >= usize::try_from(Page::MAX_LIMIT).unwrap_or(usize::MAX);
        found.extend(devices);
        if !full {
            return Ok(found);
        }
        page.offset += u64::from(Page::MAX_LIMIT);
    }
}

/// The statement for `readings` of `devices` (not empty): every part is either checked
/// (the table exists) and quoted, or a literal we escape, so no request text reaches
/// SQL unquoted.
fn statement(readings: &Readings, devices: &[SiteDevice]) -> String {
    let device = identifier(DEVICE_COLUMN);
    let time = identifier(TIME_COLUMN);
    let devices = device_filter(devices);
    let mut sql = String::new();
    let _ = write!(
        sql,
        "SELECT * FROM {table} WHERE {devices} \
         AND {time} >= {from} AND {time} < {to} ORDER BY {time}, {device} LIMIT {limit}",
        table = identifier(&readings.table),
        from = literal(&readings.from),
        to = literal(&readings.to),
        limit = readings.limit,
    );
    sql
}

/// The condition that keeps `devices`' rows (not empty), each from its `since`: the
/// devices with all their rows in one `IN` list, each device that came from another
/// site with its own `(device = .. AND time >= since)`. Shared with the chart API.
pub(crate) fn device_filter(devices: &[SiteDevice]) -> String {
    let device = identifier(DEVICE_COLUMN);
    let time = identifier(TIME_COLUMN);
    let mut whole = Vec::new();
    let mut alternatives = Vec::new();
    for d in devices {
        match d.since {
            None => whole.push(literal(&d.device_id)),
            Some(since) => alternatives.push(format!(
                "({device} = {} AND {time} >= {})",
                literal(&d.device_id),
                literal(&rfc3339(since))
            )),
        }
    }
    if !whole.is_empty() {
        alternatives.insert(0, format!("{device} IN ({})", whole.join(", ")));
    }
    match alternatives.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", alternatives.join(" OR ")),
    }
}

/// A SQL identifier, double-quoted (case kept; `"` doubled).
pub(crate) fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (`'` doubled).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// RFC 3339 in UTC with as many fraction digits as needed (`Z`).
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings() -> Readings {
        Readings {
            site_id: 1,
            table: "met\"er".to_owned(),
            from: "2026-01-01T00:00:00Z".to_owned(),
            to: "2026-01-02T00:00:00Z".to_owned(),
            device_ids: Vec::new(),
            limit: 5,
            truncated: false,
            rows: Vec::new(),
        }
    }

    fn device(device_id: &str, since_ms: Option<i64>) -> SiteDevice {
        SiteDevice {
            device_id: device_id.to_owned(),
            kind: DeviceKind::Meter,
            since: since_ms.map(|ms| DateTime::from_timestamp_millis(ms).unwrap()),
        }
    }

    #[test]
    fn statement_quotes_and_escapes_every_part() {
        let devices = [device("a", None), device("b' OR '1'='1", None)];
        assert_eq!(
            statement(&readings(), &devices),
            "SELECT * FROM \"met\"\"er\" WHERE \"device_id\" IN ('a', 'b'' OR ''1''=''1') \
             AND \"time\" >= '2026-01-01T00:00:00Z' AND \"time\" < '2026-01-02T00:00:00Z' \
             ORDER BY \"time\", \"device_id\" LIMIT 5"
        );
    }

    /// A device that came from another site reads only from its arrival (12:00:00.250
    /// on 2026-01-01), beside the site's other devices' whole window.
    #[test]
    fn statement_starts_a_moved_device_at_its_arrival() {
        let arrived = Some(1_767_268_800_250);
        let devices = [
            device("a", None),
            device("m' OR '1'='1", arrived),
            device("c", None),
        ];
        assert_eq!(
            statement(&readings(), &devices),
            "SELECT * FROM \"met\"\"er\" WHERE (\"device_id\" IN ('a', 'c') \
             OR (\"device_id\" = 'm'' OR ''1''=''1' AND \"time\" >= '2026-01-01T12:00:00.250Z')) \
             AND \"time\" >= '2026-01-01T00:00:00Z' AND \"time\" < '2026-01-02T00:00:00Z' \
             ORDER BY \"time\", \"device_id\" LIMIT 5"
        );
        assert_eq!(
            statement(&readings(), &[device("m", arrived)]),
            "SELECT * FROM \"met\"\"er\" WHERE (\"device_id\" = 'm' \
             AND \"time\" >= '2026-01-01T12:00:00.250Z') \
             AND \"time\" >= '2026-01-01T00:00:00Z' AND \"time\" < '2026-01-02T00:00:00Z' \
             ORDER BY \"time\", \"device_id\" LIMIT 5"
        );
    }
}

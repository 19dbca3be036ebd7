//! `GET /api/v1/latest`: the newest values of every device the caller may see, from the
//! query engine's last-value cache (`query::LastValues`), without SQL.
//!
//! ```text
//!  table?, site_id?, device_id? ──► scope: which device ids, each from when ──►
//!     (customers: devices on their own sites; staff: every series, or a site's devices)
//!  LastValues::snapshot(table, filter on device_id) per table ──► sorted by tags ──►
//!  JSON written straight from the Arrow columns
//! ```
//!
//! Scoping follows the portal's reading endpoint (`rest::readings`): a customer sees the
//! devices registered on sites of their own accounts, a site or device of someone else
//! answers 404 exactly like one that does not exist, and a device that moved shows a
//! site only what it sent from its arrival on (`assigned_ms`): a column whose newest
//! value is older is left out, and a device with nothing newer is not listed. Staff and
//! read tokens see every series of every table, also series without a `device_id`;
//! `site_id` narrows them to that site's devices, scoped the same way.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, SchemaRef, UInt64Type};
use arrow::error::ArrowError;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Timelike, Utc};
use crm::{DeviceFilter, FieldError};
use query::{LatestFilter, is_cached_table};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use storage::{COLUMN_ROLE_KEY, TIME_COLUMN};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::openapi::{ErrorBody, ValidationErrorBody};
use super::rest::readings::{DEVICE_COLUMN, all_devices, site_devices};
use super::rest::{Caller, Params, missing, owner, visible_site};

/// Query parameters of `GET /api/v1/latest`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestQuery {
    /// Only this table (`meter`, `inverter`, ...); default: every table.
    table: Option<String>,
    /// Only the devices registered on this site (from their arrival there).
    site_id: Option<i64>,
    /// Only this device (its telemetry `device_id`); with `site_id`, it must be on
    /// that site.
    device_id: Option<String>,
}

/// The newest values, one row per series.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Latest {
    /// By table, then by tag values.
    rows: Vec<LatestRow>,
    /// False while the cache is still being filled from the store after a start:
    /// series that have not written since may be missing. Ask again shortly.
    complete: bool,
}

/// The newest values of one series.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatestRow {
    /// The table.
    table: String,
    /// The series' newest row, RFC 3339 (with as many fraction digits as it has).
    time: String,
    /// The series' tags (`device_id`, `site_id`, `phase`, ...); tags it lacks are
    /// left out.
    #[schema(value_type = Object)]
    tags: serde_json::Map<String, serde_json::Value>,
    /// Per field, its newest value that is not null; fields without one are left out.
    /// A value may be older than `time` when the newest row lacked the field.
    #[schema(value_type = Object)]
    values: serde_json::Map<String, serde_json::Value>,
}

/// The newest values of the series the caller may see.
#[utoipa::path(
    get,
    path = "/api/v1/latest",
    tag = "latest",
    security(("bearer" = []), ("token" = [])),
    params(LatestQuery),
    responses(
        (status = 200, description = "One row per series", body = Latest),
        (status = 400, description = "An unknown or malformed query parameter", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such site or device, or not the caller's", body = ErrorBody),
        (status = 422, description = "No such table, or one without last values (rollups, _rejected)", body = ValidationErrorBody),
    )
)]
pub(crate) async fn latest(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<LatestQuery>,
) -> Result<Response, ApiError> {
    // Scope first: a site or device the caller may not see is 404 whatever else is
    // wrong.
    let filter = scope(&state, &caller, &query).await?;
    let tables = tables(&state, query.table.as_deref())?;
    let cache = state.engine().latest();
    let complete = cache.is_warm();
    let mut snapshots = Vec::with_capacity(tables.len());
    for (table, schema) in tables {
        let Some(batch) = cache
            .snapshot(&table, &schema, &filter)
            .map_err(ApiError::internal)?
        else {
            continue;
        };
        if batch.num_rows() > 0 {
            snapshots.push((table, sorted(batch).map_err(ApiError::internal)?));
        }
    }
    // About 200 bytes a row: sized once rather than grown through a dozen copies.
    let rows: usize = snapshots.iter().map(|(_, b)| b.num_rows()).sum();
    let mut body = Vec::with_capacity(64 + rows * 256);
    serde_json::to_writer(
        &mut body,
        &Body {
            snapshots: &snapshots,
            complete,
        },
    )
    .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The series the caller asks for and may see, as a filter on `device_id`.
async fn scope(
    state: &AppState,
    caller: &Caller,
    query: &LatestQuery,
) -> Result<LatestFilter, ApiError> {
    let crm = state.crm();
    let devices: Vec<(String, i64)> = match (query.site_id, &query.device_id) {
        (Some(site_id), wanted) => {
            visible_site(crm, caller, site_id).await?;
            let mut devices: Vec<(String, i64)> =
                site_devices(state, site_id, DateTime::<Utc>::MIN_UTC)
                    .await?
                    .into_iter()
                    .map(|d| (d.device_id, d.since.map_or(i64::MIN, ns)))
                    .collect();
            if let Some(wanted) = wanted {
                devices.retain(|(device_id, _)| device_id == wanted);
                if devices.is_empty() {
                    return Err(missing("device", format!("{wanted:?} on site {site_id}")));
                }
            }
            devices
        }
        (None, Some(wanted)) => match owner(caller) {
            // Staff read a device's whole history, wherever it is registered (or not).
            None => vec![(wanted.clone(), i64::MIN)],
            Some(_) => {
                let not_found = || missing("device", format!("{wanted:?}"));
                let device = crm
                    .devices()
                    .get_by_device_id(wanted)
                    .await?
                    .ok_or_else(not_found)?;
                let site_id = device.site_id.ok_or_else(not_found)?;
                match visible_site(crm, caller, site_id).await {
                    Ok(_) => {}
                    Err(ApiError::Missing(_)) => return Err(not_found()),
                    Err(other) => return Err(other),
                }
                vec![(device.device_id, since_ns(device.assigned_ms))]
            }
        },
        (None, None) => match owner(caller) {
            None => return Ok(LatestFilter::all()),
            Some(user_id) => owned_devices(state, user_id).await?,
        },
    };
    Ok(LatestFilter::all().only_since(DEVICE_COLUMN, devices))
}

/// Every device on the sites of `user_id`'s accounts, each from its arrival.
async fn owned_devices(state: &AppState, user_id: i64) -> Result<Vec<(String, i64)>, ApiError> {
    let filter = DeviceFilter {
        user_id: Some(user_id),
        ..DeviceFilter::default()
    };
    Ok(all_devices(state, &filter)
        .await?
        .into_iter()
        .map(|d| (d.device_id, since_ns(d.assigned_ms)))
        .collect())
}

/// A device's arrival on its site (ms) as the earliest time shown (ns).
fn since_ns(assigned_ms: Option<i64>) -> i64 {
    assigned_ms.map_or(i64::MIN, |ms| ms.saturating_mul(1_000_000))
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MIN)
}

/// The tables to read with their schemas: the one asked for, or every cached table.
fn tables(state: &AppState, wanted: Option<&str>) -> Result<Vec<(String, SchemaRef)>, ApiError> {
    let store = state.store();
    match wanted {
        Some(table) => match store.table_schema(table) {
            None => Err(ApiError::Unprocessable(vec![FieldError::new(
                "table",
                format!("there is no table {table:?}"),
            )])),
            Some(_) if !is_cached_table(table) => {
                Err(ApiError::Unprocessable(vec![FieldError::new(
                    "table",
                    format!(
                        "table {table:?} has no last values (rollup tables and _rejected are not cached)"
                    ),
                )]))
            }
            Some(schema) => Ok(vec![(table.to_owned(), schema)]),
        },
        None => Ok(state
            .engine()
            .latest()
            .tables()
            .into_iter()
            .filter_map(|table| {
                let schema = store.table_schema(&table)?;
                Some((table, schema))
            })
            .collect()),
    }
}

/// The rows ordered by their tag values, column by column (nulls first), so that
/// answers are stable and a device's series (total, phases) come together.
fn sorted(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let tags: Vec<SortColumn> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(field, _)| is_tag(field))
        .map(|(_, column)| SortColumn {
            values: ArrayRef::clone(column),
            options: None,
        })
        .collect();
    if tags.is_empty() || batch.num_rows() < 2 {
        return Ok(batch);
    }
    let order = lexsort_to_indices(&tags, None)?;
    take_record_batch(&batch, &order)
}

fn role(field: &Field) -> Option<&str> {
    field.metadata().get(COLUMN_ROLE_KEY).map(String::as_str)
}

fn is_tag(field: &Field) -> bool {
    role(field) == Some("tag")
}

/// The answer, serialized from the snapshots' columns without an intermediate value
/// per row.
struct Body<'a> {
    snapshots: &'a [(String, RecordBatch)],
    complete: bool,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("rows", &Rows(self.snapshots))?;
        map.serialize_entry("complete", &self.complete)?;
        map.end()
    }
}

struct Rows<'a>(&'a [(String, RecordBatch)]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let total = self.0.iter().map(|(_, b)| b.num_rows()).sum();
        let mut seq = serializer.serialize_seq(Some(total))?;
        for (table, batch) in self.0 {
            let columns = Columns::of(batch);
            for row in 0..batch.num_rows() {
                seq.serialize_element(&RowOut {
                    table,
                    columns: &columns,
                    row,
                })?;
            }
        }
        seq.end()
    }
}

/// A snapshot's columns, downcast once per table.
struct Columns<'a> {
    time: Option<&'a TimestampNanosecondArray>,
    tags: Vec<(&'a str, &'a DictionaryArray<Int32Type>, &'a StringArray)>,
    fields: Vec<(&'a str, Value<'a>)>,
}

/// A field column by type.
enum Value<'a> {
    F64(&'a Float64Array),
    I64(&'a Int64Array),
    U64(&'a UInt64Array),
    Bool(&'a BooleanArray),
    Utf8(&'a StringArray),
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Self {
        let mut columns = Columns {
            time: None,
            tags: Vec::new(),
            fields: Vec::new(),
        };
        for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            let name = field.name().as_str();
            if name == TIME_COLUMN {
                columns.time = column.as_any().downcast_ref();
            } else if is_tag(field) {
                if let Some(dictionary) = column.as_dictionary_opt::<Int32Type>()
                    && let Some(values) = dictionary.values().as_string_opt::<i32>()
                {
                    columns.tags.push((name, dictionary, values));
                }
            } else {
                let value = match column.data_type() {
                    DataType::Float64 => Value::F64(column.as_primitive::<Float64Type>()),
                    DataType::Int64 => Value::I64(column.as_primitive::<Int64Type>()),
                    DataType::UInt64 => Value::U64(column.as_primitive::<UInt64Type>()),
                    DataType::Boolean => Value::Bool(column.as_boolean()),
                    DataType::Utf8 => Value::Utf8(column.as_string::<i32>()),
                    // The store has no other field types.
                    _ => continue,
                };
                columns.fields.push((name, value));
            }
        }
        columns
    }
}

struct RowOut<'a> {
    table: &'a str,
    columns: &'a Columns<'a>,
    row: usize,
}

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("table", self.table)?;
        let time = self.columns.time.map(|t| t.value(self.row));
        map.serialize_entry("time", &time.map(Rfc3339))?;
        map.serialize_entry("tags", &Tags(self))?;
        map.serialize_entry("values", &Fields(self))?;
        map.end()
    }
}

/// A time in ns as RFC 3339 in UTC with 0, 3, 6 or 9 fraction digits, as
/// `chrono::SecondsFormat::AutoSi` writes it. Written by hand into a stack buffer:
/// chrono's formatter parses its format string for every value, which made the times
/// half the cost of a 10,000-row answer.
struct Rfc3339(i64);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = DateTime::from_timestamp_nanos(self.0).naive_utc();
        // i64 nanoseconds span 1677 to 2262: the year always has four digits.
        let year = t.year().unsigned_abs();
        let mut buf = [0u8; 30];
        let mut n = 0;
        let mut put = |value: u32, digits: u32| {
            for d in (0..digits).rev() {
                buf[n] = b'0' + u8::try_from(value / 10u32.pow(d) % 10).unwrap_or(0);
                n += 1;
            }
        };
        put(year, 4);
        put(t.month(), 2);
        put(t.day(), 2);
        put(t.hour(), 2);
        put(t.minute(), 2);
        put(t.second(), 2);
        let nanos = t.nanosecond();
        let (fraction, digits) = if nanos == 0 {
            (0, 0)
        } else if nanos.is_multiple_of(1_000_000) {
            (nanos / 1_000_000, 3)
        } else if nanos.is_multiple_of(1_000) {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        put(fraction, digits);
        // yyyymmddHHMMSSfff... with the separators put in.
        let digits = usize::try_from(digits).unwrap_or(0);
        let mut text = [0u8; 32];
        let mut out = 0;
        for (i, &b) in buf[..14 + digits].iter().enumerate() {
            let separator = match i {
                4 | 6 => Some(b'-'),
                8 => Some(b'T'),
                10 | 12 => Some(b':'),
                14 => Some(b'.'),
                _ => None,
            };
            if let Some(separator) = separator {
                text[out] = separator;
                out += 1;
            }
            text[out] = b;
            out += 1;
        }
        text[out] = b'Z';
        out += 1;
        // Only ASCII digits and separators were written.
        serializer.serialize_str(std::str::from_utf8(&text[..out]).unwrap_or_default())
    }
}

struct Tags<'a>(&'a RowOut<'a>);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.0.row;
        let mut map = serializer.serialize_map(None)?;
        for (name, dictionary, values) in &self.0.columns.tags {
            if dictionary.is_valid(row) {
                let key = dictionary.keys().value(row);
                if let Ok(key) = usize::try_from(key)
                    && key < values.len()
                {
                    map.serialize_entry(name, values.value(key))?;
                }
            }
        }
        map.end()
    }
}

struct Fields<'a>(&'a RowOut<'a>);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.0.row;
        let mut map = serializer.serialize_map(None)?;
        for (name, column) in &self.0.columns.fields {
            match column {
                Value::F64(a) if a.is_valid(row) => {
                    // JSON has no NaN or infinity: those are null, as serde_json writes
                    // them.
                    map.serialize_entry(name, &a.value(row))?;
                }
                Value::I64(a) if a.is_valid(row) => map.serialize_entry(name, &a.value(row))?,
                Value::U64(a) if a.is_valid(row) => map.serialize_entry(name, &a.value(row))?,
                Value::Bool(a) if a.is_valid(row) => map.serialize_entry(name, &a.value(row))?,
                Value::Utf8(a) if a.is_valid(row) => map.serialize_entry(name, a.value(row))?,
                _ => {}
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;

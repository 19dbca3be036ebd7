//! The stored tables as an operator sees them, their retention, and compaction on
//! demand: `GET /api/v1/tables`, `GET /api/v1/tables/{table}`,
//! `PUT|DELETE /api/v1/tables/{table}/retention` and `POST /api/v1/admin/compact`.
//! All of them are for admins (`Rule::Admin`): table names, sizes and retention are
//! the operator's business, and a retention change removes data.
//!
//! ```text
//!  GET tables ─► Store::table_names, table_schema, table_stats, retention(_override)
//!  PUT retention {"ttl": "30d" | null} ─► Store::set_retention(Some(..)) ┐ spawn_blocking:
//!  DELETE retention ─────────────────► Store::set_retention(None)       ├ they wait for
//!  POST admin/compact ───────────────► Store::compact_now ──────────────┘ the persister
//! ```

use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Schema};
use axum::Json;
use axum::extract::{Path, State};
use crm::FieldError;
use query::rollup;
use serde::{Deserialize, Deserializer, Serialize};
use storage::{COLUMN_ROLE_KEY, Store};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::openapi::{ErrorBody, ValidationErrorBody};
use super::rest::JsonBody;
use super::rest::readings::rfc3339;

/// Every table.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Tables {
    /// By name.
    tables: Vec<TableInfo>,
}

/// One table: its columns, what is stored of it, and how long it is kept.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableInfo {
    /// The table's name, as in SQL.
    name: String,
    /// For a rollup table (`meter_15m`, `meter_1h`, `meter_1d`): the table it rolls up.
    rollup_of: Option<String>,
    /// In table order; `time` first.
    columns: Vec<ColumnInfo>,
    /// Parquet files.
    files: usize,
    /// Bytes of those files.
    bytes: u64,
    /// Rows in those files, counting overwritten and deleted rows that compaction has
    /// not removed yet.
    file_rows: u64,
    /// Rows not in Parquet yet (the write buffer).
    buffer_rows: usize,
    /// Earliest time in the files (RFC 3339), null without files.
    min_time: Option<String>,
    /// Latest time in the files (RFC 3339), null without files.
    max_time: Option<String>,
    /// Deletes recorded that compaction has not applied to every file yet.
    pending_deletes: usize,
    /// How long rows are kept.
    retention: RetentionInfo,
}

/// One column.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnInfo {
    /// The column's name.
    name: String,
    /// `time`, `tag` (part of the series key) or `field`.
    role: String,
    /// `timestamp` (ns, UTC), `string`, `f64`, `i64`, `u64` or `bool`.
    #[serde(rename = "type")]
    data_type: String,
}

/// The retention of a table.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetentionInfo {
    /// The time to live in effect (`"30days"`), null when rows are kept forever. Rows
    /// older than now minus it are hidden from queries and refused on write; their
    /// files are dropped by compaction.
    ttl: Option<String>,
    /// The same in seconds.
    ttl_seconds: Option<u64>,
    /// Where it comes from: `api` (set with `PUT .../retention`; `DELETE` returns the
    /// table to the configuration), or `config` (`storage.retention`, or forever when
    /// the table is not listed there).
    source: RetentionSource,
}

/// Where a table's retention comes from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RetentionSource {
    /// Set through the API; kept in the catalog across restarts.
    Api,
    /// `storage.retention` in the configuration (forever for a table not listed).
    Config,
}

/// The body of `PUT /api/v1/tables/{table}/retention`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionUpdate {
    /// A duration such as `"30d"`, `"400days"` or `"1y"` (humantime), or null to keep
    /// the rows forever. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    ttl: Option<Option<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// What one compaction pass did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CompactionAnswer {
    /// Runs of small files (or files with pending deletes) merged.
    runs: usize,
    /// Files merged away.
    files_in: usize,
    /// Files written in their place.
    files_out: usize,
    /// Rows read from the merged files.
    rows_in: u64,
    /// Rows written: fewer when overwritten, deleted or expired rows were dropped.
    rows_out: u64,
    /// Bytes of the merged files.
    bytes_in: u64,
    /// Bytes written.
    bytes_out: u64,
    /// Files dropped whole because all their rows were past the retention.
    expired_files: usize,
    /// Merges refused because a delete or a retention change touched their files
    /// meanwhile; the next pass does them.
    retried: usize,
    /// Replaced files deleted from storage (files a running query still reads are
    /// deleted when it ends).
    deleted_files: usize,
    /// How long the pass took, in milliseconds.
    elapsed_ms: u64,
}

/// Lists every table (raw, rollup and `_rejected`) with its columns, sizes and
/// retention.
#[utoipa::path(
    get,
    path = "/api/v1/tables",
    tag = "storage",
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "Every table, by name", body = Tables),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
    )
)]
pub(crate) async fn list_tables(State(state): State<AppState>) -> Json<Tables> {
    let store = state.store();
    let tables = store
        .table_names()
        .into_iter()
        .filter_map(|name| table_info(store, &name))
        .collect();
    Json(Tables { tables })
}

/// One table.
#[utoipa::path(
    get,
    path = "/api/v1/tables/{table}",
    tag = "storage",
    security(("bearer" = []), ("token" = [])),
    params(("table" = String, Path, description = "Table name")),
    responses(
        (status = 200, description = "The table", body = TableInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
    )
)]
pub(crate) async fn get_table(
    State(state): State<AppState>,
    Path(table): Path<String>,
) -> Result<Json<TableInfo>, ApiError> {
    table_info(state.store(), &table)
        .map(Json)
        .ok_or_else(|| no_table(&table))
}

/// Sets the table's retention: rows older than `ttl` are hidden from queries at once,
/// refused on write, and their files dropped by the next compaction pass. Kept in the
/// catalog: it outlives restarts and beats `storage.retention`.
#[utoipa::path(
    put,
    path = "/api/v1/tables/{table}/retention",
    tag = "storage",
    security(("bearer" = []), ("token" = [])),
    params(("table" = String, Path, description = "Table name")),
    request_body = RetentionUpdate,
    responses(
        (status = 200, description = "The table with its new retention", body = TableInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
        (status = 422, description = "`ttl` missing, or not a positive duration", body = ValidationErrorBody),
    )
)]
pub(crate) async fn set_retention(
    State(state): State<AppState>,
    Path(table): Path<String>,
    JsonBody(update): JsonBody<RetentionUpdate>,
) -> Result<Json<TableInfo>, ApiError> {
    let ttl = match update.ttl {
        None => {
            return Err(invalid_ttl(
                "is required: a duration such as \"30d\", or null to keep the rows forever"
                    .to_owned(),
            ));
        }
        Some(None) => None,
        Some(Some(text)) => Some(parse_ttl(&text)?),
    };
    change_retention(&state, table, Some(ttl)).await
}

/// Returns the table to its configured retention (`storage.retention`, or forever when
/// the table is not listed there).
#[utoipa::path(
    delete,
    path = "/api/v1/tables/{table}/retention",
    tag = "storage",
    security(("bearer" = []), ("token" = [])),
    params(("table" = String, Path, description = "Table name")),
    responses(
        (status = 200, description = "The table with the configured retention", body = TableInfo),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 404, description = "No such table", body = ErrorBody),
    )
)]
pub(crate) async fn reset_retention(
    State(state): State<AppState>,
    Path(table): Path<String>,
) -> Result<Json<TableInfo>, ApiError> {
    change_retention(&state, table, None).await
}

/// Runs one compaction pass now and waits for it: merges runs of small files, applies
/// pending deletes, drops files past their retention and deletes replaced files. The
/// background compaction (`storage.compaction_interval`) does the same on its own.
#[utoipa::path(
    post,
    path = "/api/v1/admin/compact",
    tag = "storage",
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "What the pass did", body = CompactionAnswer),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
    )
)]
pub(crate) async fn compact(
    State(state): State<AppState>,
) -> Result<Json<CompactionAnswer>, ApiError> {
    let store = state.store().clone();
    let started = Instant::now();
    let stats = tokio::task::spawn_blocking(move || store.compact_now()).await??;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        runs = stats.runs,
        files_in = stats.files_in,
        files_out = stats.files_out,
        expired_files = stats.expired_files,
        elapsed_ms,
        "compaction pass run through the API"
    );
    Ok(Json(CompactionAnswer {
        runs: stats.runs,
        files_in: stats.files_in,
        files_out: stats.files_out,
        rows_in: stats.rows_in,
        rows_out: stats.rows_out,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        expired_files: stats.expired_files,
        retried: stats.retried,
        deleted_files: stats.deleted_files,
        elapsed_ms,
    }))
}

/// `Store::set_retention` off the async workers (it waits for the persister), then
/// the table as it is now.
async fn change_retention(
    state: &AppState,
    table: String,
    ttl: Option<Option<Duration>>,
) -> Result<Json<TableInfo>, ApiError> {
    let store = state.store().clone();
    if store.table_schema(&table).is_none() {
        return Err(no_table(&table));
    }
    let name = table.clone();
    tokio::task::spawn_blocking(move || store.set_retention(&name, ttl)).await??;
    tracing::info!(%table, ?ttl, "retention changed through the API");
    get_table(State(state.clone()), Path(table)).await
}

/// `ttl` as a positive duration, or a 422 naming it.
fn parse_ttl(text: &str) -> Result<Duration, ApiError> {
    match humantime::parse_duration(text.trim()) {
        Ok(ttl) if ttl.is_zero() => Err(invalid_ttl(
            "must be longer than zero; null keeps the rows forever".to_owned(),
        )),
        Ok(ttl) => Ok(ttl),
        Err(e) => Err(invalid_ttl(format!(
            "{text:?} is not a duration such as \"30d\" or \"400days\" ({e})"
        ))),
    }
}

fn invalid_ttl(message: String) -> ApiError {
    ApiError::Unprocessable(vec![FieldError::new("ttl", message)])
}

/// The answer for a table that does not exist.
pub(crate) fn no_table(table: &str) -> ApiError {
    ApiError::Missing(format!("no table named {table:?}"))
}

/// What the API shows of `name`; `None` when there is no such table (any more).
fn table_info(store: &Store, name: &str) -> Option<TableInfo> {
    let schema = store.table_schema(name)?;
    let stats = store.table_stats(name)?;
    let ttl = store.retention(name);
    let source = if store.retention_override(name).is_some() {
        RetentionSource::Api
    } else {
        RetentionSource::Config
    };
    let rollup_of = rollup::RollupLevel::ALL
        .iter()
        .find_map(|level| name.strip_suffix(level.suffix()))
        .map(str::to_owned);
    Some(TableInfo {
        name: name.to_owned(),
        rollup_of,
        columns: columns(&schema),
        files: stats.files,
        bytes: stats.bytes,
        file_rows: stats.file_rows,
        buffer_rows: stats.buffer_rows,
        min_time: stats.min_time.map(time_text),
        max_time: stats.max_time.map(time_text),
        pending_deletes: stats.tombstones,
        retention: RetentionInfo {
            ttl: ttl.map(|d| humantime::format_duration(d).to_string()),
            ttl_seconds: ttl.map(|d| d.as_secs()),
            source,
        },
    })
}

fn columns(schema: &Schema) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let role = field
                .metadata()
                .get(COLUMN_ROLE_KEY)
                .cloned()
                .unwrap_or_else(|| "field".to_owned());
            let data_type = match field.data_type() {
                DataType::Timestamp(..) => "timestamp",
                DataType::Float64 => "f64",
                DataType::Int64 => "i64",
                DataType::UInt64 => "u64",
                DataType::Boolean => "bool",
                // Tags are dictionary-encoded strings.
                _ => "string",
            };
            ColumnInfo {
                name: field.name().clone(),
                role,
                data_type: data_type.to_owned(),
            }
        })
        .collect()
}

/// UTC nanoseconds as RFC 3339 with as many fraction digits as needed.
pub(crate) fn time_text(ns: i64) -> String {
    rfc3339(chrono::DateTime::from_timestamp_nanos(ns))
}

#[cfg(test)]
mod tests;

//! `POST /api/v1/delete`: deletes rows by table, tags and time range, for instance one
//! site's readings on a customer's request. Admins only.
//!
//! ```text
//!  {"table"?, "tags", "from"?, "to"?} ─► check (422 naming the field) ─► targets:
//!     the table (or every table with all the named tag columns), and for a raw table
//!     its rollup tables from the start of the rollup bucket holding `from`
//!  spawn_blocking, with the rollup refresh paused:
//!     Store::delete per target (a tombstone: hidden from every scan at once)
//!     ─► Rollups::mark_stale at the ends of the deleted range of each raw table
//!     ─► LastValues::reload of each table (the newest values may have been deleted)
//!  ─► {"tombstones": [...]}; compaction later removes the rows from the files
//! ```
//!
//! Why the rollups need care: a rollup row of a bucket holds the series' readings of
//! the whole bucket, so the rows of the bucket holding `from` (and of each coarser
//! bucket holding it) are deleted whole, and recomputed from the rows left before
//! `from` by the next refresh; the buckets from `to` on to an hour after it are
//! recomputed too, since their energy steps may have come from deleted readings.
//! Buckets strictly inside the range lose the series' rows for good. The refresh is
//! paused meanwhile: one that read the raw rows before the delete would otherwise write
//! rollup rows of them after it, which no later refresh would remove.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::DateTime;
use crm::FieldError;
use query::rollup::{self, RollupLevel};
use serde::{Deserialize, Serialize};
use storage::{COLUMN_ROLE_KEY, DeletePredicate, Store, TimeRange, Tombstone};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::openapi::{ErrorBody, ValidationErrorBody};
use super::rest::JsonBody;
use super::tables::time_text;

/// How far after the deleted range rollup buckets are recomputed: the longest gap an
/// energy step is counted across (the rollups' look-back).
const STEP_REACH_NS: i64 = 3_600_000_000_000;

/// The body of `POST /api/v1/delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteRequest {
    /// The table. Omitted: every table that has all the named tag columns (rollup
    /// tables included). A raw table's rollup tables are always included.
    table: Option<String>,
    /// Tag values the rows must all have, e.g. `{"site_id": "site-0001"}`. Empty or
    /// omitted: every series of the table (then `table` is required).
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// First time deleted (inclusive): RFC 3339, or nanoseconds since the epoch.
    /// Omitted: from the earliest row.
    from: Option<TimeArg>,
    /// End of the deleted times (exclusive): RFC 3339, or nanoseconds since the epoch.
    /// Omitted: up to the latest row.
    to: Option<TimeArg>,
}

/// A time: nanoseconds since the epoch, or RFC 3339 text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TimeArg {
    /// Nanoseconds since the epoch, UTC.
    Nanos(i64),
    /// RFC 3339, e.g. `2026-01-01T00:00:00Z`.
    Text(String),
}

/// The deletes recorded.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// One per table, raw tables before their rollups.
    tombstones: Vec<DeletedRows>,
}

/// The rows deleted from one table.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeletedRows {
    /// The delete's id; compaction applies deletes in this order.
    id: u64,
    /// The table.
    table: String,
    /// The tag values the deleted rows have.
    tags: BTreeMap<String, String>,
    /// First time deleted (inclusive, RFC 3339); null: from the earliest row. For a
    /// rollup table, the start of the bucket holding the request's `from`.
    from: Option<String>,
    /// End of the deleted times (exclusive, RFC 3339); null: up to the latest row.
    to: Option<String>,
}

impl From<&Tombstone> for DeletedRows {
    fn from(t: &Tombstone) -> Self {
        DeletedRows {
            id: t.id,
            table: t.table.clone(),
            tags: t.tags.iter().cloned().collect(),
            from: (t.min_time != i64::MIN).then(|| time_text(t.min_time)),
            to: (t.max_time != i64::MAX).then(|| time_text(t.max_time + 1)),
        }
    }
}

/// Deletes the rows of a table (or of every table with the named tag columns) whose
/// tags equal `tags` and whose time lies in `[from, to)`, with the matching rows of
/// the rollup tables. The rows are gone from every query when this answers; rows
/// written afterwards are kept. Compaction removes them from the files.
#[utoipa::path(
    post,
    path = "/api/v1/delete",
    tag = "storage",
    security(("bearer" = []), ("token" = [])),
    request_body = DeleteRequest,
    responses(
        (status = 200, description = "The deletes recorded, one per table", body = Deleted),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin user or an admin token", body = ErrorBody),
        (status = 422, description = "An unknown table or tag column, a bad time, or neither table nor tags", body = ValidationErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DeleteRequest>,
) -> Result<Json<Deleted>, ApiError> {
    let range = check(&request)?;
    let targets = targets(&state, &request, range)?;
    let store = state.store().clone();
    let rollups = state.engine().rollups().clone();
    let latest = state.engine().latest().clone();
    let window = state.engine().config().latest_warmup;
    let tombstones = tokio::task::spawn_blocking(move || {
        let tombstones = rollups.with_refresh_paused(|| {
            // Marked first (and saved): a crash between the two leaves a mark without
            // a delete, which only recomputes the buckets; the other way round the
            // kept part of the end buckets would stay hidden.
            for target in targets.iter().filter(|t| t.rolled_up) {
                mark_ends(&store, &rollups, &target.predicate.table, range);
            }
            let mut tombstones = Vec::with_capacity(targets.len());
            for target in &targets {
                tombstones.push(store.delete(target.predicate.clone())?);
            }
            Ok::<_, storage::Error>(tombstones)
        })?;
        // The last-value cache would go on showing the newest values of the deleted
        // rows: it reads the tables again, which no longer have them.
        for tombstone in &tombstones {
            latest.reload_after_delete(&store, &tombstone.table, &tombstone.tags, window);
        }
        Ok::<_, storage::Error>(tombstones)
    })
    .await??;
    for t in &tombstones {
        tracing::info!(
            table = %t.table,
            tags = ?t.tags,
            min_time = t.min_time,
            max_time = t.max_time,
            tombstone = t.id,
            "rows deleted"
        );
    }
    Ok(Json(Deleted {
        tombstones: tombstones.iter().map(DeletedRows::from).collect(),
    }))
}

/// The deleted times (inclusive) from `from` and `to`, or a 422 naming what is wrong.
fn check(request: &DeleteRequest) -> Result<TimeRange, ApiError> {
    let mut errors = Vec::new();
    if request.table.is_none() && request.tags.is_empty() {
        errors.push(FieldError::new(
            "table",
            "name a table, or at least one tag to delete from every table that has it \
             (deleting every row of every table is not offered)",
        ));
    }
    let from = time(&mut errors, "from", request.from.as_ref());
    let to = time(&mut errors, "to", request.to.as_ref());
    let max = match to {
        Some(to) => to.checked_sub(1).unwrap_or_else(|| {
            errors.push(FieldError::new("to", "must be after the earliest time"));
            i64::MIN
        }),
        None => i64::MAX,
    };
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        errors.push(FieldError::new(
            "to",
            format!(
                "must be after from ({} is not after {}); to is exclusive",
                time_text(to),
                time_text(from)
            ),
        ));
    }
    if errors.is_empty() {
        Ok(TimeRange {
            min: from.unwrap_or(i64::MIN),
            max,
        })
    } else {
        Err(ApiError::Unprocessable(errors))
    }
}

/// A time of the request as UTC nanoseconds; a bad one is added to `errors`.
fn time(errors: &mut Vec<FieldError>, field: &str, value: Option<&TimeArg>) -> Option<i64> {
    match value? {
        TimeArg::Nanos(ns) => Some(*ns),
        TimeArg::Text(text) => {
            let parsed = DateTime::parse_from_rfc3339(text.trim());
            match parsed.map(|t| t.timestamp_nanos_opt()) {
                Ok(Some(ns)) => Some(ns),
                Ok(None) => {
                    errors.push(FieldError::new(
                        field,
                        format!("{text:?} is outside the years 1677 to 2262 that times can have"),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new(
                        field,
                        format!(
                            "{text:?} must be an RFC 3339 time such as 2026-01-01T00:00:00Z, \
                             or nanoseconds since the epoch ({e})"
                        ),
                    ));
                    None
                }
            }
        }
    }
}

/// One delete to record.
#[derive(Debug)]
struct Target {
    predicate: DeletePredicate,
    /// A raw table with rollups: the ends of its deleted range are marked stale.
    rolled_up: bool,
}

/// The deletes the request asks for: the named table or every table with all the
/// named tag columns, each raw table followed by its rollup tables (whose range starts
/// at the bucket holding `range.min`).
fn targets(
    state: &AppState,
    request: &DeleteRequest,
    range: TimeRange,
) -> Result<Vec<Target>, ApiError> {
    let store = state.store();
    let tags: Vec<(String, String)> = request
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let named: Vec<String> = match &request.table {
        Some(table) => {
            if store.table_schema(table).is_none() {
                return Err(ApiError::Unprocessable(vec![FieldError::new(
                    "table",
                    format!("no table named {table:?}"),
                )]));
            }
            let errors: Vec<FieldError> = request
                .tags
                .keys()
                .filter_map(|tag| tag_error(store, table, tag))
                .collect();
            if !errors.is_empty() {
                return Err(ApiError::Unprocessable(errors));
            }
            vec![table.clone()]
        }
        None => {
            let matching: Vec<String> = store
                .table_names()
                .into_iter()
                .filter(|table| has_tags(store, table, request.tags.keys()))
                .collect();
            if matching.is_empty() {
                let names: Vec<&str> = request.tags.keys().map(String::as_str).collect();
                return Err(ApiError::Unprocessable(vec![FieldError::new(
                    "tags",
                    format!("no table has all the tag columns {}", names.join(", ")),
                )]));
            }
            // A rollup table whose raw table is deleted from goes with it (its range
            // starts at its bucket); alone it is deleted as asked.
            matching
                .iter()
                .filter(|table| base_of(table).is_none_or(|base| !matching.contains(&base)))
                .cloned()
                .collect()
        }
    };
    let mut targets = Vec::new();
    for table in named {
        let raw = !rollup::is_rollup_table(&table);
        targets.push(Target {
            predicate: DeletePredicate {
                table: table.clone(),
                tags: tags.clone(),
                range,
            },
            rolled_up: raw,
        });
        if !raw {
            continue;
        }
        for level in RollupLevel::ALL {
            let name = rollup::table_name(&table, level);
            // A rollup table without one of the tag columns holds no row with it.
            if !has_tags(store, &name, request.tags.keys()) {
                continue;
            }
            let min = if range.min == i64::MIN {
                range.min
            } else {
                state.engine().rollups().bucketing(level).start(range.min)
            };
            targets.push(Target {
                predicate: DeletePredicate {
                    table: name,
                    tags: tags.clone(),
                    range: TimeRange {
                        min,
                        max: range.max,
                    },
                },
                rolled_up: false,
            });
        }
    }
    Ok(targets)
}

/// The raw table of a rollup table name, if the name is one.
fn base_of(table: &str) -> Option<String> {
    RollupLevel::ALL
        .iter()
        .find_map(|level| table.strip_suffix(level.suffix()))
        .map(str::to_owned)
}

/// Whether `table` exists and has every one of `tags` as a tag column.
fn has_tags<'a>(store: &Store, table: &str, mut tags: impl Iterator<Item = &'a String>) -> bool {
    let Some(schema) = store.table_schema(table) else {
        return false;
    };
    tags.all(|tag| {
        schema
            .field_with_name(tag)
            .is_ok_and(|f| f.metadata().get(COLUMN_ROLE_KEY).map(String::as_str) == Some("tag"))
    })
}

/// Why `tag` cannot select rows of `table`, if it cannot.
fn tag_error(store: &Store, table: &str, tag: &str) -> Option<FieldError> {
    let schema = store.table_schema(table)?;
    let message = match schema.field_with_name(tag) {
        Err(_) => format!("table {table:?} has no tag column {tag:?}"),
        Ok(field) if field.metadata().get(COLUMN_ROLE_KEY).map(String::as_str) != Some("tag") => {
            format!("column {tag:?} of table {table:?} is not a tag: deletes select series by tags")
        }
        Ok(_) => return None,
    };
    Some(FieldError::new(&format!("tags.{tag}"), message))
}

/// Marks the rollup buckets of `table` that kept some rows of a deleted series stale:
/// the one holding the first deleted time, and those from the end of the range to an
/// hour after it. Only within the times the table holds, so that an unbounded delete
/// marks nothing it need not.
fn mark_ends(store: &Store, rollups: &query::rollup::Rollups, table: &str, range: TimeRange) {
    let Some(extent) = extent(store, table) else {
        return;
    };
    if range.min != i64::MIN && range.min > extent.min && range.min <= extent.max {
        rollups.mark_stale(table, range.min, range.min);
    }
    if range.max != i64::MAX && range.max < extent.max {
        let end = range.max.saturating_add(STEP_REACH_NS).min(extent.max);
        rollups.mark_stale(table, range.max.max(extent.min), end);
    }
}

/// The earliest and latest time of `table`, in files or not yet.
fn extent(store: &Store, table: &str) -> Option<TimeRange> {
    let stats = store.table_stats(table)?;
    let files = stats
        .min_time
        .zip(stats.max_time)
        .map(|(min, max)| TimeRange { min, max });
    match (files, store.unpersisted_time_range(table)) {
        (Some(a), Some(b)) => Some(TimeRange {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
        }),
        (a, b) => a.or(b),
    }
}

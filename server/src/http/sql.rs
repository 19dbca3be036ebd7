//! `GET /api/v1/sql?q=&format=` and `POST /api/v1/sql` with `{"sql": .., "format": ..}`.

use std::time::Instant;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use query::OutputFormat;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, body_rejection};

/// Query parameters of the SQL routes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SqlParams {
    /// The statement (GET only).
    q: Option<String>,
    /// Output format: json (default), jsonl, csv, arrow, parquet.
    format: Option<String>,
}

/// Body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
struct SqlBody {
    sql: String,
    /// Wins over the `format` query parameter when both are given.
    #[serde(default)]
    format: Option<String>,
}

/// Runs one read-only SQL statement: `GET /api/v1/sql?q=...&format=...`.
#[utoipa::path(
    get,
    path = "/api/v1/sql",
    tag = "sql",
    security(("bearer" = []), ("token" = [])),
    params(
        ("q" = String, Query, description = "The statement, e.g. SHOW TABLES"),
        ("format" = Option<String>, Query, description = "json (default), jsonl, csv, arrow, parquet"),
    ),
    responses(
        (status = 200, description = "The result in the requested format"),
        (status = 400, description = "Invalid SQL or parameters, with the reason"),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "Needs an analyst or admin user, or a read or admin token"),
        (status = 408, description = "The query ran longer than query.timeout"),
    )
)]
pub(crate) async fn sql_get(
    State(state): State<AppState>,
    params: Result<Query<SqlParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let Some(sql) = params.q.filter(|q| !q.trim().is_empty()) else {
        return Err(ApiError::BadRequest(
            "missing query parameter q, e.g. /api/v1/sql?q=SHOW%20TABLES".to_owned(),
        ));
    };
    run(&state, &sql, params.format.as_deref()).await
}

/// Runs one read-only SQL statement: `POST /api/v1/sql` with `{"sql": "...", "format": "..."}`.
#[utoipa::path(
    post,
    path = "/api/v1/sql",
    tag = "sql",
    security(("bearer" = []), ("token" = [])),
    params(("format" = Option<String>, Query, description = "json (default), jsonl, csv, arrow, parquet; the body's format wins")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "{\"sql\": \"...\", \"format\": \"json\"}"),
    responses(
        (status = 200, description = "The result in the requested format"),
        (status = 400, description = "Invalid SQL or body, with the reason"),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "Needs an analyst or admin user, or a read or admin token"),
        (status = 408, description = "The query ran longer than query.timeout"),
    )
)]
pub(crate) async fn sql_post(
    State(state): State<AppState>,
    params: Result<Query<SqlParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let body = body.map_err(|r| body_rejection(r, state.max_body_size()))?;
    let body: SqlBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be a JSON object like {{\"sql\": \"SHOW TABLES\", \"format\": \"json\"}}: {e}"
        ))
    })?;
    if body.sql.trim().is_empty() {
        return Err(ApiError::BadRequest("\"sql\" is empty".to_owned()));
    }
    let format = body.format.or(params.format);
    run(&state, &body.sql, format.as_deref()).await
}

async fn run(state: &AppState, sql: &str, format: Option<&str>) -> Result<Response, ApiError> {
    let format = parse_format(format)?;
    let started = Instant::now();
    let output = state.engine().sql(sql).await?;
    let rows = output.num_rows();
    // Encoding (Parquet with ZSTD in particular) is CPU work proportional to the result.
    let body = tokio::task::spawn_blocking(move || query::encode(&output, format)).await??;
    tracing::debug!(
        rows,
        bytes = body.len(),
        %format,
        elapsed = ?started.elapsed(),
        "query answered"
    );
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

fn parse_format(format: Option<&str>) -> Result<OutputFormat, ApiError> {
    match format.map(str::trim) {
        None | Some("") => Ok(OutputFormat::default()),
        Some(name) => name
            .parse()
            .map_err(|e: query::UnknownFormat| ApiError::BadRequest(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_defaults_to_json() {
        assert_eq!(parse_format(None).unwrap(), OutputFormat::Json);
        assert_eq!(parse_format(Some("")).unwrap(), OutputFormat::Json);
        assert_eq!(parse_format(Some("csv")).unwrap(), OutputFormat::Csv);
        assert_eq!(
            parse_format(Some("parquet")).unwrap(),
            OutputFormat::Parquet
        );
    }

    #[test]
    fn unknown_format_is_a_client_error_listing_the_choices() {
        let err = parse_format(Some("xml")).unwrap_err();
        assert!(
            matches!(err, ApiError::BadRequest(ref m) if m.contains("xml") && m.contains("jsonl")),
            "{err}"
        );
    }
}

//! [`ApiError`]: every way a request can fail, and the one place that turns each into
//! an HTTP status and body.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use storage::LineError;

/// The most rejected lines listed in one response. A client that sends 100 000 bad
/// lines learns what is wrong from the first ones; the count says how many there were.
const MAX_LISTED_REJECTIONS: usize = 1000;

/// A failed request.
///
/// Client mistakes become 4xx with a JSON body `{"error": "..."}` saying what to fix;
/// failures on our side become 5xx with a generic body, and their detail goes to the log
/// here, where they are answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is malformed: a bad parameter, a body that is not what the route
    /// takes, invalid SQL.
    #[error("{0}")]
    BadRequest(String),
    /// Some lines of a write were invalid. `accepted` lines were stored (0 when the
    /// client asked for all-or-nothing).
    #[error("{} of {} lines rejected", rejected.len(), rejected.len() + accepted)]
    Rejected {
        /// The invalid lines, sorted by line number.
        rejected: Vec<LineError>,
        /// Lines stored.
        accepted: usize,
        /// True when valid lines were dropped because of `accept_partial=false`.
        all_or_nothing: bool,
    },
    /// No route has this path.
    #[error("no route for {method} {path}")]
    NotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The entity does not exist, or is outside the caller's scope (the same answer,
    /// so ids cannot be probed).
    #[error("{0}")]
    Missing(String),
    /// The route exists but not with this method.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The body, as sent or after decoding, is larger than `http.max_body_size`.
    #[error(
        "request body is larger than the limit of {limit} bytes (http.max_body_size); \
         send smaller batches"
    )]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body's `Content-Encoding` is not one we decode.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The query ran longer than `query.timeout`.
    #[error("{0}")]
    Timeout(String),
    /// The write queue is full; retry in a moment.
    #[error("the server is busy (write queue full); retry after 1 second")]
    Busy,
    /// The server is shutting down and takes no more writes.
    #[error("the server is shutting down; retry against the restarted server")]
    ShuttingDown,
    /// The request has no valid credentials: none, unknown, expired, revoked or
    /// logged out.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are valid, but the route's rule refuses them.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins; retry after `retry_after_s` seconds.
    #[error("{message}")]
    TooManyRequests {
        /// What was limited and by which setting.
        message: String,
        /// The `Retry-After` header.
        retry_after_s: u64,
    },
    /// A unique value is taken.
    #[error("{0}")]
    Conflict(String),
    /// The body parsed but its values are invalid; every bad field is named.
    #[error("invalid input: {}", join_fields(.0))]
    Unprocessable(Vec<crm::FieldError>),
    /// Something failed on our side. The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// Wraps an internal failure.
    pub(crate) fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(error))
    }

    /// The status this error is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Rejected { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct FieldsBody<'a> {
    error: String,
    fields: &'a [crm::FieldError],
}

fn join_fields(fields: &[crm::FieldError]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Serialize)]
struct RejectedBody<'a> {
    error: String,
    rejected: &'a [LineError],
    accepted: usize,
    /// Present when more lines were rejected than are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_total: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %source, "request failed");
                let body = ErrorBody {
                    error: "internal server error; the details are in the server log",
                };
                (status, Json(body)).into_response()
            }
            ApiError::Rejected {
                rejected,
                accepted,
                all_or_nothing,
            } => {
                let total = rejected.len();
                let mut error = format!("{total} of {} lines rejected", total + accepted);
                if *all_or_nothing {
                    error.push_str("; nothing was stored because accept_partial=false");
                } else if *accepted > 0 {
                    error.push_str("; the other lines were stored");
                }
                tracing::debug!(rejected = total, accepted, "write had invalid lines");
                let listed = &rejected[..total.min(MAX_LISTED_REJECTIONS)];
                let body = RejectedBody {
                    error,
                    rejected: listed,
                    accepted: *accepted,
                    rejected_total: (listed.len() < total).then_some(total),
                };
                (status, Json(body)).into_response()
            }
            ApiError::Unprocessable(fields) => {
                let body = FieldsBody {
                    error: self.to_string(),
                    fields,
                };
                (status, Json(body)).into_response()
            }
            other => {
                let message = other.to_string();
                tracing::debug!(status = status.as_u16(), error = %message, "request refused");
                let mut response = (status, Json(ErrorBody { error: &message })).into_response();
                match other {
                    ApiError::Busy => {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    ApiError::TooManyRequests { retry_after_s, .. } => {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
                    }
                    ApiError::Unauthorized(_) => {
                        response.headers_mut().insert(
                            header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer realm=\"gridlake\""),
                        );
                    }
                    _ => {}
                }
                response
            }
        }
    }
}

impl From<storage::Error> for ApiError {
    fn from(error: storage::Error) -> Self {
        match error {
            storage::Error::Busy => ApiError::Busy,
            storage::Error::ShuttingDown => ApiError::ShuttingDown,
            // Deletes and retention changes: the handlers check first, so these are
            // races (a table gone meanwhile) or checks only the store makes.
            storage::Error::TableNotFound(_) => ApiError::Missing(error.to_string()),
            storage::Error::Invalid(message) => ApiError::BadRequest(message),
            other => ApiError::internal(other),
        }
    }
}

impl From<query::Error> for ApiError {
    fn from(error: query::Error) -> Self {
        if error.is_timeout() {
            ApiError::Timeout(error.to_string())
        } else if error.is_client_error() {
            ApiError::BadRequest(error.to_string())
        } else {
            ApiError::internal(error)
        }
    }
}

impl From<ingest::Error> for ApiError {
    fn from(error: ingest::Error) -> Self {
        match error {
            ingest::Error::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            ingest::Error::UnsupportedEncoding(_) => {
                ApiError::UnsupportedMediaType(error.to_string())
            }
            ingest::Error::UnknownPrecision(_)
            | ingest::Error::BadGzip(_)
            | ingest::Error::Json(_)
            | ingest::Error::NotJsonArray { .. } => ApiError::BadRequest(error.to_string()),
        }
    }
}

impl From<crm::Error> for ApiError {
    fn from(error: crm::Error) -> Self {
        match error {
            // The same body for a missing id and one outside the caller's scope.
            crm::Error::NotFound { .. } => ApiError::Missing(error.to_string()),
            crm::Error::Conflict { .. } => ApiError::Conflict(error.to_string()),
            crm::Error::Validation(fields) => ApiError::Unprocessable(fields),
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // Well-formed JSON with a missing, unknown or mistyped field: name it.
            JsonRejection::JsonDataError(e) => {
                let message = e.body_text();
                let field = field_in_message(&message).unwrap_or_else(|| "body".to_owned());
                ApiError::Unprocessable(vec![crm::FieldError { field, message }])
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".to_owned(),
            ),
            other => {
                ApiError::BadRequest(format!("the body is not valid JSON: {}", other.body_text()))
            }
        }
    }
}

/// The field serde names in a data error: ``missing field `email` ``, ``unknown field
/// `emial` ``, or the path before `: invalid type` (`role: unknown variant ...`).
fn field_in_message(message: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            return rest.find('`').map(|end| rest[..end].to_owned());
        }
    }
    // axum's message: "Failed to deserialize the JSON body into the target type: role: ..."
    let rest = message.split_once("target type: ")?.1;
    let (path, _) = rest.split_once(": ")?;
    (!path.is_empty() && !path.contains(' ')).then(|| path.to_owned())
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

/// Reading the body failed: too large, or the connection broke.
pub(crate) fn body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        ApiError::internal(error)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;

    async fn parts(error: ApiError) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = error.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        let json = serde_json::from_slice(&body).expect("body is JSON");
        (status, headers, json)
    }

    #[tokio::test]
    async fn busy_is_503_with_retry_after() {
        let (status, headers, body) = parts(storage::Error::Busy.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(body["error"].as_str().unwrap().contains("busy"));
    }

    #[tokio::test]
    async fn shutting_down_is_503() {
        let (status, headers, _) = parts(storage::Error::ShuttingDown.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_detail() {
        let error = storage::Error::Wal(std::io::Error::other("disk on fire at /secret/path"));
        let (status, _, body) = parts(error.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let message = body["error"].as_str().unwrap();
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("internal"), "{message}");
    }

    #[tokio::test]
    async fn query_errors_map_by_kind() {
        let (status, _, body) =
            parts(query::Error::Refused("DROP TABLE meter".into()).into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("read-only"));

        let (status, _, body) = parts(query::Error::Timeout(Duration::from_secs(30)).into()).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(body["error"].as_str().unwrap().contains("query.timeout"));

        let internal =
            query::Error::EncodeParquet(parquet::errors::ParquetError::General("boom".into()));
        let (status, _, body) = parts(internal.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body["error"].as_str().unwrap().contains("boom"));
    }

    #[tokio::test]
    async fn ingest_errors_map_by_kind() {
        let (status, _, body) = parts(ingest::Error::TooLarge { limit: 10 }.into()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body["error"].as_str().unwrap().contains("max_body_size"));

        let (status, _, _) = parts(ingest::Error::UnsupportedEncoding("br".into()).into()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let (status, _, body) = parts(ingest::Error::UnknownPrecision("h".into()).into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("precision"));
    }

    #[tokio::test]
    async fn rejected_lines_are_listed_with_counts() {
        let error = ApiError::Rejected {
            rejected: vec![
                LineError::new(2, "bad field"),
                LineError::new(5, "no fields"),
            ],
            accepted: 3,
            all_or_nothing: false,
        };
        let (status, _, body) = parts(error).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["accepted"], 3);
        assert_eq!(
            body["rejected"],
            json!([{"line": 2, "reason": "bad field"}, {"line": 5, "reason": "no fields"}])
        );
        assert!(body.get("rejected_total").is_none());
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("2 of 5 lines rejected")
        );
    }

    #[tokio::test]
    async fn long_rejection_lists_are_capped() {
        let rejected = (1..=MAX_LISTED_REJECTIONS + 5)
            .map(|line| LineError::new(line, "bad"))
            .collect();
        let error = ApiError::Rejected {
            rejected,
            accepted: 0,
            all_or_nothing: true,
        };
        let (_, _, body) = parts(error).await;
        assert_eq!(
            body["rejected"].as_array().unwrap().len(),
            MAX_LISTED_REJECTIONS
        );
        assert_eq!(body["rejected_total"], MAX_LISTED_REJECTIONS + 5);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("accept_partial=false")
        );
    }
}

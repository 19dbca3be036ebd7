//! The HTTP side of export and import: SQL as Arrow IPC, line protocol writes, and the
//! server's error answers turned into [`TransferError`]s that say what was asked.

use std::io::BufReader;
use std::time::Duration;

use arrow::ipc::reader::StreamReader;
use ingest::Precision;
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use serde::Deserialize;

use super::{ServerArgs, TransferError};

/// How long to wait for a connection; the requests themselves have no overall timeout,
/// since an export streams for as long as a chunk takes and the server bounds queries
/// with its own `query.timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a write is retried while the server answers 503 (busy or shutting down).
const BUSY_RETRIES: u32 = 60;

/// An Arrow IPC stream read straight off the response, batch by batch.
pub(super) type ArrowStream = StreamReader<BufReader<Response>>;

/// A client of one server.
#[derive(Debug)]
pub(super) struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

/// What the server said to one write request.
#[derive(Debug)]
pub(super) enum WriteAnswer {
    /// Stored `accepted` lines and refused the others.
    Written {
        /// Lines stored.
        accepted: u64,
        /// Lines refused, in all (the list may be cut short by the server).
        rejected_total: u64,
        /// `(line in the body, reason)`, sorted by line.
        rejected: Vec<(usize, String)>,
    },
    /// 413: the body is larger than the server's `http.max_body_size`.
    TooLarge,
}

/// The JSON body of a 400 answer to a write.
#[derive(Debug, Deserialize)]
struct RejectedBody {
    #[serde(default)]
    rejected: Vec<RejectedLine>,
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    rejected_total: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RejectedLine {
    line: usize,
    reason: String,
}

impl Client {
    /// A client of the server at `args.url`.
    pub(super) fn new(args: &ServerArgs) -> Result<Client, TransferError> {
        let url_error = |reason: String| TransferError::Url {
            url: args.url.clone(),
            reason,
        };
        let url = url::Url::parse(&args.url).map_err(|e| url_error(e.to_string()))?;
        if url.scheme() != "http" {
            // reqwest is built without TLS: the server speaks plain HTTP, and TLS is a
            // proxy's business (docs/import-export.md).
            return Err(url_error(format!(
                "scheme {:?} is not supported; use http:// (put TLS in front of both ends \
                 with a tunnel or proxy)",
                url.scheme()
            )));
        }
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .build()
            .map_err(|source| TransferError::Connect {
                url: args.url.clone(),
                source,
            })?;
        Ok(Client {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    fn post(&self, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.post(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        (url, request)
    }

    /// Runs `sql` and returns its result as a stream of Arrow batches. `what` names the
    /// request in errors.
    pub(super) fn sql_arrow(&self, sql: &str, what: &str) -> Result<ArrowStream, TransferError> {
        let response = self.sql(sql, "arrow", what)?;
        StreamReader::try_new(BufReader::new(response), None).map_err(|source| {
            TransferError::Arrow {
                what: format!("{what}: reading the server's Arrow answer"),
                source,
            }
        })
    }

    /// Runs `sql` and returns its rows as JSON objects.
    pub(super) fn sql_json(
        &self,
        sql: &str,
        what: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, TransferError> {
        let response = self.sql(sql, "json", what)?;
        let url = response.url().to_string();
        response
            .json()
            .map_err(|source| TransferError::Connect { url, source })
    }

    fn sql(&self, sql: &str, format: &str, what: &str) -> Result<Response, TransferError> {
        let (url, request) = self.post("/api/v1/sql");
        let body = serde_json::json!({ "sql": sql, "format": format });
        let response = request
            .json(&body)
            .send()
            .map_err(|source| TransferError::Connect { url, source })?;
        if response.status() == StatusCode::OK {
            Ok(response)
        } else {
            Err(server_error(what, response))
        }
    }

    /// Writes a line protocol body through `/api/v3/write_lp?accept_partial=true`,
    /// waiting while the server is busy.
    pub(super) fn write_lp(
        &self,
        body: bytes::Bytes,
        precision: Precision,
    ) -> Result<WriteAnswer, TransferError> {
        let path = format!(
            "/api/v3/write_lp?accept_partial=true&precision={}",
            precision.as_str()
        );
        for _ in 0..BUSY_RETRIES {
            let (url, request) = self.post(&path);
            let response = request
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(body.clone())
                .send()
                .map_err(|source| TransferError::Connect { url, source })?;
            match response.status() {
                StatusCode::NO_CONTENT | StatusCode::OK => {
                    return Ok(WriteAnswer::Written {
                        accepted: line_count(&body),
                        rejected_total: 0,
                        rejected: Vec::new(),
                    });
                }
                StatusCode::PAYLOAD_TOO_LARGE => return Ok(WriteAnswer::TooLarge),
                StatusCode::SERVICE_UNAVAILABLE => {
                    let wait = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1)
                        .clamp(1, 30);
                    std::thread::sleep(Duration::from_secs(wait));
                }
                StatusCode::BAD_REQUEST => {
                    let text = response.text().unwrap_or_default();
                    return match serde_json::from_str::<RejectedBody>(&text) {
                        // A 400 about the request as a whole (a bad parameter) has no
                        // list of lines.
                        Ok(answer) if !answer.rejected.is_empty() => Ok(WriteAnswer::Written {
                            accepted: answer.accepted,
                            rejected_total: answer
                                .rejected_total
                                .unwrap_or(answer.rejected.len() as u64),
                            rejected: answer
                                .rejected
                                .into_iter()
                                .map(|r| (r.line, r.reason))
                                .collect(),
                        }),
                        _ => Err(TransferError::Server {
                            what: "write".to_owned(),
                            status: StatusCode::BAD_REQUEST,
                            message: error_message(&text),
                        }),
                    };
                }
                _ => return Err(server_error("write", response)),
            }
        }
        Err(TransferError::Server {
            what: "write".to_owned(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("still busy after {BUSY_RETRIES} retries"),
        })
    }
}

/// Lines in a body that ends each line with `\n` (the last one may lack it).
fn line_count(body: &[u8]) -> u64 {
    let newlines = body.iter().filter(|&&b| b == b'\n').count() as u64;
    let unterminated = u64::from(!body.is_empty() && !body.ends_with(b"\n"));
    newlines + unterminated
}

fn server_error(what: &str, response: Response) -> TransferError {
    let status = response.status();
    let text = response.text().unwrap_or_default();
    TransferError::Server {
        what: what.to_owned(),
        status,
        message: error_message(&text),
    }
}

/// The `error` of a JSON error body, or the body itself.
fn error_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_with_or_without_a_final_newline() {
        assert_eq!(line_count(b""), 0);
        assert_eq!(line_count(b"a\nb\n"), 2);
        assert_eq!(line_count(b"a\nb"), 2);
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        let args = |url: &str| ServerArgs {
            url: url.to_owned(),
            token: None,
        };
        assert!(Client::new(&args("http://127.0.0.1:7181/")).is_ok());
        let err = Client::new(&args("https://example.com")).unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        assert!(Client::new(&args("not a url")).is_err());
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"error":"table x not found"}"#),
            "table x not found"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
    }
}

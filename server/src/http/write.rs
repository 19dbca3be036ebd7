//! The write routes: InfluxDB v1, v2 and v3 line protocol, and JSON readings.
//!
//! Every route runs the same steps: decode the body (gzip) within the size limit, parse
//! it, validate the lines against the table schemas, submit the valid rows, and answer
//! only when the store reports them durable (or, with `no_sync=true`, written).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use ingest::Precision;
use ingest::gate::DeviceGate as _;
use serde::Deserialize;
use storage::{LineError, ParsedLine, PreparedWrite};

use super::AppState;
use super::error::{ApiError, body_rejection};
use crate::auth::Principal;

/// The `source` recorded on canonical-table rows written over HTTP.
const HTTP_SOURCE: &str = "http";

/// Query parameters of the write routes. Parameters a route does not use (`db`,
/// `bucket`, `org`, InfluxDB v1's `u` and `p`) are accepted and ignored: there is one
/// database until multi-tenancy exists.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WriteParams {
    /// Unit of the timestamps: `ns`, `us`, `ms`, `s` (and v1's `n`, `u`).
    precision: Option<String>,
    /// `false` makes the request all-or-nothing (v3 and JSON routes).
    accept_partial: Option<bool>,
    /// `true` acknowledges after the WAL write, before fsync (v3 and JSON routes).
    no_sync: Option<bool>,
}

/// Which write API a request came through; they differ in the options they take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `/write` and `/api/v2/write`: always accept partial, always sync.
    Influx,
    /// `/api/v3/write_lp` and `/api/v1/write/json`.
    Gridlake,
}

/// What the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    LineProtocol,
    Json,
}

/// The effective options of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteOptions {
    precision: Precision,
    accept_partial: bool,
    sync: bool,
}

impl WriteParams {
    fn options(&self, api: Api) -> Result<WriteOptions, ApiError> {
        let precision = match self.precision.as_deref().map(str::trim) {
            None | Some("") => Precision::default(),
            Some(p) => p.parse::<Precision>()?,
        };
        Ok(match api {
            Api::Influx => WriteOptions {
                precision,
                accept_partial: true,
                sync: true,
            },
            Api::Gridlake => WriteOptions {
                precision,
                accept_partial: self.accept_partial.unwrap_or(true),
                sync: !self.no_sync.unwrap_or(false),
            },
        })
    }
}

/// Writes InfluxDB line protocol (v1 API). The token may also come as the password of
/// Basic auth or the `p` parameter, as InfluxDB v1 clients send it.
#[utoipa::path(
    post,
    path = "/write",
    tag = "write",
    security(("bearer" = []), ("token" = [])),
    params(
        ("db" = Option<String>, Query, description = "Accepted and ignored: there is one database"),
        ("precision" = Option<String>, Query, description = "Timestamp unit: ns (default), us, ms, s; also n, u"),
        ("u" = Option<String>, Query, description = "Ignored user name"),
        ("p" = Option<String>, Query, description = "The API token, for clients that cannot send a header"),
    ),
    request_body(content = String, content_type = "text/plain", description = "Line protocol, optionally gzip-compressed (Content-Encoding: gzip)"),
    responses(
        (status = 204, description = "Every line is durable"),
        (status = 400, description = "Some lines were invalid (listed by line number); the others were stored"),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "The credentials may not write"),
        (status = 413, description = "Body larger than http.max_body_size"),
        (status = 503, description = "Busy (Retry-After) or shutting down"),
    )
)]
pub(crate) async fn write_v1(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    write(
        &state,
        &principal,
        Api::Influx,
        BodyFormat::LineProtocol,
        params,
        &headers,
        body,
    )
    .await
}

/// Writes InfluxDB line protocol (v2 API, `Authorization: Token <token>`).
#[utoipa::path(
    post,
    path = "/api/v2/write",
    tag = "write",
    security(("bearer" = []), ("token" = [])),
    params(
        ("bucket" = Option<String>, Query, description = "Accepted and ignored"),
        ("org" = Option<String>, Query, description = "Accepted and ignored"),
        ("precision" = Option<String>, Query, description = "Timestamp unit: ns (default), us, ms, s"),
    ),
    request_body(content = String, content_type = "text/plain", description = "Line protocol, optionally gzip-compressed"),
    responses(
        (status = 204, description = "Every line is durable"),
        (status = 400, description = "Some lines were invalid (listed by line number); the others were stored"),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "The credentials may not write"),
        (status = 413, description = "Body larger than http.max_body_size"),
        (status = 503, description = "Busy (Retry-After) or shutting down"),
    )
)]
pub(crate) async fn write_v2(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    write(
        &state,
        &principal,
        Api::Influx,
        BodyFormat::LineProtocol,
        params,
        &headers,
        body,
    )
    .await
}

/// Writes line protocol (InfluxDB v3 API), with all-or-nothing and no-sync options.
#[utoipa::path(
    post,
    path = "/api/v3/write_lp",
    tag = "write",
    security(("bearer" = []), ("token" = [])),
    params(
        ("db" = Option<String>, Query, description = "Accepted and ignored"),
        ("precision" = Option<String>, Query, description = "Timestamp unit: ns (default), us, ms, s"),
        ("accept_partial" = Option<bool>, Query, description = "false: store nothing if any line is invalid"),
        ("no_sync" = Option<bool>, Query, description = "true: answer after the WAL write, before fsync"),
    ),
    request_body(content = String, content_type = "text/plain", description = "Line protocol, optionally gzip-compressed"),
    responses(
        (status = 204, description = "Every line is durable"),
        (status = 400, description = "Some lines were invalid (listed by line number)"),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "The credentials may not write"),
        (status = 413, description = "Body larger than http.max_body_size"),
        (status = 503, description = "Busy (Retry-After) or shutting down"),
    )
)]
pub(crate) async fn write_lp(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    write(
        &state,
        &principal,
        Api::Gridlake,
        BodyFormat::LineProtocol,
        params,
        &headers,
        body,
    )
    .await
}

/// Writes readings as JSON: `[{"table": .., "time": .., "tags": {..}, "fields": {..}}]`.
#[utoipa::path(
    post,
    path = "/api/v1/write/json",
    tag = "write",
    security(("bearer" = []), ("token" = [])),
    params(
        ("precision" = Option<String>, Query, description = "Unit of numeric times: ns (default), us, ms, s"),
        ("accept_partial" = Option<bool>, Query, description = "false: store nothing if any reading is invalid"),
        ("no_sync" = Option<bool>, Query, description = "true: answer after the WAL write, before fsync"),
    ),
    request_body(content = serde_json::Value, content_type = "application/json", description = "An array of readings"),
    responses(
        (status = 204, description = "Every reading is durable"),
        (status = 400, description = "Some readings were invalid (listed by array position)"),
        (status = 401, description = "No valid credentials"),
        (status = 403, description = "The credentials may not write"),
        (status = 413, description = "Body larger than http.max_body_size"),
        (status = 503, description = "Busy (Retry-After) or shutting down"),
    )
)]
pub(crate) async fn write_json(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    write(
        &state,
        &principal,
        Api::Gridlake,
        BodyFormat::Json,
        params,
        &headers,
        body,
    )
    .await
}

async fn write(
    state: &AppState,
    principal: &Principal,
    api: Api,
    format: BodyFormat,
    params: Result<Query<WriteParams>, QueryRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let options = params?.options(api)?;
    let body = body.map_err(|r| body_rejection(r, state.max_body_size()))?;
    let encoding = match headers.get(header::CONTENT_ENCODING) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::UnsupportedMediaType(
                        "Content-Encoding is not ASCII; expected gzip or identity".to_owned(),
                    )
                })?
                .to_owned(),
        ),
    };
    let limit = state.max_body_size();
    let store = state.store().clone();
    let devices = state.devices().clone();
    // A write token writes only for the devices of its site.
    let site = principal.write_site();
    // Decompressing, parsing and validating a large body is CPU work measured in
    // milliseconds: keep it off the async workers that serve other connections.
    let (batch, rejected) = tokio::task::spawn_blocking(move || {
        let body = ingest::decode_body(&body, encoding.as_deref(), limit)?;
        let (mut lines, mut rejected) = parse(format, &body, options.precision)?;
        // The canonical tables' column types and provenance (quality, source).
        lines.retain_mut(|line| match ingest::apply_canonical(line, HTTP_SOURCE) {
            Ok(()) => true,
            Err(reason) => {
                rejected.push(LineError::new(line.line, reason));
                false
            }
        });
        // The registry: unknown devices refused (in `reject` mode), a site-bound token
        // confined to its site's devices. Nothing is registered or noted yet.
        devices.check(&mut lines, &mut rejected, site);
        let (batch, invalid) = store.validate(lines);
        rejected.extend(invalid);
        // Parse and validation errors arrive in two runs; the client reads one list.
        rejected.sort_by_key(|e| e.line);
        let batch = if rejected.is_empty() || options.accept_partial {
            // Only the rows stored register their unknown devices and count as signs
            // of life. (Should the store then refuse the batch, busy or shutting down,
            // the client is told to retry it.)
            devices.note_stored(&batch, site);
            // The WAL record and the Arrow columns are built here, on this request's
            // thread, so the single WAL writer only writes and fsyncs.
            store.prepare(batch)?
        } else {
            PreparedWrite::default()
        };
        Ok::<(PreparedWrite, Vec<LineError>), ApiError>((batch, rejected))
    })
    .await??;

    if !rejected.is_empty() {
        state.count_rejected_lines(rejected.len());
        if !options.accept_partial {
            return Err(ApiError::Rejected {
                rejected,
                accepted: 0,
                all_or_nothing: true,
            });
        }
    }
    let accepted = batch.row_count();
    if !batch.is_empty() {
        state
            .store()
            .submit_prepared(batch, options.sync)?
            .wait()
            .await?;
    }
    if rejected.is_empty() {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Rejected {
            rejected,
            accepted,
            all_or_nothing: false,
        })
    }
}

fn parse(
    format: BodyFormat,
    body: &[u8],
    precision: Precision,
) -> Result<(Vec<ParsedLine>, Vec<LineError>), ApiError> {
    let now = now_ns();
    Ok(match format {
        BodyFormat::LineProtocol => ingest::parse_line_protocol(body, precision, now),
        BodyFormat::Json => ingest::parse_json(body, precision, now)?,
    })
}

/// The time given to lines without a timestamp: the server's clock, in UTC nanoseconds.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use bytesize::ByteSize;
    use crm::{DeviceKind, NewDevice, Role, TokenScope};

    use super::*;
    use crate::testing::{Answer, TestApp};

    async fn post(app: &TestApp, uri: &str, token: Option<&str>, body: &str) -> Answer {
        let mut request = Request::post(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        app.send(request.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rows_that_are_not_stored_register_no_device_and_note_no_time() {
        let app = TestApp::open(ByteSize::mib(1)).await;
        let registry = app.state.devices();
        let known = app
            .crm
            .devices()
            .create(NewDevice::new(DeviceKind::Meter, "known"))
            .await
            .unwrap();
        registry.stored(&known);
        let t = 1_700_000_000;

        // All or nothing, and one line is bad: nothing is stored, so nothing counts.
        let answer = post(
            &app,
            "/api/v3/write_lp?accept_partial=false&precision=s",
            None,
            &format!(
                "meter,device_id=new-1 power_w=1 {t}\nmeter,device_id=known power_w=2 {t}\n\
                 not line protocol\n"
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
        assert_eq!(registry.site_of("new-1"), None, "not registered");
        assert!(registry.queued().is_empty());
        assert_eq!(registry.noted_seen("known"), None, "not heard from");

        // A row the store refuses (text where the column is a number) registers
        // nothing; the row stored beside it does.
        let answer = post(
            &app,
            "/api/v3/write_lp?precision=s",
            None,
            &format!("plc,device_id=plc-1 x=1 {t}\n"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
        let answer = post(
            &app,
            "/api/v3/write_lp?precision=s",
            None,
            &format!("plc,device_id=plc-2 x=\"one\" {t}\nmeter,device_id=known power_w=3 {t}\n"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
        assert_eq!(answer.json()["rejected"][0]["line"], 1, "{}", answer.text());
        assert_eq!(registry.site_of("plc-2"), None, "not registered");
        assert_eq!(
            registry.site_of("plc-1"),
            Some(None),
            "registered unassigned"
        );
        assert_eq!(registry.queued(), [("plc-1".to_owned(), None)]);
        assert_eq!(registry.noted_seen("known"), Some(t * 1000));
        app.finish().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gateway_token_writes_for_its_sites_devices_and_registers_new_ones_there() {
        let app = TestApp::new().await;
        let (owner, _) = app.user(Role::Customer, "owner@example.com").await;
        let (_, home) = app.home(&owner, "ACC-1").await;
        let (_, other) = app.home(&owner, "ACC-2").await;
        for (device_id, site) in [
            ("mine", Some(home.id)),
            ("theirs", Some(other.id)),
            ("loose", None),
        ] {
            let mut new = NewDevice::new(DeviceKind::Meter, device_id);
            new.site_id = site;
            let device = app.crm.devices().create(new).await.unwrap();
            app.state.devices().stored(&device);
        }
        let (_, token) = app.token(TokenScope::Write, Some(home.id)).await;
        let t = 1_700_000_000;
        let answer = post(
            &app,
            "/api/v3/write_lp?precision=s",
            Some(&token),
            &format!(
                "meter,device_id=mine power_w=1 {t}\nmeter,device_id=theirs power_w=2 {t}\n\
                 meter,device_id=loose power_w=3 {t}\nmeter,device_id=new power_w=4 {t}\n"
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
        let body = answer.json();
        let rejected = body["rejected"].as_array().unwrap();
        let lines: Vec<_> = rejected
            .iter()
            .map(|r| r["line"].as_i64().unwrap())
            .collect();
        assert_eq!(lines, [2, 3], "{body}");
        for (r, device_id) in rejected.iter().zip(["theirs", "loose"]) {
            assert_eq!(
                r["reason"],
                format!(
                    "device \"{device_id}\" is not a device of site {0}; a token bound to site \
                     {0} writes only for its site's devices",
                    home.id
                ),
                "{body}"
            );
        }
        let registry = app.state.devices();
        assert_eq!(registry.site_of("new"), Some(Some(home.id)));
        assert_eq!(registry.queued(), [("new".to_owned(), Some(home.id))]);
        app.finish().await;
    }

    fn params(query: &str) -> WriteParams {
        let uri: axum::http::Uri = format!("/write?{query}").parse().expect("uri");
        Query::<WriteParams>::try_from_uri(&uri)
            .expect("query parses")
            .0
    }

    #[test]
    fn defaults_are_nanoseconds_partial_and_sync() {
        let options = params("db=x").options(Api::Gridlake).unwrap();
        assert_eq!(
            options,
            WriteOptions {
                precision: Precision::Nanoseconds,
                accept_partial: true,
                sync: true
            }
        );
    }

    #[test]
    fn v1_precisions_are_understood() {
        for (given, expected) in [
            ("n", Precision::Nanoseconds),
            ("ns", Precision::Nanoseconds),
            ("u", Precision::Microseconds),
            ("us", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
            ("", Precision::Nanoseconds),
        ] {
            let options = params(&format!("precision={given}"))
                .options(Api::Influx)
                .unwrap();
            assert_eq!(options.precision, expected, "precision={given}");
        }
    }

    #[test]
    fn unknown_precision_is_a_client_error_naming_it() {
        let err = params("precision=h").options(Api::Influx).unwrap_err();
        assert!(
            matches!(err, ApiError::BadRequest(ref m) if m.contains("\"h\"")),
            "{err}"
        );
    }

    #[test]
    fn gridlake_routes_take_accept_partial_and_no_sync() {
        let options = params("accept_partial=false&no_sync=true")
            .options(Api::Gridlake)
            .unwrap();
        assert!(!options.accept_partial);
        assert!(!options.sync);
    }

    #[test]
    fn influx_routes_always_accept_partial_and_sync() {
        let options = params("accept_partial=false&no_sync=true")
            .options(Api::Influx)
            .unwrap();
        assert!(options.accept_partial);
        assert!(options.sync);
    }

    #[test]
    fn bad_boolean_is_refused() {
        let uri: axum::http::Uri = "/api/v3/write_lp?accept_partial=maybe".parse().unwrap();
        let rejection = Query::<WriteParams>::try_from_uri(&uri).unwrap_err();
        let err = ApiError::from(rejection);
        assert!(
            matches!(err, ApiError::BadRequest(ref m) if m.contains("accept_partial")),
            "{err}"
        );
    }
}

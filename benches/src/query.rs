//! `gridlake-load query`: latency of the query shapes dashboards and analysts run, over
//! data `write` put in (`bench_meter` by default).
//!
//! Each shape runs `--warmup` times untimed and `--iterations` times timed, one request
//! at a time; a request's time runs until its whole answer is read. SQL shapes go
//! through `POST /api/v1/sql` (`{"sql": .., "format": "jsonl"}`), the others are the
//! portal's endpoints, each next to the SQL over raw rows that gives the same answer:
//!
//! - `latest`: the newest reading of every device (a dashboard's fleet table) from raw
//!   rows, over the last `--latest-window` of the data (make it cover all the data to
//!   get `api_latest`'s answer);
//! - `api_latest`: the same from the last-value cache, `GET /api/v1/latest?table=`;
//! - `series`: one device's mean power in 15-minute buckets over `--series-window` of
//!   `--series-table` from raw rows (a dashboard's chart), a different device each
//!   iteration;
//! - `api_series`: the same buckets from `GET /api/v1/series` (the 15-minute rollup);
//! - `api_series_raw`: the same request with `source=raw` (the chart API computing it
//!   from raw rows);
//! - `api_series_auto`: `step=auto` over the same window (at most about 1,500 points,
//!   from the coarsest rollup that fits);
//! - `sites`: readings, mean power and imported energy per site over everything (an
//!   analyst's report: a full scan with a group-by).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::blocking::Client;
use serde_json::Value;

use crate::cli::{Command, QueryArgs, duration_word};
use crate::report::{self, Latency, Summary};

/// Devices the `series` shape cycles through.
const SERIES_DEVICES: usize = 100;

/// One request to the server: rows returned and the time to the last byte.
#[derive(Debug)]
struct Answer {
    rows: u64,
    took: Duration,
}

#[derive(Debug)]
struct Sql<'a> {
    client: &'a Client,
    /// The server's base URL.
    base: String,
    /// `POST` SQL here.
    url: String,
}

impl Sql<'_> {
    /// Runs `sql` and returns its rows as JSON objects.
    fn rows(&self, sql: &str) -> anyhow::Result<Vec<Value>> {
        let text = self.text(sql)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }

    /// Runs `sql`, timing it; counts the rows without parsing them.
    fn timed(&self, sql: &str) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let text = self.text(sql)?;
        let took = started.elapsed();
        let rows = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        Ok(Answer { rows, took })
    }

    /// GETs `path_and_query` from the server, timing it; counts the points (`t`) or rows
    /// (`rows`) of the JSON answer.
    fn timed_get(&self, path_and_query: &str) -> anyhow::Result<Answer> {
        let url = format!("{}{path_and_query}", self.base);
        let started = Instant::now();
        let response = self
            .client
            .get(&url)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let text = response.text()?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("GET {url}\n  answered {status}: {text}");
        }
        let answer: Value =
            serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))?;
        let rows = ["t", "rows"]
            .iter()
            .find_map(|key| answer[key].as_array())
            .map_or(0, Vec::len) as u64;
        Ok(Answer { rows, took })
    }

    fn text(&self, sql: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({"sql": sql, "format": "jsonl"}).to_string();
        let response = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .with_context(|| format!("POST {}", self.url))?;
        let status = response.status();
        let text = response.text()?;
        if !status.is_success() {
            bail!("{sql}\n  answered {status}: {text}");
        }
        Ok(text)
    }
}

/// A query shape: its name and its request for iteration `i`.
struct Shape<'a> {
    name: &'static str,
    what: &'static str,
    request: Box<dyn Fn(usize) -> Request + 'a>,
}

/// What a shape sends.
#[derive(Debug)]
enum Request {
    /// SQL through `POST /api/v1/sql`.
    Sql(String),
    /// `GET` of this path and query.
    Get(String),
}

impl Request {
    fn run(&self, sql: &Sql<'_>) -> anyhow::Result<Answer> {
        match self {
            Request::Sql(text) => sql.timed(text),
            Request::Get(path) => sql.timed_get(path),
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Sql(text) => write!(f, "{text}"),
            Request::Get(path) => write!(f, "GET {path}"),
        }
    }
}

/// `text` as a query-string value: what the shapes put there (table and device
/// names, RFC 3339 times) needs only these escapes.
fn query_value(text: &str) -> String {
    text.replace('%', "%25")
        .replace('+', "%2B")
        .replace('&', "%26")
        .replace(' ', "%20")
}

/// Runs `query` with these flags.
pub(crate) fn run(args: QueryArgs) -> anyhow::Result<()> {
    report::print_header(&Command::Query(args.clone()).command_line());
    if !args
        .table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("--table {:?}: use letters, digits and '_'", args.table);
    }
    let client = args
        .auth
        .client()?
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(1)
        .build()?;
    let base = args.url.trim_end_matches('/');
    let sql = Sql {
        client: &client,
        base: base.to_owned(),
        url: format!("{base}/api/v1/sql"),
    };
    let table = &args.table;
    let series_table = args.series_table();
    if !series_table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("--series-table {series_table:?}: use letters, digits and '_'");
    }

    // The data's extent, untimed.
    let extent = sql.rows(&format!(
        "SELECT count(*) AS n, min(time) AS first, max(time) AS last FROM {table}"
    ))?;
    let (n, first, last) = match extent.first() {
        Some(row) => (
            row["n"].as_u64().unwrap_or(0),
            row["first"].as_str().unwrap_or_default().to_owned(),
            row["last"].as_str().unwrap_or_default().to_owned(),
        ),
        None => (0, String::new(), String::new()),
    };
    if n == 0 {
        bail!("{table} is empty; run `gridlake-load write` against {base} first");
    }
    let devices: Vec<String> = sql
        .rows(&format!(
            "SELECT DISTINCT device_id FROM {series_table} ORDER BY device_id LIMIT {SERIES_DEVICES}"
        ))?
        .iter()
        .filter_map(|r| r["device_id"].as_str().map(str::to_owned))
        .collect();
    let series_first = sql
        .rows(&format!("SELECT min(time) AS first FROM {series_table}"))?
        .first()
        .and_then(|row| row["first"].as_str().map(str::to_owned))
        .context("--series-table is empty")?;
    let series_from = DateTime::parse_from_rfc3339(&series_first)
        .with_context(|| format!("the first time {series_first:?} is not RFC 3339"))?
        .with_timezone(&Utc);
    let series_to = series_from
        + chrono::Duration::from_std(args.series_window).context("--series-window is too long")?;
    let (series_from, series_to) = (
        series_from.to_rfc3339_opts(SecondsFormat::Nanos, true),
        series_to.to_rfc3339_opts(SecondsFormat::Nanos, true),
    );
    println!(
        "data:        {n} rows in {table} from {first} to {last}; the chart shapes read {series_table} \
         from {series_from} to {series_to}, cycling over {} devices",
        devices.len()
    );
    let window_s = args.latest_window.as_secs_f64();
    let chart = |i: usize, extra: &str| {
        Request::Get(format!(
            "/api/v1/series?table={series_table}&column=power_w&device_id={}&from={}&to={}&agg=avg&tz=UTC{extra}",
            query_value(&devices[i % devices.len()]),
            query_value(&series_from),
            query_value(&series_to),
        ))
    };
    let shapes = [
        Shape {
            name: "latest",
            what: "newest reading per device, raw rows",
            request: Box::new(|_| {
                Request::Sql(format!(
                    "SELECT device_id, max(time) AS time, last_value(power_w ORDER BY time) AS power_w, \
                     last_value(energy_import_wh ORDER BY time) AS energy_import_wh FROM {table} \
                     WHERE time >= TIMESTAMP '{last}' - INTERVAL '{window_s} seconds' \
                     GROUP BY device_id"
                ))
            }),
        },
        Shape {
            name: "api_latest",
            what: "newest reading per device, last-value cache",
            request: Box::new(|_| Request::Get(format!("/api/v1/latest?table={table}"))),
        },
        Shape {
            name: "series",
            what: "one device, 15-minute mean power, raw rows",
            request: Box::new(|i| {
                Request::Sql(format!(
                    "SELECT date_bin(INTERVAL '15 minutes', time) AS bucket, avg(power_w) AS power_w \
                     FROM {series_table} WHERE device_id = '{}' AND time >= TIMESTAMP '{series_from}' \
                     AND time < TIMESTAMP '{series_to}' GROUP BY bucket ORDER BY bucket",
                    devices[i % devices.len()]
                ))
            }),
        },
        Shape {
            name: "api_series",
            what: "the same from /api/v1/series, 15-minute rollup",
            request: Box::new(|i| chart(i, "&step=15m")),
        },
        Shape {
            name: "api_series_raw",
            what: "the same from /api/v1/series with source=raw",
            request: Box::new(|i| chart(i, "&step=15m&source=raw")),
        },
        Shape {
            name: "api_series_auto",
            what: "/api/v1/series with step=auto (coarsest fitting rollup)",
            request: Box::new(|i| chart(i, "&step=auto")),
        },
        Shape {
            name: "sites",
            what: "per site: readings, mean power, imported energy",
            request: Box::new(|_| {
                Request::Sql(format!(
                    "SELECT site_id, count(*) AS readings, avg(power_w) AS avg_power_w, \
                     max(energy_import_wh) - min(energy_import_wh) AS imported_wh FROM {table} \
                     GROUP BY site_id ORDER BY site_id"
                ))
            }),
        },
    ];
    println!(
        "queries:     {} timed + {} warm-up runs of each shape, one at a time",
        args.iterations, args.warmup
    );
    let mut summary = Summary::new("query");
    summary.add("table", table).add("rows_in_table", n);
    for shape in &shapes {
        for i in 0..args.warmup {
            (shape.request)(i as usize).run(&sql)?;
        }
        let mut latencies = Vec::new();
        let (mut rows_min, mut rows_max) = (u64::MAX, 0);
        for i in 0..args.iterations {
            let answer = (shape.request)(i as usize).run(&sql)?;
            latencies.push(answer.took);
            rows_min = rows_min.min(answer.rows);
            rows_max = rows_max.max(answer.rows);
        }
        let latency = Latency::of(&mut latencies);
        let rows = if rows_min == rows_max {
            rows_min.to_string()
        } else {
            format!("{rows_min}-{rows_max}")
        };
        println!(
            "{:<12} {} ({rows} rows): {}",
            format!("{}:", shape.name),
            latency.human(),
            shape.what
        );
        println!("             {}", (shape.request)(0));
        summary
            .latency(&format!("{}_", shape.name), &latency)
            .add(&format!("{}_rows", shape.name), rows);
    }
    summary
        .add("latest_window", duration_word(args.latest_window))
        .add("series_table", series_table)
        .add("series_window", duration_word(args.series_window));
    summary.print();
    Ok(())
}

//! `gridlake-load query`: latency of the query shapes dashboards and analysts run, over
//! data `write` put in (`bench_meter` by default).
//!
//! Three shapes, each run `--warmup` times untimed and `--iterations` times timed, one
//! request at a time through `POST /api/v1/sql` (`{"sql": .., "format": "jsonl"}`); a
//! request's time runs until its whole answer is read:
//!
//! - `latest`: the newest reading of every device (a dashboard's fleet table), over the
//!   last `--latest-window` of the data;
//! - `series`: one device's power and energy in 15-minute buckets over the whole range
//!   (a dashboard's chart), a different device each iteration;
//! - `sites`: readings, mean power and imported energy per site over everything (an
//!   analyst's report: a full scan with a group-by).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::blocking::Client;
use serde_json::Value;

use crate::cli::{Command, QueryArgs, duration_word};
use crate::report::{self, Latency, Summary};

/// Devices the `series` shape cycles through.
const SERIES_DEVICES: usize = 100;

/// One query against the server: its SQL, rows returned and the time to the last byte.
#[derive(Debug)]
struct Answer {
    rows: u64,
    took: Duration,
}

#[derive(Debug)]
struct Sql<'a> {
    client: &'a Client,
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

/// A query shape: its name and its SQL for iteration `i`.
struct Shape<'a> {
    name: &'static str,
    what: &'static str,
    sql: Box<dyn Fn(usize) -> String + 'a>,
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
        url: format!("{base}/api/v1/sql"),
    };
    let table = &args.table;

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
            "SELECT DISTINCT device_id FROM {table} ORDER BY device_id LIMIT {SERIES_DEVICES}"
        ))?
        .iter()
        .filter_map(|r| r["device_id"].as_str().map(str::to_owned))
        .collect();
    println!(
        "data:        {n} rows in {table} from {first} to {last}; the series shape cycles over {} devices",
        devices.len()
    );
    let window_s = args.latest_window.as_secs_f64();
    let shapes = [
        Shape {
            name: "latest",
            what: "newest reading per device",
            sql: Box::new(|_| {
                format!(
                    "SELECT device_id, max(time) AS time, last_value(power_w ORDER BY time) AS power_w, \
                     last_value(energy_import_wh ORDER BY time) AS energy_import_wh FROM {table} \
                     WHERE time >= TIMESTAMP '{last}' - INTERVAL '{window_s} seconds' \
                     GROUP BY device_id"
                )
            }),
        },
        Shape {
            name: "series",
            what: "one device, 15-minute buckets, whole range",
            sql: Box::new(|i| {
                format!(
                    "SELECT date_bin(INTERVAL '15 minutes', time) AS bucket, avg(power_w) AS power_w, \
                     max(power_w) AS max_power_w, max(energy_import_wh) AS energy_import_wh FROM {table} \
                     WHERE device_id = '{}' AND time >= TIMESTAMP '{first}' AND time <= TIMESTAMP '{last}' \
                     GROUP BY bucket ORDER BY bucket",
                    devices[i % devices.len()]
                )
            }),
        },
        Shape {
            name: "sites",
            what: "per site: readings, mean power, imported energy",
            sql: Box::new(|_| {
                format!(
                    "SELECT site_id, count(*) AS readings, avg(power_w) AS avg_power_w, \
                     max(energy_import_wh) - min(energy_import_wh) AS imported_wh FROM {table} \
                     GROUP BY site_id ORDER BY site_id"
                )
            }),
        },
    ];
    println!(
        "queries:     {} timed + {} warm-up runs of each shape, one at a time, POST {}",
        args.iterations, args.warmup, sql.url
    );
    let mut summary = Summary::new("query");
    summary.add("table", table).add("rows_in_table", n);
    for shape in &shapes {
        for i in 0..args.warmup {
            sql.timed(&(shape.sql)(i as usize))?;
        }
        let mut latencies = Vec::new();
        let (mut rows_min, mut rows_max) = (u64::MAX, 0);
        for i in 0..args.iterations {
            let answer = sql.timed(&(shape.sql)(i as usize))?;
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
        println!("             {}", (shape.sql)(0));
        summary
            .latency(&format!("{}_", shape.name), &latency)
            .add(&format!("{}_rows", shape.name), rows);
    }
    summary.add("latest_window", duration_word(args.latest_window));
    summary.print();
    Ok(())
}

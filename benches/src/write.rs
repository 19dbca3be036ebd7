//! `gridlake-load write`: line protocol over HTTP for a fixed time.
//!
//! ```text
//! generator threads (part g of G of the fleet) ─► Body (rendered, gzipped) ─► bounded channel
//!     ▲                                                                         │
//!     └──────────── recycled buffers ◄── sender threads (one HTTP connection each) ◄┘
//! ```
//!
//! Generators render bodies ahead of the senders, so a sender waiting for an ack (the
//! server's fsync) never waits for the next body too; buffers go back to the generators
//! so steady state allocates nothing. A row counts once its request got a 2xx, that is
//! once the server says it is durable (gridlake, InfluxDB) or accepted
//! (VictoriaMetrics). A 503 or 429 is retried with the same body after a pause.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use crossbeam::channel::{self, Receiver, Sender};
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use reqwest::blocking::Client;

use crate::cli::{Command, Target, WriteArgs, duration_word};
use crate::counters::{self, Count};
use crate::fleet::{FleetSpec, Generator, Kind};
use crate::process::{self, Usage, Watch};
use crate::report::{self, Latency, Summary};

/// Pause before resending a body the server refused as busy.
const BUSY_PAUSE: Duration = Duration::from_millis(50);
/// How long to wait for the server's health check to pass.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A data directory this small before the run holds no earlier rows.
const SMALL_DIR: u64 = 1 << 20;
/// Bytes per rendered row to reserve up front (a meter row is about 150).
const ROW_CAPACITY: usize = 192;

/// One request body, ready to send.
#[derive(Debug)]
struct Body {
    data: Bytes,
    rows: u64,
    values: u64,
    /// Line-protocol bytes before compression.
    raw_len: u64,
}

/// What one sender measured.
#[derive(Debug, Default)]
struct SenderReport {
    rows: u64,
    values: u64,
    requests: u64,
    busy: u64,
    raw_bytes: u64,
    sent_bytes: u64,
    latencies: Vec<Duration>,
}

/// What the whole pipeline measured.
#[derive(Debug)]
struct Outcome {
    elapsed: Duration,
    senders: SenderReport,
    /// Newest virtual time rendered, ns.
    last_time_ns: i64,
}

/// Runs `write` with these flags.
pub(crate) fn run(mut args: WriteArgs) -> anyhow::Result<()> {
    if args.no_sync && (args.target != Target::Gridlake || args.write_path.is_some()) {
        bail!(
            "--no-sync sets no_sync=true on gridlake's /api/v3/write_lp; \
             with --write-path, put it in the path"
        );
    }
    if !args
        .db
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("--db {:?}: use letters, digits, '_' and '-'", args.db);
    }
    args.fleet.resolve_start(Utc::now(), args.seconds);
    report::print_header(&Command::Write(args.clone()).command_line());
    let spec = args.fleet.spec(args.kinds, &args.table_prefix);
    print_fleet(&spec);

    if args.dry_run {
        return dry_run(&args, &spec);
    }

    let base = args.url.trim_end_matches('/').to_owned();
    // Health, setup and the server's counters; the token rides along (gridlake's
    // /metrics and /health are public, and other targets ignore it).
    let probe = args
        .auth
        .client()?
        .timeout(Duration::from_secs(10))
        .build()?;
    let server = wait_ready(&probe, args.target, &base)?;
    println!("server:      {} at {base} ({server})", args.target.name());
    setup(&probe, args.target, &base, &args.db)?;
    let url = format!("{base}{}", write_path(&args));
    println!(
        "write:       POST {url}, {} connections, {} rows/request, gzip {}, {} generator threads",
        args.connections,
        args.batch,
        if args.gzip { "level 1" } else { "off" },
        args.generators
    );

    // Bytes per value assume the directory holds this run's data only.
    let size_before = match &args.data_dir {
        Some(dir) => {
            process::dir_size(dir).with_context(|| format!("size of {}", dir.display()))?
        }
        None => 0,
    };
    let count_before = counters::read(&probe, args.target, &base);
    let watch = args.server_pid.map(Watch::start).transpose()?;
    let client_cpu = process::cpu_seconds(std::process::id() as i32);
    let outcome = pump(&args, &spec, Some(&url))?;
    let usage = watch.map(Watch::finish).transpose()?;
    let client_cpu = client_cpu
        .zip(process::cpu_seconds(std::process::id() as i32))
        .map(|(before, after)| after - before);

    let mut summary = Summary::new("write");
    summary.add("target", args.target.name());
    print_results(&outcome, client_cpu, &mut summary);
    print_server(usage.as_ref(), &mut summary);
    let count_after = counters::read(&probe, args.target, &base);
    print_count(
        args.target,
        &outcome,
        count_before.zip(count_after),
        &mut summary,
    );
    print_clock(&spec, outcome.last_time_ns);

    let values = outcome.senders.values;
    let stopped = if args.stop_server {
        let pid = args
            .server_pid
            .context("--stop-server needs --server-pid")?;
        let took = process::stop(pid, args.stop_timeout)?;
        println!(
            "stop:        SIGTERM to {pid}, exited after {:.2} s",
            took.as_secs_f64()
        );
        Some(took)
    } else {
        None
    };
    summary.add(
        "stop_s",
        stopped.map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
    );
    print_disk(
        args.data_dir.as_deref(),
        size_before,
        args.target,
        stopped.is_some(),
        values,
        &mut summary,
    )?;
    summary.print();
    Ok(())
}

fn print_fleet(spec: &FleetSpec) {
    let counts: Vec<String> = Kind::ALL
        .iter()
        .map(|&kind| {
            let n = (0..spec.devices)
                .filter(|&i| spec.mix.kind_of(i) == kind)
                .count();
            (kind, n)
        })
        .filter(|&(_, n)| n > 0)
        .map(|(kind, n)| format!("{n} {} ({} fields)", kind.plural(), kind.field_count()))
        .collect();
    println!(
        "fleet:       {} devices: {}; tables {}<kind>, tags device_id and site_id ({} sites)",
        spec.devices,
        counts.join(", "),
        spec.table_prefix,
        spec.devices.div_ceil(spec.devices_per_site)
    );
    println!(
        "clock:       every device reports every {}, starting {}",
        duration_word(Duration::from_millis(spec.interval_ms as u64)),
        time_text(spec.start_ms * 1_000_000)
    );
}

fn time_text(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The path and query rows are posted to.
fn write_path(args: &WriteArgs) -> String {
    if let Some(path) = &args.write_path {
        return if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
    }
    match args.target {
        Target::Gridlake => format!(
            "/api/v3/write_lp?db={}&precision=ns&no_sync={}",
            args.db, args.no_sync
        ),
        Target::Influxdb | Target::Victoriametrics => {
            format!("/write?db={}&precision=ns", args.db)
        }
    }
}

/// Waits until the target's health check passes; returns what it says about itself.
fn wait_ready(client: &Client, target: Target, base: &str) -> anyhow::Result<String> {
    let path = match target {
        Target::Gridlake | Target::Victoriametrics => "/health",
        Target::Influxdb => "/ping",
    };
    let url = format!("{base}{path}");
    let started = Instant::now();
    let response = loop {
        match client.get(&url).send() {
            Ok(r) if r.status().is_success() => break r,
            Ok(r) if started.elapsed() > READY_TIMEOUT => {
                bail!("{url} answers {} after {READY_TIMEOUT:?}", r.status())
            }
            Err(e) if started.elapsed() > READY_TIMEOUT => {
                return Err(e).with_context(|| format!("no server answering at {url}"));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    Ok(match target {
        Target::Influxdb => format!(
            "InfluxDB {}",
            response
                .headers()
                .get("X-Influxdb-Version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("version unknown")
        ),
        Target::Gridlake => format!("health: {}", response.text().unwrap_or_default().trim()),
        Target::Victoriametrics => client
            .get(format!("{base}/metrics"))
            .send()
            .and_then(|r| r.text())
            .ok()
            .and_then(|metrics| {
                metrics
                    .lines()
                    .find(|l| l.starts_with("vm_app_version{"))
                    .and_then(|l| l.split('"').nth(1))
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("VictoriaMetrics {v}"))
            })
            .unwrap_or_else(|| "VictoriaMetrics, version not reported".to_owned()),
    })
}

/// What a target needs before the first write: InfluxDB 1.x refuses writes to a
/// database that does not exist.
fn setup(client: &Client, target: Target, base: &str, db: &str) -> anyhow::Result<()> {
    if target == Target::Influxdb {
        let url = format!("{base}/query?q=CREATE%20DATABASE%20%22{db}%22");
        let response = client.post(&url).send().with_context(|| url.clone())?;
        if !response.status().is_success() {
            bail!(
                "CREATE DATABASE {db}: {} {}",
                response.status(),
                response.text().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Runs the generators only, discarding the bodies: the rate the client can render at.
fn dry_run(args: &WriteArgs, spec: &FleetSpec) -> anyhow::Result<()> {
    println!(
        "dry run:     generating {} rows/body{} with {} generator threads, sending nothing",
        args.batch,
        if args.gzip { ", gzip level 1" } else { "" },
        args.generators
    );
    let client_cpu = process::cpu_seconds(std::process::id() as i32);
    let outcome = pump(args, spec, None)?;
    let client_cpu = client_cpu
        .zip(process::cpu_seconds(std::process::id() as i32))
        .map(|(before, after)| after - before);
    let secs = outcome.elapsed.as_secs_f64();
    let s = &outcome.senders;
    println!("elapsed:     {secs:.2} s");
    println!(
        "generated:   {} rows = {:.0} rows/s, {:.0} values/s",
        s.rows,
        s.rows as f64 / secs,
        s.values as f64 / secs
    );
    println!(
        "bytes:       {:.1} MB/s of line protocol ({:.0} bytes/row){}",
        s.raw_bytes as f64 / secs / 1e6,
        s.raw_bytes as f64 / s.rows.max(1) as f64,
        if args.gzip {
            format!(
                ", {:.1} MB/s gzipped (ratio {:.1})",
                s.sent_bytes as f64 / secs / 1e6,
                s.raw_bytes as f64 / s.sent_bytes.max(1) as f64
            )
        } else {
            String::new()
        }
    );
    if let Some(cpu) = client_cpu {
        println!(
            "client CPU:  {cpu:.2} s = {:.2} cores",
            cpu / secs.max(1e-9)
        );
    }
    let mut summary = Summary::new("dry-run");
    summary
        .add("rows", s.rows)
        .float("elapsed_s", secs, 2)
        .float("rows_per_s", s.rows as f64 / secs, 0)
        .float("values_per_s", s.values as f64 / secs, 0)
        .float("raw_mb_per_s", s.raw_bytes as f64 / secs / 1e6, 1)
        .float("sent_mb_per_s", s.sent_bytes as f64 / secs / 1e6, 1)
        .add(
            "client_cpu_s",
            client_cpu.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
        );
    summary.print();
    Ok(())
}

/// Runs generators and senders until `--seconds` have passed; `url` `None` discards the
/// bodies instead of sending them.
fn pump(args: &WriteArgs, spec: &FleetSpec, url: Option<&str>) -> anyhow::Result<Outcome> {
    let senders = args.connections as usize;
    let generators = args.generators.min(spec.devices);
    // Every sender has a body waiting and every generator one in hand.
    let (body_tx, body_rx) = channel::bounded::<Body>(senders + generators as usize);
    let (recycle_tx, recycle_rx) = channel::bounded::<Vec<u8>>(2 * senders + generators as usize);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let (reports, last_times) = std::thread::scope(|scope| {
        let generator_handles: Vec<_> = (0..generators)
            .map(|part| {
                let (tx, recycle, stop) = (body_tx.clone(), recycle_rx.clone(), &stop);
                std::thread::Builder::new()
                    .name(format!("generator-{part}"))
                    .spawn_scoped(scope, move || {
                        generate(spec, part, generators, args, &tx, &recycle, stop)
                    })
            })
            .collect::<Result<_, _>>()?;
        let sender_handles: Vec<_> = (0..senders)
            .map(|n| {
                let (rx, recycle) = (body_rx.clone(), recycle_tx.clone());
                std::thread::Builder::new()
                    .name(format!("sender-{n}"))
                    .spawn_scoped(scope, move || send(n, url, args, &rx, &recycle, deadline))
            })
            .collect::<Result<_, _>>()?;
        // Only the threads hold channel ends now: when the senders are done, the
        // generators' next send fails and they stop.
        drop((body_tx, body_rx, recycle_tx, recycle_rx));
        let reports: Vec<anyhow::Result<SenderReport>> = sender_handles
            .into_iter()
            .map(|h: std::thread::ScopedJoinHandle<'_, _>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        let last_times: Vec<i64> = generator_handles
            .into_iter()
            .map(|h: std::thread::ScopedJoinHandle<'_, _>| {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
            .collect();
        anyhow::Ok((reports, last_times))
    })?;
    let elapsed = started.elapsed();
    let mut total = SenderReport::default();
    for report in reports {
        let report = report?;
        total.rows += report.rows;
        total.values += report.values;
        total.requests += report.requests;
        total.busy += report.busy;
        total.raw_bytes += report.raw_bytes;
        total.sent_bytes += report.sent_bytes;
        total.latencies.extend(report.latencies);
    }
    Ok(Outcome {
        elapsed,
        senders: total,
        last_time_ns: last_times.into_iter().max().unwrap_or(0),
    })
}

/// One generator thread: renders part `part` of the fleet into bodies until the senders
/// hang up; returns the newest virtual time it rendered.
fn generate(
    spec: &FleetSpec,
    part: u64,
    parts: u64,
    args: &WriteArgs,
    tx: &Sender<Body>,
    recycle: &Receiver<Vec<u8>>,
    stop: &AtomicBool,
) -> i64 {
    let mut generator = Generator::new(spec, part, parts);
    if generator.is_empty() {
        return 0;
    }
    let rows = args.batch as usize;
    let mut raw = Vec::with_capacity(rows * ROW_CAPACITY);
    while !stop.load(Ordering::Relaxed) {
        let mut buf = recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(rows * ROW_CAPACITY));
        buf.clear();
        let (values, raw_len) = if args.gzip {
            raw.clear();
            let values = generator.fill(&mut raw, rows);
            let mut encoder = GzEncoder::new(buf, Compression::new(1));
            // Writing to a Vec cannot fail.
            let _ = encoder.write_all(&raw);
            buf = encoder.finish().unwrap_or_default();
            (values, raw.len())
        } else {
            let values = generator.fill(&mut buf, rows);
            (values, buf.len())
        };
        let body = Body {
            data: Bytes::from(buf),
            rows: rows as u64,
            values,
            raw_len: raw_len as u64,
        };
        if tx.send(body).is_err() {
            break;
        }
    }
    generator.last_time_ns()
}

/// One sender thread with its own HTTP connection (`None`: a dry run, bodies are
/// counted and dropped).
fn send(
    n: usize,
    url: Option<&str>,
    args: &WriteArgs,
    rx: &Receiver<Body>,
    recycle: &Sender<Vec<u8>>,
    deadline: Instant,
) -> anyhow::Result<SenderReport> {
    // One client per sender with one idle connection: `--connections` means what it says.
    let gzip = args.gzip;
    let client = url
        .map(|_| -> anyhow::Result<Client> {
            Ok(args
                .auth
                .client()?
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(1)
                .build()?)
        })
        .transpose()?;
    let mut report = SenderReport::default();
    while Instant::now() < deadline {
        let Ok(body) = rx.recv() else { break };
        if let (Some(client), Some(url)) = (&client, url) {
            loop {
                let mut request = client
                    .post(url)
                    .header("Content-Type", "text/plain; charset=utf-8")
                    .body(body.data.clone());
                if gzip {
                    request = request.header("Content-Encoding", "gzip");
                }
                let sent = Instant::now();
                let response = request
                    .send()
                    .with_context(|| format!("connection {n}: POST {url}"))?;
                let latency = sent.elapsed();
                report.requests += 1;
                let status = response.status();
                if status.is_success() {
                    report.latencies.push(latency);
                    break;
                }
                if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    report.busy += 1;
                    std::thread::sleep(BUSY_PAUSE);
                    continue;
                }
                let mut text = response.text().unwrap_or_default();
                text.truncate(500);
                bail!("connection {n}: POST {url} answered {status}: {text}");
            }
        }
        report.rows += body.rows;
        report.values += body.values;
        report.raw_bytes += body.raw_len;
        report.sent_bytes += body.data.len() as u64;
        // Back to the generators, when the HTTP stack has let go of it.
        if let Ok(buf) = body.data.try_into_mut() {
            let _ = recycle.try_send(Vec::from(buf));
        }
    }
    Ok(report)
}

fn print_results(outcome: &Outcome, client_cpu: Option<f64>, summary: &mut Summary) {
    let s = &outcome.senders;
    let secs = outcome.elapsed.as_secs_f64();
    let mut latencies = s.latencies.clone();
    let latency = Latency::of(&mut latencies);
    println!("elapsed:     {secs:.2} s");
    println!(
        "requests:    {} acknowledged, {} answered 503/429 and were retried",
        latencies.len(),
        s.busy
    );
    println!(
        "rows:        {} acknowledged ({:.1} MB of line protocol, {:.1} MB sent)",
        s.rows,
        s.raw_bytes as f64 / 1e6,
        s.sent_bytes as f64 / 1e6
    );
    println!("rows/s:      {:.0}", s.rows as f64 / secs);
    println!(
        "values/s:    {:.0} ({:.1} fields per row)",
        s.values as f64 / secs,
        s.values as f64 / s.rows.max(1) as f64
    );
    println!("ack latency: {} (per request)", latency.human());
    if let Some(cpu) = client_cpu {
        println!(
            "client CPU:  {cpu:.2} s = {:.2} cores (this tool: rendering, gzip, HTTP)",
            cpu / secs.max(1e-9)
        );
    }
    summary
        .add("rows", s.rows)
        .add("values", s.values)
        .float("elapsed_s", secs, 2)
        .float("rows_per_s", s.rows as f64 / secs, 0)
        .float("values_per_s", s.values as f64 / secs, 0)
        .add("requests", latencies.len())
        .add("retries", s.busy)
        .latency("ack_", &latency)
        .add(
            "client_cpu_s",
            client_cpu.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
        );
}

fn print_server(usage: Option<&Usage>, summary: &mut Summary) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    match usage {
        Some(u) => {
            println!(
                "server CPU:  {:.2} s = {:.2} cores during the run (clock tick {})",
                u.cpu_s,
                u.cores,
                if u.ticks_known {
                    format!("{} Hz from sysconf", process::clock_ticks().0)
                } else {
                    "assumed 100 Hz".to_owned()
                }
            );
            println!(
                "server RSS:  max {:.0} MiB sampled every 100 ms during the run; VmHWM {} (peak since the process started)",
                mib(u.rss_max_kib),
                u.hwm_kib
                    .map_or_else(|| "-".to_owned(), |k| format!("{:.0} MiB", mib(k)))
            );
            summary
                .float("server_cpu_s", u.cpu_s, 2)
                .float("server_cores", u.cores, 2)
                .float("server_rss_max_mib", mib(u.rss_max_kib), 0)
                .add(
                    "server_hwm_mib",
                    u.hwm_kib
                        .map_or_else(|| "-".to_owned(), |k| format!("{:.0}", mib(k))),
                );
        }
        None => {
            for key in [
                "server_cpu_s",
                "server_cores",
                "server_rss_max_mib",
                "server_hwm_mib",
            ] {
                summary.add(key, "-");
            }
        }
    }
}

/// Compares what the server counted with what it acknowledged.
fn print_count(
    target: Target,
    outcome: &Outcome,
    counts: Option<(Count, Count)>,
    summary: &mut Summary,
) {
    let (unit, source) = counters::describe(target);
    let Some((before, after)) = counts else {
        println!("counted:     - (the server did not answer with {source})");
        summary
            .add("server_counted", "-")
            .add("server_dropped", "-")
            .add("counted_ok", "-");
        return;
    };
    let counted = after.accepted.saturating_sub(before.accepted);
    let dropped = after.dropped.saturating_sub(before.dropped);
    let expected = match unit {
        "values" => outcome.senders.values,
        _ => outcome.senders.rows,
    };
    let ok = counted == expected && dropped == 0;
    println!(
        "counted:     the server took in {counted} {unit} and dropped {dropped} ({source}): {}",
        if ok {
            "every acknowledged one".to_owned()
        } else {
            format!("MISMATCH, {expected} {unit} were acknowledged")
        }
    );
    summary
        .add("server_counted", counted)
        .add("server_dropped", dropped)
        .add("counted_ok", ok);
}

/// Warns when the virtual clock ran past the wall clock: some servers drop points from
/// the future.
fn print_clock(spec: &FleetSpec, last_ns: i64) {
    let now_ns = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    println!(
        "virtual:     rows from {} to {}",
        time_text(spec.start_ms * 1_000_000),
        time_text(last_ns)
    );
    if last_ns > now_ns {
        println!(
            "warning:     the virtual clock ran {:.0} s past the wall clock; servers may drop \
             points from the future (pass an earlier --start)",
            (last_ns - now_ns) as f64 / 1e9
        );
    }
}

/// Bytes on disk per acknowledged field value: the whole data directory, and for
/// gridlake its Parquet files (`tables/`) alone.
fn print_disk(
    dir: Option<&Path>,
    size_before: u64,
    target: Target,
    stopped: bool,
    values: u64,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        for key in [
            "disk_bytes",
            "bytes_per_value",
            "parquet_bytes",
            "parquet_bytes_per_value",
        ] {
            summary.add(key, "-");
        }
        return Ok(());
    };
    let per_value = |bytes: u64| bytes as f64 / values.max(1) as f64;
    let total = process::dir_size(dir).with_context(|| format!("size of {}", dir.display()))?;
    println!(
        "disk:        {} bytes in {} = {:.2} bytes/value ({values} values){}",
        total,
        dir.display(),
        per_value(total),
        if stopped {
            ""
        } else {
            " (server still running: not everything may be flushed)"
        }
    );
    let parts = process::dir_parts(dir)?;
    if !parts.is_empty() {
        let parts: Vec<String> = parts
            .iter()
            .map(|(name, bytes)| format!("{name} {:.1} MB", *bytes as f64 / 1e6))
            .collect();
        println!("             of which {}", parts.join(", "));
    }
    // A fresh server writes a few bytes (catalog, metadata) before the first row;
    // anything more is earlier data that the figure would wrongly charge to this run.
    if size_before > SMALL_DIR {
        println!(
            "warning:     {} held {size_before} bytes before the run, counted above too; \
             use an empty data directory for bytes/value",
            dir.display()
        );
    }
    summary
        .add("disk_bytes", total)
        .float("bytes_per_value", per_value(total), 2);
    if target == Target::Gridlake {
        let tables = dir.join("tables");
        let parquet = process::dir_size(&tables)?;
        println!(
            "parquet:     {} bytes in {} = {:.2} bytes/value",
            parquet,
            tables.display(),
            per_value(parquet)
        );
        summary.add("parquet_bytes", parquet).float(
            "parquet_bytes_per_value",
            per_value(parquet),
            2,
        );
    } else {
        summary
            .add("parquet_bytes", "-")
            .add("parquet_bytes_per_value", "-");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn write_args(flags: &str) -> WriteArgs {
        let line = format!("gridlake-load write {flags}");
        match Cli::try_parse_from(line.split_whitespace())
            .unwrap()
            .command
        {
            Command::Write(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_target_has_its_write_path() {
        assert_eq!(
            write_path(&write_args("--no-sync")),
            "/api/v3/write_lp?db=bench&precision=ns&no_sync=true"
        );
        assert_eq!(
            write_path(&write_args("--target influxdb --db x")),
            "/write?db=x&precision=ns"
        );
        assert_eq!(
            write_path(&write_args("--target victoriametrics")),
            "/write?db=bench&precision=ns"
        );
        assert_eq!(
            write_path(&write_args("--write-path api/v2/write?bucket=b")),
            "/api/v2/write?bucket=b"
        );
    }

    #[test]
    fn dry_pump_renders_whole_bodies_of_valid_rows() {
        let mut args = write_args("--seconds 1 --batch 500 --devices 100 --gzip --generators 2");
        args.fleet.resolve_start(Utc::now(), 1);
        let spec = args.fleet.spec(args.kinds, &args.table_prefix);
        let outcome = pump(&args, &spec, None).unwrap();
        let s = &outcome.senders;
        assert!(s.rows > 0 && s.rows.is_multiple_of(500), "{}", s.rows);
        assert_eq!(s.values, s.rows * 5);
        assert!(s.sent_bytes < s.raw_bytes, "gzip did not shrink anything");
        assert!(outcome.last_time_ns >= spec.start_ms * 1_000_000);
    }
}

//! `write-loop`: an end-to-end load tool for a running `gridlake serve`.
//!
//! N threads post line-protocol batches of smart-meter readings (tags `site_id`,
//! `device_id`; fields `power_w`, `energy_import_wh`, `energy_export_wh`, `voltage_v`,
//! `current_a`) to `/api/v3/write_lp` for a fixed time, each over its own HTTP
//! connection, and the tool reports acknowledged rows per second, field values per
//! second and the latency of the acks (p50, p99, max). Every point is unique (each
//! device advances its own clock by one second per reading), so the server's
//! deduplication never hides rows.
//!
//! It prints the machine, the build profile and every parameter, so a figure can be
//! reproduced with the command it came with:
//!
//! ```text
//! cargo run --release -p benches -- --url http://127.0.0.1:7181 \
//!     --devices 10000 --batch 10000 --connections 4 --seconds 30
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use reqwest::StatusCode;
use reqwest::blocking::Client;

/// Posts meter readings to a running gridlake server and reports the throughput.
#[derive(Debug, Clone, Parser)]
#[command(name = "write-loop", version, about)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:7181")]
    url: String,
    /// Number of distinct meters (series); spread over the connections.
    #[arg(long, default_value_t = 10_000)]
    devices: u64,
    /// Meters per site (the `site_id` tag groups this many `device_id`s).
    #[arg(long, default_value_t = 100)]
    devices_per_site: u64,
    /// Rows (lines) per HTTP request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent writers, each with its own connection and thread.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to write.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Table to write to.
    #[arg(long, default_value = "bench_meter")]
    table: String,
    /// Ask for acks before fsync (`no_sync=true`): measures everything but the disk flush.
    #[arg(long)]
    no_sync: bool,
}

/// Fields per row, for the "field values per second" figure.
const FIELDS_PER_ROW: u64 = 5;

/// What one writer thread measured.
#[derive(Debug, Default)]
struct WriterReport {
    rows: u64,
    requests: u64,
    busy: u64,
    latencies: Vec<Duration>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.devices == 0 || args.batch == 0 || args.connections == 0 || args.devices_per_site == 0 {
        bail!("--devices, --devices-per-site, --batch and --connections must be at least 1");
    }
    print_setup(&args);

    let base = args.url.trim_end_matches('/').to_owned();
    let probe = Client::builder().timeout(Duration::from_secs(5)).build()?;
    let health = probe
        .get(format!("{base}/health"))
        .send()
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("no gridlake answering at {base}/health"))?
        .text()?;
    println!("server:      {health}");

    let write_url = format!(
        "{base}/api/v3/write_lp?db=bench&precision=ns&no_sync={}",
        args.no_sync
    );
    // Unique times: each device starts a day ago and advances one second per reading.
    let start_ns = now_ns() - 86_400 * 1_000_000_000;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let reports = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|writer| {
                let args = &args;
                let url = write_url.as_str();
                scope.spawn(move || write_loop(args, writer, url, start_ns, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let elapsed = started.elapsed();
    print_results(&reports, elapsed);
    Ok(())
}

/// One writer: builds batches for its share of the devices and posts them until the
/// deadline. Each request is retried after a pause when the server answers 503.
fn write_loop(
    args: &Args,
    writer: usize,
    url: &str,
    start_ns: i64,
    deadline: Instant,
) -> anyhow::Result<WriterReport> {
    // One client per writer: its own connection pool, so `--connections` means what it says.
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(1)
        .build()?;
    let writers = args.connections as u64;
    // Writer w owns devices w, w + N, w + 2N, ...
    let own: Vec<u64> = (writer as u64..args.devices)
        .step_by(writers as usize)
        .collect();
    if own.is_empty() {
        return Ok(WriterReport::default());
    }
    let mut report = WriterReport::default();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (writer as u64 + 1));
    let mut cursor: u64 = 0; // readings generated so far by this writer
    let mut body = String::with_capacity(args.batch * 160);
    while Instant::now() < deadline {
        body.clear();
        for _ in 0..args.batch {
            let device = own[(cursor % own.len() as u64) as usize];
            let reading = cursor / own.len() as u64;
            cursor += 1;
            let time = start_ns + reading as i64 * 1_000_000_000;
            let power = rng.unit() * 11_000.0 - 1_000.0;
            let import = reading as f64 * 2.5 + device as f64;
            let export = reading as f64 * 0.5;
            let voltage = 230.0 + rng.unit() * 10.0 - 5.0;
            let current = power.abs() / voltage;
            // `write!` to a String cannot fail.
            let _ = writeln!(
                body,
                "{table},site_id=site{site:05},device_id=meter{device:07} power_w={power:.1},\
                 energy_import_wh={import:.1},energy_export_wh={export:.1},\
                 voltage_v={voltage:.2},current_a={current:.3} {time}",
                table = args.table,
                site = device / args.devices_per_site,
            );
        }
        loop {
            let sent = Instant::now();
            let response = client
                .post(url)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(body.clone())
                .send()
                .with_context(|| format!("writer {writer}: POST {url}"))?;
            let latency = sent.elapsed();
            report.requests += 1;
            match response.status() {
                StatusCode::NO_CONTENT => {
                    report.rows += args.batch as u64;
                    report.latencies.push(latency);
                    break;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    report.busy += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                status => {
                    let text = response.text().unwrap_or_default();
                    bail!("writer {writer}: unexpected {status}: {text}");
                }
            }
        }
    }
    Ok(report)
}

fn print_setup(args: &Args) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let profile = if cfg!(debug_assertions) {
        "debug (numbers are not meaningful: use --release)"
    } else {
        "release"
    };
    println!("write-loop {}", env!("CARGO_PKG_VERSION"));
    println!("machine:     {cores} cores, {cpu}");
    println!(
        "os:          {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!("build:       {profile}");
    // Every parameter, defaults included, so the line reruns exactly this measurement.
    println!(
        "command:     cargo run --release -p benches -- --url {} --devices {} \
         --devices-per-site {} --batch {} --connections {} --seconds {} --table {}{}",
        args.url,
        args.devices,
        args.devices_per_site,
        args.batch,
        args.connections,
        args.seconds,
        args.table,
        if args.no_sync { " --no-sync" } else { "" }
    );
}

fn print_results(reports: &[WriterReport], elapsed: Duration) {
    let rows: u64 = reports.iter().map(|r| r.rows).sum();
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let busy: u64 = reports.iter().map(|r| r.busy).sum();
    let mut latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let secs = elapsed.as_secs_f64();
    println!("elapsed:     {secs:.2} s");
    println!(
        "requests:    {requests} ({} acked, {busy} answered 503 and were retried)",
        latencies.len()
    );
    println!("rows:        {rows} acknowledged");
    println!("rows/s:      {:.0}", rows as f64 / secs);
    println!(
        "values/s:    {:.0} ({FIELDS_PER_ROW} fields per row)",
        (rows * FIELDS_PER_ROW) as f64 / secs
    );
    println!(
        "ack latency: p50 {} ms, p99 {} ms, max {} ms",
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
        millis(latencies.last().copied())
    );
}

/// The `q` quantile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1e3),
    )
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A tiny deterministic generator for plausible readings (no `rand` dependency needed).
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    /// A value in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.50), Some(ms(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(ms(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(ms(100)));
        assert_eq!(percentile(&[ms(7)], 0.99), Some(ms(7)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn xorshift_stays_in_unit_interval() {
        let mut rng = XorShift(42);
        for _ in 0..10_000 {
            let x = rng.unit();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}

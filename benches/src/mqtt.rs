//! `gridlake-load mqtt`: meter readings through an MQTT broker into gridlake.
//!
//! ```text
//! publisher thread per connection ─► rumqttc Client ─► broker ─► gridlake [mqtt] collector
//!   (its meters, K readings/message)   event loop thread: counts PUBACKs      │
//! main thread: polls gridlake's /metrics (gridlake_mqtt_readings_total) ◄────┘
//! ```
//!
//! Topics and payloads are the simulator's generic JSON meter format
//! (`<prefix>/<site_id>/meter/<device_id>`, `{"readings":[{"ts":..,"power_w":..,
//! "import_wh":..,"export_wh":..}]}`), so the server is configured with the output of
//! `gridlake simulate mqtt --print-config --broker URL`. QoS 1: a message counts as
//! published once the broker's PUBACK arrives; a reading counts as stored once the
//! server's collector counter says so. The two rates side by side show whether the
//! broker or the server is the bottleneck.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use reqwest::blocking::Client as HttpClient;
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::cli::{Command, MqttArgs, duration_word};
use crate::counters::sum_metric;
use crate::fleet::{self, FleetSpec, Mix, Num};
use crate::report::{self, Summary};

/// Publishes in flight per connection: enough to cover the round trip at the rates one
/// connection reaches.
const INFLIGHT: u16 = 1000;
/// Publishes queued between a publisher and its event loop.
const REQUEST_CAPACITY: usize = 1000;
/// How long a stopping publisher waits for the broker to acknowledge what is in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server's counters are read.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// The collector's counter of stored readings.
const READINGS_METRIC: &str = "gridlake_mqtt_readings_total";

/// Counters one connection shares with the main thread.
#[derive(Debug, Default)]
struct Tally {
    published: AtomicU64,
    acked: AtomicU64,
}

/// Runs `mqtt` with these flags.
pub(crate) fn run(mut args: MqttArgs) -> anyhow::Result<()> {
    let (host, port) = parse_broker(&args.broker)?;
    if args.connections > args.fleet.devices {
        bail!(
            "--connections {} is more than --devices {}",
            args.connections,
            args.fleet.devices
        );
    }
    args.fleet.resolve_start(Utc::now(), args.seconds);
    report::print_header(&Command::Mqtt(args.clone()).command_line());
    let spec = args.fleet.spec(Mix::default(), "");
    let k = args.readings_per_message;
    println!(
        "fleet:       {} meters, {k} readings/message, topics {}/site-NNNNN/meter/meter-NNNNNNN, \
         a reading every {} of virtual time from {}",
        spec.devices,
        args.prefix,
        duration_word(args.fleet.interval),
        args.fleet
            .start
            .map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    );

    let http = args
        .auth
        .client()?
        .timeout(Duration::from_secs(10))
        .build()?;
    let metrics_url = format!("{}/metrics", args.url.trim_end_matches('/'));
    wait_subscribed(&http, &metrics_url)?;
    let baseline = stored_readings(&http, &metrics_url)?;
    println!(
        "server:      {} (MQTT collector subscribed; {baseline} readings stored before the run)",
        args.url
    );
    println!(
        "broker:      {}, {} connections, QoS 1, {INFLIGHT} in flight per connection",
        args.broker, args.connections
    );

    let tallies: Vec<Arc<Tally>> = (0..args.connections)
        .map(|_| Arc::new(Tally::default()))
        .collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut publishers: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(n, tally)| {
            let (tally, spec, args, host) =
                (tally.clone(), spec.clone(), args.clone(), host.clone());
            std::thread::Builder::new()
                .name(format!("publisher-{n}"))
                .spawn(move || publish(n as u64, &args, &spec, &host, port, deadline, &tally))
        })
        .collect::<Result<_, _>>()?;

    // Follow the server while the publishers run and after they are done, until it has
    // every reading the broker acknowledged or its count stands still for --settle.
    let mut published_at: Option<Instant> = None;
    let mut last_count = baseline;
    let mut last_growth = started;
    loop {
        std::thread::sleep(POLL_EVERY);
        let now = Instant::now();
        let count = stored_readings(&http, &metrics_url)?;
        if count > last_count {
            last_count = count;
            last_growth = now;
        }
        if published_at.is_none() {
            if publishers.iter().any(|p| !p.is_finished()) {
                continue;
            }
            // Every publisher is done: a failure ends the run here.
            let mut done = started;
            for publisher in publishers.drain(..) {
                let finished = publisher
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
                done = done.max(finished);
            }
            published_at = Some(done);
        }
        let acked: u64 = tallies
            .iter()
            .map(|t| t.acked.load(Ordering::Relaxed))
            .sum();
        if count - baseline >= acked * u64::from(k) {
            break;
        }
        let quiet_since = last_growth.max(published_at.unwrap_or(now));
        if now.saturating_duration_since(quiet_since) > args.settle {
            break;
        }
    }

    let published_at = published_at.unwrap_or_else(Instant::now);
    let messages: u64 = tallies
        .iter()
        .map(|t| t.acked.load(Ordering::Relaxed))
        .sum();
    let readings = messages * u64::from(k);
    let publish_s = published_at.duration_since(started).as_secs_f64();
    let stored = last_count - baseline;
    let stored_s = last_growth.duration_since(started).as_secs_f64();
    let complete = stored >= readings;
    println!(
        "published:   {messages} messages = {readings} readings in {publish_s:.2} s = {:.0} readings/s acknowledged by the broker",
        readings as f64 / publish_s.max(1e-9)
    );
    println!(
        "stored:      {stored} readings ({} values) {stored_s:.2} s after the first publish = {:.0} readings/s ({READINGS_METRIC}); \
         {:.2} s after the last PUBACK",
        stored * 3,
        stored as f64 / stored_s.max(1e-9),
        (stored_s - publish_s).max(0.0)
    );
    if !complete {
        println!(
            "incomplete:  the server stored {stored} of {readings} readings and then nothing for {}",
            duration_word(args.settle)
        );
    }
    let mut summary = Summary::new("mqtt");
    summary
        .add("messages", messages)
        .add("readings", readings)
        .float("publish_s", publish_s, 2)
        .float(
            "published_readings_per_s",
            readings as f64 / publish_s.max(1e-9),
            0,
        )
        .add("stored_readings", stored)
        .float("stored_s", stored_s, 2)
        .float(
            "stored_readings_per_s",
            stored as f64 / stored_s.max(1e-9),
            0,
        )
        .add("complete", complete);
    summary.print();
    Ok(())
}

/// `mqtt://host:port` (or `tcp://`, or bare `host:port`); port 1883 when missing.
fn parse_broker(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    if rest.contains("://") || rest.contains('/') || rest.is_empty() {
        bail!("--broker {url:?}: expected mqtt://host:port (plain TCP)");
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port = port
                .parse()
                .with_context(|| format!("--broker {url:?}: bad port {port:?}"))?;
            Ok((host.trim_matches(['[', ']']).to_owned(), port))
        }
        _ => Ok((rest.to_owned(), 1883)),
    }
}

fn metrics(http: &HttpClient, url: &str) -> anyhow::Result<String> {
    http.get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .with_context(|| format!("cannot read the server's metrics at {url}"))
}

fn stored_readings(http: &HttpClient, url: &str) -> anyhow::Result<u64> {
    let text = metrics(http, url)?;
    sum_metric(&text, READINGS_METRIC)
        .with_context(|| format!("unreadable {READINGS_METRIC} in {url}"))
}

/// Waits until the server's MQTT collector has its subscriptions.
fn wait_subscribed(http: &HttpClient, url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(text) = metrics(http, url)
            && sum_metric(&text, "gridlake_mqtt_subscribed") == Some(1)
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            metrics(http, url)?;
            bail!(
                "the server at {url} has no subscribed MQTT collector (gridlake_mqtt_subscribed is not 1); \
                 configure it with `gridlake simulate mqtt --print-config --broker URL`"
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// One connection: publishes its meters' readings until the deadline, then waits for the
/// broker to acknowledge everything in flight; returns when the last PUBACK arrived.
fn publish(
    n: u64,
    args: &MqttArgs,
    spec: &FleetSpec,
    host: &str,
    port: u16,
    deadline: Instant,
    tally: &Arc<Tally>,
) -> anyhow::Result<Instant> {
    let mut options = MqttOptions::new(format!("{}-{n}", args.client_id), host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(INFLIGHT)
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = Client::new(options, REQUEST_CAPACITY);
    let stopping = Arc::new(AtomicBool::new(false));
    let event_loop = {
        let (stopping, tally) = (stopping.clone(), tally.clone());
        std::thread::Builder::new()
            .name(format!("mqtt-events-{n}"))
            .spawn(move || -> anyhow::Result<()> {
                for event in connection.iter() {
                    match event {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            tally.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(_) if stopping.load(Ordering::Relaxed) => break,
                        // A reconnect would start a new session and could drop queued
                        // publishes: the counts would stop meaning "the broker has these".
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })?
    };

    let k = args.readings_per_message;
    let mut devices = fleet::devices(spec, n, args.connections);
    let topics: Vec<String> = devices
        .iter()
        .map(|d| format!("{}/{}/meter/{}", args.prefix, d.site(), d.id()))
        .collect();
    let mut num = Num::default();
    let mut refused = None;
    'rounds: loop {
        for (device, topic) in devices.iter_mut().zip(&topics) {
            if Instant::now() >= deadline {
                break 'rounds;
            }
            let mut payload = Vec::with_capacity(16 + 96 * k as usize);
            device.meter_json(&mut payload, k, spec.start_ms, spec.interval_ms, &mut num);
            if let Err(e) = client.publish(topic.clone(), QoS::AtLeastOnce, false, payload) {
                refused = Some(e);
                break 'rounds;
            }
            tally.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    let draining = Instant::now();
    while tally.acked.load(Ordering::Relaxed) < tally.published.load(Ordering::Relaxed)
        && !event_loop.is_finished()
        && draining.elapsed() < DRAIN_TIMEOUT
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = Instant::now();
    stopping.store(true, Ordering::Relaxed);
    let _ = client.disconnect();
    event_loop
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
        .with_context(|| format!("connection {n} to the broker at {host}:{port} failed"))?;
    if let Some(e) = refused {
        bail!("connection {n}: publish failed: {e}");
    }
    let (published, acked) = (
        tally.published.load(Ordering::Relaxed),
        tally.acked.load(Ordering::Relaxed),
    );
    if acked < published {
        bail!(
            "connection {n}: the broker acknowledged {acked} of {published} publishes within {DRAIN_TIMEOUT:?}"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_host_and_port() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".to_owned(), 1884)
        );
        assert_eq!(
            parse_broker("broker.local").unwrap(),
            ("broker.local".to_owned(), 1883)
        );
        assert_eq!(
            parse_broker("tcp://[::1]:1883").unwrap(),
            ("::1".to_owned(), 1883)
        );
        assert!(parse_broker("mqtts://x:8883").is_err());
        assert!(parse_broker("mqtt://x:port").is_err());
    }
}

//! The MQTT collector against a real Mosquitto broker: every decoder from publish to
//! SQL, bad payloads, broker restarts, SIGKILL of gridlake, shared subscriptions.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::broker::{Broker, publish_all};
use crate::common::{Options, Server, float, int, string};

/// `[mqtt]` for a server talking to `broker` as `client_id`, followed by `subscriptions`
/// (TOML `[[mqtt.subscriptions]]` tables).
fn mqtt_config(broker: &Broker, client_id: &str, subscriptions: &str) -> String {
    format!(
        r#"
[mqtt]
enabled = true
broker = "{url}"
client_id = "{client_id}"
batch_linger = "2ms"
reconnect_min = "50ms"
reconnect_max = "500ms"
{subscriptions}
"#,
        url = broker.url()
    )
}

/// Line protocol on `lp/<site>`, the subscription most tests use.
const LP_SUBSCRIPTION: &str = r#"
[[mqtt.subscriptions]]
filter = "lp/+"
decoder = "line_protocol"
topic_template = "lp/{site_id}"
"#;

async fn start_server(broker: &Broker, client_id: &str, subscriptions: &str) -> Server {
    let server = Server::start_with(Options::default().config(&mqtt_config(
        broker,
        client_id,
        subscriptions,
    )))
    .await;
    wait_subscribed(&server).await;
    server
}

/// The value of an unlabelled metric on `/metrics`, or of the first line starting with
/// `prefix` (which may include labels).
async fn metric(server: &Server, prefix: &str) -> Option<f64> {
    let (_, body) = server.get("/metrics").await;
    body.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the broker has granted the server's subscriptions: messages published
/// before that would not reach it.
async fn wait_subscribed(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(server, "gridlake_mqtt_subscribed").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the collector did not subscribe within 30 s; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sql` (a single `n` count column) until it returns `expected`.
async fn wait_count(server: &Server, sql: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = -1;
    while Instant::now() < deadline {
        let (status, body) = server.sql_status(sql).await;
        if status.is_success() {
            let rows = crate::common::parse_json_rows(&body);
            last = int(&rows[0], "n");
            if last == expected {
                return;
            }
            assert!(
                last <= expected,
                "{sql}: {last} rows, more than the {expected} published; log:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{sql}: {last} rows after 60 s, expected {expected}; log:\n{}",
        server.log()
    );
}

fn lp_messages(count: usize, site: &str) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                format!("lp/{site}"),
                format!(
                    "meter,device_id=d{} power_w={i} {}",
                    i % 10,
                    1_700_000_000_000_000_000i64 + i as i64 * 1_000_000_000
                )
                .into_bytes(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decoder_from_publish_to_sql() {
    let broker = Broker::start();
    let subscriptions = r#"
[[mqtt.subscriptions]]
filter = "homes/+/shelly/#"
decoder = "shelly"
topic_template = "homes/{site_id}/shelly/{device_id}/#"

[[mqtt.subscriptions]]
filter = "tele/+/+"
decoder = "tasmota"
timezone = "Europe/Berlin"
tags = { site_id = "site-t" }

[[mqtt.subscriptions]]
filter = "zigbee2mqtt/#"
decoder = "zigbee2mqtt"
tags = { site_id = "site-z" }

[[mqtt.subscriptions]]
filter = "ocpp/+"
decoder = "ocpp"
topic_template = "ocpp/{device_id}"
tags = { site_id = "site-o" }

[[mqtt.subscriptions]]
filter = "lp/+"
decoder = "line_protocol"
topic_template = "lp/{site_id}"

[[mqtt.subscriptions]]
name = "meters"
filter = "sites/+/devices/+/telemetry"
decoder = "json"
topic_template = "sites/{site_id}/devices/{device_id}/telemetry"
[mqtt.subscriptions.json]
table = "meter"
time = "$.ts"
time_format = "unix_ms"
[[mqtt.subscriptions.json.fields]]
column = "power_w"
path = "$.p_kw"
scale = 1000.0
[[mqtt.subscriptions.json.fields]]
column = "energy_import_wh"
path = "$.e_kwh"
scale = 1000.0

[[mqtt.subscriptions]]
filter = "status/+"
decoder = "availability"
topic_template = "status/{device_id}"
tags = { site_id = "site-a" }
"#;
    let server = start_server(&broker, "gridlake-decoders", subscriptions).await;

    publish_all(
        broker.port(),
        "test-publisher",
        vec![
            // Shelly Gen2 Switch status (https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Switch#status).
            (
                "homes/site-s/shelly/plug-1/status/switch:0".into(),
                br#"{"id":0,"source":"init","output":true,"apower":120.5,"voltage":230.1,"current":0.52,"aenergy":{"total":1234.5,"by_minute":[0,0,0],"minute_ts":1700000000},"temperature":{"tC":40.1,"tF":104.2}}"#.to_vec(),
            ),
            // Tasmota teleperiod SENSOR (https://tasmota.github.io/docs/Power-Monitoring-Calibration/).
            (
                "tele/plug-2/SENSOR".into(),
                br#"{"Time":"2024-03-01T13:00:00","ENERGY":{"TotalStartTime":"2024-01-01T00:00:00","Total":1.5,"Yesterday":0.1,"Today":0.2,"Period":0,"Power":60,"ApparentPower":65,"ReactivePower":10,"Factor":0.92,"Voltage":231,"Current":0.28}}"#.to_vec(),
            ),
            // Zigbee2MQTT device state (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html).
            (
                "zigbee2mqtt/kitchen/fridge".into(),
                br#"{"power":85.2,"energy":12.34,"voltage":229,"current":0.4,"state":"ON","linkquality":120}"#.to_vec(),
            ),
            // OCPP 1.6 MeterValues as an OCPP-J CALL frame.
            (
                "ocpp/cp-1".into(),
                br#"[2,"19223201","MeterValues",{"connectorId":1,"transactionId":42,"meterValue":[{"timestamp":"2024-03-01T12:00:00Z","sampledValue":[{"value":"12345","measurand":"Energy.Active.Import.Register","unit":"Wh"},{"value":"7.2","measurand":"Power.Active.Import","unit":"kW"}]}]}]"#.to_vec(),
            ),
            (
                "lp/site-l".into(),
                b"meter,device_id=m9 power_w=500,energy_import_wh=1000 1709294400000000000".to_vec(),
            ),
            (
                "sites/site-j/devices/m10/telemetry".into(),
                br#"{"ts":1709294400000,"p_kw":1.5,"e_kwh":2.5}"#.to_vec(),
            ),
            ("status/gw-7".into(), b"offline".to_vec()),
        ],
    )
    .await;

    wait_count(&server, "SELECT count(*) AS n FROM smart_plug", 3).await;
    let plugs = server
        .sql("SELECT device_id, site_id, power_w, energy_wh, switch_on, quality, source FROM smart_plug ORDER BY device_id")
        .await;
    let by_device = |id: &str| {
        plugs
            .iter()
            .find(|r| string(r, "device_id") == id)
            .unwrap_or_else(|| panic!("no smart_plug row for {id}: {plugs:?}"))
    };
    let shelly = by_device("plug-1");
    assert_eq!(string(shelly, "site_id"), "site-s");
    assert_eq!(float(shelly, "power_w"), 120.5);
    assert_eq!(float(shelly, "energy_wh"), 1234.5);
    assert_eq!(shelly["switch_on"], serde_json::Value::Bool(true));
    assert_eq!(string(shelly, "quality"), "actual");
    assert_eq!(string(shelly, "source"), "mqtt/shelly");
    let tasmota = by_device("plug-2");
    assert_eq!(string(tasmota, "site_id"), "site-t");
    assert_eq!(float(tasmota, "energy_wh"), 1500.0);
    assert_eq!(float(tasmota, "power_w"), 60.0);
    let fridge = by_device("kitchen/fridge");
    assert_eq!(float(fridge, "energy_wh"), 12340.0);
    assert_eq!(string(fridge, "source"), "mqtt/zigbee2mqtt");

    // Tasmota's local 13:00 in Europe/Berlin (CET) is 12:00 UTC.
    let t = server
        .sql("SELECT CAST(time AS BIGINT) AS t FROM smart_plug WHERE device_id = 'plug-2'")
        .await;
    assert_eq!(int(&t[0], "t"), 1_709_294_400_000_000_000);

    wait_count(&server, "SELECT count(*) AS n FROM ev_charger", 1).await;
    let charger = server
        .sql("SELECT device_id, site_id, connector, session_id, energy_wh, power_w, CAST(time AS BIGINT) AS t FROM ev_charger")
        .await;
    assert_eq!(string(&charger[0], "device_id"), "cp-1");
    assert_eq!(string(&charger[0], "connector"), "1");
    assert_eq!(string(&charger[0], "session_id"), "42");
    assert_eq!(float(&charger[0], "energy_wh"), 12345.0);
    assert_eq!(float(&charger[0], "power_w"), 7200.0);
    assert_eq!(int(&charger[0], "t"), 1_709_294_400_000_000_000);

    wait_count(&server, "SELECT count(*) AS n FROM meter", 2).await;
    let meters = server
        .sql("SELECT device_id, site_id, power_w, energy_import_wh, source FROM meter ORDER BY device_id")
        .await;
    assert_eq!(string(&meters[0], "device_id"), "m10");
    assert_eq!(string(&meters[0], "site_id"), "site-j");
    assert_eq!(float(&meters[0], "power_w"), 1500.0);
    assert_eq!(float(&meters[0], "energy_import_wh"), 2500.0);
    assert_eq!(string(&meters[0], "source"), "mqtt/meters");
    assert_eq!(string(&meters[1], "device_id"), "m9");
    assert_eq!(string(&meters[1], "site_id"), "site-l");
    assert_eq!(float(&meters[1], "power_w"), 500.0);

    wait_count(&server, "SELECT count(*) AS n FROM device_status", 1).await;
    let status = server
        .sql("SELECT device_id, site_id, online FROM device_status")
        .await;
    assert_eq!(string(&status[0], "device_id"), "gw-7");
    assert_eq!(status[0]["online"], serde_json::Value::Bool(false));

    assert_eq!(
        metric(
            &server,
            "gridlake_mqtt_messages_total{subscription=\"meters\",outcome=\"stored\"}"
        )
        .await,
        Some(1.0)
    );
    assert!(!server.has_table("_rejected").await, "nothing was rejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_payloads_go_to_rejected_and_the_good_ones_around_them_are_stored() {
    let broker = Broker::start();
    let subscriptions = format!(
        r#"{LP_SUBSCRIPTION}
[[mqtt.subscriptions]]
filter = "ocpp/+"
decoder = "ocpp"
topic_template = "ocpp/{{device_id}}"
"#
    );
    let server = start_server(&broker, "gridlake-rejects", &subscriptions).await;
    publish_all(
        broker.port(),
        "test-publisher",
        vec![
            ("lp/s1".into(), b"meter,device_id=a power_w=1 1000".to_vec()),
            ("ocpp/cp-9".into(), b"{this is not json".to_vec()),
            (
                "lp/s1".into(),
                b"meter,device_id=a power_w=2 2000\nmeter,device_id=a power_w= 3000".to_vec(),
            ),
            ("lp/s1".into(), b"meter,device_id=a power_w=4 4000".to_vec()),
        ],
    )
    .await;
    wait_count(&server, "SELECT count(*) AS n FROM meter", 3).await;
    wait_count(&server, "SELECT count(*) AS n FROM _rejected", 2).await;
    let rejected = server
        .sql("SELECT source, topic, payload, error FROM _rejected ORDER BY time")
        .await;
    assert_eq!(string(&rejected[0], "source"), "mqtt/ocpp");
    assert_eq!(string(&rejected[0], "topic"), "ocpp/cp-9");
    assert_eq!(string(&rejected[0], "payload"), "{this is not json");
    assert!(
        string(&rejected[0], "error").contains("not JSON"),
        "{rejected:?}"
    );
    assert_eq!(string(&rejected[1], "source"), "mqtt/line_protocol");
    assert!(
        string(&rejected[1], "error").starts_with("line 2:"),
        "{rejected:?}"
    );
    let powers: Vec<f64> = server
        .sql("SELECT power_w FROM meter ORDER BY time")
        .await
        .iter()
        .map(|r| float(r, "power_w"))
        .collect();
    assert_eq!(powers, vec![1.0, 2.0, 4.0]);
    assert_eq!(
        metric(
            &server,
            "gridlake_mqtt_messages_total{subscription=\"ocpp\",outcome=\"rejected\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &server,
            "gridlake_mqtt_messages_total{subscription=\"line_protocol\",outcome=\"partial\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &server,
            "gridlake_mqtt_messages_total{subscription=\"line_protocol\",outcome=\"stored\"}"
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_stream_loses_no_qos1_message() {
    let mut broker = Broker::start();
    let server = start_server(&broker, "gridlake-restart", LP_SUBSCRIPTION).await;
    const N: usize = 1500;
    let port = broker.port();
    let mut first = lp_messages(N, "s1");
    let second = first.split_off(N / 2);
    let publisher = tokio::spawn(publish_all(port, "test-publisher", first));
    // Restart once the stream is well under way (the first publisher may still be
    // sending: it resends what the broker did not acknowledge), then publish the rest,
    // which the collector only gets if it reconnects. Ingest is fast enough that a
    // single stream could end before the restart, and then the test would not test it.
    wait_at_least(&server, "meter", 200).await;
    broker.restart();
    publisher.await.expect("publisher");
    publish_all(port, "test-publisher-2", second).await;
    wait_count(&server, "SELECT count(*) AS n FROM meter", N as i64).await;
    assert_exactly_once(&server, N).await;
    assert!(
        metric(&server, "gridlake_mqtt_connections_total").await >= Some(2.0),
        "the collector must have reconnected; broker log:\n{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gridlake_killed_mid_stream_stores_every_message_exactly_once() {
    let broker = Broker::start();
    let mut server = start_server(&broker, "gridlake-kill", LP_SUBSCRIPTION).await;
    const N: usize = 2000;
    let publisher = tokio::spawn(publish_all(
        broker.port(),
        "test-publisher",
        lp_messages(N, "s1"),
    ));
    wait_at_least(&server, "meter", 300).await;
    server.kill().await;
    // The broker queues what arrives meanwhile for the persistent session.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again().await;
    publisher.await.expect("publisher");
    wait_count(&server, "SELECT count(*) AS n FROM meter", N as i64).await;
    assert_exactly_once(&server, N).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_collectors_on_one_shared_subscription_split_the_stream() {
    let broker = Broker::start();
    let shared = r#"
[[mqtt.subscriptions]]
filter = "$share/gridlake/lp/+"
decoder = "line_protocol"
topic_template = "lp/{site_id}"
"#;
    let a = start_server(&broker, "gridlake-a", shared).await;
    let b = start_server(&broker, "gridlake-b", shared).await;
    const N: usize = 600;
    publish_all(broker.port(), "test-publisher", lp_messages(N, "s1")).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let (ids_a, ids_b) = loop {
        let ids_a = time_ids(&a).await;
        let ids_b = time_ids(&b).await;
        if ids_a.len() + ids_b.len() >= N || Instant::now() > deadline {
            break (ids_a, ids_b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !ids_a.is_empty() && !ids_b.is_empty(),
        "both collectors must get a share: {} and {}",
        ids_a.len(),
        ids_b.len()
    );
    assert!(
        ids_a.is_disjoint(&ids_b),
        "a message went to both collectors"
    );
    assert_eq!(ids_a.len() + ids_b.len(), N, "messages lost or doubled");
}

async fn time_ids(server: &Server) -> HashSet<i64> {
    if !server.has_table("meter").await {
        return HashSet::new();
    }
    server
        .sql("SELECT CAST(time AS BIGINT) AS t FROM meter")
        .await
        .iter()
        .map(|r| int(r, "t"))
        .collect()
}

async fn wait_at_least(server: &Server, table: &str, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if server.has_table(table).await && server.count(table).await >= rows {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {rows} rows in {table} after 60 s; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every published message is there once, with its value.
async fn assert_exactly_once(server: &Server, n: usize) {
    let rows = server
        .sql("SELECT device_id, CAST(time AS BIGINT) AS t, power_w FROM meter")
        .await;
    assert_eq!(rows.len(), n);
    let mut seen = HashSet::new();
    for r in &rows {
        let t = int(r, "t");
        let i = (t - 1_700_000_000_000_000_000) / 1_000_000_000;
        assert!(seen.insert(i), "message {i} stored twice");
        assert_eq!(float(r, "power_w"), i as f64);
        assert_eq!(string(r, "device_id"), format!("d{}", i % 10));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_reaches_a_tls_broker() {
    let broker = Broker::start_with_tls();
    let config = format!(
        r#"
[mqtt]
enabled = true
broker = "{url}"
client_id = "gridlake-tls"
batch_linger = "2ms"
[mqtt.tls]
ca_file = "{ca}"
{LP_SUBSCRIPTION}
"#,
        url = broker.tls_url(),
        ca = broker.ca_file().display()
    );
    let server = Server::start_with(Options::default().config(&config)).await;
    wait_subscribed(&server).await;
    // The test publisher uses the plain listener of the same broker.
    publish_all(broker.port(), "test-publisher", lp_messages(5, "tls")).await;
    wait_count(
        &server,
        "SELECT count(*) AS n FROM meter WHERE site_id = 'tls'",
        5,
    )
    .await;
}

/// Runs `gridlake simulate mqtt` with `args` against `broker` and returns its stdout.
async fn simulate(broker: &Broker, args: &[&str]) -> String {
    let output = tokio::process::Command::new(crate::common::gridlake_bin())
        .args(["simulate", "mqtt", "--broker", &broker.url()])
        .args(args)
        .output()
        .await
        .expect("run gridlake simulate");
    assert!(
        output.status.success(),
        "gridlake simulate {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 stdout")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulated_fleet_lands_in_the_canonical_tables() {
    let broker = Broker::start();
    let printed = simulate(&broker, &["--print-config"]).await;
    let config = printed.replacen(
        "enabled = true",
        "enabled = true\nclient_id = \"gridlake-fleet\"\nbatch_linger = \"2ms\"",
        1,
    );
    let server = Server::start_with(Options::default().config(&config)).await;
    wait_subscribed(&server).await;

    let summary = simulate(
        &broker,
        &[
            "--devices",
            "40",
            "--messages",
            "400",
            "--rate",
            "0",
            "--batch",
            "3",
            "--start",
            "2024-06-01T00:00:00Z",
        ],
    )
    .await;
    // `simulate: messages=... readings=... ...`, the machine-readable last line.
    let line = summary
        .lines()
        .find(|l| l.starts_with("simulate: messages="))
        .unwrap_or_else(|| panic!("no summary line in {summary:?}"));
    let readings: i64 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("readings="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no readings= in {line:?}"));
    assert!(readings >= 400, "{line}");

    let total = "SELECT (SELECT count(*) FROM smart_plug) + (SELECT count(*) FROM ev_charger) \
                 + (SELECT count(*) FROM meter) + (SELECT count(*) FROM inverter) AS n";
    // The tables appear as their first rows arrive; until all four exist the query fails.
    wait_count(&server, total, readings).await;
    assert!(
        !server.has_table("_rejected").await,
        "the simulator's payloads all decode"
    );
    // Counters only grow, per device.
    let drops = server
        .sql(
            "SELECT count(*) AS n FROM (SELECT energy_wh - lag(energy_wh) OVER \
             (PARTITION BY device_id ORDER BY time) AS d FROM smart_plug) WHERE d < 0",
        )
        .await;
    assert_eq!(int(&drops[0], "n"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledgements_survive_a_full_request_channel() {
    let broker = Broker::start();
    // A tiny max_inflight makes rumqttc's request channel small (2 × 5 + slack), and a
    // long linger lets messages pile up: Mosquitto 2.0 sends more than the Receive
    // Maximum, so a whole batch of acknowledgements overflows the channel. They must
    // wait and go out in order, not be dropped (a dropped PUBACK means a redelivery
    // on the next connection and a message stuck in flight until then).
    let config = mqtt_config(&broker, "gridlake-acks", LP_SUBSCRIPTION).replace(
        "batch_linger = \"2ms\"",
        "batch_linger = \"300ms\"\nmax_inflight = 5",
    );
    let server = Server::start_with(Options::default().config(&config)).await;
    wait_subscribed(&server).await;
    const N: usize = 60;
    publish_all(broker.port(), "test-publisher", lp_messages(N, "s1")).await;
    wait_count(&server, "SELECT count(*) AS n FROM meter", N as i64).await;
    assert_exactly_once(&server, N).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "gridlake_mqtt_unacked_messages").await != Some(0.0) {
        assert!(Instant::now() < deadline, "messages stay unacknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every message was decoded once: none was redelivered for a lost acknowledgement.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(
            &server,
            "gridlake_mqtt_messages_total{subscription=\"line_protocol\",outcome=\"stored\"}"
        )
        .await,
        Some(N as f64)
    );
    assert_eq!(
        metric(&server, "gridlake_mqtt_connection_failures_total").await,
        Some(0.0)
    );
    assert!(
        !server.log().contains("PUBACK"),
        "no acknowledgement may be dropped:\n{}",
        server.log()
    );
}

//! questdb-rs, an independent line-protocol client, writing over HTTP.

use questdb::ingress::{Sender, TimestampNanos};
use serde_json::Value;

use crate::common::{Server, float, int, string};

#[tokio::test(flavor = "multi_thread")]
async fn questdb_client_rows_come_back_exactly() {
    let server = Server::start().await;
    let addr = server
        .base_url()
        .strip_prefix("http://")
        .expect("http URL")
        .to_owned();
    let token = server.admin_token().to_owned();
    // The sender is blocking (ureq); keep it off the async workers.
    tokio::task::spawn_blocking(move || -> questdb::Result<()> {
        // Negotiates the protocol version through GET /settings (public: questdb-rs 7.2
        // sends no token there), then posts to /write with `Authorization: Bearer`.
        let mut sender = Sender::from_conf(format!("http::addr={addr};token={token};"))?;
        let mut buffer = sender.new_buffer();
        for i in 0..3i64 {
            buffer
                .table("qdb_meter")?
                .symbol("site_id", "s1")?
                .symbol("device_id", format!("m{i}"))?
                .column_f64("power_w", 1234.5 + i as f64 * 0.25)?
                .column_f64("voltage_v", 230.125)?
                .column_i64("energy_wh", -5 + i)?
                .column_bool("online", i % 2 == 0)?
                .column_str("firmware", "v1.2 \"beta\", x=1")?
                .at(TimestampNanos::new(1_700_000_000_000_000_000 + i))?;
        }
        sender.flush(&mut buffer)?;
        // A second flush with a new field and a rewritten point.
        buffer
            .table("qdb_meter")?
            .symbol("site_id", "s1")?
            .symbol("device_id", "m0")?
            .column_f64("power_w", 99.0)?
            .column_f64("frequency_hz", 49.98)?
            .at(TimestampNanos::new(1_700_000_000_000_000_000))?;
        sender.flush(&mut buffer)?;
        Ok(())
    })
    .await
    .expect("sender thread")
    .expect("questdb-rs sender must write to gridlake");

    let rows = server
        .sql(
            "SELECT site_id, device_id, CAST(time AS BIGINT) AS t, power_w, voltage_v, \
             energy_wh, online, firmware, frequency_hz FROM qdb_meter ORDER BY device_id",
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        let i = i as i64;
        assert_eq!(string(row, "site_id"), "s1");
        assert_eq!(string(row, "device_id"), format!("m{i}"));
        assert_eq!(int(row, "t"), 1_700_000_000_000_000_000 + i);
        if i == 0 {
            // The rewrite of the point wins (its other fields are not checked: the
            // contract does not say whether a rewrite merges or replaces them).
            assert_eq!(float(row, "power_w"), 99.0);
            assert_eq!(float(row, "frequency_hz"), 49.98);
            continue;
        }
        assert_eq!(float(row, "power_w"), 1234.5 + i as f64 * 0.25);
        assert_eq!(float(row, "voltage_v"), 230.125);
        assert_eq!(int(row, "energy_wh"), -5 + i);
        assert_eq!(row["online"], Value::Bool(i % 2 == 0));
        assert_eq!(string(row, "firmware"), "v1.2 \"beta\", x=1");
        assert!(row.get("frequency_hz").is_none_or(Value::is_null));
    }
}

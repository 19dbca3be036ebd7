//! What the servers count about themselves: Prometheus text (gridlake, VictoriaMetrics)
//! and InfluxDB 1.x's `/debug/vars`. A write run compares the server's count with the
//! rows it acknowledged, so a server that answers 204 and then drops points (timestamps
//! out of range, say) does not look faster than one that keeps them.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::cli::Target;

/// Sum over all label sets of the samples of `name` in Prometheus text format. `name`
/// may include labels (`vm_rows_inserted_total{type="influx"}`) to pick one series.
/// A family with no samples yet sums to 0; `None` when a sample value is unreadable.
pub(crate) fn sum_metric(text: &str, name: &str) -> Option<u64> {
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `name{...} v` or `name v`.
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        total += value;
    }
    Some(total as u64)
}

/// A server's own count of what it took in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count {
    /// Rows (gridlake, InfluxDB) or samples, that is field values (VictoriaMetrics),
    /// the server took in.
    pub(crate) accepted: u64,
    /// Points it accepted over HTTP and then dropped.
    pub(crate) dropped: u64,
}

/// What a count counts, and where it comes from.
pub(crate) fn describe(target: Target) -> (&'static str, &'static str) {
    match target {
        Target::Gridlake => ("rows", "gridlake_rows_written_total"),
        Target::Victoriametrics => (
            "values",
            "vm_rows_inserted_total{type=\"influx\"}, vm_rows_ignored_total",
        ),
        Target::Influxdb => ("rows", "/debug/vars write.pointReq, write.writeDrop"),
    }
}

/// Reads the target's counters; `None` when the server does not answer with them.
pub(crate) fn read(client: &Client, target: Target, base: &str) -> Option<Count> {
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .ok()
    };
    match target {
        Target::Gridlake => {
            let text = get("/metrics")?;
            Some(Count {
                accepted: sum_metric(&text, "gridlake_rows_written_total")?,
                dropped: 0,
            })
        }
        Target::Victoriametrics => {
            let text = get("/metrics")?;
            Some(Count {
                accepted: sum_metric(&text, "vm_rows_inserted_total{type=\"influx\"}")?,
                dropped: sum_metric(&text, "vm_rows_ignored_total")?,
            })
        }
        Target::Influxdb => influx_count(&get("/debug/vars")?),
    }
}

/// `write.values.pointReq` and `writeDrop` of InfluxDB 1.x's `/debug/vars`.
fn influx_count(vars: &str) -> Option<Count> {
    let vars: Value = serde_json::from_str(vars).ok()?;
    let write = &vars["write"]["values"];
    Some(Count {
        accepted: write["pointReq"].as_u64()?,
        dropped: write["writeDrop"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_label_sets() {
        let text = "# HELP gridlake_mqtt_readings Rows decoded.\n\
                    # TYPE gridlake_mqtt_readings counter\n\
                    gridlake_mqtt_readings_total{subscription=\"sim-meter\"} 1200\n\
                    gridlake_mqtt_readings_total{subscription=\"sim-inverter\"} 34\n\
                    gridlake_mqtt_readings_total_other 5\n\
                    gridlake_mqtt_subscribed 1\n\
                    vm_rows_inserted_total{type=\"influx\"} 3075000\n\
                    vm_rows_inserted_total{type=\"graphite\"} 9\n";
        assert_eq!(sum_metric(text, "gridlake_mqtt_readings_total"), Some(1234));
        assert_eq!(sum_metric(text, "gridlake_mqtt_subscribed"), Some(1));
        assert_eq!(
            sum_metric(text, "vm_rows_inserted_total{type=\"influx\"}"),
            Some(3_075_000)
        );
        // A family with no samples yet: nothing stored.
        assert_eq!(sum_metric("# TYPE x counter\n", "x_total"), Some(0));
        assert_eq!(sum_metric("x_total abc\n", "x_total"), None);
    }

    #[test]
    fn influx_debug_vars_give_points_and_drops() {
        let vars = r#"{"system": {"currentTime": "2026-11-21T16:50:00Z"},
            "write": {"name": "write", "tags": null, "values": {"pointReq": 635000,
            "pointReqLocal": 635000, "req": 127, "writeDrop": 3, "writeOk": 127}}}"#;
        assert_eq!(
            influx_count(vars),
            Some(Count {
                accepted: 635_000,
                dropped: 3
            })
        );
        assert_eq!(influx_count("{}"), None);
    }
}

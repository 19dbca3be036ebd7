//! The device gate: where every write path asks the device registry which rows may be
//! stored, and tells it which were.
//!
//! The registry itself lives in the server (it needs the side store); the collectors
//! here only know this trait, so `ingest` does not depend on the `crm` crate, and tests
//! can gate with a few lines of their own.
//!
//! ```text
//!  parse / decode ─► apply_canonical ─► DeviceGate::check ─► Store::validate ─┐
//!                                           │                                 │
//!                                           │        DeviceGate::note_stored ◄┘ (rows that
//!                                           │                  │ will be stored)
//!                                           ▼                  ▼
//!                        refused rows: LineError         WAL (HTTP: unless the
//!                        (HTTP answer, MQTT               request is all-or-nothing
//!                        `_rejected`, Modbus               and a row was refused)
//!                        invalid rows)
//! ```
//!
//! Two steps, because a row the gate admits may still be refused by the store's
//! validation, or dropped with the rest of an all-or-nothing request: such a row must
//! not register its device or count as a sign of life.

use devices::tables::DEVICE_ID;
use storage::{LineError, ParsedLine, Row, WriteBatch};

/// Decides which rows' devices may be stored, and learns of the devices stored.
///
/// Both methods run on the write path (a million rows a second over HTTP), so they are
/// synchronous and must not wait for I/O: anything slow (registering a new device,
/// writing last-seen times) is queued for a background task.
pub trait DeviceGate: Send + Sync + std::fmt::Debug {
    /// Removes from `lines` the rows that may not be stored, keeping the order of the
    /// others, and pushes a [`LineError`] for each (with the row's `line` number and a
    /// reason that names the device and what to do about it). `site` is the site a
    /// site-bound writer (a gateway's token) is confined to; `None` for writers that
    /// may write for any device.
    ///
    /// Changes nothing in the registry: call [`DeviceGate::note_stored`] with the rows
    /// that are then actually stored.
    fn check(&self, lines: &mut Vec<ParsedLine>, rejected: &mut Vec<LineError>, site: Option<i64>);

    /// The rows of `batch` (passed by [`DeviceGate::check`] with the same `site`, then
    /// validated) are being stored: registers the devices among them the registry does
    /// not know yet (a site-bound writer's on its site), and notes each device's newest
    /// reading time.
    fn note_stored(&self, batch: &WriteBatch, site: Option<i64>);
}

/// The row's `device_id` tag, if it has one. Tags are sorted by key, so the search
/// stops at the first key past `device_id`.
pub fn device_id(row: &Row) -> Option<&str> {
    for (key, value) in &row.tags {
        match key.as_str().cmp(DEVICE_ID) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Some(value),
            std::cmp::Ordering::Greater => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use storage::FieldValue;

    use super::*;

    fn row(tags: &[(&str, &str)]) -> Row {
        Row {
            time: 0,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: vec![("v".into(), FieldValue::F64(1.0))],
        }
    }

    #[test]
    fn device_id_is_found_among_sorted_tags() {
        assert_eq!(
            device_id(&row(&[("a", "x"), ("device_id", "m1"), ("site_id", "s")])),
            Some("m1")
        );
        assert_eq!(device_id(&row(&[("device_id", "m2")])), Some("m2"));
        assert_eq!(device_id(&row(&[("a", "x"), ("site_id", "s")])), None);
        assert_eq!(device_id(&row(&[])), None);
    }
}

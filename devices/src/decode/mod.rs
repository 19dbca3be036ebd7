//! Payload decoders: pure functions (and, for formats that send partial updates, small
//! state machines) from the bytes a device publishes to [`Reading`](crate::Reading)s of the canonical
//! tables.
//!
//! Each decoder is unit-tested on example payloads taken from the device's own
//! documentation; the source is cited next to each fixture. Line protocol as an MQTT
//! payload is decoded by `ingest`, which owns the line-protocol parser.
//!
//! What the decoders share lives here, so that every decoder quotes device text, reports
//! problems, names devices and writes `device_status` rows the same way.

use chrono::DateTime;
use serde_json::Value as Json;

use crate::reading::{DecodeContext, DecodeError, Decoded, Reading, Value};
use crate::tables::{DEVICE_ID, DEVICE_STATUS, TableSpec};

pub mod availability;
pub mod json_map;
pub mod ocpp;
pub mod shelly;
pub mod tasmota;
pub mod zigbee2mqtt;

/// Parses a JSON payload, naming the problem and its position when it is not JSON.
pub fn parse_json(payload: &[u8]) -> Result<serde_json::Value, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::new(format!("not JSON: {e}")))
}

/// Seconds since the Unix epoch (fractional, as Shelly's `ts`) to nanoseconds; `None`
/// when out of range or not finite.
pub fn seconds_to_ns(seconds: f64) -> Option<i64> {
    let ns = (seconds * 1e9).round();
    (ns.is_finite() && ns >= i64::MIN as f64 && ns <= i64::MAX as f64).then_some(ns as i64)
}

/// An RFC 3339 timestamp (`2024-03-01T12:00:00Z`, `2024-03-01T12:00:00.123+01:00`) to
/// nanoseconds since the Unix epoch.
pub fn rfc3339_to_ns(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

/// The device id: the context's (configured or from the topic template) when set,
/// otherwise `fallback` (what the payload or topic says).
pub fn device_id(ctx: &DecodeContext<'_>, fallback: Option<&str>) -> Option<String> {
    ctx.tag(DEVICE_ID)
        .or(fallback)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Earliest plausible device timestamp: 2016-01-01T00:00:00Z in Unix seconds (Tasmota's
/// own threshold for a valid clock). A device whose clock has not been set yet reports
/// times near 1970.
pub(crate) const EARLIEST_PLAUSIBLE_S: i64 = 1_451_606_400;

/// How many characters of device text a message quotes: enough to recognise the value,
/// not so many that a runaway payload floods the log.
const QUOTED_CHARS: usize = 64;

/// How many problems the error of a payload with nothing usable quotes; the rest are
/// counted.
const MAX_QUOTED_PROBLEMS: usize = 3;

/// Whether `payload` is empty (or only white space): MQTT's way of deleting a retained
/// message, which leaves nothing to store.
pub(crate) fn deletes_retained(payload: &[u8]) -> bool {
    payload.iter().all(u8::is_ascii_whitespace)
}

/// The device id, or an error saying where it was looked for: `missing` says what the
/// topic (and payload) lack, e.g. `names no device`.
pub(crate) fn require_device(
    ctx: &DecodeContext<'_>,
    fallback: Option<&str>,
    missing: &str,
) -> Result<String, DecodeError> {
    device_id(ctx, fallback).ok_or_else(|| {
        DecodeError::new(format!(
            "no device id: topic {:?} {missing} and the subscription sets no device_id",
            ctx.topic
        ))
    })
}

/// A [`DEVICE_STATUS`] row: whether `device` is reachable, and the payload that said so
/// as `reason`. Availability payloads carry no timestamp, so the row is at the receive
/// time.
pub(crate) fn device_status(
    ctx: &DecodeContext<'_>,
    device: String,
    online: bool,
    reason: impl Into<Value>,
) -> Reading {
    Reading::new(DEVICE_STATUS.name, ctx.received_at)
        .tag(DEVICE_ID, device)
        .field("online", online)
        .field("reason", reason)
}

/// The column a value goes to: the first of `candidates` the canonical table `spec`
/// defines (`None` when it defines none), or the first candidate for any other table
/// (schema on write accepts it).
pub(crate) fn column(
    spec: Option<&TableSpec>,
    candidates: &[&'static str],
) -> Option<&'static str> {
    match spec {
        Some(t) => candidates.iter().copied().find(|c| t.column(c).is_some()),
        None => candidates.first().copied(),
    }
}

/// A finite number from a JSON number or a numeric string (`"12.5"`, as OCPP 1.6 and
/// many home-made devices send them); `None` for anything else.
pub(crate) fn lenient_number(value: &Json) -> Option<f64> {
    match value {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// Readings with their problems; only problems (nothing decoded) is an error carrying
/// all of them.
pub(crate) fn finish(out: Decoded) -> Result<Decoded, DecodeError> {
    if out.readings.is_empty() && !out.problems.is_empty() {
        return Err(DecodeError::new(out.problems.join("; ")));
    }
    Ok(out)
}

/// The first [`MAX_QUOTED_PROBLEMS`] problems joined with `; `, and how many more there
/// were: the body of the error for a payload whose every part failed, where the problems
/// may run into the hundreds.
pub(crate) fn summarise_problems(problems: &[String]) -> String {
    let mut text = problems
        .iter()
        .take(MAX_QUOTED_PROBLEMS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > MAX_QUOTED_PROBLEMS {
        text.push_str(&format!(
            "; and {} more",
            problems.len() - MAX_QUOTED_PROBLEMS
        ));
    }
    text
}

/// A JSON value in words, for error messages: `the string "on"`, `5`, `true`, `null`,
/// `an array`, `an object`. Strings are cut as [`clip`] cuts them.
pub(crate) fn describe(value: &Json) -> String {
    match value {
        Json::String(s) => format!("the string {:?}", clip(s)),
        other => quote(other),
    }
}

/// A JSON value as JSON text, for error messages: `"on"`, `5`, `true`, `null`; containers
/// are named (`an array`, `an object`) and long text is cut with `…`.
pub(crate) fn quote(value: &Json) -> String {
    match value {
        Json::Object(_) => "an object".to_string(),
        Json::Array(_) => "an array".to_string(),
        Json::Null => "null".to_string(),
        other => clip_marked(other.to_string(), QUOTED_CHARS),
    }
}

/// At most [`QUOTED_CHARS`] characters of device text, for a message; the cut is not
/// marked ([`clip_marked`] marks it).
pub(crate) fn clip(text: &str) -> &str {
    match cut(text, QUOTED_CHARS) {
        Some(end) => &text[..end],
        None => text,
    }
}

/// `text` cut to `max_chars` characters, the cut marked with `…`.
pub(crate) fn clip_marked(mut text: String, max_chars: usize) -> String {
    if let Some(end) = cut(&text, max_chars) {
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The byte offset after the first `max_chars` characters of `text`; `None` when it is
/// no longer than that.
fn cut(text: &str, max_chars: usize) -> Option<usize> {
    text.char_indices().nth(max_chars).map(|(i, _)| i)
}

/// What the decoders' tests share: a receive time, decoding a payload as if it arrived
/// on a topic, and reading a row's values.
#[cfg(test)]
pub(crate) mod testing {
    use crate::reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};

    /// When test payloads are received (2023-11-14T22:13:20Z).
    pub(crate) const RECEIVED: i64 = 1_700_000_000_000_000_000;

    /// Decodes `payload` as received on `topic` at [`RECEIVED`], the subscription setting
    /// `tags`.
    pub(crate) fn run(
        decoder: &mut impl Decode,
        topic: &str,
        tags: &[(String, String)],
        payload: impl AsRef<[u8]>,
    ) -> Result<Decoded, DecodeError> {
        let ctx = DecodeContext {
            topic,
            tags,
            received_at: RECEIVED,
        };
        decoder.decode(&ctx, payload.as_ref())
    }

    /// [`run`] without tags, for a payload that must decode.
    pub(crate) fn decode(decoder: &mut impl Decode, topic: &str, payload: &str) -> Decoded {
        run(decoder, topic, &[], payload).unwrap()
    }

    /// [`run`] without tags, for a payload that must fail: the error message.
    pub(crate) fn decode_err(decoder: &mut impl Decode, topic: &str, payload: &str) -> String {
        run(decoder, topic, &[], payload).unwrap_err().to_string()
    }

    /// Checks that each of `expected` is part of one of `problems`.
    pub(crate) fn assert_problems(problems: &[String], expected: &[&str]) {
        let all = problems.join("\n");
        for fragment in expected {
            assert!(all.contains(fragment), "no {fragment:?} in\n{all}");
        }
    }

    /// Checks that `reading` is a `device_status` row at [`RECEIVED`] saying whether
    /// `device` is `online`.
    pub(crate) fn assert_device_status(reading: &Reading, device: &str, online: bool) {
        assert_eq!(reading.table, "device_status");
        assert_eq!(reading.time, RECEIVED);
        assert_eq!(reading.tag_value("device_id"), Some(device));
        assert_eq!(reading.field_value("online"), Some(&Value::Bool(online)));
    }

    /// Decodes every proper prefix of `payload`, as a connection cut mid-message delivers
    /// it: errors are expected, panics fail the test.
    pub(crate) fn decode_truncated(decoder: &mut impl Decode, topic: &str, payload: &str) {
        for end in 0..payload.len() {
            let _ = run(decoder, topic, &[], &payload.as_bytes()[..end]);
        }
    }

    /// The float `column` of `reading`, `None` when it is absent; another type fails the
    /// test.
    pub(crate) fn f(reading: &Reading, column: &str) -> Option<f64> {
        match reading.field_value(column) {
            Some(Value::F64(v)) => Some(*v),
            None => None,
            other => panic!("{column} is {other:?}"),
        }
    }

    /// The float `column` of `reading`; absent or another type fails the test.
    pub(crate) fn f64_of(reading: &Reading, column: &str) -> f64 {
        match reading.field_value(column) {
            Some(Value::F64(x)) => *x,
            other => panic!("{column} is {other:?} in {reading:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_to_nanoseconds() {
        // f64 seconds carry about 256 ns of precision at today's epoch values.
        let ns = seconds_to_ns(1631266595.43).unwrap();
        assert!((ns - 1_631_266_595_430_000_000).abs() < 1_000, "{ns}");
        assert_eq!(seconds_to_ns(f64::NAN), None);
        assert_eq!(
            rfc3339_to_ns("2024-03-01T12:00:00Z"),
            Some(1_709_294_400_000_000_000)
        );
        assert_eq!(
            rfc3339_to_ns("2024-03-01T13:00:00+01:00"),
            Some(1_709_294_400_000_000_000)
        );
        assert_eq!(rfc3339_to_ns("yesterday"), None);
        let err = parse_json(b"{oops").unwrap_err().to_string();
        assert!(err.starts_with("not JSON: "), "{err}");
    }

    #[test]
    fn messages_quote_json_values_briefly() {
        use serde_json::json;
        for (value, words) in [
            (json!(null), "null"),
            (json!(true), "true"),
            (json!(-2.5), "-2.5"),
            (json!([1]), "an array"),
            (json!({"a": 1}), "an object"),
        ] {
            assert_eq!(describe(&value), words);
            assert_eq!(quote(&value), words);
        }
        assert_eq!(describe(&json!("on\n")), r#"the string "on\n""#);
        assert_eq!(quote(&json!("on\n")), r#""on\n""#);
        // Cut at 64 characters, not bytes; quote's cut counts the opening quote.
        let long = json!("é".repeat(100));
        assert_eq!(
            describe(&long),
            format!("the string \"{}\"", "é".repeat(64))
        );
        assert_eq!(quote(&long), format!("\"{}…", "é".repeat(63)));
        assert_eq!(clip("short"), "short");
        assert_eq!(clip_marked("abc".to_string(), 3), "abc");
        assert_eq!(clip_marked("abcd".to_string(), 3), "abc…");
    }

    #[test]
    fn problems_become_an_error_only_when_nothing_decoded() {
        let problems = |n: usize| (1..=n).map(|i| format!("p{i}")).collect::<Vec<_>>();
        let only_problems = Decoded {
            readings: Vec::new(),
            problems: problems(2),
        };
        assert_eq!(finish(only_problems).unwrap_err().to_string(), "p1; p2");
        let with_reading = Decoded {
            readings: vec![Reading::new("t", 0).field("x", 1.0)],
            problems: problems(1),
        };
        assert_eq!(finish(with_reading.clone()).unwrap(), with_reading);
        assert_eq!(summarise_problems(&problems(3)), "p1; p2; p3");
        assert_eq!(summarise_problems(&problems(5)), "p1; p2; p3; and 2 more");
    }

    #[test]
    fn values_go_to_the_columns_a_table_defines() {
        let meter = crate::tables::table("meter");
        let energy = ["energy_wh", "energy_import_wh"];
        assert_eq!(column(meter, &energy), Some("energy_import_wh"));
        assert_eq!(column(meter, &["switch_on"]), None);
        assert_eq!(column(None, &energy), Some("energy_wh"));
    }

    #[test]
    fn a_missing_device_id_says_where_it_was_looked_for() {
        let tags = [("device_id".to_string(), "plug-1".to_string())];
        let ctx = DecodeContext {
            topic: "x/LWT",
            tags: &tags,
            received_at: 0,
        };
        assert_eq!(
            require_device(&ctx, Some("x"), "names no device").unwrap(),
            "plug-1"
        );
        let ctx = DecodeContext { tags: &[], ..ctx };
        assert_eq!(
            require_device(&ctx, Some("x"), "names no device").unwrap(),
            "x"
        );
        assert_eq!(
            require_device(&ctx, Some(""), "names no device")
                .unwrap_err()
                .to_string(),
            r#"no device id: topic "x/LWT" names no device and the subscription sets no device_id"#
        );
    }
}

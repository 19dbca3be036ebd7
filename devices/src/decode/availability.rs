//! Availability and last-will payloads → `device_status` rows.
//!
//! Devices announce whether they are reachable on a retained topic, usually as the MQTT
//! last will so the broker publishes "offline" when the connection drops:
//!
//! | Source        | Topic                             | Payloads                         |
//! |---------------|-----------------------------------|----------------------------------|
//! | Tasmota       | `tele/<device>/LWT`               | `Online`, `Offline`              |
//! | Shelly Gen2   | `<device>/online`                 | `true`, `false`                  |
//! | Zigbee2MQTT   | `<base>/<device>/availability`    | `{"state":"online"}` (legacy: `online`) |
//!
//! The decoder accepts plain text or JSON (a string, a boolean, a number, or an object
//! with a `state`, `status` or `online` member) and matches the word case-insensitively
//! against [`AvailabilityOptions`]. A word in neither list is an error naming the payload
//! and the accepted words: guessing "offline" for an unknown word would record an outage
//! that never happened.
//!
//! The row's time is the receive time: these payloads carry no timestamp. The device is
//! the context's `device_id` when the subscription names it, otherwise the topic segment
//! before the last (`tele/plug1/LWT` → `plug1`). Zigbee2MQTT friendly names may contain
//! `/`; name the device in the topic template for those.

use serde::{Deserialize, Serialize};

use crate::decode::{clip_marked, device_id, device_status, parse_json};
use crate::reading::{Decode, DecodeContext, DecodeError, Decoded};

/// Longest `reason` stored; availability words are short, so anything longer is a
/// JSON object whose other members are not worth a kilobyte per row.
const MAX_REASON_CHARS: usize = 256;

/// Which payload words mean online and which mean offline. Matching ignores ASCII case
/// and surrounding whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvailabilityOptions {
    /// Words meaning the device is reachable.
    pub online: Vec<String>,
    /// Words meaning the device is gone.
    pub offline: Vec<String>,
}

impl Default for AvailabilityOptions {
    fn default() -> Self {
        Self {
            online: ["online", "true", "1", "on", "connected"]
                .map(String::from)
                .to_vec(),
            offline: ["offline", "false", "0", "off", "disconnected"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl AvailabilityOptions {
    /// Checks the options make sense: both lists non-empty, no blank word, and no word in
    /// both lists. Call it where configuration is loaded; [`AvailabilityDecoder::new`]
    /// accepts any options (a word in both lists then counts as online).
    pub fn validate(&self) -> Result<(), String> {
        for (name, words) in [("online", &self.online), ("offline", &self.offline)] {
            if words.is_empty() {
                return Err(format!("availability: the {name} list is empty"));
            }
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err(format!("availability: the {name} list has an empty word"));
            }
        }
        if let Some(both) = self.online.iter().find(|w| {
            self.offline
                .iter()
                .any(|o| o.trim().eq_ignore_ascii_case(w.trim()))
        }) {
            return Err(format!(
                "availability: {:?} is in both the online and the offline list",
                both.trim()
            ));
        }
        Ok(())
    }
}

/// Decodes availability and last-will payloads into
/// [`DEVICE_STATUS`](crate::tables::DEVICE_STATUS) rows with `online` and `reason` (the
/// payload as received).
#[derive(Debug, Clone)]
pub struct AvailabilityDecoder {
    online: Vec<String>,
    offline: Vec<String>,
}

impl AvailabilityDecoder {
    /// A decoder matching payload words against `opts`.
    pub fn new(opts: AvailabilityOptions) -> Self {
        let normalise = |words: Vec<String>| -> Vec<String> {
            words
                .into_iter()
                .map(|w| w.trim().to_ascii_lowercase())
                .filter(|w| !w.is_empty())
                .collect()
        };
        Self {
            online: normalise(opts.online),
            offline: normalise(opts.offline),
        }
    }

    fn is_online(&self, word: &str) -> Option<bool> {
        let word = word.trim().to_ascii_lowercase();
        if self.online.contains(&word) {
            Some(true)
        } else if self.offline.contains(&word) {
            Some(false)
        } else {
            None
        }
    }
}

impl Default for AvailabilityDecoder {
    fn default() -> Self {
        Self::new(AvailabilityOptions::default())
    }
}

impl Decode for AvailabilityDecoder {
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let text = std::str::from_utf8(payload)
            .map_err(|e| DecodeError::new(format!("availability payload is not UTF-8: {e}")))?
            .trim();
        if text.is_empty() {
            return Err(DecodeError::new(
                "availability payload is empty; expected a word such as online or offline",
            ));
        }
        let word = availability_word(text)?;
        let online = self.is_online(&word).ok_or_else(|| {
            DecodeError::new(format!(
                "availability payload {:?} is neither online ({}) nor offline ({})",
                clip(&word),
                self.online.join(", "),
                self.offline.join(", ")
            ))
        })?;
        let device = device_id(ctx, device_from_topic(ctx.topic)).ok_or_else(|| {
            DecodeError::new(format!(
                "cannot tell which device topic {:?} is about: it has no segment before the \
                 last; name the device with {{device_id}} in the subscription's topic template",
                ctx.topic
            ))
        })?;
        let reading = device_status(ctx, device, online, clip(text));
        Ok(Decoded::readings(vec![reading]))
    }
}

/// The availability word of a payload: the JSON value (or object member) as text, or the
/// payload itself when it is not JSON (`Online`, `offline`).
fn availability_word(text: &str) -> Result<String, DecodeError> {
    // Plain words (`Online`) are not JSON; only payloads that look like JSON are parsed
    // as such, so a stray `{` is reported as broken JSON rather than an unknown word.
    let looks_like_json = text.starts_with(['{', '[', '"']);
    let value = match parse_json(text.as_bytes()) {
        Ok(value) => value,
        Err(e) if looks_like_json => return Err(e),
        Err(_) => return Ok(text.to_string()),
    };
    match &value {
        serde_json::Value::Object(map) => {
            let member = ["state", "status", "online"]
                .into_iter()
                .find_map(|key| map.get(key).map(|v| (key, v)));
            match member {
                Some((key, v)) => scalar_word(v).ok_or_else(|| {
                    DecodeError::new(format!(
                        "availability object member {key:?} is {v}, expected a string or boolean"
                    ))
                }),
                None => Err(DecodeError::new(format!(
                    "availability object {} has no state, status or online member",
                    clip(text)
                ))),
            }
        }
        other => scalar_word(other).ok_or_else(|| {
            DecodeError::new(format!(
                "availability payload {} is not a word, boolean or object",
                clip(text)
            ))
        }),
    }
}

fn scalar_word(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The topic segment before the last: `tele/<device>/LWT`, `<x>/<device>/availability`,
/// `<device>/online`.
fn device_from_topic(topic: &str) -> Option<&str> {
    let mut segments = topic.rsplit('/');
    segments.next()?;
    segments.next().filter(|s| !s.is_empty())
}

/// At most [`MAX_REASON_CHARS`] characters of the payload, for the `reason` and for
/// messages.
fn clip(text: &str) -> String {
    clip_marked(text.to_string(), MAX_REASON_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{assert_device_status, run};
    use crate::reading::Value;

    fn decode_on(
        topic: &str,
        tags: &[(String, String)],
        payload: &str,
    ) -> Result<Decoded, DecodeError> {
        run(&mut AvailabilityDecoder::default(), topic, tags, payload)
    }

    fn online_of(decoded: &Decoded) -> bool {
        assert_eq!(decoded.readings.len(), 1, "{decoded:?}");
        match decoded.readings[0].field_value("online") {
            Some(Value::Bool(b)) => *b,
            other => panic!("online is {other:?}"),
        }
    }

    #[test]
    fn tasmota_lwt_is_online_and_offline() {
        // Tasmota publishes `Online` / `Offline` (retained) on tele/<topic>/LWT:
        // https://tasmota.github.io/docs/MQTT/#status-topics
        let d = decode_on("tele/tasmota_plug/LWT", &[], "Online").unwrap();
        assert!(online_of(&d));
        let r = &d.readings[0];
        assert_device_status(r, "tasmota_plug", true);
        assert_eq!(r.field_value("reason"), Some(&Value::Str("Online".into())));

        let d = decode_on("tele/tasmota_plug/LWT", &[], "Offline").unwrap();
        assert!(!online_of(&d));
    }

    #[test]
    fn shelly_online_topic_is_a_boolean() {
        // Shelly Gen2 publishes `true` / `false` on <topic_prefix>/online:
        // https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt
        let d = decode_on("shellyplus1pm-a8032ab1c2d3/online", &[], "true").unwrap();
        assert!(online_of(&d));
        assert_eq!(
            d.readings[0].tag_value("device_id"),
            Some("shellyplus1pm-a8032ab1c2d3")
        );
        let d = decode_on("shellyplus1pm-a8032ab1c2d3/online", &[], "false").unwrap();
        assert!(!online_of(&d));
    }

    #[test]
    fn zigbee2mqtt_availability_is_json_or_legacy_text() {
        // Zigbee2MQTT publishes {"state":"online"} / {"state":"offline"} on
        // <base>/<friendly_name>/availability (legacy mode: the bare word):
        // https://www.zigbee2mqtt.io/guide/configuration/device-availability.html
        let d = decode_on(
            "zigbee2mqtt/kitchen_plug/availability",
            &[],
            r#"{"state":"online"}"#,
        )
        .unwrap();
        assert!(online_of(&d));
        assert_eq!(d.readings[0].tag_value("device_id"), Some("kitchen_plug"));
        assert_eq!(
            d.readings[0].field_value("reason"),
            Some(&Value::Str(r#"{"state":"online"}"#.into()))
        );
        let d = decode_on(
            "zigbee2mqtt/kitchen_plug/availability",
            &[],
            r#"{"state":"offline"}"#,
        )
        .unwrap();
        assert!(!online_of(&d));
        let d = decode_on("zigbee2mqtt/kitchen_plug/availability", &[], "offline").unwrap();
        assert!(!online_of(&d));
    }

    #[test]
    fn matching_ignores_case_whitespace_and_json_types() {
        for (payload, online) in [
            ("ONLINE", true),
            ("  Connected\n", true),
            ("\"on\"", true),
            ("1", true),
            ("0", false),
            ("Disconnected", false),
            (r#"{"online": false}"#, false),
            (r#"{"status": "Online"}"#, true),
            ("\"OFF\"", false),
        ] {
            let d = decode_on("a/dev/availability", &[], payload).unwrap();
            assert_eq!(online_of(&d), online, "{payload:?}");
        }
    }

    #[test]
    fn context_device_id_wins_over_the_topic() {
        let tags = vec![("device_id".to_string(), "plug-7".to_string())];
        let d = decode_on("tele/tasmota_5F3A/LWT", &tags, "Online").unwrap();
        assert_eq!(d.readings[0].tag_value("device_id"), Some("plug-7"));
        // Only the device id comes from the context; the collector adds the rest.
        let tags = vec![
            ("site_id".to_string(), "home".to_string()),
            ("device_id".to_string(), "plug-7".to_string()),
        ];
        let d = decode_on("x/LWT", &tags, "Online").unwrap();
        assert_eq!(
            d.readings[0].tags,
            vec![("device_id".into(), "plug-7".into())]
        );
    }

    #[test]
    fn custom_words_replace_the_defaults() {
        let opts: AvailabilityOptions =
            serde_json::from_str(r#"{"online": ["alive"], "offline": ["dead", "lost"]}"#).unwrap();
        opts.validate().unwrap();
        let mut decoder = AvailabilityDecoder::new(opts);
        let mut decode = |payload| run(&mut decoder, "site/heatpump/status", &[], payload);
        assert!(online_of(&decode("Alive").unwrap()));
        assert!(!online_of(&decode("LOST").unwrap()));
        let err = decode("online").unwrap_err().to_string();
        assert!(
            err.contains("\"online\"") && err.contains("alive") && err.contains("dead, lost"),
            "{err}"
        );
    }

    #[test]
    fn options_default_and_reject_unknown_keys() {
        let opts: AvailabilityOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(opts, AvailabilityOptions::default());
        let opts: AvailabilityOptions = serde_json::from_str(r#"{"online": ["up"]}"#).unwrap();
        assert_eq!(opts.offline, AvailabilityOptions::default().offline);
        let err = serde_json::from_str::<AvailabilityOptions>(r#"{"onlne": ["up"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("onlne"), "{err}");
    }

    #[test]
    fn validate_names_the_conflict() {
        let opts = AvailabilityOptions {
            online: vec!["up".into(), "Ready".into()],
            offline: vec!["down".into(), "ready".into()],
        };
        let err = opts.validate().unwrap_err();
        assert!(err.contains("\"Ready\"") && err.contains("both"), "{err}");
        let opts = AvailabilityOptions {
            online: vec![],
            offline: vec!["down".into()],
        };
        assert!(
            opts.validate()
                .unwrap_err()
                .contains("online list is empty")
        );
        let opts = AvailabilityOptions {
            online: vec!["up".into()],
            offline: vec![" ".into()],
        };
        assert!(opts.validate().unwrap_err().contains("empty word"));
        AvailabilityOptions::default().validate().unwrap();
    }

    #[test]
    fn unknown_words_are_errors_naming_payload_and_accepted_values() {
        for (topic, payload, word) in [
            ("tele/plug/LWT", "maybe", "\"maybe\""),
            ("z/plug/availability", r#"{"state":"flaky"}"#, "\"flaky\""),
            ("tele/plug/LWT", "2", "\"2\""),
        ] {
            let err = decode_on(topic, &[], payload).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
            assert!(err.contains("online, true, 1, on, connected"), "{err}");
            assert!(
                err.contains("offline, false, 0, off, disconnected"),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for (topic, payload, expected) in [
            ("tele/plug/LWT", "  ", "empty"),
            (
                "z/plug/availability",
                r#"{"linkquality": 80}"#,
                "no state, status or online member",
            ),
            (
                "z/plug/availability",
                r#"{"state": null}"#,
                "\"state\" is null",
            ),
            ("z/plug/availability", "[true]", "not a word"),
        ] {
            let err = decode_on(topic, &[], payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
        let err = decode_on("tele/plug/LWT", &[], r#"{"state": "online""#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("not JSON"), "{err}");
        let mut d = AvailabilityDecoder::default();
        let err = run(&mut d, "tele/plug/LWT", &[], [0xff, 0xfe])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn a_topic_without_a_device_segment_needs_the_context() {
        let err = decode_on("online", &[], "true").unwrap_err().to_string();
        assert!(
            err.contains("\"online\"") && err.contains("{device_id}"),
            "{err}"
        );
        let err = decode_on("/online", &[], "true").unwrap_err().to_string();
        assert!(err.contains("topic"), "{err}");
        let tags = vec![("device_id".to_string(), "gw".to_string())];
        let d = decode_on("online", &tags, "true").unwrap();
        assert_eq!(d.readings[0].tag_value("device_id"), Some("gw"));
    }

    #[test]
    fn long_reasons_are_clipped() {
        let long = format!(r#"{{"state":"online","note":"{}"}}"#, "x".repeat(1000));
        let d = decode_on("z/plug/availability", &[], &long).unwrap();
        let Some(Value::Str(reason)) = d.readings[0].field_value("reason") else {
            panic!("no reason");
        };
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
        assert!(reason.ends_with('…'));
    }
}

//! Generic JSON payloads mapped to readings by configuration, for devices gridlake has no
//! decoder for (a home-made ESP32 meter, an inverter bridge, a vendor cloud's webhook).
//!
//! Paths are JSONPath queries (RFC 9535, via `serde_json_path`). `records` selects the
//! records of a batch in the payload; every other path is relative to one record, so
//! `$` is the record itself. Without `records` the whole payload is one record.
//!
//! ```toml
//! table = "meter"
//! records = "$.readings"        # optional: an array of records (or a query selecting each)
//! time = "$.ts"                 # optional: else the receive time
//! time_format = "unix_ms"       # auto | rfc3339 | unix_s | unix_ms | unix_us | unix_ns
//! quality = "$.q"               # optional: actual | estimated | substituted
//!
//! [[tags]]
//! tag = "phase"
//! path = "$.phase"
//!
//! [[fields]]
//! column = "power_w"
//! path = "$.p_kw"
//! scale = 1000.0                # stored = value × scale + offset
//!
//! [[fields]]
//! column = "energy_import_wh"
//! path = "$.e_in"
//! type = "float"                # float (default) | integer | boolean | string
//! ```
//!
//! What happens with each part of a payload:
//!
//! - A field whose path matches nothing, or matches `null`, is left out: payloads often
//!   omit measurements, and a missing value is never stored as zero.
//! - A field of the wrong type (`"abc"` for a float) is left out and reported as a
//!   problem naming the record (0-based) and column: `record 3: field power_w: expected
//!   a number, got "abc"`. The record's other fields are kept.
//! - A record whose time or quality is unusable, or whose tag is not a scalar, is
//!   skipped and reported: storing it at another time, as `actual`, or in another
//!   series would record something the device did not say.
//! - A tag whose path matches nothing is left out.
//! - A record with none of the configured fields is reported: a typo in a path would
//!   otherwise store nothing without a word.
//! - `records` matching nothing is an error; matching an empty array is an empty batch.
//! - When no record yields a reading, the payload is an error quoting the first problems.
//!
//! Tags and fields set here are stored as they are; the collector adds the
//! subscription's tags (`site_id`, `device_id`) on top.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_json_path::JsonPath;

use crate::ReadingQuality;
use crate::decode::{lenient_number, parse_json, quote, rfc3339_to_ns, summarise_problems};
use crate::reading::{Decode, DecodeContext, DecodeError, Decoded, Reading, Value};
use crate::tables::QUALITY;

/// How a payload maps to readings of one table. Deserialised from the collector's
/// configuration (TOML); see the [module documentation](self) for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMapping {
    /// The table the readings go to.
    pub table: String,
    /// JSONPath selecting the records of a batch: a query yielding one array (`$.data`)
    /// or one node per record (`$.data[*]`). Absent: the payload is one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// JSONPath (relative to the record) of the record's timestamp. Absent: the
    /// receive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// How the timestamp is written.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Tags taken from the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagMapping>,
    /// Fields taken from the record; at least one.
    pub fields: Vec<FieldMapping>,
    /// JSONPath (relative to the record) of the reading quality: `actual`, `estimated`
    /// or `substituted`. Absent, or matching nothing: the store's default (`actual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
}

/// How a record's timestamp is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// A string is RFC 3339; a number is Unix time in seconds, milliseconds,
    /// microseconds or nanoseconds, told apart by magnitude (right for dates between
    /// 1973 and 5138).
    #[default]
    Auto,
    /// RFC 3339 (`2024-03-01T12:00:00Z`).
    Rfc3339,
    /// Unix seconds, possibly fractional.
    UnixS,
    /// Unix milliseconds.
    UnixMs,
    /// Unix microseconds.
    UnixUs,
    /// Unix nanoseconds.
    UnixNs,
}

/// A tag taken from each record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagMapping {
    /// Tag name.
    pub tag: String,
    /// JSONPath relative to the record. Strings are used as they are; numbers and
    /// booleans as their JSON text.
    pub path: String,
}

/// A field taken from each record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Column name; for canonical tables, use the canonical name (`power_w`).
    pub column: String,
    /// JSONPath relative to the record.
    pub path: String,
    /// Multiplier applied to numbers before storing (`1000` for kW → W).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub scale: f64,
    /// Added to numbers after scaling.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: f64,
    /// The stored type.
    #[serde(default, rename = "type")]
    pub kind: FieldType,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The stored type of a mapped field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// 64-bit float; numbers and numeric strings.
    #[default]
    Float,
    /// Signed integer; integral numbers and numeric strings.
    Integer,
    /// `true`/`false`, `1`/`0`, or the strings `true`, `false`, `on`, `off`, `1`, `0`.
    Boolean,
    /// Text; numbers and booleans are stored as their JSON text.
    String,
}

#[derive(Debug)]
struct CompiledTag {
    tag: String,
    path: JsonPath,
}

#[derive(Debug)]
struct CompiledField {
    column: String,
    path: JsonPath,
    scale: f64,
    offset: f64,
    kind: FieldType,
}

/// Decodes JSON payloads with a [`JsonMapping`], its paths compiled once.
#[derive(Debug)]
pub struct JsonDecoder {
    table: String,
    records: Option<JsonPath>,
    time: Option<JsonPath>,
    time_format: TimeFormat,
    tags: Vec<CompiledTag>,
    fields: Vec<CompiledField>,
    quality: Option<JsonPath>,
}

impl JsonDecoder {
    /// Checks the mapping and compiles its paths. The error names the part of the
    /// mapping that is wrong (`fields[1] (power_w): path "$.p[": ...`).
    pub fn new(mapping: JsonMapping) -> Result<Self, String> {
        let JsonMapping {
            table,
            records,
            time,
            time_format,
            tags,
            fields,
            quality,
        } = mapping;
        if table.trim().is_empty() {
            return Err("json mapping: table is empty".into());
        }
        if fields.is_empty() {
            return Err(format!(
                "json mapping for table {table}: no fields; add at least one [[fields]] entry"
            ));
        }
        let records = records.map(|p| compile("records", &p)).transpose()?;
        let time = time.map(|p| compile("time", &p)).transpose()?;
        let quality = quality.map(|p| compile("quality", &p)).transpose()?;

        // Tags and fields share one namespace in the store: a name written twice would
        // make one of the two silently win.
        let mut claimed: Vec<(&str, String)> = Vec::new();
        let quality_name = quality
            .is_some()
            .then_some((QUALITY, "quality".to_string()));
        let named = quality_name
            .into_iter()
            .chain(
                tags.iter()
                    .enumerate()
                    .map(|(i, t)| (t.tag.as_str(), format!("tags[{i}]"))),
            )
            .chain(
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.column.as_str(), format!("fields[{i}]"))),
            );
        for (name, what) in named {
            if name.trim().is_empty() {
                return Err(format!("json mapping: {what} has an empty name"));
            }
            if let Some((_, earlier)) = claimed.iter().find(|(n, _)| *n == name) {
                return Err(format!(
                    "json mapping: {earlier} and {what} both write {name:?}"
                ));
            }
            claimed.push((name, what));
        }

        let tags = tags
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                Ok(CompiledTag {
                    path: compile(&format!("tags[{i}] ({})", t.tag), &t.path)?,
                    tag: t.tag,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let what = format!("fields[{i}] ({})", f.column);
                if !f.scale.is_finite() || f.scale == 0.0 {
                    return Err(format!(
                        "json mapping: {what}: scale {} would not keep the value; use a finite, non-zero number",
                        f.scale
                    ));
                }
                if !f.offset.is_finite() {
                    return Err(format!("json mapping: {what}: offset {} is not finite", f.offset));
                }
                if matches!(f.kind, FieldType::Boolean | FieldType::String)
                    && (f.scale != 1.0 || f.offset != 0.0)
                {
                    return Err(format!(
                        "json mapping: {what}: scale and offset apply to float and integer fields only"
                    ));
                }
                Ok(CompiledField {
                    path: compile(&what, &f.path)?,
                    column: f.column,
                    scale: f.scale,
                    offset: f.offset,
                    kind: f.kind,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            table,
            records,
            time,
            time_format,
            tags,
            fields,
            quality,
        })
    }

    /// Decodes one record; `Ok(None)` when it has none of the configured fields.
    fn record(
        &self,
        ctx: &DecodeContext<'_>,
        record: &Json,
        problems: &mut Vec<String>,
    ) -> Result<Option<Reading>, String> {
        let time = match &self.time {
            None => ctx.received_at,
            Some(path) => match single(path, record)? {
                None | Some(Json::Null) => return Err(format!("time: {path} matched nothing")),
                Some(v) => parse_time(v, self.time_format)?,
            },
        };
        let mut reading = Reading::new(self.table.clone(), time);
        for t in &self.tags {
            match single(&t.path, record).map_err(|e| format!("tag {}: {e}", t.tag))? {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) => reading.tags.push((t.tag.clone(), s.clone())),
                Some(v @ (Json::Number(_) | Json::Bool(_))) => {
                    reading.tags.push((t.tag.clone(), v.to_string()))
                }
                Some(v) => {
                    return Err(format!(
                        "tag {}: expected a string, number or boolean, got {}",
                        t.tag,
                        quote(v)
                    ));
                }
            }
        }
        if let Some(path) = &self.quality {
            match single(path, record).map_err(|e| format!("quality: {e}"))? {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) => {
                    let q: ReadingQuality = s.parse().map_err(|e| format!("quality: {e}"))?;
                    reading
                        .fields
                        .push((QUALITY.to_string(), q.as_str().into()));
                }
                Some(v) => {
                    return Err(format!(
                        "quality: expected actual, estimated or substituted, got {}",
                        quote(v)
                    ));
                }
            }
        }
        let measured = reading.fields.len();
        for f in &self.fields {
            let value = match single(&f.path, record) {
                Err(e) => Err(e),
                Ok(None | Some(Json::Null)) => continue,
                Ok(Some(v)) => convert(v, f),
            };
            match value {
                Ok(v) => reading.fields.push((f.column.clone(), v)),
                Err(e) => problems.push(format!("field {}: {e}", f.column)),
            }
        }
        Ok((reading.fields.len() > measured).then_some(reading))
    }
}

impl Decode for JsonDecoder {
    fn decode(&mut self, ctx: &DecodeContext<'_>, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let doc = parse_json(payload)?;
        let records: Vec<&Json> = match &self.records {
            None => vec![&doc],
            Some(path) => {
                let nodes = path.query(&doc).all();
                match nodes.as_slice() {
                    [] => {
                        return Err(DecodeError::new(format!(
                            "records path {path} matched nothing in the payload"
                        )));
                    }
                    [Json::Array(items)] => items.iter().collect(),
                    _ => nodes,
                }
            }
        };
        let mut out = Decoded::default();
        let mut without_fields = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let mut problems = Vec::new();
            match self.record(ctx, record, &mut problems) {
                Ok(Some(reading)) => out.readings.push(reading),
                Ok(None) if problems.is_empty() => without_fields.push(i),
                Ok(None) => {}
                Err(e) => problems.push(e),
            }
            out.problems
                .extend(problems.into_iter().map(|p| format!("record {i}: {p}")));
        }
        if !without_fields.is_empty() {
            let columns: Vec<&str> = self.fields.iter().map(|f| f.column.as_str()).collect();
            out.problems.push(format!(
                "{} {} none of the configured fields ({})",
                plural_records(&without_fields),
                if without_fields.len() == 1 {
                    "has"
                } else {
                    "have"
                },
                columns.join(", ")
            ));
        }
        if out.readings.is_empty() && !out.problems.is_empty() {
            return Err(DecodeError::new(format!(
                "no usable record: {}",
                summarise_problems(&out.problems)
            )));
        }
        Ok(out)
    }
}

fn compile(what: &str, path: &str) -> Result<JsonPath, String> {
    JsonPath::parse(path).map_err(|e| {
        format!("json mapping: {what}: path {path:?} is not a valid JSONPath (RFC 9535): {e}")
    })
}

/// The one value `path` selects in `record`: `None` when it selects nothing, an error
/// when it selects several (a wildcard where a single member was meant).
fn single<'a>(path: &JsonPath, record: &'a Json) -> Result<Option<&'a Json>, String> {
    let nodes = path.query(record);
    match nodes.len() {
        0 | 1 => Ok(nodes.first()),
        n => Err(format!("path {path} matched {n} values; expected one")),
    }
}

fn convert(v: &Json, f: &CompiledField) -> Result<Value, String> {
    match f.kind {
        FieldType::Float => {
            let x = number(v)?;
            let y = x * f.scale + f.offset;
            if y.is_finite() {
                Ok(Value::F64(y))
            } else {
                Err(format!("{x} × {} + {} is not finite", f.scale, f.offset))
            }
        }
        FieldType::Integer => {
            // Unscaled integers stay exact beyond f64's 53 bits.
            if f.scale == 1.0
                && f.offset == 0.0
                && let Some(i) = exact_integer(v)
            {
                return Ok(Value::I64(i));
            }
            let x = number(v)?;
            let y = x * f.scale + f.offset;
            // 2^63 is exactly representable; anything at or beyond it does not fit.
            if y.fract() == 0.0 && y >= i64::MIN as f64 && y < i64::MAX as f64 {
                Ok(Value::I64(y as i64))
            } else {
                Err(format!("expected an integer, got {}", scaled(v, x, y)))
            }
        }
        FieldType::Boolean => match v {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
            Json::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
            Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "1" => Ok(Value::Bool(true)),
                "false" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("expected a boolean, got {}", quote(v))),
            },
            _ => Err(format!("expected a boolean, got {}", quote(v))),
        },
        FieldType::String => match v {
            Json::String(s) => Ok(Value::Str(s.clone())),
            Json::Number(_) | Json::Bool(_) => Ok(Value::Str(v.to_string())),
            _ => Err(format!("expected a string, got {}", quote(v))),
        },
    }
}

/// A finite number from a JSON number or a numeric string (`"12.5"`).
fn number(v: &Json) -> Result<f64, String> {
    lenient_number(v).ok_or_else(|| format!("expected a number, got {}", quote(v)))
}

/// An integer from a JSON number or a numeric string (`"12"`), exact beyond f64's 53
/// bits; `None` for fractions and anything else.
fn exact_integer(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn scaled(v: &Json, x: f64, y: f64) -> String {
    if x == y {
        quote(v)
    } else {
        format!("{} (scaled to {y})", quote(v))
    }
}

fn parse_time(v: &Json, format: TimeFormat) -> Result<i64, String> {
    let bad = |why: &str| format!("time: {} {why}", quote(v));
    let per_second = match (format, v) {
        (TimeFormat::Auto | TimeFormat::Rfc3339, Json::String(s)) => {
            if let Some(ns) = rfc3339_to_ns(s.trim()) {
                return Ok(ns);
            }
            match s.trim().parse::<f64>() {
                Ok(x) if format == TimeFormat::Auto => units_per_second(x),
                _ => return Err(bad("is not an RFC 3339 timestamp")),
            }
        }
        (TimeFormat::Rfc3339, _) => return Err(bad("is not an RFC 3339 timestamp")),
        (TimeFormat::Auto, Json::Number(n)) => match n.as_f64() {
            Some(x) => units_per_second(x),
            None => return Err(bad("is out of range")),
        },
        (TimeFormat::UnixS, _) => 1,
        (TimeFormat::UnixMs, _) => 1_000,
        (TimeFormat::UnixUs, _) => 1_000_000,
        (TimeFormat::UnixNs, _) => 1_000_000_000,
        (TimeFormat::Auto, _) => return Err(bad("is not a timestamp")),
    };
    let unit = match per_second {
        1 => "seconds",
        1_000 => "milliseconds",
        1_000_000 => "microseconds",
        _ => "nanoseconds",
    };
    unix(v, per_second).ok_or_else(|| bad(&format!("is not a Unix time in {unit}")))
}

/// Unix time in units of `1/per_second` s to nanoseconds. Integers stay exact (a
/// nanosecond timestamp does not fit an f64's 53 bits); fractions go through f64.
fn unix(v: &Json, per_second: i64) -> Option<i64> {
    let ns_per_unit = 1_000_000_000 / per_second;
    if let Some(i) = exact_integer(v) {
        return i.checked_mul(ns_per_unit);
    }
    let x = lenient_number(v)?;
    // Whole units and the fraction apart: 1709294400.25 s is exact in f64, but
    // 1709294400.25e9 ns is not.
    let whole = x.trunc();
    if !whole.is_finite() || whole.abs() >= i64::MAX as f64 {
        return None;
    }
    let fraction = ((x - whole) * ns_per_unit as f64).round() as i64;
    (whole as i64)
        .checked_mul(ns_per_unit)?
        .checked_add(fraction)
}

/// The unit of a Unix timestamp told by its magnitude: today is about 1.7e9 s, 1.7e12
/// ms, 1.7e15 µs and 1.7e18 ns, so the boundaries 1e11, 1e14 and 1e17 hold for every
/// date between 1973 and 5138.
fn units_per_second(x: f64) -> i64 {
    match x.abs() {
        a if a < 1e11 => 1,
        a if a < 1e14 => 1_000,
        a if a < 1e17 => 1_000_000,
        _ => 1_000_000_000,
    }
}

fn plural_records(indices: &[usize]) -> String {
    let list: Vec<String> = indices.iter().take(10).map(usize::to_string).collect();
    let more = if indices.len() > 10 { ", ..." } else { "" };
    match indices {
        [i] => format!("record {i}"),
        _ => format!("records {}{more}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{RECEIVED, f64_of, run};

    fn decoder(toml_text: &str) -> JsonDecoder {
        let mapping: JsonMapping = toml::from_str(toml_text).expect("mapping parses");
        JsonDecoder::new(mapping).expect("mapping compiles")
    }

    fn new_err(toml_text: &str) -> String {
        let mapping: JsonMapping = toml::from_str(toml_text).expect("mapping parses");
        JsonDecoder::new(mapping).expect_err("mapping is rejected")
    }

    fn decode(d: &mut JsonDecoder, payload: &str) -> Result<Decoded, DecodeError> {
        run(d, "site/meter/json", &[], payload)
    }

    /// The TOML example in the module documentation, so the docs cannot drift from the
    /// configuration format.
    fn doc_example() -> String {
        let source = include_str!("json_map.rs");
        let start = source.find("//! ```toml\n").expect("doc example") + "//! ```toml\n".len();
        let end = start + source[start..].find("//! ```\n").expect("doc example end");
        source[start..end]
            .lines()
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_documented_example_parses_compiles_and_decodes() {
        let mapping: JsonMapping = toml::from_str(&doc_example()).expect("doc example parses");
        assert_eq!(mapping.table, "meter");
        assert_eq!(mapping.records.as_deref(), Some("$.readings"));
        assert_eq!(mapping.time_format, TimeFormat::UnixMs);
        assert_eq!(mapping.fields[0].scale, 1000.0);
        assert_eq!(mapping.fields[1].kind, FieldType::Float);
        let mut d = JsonDecoder::new(mapping).expect("doc example compiles");
        let out = decode(
            &mut d,
            r#"{"readings": [
                {"ts": 1709294400000, "phase": "L1", "p_kw": 1.5, "e_in": 1200.5, "q": "estimated"},
                {"ts": 1709294401000, "phase": "L2", "p_kw": -0.25}
            ]}"#,
        )
        .unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 2);
        let r = &out.readings[0];
        assert_eq!(r.table, "meter");
        assert_eq!(r.time, 1_709_294_400_000_000_000);
        assert_eq!(r.tag_value("phase"), Some("L1"));
        assert_eq!(f64_of(r, "power_w"), 1500.0);
        assert_eq!(f64_of(r, "energy_import_wh"), 1200.5);
        assert_eq!(
            r.field_value("quality"),
            Some(&Value::Str("estimated".into()))
        );
        let r = &out.readings[1];
        assert_eq!(r.time, 1_709_294_401_000_000_000);
        assert_eq!(f64_of(r, "power_w"), -250.0);
        // Missing measurements and quality are left out, not zeroed or defaulted.
        assert_eq!(r.field_value("energy_import_wh"), None);
        assert_eq!(r.field_value("quality"), None);
    }

    #[test]
    fn mapping_round_trips_through_toml_and_json() {
        let mapping: JsonMapping = toml::from_str(&doc_example()).unwrap();
        let again: JsonMapping = toml::from_str(&toml::to_string(&mapping).unwrap()).unwrap();
        assert_eq!(again, mapping);
        let again: JsonMapping =
            serde_json::from_str(&serde_json::to_string(&mapping).unwrap()).unwrap();
        assert_eq!(again, mapping);
        // Defaults are filled in and left out again.
        let minimal: JsonMapping =
            serde_json::from_str(r#"{"table":"t","fields":[{"column":"x","path":"$.x"}]}"#)
                .unwrap();
        assert_eq!(minimal.time_format, TimeFormat::Auto);
        assert_eq!(minimal.fields[0].scale, 1.0);
        assert_eq!(minimal.fields[0].offset, 0.0);
        assert_eq!(
            serde_json::to_string(&minimal).unwrap(),
            r#"{"table":"t","time_format":"auto","fields":[{"column":"x","path":"$.x","type":"float"}]}"#
        );
    }

    #[test]
    fn fronius_inverter_response_at_night() {
        // A Fronius Symo's GetInverterRealtimeData (CommonInverterData) at night: the
        // inverter is asleep, so PAC is absent and must stay absent (not 0 W).
        // Format: Fronius Solar API V1, operating instructions 42,0410,2012
        // (https://www.fronius.com/en/solar-energy/installers-partners/technical-data/all-products/system-monitoring/open-interfaces/fronius-solar-api-json-);
        // response captured from a device in pyfronius' test data:
        // https://github.com/nielstron/pyfronius/blob/master/tests/test_structure/v1/solar_api/v1/GetInverterRealtimeData.cgi___Scope=Device__DeviceId=1__DataCollection=CommonInverterData
        let payload = r#"{
            "Head" : {
                "RequestArguments" : {"DataCollection" : "CommonInverterData", "DeviceClass" : "Inverter", "DeviceId" : "1", "Scope" : "Device"},
                "Status" : {"Code" : 0, "Reason" : "", "UserMessage" : ""},
                "Timestamp" : "2019-01-10T23:33:15+01:00"
            },
            "Body" : {
                "Data" : {
                    "DAY_ENERGY" : {"Value" : 0, "Unit" : "Wh"},
                    "TOTAL_ENERGY" : {"Value" : 26213502, "Unit" : "Wh"},
                    "YEAR_ENERGY" : {"Value" : 12400.1, "Unit" : "Wh"},
                    "DeviceStatus" : {"StatusCode" : 3, "MgmtTimerRemainingTime" : -1, "ErrorCode" : 523, "LEDColor" : 1, "LEDState" : 0, "StateToReset" : true}
                }
            }
        }"#;
        let mut d = decoder(
            r#"
            table = "inverter"
            time = "$.Head.Timestamp"
            time_format = "rfc3339"

            [[fields]]
            column = "power_w"
            path = "$.Body.Data.PAC.Value"

            [[fields]]
            column = "energy_wh"
            path = "$.Body.Data.TOTAL_ENERGY.Value"

            [[fields]]
            column = "status"
            path = "$.Body.Data.DeviceStatus.StatusCode"
            type = "string"
            "#,
        );
        let out = decode(&mut d, payload).unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.readings.len(), 1);
        let r = &out.readings[0];
        assert_eq!(r.table, "inverter");
        // 23:33:15 at +01:00 is 22:33:15 UTC.
        assert_eq!(r.time, 1_547_159_595_000_000_000);
        assert_eq!(r.field_value("power_w"), None);
        assert_eq!(f64_of(r, "energy_wh"), 26_213_502.0);
        assert_eq!(r.field_value("status"), Some(&Value::Str("3".into())));
        assert!(r.tags.is_empty());
    }

    #[test]
    fn awattar_price_list_is_a_batch() {
        // aWATTar's market data: one record per hour, times in Unix milliseconds, prices
        // in EUR/MWh (→ per kWh: × 0.001; negative prices are real).
        // https://www.awattar.de/services/api (example response), more entries from
        // https://apis.io/examples/awattar/awattar-market-data-example/
        let payload = r#"{
            "object": "list",
            "data": [
                {"start_timestamp": 1428591600000, "end_timestamp": 1428595200000, "marketprice": 42.09, "unit": "Eur/MWh"},
                {"start_timestamp": 1428595200000, "end_timestamp": 1428598800000, "marketprice": 38.50, "unit": "Eur/MWh"},
                {"start_timestamp": 1428598800000, "end_timestamp": 1428602400000, "marketprice": -5.12, "unit": "Eur/MWh"}
            ]
        }"#;
        let mapping = r#"
            table = "price"
            time = "$.start_timestamp"
            time_format = "unix_ms"

            [[fields]]
            column = "price_per_kwh"
            path = "$.marketprice"
            scale = 0.001
        "#;
        // The array itself, or one node per record: the same records.
        for records in ["$.data", "$.data[*]"] {
            let mut d = decoder(&format!("records = {records:?}\n{mapping}"));
            let out = decode(&mut d, payload).unwrap();
            assert!(out.problems.is_empty(), "{:?}", out.problems);
            let times: Vec<i64> = out.readings.iter().map(|r| r.time).collect();
            assert_eq!(
                times,
                [
                    1_428_591_600_000_000_000,
                    1_428_595_200_000_000_000,
                    1_428_598_800_000_000_000
                ]
            );
            let prices: Vec<f64> = out
                .readings
                .iter()
                .map(|r| f64_of(r, "price_per_kwh"))
                .collect();
            for (got, want) in prices.iter().zip([0.04209, 0.0385, -0.00512]) {
                assert!((got - want).abs() < 1e-12, "{prices:?}");
            }
        }
    }

    #[test]
    fn bad_values_are_per_record_problems_and_good_ones_stay() {
        let mut d = decoder(
            r#"
            table = "meter"
            records = "$"
            time = "$.t"

            [[tags]]
            tag = "phase"
            path = "$.phase"

            [[fields]]
            column = "power_w"
            path = "$.p"

            [[fields]]
            column = "voltage_v"
            path = "$.u"
            "#,
        );
        let out = decode(
            &mut d,
            r#"[
                {"t": "2024-03-01T12:00:00Z", "p": 100, "u": 230.1},
                {"t": "2024-03-01T12:00:01Z", "p": 101},
                {"t": "2024-03-01T12:00:02Z", "p": null, "u": 229.0},
                {"t": "2024-03-01T12:00:03Z", "p": "abc", "u": 231.5},
                {"t": "2024-03-01T12:00:04Z", "p": {"w": 1}},
                {"t": "yesterday", "p": 104},
                {"p": 105},
                {"t": "2024-03-01T12:00:07Z", "phase": ["L1"], "p": 107},
                {"t": "2024-03-01T12:00:08Z", "other": 1}
            ]"#,
        )
        .unwrap();
        let powers: Vec<Option<&Value>> = out
            .readings
            .iter()
            .map(|r| r.field_value("power_w"))
            .collect();
        assert_eq!(
            powers,
            [
                Some(&Value::F64(100.0)),
                Some(&Value::F64(101.0)),
                None,
                None,
            ]
        );
        assert_eq!(
            out.readings[3].field_value("voltage_v"),
            Some(&Value::F64(231.5))
        );
        assert_eq!(
            out.problems,
            [
                r#"record 3: field power_w: expected a number, got "abc""#,
                "record 4: field power_w: expected a number, got an object",
                r#"record 5: time: "yesterday" is not an RFC 3339 timestamp"#,
                "record 6: time: $.t matched nothing",
                "record 7: tag phase: expected a string, number or boolean, got an array",
                "record 8 has none of the configured fields (power_w, voltage_v)",
            ]
        );
    }

    #[test]
    fn a_payload_with_no_usable_record_is_an_error() {
        let mut d = decoder(
            r#"
            table = "meter"
            [[fields]]
            column = "power_w"
            path = "$.power"
            "#,
        );
        let err = decode(&mut d, r#"{"power": "n/a"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"no usable record: record 0: field power_w: expected a number, got "n/a""#
        );
        let err = decode(&mut d, r#"{"pwr": 5}"#).unwrap_err().to_string();
        assert!(
            err.contains("none of the configured fields (power_w)"),
            "{err}"
        );
        let err = decode(&mut d, "{oops").unwrap_err().to_string();
        assert!(err.starts_with("not JSON"), "{err}");

        let mut d = decoder(
            r#"
            table = "meter"
            records = "$.items[*]"
            [[fields]]
            column = "power_w"
            path = "$.power"
            "#,
        );
        let err = decode(&mut d, r#"{"data": []}"#).unwrap_err().to_string();
        assert_eq!(
            err,
            "records path $.items[*] matched nothing in the payload"
        );
        let many: Vec<String> = (0..5).map(|i| format!(r#"{{"power": "x{i}"}}"#)).collect();
        let err = decode(&mut d, &format!(r#"{{"items": [{}]}}"#, many.join(",")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 2:") && err.ends_with("; and 2 more"),
            "{err}"
        );
        // An empty batch selected as an array is simply empty.
        let mut d = decoder(
            r#"
            table = "meter"
            records = "$.items"
            [[fields]]
            column = "power_w"
            path = "$.power"
            "#,
        );
        assert_eq!(
            decode(&mut d, r#"{"items": []}"#).unwrap(),
            Decoded::default()
        );
    }

    #[test]
    fn without_a_time_path_the_receive_time_is_used() {
        let mut d = decoder(
            r#"
            table = "smart_plug"
            [[fields]]
            column = "power_w"
            path = "$.power"
            "#,
        );
        let out = decode(&mut d, r#"{"power": 12.5}"#).unwrap();
        assert_eq!(out.readings[0].time, RECEIVED);
        assert_eq!(out.readings[0].table, "smart_plug");
    }

    #[test]
    fn time_formats() {
        let cases: &[(&str, &str, Result<i64, &str>)] = &[
            (
                "auto",
                r#""2024-03-01T13:00:00+01:00""#,
                Ok(1_709_294_400_000_000_000),
            ),
            ("auto", "1709294400", Ok(1_709_294_400_000_000_000)),
            ("auto", "1709294400.5", Ok(1_709_294_400_500_000_000)),
            ("auto", "1709294400123", Ok(1_709_294_400_123_000_000)),
            ("auto", "1709294400123456", Ok(1_709_294_400_123_456_000)),
            ("auto", "1709294400123456789", Ok(1_709_294_400_123_456_789)),
            ("auto", r#""1709294400""#, Ok(1_709_294_400_000_000_000)),
            ("auto", "true", Err("time: true is not a timestamp")),
            (
                "auto",
                r#""soon""#,
                Err(r#"time: "soon" is not an RFC 3339 timestamp"#),
            ),
            (
                "rfc3339",
                r#""2024-03-01T12:00:00.25Z""#,
                Ok(1_709_294_400_250_000_000),
            ),
            (
                "rfc3339",
                "1709294400",
                Err("time: 1709294400 is not an RFC 3339 timestamp"),
            ),
            (
                "rfc3339",
                r#""1709294400""#,
                Err(r#"time: "1709294400" is not an RFC 3339 timestamp"#),
            ),
            ("unix_s", "1709294400", Ok(1_709_294_400_000_000_000)),
            ("unix_s", r#""1709294400""#, Ok(1_709_294_400_000_000_000)),
            ("unix_s", "1709294400.25", Ok(1_709_294_400_250_000_000)),
            ("unix_ms", "1709294400123", Ok(1_709_294_400_123_000_000)),
            ("unix_us", "1709294400123456", Ok(1_709_294_400_123_456_000)),
            (
                "unix_ns",
                "1709294400123456789",
                Ok(1_709_294_400_123_456_789),
            ),
            (
                "unix_ms",
                r#""2024-03-01T12:00:00Z""#,
                Err(r#"time: "2024-03-01T12:00:00Z" is not a Unix time in milliseconds"#),
            ),
            (
                "unix_s",
                "1e300",
                Err("time: 1e+300 is not a Unix time in seconds"),
            ),
            (
                "unix_s",
                "9223372036854775807",
                Err("time: 9223372036854775807 is not a Unix time in seconds"),
            ),
            (
                "unix_ms",
                "false",
                Err("time: false is not a Unix time in milliseconds"),
            ),
        ];
        for (format, value, want) in cases {
            let mut d = decoder(&format!(
                "table = \"t\"\ntime = \"$.t\"\ntime_format = \"{format}\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n"
            ));
            let got = decode(&mut d, &format!(r#"{{"t": {value}, "x": 1}}"#));
            match (want, got) {
                (Ok(ns), Ok(out)) => assert_eq!(out.readings[0].time, *ns, "{format} {value}"),
                (Err(msg), Err(e)) => {
                    assert_eq!(
                        e.to_string(),
                        format!("no usable record: record 0: {msg}"),
                        "{format} {value}"
                    )
                }
                (want, got) => panic!("{format} {value}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn field_types_convert_strictly() {
        let mut d = decoder(
            r#"
            table = "battery"
            [[fields]]
            column = "cycles"
            path = "$.cycles"
            type = "integer"

            [[fields]]
            column = "soc_pct"
            path = "$.soc"
            scale = 100.0

            [[fields]]
            column = "charging"
            path = "$.charging"
            type = "boolean"

            [[fields]]
            column = "state"
            path = "$.state"
            type = "string"

            [[fields]]
            column = "temperature_c"
            path = "$.temp_f"
            scale = 0.5555555555555556
            offset = -17.77777777777778
            "#,
        );
        let out = decode(
            &mut d,
            r#"{"cycles": 9007199254740993, "soc": "0.85", "charging": "ON", "state": "charging", "temp_f": 212}"#,
        )
        .unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let r = &out.readings[0];
        // Exact beyond 2^53.
        assert_eq!(
            r.field_value("cycles"),
            Some(&Value::I64(9_007_199_254_740_993))
        );
        assert!((f64_of(r, "soc_pct") - 85.0).abs() < 1e-9);
        assert_eq!(r.field_value("charging"), Some(&Value::Bool(true)));
        assert_eq!(r.field_value("state"), Some(&Value::Str("charging".into())));
        assert!((f64_of(r, "temperature_c") - 100.0).abs() < 1e-9);

        let out = decode(
            &mut d,
            r#"{"cycles": "12", "soc": 1, "charging": 0, "state": 3, "temp_f": "warm"}"#,
        )
        .unwrap();
        let r = &out.readings[0];
        assert_eq!(r.field_value("cycles"), Some(&Value::I64(12)));
        assert_eq!(r.field_value("charging"), Some(&Value::Bool(false)));
        assert_eq!(r.field_value("state"), Some(&Value::Str("3".into())));
        assert_eq!(
            out.problems,
            [r#"record 0: field temperature_c: expected a number, got "warm""#]
        );

        let out = decode(
            &mut d,
            r#"{"cycles": 12.5, "soc": true, "charging": "maybe", "state": [1], "temp_f": 32}"#,
        )
        .unwrap();
        assert_eq!(
            out.problems,
            [
                "record 0: field cycles: expected an integer, got 12.5",
                "record 0: field soc_pct: expected a number, got true",
                r#"record 0: field charging: expected a boolean, got "maybe""#,
                "record 0: field state: expected a string, got an array",
            ]
        );
        let out = decode(&mut d, r#"{"soc": "NaN", "cycles": 1e300}"#).unwrap_err();
        assert!(
            out.to_string()
                .contains(r#"soc_pct: expected a number, got "NaN""#),
            "{out}"
        );
        assert!(
            out.to_string()
                .contains("cycles: expected an integer, got 1e+300"),
            "{out}"
        );
    }

    #[test]
    fn scaled_integers_must_stay_integers() {
        let mut d = decoder(
            r#"
            table = "t"
            [[fields]]
            column = "wh"
            path = "$.kwh"
            type = "integer"
            scale = 1000.0
            "#,
        );
        let out = decode(&mut d, r#"{"kwh": 1.234}"#).unwrap();
        assert_eq!(out.readings[0].field_value("wh"), Some(&Value::I64(1234)));
        let err = decode(&mut d, r#"{"kwh": 1.2345}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected an integer, got 1.2345 (scaled to 1234.5)"),
            "{err}"
        );
    }

    #[test]
    fn quality_must_be_a_known_word() {
        let mut d = decoder(
            r#"
            table = "meter"
            quality = "$.q"
            [[fields]]
            column = "energy_import_wh"
            path = "$.e"
            "#,
        );
        for q in ["actual", "estimated", "substituted"] {
            let out = decode(&mut d, &format!(r#"{{"e": 1, "q": "{q}"}}"#)).unwrap();
            assert_eq!(
                out.readings[0].field_value("quality"),
                Some(&Value::Str(q.into()))
            );
        }
        let out = decode(&mut d, r#"{"e": 1, "q": null}"#).unwrap();
        assert_eq!(out.readings[0].field_value("quality"), None);
        // A record of unknown quality is skipped: storing it as actual would be a lie.
        let err = decode(&mut d, r#"{"e": 1, "q": "valid"}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"no usable record: record 0: quality: unknown reading quality "valid"; expected one of actual, estimated, substituted"#
        );
        let err = decode(&mut d, r#"{"e": 1, "q": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected actual, estimated or substituted, got 1"),
            "{err}"
        );
        // Only the quality column counts as a field when nothing else is there.
        let err = decode(&mut d, r#"{"q": "actual"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("none of the configured fields"), "{err}");
    }

    #[test]
    fn tags_take_scalars_and_skip_missing_ones() {
        let mut d = decoder(
            r#"
            table = "meter"
            [[tags]]
            tag = "device_id"
            path = "$.meta.serial"
            [[tags]]
            tag = "phase"
            path = "$.phase"
            [[tags]]
            tag = "channel"
            path = "$.ch"
            [[fields]]
            column = "power_w"
            path = "$.p"
            "#,
        );
        let out = decode(&mut d, r#"{"meta": {"serial": 4711}, "ch": true, "p": 1}"#).unwrap();
        assert_eq!(
            out.readings[0].tags,
            vec![
                ("device_id".to_string(), "4711".to_string()),
                ("channel".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn wildcards_matching_several_values_are_problems() {
        let mut d = decoder(
            r#"
            table = "meter"
            [[fields]]
            column = "power_w"
            path = "$.phases[*].p"
            [[fields]]
            column = "voltage_v"
            path = "$.u"
            "#,
        );
        let out = decode(&mut d, r#"{"phases": [{"p": 1}, {"p": 2}], "u": 230}"#).unwrap();
        assert_eq!(
            out.problems,
            ["record 0: field power_w: path $.phases[*].p matched 2 values; expected one"]
        );
        assert_eq!(
            out.readings[0].field_value("voltage_v"),
            Some(&Value::F64(230.0))
        );
        // A filter selecting exactly one value is fine (RFC 9535 filter expressions).
        let mut d = decoder(
            r#"
            table = "meter"
            [[fields]]
            column = "power_w"
            path = "$.values[?@.name == 'P'].v"
            "#,
        );
        let out = decode(
            &mut d,
            r#"{"values": [{"name": "U", "v": 230}, {"name": "P", "v": 42}]}"#,
        )
        .unwrap();
        assert_eq!(
            out.readings[0].field_value("power_w"),
            Some(&Value::F64(42.0))
        );
    }

    #[test]
    fn bad_mappings_are_rejected_naming_the_part() {
        // Messages that are gridlake's own, whole.
        let cases = [
            (
                "table = \"m\"\nfields = []\n",
                "json mapping for table m: no fields; add at least one [[fields]] entry",
            ),
            (
                "table = \" \"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                "json mapping: table is empty",
            ),
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.a\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.b\"\n",
                r#"json mapping: fields[0] and fields[1] both write "x""#,
            ),
            (
                "table = \"m\"\n[[tags]]\ntag = \"x\"\npath = \"$.a\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.b\"\n",
                r#"json mapping: tags[0] and fields[0] both write "x""#,
            ),
            (
                "table = \"m\"\nquality = \"$.q\"\n[[fields]]\ncolumn = \"quality\"\npath = \"$.b\"\n",
                r#"json mapping: quality and fields[0] both write "quality""#,
            ),
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"\"\npath = \"$.x\"\n",
                "json mapping: fields[0] has an empty name",
            ),
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\nscale = 0.0\n",
                "json mapping: fields[0] (x): scale 0 would not keep the value; use a finite, non-zero number",
            ),
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\noffset = inf\n",
                "json mapping: fields[0] (x): offset inf is not finite",
            ),
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\ntype = \"boolean\"\nscale = 2.0\n",
                "json mapping: fields[0] (x): scale and offset apply to float and integer fields only",
            ),
        ];
        for (mapping, expected) in cases {
            assert_eq!(new_err(mapping), expected, "{mapping}");
        }
        // Bad paths: the message ends with the JSONPath parser's own words.
        let cases = [
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"power_w\"\npath = \"$.p[\"\n",
                r#"json mapping: fields[0] (power_w): path "$.p[""#,
            ),
            (
                "table = \"m\"\nrecords = \"data\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                r#"json mapping: records: path "data""#,
            ),
            (
                "table = \"m\"\ntime = \"$.t..\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                r#"json mapping: time: path "$.t..""#,
            ),
            (
                "table = \"m\"\nquality = \"q\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                r#"json mapping: quality: path "q""#,
            ),
            (
                "table = \"m\"\n[[tags]]\ntag = \"site\"\npath = \"$[\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                r#"json mapping: tags[0] (site): path "$[""#,
            ),
        ];
        for (mapping, part) in cases {
            let err = new_err(mapping);
            let expected = format!("{part} is not a valid JSONPath (RFC 9535): ");
            assert!(err.starts_with(&expected), "{err}");
        }
    }

    #[test]
    fn unknown_configuration_keys_and_values_are_rejected() {
        let cases = [
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\nscael = 2.0\n",
                "scael",
            ),
            (
                "table = \"m\"\ntimestamp = \"$.t\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                "timestamp",
            ),
            (
                "table = \"m\"\ntime_format = \"iso\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\n",
                "iso",
            ),
            (
                "table = \"m\"\n[[fields]]\ncolumn = \"x\"\npath = \"$.x\"\ntype = \"double\"\n",
                "double",
            ),
        ];
        for (mapping, unknown) in cases {
            let err = toml::from_str::<JsonMapping>(mapping)
                .unwrap_err()
                .to_string();
            assert!(err.contains(unknown), "{err}");
        }
    }
}

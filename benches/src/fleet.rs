//! The simulated fleet the load tool writes: seeded, deterministic and cheap to render.
//!
//! ```text
//! FleetSpec ─► Generator (part g of G: devices g, g+G, ...) ─► fill: line protocol, round by round
//!                                                          └─► Device::meter_json: MQTT payloads
//! ```
//!
//! Every device reports once per `interval` of virtual time: reading `k` of every device
//! carries the timestamp `start + k × interval`, so within one device no two points share
//! a time and the servers' deduplication never hides rows. A device's values depend only
//! on (seed, device index, reading index), never on how the fleet is split over
//! generator threads, so the same flags give the same rows.
//!
//! The client shares the machine's cores with the server it measures, so rendering is
//! kept to copies and integer formatting: tags are rendered once per device, values are
//! fixed-point integers printed with `itoa` (a random walk in integer units, not floats
//! through `fmt`), and bodies are built in reused buffers.

use std::fmt;
use std::str::FromStr;

/// Decimal places of a field, and the integer unit it is kept in (tenths of a watt, ...).
type FieldSpec = (&'static str, u32);

/// A kind of device: its table suffix and its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A grid meter: power (import positive, export negative), both energy registers,
    /// voltage and current.
    Meter,
    /// A PV inverter: AC power, production register, DC voltage, heat-sink temperature.
    Inverter,
    /// A home battery: power (charging positive), state of charge, both registers.
    Battery,
}

const METER_FIELDS: &[FieldSpec] = &[
    ("power_w", 1),
    ("energy_import_wh", 1),
    ("energy_export_wh", 1),
    ("voltage_v", 2),
    ("current_a", 3),
];
const INVERTER_FIELDS: &[FieldSpec] = &[
    ("power_w", 1),
    ("energy_wh", 1),
    ("dc_voltage_v", 1),
    ("temperature_c", 1),
];
const BATTERY_FIELDS: &[FieldSpec] = &[
    ("power_w", 1),
    ("soc_pct", 1),
    ("energy_charge_wh", 1),
    ("energy_discharge_wh", 1),
];

/// Tenths of a watt held for a millisecond, in a tenth of a watt-hour.
const DW_MS_PER_DWH: i64 = 3_600_000;

impl Kind {
    /// Every kind, in the order of `--kinds`.
    pub(crate) const ALL: [Kind; 3] = [Kind::Meter, Kind::Inverter, Kind::Battery];

    /// The name in `--kinds`, in device ids and (after the prefix) in table names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Meter => "meter",
            Kind::Inverter => "inverter",
            Kind::Battery => "battery",
        }
    }

    fn fields(self) -> &'static [FieldSpec] {
        match self {
            Kind::Meter => METER_FIELDS,
            Kind::Inverter => INVERTER_FIELDS,
            Kind::Battery => BATTERY_FIELDS,
        }
    }

    /// The name in the plural, for people.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Meter => "meters",
            Kind::Inverter => "inverters",
            Kind::Battery => "batteries",
        }
    }

    /// Field values per row.
    pub(crate) fn field_count(self) -> u64 {
        self.fields().len() as u64
    }
}

/// Relative shares of the kinds, `meter=8,inverter=1,battery=1`; kinds not named get none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mix {
    shares: [u32; 3],
}

impl Default for Mix {
    fn default() -> Self {
        Self { shares: [1, 0, 0] }
    }
}

impl Mix {
    /// The kind of device `index`: the fleet cycles through the shares (with
    /// `meter=8,inverter=1,battery=1`, devices 0-7 of every ten are meters), so every
    /// site and every part of the fleet has the mix's proportions.
    pub(crate) fn kind_of(&self, index: u64) -> Kind {
        let total: u64 = self.shares.iter().map(|&s| u64::from(s)).sum();
        let mut slot = index % total;
        for (kind, &share) in Kind::ALL.iter().zip(&self.shares) {
            if slot < u64::from(share) {
                return *kind;
            }
            slot -= u64::from(share);
        }
        unreachable!("slot < total = sum of the shares")
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (kind, &share) in Kind::ALL.iter().zip(&self.shares) {
            if share > 0 {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{}={share}", kind.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut shares = [0u32; 3];
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            // A bare kind means a share of 1: `--kinds meter`.
            let (name, share) = item.split_once('=').unwrap_or((item, "1"));
            let position = Kind::ALL
                .iter()
                .position(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    format!("unknown kind {name:?} in {s:?}; use meter, inverter or battery")
                })?;
            shares[position] = share
                .trim()
                .parse()
                .map_err(|_| format!("share {share:?} of {name} is not a whole number"))?;
        }
        if shares.iter().all(|&s| s == 0) {
            return Err(format!("{s:?} gives every kind a share of zero"));
        }
        Ok(Self { shares })
    }
}

/// Everything that fixes the rows of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FleetSpec {
    /// Number of devices (series per table).
    pub(crate) devices: u64,
    /// Devices per `site_id`.
    pub(crate) devices_per_site: u64,
    /// Shares of the kinds.
    pub(crate) mix: Mix,
    /// Virtual time between two readings of a device, milliseconds.
    pub(crate) interval_ms: i64,
    /// Virtual time of every device's first reading, ms since the Unix epoch.
    pub(crate) start_ms: i64,
    /// Seed of every random draw.
    pub(crate) seed: u64,
    /// Prepended to the kind's name to make the table (measurement) name.
    pub(crate) table_prefix: String,
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014): a bijective mixer, used
/// to derive independent per-device seeds from one seed.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One simulated device: its pre-rendered line prefix and its state, all in integer
/// units (tenths of a watt, tenths of a watt times milliseconds for the registers).
#[derive(Debug, Clone)]
pub(crate) struct Device {
    kind: Kind,
    /// `<table>,device_id=<id>,site_id=<site> ` (tags in key order, as InfluxDB stores them).
    line_prefix: Box<[u8]>,
    /// `<kind>-NNNNNNN`.
    id: String,
    /// `site-NNNNN`.
    site: String,
    rng: u64,
    /// The level the power wanders around, tenths of a watt.
    base_dw: i64,
    power_dw: i64,
    /// Import / production / charge register, tenths of a watt × ms.
    register_in: i64,
    /// Export / discharge register, tenths of a watt × ms.
    register_out: i64,
    /// Battery: stored energy, tenths of a watt × ms. Inverter: temperature, tenths of °C.
    aux: i64,
    /// Index of the next reading.
    next: u64,
}

/// Battery capacity: 10 kWh in tenths of a watt × ms.
const BATTERY_CAPACITY: i64 = 10_000 * 10 * DW_MS_PER_DWH;

impl Device {
    fn new(spec: &FleetSpec, index: u64) -> Self {
        let kind = spec.mix.kind_of(index);
        let id = format!("{}-{index:07}", kind.name());
        let site = format!("site-{:05}", index / spec.devices_per_site);
        let line_prefix = format!(
            "{}{},device_id={id},site_id={site} ",
            spec.table_prefix,
            kind.name()
        )
        .into_bytes()
        .into_boxed_slice();
        let mut rng = mix64(spec.seed ^ mix64(index.wrapping_add(1)));
        let mut draw = |range: u64| {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            (mix64(rng) % range) as i64
        };
        // Registers start somewhere in a meter's life; the walk starts at its level.
        let (base_dw, register_in, register_out, aux) = match kind {
            // A household: 0.2-2 kW.
            Kind::Meter => (
                2_000 + draw(18_000),
                draw(20_000_000) * 10 * DW_MS_PER_DWH,
                draw(5_000_000) * 10 * DW_MS_PER_DWH,
                0,
            ),
            // Half of a 4-12 kW peak.
            Kind::Inverter => (
                20_000 + draw(40_000),
                draw(30_000_000) * 10 * DW_MS_PER_DWH,
                0,
                250 + draw(150),
            ),
            Kind::Battery => (
                0,
                draw(5_000_000) * 10 * DW_MS_PER_DWH,
                draw(5_000_000) * 10 * DW_MS_PER_DWH,
                BATTERY_CAPACITY / 4 + draw(BATTERY_CAPACITY as u64 / 2),
            ),
        };
        Self {
            kind,
            line_prefix,
            id,
            site,
            rng,
            base_dw,
            power_dw: base_dw,
            register_in,
            register_out,
            aux,
            next: 0,
        }
    }

    /// The device id (`device_id` tag).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The site id (`site_id` tag).
    pub(crate) fn site(&self) -> &str {
        &self.site
    }

    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.rng)
    }

    /// Takes the next reading: the values in the kind's field order, in the fields'
    /// fixed-point units. Registers show the energy up to this reading, then move on by
    /// the power held for one interval.
    fn advance(&mut self, interval_ms: i64) -> [i64; 5] {
        self.next += 1;
        let noise = self.next_u64();
        // Three independent draws from one 64-bit value.
        let a = (noise & 0xffff) as i64; // 0..65535
        let b = ((noise >> 16) & 0xffff) as i64;
        let c = ((noise >> 32) & 0xffff) as i64;
        match self.kind {
            Kind::Meter => {
                // Mean-reverting walk, ±200 W per step; negative is export (PV on site).
                self.power_dw += (self.base_dw - self.power_dw) / 8 + a * 4_000 / 65_536 - 2_000;
                let voltage_cv = 22_600 + b * 800 / 65_536;
                let current_ma = self.power_dw.abs() * 10_000 / voltage_cv;
                let values = [
                    self.power_dw,
                    self.register_in / DW_MS_PER_DWH,
                    self.register_out / DW_MS_PER_DWH,
                    voltage_cv,
                    current_ma,
                ];
                let energy = self.power_dw * interval_ms;
                if energy >= 0 {
                    self.register_in += energy;
                } else {
                    self.register_out -= energy;
                }
                values
            }
            Kind::Inverter => {
                self.power_dw =
                    (self.power_dw + (self.base_dw - self.power_dw) / 16 + a * 3_000 / 65_536
                        - 1_500)
                        .clamp(0, 120_000);
                self.aux = (self.aux + b * 5 / 65_536 - 2).clamp(150, 750);
                let values = [
                    self.power_dw,
                    self.register_in / DW_MS_PER_DWH,
                    3_500 + c * 1_000 / 65_536,
                    self.aux,
                    0,
                ];
                self.register_in += self.power_dw * interval_ms;
                values
            }
            Kind::Battery => {
                // ±5 kW; turns around when full or empty.
                self.power_dw = (self.power_dw + a * 4_000 / 65_536 - 2_000).clamp(-50_000, 50_000);
                let values = [
                    self.power_dw,
                    self.aux * 1_000 / BATTERY_CAPACITY,
                    self.register_in / DW_MS_PER_DWH,
                    self.register_out / DW_MS_PER_DWH,
                    0,
                ];
                let energy = self.power_dw * interval_ms;
                self.aux += energy;
                if energy >= 0 {
                    self.register_in += energy;
                } else {
                    self.register_out -= energy;
                }
                if self.aux >= BATTERY_CAPACITY || self.aux <= 0 {
                    self.aux = self.aux.clamp(0, BATTERY_CAPACITY);
                    self.power_dw = -self.power_dw;
                }
                values
            }
        }
    }

    /// Appends the device's next reading as one line of line protocol.
    fn push_line(&mut self, out: &mut Vec<u8>, time_ns: i64, interval_ms: i64, num: &mut Num) {
        let values = self.advance(interval_ms);
        out.extend_from_slice(&self.line_prefix);
        for (i, ((name, decimals), value)) in self.kind.fields().iter().zip(values).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            num.fixed(out, value, *decimals);
        }
        out.push(b' ');
        num.int(out, time_ns);
        out.push(b'\n');
    }

    /// Appends the device's next `readings` readings as a generic JSON meter payload,
    /// the simulator's format (`devices::sim`, decoded by the `json` subscriptions of
    /// `gridlake simulate mqtt --print-config`):
    /// `{"readings":[{"ts":<unix ms>,"power_w":..,"import_wh":..,"export_wh":..},..]}`.
    pub(crate) fn meter_json(
        &mut self,
        out: &mut Vec<u8>,
        readings: u32,
        start_ms: i64,
        interval_ms: i64,
        num: &mut Num,
    ) {
        out.extend_from_slice(b"{\"readings\":[");
        for i in 0..readings {
            let time_ms = start_ms + self.next as i64 * interval_ms;
            let values = self.advance(interval_ms);
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"ts\":");
            num.int(out, time_ms);
            out.extend_from_slice(b",\"power_w\":");
            num.fixed(out, values[0], 1);
            out.extend_from_slice(b",\"import_wh\":");
            num.fixed(out, values[1], 1);
            out.extend_from_slice(b",\"export_wh\":");
            num.fixed(out, values[2], 1);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
}

/// Number formatting into byte buffers without `fmt`.
#[derive(Default)]
pub(crate) struct Num(itoa::Buffer);

impl fmt::Debug for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffer is scratch space; its bytes mean nothing between calls.
        f.write_str("Num")
    }
}

impl Num {
    /// Appends `value` in decimal.
    pub(crate) fn int(&mut self, out: &mut Vec<u8>, value: i64) {
        out.extend_from_slice(self.0.format(value).as_bytes());
    }

    /// Appends `value / 10^decimals` with exactly `decimals` places: `fixed(-5, 1)` is
    /// `-0.5`. With no decimals the number still gets a `.0`, so line protocol reads it
    /// as a float, never as an integer of another column type.
    pub(crate) fn fixed(&mut self, out: &mut Vec<u8>, value: i64, decimals: u32) {
        let scale = 10u64.pow(decimals);
        let magnitude = value.unsigned_abs();
        if value < 0 {
            out.push(b'-');
        }
        out.extend_from_slice(self.0.format(magnitude / scale).as_bytes());
        out.push(b'.');
        if decimals == 0 {
            out.push(b'0');
            return;
        }
        let fraction = magnitude % scale;
        let mut place = scale / 10;
        while place > 0 {
            out.push(b'0' + (fraction / place % 10) as u8);
            place /= 10;
        }
    }
}

/// Renders part `part` of `parts` of a fleet (devices `part`, `part + parts`, ...),
/// round by round: reading 0 of each of its devices, then reading 1, and so on.
#[derive(Debug)]
pub(crate) struct Generator {
    devices: Vec<Device>,
    /// The next device to report, an index into `devices`.
    cursor: usize,
    /// The round being rendered (reading index of every device).
    round: u64,
    start_ns: i64,
    interval_ns: i64,
    interval_ms: i64,
    num: Num,
}

impl Generator {
    /// The generator of part `part` of `parts` (`parts ≥ 1`, `part < parts`).
    pub(crate) fn new(spec: &FleetSpec, part: u64, parts: u64) -> Self {
        let devices = (part..spec.devices)
            .step_by(parts.max(1) as usize)
            .map(|index| Device::new(spec, index))
            .collect();
        Self {
            devices,
            cursor: 0,
            round: 0,
            start_ns: spec.start_ms.saturating_mul(1_000_000),
            interval_ns: spec.interval_ms.saturating_mul(1_000_000),
            interval_ms: spec.interval_ms,
            num: Num::default(),
        }
    }

    /// Whether this part has no devices (more parts than devices).
    pub(crate) fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Appends the next `rows` rows to `out` and returns how many field values they hold.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, rows: usize) -> u64 {
        let mut values = 0;
        if self.devices.is_empty() {
            return 0;
        }
        for _ in 0..rows {
            let time_ns = self.start_ns + self.round as i64 * self.interval_ns;
            let device = &mut self.devices[self.cursor];
            values += device.kind.field_count();
            device.push_line(out, time_ns, self.interval_ms, &mut self.num);
            self.cursor += 1;
            if self.cursor == self.devices.len() {
                self.cursor = 0;
                self.round += 1;
            }
        }
        values
    }

    /// Virtual time of the newest row rendered so far, ns since the Unix epoch.
    pub(crate) fn last_time_ns(&self) -> i64 {
        let round = if self.cursor == 0 {
            self.round.saturating_sub(1)
        } else {
            self.round
        };
        self.start_ns + round as i64 * self.interval_ns
    }
}

/// The devices of part `part` of `parts`, for publishers that render their own payloads.
pub(crate) fn devices(spec: &FleetSpec, part: u64, parts: u64) -> Vec<Device> {
    (part..spec.devices)
        .step_by(parts.max(1) as usize)
        .map(|index| Device::new(spec, index))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use ingest::{Precision, parse_line_protocol};
    use storage::FieldValue;

    use super::*;

    fn spec(devices: u64, mix: &str) -> FleetSpec {
        FleetSpec {
            devices,
            devices_per_site: 10,
            mix: mix.parse().unwrap(),
            interval_ms: 10_000,
            start_ms: 1_717_200_000_000,
            seed: 42,
            table_prefix: "bench_".to_owned(),
        }
    }

    fn render(spec: &FleetSpec, parts: u64, rows_per_part: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for part in 0..parts {
            let mut generator = Generator::new(spec, part, parts);
            let mut body = Vec::new();
            // Several bodies per part: a body boundary must not disturb the sequence.
            for chunk in [rows_per_part / 3, rows_per_part - rows_per_part / 3] {
                generator.fill(&mut body, chunk);
            }
            lines.extend(String::from_utf8(body).unwrap().lines().map(str::to_owned));
        }
        lines
    }

    #[test]
    fn fixed_point_has_exact_places_and_sign() {
        let mut num = Num::default();
        let cases = [
            (0, 1, "0.0"),
            (-5, 1, "-0.5"),
            (12_345, 1, "1234.5"),
            (-12_345, 1, "-1234.5"),
            (23_007, 2, "230.07"),
            (1_002, 3, "1.002"),
            (7, 3, "0.007"),
            (42, 0, "42.0"),
            (i64::MIN, 0, "-9223372036854775808.0"),
        ];
        for (value, decimals, expected) in cases {
            let mut out = Vec::new();
            num.fixed(&mut out, value, decimals);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "{value} {decimals}"
            );
        }
    }

    #[test]
    fn mix_parses_prints_and_cycles() {
        let mix: Mix = "meter=8, inverter=1,battery=1".parse().unwrap();
        assert_eq!(mix.to_string(), "meter=8,inverter=1,battery=1");
        let kinds: Vec<Kind> = (0..20).map(|i| mix.kind_of(i)).collect();
        assert_eq!(kinds.iter().filter(|&&k| k == Kind::Meter).count(), 16);
        assert_eq!(kinds[8], Kind::Inverter);
        assert_eq!(kinds[19], Kind::Battery);
        assert_eq!("meter".parse::<Mix>().unwrap(), Mix::default());
        assert!("meter=0".parse::<Mix>().is_err());
        assert!("heatpump=1".parse::<Mix>().is_err());
    }

    #[test]
    fn same_spec_same_rows_however_the_fleet_is_split() {
        let spec = spec(30, "meter=3,inverter=1,battery=1");
        let one = render(&spec, 1, 300);
        assert_eq!(one, render(&spec, 1, 300), "not deterministic");
        // Three parts of 100 rows each cover the same ten rounds of thirty devices.
        let mut three = render(&spec, 3, 100);
        let mut one_sorted = one.clone();
        three.sort();
        one_sorted.sort();
        assert_eq!(one_sorted, three);
        let other_seed = FleetSpec { seed: 43, ..spec };
        assert_ne!(one, render(&other_seed, 1, 300));
    }

    #[test]
    fn every_point_is_unique_and_times_advance_by_the_interval() {
        let spec = spec(20, "meter=2,inverter=1,battery=1");
        let lines = render(&spec, 2, 1_000); // 100 rounds of 10 devices per part
        let mut seen = HashSet::new();
        for line in &lines {
            let (series, rest) = line.split_once(' ').unwrap();
            let time = rest.rsplit_once(' ').unwrap().1;
            assert!(seen.insert((series.to_owned(), time.to_owned())), "{line}");
        }
        let (mut parsed, errors) =
            parse_line_protocol(lines.join("\n").as_bytes(), Precision::Nanoseconds, 0);
        assert!(errors.is_empty(), "{errors:?}");
        parsed.retain(|l| l.row.tags.iter().any(|(_, v)| v == "meter-0000000"));
        let times: Vec<i64> = parsed.iter().map(|l| l.row.time).collect();
        assert_eq!(times.len(), 100);
        for (k, time) in times.iter().enumerate() {
            assert_eq!(*time, 1_717_200_000_000_000_000 + k as i64 * 10_000_000_000);
        }
    }

    #[test]
    fn lines_parse_as_line_protocol_with_the_printed_values() {
        let spec = spec(30, "meter=3,inverter=1,battery=1");
        let mut generator = Generator::new(&spec, 0, 1);
        let mut body = Vec::new();
        let values = generator.fill(&mut body, 3_000);
        let (lines, errors) = parse_line_protocol(&body, Precision::Nanoseconds, 0);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(lines.len(), 3_000);
        assert_eq!(
            values,
            lines.iter().map(|l| l.row.fields.len() as u64).sum::<u64>()
        );
        let text = String::from_utf8(body).unwrap();
        for (line, raw) in lines.iter().zip(text.lines()) {
            let kind = Kind::ALL
                .into_iter()
                .find(|k| line.table == format!("bench_{}", k.name()))
                .unwrap_or_else(|| panic!("table {}", line.table));
            let names: Vec<&str> = line.row.fields.iter().map(|(n, _)| n.as_str()).collect();
            let expected: Vec<&str> = kind.fields().iter().map(|(n, _)| *n).collect();
            assert_eq!(names, expected, "{raw}");
            let tags: Vec<&str> = line.row.tags.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(tags, ["device_id", "site_id"], "{raw}");
            // Every value is a float and reads back as the text that was written.
            let field_text = raw.split(' ').nth(1).unwrap();
            for ((_, value), written) in line.row.fields.iter().zip(field_text.split(',')) {
                let FieldValue::F64(v) = value else {
                    panic!("{raw}: {value:?} is not a float")
                };
                let written: f64 = written.split_once('=').unwrap().1.parse().unwrap();
                assert_eq!(*v, written, "{raw}");
            }
        }
    }

    #[test]
    fn registers_only_grow_and_meters_stay_plausible() {
        let spec = spec(1, "meter");
        let mut generator = Generator::new(&spec, 0, 1);
        let mut body = Vec::new();
        generator.fill(&mut body, 5_000);
        let (lines, _) = parse_line_protocol(&body, Precision::Nanoseconds, 0);
        let field = |i: usize, name: &str| match lines[i].row.fields.iter().find(|(n, _)| n == name)
        {
            Some((_, FieldValue::F64(v))) => *v,
            other => panic!("{name}: {other:?}"),
        };
        for i in 1..lines.len() {
            assert!(field(i, "energy_import_wh") >= field(i - 1, "energy_import_wh"));
            assert!(field(i, "energy_export_wh") >= field(i - 1, "energy_export_wh"));
            assert!((226.0..=234.0).contains(&field(i, "voltage_v")));
            assert!(
                field(i, "power_w").abs() < 20_000.0,
                "{}",
                field(i, "power_w")
            );
        }
        assert_eq!(
            generator.last_time_ns(),
            1_717_200_000_000_000_000 + 4_999 * 10_000_000_000
        );
    }

    #[test]
    fn meter_json_is_the_simulators_shape() {
        let spec = spec(3, "meter");
        let mut device = devices(&spec, 1, 2).remove(0);
        assert_eq!(device.id(), "meter-0000001");
        assert_eq!(device.site(), "site-00000");
        let mut num = Num::default();
        let mut out = Vec::new();
        device.meter_json(&mut out, 3, spec.start_ms, spec.interval_ms, &mut num);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let readings = v["readings"].as_array().unwrap();
        assert_eq!(readings.len(), 3);
        for (k, r) in readings.iter().enumerate() {
            assert_eq!(r["ts"], spec.start_ms + k as i64 * 10_000);
            for key in ["power_w", "import_wh", "export_wh"] {
                assert!(r[key].is_f64(), "{r}");
            }
        }
        // The next message continues the device's clock.
        out.clear();
        device.meter_json(&mut out, 1, spec.start_ms, spec.interval_ms, &mut num);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["readings"][0]["ts"], spec.start_ms + 30_000);
    }
}

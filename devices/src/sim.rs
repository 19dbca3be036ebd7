//! A simulated fleet of energy devices, for load tests and demos (`gridlake simulate`).
//!
//! Pure and deterministic: a [`FleetConfig`] (seed, device count, mix of kinds, virtual
//! start time and sampling interval) fixes every payload of every device, whatever the
//! wall clock, the publish rate or the number of connections, so a run can be repeated
//! byte for byte. The publisher (`server/src/simulate.rs`) only decides when to send.
//!
//! ```text
//! FleetConfig ─► Fleet::new ─► DeviceSim (one per device) ─► next_message ─► topic + payload
//!                     └──────► Schedule: the global order of messages (round by round)
//! ```
//!
//! Each device takes reading `k` at `start + k × interval` of virtual time and puts that
//! timestamp into its payload, so a redelivered message decodes to the same rows. The
//! topics and payload formats are the "Simulator topic layout" of the MQTT collector;
//! [`mqtt_config_toml`] prints the subscriptions that decode them.
//!
//! The physics is simple but shaped like the real thing: sites sit at 0° longitude
//! (local time is UTC, solar noon at 12:00) around 50° N. A household draws a base load
//! with morning and evening peaks; PV follows a bell between sunrise and sunset whose
//! width and height follow the season, dimmed by clouds that drift every quarter hour;
//! EV chargers see a car arrive most evenings, charge it at full power to its target and
//! keep the session open until the car leaves in the morning; plugs run a fridge
//! (compressor cycles), a washing machine (heating, washing, spinning), a TV (evenings)
//! or a computer (office hours on weekdays, switched off at night). A site's meter sees
//! the sum: household + plugs + EV charging − PV. Cumulative energy registers integrate
//! the power and only grow.
//!
//! Every time-dependent quantity is a pure function of (device seed, virtual time), so
//! the meter can add up its site's plugs, chargers and inverters without sharing state
//! with them.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "gridlake-sim";

/// Devices per site: device `i` belongs to site `i / SITE_SIZE`.
pub const SITE_SIZE: usize = 5;

const MS_PER_SECOND: i64 = 1_000;
const MS_PER_HOUR: f64 = 3_600_000.0;
const MS_PER_DAY: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------

/// The SplitMix64 increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijective 64-bit mixer with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea and Flood, 2014), written out here rather than taken from
/// `rand`: the fleet must be the same for the same seed on every machine and every
/// future build, and `rand` documents that `StdRng`'s algorithm may change between
/// releases. Statistical quality far beyond what load shapes need, in five lines.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
}

/// The top 53 bits as a float in [0, 1).
fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A stateless hash of (seed, a): the random draws that must be a pure function of
/// virtual time, so any device can recompute any other device's value at any instant.
fn hash(seed: u64, a: u64) -> u64 {
    mix64(seed ^ mix64(a.wrapping_mul(GOLDEN).wrapping_add(0x632b_e59b_d9b4_e019)))
}

/// [`hash`] as a float in [0, 1).
fn unit(seed: u64, a: i64) -> f64 {
    to_unit(hash(seed, a as u64))
}

/// Smooth noise in [0, 1): random values at multiples of `period_ms`, eased between.
fn value_noise(seed: u64, t_ms: i64, period_ms: i64) -> f64 {
    let i = t_ms.div_euclid(period_ms);
    let f = t_ms.rem_euclid(period_ms) as f64 / period_ms as f64;
    let (a, b) = (unit(seed, i), unit(seed, i + 1));
    let s = f * f * (3.0 - 2.0 * f);
    a + (b - a) * s
}

/// Salts that keep the different draws of one device independent.
const SALT_SITE: u64 = 0x5173_0000_0000_0001;
const SALT_VOLTAGE: u64 = 0x5173_0000_0000_0002;
const SALT_CLOUD: u64 = 0x5173_0000_0000_0003;
const SALT_JITTER: u64 = 0x5173_0000_0000_0004;
const SALT_KETTLE: u64 = 0x5173_0000_0000_0005;

// ---------------------------------------------------------------------------------------
// Time helpers
// ---------------------------------------------------------------------------------------

/// Days since the Unix epoch.
fn day_of(t_ms: i64) -> i64 {
    t_ms.div_euclid(MS_PER_DAY)
}

/// Hours since midnight UTC, fractional.
fn hour_of(t_ms: i64) -> f64 {
    t_ms.rem_euclid(MS_PER_DAY) as f64 / MS_PER_HOUR
}

/// A Gaussian bump around `mu` hours.
fn bump(h: f64, mu: f64, sigma: f64) -> f64 {
    let z = (h - mu) / sigma;
    (-0.5 * z * z).exp()
}

fn datetime(t_ms: i64) -> DateTime<Utc> {
    // The fleet rejects start times outside chrono's range; a run would need centuries
    // of virtual time to leave it.
    DateTime::from_timestamp_millis(t_ms).unwrap_or_default()
}

/// Rounds to `decimals` places, without negative zero (JSON readers print "-0.0").
fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f + 0.0
}

// ---------------------------------------------------------------------------------------
// Kinds and mix
// ---------------------------------------------------------------------------------------

/// A kind of simulated device: a payload format and the table it decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimKind {
    /// Shelly Plus Plug (Gen2 RPC NotifyStatus over MQTT) → `smart_plug`.
    Shelly,
    /// Tasmota plug (`tele/<topic>/SENSOR`) → `smart_plug`.
    Tasmota,
    /// OCPP 1.6 charger (MeterValues CALL frame) → `ev_charger`.
    Ocpp,
    /// Grid meter publishing generic JSON (batched) → `meter`.
    Meter,
    /// PV inverter publishing generic JSON (batched) → `inverter`.
    Inverter,
}

impl SimKind {
    /// Every kind, in the order of [`Mix`] and of the `--mix` flag.
    pub const ALL: [SimKind; 5] = [
        SimKind::Shelly,
        SimKind::Tasmota,
        SimKind::Ocpp,
        SimKind::Meter,
        SimKind::Inverter,
    ];

    /// The name in `--mix`, in topics and in device ids.
    pub fn name(self) -> &'static str {
        match self {
            SimKind::Shelly => "shelly",
            SimKind::Tasmota => "tasmota",
            SimKind::Ocpp => "ocpp",
            SimKind::Meter => "meter",
            SimKind::Inverter => "inverter",
        }
    }

    /// The canonical table the payloads decode to.
    pub fn table(self) -> &'static str {
        match self {
            SimKind::Shelly | SimKind::Tasmota => crate::tables::SMART_PLUG.name,
            SimKind::Ocpp => crate::tables::EV_CHARGER.name,
            SimKind::Meter => crate::tables::METER.name,
            SimKind::Inverter => crate::tables::INVERTER.name,
        }
    }

    /// Whether messages of this kind carry `--batch` readings (the generic JSON formats);
    /// the device formats carry one reading per message, as the devices do.
    pub fn batches(self) -> bool {
        matches!(self, SimKind::Meter | SimKind::Inverter)
    }

    fn position(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Relative shares of the device kinds in a fleet: `shelly=30,tasmota=20,ocpp=10,meter=25,inverter=15`
/// (the default). Kinds not named get no devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    shares: [u32; 5],
}

impl Default for Mix {
    /// Plugs are the most common metered devices in homes, then grid meters, then PV;
    /// chargers are the rarest.
    fn default() -> Self {
        Self {
            shares: [30, 20, 10, 25, 15],
        }
    }
}

impl Mix {
    /// A mix of these shares, in [`SimKind::ALL`] order; `None` when all are zero.
    pub fn new(shares: [u32; 5]) -> Option<Self> {
        shares.iter().any(|&s| s > 0).then_some(Self { shares })
    }

    /// The share of `kind`.
    pub fn share(&self, kind: SimKind) -> u32 {
        self.shares[kind.position()]
    }

    /// How many of `devices` devices are of each kind (in [`SimKind::ALL`] order):
    /// proportional to the shares, rounded by largest remainder so they add up exactly.
    pub fn counts(&self, devices: usize) -> [usize; 5] {
        let total: u64 = self.shares.iter().map(|&s| u64::from(s)).sum();
        let mut counts = [0usize; 5];
        let mut remainders = [(0u64, 0usize); 5];
        let mut assigned = 0usize;
        for (i, &share) in self.shares.iter().enumerate() {
            let exact = devices as u128 * u128::from(share);
            counts[i] = (exact / u128::from(total)) as usize;
            remainders[i] = ((exact % u128::from(total)) as u64, i);
            assigned += counts[i];
        }
        // Largest remainder first; ties go to the kind listed first.
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter().take(devices - assigned) {
            counts[i] += 1;
        }
        counts
    }

    /// The kind of every device, interleaved (smooth weighted round robin) so that every
    /// site and every prefix of the fleet has about the mix's proportions.
    pub fn layout(&self, devices: usize) -> Vec<SimKind> {
        let counts = self.counts(devices);
        let weights = counts.map(|c| c as i64);
        let total = devices as i64;
        let mut current = [0i64; 5];
        let mut kinds = Vec::with_capacity(devices);
        for _ in 0..devices {
            let mut best = 0;
            for i in 0..5 {
                current[i] += weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            kinds.push(SimKind::ALL[best]);
        }
        kinds
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in SimKind::ALL {
            let share = self.share(kind);
            if share > 0 {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{kind}={share}")?;
                first = false;
            }
        }
        Ok(())
    }
}

impl FromStr for Mix {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |item: &str, reason: &'static str| SimError::InvalidMix {
            item: item.to_string(),
            reason,
        };
        let mut shares = [0u32; 5];
        let mut named = [false; 5];
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, share) = item
                .split_once('=')
                .ok_or_else(|| invalid(item, "expected kind=share, e.g. meter=25"))?;
            let kind = SimKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    invalid(
                        item,
                        "unknown kind; expected shelly, tasmota, ocpp, meter or inverter",
                    )
                })?;
            let share: u32 = share
                .trim()
                .parse()
                .map_err(|_| invalid(item, "the share is not a non-negative integer"))?;
            if std::mem::replace(&mut named[kind.position()], true) {
                return Err(invalid(item, "kind named twice"));
            }
            shares[kind.position()] = share;
        }
        Mix::new(shares).ok_or_else(|| invalid(s, "every share is zero"))
    }
}

// ---------------------------------------------------------------------------------------
// Errors and configuration
// ---------------------------------------------------------------------------------------

/// Why a fleet cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// `devices` is zero.
    NoDevices,
    /// `batch` is zero.
    ZeroBatch,
    /// The sampling interval is not positive.
    Interval {
        /// The interval, milliseconds.
        interval_ms: i64,
    },
    /// Tasmota payloads carry whole seconds, and the fleet has Tasmota devices.
    TasmotaResolution {
        /// The interval, milliseconds.
        interval_ms: i64,
        /// The start, milliseconds since the Unix epoch.
        start_ms: i64,
    },
    /// The start time is before 1970 or after 9999.
    Start {
        /// The start, milliseconds since the Unix epoch.
        start_ms: i64,
    },
    /// The topic prefix cannot be used.
    InvalidPrefix {
        /// The prefix.
        prefix: String,
    },
    /// A `--mix` item is invalid.
    InvalidMix {
        /// The offending item (or the whole mix).
        item: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::NoDevices => f.write_str("the fleet needs at least one device"),
            SimError::ZeroBatch => f.write_str("the batch size must be at least 1"),
            SimError::Interval { interval_ms } => write!(
                f,
                "the sampling interval must be at least 1 ms, got {interval_ms} ms"
            ),
            SimError::TasmotaResolution {
                interval_ms,
                start_ms,
            } => write!(
                f,
                "Tasmota payloads carry their time in whole seconds, so with Tasmota devices in the \
                 mix the interval and the start must be whole seconds (got interval {interval_ms} ms, \
                 start {start_ms} ms since the epoch); use e.g. --interval 1s, or a --mix without tasmota"
            ),
            SimError::Start { start_ms } => write!(
                f,
                "the start time must lie between 1970 and 9999, got {start_ms} ms since the epoch"
            ),
            SimError::InvalidPrefix { prefix } => write!(
                f,
                "topic prefix {prefix:?} is not usable: use letters, digits, '-', '_', '.' and \
                 '/' between non-empty levels"
            ),
            SimError::InvalidMix { item, reason } => write!(f, "invalid mix {item:?}: {reason}"),
        }
    }
}

impl std::error::Error for SimError {}

/// Everything that determines a fleet's payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Shares of the device kinds.
    pub mix: Mix,
    /// Virtual time between two readings of one device, milliseconds.
    pub interval_ms: i64,
    /// Virtual time of every device's first reading, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Readings per message for the kinds that batch ([`SimKind::batches`]).
    pub batch: u32,
    /// Topic prefix.
    pub prefix: String,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            devices: 100,
            mix: Mix::default(),
            interval_ms: 10_000,
            start_ms: 1_717_200_000_000, // 2024-06-01T00:00:00Z
            batch: 1,
            prefix: DEFAULT_PREFIX.to_string(),
            seed: 42,
        }
    }
}

/// Checks a topic prefix: it is copied into JSON strings and topics unescaped, so it is
/// kept to characters that need no escaping and no MQTT wildcards.
fn check_prefix(prefix: &str) -> Result<(), SimError> {
    let ok = !prefix.is_empty()
        && prefix.split('/').all(|level| {
            !level.is_empty()
                && level
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(SimError::InvalidPrefix {
            prefix: prefix.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Physical models: pure functions of virtual time
// ---------------------------------------------------------------------------------------

/// A household's own consumption (lights, cooking, standby), behind the grid meter.
#[derive(Debug, Clone)]
struct House {
    seed: u64,
    base_w: f64,
    scale: f64,
}

impl House {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        Self {
            seed,
            base_w: rng.range(120.0, 350.0),
            scale: rng.range(0.6, 1.5),
        }
    }

    fn power_w(&self, t: i64) -> f64 {
        let h = hour_of(t);
        let shape =
            450.0 * bump(h, 7.3, 0.9) + 250.0 * bump(h, 12.5, 1.5) + 900.0 * bump(h, 19.2, 1.7);
        let wobble = 0.8 + 0.4 * value_noise(self.seed, t, 10 * 60_000);
        // A kettle or a hob for a few minutes, more likely when people are up.
        let kettle_chance = 0.02 * (shape / 900.0 + 0.1);
        let kettle = if unit(self.seed ^ SALT_KETTLE, t.div_euclid(180_000)) < kettle_chance {
            2000.0
        } else {
            0.0
        };
        self.base_w + self.scale * shape * wobble + kettle
    }
}

/// A PV system: a bell between sunrise and sunset, scaled by season and clouds.
#[derive(Debug, Clone)]
struct Pv {
    seed: u64,
    peak_w: f64,
}

impl Pv {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        Self {
            seed,
            peak_w: (rng.range(3.0, 12.0) * 2.0).round() * 500.0,
        }
    }

    fn power_w(&self, t: i64) -> f64 {
        let day = day_of(t);
        let h = hour_of(t);
        // 0 = 1 January; the drift of the 365.2425-day approximation is under a day.
        let day_of_year = (day as f64).rem_euclid(365.2425);
        // +1 at the June solstice, −1 at the December solstice.
        let season = (2.0 * std::f64::consts::PI * (day_of_year - 80.0) / 365.2425).sin();
        // About 50° N: 8 h of daylight in December, 16 h in June.
        let day_length = 12.0 + 4.0 * season;
        let sunrise = 12.0 - day_length / 2.0;
        if h <= sunrise || h >= sunrise + day_length {
            return 0.0;
        }
        let elevation = (std::f64::consts::PI * (h - sunrise) / day_length).sin();
        let clear_sky = self.peak_w * 0.9 * elevation.powf(1.3) * (0.7 + 0.3 * season);
        // Some days are overcast, most are mixed; clouds drift every quarter hour.
        let cloudiness = 0.85 * unit(self.seed ^ SALT_CLOUD, day).powi(2);
        let clouds = 1.0 - cloudiness * value_noise(self.seed ^ SALT_CLOUD, t, 15 * 60_000);
        clear_sky * clouds
    }
}

// Accessors for the SunSpec simulator (`sunspec::sim`), which reuses this module's
// physics so that Modbus devices and MQTT devices follow the same day.

/// Power of the PV system `seed` draws, at `t_ms` (wall-clock or virtual ms since the
/// epoch), watts.
pub(crate) fn pv_power_w(seed: u64, t_ms: i64) -> f64 {
    Pv::new(seed).power_w(t_ms)
}

/// Rated (peak) power of the PV system `seed` draws, watts.
pub(crate) fn pv_peak_w(seed: u64) -> f64 {
    Pv::new(seed).peak_w
}

/// Consumption of the household `seed` draws, at `t_ms`, watts.
pub(crate) fn house_power_w(seed: u64, t_ms: i64) -> f64 {
    House::new(seed).power_w(t_ms)
}

/// A seed for the part `salt` of the thing `seed` describes (stateless hash).
pub(crate) fn derive_seed(seed: u64, salt: u64) -> u64 {
    hash(seed, salt)
}

/// A uniform draw in [0, 1) that is a pure function of (`seed`, `a`).
pub(crate) fn unit_draw(seed: u64, a: i64) -> f64 {
    unit(seed, a)
}

/// Smooth noise in [0, 1) that changes over about `period_ms`.
pub(crate) fn smooth_noise(seed: u64, t_ms: i64, period_ms: i64) -> f64 {
    value_noise(seed, t_ms, period_ms)
}

/// One charging session: a car arriving in the evening and leaving in the morning.
#[derive(Debug, Clone, Copy)]
struct Session {
    arrive: i64,
    depart: i64,
    start_soc: f64,
    energy_wh: f64,
    transaction_id: i64,
}

/// An EV charger's state at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ChargerState {
    power_w: f64,
    /// The transaction and the car's state of charge while a car is connected.
    session: Option<(i64, f64)>,
}

/// A wallbox: sessions on most evenings, full power until the car has what it wants.
#[derive(Debug, Clone)]
struct Charger {
    seed: u64,
    max_w: f64,
    capacity_wh: f64,
}

impl Charger {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let max_w = [3_700.0, 7_400.0, 11_000.0, 11_000.0][(rng.next_u64() % 4) as usize];
        Self {
            seed,
            max_w,
            capacity_wh: rng.range(40_000.0, 90_000.0),
        }
    }

    /// The session that starts on `day`, if any.
    fn session(&self, day: i64) -> Option<Session> {
        let draw = |i: i64| unit(self.seed, day * 8 + i);
        if draw(0) >= 0.7 {
            return None;
        }
        let start_soc = 15.0 + 45.0 * draw(3);
        let wanted = 5_000.0 + 30_000.0 * draw(4);
        Some(Session {
            arrive: day * MS_PER_DAY + ((17.0 + 4.0 * draw(1)) * MS_PER_HOUR) as i64,
            depart: (day + 1) * MS_PER_DAY + ((6.0 + 2.0 * draw(2)) * MS_PER_HOUR) as i64,
            start_soc,
            // Up to 95 %, and no more than 8 h of charging: every car leaves full.
            energy_wh: wanted
                .min((95.0 - start_soc) / 100.0 * self.capacity_wh)
                .min(8.0 * self.max_w),
            transaction_id: (hash(self.seed, (day * 8 + 5) as u64) >> 33) as i64 + 1,
        })
    }

    fn at(&self, t: i64) -> ChargerState {
        let today = day_of(t);
        // Sessions run past midnight, so yesterday's may still be open.
        for day in [today, today - 1] {
            let Some(s) = self.session(day) else { continue };
            if t < s.arrive || t >= s.depart {
                continue;
            }
            let charge_ms = s.energy_wh / self.max_w * MS_PER_HOUR;
            let charged_ms = ((t - s.arrive) as f64).min(charge_ms);
            let soc =
                s.start_soc + charged_ms / MS_PER_HOUR * self.max_w / self.capacity_wh * 100.0;
            let power_w = if ((t - s.arrive) as f64) < charge_ms {
                self.max_w * (0.985 + 0.015 * unit(self.seed ^ SALT_JITTER, t))
            } else {
                0.0
            };
            return ChargerState {
                power_w,
                session: Some((s.transaction_id, soc.min(100.0))),
            };
        }
        ChargerState {
            power_w: 0.0,
            session: None,
        }
    }
}

/// What is plugged into a smart plug.
#[derive(Debug, Clone)]
enum Appliance {
    /// Compressor cycles all day.
    Fridge {
        period_ms: i64,
        on_ms: i64,
        offset_ms: i64,
        on_w: f64,
    },
    /// A program on about half the days: heating, washing, spinning.
    Washer { heat_w: f64 },
    /// Evenings.
    Tv { on_w: f64 },
    /// Office hours on weekdays; the plug switches it off at night.
    Computer { load_w: f64 },
}

/// A metering smart plug and its appliance.
#[derive(Debug, Clone)]
struct Plug {
    seed: u64,
    site_seed: u64,
    appliance: Appliance,
    power_factor: f64,
}

impl Plug {
    fn new(seed: u64, site_seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let pick = rng.next_f64();
        let (appliance, power_factor) = if pick < 0.35 {
            let period_ms = (rng.range(45.0, 70.0) * 60_000.0) as i64;
            let duty = rng.range(0.3, 0.45);
            (
                Appliance::Fridge {
                    period_ms,
                    on_ms: (period_ms as f64 * duty) as i64,
                    offset_ms: (rng.next_f64() * period_ms as f64) as i64,
                    on_w: rng.range(70.0, 140.0),
                },
                0.8,
            )
        } else if pick < 0.55 {
            (
                Appliance::Washer {
                    heat_w: rng.range(1_900.0, 2_200.0),
                },
                0.97,
            )
        } else if pick < 0.8 {
            (
                Appliance::Tv {
                    on_w: rng.range(60.0, 140.0),
                },
                0.95,
            )
        } else {
            (
                Appliance::Computer {
                    load_w: rng.range(80.0, 250.0),
                },
                0.95,
            )
        };
        Self {
            seed,
            site_seed,
            appliance,
            power_factor,
        }
    }

    /// (relay on, active power W) at `t`.
    fn at(&self, t: i64) -> (bool, f64) {
        let day = day_of(t);
        let h = hour_of(t);
        let draw = |i: i64| unit(self.seed, day * 4 + i);
        let jitter = |period_ms: i64| unit(self.seed ^ SALT_JITTER, t.div_euclid(period_ms));
        let power = match self.appliance {
            Appliance::Fridge {
                period_ms,
                on_ms,
                offset_ms,
                on_w,
            } => {
                if (t + offset_ms).rem_euclid(period_ms) < on_ms {
                    on_w * (0.95 + 0.1 * jitter(10_000))
                } else {
                    1.1
                }
            }
            Appliance::Washer { heat_w } => {
                let start = day * MS_PER_DAY + ((7.0 + 13.0 * draw(1)) * MS_PER_HOUR) as i64;
                let minute = (t - start).div_euclid(60_000);
                match minute {
                    _ if draw(0) >= 0.45 => 0.6,
                    0..15 => heat_w * (0.97 + 0.03 * jitter(20_000)),
                    15..85 => 150.0 + 200.0 * jitter(30_000),
                    85..100 => 350.0 + 250.0 * jitter(10_000),
                    _ => 0.6,
                }
            }
            Appliance::Tv { on_w } => {
                let on = 18.0 + 2.0 * draw(1);
                let off = 22.0 + 1.5 * draw(2);
                if draw(0) < 0.85 && (on..off).contains(&h) {
                    on_w * (0.9 + 0.2 * value_noise(self.seed, t, 60_000))
                } else {
                    0.5
                }
            }
            Appliance::Computer { load_w } => {
                if h < 6.0 {
                    return (false, 0.0);
                }
                // 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays.
                let weekday = (day + 3).rem_euclid(7) < 5;
                let start = 8.5 + 0.5 * draw(1);
                let end = 17.0 + 1.0 * draw(2);
                if weekday && (start..end).contains(&h) {
                    load_w * (0.5 + 0.5 * value_noise(self.seed, t, 60_000))
                } else {
                    2.5
                }
            }
        };
        (true, power)
    }

    /// Mains voltage at the site: slow drift plus a little jitter around 230 V.
    fn voltage_v(&self, t: i64) -> f64 {
        230.0
            + 8.0 * (value_noise(self.site_seed ^ SALT_VOLTAGE, t, 120_000) - 0.5)
            + 0.6 * (unit(self.seed ^ SALT_VOLTAGE, t.div_euclid(1_000)) - 0.5)
    }
}

/// A device behind a site's grid meter.
#[derive(Debug, Clone)]
enum Load {
    Plug(Plug),
    Charger(Charger),
    Pv(Pv),
}

impl Load {
    /// Contribution to the grid power at the meter: consumption positive, PV negative.
    fn grid_w(&self, t: i64) -> f64 {
        match self {
            Load::Plug(p) => p.at(t).1,
            Load::Charger(c) => c.at(t).power_w,
            Load::Pv(pv) => -pv.power_w(t),
        }
    }
}

/// What a device simulates.
#[derive(Debug, Clone)]
enum Model {
    Plug(Plug),
    Charger(Charger),
    Meter { house: House, loads: Vec<Load> },
    Pv(Pv),
}

// ---------------------------------------------------------------------------------------
// Devices and messages
// ---------------------------------------------------------------------------------------

/// One MQTT message of the simulated fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMessage {
    /// The topic.
    pub topic: String,
    /// The payload (JSON).
    pub payload: Vec<u8>,
    /// Rows the collector stores from it.
    pub readings: u32,
    /// Virtual time of the first reading, ms since the Unix epoch.
    pub first_ms: i64,
    /// Virtual time of the last reading, ms since the Unix epoch.
    pub last_ms: i64,
}

/// One simulated device: its model and its cumulative registers. Owned by one publisher
/// task; [`DeviceSim::next_message`] advances it by one message.
#[derive(Debug, Clone)]
pub struct DeviceSim {
    index: usize,
    kind: SimKind,
    id: String,
    site_id: String,
    topic: String,
    model: Model,
    start_ms: i64,
    interval_ms: i64,
    batch: u32,
    /// Index of the next reading.
    next: u64,
    /// The main register (Wh): plug/charger/meter import/inverter production.
    energy_wh: f64,
    /// The meter's export register (Wh).
    export_wh: f64,
}

impl DeviceSim {
    /// Position in the fleet.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The payload format.
    pub fn kind(&self) -> SimKind {
        self.kind
    }

    /// `<kind>-NNNNNN`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `site-NNNN`.
    pub fn site_id(&self) -> &str {
        &self.site_id
    }

    /// The topic every message of this device goes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Readings per message.
    pub fn readings_per_message(&self) -> u32 {
        self.batch
    }

    /// Whether the device publishes in `round` of the [`Schedule`]: every round, or for
    /// batching devices every `batch`-th round, so all devices' virtual clocks advance
    /// together.
    pub fn publishes_in_round(&self, round: u64) -> bool {
        (round + 1).is_multiple_of(u64::from(self.batch))
    }

    /// Virtual time of reading `k`, ms since the Unix epoch.
    pub fn reading_time_ms(&self, k: u64) -> i64 {
        self.start_ms + k as i64 * self.interval_ms
    }

    /// Readings taken so far.
    pub fn readings_taken(&self) -> u64 {
        self.next
    }

    /// The next message: the next reading (or `batch` readings), encoded.
    pub fn next_message(&mut self) -> SimMessage {
        let first_ms = self.reading_time_ms(self.next);
        let mut payload = String::with_capacity(160 + 80 * self.batch as usize);
        match self.kind {
            SimKind::Shelly => self.shelly(&mut payload),
            SimKind::Tasmota => self.tasmota(&mut payload),
            SimKind::Ocpp => self.ocpp(&mut payload),
            SimKind::Meter => self.meter(&mut payload),
            SimKind::Inverter => self.inverter(&mut payload),
        }
        SimMessage {
            topic: self.topic.clone(),
            payload: payload.into_bytes(),
            readings: self.batch,
            first_ms,
            last_ms: self.reading_time_ms(self.next - 1),
        }
    }

    /// Takes reading `next`: returns its time and moves the registers on by `power_w`
    /// held for one interval (left Riemann sum: the register at reading `k` is the energy
    /// up to reading `k`).
    fn advance(&mut self, power_w: f64) -> i64 {
        let t = self.reading_time_ms(self.next);
        let wh = power_w * self.interval_ms as f64 / MS_PER_HOUR;
        if wh >= 0.0 {
            self.energy_wh += wh;
        } else {
            self.export_wh -= wh;
        }
        self.next += 1;
        t
    }

    fn plug(&self) -> &Plug {
        match &self.model {
            Model::Plug(p) => p,
            _ => unreachable!("plug formats are only built with plug models"),
        }
    }

    // Encoders. Payloads are written by hand rather than through serde_json::Value: it is
    // several times faster, which matters when the simulator itself is the load test's
    // bottleneck. Every string written is ASCII without quotes or backslashes (the prefix
    // is checked), and tests parse every kind back.

    /// Shelly Gen2 NotifyStatus (https://shelly-api-docs.shelly.cloud/gen2/General/Notifications).
    fn shelly(&mut self, out: &mut String) {
        let t = self.reading_time_ms(self.next);
        let plug = self.plug().clone();
        let (output, power) = plug.at(t);
        let voltage = plug.voltage_v(t);
        let current = power / (voltage * plug.power_factor);
        let total = self.energy_wh;
        self.advance(power);
        let _ = write!(
            out,
            "{{\"src\":\"{id}\",\"dst\":\"{topic_base}\",\"method\":\"NotifyStatus\",\"params\":{{\
             \"ts\":{s}.{ms:03},\"switch:0\":{{\"id\":0,\"output\":{output},\"apower\":{power:.1},\
             \"voltage\":{voltage:.1},\"current\":{current:.3},\"aenergy\":{{\"total\":{total:.3}}}}}}}}}",
            id = self.id,
            topic_base = self.topic.trim_end_matches("/rpc"),
            s = t.div_euclid(MS_PER_SECOND),
            ms = t.rem_euclid(MS_PER_SECOND),
            power = round_to(power, 1),
            voltage = round_to(voltage, 1),
            current = round_to(current, 3),
            total = round_to(total, 3),
        );
    }

    /// Tasmota teleperiod SENSOR (https://tasmota.github.io/docs/JSON-Status-Responses/).
    /// "Time" is local time without offset; simulated sites run on UTC.
    fn tasmota(&mut self, out: &mut String) {
        let t = self.reading_time_ms(self.next);
        let plug = self.plug().clone();
        let (_, power) = plug.at(t);
        let voltage = plug.voltage_v(t);
        let current = power / (voltage * plug.power_factor);
        let total_kwh = round_to(self.energy_wh / 1000.0, 3);
        self.advance(power);
        let _ = write!(
            out,
            "{{\"Time\":\"{time}\",\"ENERGY\":{{\"Total\":{total_kwh:.3},\"Power\":{power:.0},\
             \"Voltage\":{voltage:.0},\"Current\":{current:.3}}}}}",
            time = datetime(t).format("%Y-%m-%dT%H:%M:%S"),
            power = round_to(power, 0),
            voltage = round_to(voltage, 0),
            current = round_to(current, 3),
        );
    }

    /// OCPP 1.6 MeterValues.req as an OCPP-J CALL frame (OCPP 1.6 §4.7, OCPP-J §4.2.1).
    /// `transactionId` and SoC only while a car is connected, as chargers send them.
    fn ocpp(&mut self, out: &mut String) {
        let t = self.reading_time_ms(self.next);
        let k = self.next;
        let Model::Charger(charger) = &self.model else {
            unreachable!("the OCPP format is only built with charger models")
        };
        let state = charger.at(t);
        let register = round_to(self.energy_wh, 0);
        self.advance(state.power_w);
        let _ = write!(
            out,
            "[2,\"{id}-{k}\",\"MeterValues\",{{\"connectorId\":1,",
            id = self.id
        );
        if let Some((transaction, _)) = state.session {
            let _ = write!(out, "\"transactionId\":{transaction},");
        }
        let _ = write!(
            out,
            "\"meterValue\":[{{\"timestamp\":\"{time}\",\"sampledValue\":[\
             {{\"value\":\"{register:.0}\",\"context\":\"Sample.Periodic\",\"measurand\":\"Energy.Active.Import.Register\",\"unit\":\"Wh\"}},\
             {{\"value\":\"{power:.0}\",\"context\":\"Sample.Periodic\",\"measurand\":\"Power.Active.Import\",\"unit\":\"W\"}}",
            time = datetime(t).format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            power = round_to(state.power_w, 0),
        );
        if let Some((_, soc)) = state.session {
            let _ = write!(
                out,
                ",{{\"value\":\"{soc:.0}\",\"context\":\"Sample.Periodic\",\"measurand\":\"SoC\",\"unit\":\"Percent\",\"location\":\"EV\"}}",
                soc = round_to(soc, 0),
            );
        }
        out.push_str("]}]}]");
    }

    /// Generic JSON meter: `{"readings":[{"ts","power_w","import_wh","export_wh"}, ...]}`.
    fn meter(&mut self, out: &mut String) {
        out.push_str("{\"readings\":[");
        for i in 0..self.batch {
            let t = self.reading_time_ms(self.next);
            let Model::Meter { house, loads } = &self.model else {
                unreachable!("the meter format is only built with meter models")
            };
            let power = house.power_w(t) + loads.iter().map(|l| l.grid_w(t)).sum::<f64>();
            let (import, export) = (self.energy_wh, self.export_wh);
            self.advance(power);
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"ts\":{t},\"power_w\":{power:.1},\"import_wh\":{import:.1},\"export_wh\":{export:.1}}}",
                power = round_to(power, 1),
                import = round_to(import, 1),
                export = round_to(export, 1),
            );
        }
        out.push_str("]}");
    }

    /// Generic JSON inverter: `{"readings":[{"ts","power_w","energy_wh"}, ...]}`.
    fn inverter(&mut self, out: &mut String) {
        out.push_str("{\"readings\":[");
        for i in 0..self.batch {
            let t = self.reading_time_ms(self.next);
            let Model::Pv(pv) = &self.model else {
                unreachable!("the inverter format is only built with PV models")
            };
            let power = pv.power_w(t);
            let energy = self.energy_wh;
            self.advance(power);
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"ts\":{t},\"power_w\":{power:.1},\"energy_wh\":{energy:.1}}}",
                power = round_to(power, 1),
                energy = round_to(energy, 1),
            );
        }
        out.push_str("]}");
    }
}

/// A simulated fleet: every device, grouped into sites of [`SITE_SIZE`].
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    devices: Vec<DeviceSim>,
}

impl Fleet {
    /// Builds the fleet `config` describes, checking it.
    pub fn new(config: FleetConfig) -> Result<Self, SimError> {
        if config.devices == 0 {
            return Err(SimError::NoDevices);
        }
        if config.batch == 0 {
            return Err(SimError::ZeroBatch);
        }
        if config.interval_ms <= 0 {
            return Err(SimError::Interval {
                interval_ms: config.interval_ms,
            });
        }
        // 9999-12-31T23:59:59Z.
        if !(0..=253_402_300_799_000).contains(&config.start_ms) {
            return Err(SimError::Start {
                start_ms: config.start_ms,
            });
        }
        check_prefix(&config.prefix)?;
        let kinds = config.mix.layout(config.devices);
        if kinds.contains(&SimKind::Tasmota)
            && (config.interval_ms % MS_PER_SECOND != 0 || config.start_ms % MS_PER_SECOND != 0)
        {
            return Err(SimError::TasmotaResolution {
                interval_ms: config.interval_ms,
                start_ms: config.start_ms,
            });
        }

        let device_seed = |i: usize| mix64(config.seed ^ mix64(i as u64 + 1));
        let site_seed = |site: usize| mix64(config.seed ^ SALT_SITE ^ mix64(site as u64 + 1));
        // Every device's model first; meters then take copies of their site's loads.
        let models: Vec<Option<Model>> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let seed = device_seed(i);
                match kind {
                    SimKind::Shelly | SimKind::Tasmota => {
                        Some(Model::Plug(Plug::new(seed, site_seed(i / SITE_SIZE))))
                    }
                    SimKind::Ocpp => Some(Model::Charger(Charger::new(seed))),
                    SimKind::Inverter => Some(Model::Pv(Pv::new(seed))),
                    SimKind::Meter => None,
                }
            })
            .collect();
        let devices = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let site = i / SITE_SIZE;
                let mut rng = SplitMix64::new(device_seed(i) ^ SALT_JITTER);
                let (model, energy_wh, export_wh) = match &models[i] {
                    Some(Model::Plug(p)) => {
                        (Model::Plug(p.clone()), rng.range(0.0, 200_000.0), 0.0)
                    }
                    Some(Model::Charger(c)) => {
                        (Model::Charger(c.clone()), rng.range(0.0, 5_000_000.0), 0.0)
                    }
                    Some(Model::Pv(pv)) => {
                        (Model::Pv(pv.clone()), rng.range(0.0, 40_000_000.0), 0.0)
                    }
                    Some(Model::Meter { .. }) | None => {
                        let members = site * SITE_SIZE..((site + 1) * SITE_SIZE).min(kinds.len());
                        let loads: Vec<Load> = members
                            .filter_map(|j| match &models[j] {
                                Some(Model::Plug(p)) => Some(Load::Plug(p.clone())),
                                Some(Model::Charger(c)) => Some(Load::Charger(c.clone())),
                                Some(Model::Pv(pv)) => Some(Load::Pv(pv.clone())),
                                _ => None,
                            })
                            .collect();
                        let has_pv = loads.iter().any(|l| matches!(l, Load::Pv(_)));
                        let export = if has_pv {
                            rng.range(0.0, 10_000_000.0)
                        } else {
                            0.0
                        };
                        let model = Model::Meter {
                            house: House::new(site_seed(site)),
                            loads,
                        };
                        (model, rng.range(1_000_000.0, 30_000_000.0), export)
                    }
                };
                let id = format!("{}-{i:06}", kind.name());
                let site_id = format!("site-{site:04}");
                let prefix = &config.prefix;
                let topic = match kind {
                    SimKind::Shelly => format!("{prefix}/{site_id}/shelly/{id}/events/rpc"),
                    SimKind::Tasmota => format!("{prefix}/{site_id}/tasmota/tele/{id}/SENSOR"),
                    SimKind::Ocpp => format!("{prefix}/{site_id}/ocpp/{id}"),
                    SimKind::Meter => format!("{prefix}/{site_id}/meter/{id}"),
                    SimKind::Inverter => format!("{prefix}/{site_id}/inverter/{id}"),
                };
                DeviceSim {
                    index: i,
                    kind,
                    id,
                    site_id,
                    topic,
                    model,
                    start_ms: config.start_ms,
                    interval_ms: config.interval_ms,
                    batch: if kind.batches() { config.batch } else { 1 },
                    next: 0,
                    energy_wh,
                    export_wh,
                }
            })
            .collect();
        Ok(Self { config, devices })
    }

    /// The configuration the fleet was built from.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The devices, by index.
    pub fn devices(&self) -> &[DeviceSim] {
        &self.devices
    }

    /// How many devices of each kind, in [`SimKind::ALL`] order.
    pub fn kind_counts(&self) -> [usize; 5] {
        let mut counts = [0; 5];
        for d in &self.devices {
            counts[d.kind.position()] += 1;
        }
        counts
    }

    /// The global message order of this fleet.
    pub fn schedule(&self) -> Schedule {
        Schedule::new(&self.devices, self.config.batch)
    }

    /// The devices, to hand out to publishers.
    pub fn into_devices(self) -> Vec<DeviceSim> {
        self.devices
    }
}

/// The global order of a fleet's messages: round `r` holds the messages of every device
/// that publishes in it ([`DeviceSim::publishes_in_round`]), by device index. Message
/// numbers let publishers that own disjoint sets of devices pace against one global rate
/// and stop after exactly `--messages` messages in total, without talking to each other.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Per device: its position in a round where only the every-round devices publish,
    /// its position in a batch round (where all publish), and whether it batches.
    positions: Vec<(u64, u64, bool)>,
    /// Devices publishing every round / only in batch rounds.
    every: u64,
    batched: u64,
    batch: u64,
}

impl Schedule {
    fn new(devices: &[DeviceSim], batch: u32) -> Self {
        let (mut every, mut batched) = (0u64, 0u64);
        let positions = devices
            .iter()
            .map(|d| {
                let is_batched = d.batch > 1;
                let position = (every, every + batched, is_batched);
                if is_batched {
                    batched += 1;
                } else {
                    every += 1;
                }
                position
            })
            .collect();
        Self {
            positions,
            every,
            batched,
            batch: u64::from(batch),
        }
    }

    /// Messages in rounds before `round`.
    pub fn messages_before_round(&self, round: u64) -> u64 {
        round * self.every + (round / self.batch) * self.batched
    }

    /// The global number (from 0) of `device`'s message in `round`; `None` when the
    /// device does not publish in that round or is not in the fleet.
    pub fn message_number(&self, round: u64, device: usize) -> Option<u64> {
        let &(in_plain_round, in_batch_round, is_batched) = self.positions.get(device)?;
        let batch_round = (round + 1).is_multiple_of(self.batch);
        let position = match (batch_round, is_batched) {
            (true, _) => in_batch_round,
            (false, false) => in_plain_round,
            (false, true) => return None,
        };
        Some(self.messages_before_round(round) + position)
    }
}

// ---------------------------------------------------------------------------------------
// Subscription configuration
// ---------------------------------------------------------------------------------------

/// Generic JSON mapping for the batched kinds: (table, [(column, path in a record)]).
fn json_fields(kind: SimKind) -> Option<&'static [(&'static str, &'static str)]> {
    match kind {
        SimKind::Meter => Some(&[
            ("power_w", "$.power_w"),
            ("energy_import_wh", "$.import_wh"),
            ("energy_export_wh", "$.export_wh"),
        ]),
        SimKind::Inverter => Some(&[("power_w", "$.power_w"), ("energy_wh", "$.energy_wh")]),
        _ => None,
    }
}

/// JSONPath selecting the records of a batched message.
const JSON_RECORDS: &str = "$.readings[*]";
/// JSONPath of a record's timestamp (unix milliseconds).
const JSON_TIME: &str = "$.ts";

/// The generic JSON decoder mapping (`devices::decode::json_map::JsonMapping` as JSON)
/// for the batched kinds; `None` for the device formats.
pub fn json_mapping(kind: SimKind) -> Option<serde_json::Value> {
    let fields = json_fields(kind)?;
    Some(serde_json::json!({
        "table": kind.table(),
        "records": JSON_RECORDS,
        "time": JSON_TIME,
        "time_format": "unix_ms",
        "fields": fields
            .iter()
            .map(|(column, path)| serde_json::json!({"column": column, "path": path}))
            .collect::<Vec<_>>(),
    }))
}

/// The `[mqtt]` section that subscribes to a fleet publishing under `prefix` to `broker`:
/// one subscription per kind, with the topic template that captures `site_id` and
/// `device_id`, and the decoder (with its mapping) for the payloads.
pub fn mqtt_config_toml(prefix: &str, broker: &str) -> String {
    let mut out = format!(
        "# Subscriptions for `gridlake simulate mqtt --prefix {prefix}` (the simulator topic layout).\n\
         [mqtt]\n\
         enabled = true\n\
         broker = \"{broker}\"\n"
    );
    for kind in SimKind::ALL {
        let name = kind.name();
        // (filter and template after the prefix, decoder)
        let (filter, template, decoder) = match kind {
            SimKind::Shelly => ("+/shelly/#", "{site_id}/shelly/{device_id}/#", "shelly"),
            SimKind::Tasmota => (
                "+/tasmota/#",
                "{site_id}/tasmota/tele/{device_id}/#",
                "tasmota",
            ),
            SimKind::Ocpp => ("+/ocpp/+", "{site_id}/ocpp/{device_id}", "ocpp"),
            SimKind::Meter => ("+/meter/+", "{site_id}/meter/{device_id}", "json"),
            SimKind::Inverter => ("+/inverter/+", "{site_id}/inverter/{device_id}", "json"),
        };
        let _ = write!(
            out,
            "\n# {name} → {table}\n\
             [[mqtt.subscriptions]]\n\
             name = \"sim-{name}\"\n\
             filter = \"{prefix}/{filter}\"\n\
             topic_template = \"{prefix}/{template}\"\n\
             decoder = \"{decoder}\"\n",
            table = kind.table(),
        );
        if kind == SimKind::Tasmota {
            // The decoder reads "Time" as local time in this zone; simulated sites run on UTC.
            out.push_str("table = \"smart_plug\"\ntimezone = \"UTC\"\n");
        }
        if let Some(fields) = json_fields(kind) {
            let _ = write!(
                out,
                "[mqtt.subscriptions.json]\n\
                 table = \"{table}\"\n\
                 records = \"{JSON_RECORDS}\"\n\
                 time = \"{JSON_TIME}\"\n\
                 time_format = \"unix_ms\"\n",
                table = kind.table(),
            );
            for (column, path) in fields {
                let _ = write!(
                    out,
                    "[[mqtt.subscriptions.json.fields]]\ncolumn = \"{column}\"\npath = \"{path}\"\n"
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::Value as Json;

    use super::*;

    fn config(devices: usize) -> FleetConfig {
        FleetConfig {
            devices,
            ..FleetConfig::default()
        }
    }

    /// Every message of `rounds` rounds, in schedule order.
    fn run(fleet: &mut Fleet, rounds: u64) -> Vec<(usize, SimMessage)> {
        let mut out = Vec::new();
        for round in 0..rounds {
            for d in fleet.devices.iter_mut() {
                if d.publishes_in_round(round) {
                    out.push((d.index(), d.next_message()));
                }
            }
        }
        out
    }

    fn json(msg: &SimMessage) -> Json {
        serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                msg.topic,
                String::from_utf8_lossy(&msg.payload)
            )
        })
    }

    fn num(v: &Json) -> f64 {
        match v {
            Json::Number(n) => n.as_f64().expect("finite"),
            Json::String(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("{s:?} is not a number")),
            other => panic!("{other} is not a number"),
        }
    }

    fn ms_of_rfc3339(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .timestamp_millis()
    }

    /// (time ms, [(register name, value)]) of every reading in a message.
    fn readings(kind: SimKind, v: &Json) -> Vec<(i64, Vec<(&'static str, f64)>)> {
        match kind {
            SimKind::Shelly => {
                let p = &v["params"];
                let s = &p["switch:0"];
                vec![(
                    (num(&p["ts"]) * 1000.0).round() as i64,
                    vec![("aenergy", num(&s["aenergy"]["total"]))],
                )]
            }
            SimKind::Tasmota => {
                let time = v["Time"].as_str().expect("Time");
                vec![(
                    ms_of_rfc3339(&format!("{time}Z")),
                    vec![("Total", num(&v["ENERGY"]["Total"]))],
                )]
            }
            SimKind::Ocpp => {
                let mv = &v[3]["meterValue"][0];
                let energy = mv["sampledValue"]
                    .as_array()
                    .expect("sampledValue")
                    .iter()
                    .find(|s| s["measurand"] == "Energy.Active.Import.Register")
                    .expect("energy register");
                vec![(
                    ms_of_rfc3339(mv["timestamp"].as_str().expect("timestamp")),
                    vec![("register", num(&energy["value"]))],
                )]
            }
            SimKind::Meter | SimKind::Inverter => v["readings"]
                .as_array()
                .expect("readings")
                .iter()
                .map(|r| {
                    let t = r["ts"].as_i64().expect("integer ts");
                    let regs = if kind == SimKind::Meter {
                        vec![
                            ("import_wh", num(&r["import_wh"])),
                            ("export_wh", num(&r["export_wh"])),
                        ]
                    } else {
                        vec![("energy_wh", num(&r["energy_wh"]))]
                    };
                    (t, regs)
                })
                .collect(),
        }
    }

    #[test]
    fn counters_never_decrease() {
        // Two virtual weeks at 5-minute resolution: sessions, washes, PV days and nights.
        let mut fleet = Fleet::new(FleetConfig {
            devices: 40,
            interval_ms: 300_000,
            batch: 3,
            ..FleetConfig::default()
        })
        .unwrap();
        let kinds: Vec<SimKind> = fleet.devices().iter().map(|d| d.kind()).collect();
        let mut last: HashMap<(usize, &str), f64> = HashMap::new();
        let mut grew: HashSet<(usize, &str)> = HashSet::new();
        for (device, msg) in run(&mut fleet, 14 * 288) {
            for (_, registers) in readings(kinds[device], &json(&msg)) {
                for (name, value) in registers {
                    assert!(value >= 0.0, "{}: {name} = {value}", msg.topic);
                    if let Some(&before) = last.get(&(device, name)) {
                        assert!(
                            value >= before,
                            "{}: {name} fell from {before} to {value}",
                            msg.topic
                        );
                        if value > before {
                            grew.insert((device, name));
                        }
                    }
                    last.insert((device, name), value);
                }
            }
        }
        // Not vacuous: every device's main register moved over two weeks.
        for (i, kind) in kinds.iter().enumerate() {
            let name = match kind {
                SimKind::Shelly => "aenergy",
                SimKind::Tasmota => "Total",
                SimKind::Ocpp => "register",
                SimKind::Meter => "import_wh",
                SimKind::Inverter => "energy_wh",
            };
            assert!(
                grew.contains(&(i, name)),
                "device {i} ({kind}) never grew {name}"
            );
        }
    }

    /// The contract between the simulator and the decoders: every payload kind, decoded
    /// by the decoder the printed configuration names, with the tags the topic template
    /// captures, gives the rows the payload says (table, device, time, values).
    #[test]
    fn decoders_read_every_payload_kind() {
        use crate::decode::json_map::{JsonDecoder, JsonMapping};
        use crate::decode::ocpp::OcppDecoder;
        use crate::decode::shelly::ShellyDecoder;
        use crate::decode::tasmota::TasmotaDecoder;
        use crate::{Decode, DecodeContext, Reading, Value};

        let config = FleetConfig {
            devices: 40,
            batch: 3,
            interval_ms: 60_000,
            ..FleetConfig::default()
        };
        let mut fleet = Fleet::new(config.clone()).unwrap();
        let devices: Vec<(SimKind, String, String)> = fleet
            .devices()
            .iter()
            .map(|d| (d.kind(), d.id().to_string(), d.site_id().to_string()))
            .collect();
        let mapping = |kind| -> JsonMapping {
            serde_json::from_value(json_mapping(kind).unwrap()).expect("a JsonMapping")
        };
        let mut decoders: HashMap<SimKind, Box<dyn Decode>> = HashMap::from([
            (
                SimKind::Shelly,
                Box::new(ShellyDecoder::new()) as Box<dyn Decode>,
            ),
            (
                SimKind::Tasmota,
                Box::new(TasmotaDecoder::new("smart_plug".into(), chrono_tz::UTC)),
            ),
            (SimKind::Ocpp, Box::new(OcppDecoder::new())),
            (
                SimKind::Meter,
                Box::new(JsonDecoder::new(mapping(SimKind::Meter)).unwrap()),
            ),
            (
                SimKind::Inverter,
                Box::new(JsonDecoder::new(mapping(SimKind::Inverter)).unwrap()),
            ),
        ]);
        let f64_of = |r: &Reading, column: &str| match r.field_value(column) {
            Some(Value::F64(v)) => *v,
            other => panic!("{column} is {other:?} in {r:?}"),
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let mut seen: HashMap<SimKind, usize> = HashMap::new();
        let mut sessions = 0;
        let mut next_reading: HashMap<usize, i64> = HashMap::new();
        // 30 virtual hours: nights, PV, evening sessions.
        for (device, msg) in run(&mut fleet, 1800) {
            let (kind, id, site) = &devices[device];
            let tags = [
                ("site_id".to_string(), site.clone()),
                ("device_id".to_string(), id.clone()),
            ];
            let ctx = DecodeContext {
                topic: &msg.topic,
                tags: &tags,
                received_at: 0,
            };
            let text = String::from_utf8_lossy(&msg.payload).into_owned();
            let decoded = decoders
                .get_mut(kind)
                .unwrap()
                .decode(&ctx, &msg.payload)
                .unwrap_or_else(|e| panic!("{kind}: {e}\n{}\n{text}", msg.topic));
            assert!(
                decoded.problems.is_empty(),
                "{kind}: {:?}\n{text}",
                decoded.problems
            );
            assert_eq!(
                decoded.readings.len() as u32,
                msg.readings,
                "{kind}: {text}"
            );
            let v = json(&msg);
            for (i, r) in decoded.readings.iter().enumerate() {
                assert_eq!(r.table, kind.table(), "{text}");
                // Device decoders name the device themselves (context first); the generic
                // JSON decoder leaves it to the collector, which adds the context's tags.
                if kind.batches() {
                    assert!(r.tag_value("device_id").is_none_or(|d| d == id), "{r:?}");
                } else {
                    assert_eq!(r.tag_value("device_id"), Some(id.as_str()), "{r:?}");
                }
                // Reading k of the device is at start + k × interval.
                let k = next_reading.entry(device).or_insert(0);
                let expected_ns = (config.start_ms + *k * config.interval_ms) * 1_000_000;
                *k += 1;
                // Shelly's float seconds carry about 0.25 µs of precision at today's epoch.
                assert!(
                    (r.time - expected_ns).abs() < 1_000,
                    "{kind}: time {} != {expected_ns}\n{text}",
                    r.time
                );
                match kind {
                    SimKind::Shelly => {
                        let s = &v["params"]["switch:0"];
                        assert!(close(f64_of(r, "energy_wh"), num(&s["aenergy"]["total"])));
                        assert!(close(f64_of(r, "power_w"), num(&s["apower"])));
                        assert!(close(f64_of(r, "voltage_v"), num(&s["voltage"])));
                        assert!(close(f64_of(r, "current_a"), num(&s["current"])));
                        assert_eq!(
                            r.field_value("switch_on"),
                            Some(&Value::Bool(s["output"].as_bool().unwrap()))
                        );
                    }
                    SimKind::Tasmota => {
                        let e = &v["ENERGY"];
                        assert!(close(f64_of(r, "energy_wh"), num(&e["Total"]) * 1000.0));
                        assert!(close(f64_of(r, "power_w"), num(&e["Power"])));
                        assert!(close(f64_of(r, "voltage_v"), num(&e["Voltage"])));
                        assert!(close(f64_of(r, "current_a"), num(&e["Current"])));
                    }
                    SimKind::Ocpp => {
                        let req = &v[3];
                        let sampled = &req["meterValue"][0]["sampledValue"];
                        assert!(close(f64_of(r, "energy_wh"), num(&sampled[0]["value"])));
                        assert!(close(f64_of(r, "power_w"), num(&sampled[1]["value"])));
                        assert_eq!(r.tag_value("connector"), Some("1"));
                        if let Some(tx) = req.get("transactionId") {
                            sessions += 1;
                            assert_eq!(
                                r.field_value("session_id"),
                                Some(&Value::Str(tx.to_string()))
                            );
                            assert!(close(f64_of(r, "soc_pct"), num(&sampled[2]["value"])));
                        } else {
                            assert_eq!(r.field_value("session_id"), None);
                            assert_eq!(r.field_value("soc_pct"), None);
                        }
                    }
                    SimKind::Meter => {
                        let rec = &v["readings"][i];
                        assert!(close(f64_of(r, "power_w"), num(&rec["power_w"])));
                        assert!(close(f64_of(r, "energy_import_wh"), num(&rec["import_wh"])));
                        assert!(close(f64_of(r, "energy_export_wh"), num(&rec["export_wh"])));
                    }
                    SimKind::Inverter => {
                        let rec = &v["readings"][i];
                        assert!(close(f64_of(r, "power_w"), num(&rec["power_w"])));
                        assert!(close(f64_of(r, "energy_wh"), num(&rec["energy_wh"])));
                    }
                }
            }
            *seen.entry(*kind).or_default() += 1;
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(sessions > 0, "no charging session in 30 hours");
    }

    #[test]
    fn pv_is_zero_at_night_and_positive_at_noon() {
        for seed in 0..50 {
            let pv = Pv::new(seed);
            // A winter, a spring and a summer day.
            for date in ["2024-12-21", "2024-03-20", "2024-06-21"] {
                let midnight = ms_of_rfc3339(&format!("{date}T00:00:00Z"));
                let at = |h: f64| pv.power_w(midnight + (h * MS_PER_HOUR) as i64);
                for night in [0.0, 2.5, 3.9, 20.1, 23.0, 23.99] {
                    assert_eq!(at(night), 0.0, "seed {seed} {date} {night} h");
                }
                assert!(
                    at(12.0) > 0.05 * pv.peak_w,
                    "seed {seed} {date} noon: {}",
                    at(12.0)
                );
                assert!(
                    at(12.0) <= pv.peak_w,
                    "seed {seed} {date} noon: {}",
                    at(12.0)
                );
            }
            // Summer days are longer than winter days.
            let summer_7am = ms_of_rfc3339("2024-06-21T07:00:00Z");
            let winter_7am = ms_of_rfc3339("2024-12-21T07:00:00Z");
            assert!(pv.power_w(summer_7am) > 0.0);
            assert_eq!(pv.power_w(winter_7am), 0.0);
        }
    }

    #[test]
    fn same_seed_gives_same_payloads() {
        let base = FleetConfig {
            devices: 25,
            batch: 2,
            ..FleetConfig::default()
        };
        let a = run(&mut Fleet::new(base.clone()).unwrap(), 50);
        let b = run(&mut Fleet::new(base.clone()).unwrap(), 50);
        assert_eq!(a, b);
        let other = run(
            &mut Fleet::new(FleetConfig { seed: 43, ..base }).unwrap(),
            50,
        );
        assert_eq!(a.len(), other.len());
        let differing = a
            .iter()
            .zip(&other)
            .filter(|(x, y)| x.1.payload != y.1.payload)
            .count();
        assert!(
            differing > a.len() / 2,
            "only {differing} of {} differ",
            a.len()
        );
    }

    #[test]
    fn timestamps_strictly_increase_per_device() {
        let config = FleetConfig {
            devices: 30,
            batch: 4,
            interval_ms: 1_000,
            start_ms: 1_709_294_400_000,
            ..FleetConfig::default()
        };
        let mut fleet = Fleet::new(config.clone()).unwrap();
        let kinds: Vec<SimKind> = fleet.devices().iter().map(|d| d.kind()).collect();
        let mut seen: HashMap<usize, Vec<i64>> = HashMap::new();
        for (device, msg) in run(&mut fleet, 40) {
            let times: Vec<i64> = readings(kinds[device], &json(&msg))
                .iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(times.len() as u32, msg.readings, "{}", msg.topic);
            assert_eq!(
                (times[0], *times.last().unwrap()),
                (msg.first_ms, msg.last_ms)
            );
            seen.entry(device).or_default().extend(times);
        }
        for (device, times) in seen {
            // Reading k at start + k × interval, no gaps, no repeats.
            let expected: Vec<i64> = (0..times.len() as i64)
                .map(|k| config.start_ms + k * config.interval_ms)
                .collect();
            assert_eq!(times, expected, "device {device}");
        }
    }

    #[test]
    fn payloads_are_json_of_the_documented_shape() {
        let mut fleet = Fleet::new(FleetConfig {
            devices: 50,
            batch: 2,
            interval_ms: 60_000,
            ..FleetConfig::default()
        })
        .unwrap();
        let devices: Vec<(SimKind, String, String)> = fleet
            .devices()
            .iter()
            .map(|d| (d.kind(), d.id().to_string(), d.site_id().to_string()))
            .collect();
        let mut sessions = 0;
        // 40 virtual hours from 2024-06-01 00:00: nights, PV, evening sessions.
        for (device, msg) in run(&mut fleet, 2 * 1200) {
            let (kind, id, site) = &devices[device];
            let v = json(&msg);
            let p = DEFAULT_PREFIX;
            let object_keys = |v: &Json| -> Vec<String> {
                let mut keys: Vec<String> =
                    v.as_object().expect("object").keys().cloned().collect();
                keys.sort();
                keys
            };
            match kind {
                SimKind::Shelly => {
                    assert_eq!(msg.topic, format!("{p}/{site}/shelly/{id}/events/rpc"));
                    assert_eq!(v["method"], "NotifyStatus");
                    assert_eq!(v["src"], id.as_str());
                    assert!(v["params"]["ts"].is_f64() || v["params"]["ts"].is_u64());
                    let s = &v["params"]["switch:0"];
                    assert_eq!(
                        object_keys(s),
                        ["aenergy", "apower", "current", "id", "output", "voltage"]
                    );
                    assert_eq!(s["id"], 0);
                    assert!(s["output"].is_boolean());
                    assert!(s["aenergy"]["total"].is_number());
                    assert!((200.0..260.0).contains(&num(&s["voltage"])));
                }
                SimKind::Tasmota => {
                    assert_eq!(msg.topic, format!("{p}/{site}/tasmota/tele/{id}/SENSOR"));
                    let time = v["Time"].as_str().unwrap();
                    assert_eq!(time.len(), 19, "{time}: local time without offset");
                    assert_eq!(
                        object_keys(&v["ENERGY"]),
                        ["Current", "Power", "Total", "Voltage"]
                    );
                    for key in ["Current", "Power", "Total", "Voltage"] {
                        assert!(v["ENERGY"][key].is_number(), "{key}");
                    }
                }
                SimKind::Ocpp => {
                    assert_eq!(msg.topic, format!("{p}/{site}/ocpp/{id}"));
                    let frame = v.as_array().expect("CALL frame");
                    assert_eq!(frame.len(), 4);
                    assert_eq!(frame[0], 2);
                    assert!(frame[1].is_string());
                    assert_eq!(frame[2], "MeterValues");
                    let req = &frame[3];
                    assert_eq!(req["connectorId"], 1);
                    let sampled = req["meterValue"][0]["sampledValue"].as_array().unwrap();
                    let measurands: Vec<&str> = sampled
                        .iter()
                        .map(|s| s["measurand"].as_str().unwrap())
                        .collect();
                    for s in sampled {
                        // OCPP 1.6 sends values as strings.
                        num(&s["value"]);
                        assert!(s["value"].is_string());
                    }
                    if req.get("transactionId").is_some() {
                        sessions += 1;
                        assert!(req["transactionId"].is_i64());
                        assert_eq!(
                            measurands,
                            [
                                "Energy.Active.Import.Register",
                                "Power.Active.Import",
                                "SoC"
                            ]
                        );
                        let soc = num(&sampled[2]["value"]);
                        assert!((0.0..=100.0).contains(&soc), "{soc}");
                    } else {
                        assert_eq!(
                            measurands,
                            ["Energy.Active.Import.Register", "Power.Active.Import"]
                        );
                        assert_eq!(num(&sampled[1]["value"]), 0.0, "no car, no power");
                    }
                }
                SimKind::Meter | SimKind::Inverter => {
                    assert_eq!(msg.topic, format!("{p}/{site}/{}/{id}", kind.name()));
                    assert_eq!(object_keys(&v), ["readings"]);
                    let records = v["readings"].as_array().unwrap();
                    assert_eq!(records.len(), 2, "--batch 2");
                    for r in records {
                        let expected: &[&str] = if *kind == SimKind::Meter {
                            &["export_wh", "import_wh", "power_w", "ts"]
                        } else {
                            &["energy_wh", "power_w", "ts"]
                        };
                        assert_eq!(object_keys(r), expected);
                        assert!(r["ts"].is_i64());
                        if *kind == SimKind::Inverter {
                            assert!(num(&r["power_w"]) >= 0.0);
                        }
                    }
                }
            }
        }
        assert!(sessions > 0, "no charging session in 40 hours");
    }

    #[test]
    fn meter_adds_up_its_site() {
        // A site of one meter and one inverter only: the meter exports around noon on a
        // sunny June day and imports at night.
        let fleet = Fleet::new(FleetConfig {
            devices: 2,
            mix: "meter=1,inverter=1".parse().unwrap(),
            ..FleetConfig::default()
        })
        .unwrap();
        let Model::Meter { house, loads } = &fleet.devices()[0].model else {
            panic!("device 0 is {:?}", fleet.devices()[0].kind());
        };
        assert_eq!(loads.len(), 1);
        let night = ms_of_rfc3339("2024-06-01T02:00:00Z");
        assert!(house.power_w(night) + loads[0].grid_w(night) > 0.0);
        let exported_at_noon = (0..30).any(|day| {
            let noon = ms_of_rfc3339("2024-06-01T12:00:00Z") + day * MS_PER_DAY;
            house.power_w(noon) + loads[0].grid_w(noon) < 0.0
        });
        assert!(exported_at_noon, "a PV site never exported at noon in June");
    }

    #[test]
    fn ev_sessions_charge_and_end() {
        let charger = Charger::new(7);
        let mut sessions = 0;
        for day in 19_875..19_905 {
            let Some(s) = charger.session(day) else {
                continue;
            };
            sessions += 1;
            let during = charger.at(s.arrive + 60_000);
            assert!(during.power_w > 0.9 * charger.max_w, "{during:?}");
            let (tx, soc) = during.session.unwrap();
            assert_eq!(tx, s.transaction_id);
            assert!(soc >= s.start_soc && soc < 100.0);
            let before_leaving = charger.at(s.depart - 60_000);
            assert_eq!(before_leaving.power_w, 0.0, "charged by morning");
            assert_eq!(before_leaving.session.unwrap().0, tx);
            assert!(charger.at(s.depart).session.is_none());
        }
        assert!(
            (10..=30).contains(&sessions),
            "{sessions} sessions in 30 days"
        );
    }

    #[test]
    fn mix_parses_counts_and_interleaves() {
        let mix: Mix = "meter=2, shelly=1".parse().unwrap();
        assert_eq!(mix.to_string(), "shelly=1,meter=2");
        assert_eq!(mix.to_string().parse::<Mix>().unwrap(), mix);
        assert_eq!(
            Mix::default().to_string().parse::<Mix>().unwrap(),
            Mix::default()
        );
        for bad in [
            "",
            "meter",
            "meter=x",
            "heatpump=1",
            "meter=1,meter=2",
            "meter=0",
        ] {
            let err = bad.parse::<Mix>().unwrap_err().to_string();
            assert!(err.contains("invalid mix"), "{bad}: {err}");
        }
        for devices in [1, 2, 7, 100, 1001] {
            let counts = Mix::default().counts(devices);
            assert_eq!(counts.iter().sum::<usize>(), devices);
            let layout = Mix::default().layout(devices);
            for (i, kind) in SimKind::ALL.into_iter().enumerate() {
                assert_eq!(layout.iter().filter(|&&k| k == kind).count(), counts[i]);
            }
        }
        assert_eq!(Mix::default().counts(100), [30, 20, 10, 25, 15]);
        // Every site of the default mix has a meter.
        let layout = Mix::default().layout(100);
        for site in layout.chunks(SITE_SIZE).take(19) {
            assert!(site.contains(&SimKind::Meter), "{site:?}");
        }
    }

    #[test]
    fn schedule_numbers_every_message_once_in_order() {
        for batch in [1, 3] {
            let fleet = Fleet::new(FleetConfig {
                devices: 17,
                batch,
                ..FleetConfig::default()
            })
            .unwrap();
            let schedule = fleet.schedule();
            let mut numbers = Vec::new();
            for round in 0..10 {
                assert_eq!(schedule.messages_before_round(round), numbers.len() as u64);
                for d in fleet.devices() {
                    let n = schedule.message_number(round, d.index());
                    assert_eq!(n.is_some(), d.publishes_in_round(round), "batch {batch}");
                    numbers.extend(n);
                }
            }
            let expected: Vec<u64> = (0..numbers.len() as u64).collect();
            assert_eq!(numbers, expected, "batch {batch}");
            assert_eq!(schedule.message_number(0, 17), None);
        }
    }

    #[test]
    fn config_is_checked() {
        let err = Fleet::new(FleetConfig {
            interval_ms: 500,
            ..config(10)
        })
        .unwrap_err();
        assert!(matches!(err, SimError::TasmotaResolution { .. }));
        assert!(err.to_string().contains("whole seconds"), "{err}");
        // Without Tasmota devices sub-second intervals are fine.
        Fleet::new(FleetConfig {
            interval_ms: 500,
            mix: "shelly=1,meter=1".parse().unwrap(),
            ..config(10)
        })
        .unwrap();
        assert_eq!(Fleet::new(config(0)).unwrap_err(), SimError::NoDevices);
        for prefix in ["", "a/+/b", "a/#", "a//b", "/a", "a\"b", "a b"] {
            let err = Fleet::new(FleetConfig {
                prefix: prefix.into(),
                ..config(1)
            })
            .unwrap_err();
            assert!(matches!(err, SimError::InvalidPrefix { .. }), "{prefix:?}");
        }
        Fleet::new(FleetConfig {
            prefix: "lab/sim-1.a_b".into(),
            ..config(1)
        })
        .unwrap();
    }

    #[test]
    fn config_toml_names_every_kind() {
        let text = mqtt_config_toml("lab/sim", "mqtt://127.0.0.1:1883");
        for kind in SimKind::ALL {
            assert!(
                text.contains(&format!("filter = \"lab/sim/+/{}/", kind.name())),
                "{kind}"
            );
        }
        assert!(text.contains("topic_template = \"lab/sim/{site_id}/tasmota/tele/{device_id}/#\""));
        assert!(text.contains("records = \"$.readings[*]\""));
        let mapping = json_mapping(SimKind::Meter).unwrap();
        assert_eq!(mapping["fields"][1]["column"], "energy_import_wh");
        assert_eq!(mapping["time_format"], "unix_ms");
        assert!(json_mapping(SimKind::Shelly).is_none());
    }
}

//! Simulated SunSpec devices: the register image a Modbus simulator serves
//! (`gridlake simulate modbus`). Pure: the server asks for the image at a wall-clock
//! instant and serves it.
//!
//! The physics is the MQTT fleet's ([`crate::sim`]): a PV system follows the day and
//! the season behind clouds, a household draws its morning and evening peaks (sites at
//! 0° longitude, solar noon at 12:00 UTC). Devices with the same seed and index form one
//! site: the inverter produces that site's PV, the meter sees household minus PV at the
//! grid connection (import positive), and the battery charges from the midday surplus
//! and covers the household in the evening and night, between 5 % and 100 % state of
//! charge.
//!
//! Every instantaneous value is a pure function of (seed, index, time). Energy counters,
//! state of charge and cycles integrate power between calls, so the device keeps them:
//! counters only grow, whatever the calls' spacing (a gap longer than a day catches up
//! the last day only; time going backwards integrates nothing).
//!
//! Scale factors are those real devices use: `W_SF` 0, `Hz_SF` -2, `V_SF` -1,
//! `A_SF` -2, energy `WH_SF` 0.

use std::fmt;
use std::str::FromStr;

use super::{COMMON_ID, EncodeValue, encode, image, model};
use crate::UnknownName;
use crate::sim::{derive_seed, house_power_w, pv_peak_w, pv_power_w, smooth_noise, unit_draw};

const MS_PER_HOUR: f64 = 3_600_000.0;
/// Integration step: power is held for at most this long between two samples.
const STEP_MS: i64 = 60_000;
/// The longest gap integrated on one call.
const MAX_CATCH_UP_MS: i64 = MS_PER_DAY;
/// Lowest state of charge the battery discharges to.
const SOC_MIN: f64 = 5.0;
/// The hour (UTC, solar time at the simulated sites) by which the battery aims to be full.
const FULL_BY_HOUR: f64 = 15.0;
const MS_PER_DAY: i64 = 86_400_000;
/// Nominal battery voltage (a 16-cell LiFePO4 pack).
const BATTERY_NOMINAL_V: f64 = 51.2;

const SALT_PV: u64 = 0x5375_6e53_0000_0001;
const SALT_HOUSE: u64 = 0x5375_6e53_0000_0002;
const SALT_GRID: u64 = 0x5375_6e53_0000_0003;
const SALT_INIT: u64 = 0x5375_6e53_0000_0004;

/// The kind of simulated SunSpec device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimModel {
    /// Three-phase PV inverter: models 1 and 103.
    Inverter,
    /// Three-phase (wye) grid meter: models 1 and 203.
    Meter,
    /// Home battery: models 1, 124 (storage) and 802 (battery).
    Battery,
}

impl SimModel {
    /// Every kind, in the order of the `--model` help.
    pub const ALL: [SimModel; 3] = [SimModel::Inverter, SimModel::Meter, SimModel::Battery];

    /// The name in `--model`, in device ids and serials.
    pub fn name(self) -> &'static str {
        match self {
            SimModel::Inverter => "inverter",
            SimModel::Meter => "meter",
            SimModel::Battery => "battery",
        }
    }

    /// The SunSpec models in the image, in order (common model first).
    pub fn sunspec_models(self) -> &'static [u16] {
        match self {
            SimModel::Inverter => &[COMMON_ID, 103],
            SimModel::Meter => &[COMMON_ID, 203],
            SimModel::Battery => &[COMMON_ID, 124, 802],
        }
    }
}

impl fmt::Display for SimModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SimModel {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SimModel::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownName {
                what: "simulated SunSpec model",
                name: s.to_string(),
                expected: "inverter, meter, battery",
            })
    }
}

/// One simulated SunSpec device and its counters.
#[derive(Debug, Clone)]
pub struct SimDevice {
    kind: SimModel,
    index: usize,
    serial: String,
    model_name: String,
    device_address: u16,
    pv_seed: u64,
    house_seed: u64,
    grid_seed: u64,
    /// When the counters were last brought up to date, ms since the epoch.
    last_ms: Option<i64>,
    /// Inverter: lifetime production; meter: import register (Wh).
    energy_wh: f64,
    /// Meter: export register (Wh).
    export_wh: f64,
    battery: Battery,
}

/// A home battery's sizing and state.
#[derive(Debug, Clone)]
struct Battery {
    capacity_wh: f64,
    max_w: f64,
    soc_pct: f64,
    /// Full cycles before the simulation started.
    cycles_before: f64,
    discharged_wh: f64,
}

impl Battery {
    /// Power at `t` given the site's surplus: positive when charging.
    ///
    /// Charging is paced to reach full around [`FULL_BY_HOUR`], as forecast-based
    /// charging does (SMA, Fronius): the morning surplus goes to the grid, the midday
    /// peak into the battery, which keeps the feed-in peak down.
    fn power_w(&self, t: i64, surplus_w: f64) -> f64 {
        if surplus_w > 0.0 && self.soc_pct < 100.0 {
            let hour = t.rem_euclid(MS_PER_DAY) as f64 / MS_PER_HOUR;
            let missing_wh = (100.0 - self.soc_pct) / 100.0 * self.capacity_wh;
            let paced_w = if hour < FULL_BY_HOUR {
                (missing_wh / (FULL_BY_HOUR - hour)).max(100.0)
            } else {
                f64::INFINITY
            };
            surplus_w.min(self.max_w).min(paced_w)
        } else if surplus_w < 0.0 && self.soc_pct > SOC_MIN {
            surplus_w.max(-self.max_w)
        } else {
            0.0
        }
    }

    fn integrate(&mut self, power_w: f64, dt_ms: i64) {
        let wh = power_w * dt_ms as f64 / MS_PER_HOUR;
        let before = self.soc_pct;
        self.soc_pct = (self.soc_pct + wh / self.capacity_wh * 100.0).clamp(SOC_MIN, 100.0);
        // What actually went out, after the floor cut the step short.
        let out_wh = (before - self.soc_pct).max(0.0) / 100.0 * self.capacity_wh;
        self.discharged_wh += out_wh;
    }

    fn cycles(&self) -> f64 {
        (self.cycles_before + self.discharged_wh / self.capacity_wh).floor()
    }
}

impl SimDevice {
    /// Device `index` of a simulation seeded with `seed`. Devices of different kinds with
    /// the same index and seed belong to the same site.
    pub fn new(kind: SimModel, index: usize, seed: u64) -> Self {
        let site = derive_seed(seed, index as u64 + 1);
        let pv_seed = derive_seed(site, SALT_PV);
        let init = derive_seed(site, SALT_INIT);
        let draw = |i: i64| unit_draw(init, i);
        let peak = pv_peak_w(pv_seed);
        let capacity_wh = (5.0 + 10.0 * draw(0)).round() * 1000.0;
        Self {
            kind,
            index,
            serial: format!("SIM-{}-{index:04}", kind.name().to_ascii_uppercase()),
            model_name: format!("sim-{}", kind.name()),
            device_address: 1,
            pv_seed,
            house_seed: derive_seed(site, SALT_HOUSE),
            grid_seed: derive_seed(site, SALT_GRID),
            last_ms: None,
            energy_wh: match kind {
                // Up to ten years of production at ~1000 kWh per kWp.
                SimModel::Inverter => 1_000.0 + peak * 10.0 * draw(1),
                _ => 1_000_000.0 + 29_000_000.0 * draw(1),
            },
            export_wh: 1_000.0 + 10_000_000.0 * draw(2),
            battery: Battery {
                capacity_wh,
                max_w: (capacity_wh / 2.0).clamp(2_500.0, 5_000.0),
                soc_pct: 20.0 + 60.0 * draw(3),
                cycles_before: (50.0 + 950.0 * draw(4)).floor(),
                discharged_wh: 0.0,
            },
        }
    }

    /// The same device answering to Modbus unit `address` (the common model's `DA`,
    /// 1 unless set).
    pub fn with_device_address(mut self, address: u16) -> Self {
        self.device_address = address;
        self
    }

    /// The kind of device.
    pub fn kind(&self) -> SimModel {
        self.kind
    }

    /// Position in the simulation.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `SIM-<KIND>-<index>`, e.g. `SIM-INVERTER-0003`: the common model's `SN`.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    fn pv_w(&self, t: i64) -> f64 {
        pv_power_w(self.pv_seed, t)
    }

    fn house_w(&self, t: i64) -> f64 {
        house_power_w(self.house_seed, t)
    }

    /// Brings counters and state of charge up to `now_ms`.
    fn advance(&mut self, now_ms: i64) {
        let Some(last) = self.last_ms else {
            self.last_ms = Some(now_ms);
            return;
        };
        if now_ms <= last {
            return;
        }
        let mut t = last.max(now_ms - MAX_CATCH_UP_MS);
        while t < now_ms {
            let dt = (now_ms - t).min(STEP_MS);
            let wh = |w: f64| w * dt as f64 / MS_PER_HOUR;
            match self.kind {
                SimModel::Inverter => self.energy_wh += wh(self.pv_w(t)),
                SimModel::Meter => {
                    let grid = self.house_w(t) - self.pv_w(t);
                    if grid >= 0.0 {
                        self.energy_wh += wh(grid);
                    } else {
                        self.export_wh -= wh(grid);
                    }
                }
                SimModel::Battery => {
                    let power = self.battery.power_w(t, self.pv_w(t) - self.house_w(t));
                    self.battery.integrate(power, dt);
                }
            }
            t += dt;
        }
        self.last_ms = Some(now_ms);
    }

    /// Mains voltage of phase `phase` (0..3): slow drift around 230 V.
    fn phase_voltage(&self, t: i64, phase: u64) -> f64 {
        let seed = derive_seed(self.grid_seed, phase + 1);
        230.0 + 8.0 * (smooth_noise(seed, t, 120_000) - 0.5)
    }

    fn frequency(&self, t: i64) -> f64 {
        50.0 + 0.1 * (smooth_noise(self.grid_seed, t, 30_000) - 0.5)
    }

    /// The whole register image at `now_ms` (wall clock, ms since the Unix epoch), from
    /// the "SunS" marker (to be served at the base address, e.g. 40000) to the end
    /// marker. Counters move on by the power held since the previous call.
    pub fn image(&mut self, now_ms: i64) -> Vec<u16> {
        self.advance(now_ms);
        let mut blocks = vec![self.common()];
        match self.kind {
            SimModel::Inverter => blocks.push(self.inverter(now_ms)),
            SimModel::Meter => blocks.push(self.meter(now_ms)),
            SimModel::Battery => {
                let (storage, battery) = self.battery_blocks(now_ms);
                blocks.push(storage);
                blocks.push(battery);
            }
        }
        image(&blocks)
    }

    fn common(&self) -> Vec<u16> {
        use EncodeValue::{Number, Text};
        encode(
            def(COMMON_ID),
            &[
                ("Mn", Text("gridlake")),
                ("Md", Text(&self.model_name)),
                ("Vr", Text(env!("CARGO_PKG_VERSION"))),
                ("SN", Text(&self.serial)),
                ("DA", Number(self.device_address.into())),
            ],
        )
    }

    /// Model 103: three-phase inverter, integer values with scale factors.
    fn inverter(&self, t: i64) -> Vec<u16> {
        use EncodeValue::{Number, Raw};
        let ac_w = self.pv_w(t);
        let producing = ac_w >= 1.0;
        // 96.5 % conversion efficiency; strings at about 600 V while the sun is up.
        let dc_w = ac_w / 0.965;
        let dc_v = if producing {
            580.0 + 40.0 * smooth_noise(self.pv_seed, t, 300_000)
        } else {
            0.0
        };
        let v: Vec<f64> = (0..3).map(|p| self.phase_voltage(t, p)).collect();
        let a: Vec<f64> = v.iter().map(|v| ac_w / 3.0 / v).collect();
        let peak = pv_peak_w(self.pv_seed);
        encode(
            def(103),
            &[
                ("A_SF", Number(-2.0)),
                ("A", Number(a.iter().sum())),
                ("AphA", Number(a[0])),
                ("AphB", Number(a[1])),
                ("AphC", Number(a[2])),
                ("V_SF", Number(-1.0)),
                ("PPVphAB", Number(v[0] * 3f64.sqrt())),
                ("PPVphBC", Number(v[1] * 3f64.sqrt())),
                ("PPVphCA", Number(v[2] * 3f64.sqrt())),
                ("PhVphA", Number(v[0])),
                ("PhVphB", Number(v[1])),
                ("PhVphC", Number(v[2])),
                ("W_SF", Number(0.0)),
                ("W", Number(ac_w)),
                ("Hz_SF", Number(-2.0)),
                ("Hz", Number(self.frequency(t))),
                ("WH_SF", Number(0.0)),
                ("WH", Number(self.energy_wh)),
                ("DCA_SF", Number(-2.0)),
                ("DCA", Number(if producing { dc_w / dc_v } else { 0.0 })),
                ("DCV_SF", Number(-1.0)),
                ("DCV", Number(dc_v)),
                ("DCW_SF", Number(0.0)),
                ("DCW", Number(dc_w)),
                ("Tmp_SF", Number(-1.0)),
                ("TmpCab", Number(25.0 + 20.0 * ac_w / peak)),
                // MPPT while producing, SLEEPING otherwise.
                ("St", Number(if producing { 4.0 } else { 2.0 })),
                ("Evt1", Raw(0)),
                ("Evt2", Raw(0)),
            ],
        )
    }

    /// Model 203: wye-connected three-phase meter at the grid connection.
    fn meter(&self, t: i64) -> Vec<u16> {
        use EncodeValue::{Number, Raw};
        let house = self.house_w(t);
        let pv = self.pv_w(t);
        // The household's circuits load the phases unevenly; the inverter feeds all three.
        let w: Vec<f64> = [0.45, 0.35, 0.20]
            .iter()
            .map(|s| house * s - pv / 3.0)
            .collect();
        let v: Vec<f64> = (0..3).map(|p| self.phase_voltage(t, p)).collect();
        let a: Vec<f64> = w.iter().zip(&v).map(|(w, v)| w.abs() / v).collect();
        let v_ll = |x: f64, y: f64| (x * x + x * y + y * y).sqrt();
        encode(
            def(203),
            &[
                ("A_SF", Number(-2.0)),
                ("A", Number(a.iter().sum())),
                ("AphA", Number(a[0])),
                ("AphB", Number(a[1])),
                ("AphC", Number(a[2])),
                ("V_SF", Number(-1.0)),
                ("PhV", Number(v.iter().sum::<f64>() / 3.0)),
                ("PhVphA", Number(v[0])),
                ("PhVphB", Number(v[1])),
                ("PhVphC", Number(v[2])),
                (
                    "PPV",
                    Number((v_ll(v[0], v[1]) + v_ll(v[1], v[2]) + v_ll(v[2], v[0])) / 3.0),
                ),
                ("PhVphAB", Number(v_ll(v[0], v[1]))),
                ("PhVphBC", Number(v_ll(v[1], v[2]))),
                ("PhVphCA", Number(v_ll(v[2], v[0]))),
                ("Hz_SF", Number(-2.0)),
                ("Hz", Number(self.frequency(t))),
                ("W_SF", Number(0.0)),
                ("W", Number(w.iter().sum())),
                ("WphA", Number(w[0])),
                ("WphB", Number(w[1])),
                ("WphC", Number(w[2])),
                ("TotWh_SF", Number(0.0)),
                ("TotWhImp", Number(self.energy_wh)),
                ("TotWhExp", Number(self.export_wh)),
                ("Evt", Raw(0)),
            ],
        )
    }

    /// Models 124 (storage) and 802 (battery); `W` positive when charging.
    fn battery_blocks(&self, t: i64) -> (Vec<u16>, Vec<u16>) {
        use EncodeValue::{Number, Raw};
        let b = &self.battery;
        let power = b.power_w(t, self.pv_w(t) - self.house_w(t));
        // LiFePO4: flat between 10 % and 90 %.
        let volts = BATTERY_NOMINAL_V - 2.0 + 4.0 * b.soc_pct / 100.0 + power / b.max_w * 0.8;
        let cha_st = if power > 1.0 {
            4.0 // CHARGING
        } else if power < -1.0 {
            3.0 // DISCHARGING
        } else if b.soc_pct >= 99.95 {
            5.0 // FULL
        } else if b.soc_pct <= SOC_MIN + 0.05 {
            2.0 // EMPTY
        } else {
            6.0 // HOLDING
        };
        let amp_hours = b.capacity_wh / BATTERY_NOMINAL_V;
        let cycles = b.cycles();
        let storage = encode(
            def(124),
            &[
                ("WChaMax_SF", Number(0.0)),
                ("WChaMax", Number(b.max_w)),
                ("WChaDisChaGra_SF", Number(0.0)),
                ("WChaGra", Number(100.0)),
                ("WDisChaGra", Number(100.0)),
                ("StorCtl_Mod", Raw(0)),
                ("MinRsvPct_SF", Number(0.0)),
                ("MinRsvPct", Number(SOC_MIN)),
                ("ChaState_SF", Number(-1.0)),
                ("ChaState", Number(b.soc_pct)),
                ("StorAval_SF", Number(-1.0)),
                (
                    "StorAval",
                    Number(amp_hours * (b.soc_pct - SOC_MIN).max(0.0) / 100.0),
                ),
                ("InBatV_SF", Number(-1.0)),
                ("InBatV", Number(volts)),
                ("ChaSt", Number(cha_st)),
            ],
        );
        let battery = encode(
            def(802),
            &[
                ("AHRtg_SF", Number(0.0)),
                ("AHRtg", Number(amp_hours)),
                ("WHRtg_SF", Number(0.0)),
                ("WHRtg", Number(b.capacity_wh)),
                ("WChaDisChaMax_SF", Number(0.0)),
                ("WChaRteMax", Number(b.max_w)),
                ("WDisChaRteMax", Number(b.max_w)),
                ("SoC_SF", Number(-1.0)),
                ("SoCMax", Number(100.0)),
                ("SoCMin", Number(SOC_MIN)),
                ("SoC", Number(b.soc_pct)),
                ("SoH_SF", Number(-1.0)),
                // About 20 % capacity lost over 6000 cycles.
                ("SoH", Number(100.0 - cycles / 300.0)),
                ("NCyc", Number(cycles)),
                ("ChaSt", Number(cha_st)),
                ("LocRemCtl", Number(1.0)), // LOCAL
                ("AlmRst", Number(0.0)),
                ("Typ", Number(4.0)),   // LITHIUM_ION
                ("State", Number(3.0)), // CONNECTED
                ("Evt1", Raw(0)),
                ("Evt2", Raw(0)),
                ("EvtVnd1", Raw(0)),
                ("EvtVnd2", Raw(0)),
                ("V_SF", Number(-1.0)),
                ("V", Number(volts)),
                ("CellV_SF", Number(-3.0)),
                ("CellVAvg", Number(volts / 16.0)),
                ("A_SF", Number(-1.0)),
                ("A", Number(power / volts)),
                ("W_SF", Number(0.0)),
                ("W", Number(power)),
                ("SetOp", Number(1.0)),       // CONNECT
                ("SetInvState", Number(3.0)), // INVERTER_STARTED
            ],
        );
        (storage, battery)
    }
}

/// A model the simulator writes; all of them are in `models.json`.
fn def(id: u16) -> &'static super::ModelDef {
    model(id).unwrap_or_else(|| panic!("SunSpec model {id} is missing from models.json"))
}

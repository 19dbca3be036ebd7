use super::sim::{SimDevice, SimModel};
use super::*;
use crate::tables::{self, ValueKind};
use crate::{Reading, Value};

use EncodeValue::{Number, Raw, Text};

/// Every model the contract names, with its specification length `L`.
const SPEC_LENGTHS: [(u16, u16); 17] = [
    (1, 66),
    (101, 50),
    (102, 50),
    (103, 50),
    (111, 60),
    (112, 60),
    (113, 60),
    (124, 24),
    (201, 105),
    (202, 105),
    (203, 105),
    (204, 105),
    (211, 124),
    (212, 124),
    (213, 124),
    (214, 124),
    (802, 62),
];

fn def(id: u16) -> &'static ModelDef {
    model(id).unwrap_or_else(|| panic!("model {id} missing"))
}

/// Walks a register image from its "SunS" marker: (offset of ID in the image, block).
fn walk(image: &[u16]) -> Vec<(usize, Vec<u16>)> {
    assert_eq!(image[..2], SUNS, "image starts with SunS");
    let mut at = 2;
    let mut out = Vec::new();
    loop {
        let id = image[at];
        let len = usize::from(image[at + 1]);
        if id == END_ID {
            assert_eq!(len, 0, "end marker has L = 0");
            assert_eq!(at + 2, image.len(), "nothing after the end marker");
            return out;
        }
        out.push((at, image[at..at + 2 + len].to_vec()));
        at += 2 + len;
    }
}

fn decode_image(image: &[u16]) -> Vec<Block> {
    walk(image)
        .into_iter()
        .map(|(_, b)| def(b[0]).decode(&b))
        .collect()
}

fn field<'a>(r: &'a Reading, column: &str) -> Option<&'a Value> {
    r.field_value(column)
}

fn f64_field(r: &Reading, column: &str) -> Option<f64> {
    match r.field_value(column)? {
        Value::F64(v) => Some(*v),
        other => panic!("{column} is not F64: {other:?}"),
    }
}

fn row<'a>(rows: &'a [Reading], table: &str, phase: Option<&str>) -> &'a Reading {
    rows.iter()
        .find(|r| r.table == table && r.tag_value("phase") == phase)
        .unwrap_or_else(|| panic!("no {table} row for phase {phase:?} in {rows:?}"))
}

/// Every field is a canonical column of its table, with the canonical type.
fn assert_canonical(rows: &[Reading]) {
    for r in rows {
        let spec = tables::table(&r.table).unwrap_or_else(|| panic!("table {}", r.table));
        for (tag, _) in &r.tags {
            assert!(spec.tags.contains(&tag.as_str()), "{}: tag {tag}", r.table);
        }
        assert!(!r.fields.is_empty());
        for (name, value) in &r.fields {
            let column = spec
                .column(name)
                .unwrap_or_else(|| panic!("{}: column {name} is not canonical", r.table));
            let ok = matches!(
                (column.kind, value),
                (ValueKind::Float, Value::F64(_))
                    | (ValueKind::Integer, Value::I64(_))
                    | (ValueKind::String, Value::Str(_))
            );
            assert!(ok, "{}.{name}: {value:?} for {:?}", r.table, column.kind);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------

#[test]
fn the_contract_models_load_with_their_specification_lengths() {
    let ids: Vec<u16> = models().map(|m| m.id).collect();
    assert_eq!(ids, SPEC_LENGTHS.map(|(id, _)| id).to_vec());
    for (id, len) in SPEC_LENGTHS {
        let m = def(id);
        assert_eq!(m.len, len, "model {id}");
        assert_eq!(m.points[0].name, "ID");
        assert_eq!(m.points[1].name, "L");
        assert_eq!(m.points[2].offset, 2);
        assert!(is_supported(id), "model {id}");
    }
    assert_eq!(def(103).name, "inverter_three_phase");
    assert_eq!(def(103).label, "Inverter (Three Phase)");
    assert!(model(64110).is_none());
    assert!(!is_supported(120) && !is_supported(END_ID));
}

#[test]
fn offsets_match_pysunspec2() {
    // From pysunspec2 1.3.7: `sunspec2.device.Model(model_id=N).points[name].offset`.
    let cases: &[(u16, &[(&str, u16)])] = &[
        (1, &[("Mn", 2), ("SN", 50), ("DA", 66), ("Pad", 67)]),
        (
            103,
            &[("W", 14), ("WH", 24), ("DCW", 31), ("St", 38), ("Evt1", 40)],
        ),
        (
            203,
            &[("W", 18), ("TotWhExp", 38), ("TotWhImp", 46), ("Evt", 105)],
        ),
        (124, &[("ChaState", 8), ("ChaSt", 11), ("InOutWRte_SF", 25)]),
        (
            802,
            &[
                ("SoC", 11),
                ("SoH", 13),
                ("NCyc", 14),
                ("ChaSt", 16),
                ("W", 47),
                ("W_SF", 63),
            ],
        ),
        (113, &[("W", 22), ("WH", 32), ("St", 48)]),
    ];
    for (id, points) in cases {
        for (name, offset) in *points {
            assert_eq!(def(*id).point(name).unwrap().offset, *offset, "{id}.{name}");
        }
    }
    // In a map at 40000: SunS (2), common (2 + 66), then 103's ID at 40070, W at 40084.
    let image = image(&[
        encode(def(1), &[("Mn", Text("x"))]),
        encode(def(103), &[("W", Number(1.0))]),
    ]);
    let blocks = walk(&image);
    assert_eq!(40000 + blocks[1].0, 40070);
    assert_eq!(image[blocks[1].0 + 14], 1);
}

#[test]
fn every_scale_factor_names_a_sunssf_point_of_its_model() {
    for m in models() {
        let mut end = 0;
        for p in &m.points {
            assert_eq!(p.offset, end, "{}.{} follows its predecessor", m.id, p.name);
            end += p.size;
            if let Some(ScaleRef::Point(sf)) = &p.sf {
                let sf_point = m
                    .point(sf)
                    .unwrap_or_else(|| panic!("{}.{}: no point {sf}", m.id, p.name));
                assert_eq!(sf_point.kind, PointType::Sunssf, "{}.{sf}", m.id);
            }
            if let Some(dt) = p.kind.data_type() {
                assert_eq!(dt.registers(), usize::from(p.size), "{}.{}", m.id, p.name);
            }
        }
        assert_eq!(end, m.len + 2);
    }
    let st = def(103).point("St").unwrap();
    assert_eq!(st.symbol(4), Some("MPPT"));
    assert_eq!(st.symbol_value("STANDBY"), Some(8));
    assert_eq!(def(103).point("W").unwrap().units.as_deref(), Some("W"));
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// A 103 block of sentinels with some registers set by offset (as a device sends them).
fn block_103(set: &[(&str, &[u16])]) -> Vec<u16> {
    let m = def(103);
    let mut block = encode(m, &[]);
    for (name, regs) in set {
        let at = usize::from(m.point(name).unwrap().offset);
        block[at..at + regs.len()].copy_from_slice(regs);
    }
    block
}

#[test]
fn values_are_scaled_by_the_scale_factor_in_the_same_block() {
    let b = def(103).decode(&block_103(&[
        ("W", &[1234]),
        ("W_SF", &[(-1i16) as u16]),
        ("WH", &[0x0001, 0x0002]),
        ("WH_SF", &[1]),
        ("DCW", &[(-5i16) as u16]),
        ("DCW_SF", &[0]),
        ("PhVphA", &[2301]),
        ("V_SF", &[(-1i16) as u16]),
        ("St", &[4]),
    ]));
    assert_eq!(b.id, 103);
    assert_eq!(b.device_len(), 50);
    assert_eq!(b.number("W"), Some(123.4));
    assert_eq!(b.number("WH"), Some(655_380.0));
    assert_eq!(b.number("DCW"), Some(-5.0));
    assert_eq!(b.number("PhVphA"), Some(230.1));
    assert_eq!(b.number("W_SF"), Some(-1.0));
    assert_eq!(b.raw_enum("St"), Some(4));
    assert_eq!(b.symbol("St"), Some("MPPT"));
    assert_eq!(b.number("St"), Some(4.0));
    assert_eq!(b.text("W"), None);
}

#[test]
fn sentinels_are_no_value_never_zero() {
    let b = def(103).decode(&block_103(&[
        ("W", &[0x8000]),
        ("W_SF", &[0]),
        ("PhVphA", &[0xFFFF]),
        ("V_SF", &[0]),
        ("WH", &[0, 0]),
        ("WH_SF", &[0]),
        ("St", &[0xFFFF]),
        // A value whose scale factor is not implemented has no value either.
        ("DCW", &[500]),
        ("DCW_SF", &[0x8000]),
        ("Hz", &[5000]),
        ("Hz_SF", &[11]), // outside -10..=10
    ]));
    for point in ["W", "PhVphA", "WH", "St", "DCW", "Hz", "DCW_SF", "TmpCab"] {
        assert_eq!(b.number(point), None, "{point}");
    }
    assert_eq!(b.raw_enum("St"), None);
    assert_eq!(b.symbol("St"), None);
    // Neighbours of sentinels are values.
    let b = def(103).decode(&block_103(&[("W", &[0x8001]), ("W_SF", &[0])]));
    assert_eq!(b.number("W"), Some(-32767.0));

    // float32 NaN (model 113 has no scale factors).
    let m = def(113);
    let mut block = encode(m, &[("Hz", Number(50.02)), ("WH", Number(10.0))]);
    assert!(m.decode(&block).number("W").is_none(), "sentinel written");
    let w = usize::from(m.point("W").unwrap().offset);
    block[w..w + 2].copy_from_slice(&[0x7FC0, 0]);
    let b = m.decode(&block);
    assert_eq!(b.number("W"), None);
    assert!((b.number("Hz").unwrap() - 50.02).abs() < 1e-4);
    assert!(readings(&[b], 0, false)[0].field_value("power_w").is_none());
}

#[test]
fn a_short_common_model_decodes_up_to_its_length() {
    // SolarEdge sends L = 65: the common model without its pad register.
    let full = encode(
        def(1),
        &[
            ("Mn", Text("SolarEdge ")),
            ("Md", Text("SE5000H-RW000BNN4")),
            ("Vr", Text("0004.0018.0518")),
            ("SN", Text("7E1A2B3C")),
            ("DA", Number(1.0)),
        ],
    );
    let mut short = full[..67].to_vec();
    short[1] = 65;
    let b = def(1).decode(&short);
    assert_eq!(b.device_len(), 65);
    let common = Common::from_block(&b);
    assert_eq!(
        common,
        Common {
            manufacturer: Some("SolarEdge".into()),
            model: Some("SE5000H-RW000BNN4".into()),
            options: None,
            version: Some("0004.0018.0518".into()),
            serial: Some("7E1A2B3C".into()),
            device_address: Some(1),
        }
    );
    assert!(!b.implemented().any(|p| p == "Pad"));

    // Points past the device's L have no value, even when more registers are given.
    let mut shorter = full.clone();
    shorter[1] = 64;
    let b = def(1).decode(&shorter);
    assert_eq!(b.raw_enum("DA"), None);
    assert_eq!(b.text("SN").as_deref(), Some("7E1A2B3C"));
    // ... and past the registers given.
    let b = def(1).decode(&full[..40]);
    assert_eq!(b.text("Mn").as_deref(), Some("SolarEdge"));
    assert_eq!(b.text("Vr"), None);
    assert_eq!(def(1).decode(&[]).implemented().count(), 0);
}

#[test]
fn longer_blocks_ignore_the_vendor_registers() {
    let mut block = encode(def(103), &[("W", Number(100.0))]);
    block[1] += 4;
    block.extend_from_slice(&[1, 2, 3, 4]);
    let b = def(103).decode(&block);
    assert_eq!(b.number("W"), Some(100.0));
    assert_eq!(b.device_len(), 54);
}

#[test]
fn text_is_trimmed_and_a_leading_nul_is_no_value() {
    let m = def(1);
    let b = m.decode(&encode(
        m,
        &[("Mn", Text("  gridlake  ")), ("Md", Text(" "))],
    ));
    assert_eq!(b.text("Mn").as_deref(), Some("gridlake"));
    assert_eq!(b.text("Md"), None, "blank");
    assert_eq!(b.text("SN"), None, "not implemented (NULs)");
    assert_eq!(b.number("Mn"), None);
    assert_eq!(Common::from_block(&b).serial, None);
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

#[test]
fn encode_writes_id_length_and_sentinels() {
    let m = def(103);
    let block = encode(m, &[]);
    assert_eq!(block.len(), 52);
    assert_eq!(block[..2], [103, 50]);
    let at = |n: &str| usize::from(m.point(n).unwrap().offset);
    assert_eq!(block[at("A")], 0xFFFF, "uint16");
    assert_eq!(block[at("W")], 0x8000, "int16");
    assert_eq!(block[at("W_SF")], 0x8000, "sunssf");
    assert_eq!(block[at("WH")..at("WH") + 2], [0, 0], "acc32");
    assert_eq!(block[at("St")], 0xFFFF, "enum16");
    assert_eq!(
        block[at("Evt1")..at("Evt1") + 2],
        [0xFFFF, 0xFFFF],
        "bitfield32"
    );
    let m = def(113);
    let at = usize::from(m.point("W").unwrap().offset);
    assert_eq!(encode(m, &[])[at..at + 2], [0x7FC0, 0], "float32");
    assert!(
        def(103)
            .decode(&encode(def(103), &[]))
            .implemented()
            .all(|p| p == "ID" || p == "L")
    );
}

#[test]
fn encode_scales_and_rounds_and_implies_a_zero_scale_factor() {
    let m = def(203);
    let at = |n: &str| usize::from(m.point(n).unwrap().offset);
    let block = encode(
        m,
        &[
            ("V_SF", Number(-1.0)),
            ("PhVphA", Number(230.06)),
            ("TotWh_SF", Number(3.0)),
            ("TotWhImp", Number(12_345_678.0)),
            ("W", Number(-1500.4)),
        ],
    );
    assert_eq!(block[at("PhVphA")], 2301);
    assert_eq!(block[at("TotWhImp")..at("TotWhImp") + 2], [0, 12_346]);
    assert_eq!(block[at("W")], (-1500i16) as u16);
    assert_eq!(block[at("W_SF")], 0, "implied");
    let b = m.decode(&block);
    assert_eq!(b.number("PhVphA"), Some(230.1));
    assert_eq!(b.number("TotWhImp"), Some(12_346_000.0));
    assert_eq!(b.number("W"), Some(-1500.0));
}

#[test]
fn encode_errors_name_the_model_and_point() {
    let m = def(103);
    let err = |values: &[(&str, EncodeValue<'_>)]| try_encode(m, values).unwrap_err().to_string();
    assert_eq!(
        err(&[("Watts", Number(1.0))]),
        "SunSpec model 103 has no point \"Watts\""
    );
    assert!(err(&[("W", Text("1"))]).contains("\"W\""));
    assert!(
        err(&[("W", Number(40_000.0))]).contains("\"W\""),
        "int16 overflow"
    );
    assert!(
        err(&[("A", Number(-1.0))]).contains("\"A\""),
        "negative uint16"
    );
    assert!(
        err(&[("W", Number(-32768.0))]).contains("\"W\""),
        "sentinel"
    );
    assert!(
        err(&[("WH", Number(0.0))]).contains("\"WH\""),
        "acc 0 is the sentinel"
    );
    assert!(err(&[("W", Number(f64::NAN))]).contains("\"W\""));
    let long = "x".repeat(33);
    assert!(try_encode(def(1), &[("Mn", Text(&long))]).is_err());
    assert!(try_encode(def(1), &[("Mn", Number(1.0))]).is_err());
    // Raw bits are written as they are.
    let block = encode(m, &[("Evt1", Raw(0x0001_0002)), ("W", Raw(0x8000))]);
    let at = usize::from(m.point("Evt1").unwrap().offset);
    assert_eq!(block[at..at + 2], [1, 2]);
}

#[test]
#[should_panic(expected = "has no point \"Nope\"")]
fn encode_panics_on_a_bug_in_the_caller() {
    encode(def(1), &[("Nope", Number(1.0))]);
}

/// A value for every point of a model, and what it decodes to.
fn sample_values(m: &ModelDef) -> Vec<(&str, EncodeValue<'static>, Option<f64>)> {
    let mut out = Vec::new();
    for (i, p) in m.points.iter().enumerate().skip(2) {
        let i = i as f64;
        let (value, expected) = match p.kind {
            PointType::Sunssf => (Number(-1.0), Some(-1.0)),
            PointType::String => (Text("abc"), None),
            PointType::Pad | PointType::Ipv6addr | PointType::Eui48 => continue,
            PointType::Float32 => (Number(i + 0.5), Some(i + 0.5)),
            PointType::Float64 => (Number(-i - 0.25), Some(-i - 0.25)),
            PointType::Int16 | PointType::Int32 | PointType::Int64 if p.sf.is_some() => {
                (Number(-i / 10.0), Some(-i / 10.0))
            }
            _ if p.sf.is_some() => (Number(i / 10.0), Some(i / 10.0)),
            _ => (Number(i), Some(i)),
        };
        out.push((p.name.as_str(), value, expected));
    }
    out
}

#[test]
fn every_supported_model_round_trips() {
    for (id, _) in SPEC_LENGTHS {
        let m = def(id);
        let samples = sample_values(m);
        let values: Vec<(&str, EncodeValue<'_>)> =
            samples.iter().map(|(n, v, _)| (*n, *v)).collect();
        let block = encode(m, &values);
        assert_eq!(block.len(), usize::from(m.len) + 2);
        let b = m.decode(&block);
        for (name, value, expected) in &samples {
            match value {
                Text(t) => assert_eq!(b.text(name).as_deref(), Some(*t), "{id}.{name}"),
                _ => {
                    let got = b
                        .number(name)
                        .unwrap_or_else(|| panic!("{id}.{name}: no value"));
                    let want = expected.unwrap();
                    assert!((got - want).abs() < 1e-9, "{id}.{name}: {got} != {want}");
                }
            }
        }
        if id != COMMON_ID {
            let rows = readings(&[b], 7, false);
            assert!(!rows.is_empty(), "model {id} gives readings");
            assert_canonical(&rows);
        }
    }
}

#[test]
fn image_wraps_blocks_in_the_markers() {
    let blocks = [encode(def(1), &[]), encode(def(203), &[])];
    let img = image(&blocks);
    assert_eq!(img[..2], [0x5375, 0x6e53]);
    assert_eq!(&img[..4], &[0x5375, 0x6e53, 1, 66]);
    assert_eq!(img[img.len() - 2..], [END_ID, 0]);
    let walked: Vec<u16> = walk(&img).iter().map(|(_, b)| b[0]).collect();
    assert_eq!(walked, [1, 203]);
    assert_eq!(img.len(), 2 + 68 + 107 + 2);
}

// ---------------------------------------------------------------------------------------
// Readings
// ---------------------------------------------------------------------------------------

#[test]
fn inverter_readings() {
    let block = encode(
        def(103),
        &[
            ("W_SF", Number(-1.0)),
            ("W", Number(2500.5)),
            ("WH_SF", Number(0.0)),
            ("WH", Number(1_234_567.0)),
            ("DCW", Number(2600.0)),
            ("St", Number(5.0)),
        ],
    );
    let rows = readings(&[def(103).decode(&block)], 1_000, false);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.table.as_str(), r.time), ("inverter", 1_000));
    assert!(r.tags.is_empty(), "site/device tags are the collector's");
    assert_eq!(f64_field(r, "power_w"), Some(2500.5));
    assert_eq!(f64_field(r, "energy_wh"), Some(1_234_567.0));
    assert_eq!(f64_field(r, "dc_power_w"), Some(2600.0));
    assert_eq!(field(r, "status"), Some(&Value::Str("throttled".into())));
    assert_canonical(&rows);

    let rows = readings(&[def(103).decode(&block)], 1_000, true);
    assert_eq!(f64_field(&rows[0], "power_w"), Some(-2500.5));
    assert_eq!(
        f64_field(&rows[0], "dc_power_w"),
        Some(2600.0),
        "not a power_w"
    );

    // Every status, by value (model 111 spells its symbols differently).
    let names = [
        "off",
        "sleeping",
        "starting",
        "mppt",
        "throttled",
        "shutting_down",
        "fault",
        "standby",
    ];
    for id in [101, 102, 103, 111, 112, 113] {
        for (st, name) in (1..).zip(names) {
            let b = def(id).decode(&encode(def(id), &[("St", Number(st as f64))]));
            let rows = readings(&[b], 0, false);
            assert_eq!(
                field(&rows[0], "status"),
                Some(&Value::Str(name.into())),
                "{id} St={st}"
            );
            assert_eq!(rows[0].fields.len(), 1, "nulls stay out: {rows:?}");
        }
    }
    // A float inverter.
    let b = def(113).decode(&encode(
        def(113),
        &[
            ("W", Number(-0.0)),
            ("WH", Number(10.5)),
            ("DCW", Number(12.0)),
        ],
    ));
    let rows = readings(&[b], 0, true);
    assert_eq!(f64_field(&rows[0], "power_w"), Some(0.0));
    assert!(f64_field(&rows[0], "power_w").unwrap().is_sign_positive());
    assert_eq!(f64_field(&rows[0], "energy_wh"), Some(10.5));
}

#[test]
fn meter_readings_have_a_total_row_and_phase_rows() {
    let block = encode(
        def(203),
        &[
            ("A_SF", Number(-2.0)),
            ("A", Number(12.34)),
            ("AphA", Number(10.0)),
            ("AphB", Number(2.34)),
            ("V_SF", Number(-1.0)),
            ("PhV", Number(230.0)),
            ("PhVphA", Number(231.0)),
            ("PhVphB", Number(229.0)),
            ("Hz_SF", Number(-2.0)),
            ("Hz", Number(49.98)),
            ("W_SF", Number(0.0)),
            ("W", Number(-2000.0)),
            ("WphA", Number(-1500.0)),
            ("WphB", Number(-500.0)),
            ("TotWh_SF", Number(0.0)),
            ("TotWhImp", Number(5_000_000.0)),
            ("TotWhExp", Number(1_000_000.0)),
            ("TotWhImpPhA", Number(3_000_000.0)),
        ],
    );
    let rows = readings(&[def(203).decode(&block)], 5, false);
    assert_canonical(&rows);
    assert_eq!(rows.len(), 3, "no L3 row: phase C has no value: {rows:?}");
    let total = row(&rows, "meter", None);
    assert_eq!(f64_field(total, "power_w"), Some(-2000.0));
    assert_eq!(f64_field(total, "energy_import_wh"), Some(5_000_000.0));
    assert_eq!(f64_field(total, "energy_export_wh"), Some(1_000_000.0));
    assert_eq!(f64_field(total, "voltage_v"), Some(230.0));
    assert_eq!(f64_field(total, "current_a"), Some(12.34));
    assert_eq!(f64_field(total, "frequency_hz"), Some(49.98));
    let l1 = row(&rows, "meter", Some("L1"));
    assert_eq!(f64_field(l1, "power_w"), Some(-1500.0));
    assert_eq!(f64_field(l1, "voltage_v"), Some(231.0));
    assert_eq!(f64_field(l1, "current_a"), Some(10.0));
    assert_eq!(f64_field(l1, "energy_import_wh"), Some(3_000_000.0));
    assert_eq!(f64_field(l1, "energy_export_wh"), None);
    let l2 = row(&rows, "meter", Some("L2"));
    assert_eq!(f64_field(l2, "current_a"), Some(2.34));

    let inverted = readings(&[def(203).decode(&block)], 5, true);
    assert_eq!(
        f64_field(row(&inverted, "meter", None), "power_w"),
        Some(2000.0)
    );
    assert_eq!(
        f64_field(row(&inverted, "meter", Some("L1")), "power_w"),
        Some(1500.0)
    );

    // Float meters map the same points; a single-phase meter gives one phase row.
    let b = def(211).decode(&encode(
        def(211),
        &[
            ("W", Number(800.0)),
            ("WphA", Number(800.0)),
            ("PhVphA", Number(230.5)),
        ],
    ));
    let rows = readings(&[b], 0, false);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        f64_field(row(&rows, "meter", Some("L1")), "voltage_v"),
        Some(230.5)
    );
    for id in [201, 202, 204, 212, 213, 214] {
        let b = def(id).decode(&encode(def(id), &[("W", Number(1.0))]));
        assert_eq!(readings(&[b], 0, false).len(), 1, "model {id}");
    }
}

#[test]
fn battery_models_merge_into_one_row_and_802_wins() {
    let storage = def(124).decode(&encode(
        def(124),
        &[
            ("ChaState_SF", Number(0.0)),
            ("ChaState", Number(40.0)),
            ("ChaSt", Number(3.0)),
        ],
    ));
    let rows = readings(std::slice::from_ref(&storage), 0, false);
    assert_eq!(rows.len(), 1);
    assert_eq!(f64_field(&rows[0], "soc_pct"), Some(40.0));
    assert_eq!(
        field(&rows[0], "state"),
        Some(&Value::Str("discharging".into()))
    );
    assert_eq!(rows[0].fields.len(), 2);

    let battery = def(802).decode(&encode(
        def(802),
        &[
            ("SoC_SF", Number(-1.0)),
            ("SoC", Number(41.5)),
            ("SoH_SF", Number(0.0)),
            ("SoH", Number(97.0)),
            ("NCyc", Number(321.0)),
            ("W_SF", Number(0.0)),
            ("W", Number(1200.0)),
            ("ChaSt", Number(4.0)),
        ],
    ));
    for blocks in [
        vec![storage.clone(), battery.clone()],
        vec![battery.clone(), storage.clone()],
    ] {
        let rows = readings(&blocks, 0, false);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.table, "battery");
        assert_eq!(f64_field(r, "soc_pct"), Some(41.5));
        assert_eq!(f64_field(r, "health_pct"), Some(97.0));
        assert_eq!(field(r, "cycles"), Some(&Value::I64(321)));
        assert_eq!(f64_field(r, "power_w"), Some(1200.0));
        assert_eq!(field(r, "state"), Some(&Value::Str("charging".into())));
        assert_canonical(&rows);
    }
    // 124 fills what 802 leaves out.
    let partial = def(802).decode(&encode(def(802), &[("SoH", Number(90.0))]));
    let rows = readings(&[partial, storage], 0, true);
    assert_eq!(f64_field(&rows[0], "soc_pct"), Some(40.0));
    assert_eq!(f64_field(&rows[0], "health_pct"), Some(90.0));
    // Other charge states are idle.
    for st in [1.0, 2.0, 5.0, 6.0, 7.0] {
        let b = def(802).decode(&encode(def(802), &[("ChaSt", Number(st))]));
        assert_eq!(
            field(&readings(&[b], 0, false)[0], "state"),
            Some(&Value::Str("idle".into()))
        );
    }
}

#[test]
fn blocks_without_values_give_no_rows() {
    let blocks: Vec<Block> = [1, 103, 203, 124, 802]
        .into_iter()
        .map(|id| def(id).decode(&encode(def(id), &[])))
        .collect();
    assert!(readings(&blocks, 0, false).is_empty());
    let common = def(1).decode(&encode(def(1), &[("Mn", Text("x"))]));
    assert!(readings(&[common], 0, false).is_empty());
}

// ---------------------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------------------

/// 2024-06-21T00:00:00Z: midsummer, so the day has sun whatever the clouds.
const MIDSUMMER_MS: i64 = 1_718_928_000_000;
const HOUR_MS: i64 = 3_600_000;

#[test]
fn sim_models_parse_by_name() {
    for m in SimModel::ALL {
        assert_eq!(m.name().parse::<SimModel>().unwrap(), m);
        assert_eq!(m.to_string(), m.name());
    }
    let err = "heat_pump".parse::<SimModel>().unwrap_err().to_string();
    assert!(
        err.contains("heat_pump") && err.contains("inverter, meter, battery"),
        "{err}"
    );
}

#[test]
fn sim_images_walk_from_suns_to_the_end_marker() {
    for kind in SimModel::ALL {
        let mut dev = SimDevice::new(kind, 3, 42).with_device_address(7);
        let img = dev.image(MIDSUMMER_MS + 12 * HOUR_MS);
        let ids: Vec<u16> = walk(&img).iter().map(|(_, b)| b[0]).collect();
        assert_eq!(ids, kind.sunspec_models(), "{kind}");
        assert!(img.len() <= 200);
        let blocks = decode_image(&img);
        for b in &blocks {
            assert_eq!(b.device_len(), def(b.id).len);
        }
        let common = Common::from_block(&blocks[0]);
        let upper = kind.name().to_ascii_uppercase();
        assert_eq!(common.manufacturer.as_deref(), Some("gridlake"));
        assert_eq!(common.model, Some(format!("sim-{kind}")));
        assert_eq!(common.serial, Some(format!("SIM-{upper}-0003")));
        assert_eq!(common.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(common.options, None);
        assert_eq!(common.device_address, Some(7));
        assert_eq!(dev.serial(), format!("SIM-{upper}-0003"));
        let rows = readings(&blocks, 0, false);
        assert_canonical(&rows);
        let table = match kind {
            SimModel::Inverter => "inverter",
            SimModel::Meter => "meter",
            SimModel::Battery => "battery",
        };
        assert!(rows.iter().all(|r| r.table == table), "{rows:?}");
    }
    assert_eq!(
        SimDevice::new(SimModel::Meter, 0, 1).serial(),
        "SIM-METER-0000"
    );
}

/// Readings of one device over a day, every `step_ms`.
fn day(kind: SimModel, index: usize, seed: u64, step_ms: i64) -> Vec<(i64, Vec<Reading>)> {
    let mut dev = SimDevice::new(kind, index, seed);
    (0..24 * HOUR_MS / step_ms)
        .map(|k| {
            let t = MIDSUMMER_MS + k * step_ms;
            let rows = readings(&decode_image(&dev.image(t)), t * 1_000_000, false);
            (t, rows)
        })
        .collect()
}

fn total<'a>(rows: &'a [Reading], table: &str) -> &'a Reading {
    row(rows, table, None)
}

#[test]
fn sim_inverter_follows_the_sun_and_its_counter_only_grows() {
    let samples = day(SimModel::Inverter, 0, 42, 5 * 60_000);
    let mut last_wh = 0.0;
    let mut produced_wh = 0.0;
    for (t, rows) in &samples {
        let r = total(rows, "inverter");
        let w = f64_field(r, "power_w").unwrap();
        let wh = f64_field(r, "energy_wh").unwrap();
        assert!(wh >= last_wh, "energy never decreases");
        if last_wh > 0.0 {
            produced_wh += wh - last_wh;
        }
        last_wh = wh;
        let hour = (t - MIDSUMMER_MS) / HOUR_MS;
        let status = field(r, "status").unwrap();
        if !(3..21).contains(&hour) {
            assert_eq!(w, 0.0, "no sun at {hour}h");
            assert_eq!(status, &Value::Str("sleeping".into()));
        }
        if (10..14).contains(&hour) {
            assert!(w > 100.0, "sun at {hour}h: {w} W");
            assert_eq!(status, &Value::Str("mppt".into()));
            assert!(f64_field(r, "dc_power_w").unwrap() >= w);
        }
    }
    // A summer day's production: a few kWh at least, less than 24 h at 12 kW.
    assert!(
        (2_000.0..100_000.0).contains(&produced_wh),
        "{produced_wh} Wh"
    );
}

#[test]
fn sim_meter_imports_at_night_exports_at_noon_and_registers_only_grow() {
    let samples = day(SimModel::Meter, 1, 42, 5 * 60_000);
    let (mut imp, mut exp) = (0.0, 0.0);
    let mut exported = false;
    for (t, rows) in &samples {
        let r = total(rows, "meter");
        let i = f64_field(r, "energy_import_wh").unwrap();
        let e = f64_field(r, "energy_export_wh").unwrap();
        assert!(i >= imp && e >= exp, "registers never decrease");
        imp = i;
        exp = e;
        let w = f64_field(r, "power_w").unwrap();
        let hour = (t - MIDSUMMER_MS) / HOUR_MS;
        if hour < 3 {
            assert!(w > 0.0, "night import at {hour}h: {w}");
        }
        exported |= w < 0.0;
        let phases: f64 = ["L1", "L2", "L3"]
            .iter()
            .map(|p| f64_field(row(rows, "meter", Some(p)), "power_w").unwrap())
            .sum();
        assert!((phases - w).abs() <= 3.0, "phases add up: {phases} vs {w}");
        let v = f64_field(r, "voltage_v").unwrap();
        assert!((220.0..240.0).contains(&v), "{v}");
        let hz = f64_field(r, "frequency_hz").unwrap();
        assert!((49.9..50.1).contains(&hz), "{hz}");
    }
    assert!(exported, "a summer day exports at midday");
}

#[test]
fn sim_battery_charges_at_midday_and_discharges_in_the_evening() {
    let samples = day(SimModel::Battery, 2, 42, 60_000);
    let mut cycles = 0;
    let (mut charged_midday, mut discharged_evening) = (false, false);
    for (t, rows) in &samples {
        let r = total(rows, "battery");
        let soc = f64_field(r, "soc_pct").unwrap();
        assert!((5.0..=100.0).contains(&soc), "{soc}");
        let Some(Value::I64(c)) = field(r, "cycles") else {
            panic!("cycles: {r:?}")
        };
        assert!(*c >= cycles, "cycles never decrease");
        cycles = *c;
        let w = f64_field(r, "power_w").unwrap();
        let state = field(r, "state").unwrap();
        let hour = (t - MIDSUMMER_MS) / HOUR_MS;
        if w > 1.0 {
            assert_eq!(state, &Value::Str("charging".into()));
            // Daylight is 04:00-20:00 at midsummer.
            assert!(
                (4..20).contains(&hour),
                "charges from PV only, not at {hour}h"
            );
        }
        if w < -1.0 {
            assert_eq!(state, &Value::Str("discharging".into()));
        }
        charged_midday |= (11..14).contains(&hour) && w > 0.0;
        discharged_evening |= (19..23).contains(&hour) && w < 0.0;
        let health = f64_field(r, "health_pct").unwrap();
        assert!((70.0..=100.0).contains(&health));
    }
    assert!(charged_midday && discharged_evening);
}

#[test]
fn sim_is_deterministic_and_survives_odd_clocks() {
    let times = [
        MIDSUMMER_MS,
        MIDSUMMER_MS + 100,
        MIDSUMMER_MS + 12 * HOUR_MS,
        // Backwards: counters hold, values follow the clock.
        MIDSUMMER_MS + 6 * HOUR_MS,
        // Ten days later: only the last day is integrated.
        MIDSUMMER_MS + 240 * HOUR_MS,
    ];
    for kind in SimModel::ALL {
        let (mut a, mut b) = (SimDevice::new(kind, 5, 7), SimDevice::new(kind, 5, 7));
        let mut other = SimDevice::new(kind, 6, 7);
        let mut differs = false;
        let mut counter = 0.0;
        for t in times {
            let img = a.image(t);
            assert_eq!(img, b.image(t), "{kind} at {t}");
            differs |= img != other.image(t);
            let rows = readings(&decode_image(&img), 0, false);
            let main = total(&rows, kind.name());
            let now = match kind {
                SimModel::Inverter => f64_field(main, "energy_wh").unwrap(),
                SimModel::Meter => f64_field(main, "energy_import_wh").unwrap(),
                SimModel::Battery => match field(main, "cycles") {
                    Some(Value::I64(c)) => *c as f64,
                    other => panic!("{other:?}"),
                },
            };
            assert!(now >= counter, "{kind}: {now} < {counter}");
            counter = now;
        }
        assert!(differs, "{kind}: devices differ by index");
    }
}

#[test]
fn sim_devices_of_one_site_share_pv_and_household() {
    // Same seed and index: the inverter's production shows at the meter.
    let t = MIDSUMMER_MS + 13 * HOUR_MS;
    let inverter = readings(
        &decode_image(&SimDevice::new(SimModel::Inverter, 4, 9).image(t)),
        0,
        false,
    );
    let meter = readings(
        &decode_image(&SimDevice::new(SimModel::Meter, 4, 9).image(t)),
        0,
        false,
    );
    let pv = f64_field(total(&inverter, "inverter"), "power_w").unwrap();
    let grid = f64_field(total(&meter, "meter"), "power_w").unwrap();
    let house = grid + pv;
    assert!(pv > 0.0);
    assert!((50.0..10_000.0).contains(&house), "household {house} W");
}

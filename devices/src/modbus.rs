//! Modbus register values: data types, word and byte orders, scaling, and the SunSpec
//! "not implemented" sentinels. Pure functions over `u16` registers, shared by the
//! Modbus poller and the SunSpec decoder (issue 5); no I/O.
//!
//! Vocabulary follows Telegraf's `inputs.modbus` (data types `INT16` … `FLOAT64`, byte
//! orders `ABCD`, `DCBA`, `BADC`, `CDAB`) so that register maps written for it read the
//! same here. Sentinels follow the SunSpec Information Model Specification (point types
//! `int16`, `uint16`, `acc16`, `int32`, `uint32`, `acc32`, `int64`, `uint64`, `acc64`,
//! `float32`, `sunssf`): a register holding its type's sentinel has no value, which
//! must become a null, never a zero.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many bits a value has and how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Signed 16-bit; SunSpec sentinel 0x8000.
    Int16,
    /// Unsigned 16-bit; SunSpec sentinel 0xFFFF.
    Uint16,
    /// Unsigned 16-bit accumulator; SunSpec sentinel 0.
    Acc16,
    /// Signed 32-bit; SunSpec sentinel 0x8000_0000.
    Int32,
    /// Unsigned 32-bit; SunSpec sentinel 0xFFFF_FFFF.
    Uint32,
    /// Unsigned 32-bit accumulator (energy counters); SunSpec sentinel 0.
    Acc32,
    /// Signed 64-bit; SunSpec sentinel 0x8000_0000_0000_0000.
    Int64,
    /// Unsigned 64-bit; SunSpec sentinel 0xFFFF_FFFF_FFFF_FFFF.
    Uint64,
    /// Unsigned 64-bit accumulator; SunSpec sentinel 0.
    Acc64,
    /// IEEE 754 single precision; SunSpec sentinel NaN (0x7FC0_0000).
    Float32,
    /// IEEE 754 double precision; NaN has no value.
    Float64,
}

impl DataType {
    /// Registers (16-bit words) one value occupies.
    pub fn registers(self) -> usize {
        match self {
            DataType::Int16 | DataType::Uint16 | DataType::Acc16 => 1,
            DataType::Int32 | DataType::Uint32 | DataType::Acc32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::Uint64 | DataType::Acc64 | DataType::Float64 => 4,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DataType::Int16 => "int16",
            DataType::Uint16 => "uint16",
            DataType::Acc16 => "acc16",
            DataType::Int32 => "int32",
            DataType::Uint32 => "uint32",
            DataType::Acc32 => "acc32",
            DataType::Int64 => "int64",
            DataType::Uint64 => "uint64",
            DataType::Acc64 => "acc64",
            DataType::Float32 => "float32",
            DataType::Float64 => "float64",
        };
        f.write_str(name)
    }
}

/// The order of a value's bytes across its registers, named by the bytes of a 32-bit
/// big-endian value `A B C D` as the device sends them (Telegraf's names). The same
/// rule extends to 16 and 64 bits:
/// - `ABCD`: registers most significant first, each register big-endian (Modbus' own
///   convention, and SunSpec's);
/// - `CDAB`: registers least significant first ("word swap"), each big-endian;
/// - `BADC`: registers most significant first, bytes within each swapped;
/// - `DCBA`: fully little-endian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ByteOrder {
    /// Big-endian words, big-endian bytes.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Little-endian words, big-endian bytes.
    #[serde(rename = "CDAB")]
    Cdab,
    /// Big-endian words, little-endian bytes.
    #[serde(rename = "BADC")]
    Badc,
    /// Little-endian words, little-endian bytes.
    #[serde(rename = "DCBA")]
    Dcba,
}

/// A decoded register value before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegisterValue {
    /// From a signed type.
    Int(i64),
    /// From an unsigned type or accumulator.
    Uint(u64),
    /// From a float type.
    Float(f64),
}

impl RegisterValue {
    /// The value as a float, for scaling.
    pub fn as_f64(self) -> f64 {
        match self {
            RegisterValue::Int(v) => v as f64,
            RegisterValue::Uint(v) => v as f64,
            RegisterValue::Float(v) => v,
        }
    }
}

/// Why registers could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongLength {
    /// The type asked for.
    pub data_type: DataType,
    /// Registers given.
    pub got: usize,
}

impl fmt::Display for WrongLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs {} registers, got {}",
            self.data_type,
            self.data_type.registers(),
            self.got
        )
    }
}

impl std::error::Error for WrongLength {}

/// The value's bytes, most significant first, from its registers in `order`.
fn big_endian_bytes(registers: &[u16], order: ByteOrder) -> Vec<u8> {
    let words: Vec<u16> = match order {
        ByteOrder::Abcd | ByteOrder::Badc => registers.to_vec(),
        ByteOrder::Cdab | ByteOrder::Dcba => registers.iter().rev().copied().collect(),
    };
    words
        .into_iter()
        .flat_map(|w| match order {
            ByteOrder::Abcd | ByteOrder::Cdab => w.to_be_bytes(),
            ByteOrder::Badc | ByteOrder::Dcba => w.to_le_bytes(),
        })
        .collect()
}

/// Decodes one value from exactly [`DataType::registers`] registers. Returns `Ok(None)`
/// for the type's SunSpec "not implemented" sentinel (and for a NaN float).
///
/// Sentinels are checked on every value: a plain (non-SunSpec) register map that reads
/// 0xFFFF from a `uint16` gets a null too. Use [`decode_raw`] where those values are
/// real readings.
///
/// # Errors
///
/// [`WrongLength`] when `registers` has the wrong length for `data_type`.
pub fn decode(
    registers: &[u16],
    data_type: DataType,
    order: ByteOrder,
) -> Result<Option<RegisterValue>, WrongLength> {
    let value = decode_raw(registers, data_type, order)?;
    Ok((!is_unimplemented(value, data_type)).then_some(value))
}

/// Lays out the big-endian bytes of a value (an even number of them) in registers as a
/// device using `order` does: the inverse of [`decode_raw`], for simulators and tests.
pub fn encode_bytes(big_endian: &[u8], order: ByteOrder) -> Vec<u16> {
    let words: Vec<u16> = big_endian
        .chunks(2)
        .map(|c| {
            let pair = [c[0], c.get(1).copied().unwrap_or(0)];
            match order {
                ByteOrder::Abcd | ByteOrder::Cdab => u16::from_be_bytes(pair),
                ByteOrder::Badc | ByteOrder::Dcba => u16::from_le_bytes(pair),
            }
        })
        .collect();
    match order {
        ByteOrder::Abcd | ByteOrder::Badc => words,
        ByteOrder::Cdab | ByteOrder::Dcba => words.into_iter().rev().collect(),
    }
}

/// Decodes one value without treating sentinels specially.
///
/// # Errors
///
/// [`WrongLength`] when `registers` has the wrong length for `data_type`.
pub fn decode_raw(
    registers: &[u16],
    data_type: DataType,
    order: ByteOrder,
) -> Result<RegisterValue, WrongLength> {
    if registers.len() != data_type.registers() {
        return Err(WrongLength {
            data_type,
            got: registers.len(),
        });
    }
    let b = big_endian_bytes(registers, order);
    Ok(match data_type {
        DataType::Int16 => RegisterValue::Int(i16::from_be_bytes([b[0], b[1]]).into()),
        DataType::Uint16 | DataType::Acc16 => {
            RegisterValue::Uint(u16::from_be_bytes([b[0], b[1]]).into())
        }
        DataType::Int32 => RegisterValue::Int(i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        DataType::Uint32 | DataType::Acc32 => {
            RegisterValue::Uint(u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into())
        }
        DataType::Float32 => {
            RegisterValue::Float(f32::from_be_bytes([b[0], b[1], b[2], b[3]]).into())
        }
        DataType::Int64 => RegisterValue::Int(i64::from_be_bytes(eight(&b))),
        DataType::Uint64 | DataType::Acc64 => RegisterValue::Uint(u64::from_be_bytes(eight(&b))),
        DataType::Float64 => RegisterValue::Float(f64::from_be_bytes(eight(&b))),
    })
}

fn eight(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// True when `value` is the SunSpec "not implemented" value of `data_type`.
pub fn is_unimplemented(value: RegisterValue, data_type: DataType) -> bool {
    match (data_type, value) {
        (DataType::Int16, RegisterValue::Int(v)) => v == i64::from(i16::MIN),
        (DataType::Uint16, RegisterValue::Uint(v)) => v == u64::from(u16::MAX),
        (DataType::Int32, RegisterValue::Int(v)) => v == i64::from(i32::MIN),
        (DataType::Uint32, RegisterValue::Uint(v)) => v == u64::from(u32::MAX),
        (DataType::Int64, RegisterValue::Int(v)) => v == i64::MIN,
        (DataType::Uint64, RegisterValue::Uint(v)) => v == u64::MAX,
        (DataType::Acc16 | DataType::Acc32 | DataType::Acc64, RegisterValue::Uint(v)) => v == 0,
        (DataType::Float32 | DataType::Float64, RegisterValue::Float(v)) => v.is_nan(),
        _ => false,
    }
}

/// A SunSpec scale factor register (`sunssf`, signed 16-bit): the power of ten the
/// points it governs are multiplied by. `None` for the sentinel 0x8000 and for values
/// outside -10..=10, which the specification does not allow: points scaled by an
/// unknown factor have no value.
pub fn sunspec_scale_factor(register: u16) -> Option<i32> {
    let sf = i32::from(register as i16);
    (-10..=10).contains(&sf).then_some(sf)
}

/// `value × 10^sf`, computed so that integer readings with negative factors stay as
/// exact as an `f64` allows (230.1 V is `2301 / 10`, not `2301 × 0.1`).
pub fn apply_scale_factor(value: RegisterValue, sf: i32) -> f64 {
    let v = value.as_f64();
    let factor = 10f64.powi(sf.abs());
    if sf < 0 { v / factor } else { v * factor }
}

/// A configured linear conversion: `value × scale + offset`.
pub fn apply_scale_offset(value: RegisterValue, scale: f64, offset: f64) -> f64 {
    value.as_f64() * scale + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: [ByteOrder; 4] = [
        ByteOrder::Abcd,
        ByteOrder::Cdab,
        ByteOrder::Badc,
        ByteOrder::Dcba,
    ];

    #[test]
    fn the_four_orders_of_a_32_bit_value_match_their_names() {
        // 0x11223344 with A=0x11, B=0x22, C=0x33, D=0x44.
        let cases = [
            (ByteOrder::Abcd, [0x1122, 0x3344]),
            (ByteOrder::Cdab, [0x3344, 0x1122]),
            (ByteOrder::Badc, [0x2211, 0x4433]),
            (ByteOrder::Dcba, [0x4433, 0x2211]),
        ];
        for (order, registers) in cases {
            assert_eq!(
                decode(&registers, DataType::Uint32, order).unwrap(),
                Some(RegisterValue::Uint(0x1122_3344)),
                "{order:?}"
            );
        }
    }

    #[test]
    fn every_type_round_trips_in_every_order() {
        let values: [(DataType, Vec<u8>, RegisterValue); 9] = [
            (
                DataType::Int16,
                (-1234i16).to_be_bytes().to_vec(),
                RegisterValue::Int(-1234),
            ),
            (
                DataType::Uint16,
                54321u16.to_be_bytes().to_vec(),
                RegisterValue::Uint(54321),
            ),
            (
                DataType::Acc16,
                7u16.to_be_bytes().to_vec(),
                RegisterValue::Uint(7),
            ),
            (
                DataType::Int32,
                (-123_456_789i32).to_be_bytes().to_vec(),
                RegisterValue::Int(-123_456_789),
            ),
            (
                DataType::Acc32,
                4_000_000_000u32.to_be_bytes().to_vec(),
                RegisterValue::Uint(4_000_000_000),
            ),
            (
                DataType::Int64,
                (-9_000_000_000_000i64).to_be_bytes().to_vec(),
                RegisterValue::Int(-9_000_000_000_000),
            ),
            (
                DataType::Uint64,
                18_000_000_000_000_000_000u64.to_be_bytes().to_vec(),
                RegisterValue::Uint(18_000_000_000_000_000_000),
            ),
            (
                DataType::Float32,
                230.5f32.to_be_bytes().to_vec(),
                RegisterValue::Float(230.5),
            ),
            (
                DataType::Float64,
                (-0.125f64).to_be_bytes().to_vec(),
                RegisterValue::Float(-0.125),
            ),
        ];
        for (data_type, be, expected) in values {
            for order in ORDERS {
                let registers = encode_bytes(&be, order);
                assert_eq!(registers.len(), data_type.registers());
                assert_eq!(
                    decode(&registers, data_type, order).unwrap(),
                    Some(expected),
                    "{data_type} {order:?}"
                );
            }
        }
    }

    #[test]
    fn sunspec_sentinels_are_nulls_never_zeros() {
        let cases: [(DataType, &[u16]); 10] = [
            (DataType::Int16, &[0x8000]),
            (DataType::Uint16, &[0xFFFF]),
            (DataType::Acc16, &[0]),
            (DataType::Int32, &[0x8000, 0]),
            (DataType::Uint32, &[0xFFFF, 0xFFFF]),
            (DataType::Acc32, &[0, 0]),
            (DataType::Int64, &[0x8000, 0, 0, 0]),
            (DataType::Uint64, &[0xFFFF; 4]),
            (DataType::Float32, &[0x7FC0, 0]),
            (DataType::Float64, &[0x7FF8, 0, 0, 0]),
        ];
        for (data_type, registers) in cases {
            assert_eq!(
                decode(registers, data_type, ByteOrder::Abcd).unwrap(),
                None,
                "{data_type}"
            );
            // The raw decoding still gives the bits, for plain register maps.
            assert!(decode_raw(registers, data_type, ByteOrder::Abcd).is_ok());
        }
        // Neighbours of the sentinels are values.
        assert_eq!(
            decode(&[0x8001], DataType::Int16, ByteOrder::Abcd).unwrap(),
            Some(RegisterValue::Int(-32767))
        );
        assert_eq!(
            decode(&[0, 1], DataType::Acc32, ByteOrder::Abcd).unwrap(),
            Some(RegisterValue::Uint(1))
        );
        assert_eq!(
            decode(&[0, 0], DataType::Uint32, ByteOrder::Abcd).unwrap(),
            Some(RegisterValue::Uint(0))
        );
    }

    #[test]
    fn wrong_register_counts_are_errors_naming_the_type() {
        let err = decode(&[1, 2, 3], DataType::Float32, ByteOrder::Abcd).unwrap_err();
        assert_eq!(err.to_string(), "float32 needs 2 registers, got 3");
        assert!(decode(&[], DataType::Int16, ByteOrder::Abcd).is_err());
    }

    #[test]
    fn scale_factors() {
        assert_eq!(sunspec_scale_factor(0xFFFF), Some(-1));
        assert_eq!(sunspec_scale_factor(2), Some(2));
        assert_eq!(sunspec_scale_factor(0x8000), None);
        assert_eq!(sunspec_scale_factor(11), None);
        assert_eq!(sunspec_scale_factor((-11i16) as u16), None);
        assert_eq!(apply_scale_factor(RegisterValue::Uint(2301), -1), 230.1);
        assert_eq!(apply_scale_factor(RegisterValue::Int(-15), 2), -1500.0);
        assert_eq!(apply_scale_factor(RegisterValue::Uint(5), 0), 5.0);
        assert_eq!(apply_scale_offset(RegisterValue::Int(-400), 0.1, 40.0), 0.0);
    }

    #[test]
    fn byte_orders_parse_from_telegraf_names() {
        #[derive(Deserialize)]
        struct Point {
            data_type: DataType,
            byte_order: ByteOrder,
        }
        let p: Point =
            serde_json::from_str(r#"{"data_type":"acc32","byte_order":"CDAB"}"#).unwrap();
        assert_eq!(p.data_type, DataType::Acc32);
        assert_eq!(p.byte_order, ByteOrder::Cdab);
        assert!(serde_json::from_str::<ByteOrder>(r#""abcd""#).is_err());
    }
}

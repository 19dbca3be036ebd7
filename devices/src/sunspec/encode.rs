//! Register images from values: the inverse of [`ModelDef::decode`], for the Modbus
//! simulator and for tests that need a device's registers.

use std::fmt;

use crate::modbus::{ByteOrder, encode_bytes};

use super::{END_ID, ModelDef, PointDef, PointType, SUNS, ScaleRef};

/// A value to write into a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EncodeValue<'a> {
    /// An engineering value, scaled by the point's scale factor before it is written
    /// (for a `sunssf` point: the power of ten itself, e.g. `-1.0`).
    Number(f64),
    /// Text for a `string` point.
    Text(&'a str),
    /// Register bits as they are, the low `16 × size` bits (for sentinels and bit fields).
    Raw(u64),
}

/// Why values cannot be written into a model.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodeError {
    /// The model has no point of this name.
    UnknownPoint {
        /// Model ID.
        model: u16,
        /// Point name.
        point: String,
    },
    /// A number for a text point, or text for a numeric one.
    WrongKind {
        /// Model ID.
        model: u16,
        /// Point name.
        point: String,
        /// The point's type.
        kind: PointType,
    },
    /// The value, scaled, does not fit the point's type (or hits its "not implemented"
    /// value, or the text is longer than the point).
    OutOfRange {
        /// Model ID.
        model: u16,
        /// Point name.
        point: String,
        /// What was asked, in words.
        value: String,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::UnknownPoint { model, point } => {
                write!(f, "SunSpec model {model} has no point {point:?}")
            }
            EncodeError::WrongKind { model, point, kind } => write!(
                f,
                "SunSpec model {model}: point {point:?} is of type {kind:?}, which this value cannot be written to"
            ),
            EncodeError::OutOfRange {
                model,
                point,
                value,
            } => write!(
                f,
                "SunSpec model {model}: {value} does not fit point {point:?} (after scaling)"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The "not implemented" registers of a point, which every point not given holds.
fn sentinel(p: &PointDef) -> Vec<u16> {
    let size = usize::from(p.size);
    let mut regs = vec![0u16; size];
    match p.kind {
        PointType::Int16
        | PointType::Sunssf
        | PointType::Int32
        | PointType::Int64
        | PointType::Pad => regs[0] = 0x8000,
        PointType::Uint16
        | PointType::Count
        | PointType::Enum16
        | PointType::Bitfield16
        | PointType::Uint32
        | PointType::Enum32
        | PointType::Bitfield32
        | PointType::Uint64
        | PointType::Eui48 => regs.fill(0xFFFF),
        PointType::Float32 => regs[0] = 0x7FC0,
        PointType::Float64 => regs[0] = 0x7FF8,
        PointType::Acc16
        | PointType::Acc32
        | PointType::Acc64
        | PointType::Ipaddr
        | PointType::Ipv6addr
        | PointType::String => {}
    }
    regs
}

/// `bits`, big-endian over `size` registers.
fn words(bits: u64, size: usize) -> Vec<u16> {
    (0..size).rev().map(|i| (bits >> (16 * i)) as u16).collect()
}

/// Writes `values` into the block of `def`: `ID`, `L` (the specification's length) and
/// the body, with every point not given at its "not implemented" value.
///
/// A number for a point with a scale factor point is divided by 10^sf and rounded, where
/// sf is the number given for the scale factor point (`("W_SF", Number(-1.0))`); when
/// the scale factor point is not given, it is written as 0 so the block still decodes to
/// the values given.
///
/// # Errors
///
/// [`EncodeError`] for an unknown point, a value of the wrong kind, or a value that does
/// not fit its point.
pub fn try_encode(
    def: &ModelDef,
    values: &[(&str, EncodeValue<'_>)],
) -> Result<Vec<u16>, EncodeError> {
    let mut block: Vec<u16> = def.points.iter().flat_map(sentinel).collect();
    let point = |name: &str| {
        def.point(name).ok_or_else(|| EncodeError::UnknownPoint {
            model: def.id,
            point: name.to_string(),
        })
    };
    let given = |name: &str| {
        values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    };
    let mut write = |p: &PointDef, regs: Vec<u16>| {
        let start = usize::from(p.offset);
        block[start..start + regs.len()].copy_from_slice(&regs);
    };
    // Scale factor points that govern a given value but are not given themselves.
    let mut implied_sf = Vec::new();
    for (name, value) in values {
        let p = point(name)?;
        let out_of_range = || EncodeError::OutOfRange {
            model: def.id,
            point: p.name.clone(),
            value: format!("{value:?}"),
        };
        let wrong_kind = || EncodeError::WrongKind {
            model: def.id,
            point: p.name.clone(),
            kind: p.kind,
        };
        let regs = match (*value, p.kind) {
            (EncodeValue::Raw(bits), _) => words(bits, usize::from(p.size)),
            (EncodeValue::Text(text), PointType::String) => {
                let capacity = 2 * usize::from(p.size);
                if text.len() > capacity || text.as_bytes().contains(&0) {
                    return Err(out_of_range());
                }
                let mut bytes = text.as_bytes().to_vec();
                bytes.resize(capacity, 0);
                encode_bytes(&bytes, ByteOrder::Abcd)
            }
            (EncodeValue::Text(_), _) => return Err(wrong_kind()),
            (EncodeValue::Number(x), PointType::Float32) => {
                words(u64::from((x as f32).to_bits()), 2)
            }
            (EncodeValue::Number(x), PointType::Float64) => words(x.to_bits(), 4),
            (EncodeValue::Number(x), kind) => {
                let Some(data_type) = kind.data_type() else {
                    return Err(wrong_kind());
                };
                let sf = match &p.sf {
                    None => 0,
                    Some(ScaleRef::Fixed(sf)) => *sf,
                    Some(ScaleRef::Point(sf_name)) => match given(sf_name) {
                        Some(EncodeValue::Number(sf)) => sf as i32,
                        Some(EncodeValue::Raw(bits)) => i32::from(bits as u16 as i16),
                        Some(EncodeValue::Text(_)) => return Err(wrong_kind()),
                        None => {
                            implied_sf.push(sf_name.clone());
                            0
                        }
                    },
                };
                let factor = 10f64.powi(sf.abs());
                let scaled = if sf < 0 { x * factor } else { x / factor }.round();
                let bits = to_bits(scaled, data_type).ok_or_else(out_of_range)?;
                words(bits, usize::from(p.size))
            }
        };
        write(p, regs);
    }
    for name in implied_sf {
        let p = point(&name)?;
        write(p, vec![0]);
    }
    block[0] = def.id;
    block[1] = def.len;
    Ok(block)
}

/// The two's complement bits of an integer value of `data_type`, `None` when it does not
/// fit or is the type's "not implemented" value (which would read back as no value).
fn to_bits(v: f64, data_type: crate::modbus::DataType) -> Option<u64> {
    use crate::modbus::DataType as D;
    let (min, max, sentinel): (f64, f64, Option<f64>) = match data_type {
        D::Int16 => (i16::MIN.into(), i16::MAX.into(), Some(i16::MIN.into())),
        D::Uint16 => (0.0, u16::MAX.into(), Some(u16::MAX.into())),
        D::Acc16 => (0.0, u16::MAX.into(), Some(0.0)),
        D::Int32 => (i32::MIN.into(), i32::MAX.into(), Some(i32::MIN.into())),
        D::Uint32 => (0.0, u32::MAX.into(), Some(u32::MAX.into())),
        D::Acc32 => (0.0, u32::MAX.into(), Some(0.0)),
        D::Int64 => (i64::MIN as f64, i64::MAX as f64, Some(i64::MIN as f64)),
        D::Uint64 => (0.0, u64::MAX as f64, Some(u64::MAX as f64)),
        D::Acc64 => (0.0, u64::MAX as f64, Some(0.0)),
        D::Float32 | D::Float64 => return None,
    };
    if !v.is_finite() || v < min || v > max || Some(v) == sentinel {
        return None;
    }
    Some(if v < 0.0 { (v as i64) as u64 } else { v as u64 })
}

/// [`try_encode`] for values the caller controls (the simulator's and tests' own point
/// names and ranges).
///
/// # Panics
///
/// On an [`EncodeError`]: a misspelt point name or a value that does not fit is a bug
/// in the caller.
pub fn encode(def: &ModelDef, values: &[(&str, EncodeValue<'_>)]) -> Vec<u16> {
    match try_encode(def, values) {
        Ok(block) => block,
        Err(e) => panic!("{e}"),
    }
}

/// A whole SunSpec register map from its blocks: the "SunS" marker, the blocks in order
/// and the end marker (0xFFFF, 0). Register 0 of the result sits at the base address.
pub fn image(models: &[Vec<u16>]) -> Vec<u16> {
    let mut out = SUNS.to_vec();
    for block in models {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&[END_ID, 0]);
    out
}

//! One device's poll: SunSpec discovery and model reads, or a register map, and the
//! rows they produce.
//!
//! SunSpec discovery looks for the `SunS` marker at the configured base (or 40000,
//! 50000 and 0), then walks the model chain by each model's ID and length (`L`) to the
//! end marker, never assuming a model's length: SolarEdge's common model is 65
//! registers, the specification's 66. Each cycle reads the whole block (ID, L and body)
//! of every model `devices::sunspec` maps, so scale factors come in the same request as
//! their values, and checks each block's ID and L: a device whose map moved (a
//! firmware update) is discovered again.

use devices::Reading;
use devices::sunspec::{self, COMMON_ID, Common, END_ID, SUNS};
use devices::tables::{DEVICE_ID, DEVICE_STATUS, SITE_ID};
use serde::Serialize;
use storage::{FieldValue, ParsedLine, Row};
use tokio_modbus::ExceptionCode;

use super::config::{DeviceSpec, RegisterMap, RegisterType};
use super::connection::{Connection, RequestError};
use super::plan::{self, Data, ReadRequest, Reads};
use crate::apply_canonical;
use crate::canonical::field_value;
use crate::checks::{check_field_keys, sort_tags};

/// `source` of rows from SunSpec models.
pub(crate) const SOURCE_SUNSPEC: &str = "modbus/sunspec";
/// `source` of rows from register maps.
pub(crate) const SOURCE_MAP: &str = "modbus";

/// More models than any real device has: a chain this long is garbage, not a map.
const MAX_MODELS: usize = 256;

/// Where a SunSpec model is in a device's register map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelLocation {
    /// Model ID.
    pub id: u16,
    /// Address of the model's ID register.
    pub address: u16,
    /// The model's length (`L`) as the device gives it: registers after ID and L.
    pub len: u16,
}

/// What discovery found on a SunSpec device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SunSpecInfo {
    /// Address of the `SunS` marker.
    pub base: u16,
    /// Every model in the chain, in order.
    pub models: Vec<ModelLocation>,
    /// Who the device says it is (common model 1).
    pub common: Common,
}

/// A discovered map and the requests that read its supported models.
#[derive(Debug, Clone)]
struct Discovery {
    info: SunSpecInfo,
    /// The models read every cycle.
    polled: Vec<ModelLocation>,
    requests: Vec<ReadRequest>,
}

/// Reads of one cycle, with retries, remembering when the last answer arrived.
#[derive(Debug)]
pub(crate) struct Io<'a> {
    pub(crate) conn: &'a mut Connection,
    pub(crate) unit: u8,
    pub(crate) retries: u32,
    /// Arrival of the latest answer (ns since the epoch, whole milliseconds).
    pub(crate) arrived: i64,
}

impl Io<'_> {
    async fn read(&mut self, request: ReadRequest) -> Result<Data, RequestError> {
        let mut attempt = 0;
        loop {
            match self.conn.read(self.unit, request).await {
                Ok((data, arrived)) => {
                    self.arrived = arrived;
                    return Ok(data);
                }
                Err(e) if attempt < self.retries && e.is_transient() => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn holding(&mut self, start: u16, count: u16) -> Result<Vec<u16>, RequestError> {
        let request = ReadRequest {
            register: RegisterType::Holding,
            start,
            count,
        };
        match self.read(request).await? {
            Data::Words(words) => Ok(words),
            Data::Bits(_) => Err(RequestError::Io("bits in answer to a register read".into())),
        }
    }
}

/// A successful cycle.
#[derive(Debug)]
pub(crate) struct Polled {
    /// The readings, ready for the store.
    pub(crate) rows: Vec<ParsedLine>,
    /// Rows that could not be made (a value the canonical rules refuse).
    pub(crate) invalid: usize,
}

/// A device and what the collector learnt about it.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) spec: DeviceSpec,
    discovery: Option<Discovery>,
    map_requests: Vec<ReadRequest>,
    /// Whether the register map's requests span gaps between points.
    map_gaps: bool,
    /// Whether spanning gaps saves any request (if not, an exception is not the gaps'
    /// fault).
    gaps_matter: bool,
    /// Whether a row this device produced was refused and logged.
    warned: bool,
}

impl Device {
    pub(crate) fn new(spec: DeviceSpec) -> Self {
        let (map_requests, gaps_matter) = match &spec.map {
            Some(map) => {
                let merged = map.plan(true);
                let gaps_matter = merged != map.plan(false);
                (merged, gaps_matter)
            }
            None => (Vec::new(), false),
        };
        Self {
            spec,
            discovery: None,
            map_requests,
            map_gaps: true,
            gaps_matter,
            warned: false,
        }
    }

    /// The SunSpec map found, if any.
    pub(crate) fn sunspec_info(&self) -> Option<&SunSpecInfo> {
        self.discovery.as_ref().map(|d| &d.info)
    }

    /// Forgets the SunSpec map, so the next cycle discovers it again (the device
    /// that comes back may have new firmware, or be another device).
    pub(crate) fn forget(&mut self) {
        self.discovery = None;
    }

    /// Polls once. The error says what failed, for logs and `device_status`.
    ///
    /// Every row of a cycle has one time, the arrival of the cycle's last answer, and
    /// a device read both as SunSpec and by a register map gives one row per table and
    /// phase: rows with the same table, tags and time are one point in the store, where
    /// the later would replace the earlier whole, and rows at two times would be two
    /// half readings of one instant.
    pub(crate) async fn poll(&mut self, io: &mut Io<'_>) -> Result<Polled, String> {
        let blocks = match self.spec.sunspec {
            Some(options) => Some(self.sunspec_blocks(io, options.base).await?),
            None => None,
        };
        let reads = match self.spec.map {
            Some(_) => Some(self.map_reads(io).await?),
            None => None,
        };
        let time = io.arrived;
        let mut drafts = Vec::new();
        if let (Some(blocks), Some(options)) = (&blocks, self.spec.sunspec) {
            drafts.extend(
                sunspec::readings(blocks, time, options.invert_power)
                    .into_iter()
                    .map(Draft::from_reading),
            );
        }
        if let (Some(reads), Some(map)) = (&reads, &self.spec.map) {
            for draft in map_drafts(map, reads) {
                merge(&mut drafts, draft);
            }
        }
        let mut rows = Vec::with_capacity(drafts.len());
        let mut invalid = 0;
        for draft in drafts {
            let line = device_line(
                &self.spec,
                draft.table,
                draft.phase,
                draft.fields,
                time,
                draft.source,
            );
            match line {
                Ok(line) => rows.push(line),
                Err(error) => {
                    invalid += 1;
                    // Such a row fails the same way every cycle: say it once.
                    if self.warned {
                        tracing::debug!(device_id = %self.spec.device_id, %error, "polled row not stored");
                    } else {
                        self.warned = true;
                        tracing::warn!(device_id = %self.spec.device_id, %error, "polled row not stored (repeats are logged at debug level)");
                    }
                }
            }
        }
        Ok(Polled { rows, invalid })
    }

    /// What the device is, for its `device_status` row when it comes online:
    /// `SunSpec: SMA SB5.0 serial 123; models 1, 103, 120` or `polling 12 points`.
    pub(crate) fn description(&self) -> String {
        let mut parts = Vec::new();
        if let Some(info) = self.sunspec_info() {
            parts.push(describe(info));
        }
        if let Some(map) = &self.spec.map {
            parts.push(format!("polling {} points", map.points.len()));
        }
        parts.join("; ")
    }

    /// The decoded blocks of one cycle, discovering the map first when needed.
    async fn sunspec_blocks(
        &mut self,
        io: &mut Io<'_>,
        base: Option<u16>,
    ) -> Result<Vec<sunspec::Block>, String> {
        let fresh = self.discovery.is_none();
        if fresh {
            self.discovery = Some(discover(io, base).await?);
        }
        let discovery = self.discovery.as_ref().expect("discovered above");
        match read_blocks(io, discovery).await? {
            Ok(blocks) => Ok(blocks),
            Err(moved) if !fresh => {
                tracing::info!(device_id = %self.spec.device_id, reason = %moved, "discovering the SunSpec map again");
                self.discovery = None;
                self.discovery = Some(discover(io, base).await?);
                let discovery = self.discovery.as_ref().expect("discovered above");
                read_blocks(io, discovery).await?
            }
            Err(moved) => Err(moved),
        }
    }

    /// Reads every request of the register map. A request that spans gaps and is
    /// refused with "illegal data address" (the device has holes in its map) is
    /// planned again without gaps, once and for good.
    async fn map_reads(&mut self, io: &mut Io<'_>) -> Result<Reads, String> {
        'plan: loop {
            let mut reads = Reads::default();
            for request in &self.map_requests {
                match io.read(*request).await {
                    Ok(data) => reads.push(*request, data),
                    Err(RequestError::Exception(ExceptionCode::IllegalDataAddress))
                        if self.map_gaps && self.gaps_matter =>
                    {
                        tracing::warn!(
                            device_id = %self.spec.device_id,
                            register = %request.register,
                            start = request.start,
                            count = request.count,
                            "the device refused a request spanning unmapped registers; reading each run of points on its own from now on"
                        );
                        self.map_gaps = false;
                        if let Some(map) = &self.spec.map {
                            self.map_requests = map.plan(false);
                        }
                        continue 'plan;
                    }
                    Err(e) => return Err(format!("reading {}: {e}", describe_request(request))),
                }
            }
            return Ok(reads);
        }
    }

    /// The `device_status` row of a transition.
    pub(crate) fn status_line(&self, online: bool, reason: &str, time: i64) -> Option<ParsedLine> {
        let source = if self.spec.sunspec.is_some() {
            SOURCE_SUNSPEC
        } else {
            SOURCE_MAP
        };
        let fields = vec![
            ("online".to_string(), FieldValue::Bool(online)),
            ("reason".to_string(), FieldValue::String(reason.to_string())),
        ];
        match device_line(
            &self.spec,
            DEVICE_STATUS.name.to_string(),
            None,
            fields,
            time,
            source,
        ) {
            Ok(line) => Some(line),
            Err(e) => {
                tracing::error!(device_id = %self.spec.device_id, error = %e, "device_status row not stored");
                None
            }
        }
    }
}

/// A row of one cycle before it gets the device's tags and the canonical rules.
#[derive(Debug)]
struct Draft {
    table: String,
    /// Never empty: a total is `None`.
    phase: Option<String>,
    fields: Vec<(String, FieldValue)>,
    source: &'static str,
}

impl Draft {
    /// A SunSpec reading; its time is the cycle's.
    fn from_reading(reading: Reading) -> Self {
        let fields = reading
            .fields
            .into_iter()
            .map(|(k, v)| (k, field_value(v)))
            .collect();
        let phase = reading
            .tags
            .into_iter()
            .find(|(k, _)| k == devices::tables::PHASE)
            .map(|(_, v)| v)
            .filter(|p| !p.is_empty());
        Self {
            table: reading.table,
            phase,
            fields,
            source: SOURCE_SUNSPEC,
        }
    }
}

/// Adds `draft` to `drafts`, into the row of the same table and phase if there is one:
/// its columns join that row's. Where both give a column, `draft`'s value wins: a
/// register map row merges into a SunSpec row, and a point the user configured for a
/// column is there to correct or replace what the device's SunSpec model says. The
/// merged row keeps its first source (`modbus/sunspec`, as the device's status rows).
fn merge(drafts: &mut Vec<Draft>, draft: Draft) {
    let Some(into) = drafts
        .iter_mut()
        .find(|d| d.table == draft.table && d.phase == draft.phase)
    else {
        drafts.push(draft);
        return;
    };
    for (column, value) in draft.fields {
        match into.fields.iter_mut().find(|(c, _)| *c == column) {
            Some((_, slot)) => *slot = value,
            None => into.fields.push((column, value)),
        }
    }
}

/// Who a SunSpec device says it is and its models.
fn describe(info: &SunSpecInfo) -> String {
    let c = &info.common;
    let mut who: Vec<&str> = [&c.manufacturer, &c.model]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let serial = c.serial.as_deref().map(|s| format!("serial {s}"));
    if let Some(s) = &serial {
        who.push(s);
    }
    let models: Vec<String> = info.models.iter().map(|m| m.id.to_string()).collect();
    if who.is_empty() {
        format!("SunSpec at {}; models {}", info.base, models.join(", "))
    } else {
        format!("SunSpec: {}; models {}", who.join(" "), models.join(", "))
    }
}

fn describe_request(r: &ReadRequest) -> String {
    if r.count == 1 {
        format!("{} {}", r.register, r.start)
    } else {
        format!("{} {}..{}", r.register, r.start, r.end() - 1)
    }
}

/// Finds the `SunS` marker and walks the model chain.
async fn discover(io: &mut Io<'_>, base: Option<u16>) -> Result<Discovery, String> {
    let bases: Vec<u16> = match base {
        Some(base) => vec![base],
        None => sunspec::BASE_ADDRESSES.to_vec(),
    };
    let mut tried = Vec::new();
    for base in bases {
        match io.holding(base, 2).await {
            Ok(marker) if marker == SUNS => return walk(io, base).await,
            Ok(other) => tried.push(format!(
                "{base}: {:#06x} {:#06x} instead of SunS",
                other[0], other[1]
            )),
            // Without a connection, the other bases cannot be tried either. A unit that
            // does not answer (absent behind its gateway, or off) would not answer at
            // the next base either, and every try costs the endpoint's other devices
            // the timeout and retries; a device that ignores reads of registers it
            // lacks instead of refusing them needs `sunspec_base`.
            Err(
                e @ (RequestError::Connect(_)
                | RequestError::ConnectTimeout(_)
                | RequestError::Io(_)
                | RequestError::Timeout),
            ) => {
                return Err(format!("looking for the SunSpec marker at {base}: {e}"));
            }
            // An exception: this base is not in the device's map.
            Err(e) => tried.push(format!("{base}: {e}")),
        }
    }
    Err(format!("no SunSpec map found ({})", tried.join("; ")))
}

/// Walks the chain from the marker at `base` to the end marker.
async fn walk(io: &mut Io<'_>, base: u16) -> Result<Discovery, String> {
    let mut models = Vec::new();
    let mut at = u32::from(base) + 2;
    loop {
        if at + 2 > 65536 {
            return Err(format!(
                "the SunSpec model chain from {base} runs past address 65535 without an end marker"
            ));
        }
        if models.len() >= MAX_MODELS {
            return Err(format!(
                "the SunSpec model chain from {base} has more than {MAX_MODELS} models; not a SunSpec map"
            ));
        }
        let header = match io.holding(at as u16, 2).await {
            Ok(header) => header,
            // Some devices end the map without an end marker.
            Err(RequestError::Exception(ExceptionCode::IllegalDataAddress))
                if !models.is_empty() =>
            {
                break;
            }
            Err(e) => return Err(format!("reading the SunSpec model header at {at}: {e}")),
        };
        if header[0] == END_ID {
            break;
        }
        let (id, len) = (header[0], header[1]);
        if at + 2 + u32::from(len) > 65536 {
            return Err(format!(
                "SunSpec model {id} at {at} has length {len}, which runs past address 65535"
            ));
        }
        models.push(ModelLocation {
            id,
            address: at as u16,
            len,
        });
        at += 2 + u32::from(len);
    }
    let mut common = Common::default();
    if let Some(location) = models.iter().find(|m| m.id == COMMON_ID).copied() {
        let requests = block_requests(&[location]);
        let mut reads = Reads::default();
        for request in requests {
            let data = io.read(request).await.map_err(|e| {
                format!(
                    "reading the SunSpec common model at {}: {e}",
                    location.address
                )
            })?;
            reads.push(request, data);
        }
        let words = block_words(&reads, location).ok_or("common model not read")?;
        if let Some(def) = sunspec::model(COMMON_ID) {
            common = Common::from_block(&def.decode(&words));
        }
    }
    let polled: Vec<ModelLocation> = models
        .iter()
        .filter(|m| {
            m.id != COMMON_ID && sunspec::is_supported(m.id) && sunspec::model(m.id).is_some()
        })
        .copied()
        .collect();
    if polled.is_empty() {
        let ids: Vec<String> = models.iter().map(|m| m.id.to_string()).collect();
        return Err(format!(
            "the SunSpec map at {base} has no model gridlake reads (models {}; gridlake reads 101-103, 111-113, 124, 201-204, 211-214, 802)",
            ids.join(", ")
        ));
    }
    let requests = block_requests(&polled);
    Ok(Discovery {
        info: SunSpecInfo {
            base,
            models,
            common,
        },
        polled,
        requests,
    })
}

/// The requests that read whole blocks (ID, L and body).
fn block_requests(models: &[ModelLocation]) -> Vec<ReadRequest> {
    plan::coalesce(
        RegisterType::Holding,
        models.iter().map(|m| (m.address, m.len + 2)),
        plan::max_gap(RegisterType::Holding),
    )
}

fn block_words(reads: &Reads, m: ModelLocation) -> Option<Vec<u16>> {
    reads.words(RegisterType::Holding, m.address, m.len + 2)
}

/// Reads and decodes the polled models. The inner error says a block no longer
/// holds the model discovery found there.
async fn read_blocks(
    io: &mut Io<'_>,
    discovery: &Discovery,
) -> Result<Result<Vec<sunspec::Block>, String>, String> {
    let mut reads = Reads::default();
    for request in &discovery.requests {
        match io.read(*request).await {
            Ok(data) => reads.push(*request, data),
            Err(RequestError::Exception(ExceptionCode::IllegalDataAddress)) => {
                return Ok(Err(format!(
                    "reading SunSpec models at {}: the device no longer has these registers",
                    describe_request(request)
                )));
            }
            Err(e) => {
                return Err(format!(
                    "reading SunSpec models at {}: {e}",
                    describe_request(request)
                ));
            }
        }
    }
    let mut blocks = Vec::with_capacity(discovery.polled.len());
    for &m in &discovery.polled {
        let words = block_words(&reads, m)
            .ok_or_else(|| format!("model {} at {} was not read", m.id, m.address))?;
        if words[0] != m.id || words[1] != m.len {
            return Ok(Err(format!(
                "SunSpec model {} (length {}) is no longer at {}: found ID {} length {}",
                m.id, m.len, m.address, words[0], words[1]
            )));
        }
        let def =
            sunspec::model(m.id).ok_or_else(|| format!("model {} has no definition", m.id))?;
        blocks.push(def.decode(&words));
    }
    Ok(Ok(blocks))
}

/// The rows of a register map from one cycle's reads. A row without a value is left
/// out.
///
/// SunSpec's "not implemented" values are not nulls here: on a plain meter 0xFFFF,
/// -32768 or an energy counter at 0 are readings. Only a float without a value (NaN)
/// leaves its column out; so does an infinity, which no reading is.
fn map_drafts(map: &RegisterMap, reads: &Reads) -> Vec<Draft> {
    let mut fields: Vec<Vec<(String, FieldValue)>> = vec![Vec::new(); map.rows.len()];
    for point in &map.points {
        let value = if point.register.is_bit() {
            reads
                .bit(point.register, point.address)
                .map(FieldValue::Bool)
        } else {
            reads
                .words(point.register, point.address, point.width())
                .and_then(|regs| {
                    devices::modbus::decode_raw(&regs, point.data_type, point.order).ok()
                })
                .map(|v| devices::modbus::apply_scale_offset(v, point.scale, point.offset))
                .filter(|v| v.is_finite())
                .map(FieldValue::F64)
        };
        if let Some(value) = value {
            fields[point.row].push((point.column.clone(), value));
        }
    }
    map.rows
        .iter()
        .zip(fields)
        .filter(|(_, fields)| !fields.is_empty())
        .map(|((table, phase), fields)| Draft {
            table: table.clone(),
            phase: phase.clone().filter(|p| !p.is_empty()),
            fields,
            source: SOURCE_MAP,
        })
        .collect()
}

/// A row of `table` with the device's tags, checked by the canonical rules.
fn device_line(
    spec: &DeviceSpec,
    table: String,
    phase: Option<String>,
    fields: Vec<(String, FieldValue)>,
    time: i64,
    source: &str,
) -> Result<ParsedLine, String> {
    let mut tags = vec![(DEVICE_ID.to_string(), spec.device_id.clone())];
    if let Some(site) = &spec.site_id {
        tags.push((SITE_ID.to_string(), site.clone()));
    }
    if let Some(phase) = phase.filter(|p| !p.is_empty()) {
        tags.push((devices::tables::PHASE.to_string(), phase));
    }
    sort_tags(&mut tags).map_err(|e| format!("{table}: {e}"))?;
    check_field_keys(&fields, &tags).map_err(|e| format!("{table}: {e}"))?;
    let mut line = ParsedLine {
        line: 0,
        table,
        row: Row { time, tags, fields },
    };
    apply_canonical(&mut line, source).map_err(|e| format!("{}: {e}", line.table))?;
    Ok(line)
}

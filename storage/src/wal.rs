//! The write-ahead log: where a write becomes durable before it is acknowledged.
//!
//! The log is a directory of segment files named by a growing number. A segment starts
//! with an 8-byte magic and holds records framed as
//!
//! ```text
//! +-----------+-----------+-----------+---------------------------------------+
//! | len: u32  | crc: u32  | seq: u64  | payload: the tables of one write        |
//! +-----------+-----------+-----------+---------------------------------------+
//! payload = count: u32, then per table:
//!           name_len: u32 | name (UTF-8) | ipc_len: u32 | Arrow IPC stream
//! ```
//!
//! little-endian, where `len` is the payload length and `crc` the CRC-32 of `seq` and
//! the payload. Each table's rows are an Arrow IPC stream (schema, dictionaries, one
//! record batch) of the columns the producer already built for the write buffer, so
//! encoding a record is a copy of buffers rather than a walk over rows, and replay
//! hands the batches straight back to the buffer. Segments of the first format
//! (`GLWAL001`, a postcard-encoded `WriteBatch` of rows per record) are still replayed. A crash can leave a torn record at the end of the segment that was being
//! written; replay stops reading that segment at the first record that is short or fails
//! its checksum, and carries on with the next segment. Because a record is only
//! acknowledged after the fsync that follows it, a torn record was never acknowledged.
//! After a restart, writes always go to a new segment, so nothing is ever appended behind
//! a torn tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::types::WriteBatch;

const MAGIC: &[u8; 8] = b"GLWAL002";
/// The first format: postcard-encoded rows. Read, never written.
const MAGIC_V1: &[u8; 8] = b"GLWAL001";
const HEADER_LEN: usize = 16;
/// A record larger than this is taken as corruption rather than allocated.
const MAX_RECORD_LEN: u32 = 1 << 30;

/// One write as replay gives it back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// Columns per table (the current format).
    Columns(Vec<(String, RecordBatch)>),
    /// Rows (segments of the first format).
    Rows(WriteBatch),
}

/// Encodes the tables of one write as a record payload. Producers call this on their
/// own threads, so the WAL writer only copies bytes.
pub(crate) fn encode(tables: &[(String, RecordBatch)]) -> Result<Vec<u8>> {
    let ipc_err = |e: arrow::error::ArrowError| Error::Wal(io::Error::other(e));
    let size: usize = tables
        .iter()
        .map(|(name, b)| name.len() + b.get_array_memory_size() + 1024)
        .sum();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(tables.len())?.to_le_bytes());
    for (name, batch) in tables {
        out.extend_from_slice(&len_u32(name.len())?.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut writer = StreamWriter::try_new(&mut out, &batch.schema()).map_err(ipc_err)?;
        writer.write(batch).map_err(ipc_err)?;
        writer.finish().map_err(ipc_err)?;
        drop(writer);
        let ipc_len = len_u32(out.len() - at - 4)?;
        out[at..at + 4].copy_from_slice(&ipc_len.to_le_bytes());
    }
    if out.len() > MAX_RECORD_LEN as usize {
        return Err(too_large(out.len()));
    }
    Ok(out)
}

/// Decodes a payload written by [`encode`]; `None` when it is not one.
fn decode(payload: &[u8]) -> Option<Vec<(String, RecordBatch)>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn take_u32(rest: &mut &[u8]) -> Option<usize> {
        let b = take(rest, 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut rest = payload;
    let count = take_u32(&mut rest)?;
    let mut tables = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let name_len = take_u32(&mut rest)?;
        let name = std::str::from_utf8(take(&mut rest, name_len)?)
            .ok()?
            .to_owned();
        let ipc_len = take_u32(&mut rest)?;
        let ipc = take(&mut rest, ipc_len)?;
        let reader = StreamReader::try_new(io::Cursor::new(ipc), None).ok()?;
        for batch in reader {
            tables.push((name.clone(), batch.ok()?));
        }
    }
    rest.is_empty().then_some(tables)
}

fn len_u32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| too_large(n))
}

fn too_large(n: usize) -> Error {
    Error::Wal(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("WAL record of {n} bytes is too large"),
    ))
}

/// Path of segment `id` in `dir`.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// Segment ids present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(Error::io("list WAL directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("list WAL directory", dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(id) = stem.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Removes segments with an id up to and including `through`.
pub(crate) fn remove_segments_through(dir: &Path, through: u64) -> Result<usize> {
    let mut removed = 0;
    for id in list_segments(dir)?.into_iter().filter(|id| *id <= through) {
        let path = segment_path(dir, id);
        fs::remove_file(&path).map_err(Error::io("remove WAL segment", &path))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// Appends records to the current segment.
#[derive(Debug)]
pub(crate) struct WalWriter {
    dir: PathBuf,
    segment_id: u64,
    file: File,
    segment_len: u64,
    /// Bytes written since the last fsync.
    unsynced: bool,
    buf: Vec<u8>,
}

impl WalWriter {
    /// Starts a new segment `segment_id` in `dir`.
    pub(crate) fn create(dir: &Path, segment_id: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(Error::io("create WAL directory", dir))?;
        let path = segment_path(dir, segment_id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("create WAL segment", &path))?;
        file.write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(Error::io("write WAL segment header", &path))?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_id,
            file,
            segment_len: MAGIC.len() as u64,
            unsynced: false,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    /// Bytes in the current segment.
    pub(crate) fn segment_len(&self) -> u64 {
        self.segment_len
    }

    /// Frames an encoded batch ([`encode`]) as record `seq` into the pending buffer.
    /// Nothing reaches the file until [`WalWriter::write_pending`].
    pub(crate) fn push_encoded(&mut self, seq: u64, payload: &[u8]) -> Result<()> {
        let len = match u32::try_from(payload.len()) {
            Ok(len) if len <= MAX_RECORD_LEN => len,
            _ => return Err(too_large(payload.len())),
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&seq.to_le_bytes());
        h.update(payload);
        let crc = h.finalize();
        self.buf.reserve(HEADER_LEN + payload.len());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    /// Encodes and frames `tables` as record `seq`; see [`WalWriter::push_encoded`].
    #[cfg(test)]
    pub(crate) fn push(&mut self, seq: u64, tables: &[(String, RecordBatch)]) -> Result<()> {
        self.push_encoded(seq, &encode(tables)?)
    }

    /// Writes every pushed record to the segment (one `write` system call).
    pub(crate) fn write_pending(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.buf);
        if let Err(e) = result {
            self.buf.clear();
            // The file may now end in a partial record: truncate it away so that later
            // records are not hidden behind it at replay.
            let _ = self.file.set_len(self.segment_len);
            return Err(Error::Wal(e));
        }
        self.segment_len += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        Ok(())
    }

    /// Forces what was written to disk.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file.sync_data().map_err(Error::Wal)?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Closes the current segment (after an fsync) and starts the next one. Returns the
    /// id of the closed segment.
    pub(crate) fn rotate(&mut self) -> Result<u64> {
        self.sync()?;
        let closed = self.segment_id;
        *self = Self::create(&self.dir, closed + 1)?;
        Ok(closed)
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ReplayStats {
    /// Segments read.
    pub(crate) segments: usize,
    /// Records handed to the callback.
    pub(crate) records: usize,
    /// Segments whose tail was torn or corrupt (reading stopped there).
    pub(crate) torn_segments: usize,
    /// Highest segment id seen (0 if none).
    pub(crate) last_segment: u64,
    /// Highest record sequence number seen (0 if none).
    pub(crate) last_seq: u64,
}

/// Reads every record of segments with an id greater than `after`, in order.
pub(crate) fn replay(
    dir: &Path,
    after: u64,
    mut apply: impl FnMut(u64, Record),
) -> Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    for id in list_segments(dir)? {
        stats.last_segment = stats.last_segment.max(id);
        if id <= after {
            continue;
        }
        let path = segment_path(dir, id);
        let mut bytes = Vec::new();
        match File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            // A read-only replay racing a running server's snapshot: the segment is
            // in Parquet now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read WAL segment", &path)(e)),
        }
        stats.segments += 1;
        let (records, clean) = decode_segment(&bytes, |seq, batch| {
            stats.last_seq = stats.last_seq.max(seq);
            apply(seq, batch);
        });
        stats.records += records;
        if !clean {
            stats.torn_segments += 1;
            tracing::warn!(
                segment = %path.display(),
                records,
                "WAL segment ends in a torn or corrupt record; replayed the records before it"
            );
        }
    }
    Ok(stats)
}

/// Decodes the records of one segment. Returns how many were decoded and whether the
/// segment ended cleanly.
fn decode_segment(bytes: &[u8], mut apply: impl FnMut(u64, Record)) -> (usize, bool) {
    let v1 = match bytes.get(..MAGIC.len()) {
        Some(m) if m == MAGIC => false,
        Some(m) if m == MAGIC_V1 => true,
        // A segment created but never given its header (crash right after create).
        _ => return (0, bytes.is_empty()),
    };
    let mut pos = MAGIC.len();
    let mut records = 0;
    while pos < bytes.len() {
        let Some(header) = bytes.get(pos..pos + HEADER_LEN) else {
            return (records, false);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let seq_bytes: [u8; 8] = [
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ];
        if len > MAX_RECORD_LEN {
            return (records, false);
        }
        let start = pos + HEADER_LEN;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            return (records, false);
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&seq_bytes);
        h.update(payload);
        if h.finalize() != crc {
            return (records, false);
        }
        let record = if v1 {
            postcard::from_bytes::<WriteBatch>(payload)
                .ok()
                .map(Record::Rows)
        } else {
            decode(payload).map(Record::Columns)
        };
        let Some(record) = record else {
            return (records, false);
        };
        apply(u64::from_le_bytes(seq_bytes), record);
        records += 1;
        pos = start + len as usize;
    }
    (records, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::rows_to_batch;
    use crate::schema::{ColumnDef, ColumnKind, TableSchema};
    use crate::types::{FieldType, FieldValue, Row, TableWrite};

    fn row(n: i64) -> Row {
        Row {
            time: n,
            tags: vec![("device_id".into(), format!("d{n}"))],
            fields: vec![("power_w".into(), FieldValue::F64(n as f64))],
        }
    }

    fn batch(n: i64) -> Record {
        let schema = TableSchema::new().extended([
            ColumnDef {
                name: "device_id".into(),
                kind: ColumnKind::Tag,
            },
            ColumnDef {
                name: "power_w".into(),
                kind: ColumnKind::Field(FieldType::F64),
            },
            ColumnDef {
                name: "status".into(),
                kind: ColumnKind::Field(FieldType::String),
            },
        ]);
        Record::Columns(vec![("meter".into(), rows_to_batch(&schema, &[row(n)]))])
    }

    fn tables(record: &Record) -> &[(String, RecordBatch)] {
        match record {
            Record::Columns(tables) => tables,
            Record::Rows(_) => panic!("expected columns"),
        }
    }

    fn replay_all(dir: &Path) -> (Vec<(u64, Record)>, ReplayStats) {
        let mut got = Vec::new();
        let stats = replay(dir, 0, |seq, b| got.push((seq, b))).unwrap();
        (got, stats)
    }

    #[test]
    fn segments_of_the_first_format_still_replay() {
        let dir = tempfile::tempdir().unwrap();
        let rows = WriteBatch {
            tables: vec![TableWrite {
                table: "meter".into(),
                rows: vec![row(1)],
            }],
        };
        let payload = postcard::to_allocvec(&rows).unwrap();
        let mut h = crc32fast::Hasher::new();
        h.update(&5u64.to_le_bytes());
        h.update(&payload);
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&h.finalize().to_le_bytes());
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&payload);
        fs::write(segment_path(dir.path(), 1), bytes).unwrap();
        let (got, stats) = replay_all(dir.path());
        assert_eq!(got, vec![(5, Record::Rows(rows))]);
        assert_eq!(stats.torn_segments, 0);
    }

    #[test]
    fn records_round_trip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        for i in 1..=3 {
            w.push(i, tables(&batch(i as i64))).unwrap();
        }
        w.write_pending().unwrap();
        assert_eq!(w.rotate().unwrap(), 1);
        w.push(4, tables(&batch(4))).unwrap();
        w.write_pending().unwrap();
        w.sync().unwrap();
        let (got, stats) = replay_all(dir.path());
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], (4, batch(4)));
        assert_eq!(stats.segments, 2);
        assert_eq!(stats.last_seq, 4);
        assert_eq!(stats.torn_segments, 0);
        // Segments up to 1 are skipped when persisted.
        let mut n = 0;
        replay(dir.path(), 1, |_, _| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn every_truncation_of_the_tail_replays_the_complete_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 7).unwrap();
        w.push(1, tables(&batch(1))).unwrap();
        w.push(2, tables(&batch(2))).unwrap();
        w.write_pending().unwrap();
        let full = fs::read(segment_path(dir.path(), 7)).unwrap();
        let first_len = {
            let mut n = 0;
            let mut end = 0;
            decode_segment(&full, |_, _| n += 1);
            // Find the end of record 1: header + payload.
            let len = u32::from_le_bytes(full[8..12].try_into().unwrap()) as usize;
            end += 8 + HEADER_LEN + len;
            assert_eq!(n, 2);
            end
        };
        for cut in first_len..full.len() {
            let (n, clean) = decode_segment(&full[..cut], |_, _| {});
            assert_eq!(n, 1, "cut at {cut}");
            assert_eq!(clean, cut == first_len, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_stops_the_segment_but_not_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        w.push(1, tables(&batch(1))).unwrap();
        w.push(2, tables(&batch(2))).unwrap();
        w.write_pending().unwrap();
        w.rotate().unwrap();
        w.push(3, tables(&batch(3))).unwrap();
        w.write_pending().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let (got, stats) = replay_all(dir.path());
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(stats.torn_segments, 1);
    }

    #[test]
    fn removing_persisted_segments_keeps_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1).unwrap();
        w.rotate().unwrap();
        w.rotate().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), [1, 2, 3]);
        assert_eq!(remove_segments_through(dir.path(), 2).unwrap(), 2);
        assert_eq!(list_segments(dir.path()).unwrap(), [3]);
    }
}

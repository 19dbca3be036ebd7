//! `gridlake import`: Parquet, CSV and line protocol files into a running server.
//!
//! Every file is read as a stream and turned into line protocol, `--batch-rows` lines
//! per `POST /api/v3/write_lp?accept_partial=true`; the client holds one batch. Each line
//! of a request remembers where it came from (the file's line, or the Parquet row), so
//! the server's rejections (listed by line of the request) are reported by place in the
//! file. A request larger than the server's body limit (413) is split in two and sent
//! again. CSV is read with the `csv` crate rather than arrow's reader because it gives
//! each record's line number and lets one bad value reject one row instead of a batch.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use indicatif::ProgressBar;
use ingest::Precision;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use storage::FieldType;

use super::client::{Client, WriteAnswer};
use super::columns::{Plan, Role, encode_batch, parse_time_text};
use super::lp::{self, Line};
use super::{ImportArgs, ImportFormat, TABLE_METADATA_KEY, TransferError, progress_bar};

/// The progress bar: bytes (CSV, line protocol) or rows (Parquet) of the current file.
pub(super) const PROGRESS_TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] [{wide_bar}] {percent:>3}% {msg}";

/// Rejections printed one by one; the rest are only counted.
const SHOWN_REJECTIONS: u64 = 20;

/// Rows of a CSV file read before the types of its plain (untyped) columns are decided.
const INFER_ROWS: usize = 1000;

/// Rows read, stored and rejected.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    read: u64,
    stored: u64,
    rejected: u64,
}

/// Runs `gridlake import`.
pub(crate) fn run(args: ImportArgs) -> Result<(), TransferError> {
    let started = Instant::now();
    let client = Client::new(&args.server)?;
    let mut totals = Counts::default();
    let mut shown = 0;
    for path in &args.files {
        let format = detect(path, args.format)?;
        let bar = progress_bar(0, PROGRESS_TEMPLATE);
        bar.set_message(path.display().to_string());
        let mut batcher = Batcher {
            client: &client,
            precision: Precision::Nanoseconds,
            batch_rows: args.batch_rows as usize,
            body: Vec::new(),
            starts: Vec::new(),
            origins: Vec::new(),
            path,
            unit: "line",
            counts: Counts::default(),
            shown: &mut shown,
            bar: &bar,
        };
        match format {
            ImportFormat::Lp => {
                batcher.precision = args.precision;
                import_lp(path, &mut batcher)?;
            }
            ImportFormat::Csv => import_csv(path, &args, &mut batcher)?,
            ImportFormat::Parquet | ImportFormat::Auto => {
                batcher.unit = "row";
                import_parquet(path, &args, &mut batcher)?;
            }
        }
        batcher.flush()?;
        let counts = batcher.counts;
        bar.finish_and_clear();
        eprintln!(
            "{}: {} rows read, {} stored, {} rejected",
            path.display(),
            counts.read,
            counts.stored,
            counts.rejected
        );
        totals.read += counts.read;
        totals.stored += counts.stored;
        totals.rejected += counts.rejected;
    }
    if totals.rejected > shown {
        eprintln!("({} more rejections not listed)", totals.rejected - shown);
    }
    eprintln!(
        "imported {} file(s): {} rows read, {} stored, {} rejected in {:.1} s",
        args.files.len(),
        totals.read,
        totals.stored,
        totals.rejected,
        started.elapsed().as_secs_f64()
    );
    if totals.rejected > 0 {
        return Err(TransferError::Rejected {
            rejected: totals.rejected,
            read: totals.read,
        });
    }
    Ok(())
}

/// The format of `path`: the flag, else Parquet's magic bytes, else the extension.
fn detect(path: &Path, format: ImportFormat) -> Result<ImportFormat, TransferError> {
    if format != ImportFormat::Auto {
        return Ok(format);
    }
    let mut magic = [0u8; 4];
    let mut file = open(path)?;
    let n = file
        .read(&mut magic)
        .map_err(|source| TransferError::File {
            path: path.to_owned(),
            source,
        })?;
    if n == 4 && &magic == b"PAR1" {
        return Ok(ImportFormat::Parquet);
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(ImportFormat::Csv),
        Some("lp" | "line" | "txt" | "influx") => Ok(ImportFormat::Lp),
        _ => Err(TransferError::Usage(format!(
            "cannot tell the format of {}; give --format csv, parquet or lp",
            path.display()
        ))),
    }
}

fn open(path: &Path) -> Result<File, TransferError> {
    File::open(path).map_err(|source| TransferError::File {
        path: path.to_owned(),
        source,
    })
}

/// The table of a CSV or Parquet file's rows: `--table`, else the one the file names.
fn table_of(path: &Path, flag: Option<&str>, named: Option<&str>) -> Result<String, TransferError> {
    let table = flag.or(named).ok_or_else(|| TransferError::Content {
        path: path.to_owned(),
        reason: "the file names no table for its rows; give --table".to_owned(),
    })?;
    lp::escaped_measurement(table).map_err(|reason| TransferError::Content {
        path: path.to_owned(),
        reason,
    })
}

/// Collects lines into write requests and counts what becomes of them.
struct Batcher<'a> {
    client: &'a Client,
    /// The unit of the lines' timestamps (converted rows are always in nanoseconds).
    precision: Precision,
    batch_rows: usize,
    body: Vec<u8>,
    /// Where each line of `body` starts.
    starts: Vec<usize>,
    /// The file line or row each line of `body` came from.
    origins: Vec<u64>,
    path: &'a Path,
    /// What `origins` count: `line` or `row`.
    unit: &'static str,
    counts: Counts,
    shown: &'a mut u64,
    bar: &'a ProgressBar,
}

impl std::fmt::Debug for Batcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("path", &self.path)
            .field("lines", &self.origins.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Batcher<'_> {
    /// Adds one line (without its newline) from `origin`.
    fn push(&mut self, origin: u64, line: &[u8]) {
        self.counts.read += 1;
        self.starts.push(self.body.len());
        self.body.extend_from_slice(line);
        self.body.push(b'\n');
        self.origins.push(origin);
    }

    /// Counts a row that could not be turned into a line.
    fn reject(&mut self, origin: u64, reason: &str) {
        self.counts.read += 1;
        self.counts.rejected += 1;
        self.show(origin, reason);
    }

    fn show(&mut self, origin: u64, reason: &str) {
        if *self.shown < SHOWN_REJECTIONS {
            *self.shown += 1;
            let message = format!("{} {} {origin}: {reason}", self.path.display(), self.unit);
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }

    /// Sends the batch once it is full.
    fn flush_if_full(&mut self) -> Result<(), TransferError> {
        if self.origins.len() >= self.batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is collected.
    fn flush(&mut self) -> Result<(), TransferError> {
        if self.origins.is_empty() {
            return Ok(());
        }
        let body = Bytes::from(std::mem::take(&mut self.body));
        let starts = std::mem::take(&mut self.starts);
        let origins = std::mem::take(&mut self.origins);
        self.send(body, &starts, &origins)
    }

    fn send(
        &mut self,
        body: Bytes,
        starts: &[usize],
        origins: &[u64],
    ) -> Result<(), TransferError> {
        match self.client.write_lp(body.clone(), self.precision)? {
            WriteAnswer::Written {
                accepted,
                rejected_total,
                rejected,
            } => {
                self.counts.stored += accepted;
                self.counts.rejected += rejected_total;
                for (line, reason) in rejected {
                    let origin = line
                        .checked_sub(1)
                        .and_then(|i| origins.get(i))
                        .copied()
                        .unwrap_or(0);
                    self.show(origin, &reason);
                }
                Ok(())
            }
            WriteAnswer::TooLarge if origins.len() == 1 => {
                self.counts.rejected += 1;
                self.show(
                    origins[0],
                    "the line alone is larger than the server's http.max_body_size",
                );
                Ok(())
            }
            WriteAnswer::TooLarge => {
                let mid = origins.len() / 2;
                let cut = starts[mid];
                let tail: Vec<usize> = starts[mid..].iter().map(|s| s - cut).collect();
                self.send(body.slice(..cut), &starts[..mid], &origins[..mid])?;
                self.send(body.slice(cut..), &tail, &origins[mid..])
            }
        }
    }
}

/// Line protocol: the lines as they are, blank lines and comments left out.
fn import_lp(path: &Path, batcher: &mut Batcher<'_>) -> Result<(), TransferError> {
    let file = open(path)?;
    batcher.bar.set_length(file_len(&file));
    let mut reader = BufReader::new(batcher.bar.wrap_read(file));
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| TransferError::File {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        // The same rule as the server's parser: such lines are not rows.
        match text.iter().find(|&&b| b != b' ' && b != b'\t') {
            None | Some(b'#') => continue,
            Some(_) => {}
        }
        batcher.push(number, text);
        batcher.flush_if_full()?;
    }
}

fn file_len(file: &File) -> u64 {
    file.metadata().map_or(0, |m| m.len())
}

/// Parquet: gridlake's exports by their column roles, other files by name and type.
fn import_parquet(
    path: &Path,
    args: &ImportArgs,
    batcher: &mut Batcher<'_>,
) -> Result<(), TransferError> {
    let parquet_error = |source| TransferError::Parquet {
        what: format!("reading {}", path.display()),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?).map_err(parquet_error)?;
    let metadata = builder.metadata().file_metadata();
    let named = metadata
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == TABLE_METADATA_KEY))
        .and_then(|kv| kv.value.clone());
    let measurement = table_of(path, args.table.as_deref(), named.as_deref())?;
    batcher
        .bar
        .set_length(u64::try_from(metadata.num_rows()).unwrap_or(0));
    let plan =
        Plan::from_arrow(builder.schema(), &args.time_column, &args.tags).map_err(|reason| {
            TransferError::Content {
                path: path.to_owned(),
                reason,
            }
        })?;
    let reader = builder
        .with_batch_size(batcher.batch_rows)
        .build()
        .map_err(parquet_error)?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| TransferError::Arrow {
            what: format!("reading {} after row {row}", path.display()),
            source,
        })?;
        encode_batch(&plan, &batch, &measurement, args.precision, |i, line| {
            let origin = row + i as u64 + 1;
            match line {
                Ok(line) => batcher.push(origin, line.as_bytes()),
                Err(reason) => batcher.reject(origin, &reason),
            }
        })
        .map_err(|reason| TransferError::Content {
            path: path.to_owned(),
            reason,
        })?;
        row += batch.num_rows() as u64;
        batcher.bar.set_position(row);
        batcher.flush_if_full()?;
    }
    Ok(())
}

/// CSV with a header line. A header `name:type` (`tag`, `f64`, `i64`, `u64`, `bool`,
/// `string`) fixes the column's role; the `--time-column` is the time; `--tag` names tags;
/// any other column's type is inferred from the first rows (see [`infer`]).
fn import_csv(
    path: &Path,
    args: &ImportArgs,
    batcher: &mut Batcher<'_>,
) -> Result<(), TransferError> {
    let content = |reason: String| TransferError::Content {
        path: path.to_owned(),
        reason,
    };
    let measurement = table_of(path, args.table.as_deref(), None)?;
    let file = open(path)?;
    batcher.bar.set_length(file_len(&file));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(batcher.bar.wrap_read(file));
    let csv_error = |e: csv::Error| content(format!("CSV: {e}"));
    let header = reader.byte_headers().map_err(csv_error)?.clone();
    let mut names = Vec::with_capacity(header.len());
    let mut marked = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let raw = std::str::from_utf8(raw)
            .map_err(|_| content(format!("header column {}: invalid UTF-8", i + 1)))?;
        // A byte-order mark is not part of the first name.
        let raw = if i == 0 {
            raw.trim_start_matches('\u{feff}')
        } else {
            raw
        };
        let (name, role) = header_role(raw, &args.time_column, &args.tags);
        names.push(name);
        marked.push(role);
    }
    for tag in &args.tags {
        if !names.contains(tag) {
            return Err(content(format!(
                "--tag {tag:?} names no column (columns: {})",
                names.join(", ")
            )));
        }
    }

    // The first rows decide the plain columns' types, then are imported like the rest.
    let mut sample = Vec::new();
    let mut record = csv::ByteRecord::new();
    while sample.len() < INFER_ROWS && reader.read_byte_record(&mut record).map_err(csv_error)? {
        sample.push(record.clone());
    }
    let roles: Vec<(String, Role)> = names
        .iter()
        .zip(&marked)
        .enumerate()
        .map(|(i, (name, role))| {
            let role = role.unwrap_or_else(|| {
                infer(
                    sample
                        .iter()
                        .filter_map(|r| r.get(i))
                        .filter_map(|v| std::str::from_utf8(v).ok()),
                )
            });
            (name.clone(), role)
        })
        .collect();
    if !roles.iter().any(|(_, r)| *r == Role::Time) {
        return Err(content(format!(
            "no time column {:?} (columns: {}); name it with --time-column",
            args.time_column,
            names.join(", ")
        )));
    }
    let plan = Plan::new(&roles).map_err(content)?;

    let mut line = Line::default();
    let mut import = |record: &csv::ByteRecord, batcher: &mut Batcher<'_>| {
        let origin = record.position().map_or(0, |p| p.line());
        match csv_line(&mut line, &plan, record, &measurement, args.precision) {
            Ok(time) => match line.finish(time) {
                Ok(text) => batcher.push(origin, text.as_bytes()),
                Err(reason) => batcher.reject(origin, &reason),
            },
            Err(reason) => batcher.reject(origin, &reason),
        }
    };
    for record in &sample {
        import(record, batcher);
        batcher.flush_if_full()?;
    }
    drop(sample);
    while reader.read_byte_record(&mut record).map_err(csv_error)? {
        import(&record, batcher);
        batcher.flush_if_full()?;
    }
    Ok(())
}

/// The name and role a CSV header cell gives its column (`None`: to be inferred).
fn header_role(raw: &str, time_column: &str, tags: &[String]) -> (String, Option<Role>) {
    if raw == time_column {
        return (raw.to_owned(), Some(Role::Time));
    }
    if let Some((name, kind)) = raw.rsplit_once(':')
        && let Some(role) = Role::from_name(kind)
        && !name.is_empty()
    {
        return (name.to_owned(), Some(role));
    }
    let role = tags.iter().any(|t| t == raw).then_some(Role::Tag);
    (raw.to_owned(), role)
}

/// The type of a plain CSV column from sampled values: f64 when every non-empty value is
/// a finite number (integers too, as in line protocol, where `1` is a float), bool when
/// every one is true or false, string otherwise. A column empty in every sampled row is
/// taken as f64.
fn infer<'a>(values: impl Iterator<Item = &'a str>) -> Role {
    let (mut numbers, mut bools, mut other) = (0, 0, 0);
    for value in values.filter(|v| !v.is_empty()) {
        if value.parse::<f64>().is_ok_and(f64::is_finite) {
            numbers += 1;
        } else if parse_bool(value).is_some() {
            bools += 1;
        } else {
            other += 1;
        }
    }
    match (numbers, bools, other) {
        (_, 0, 0) => Role::Field(FieldType::F64),
        (0, _, 0) => Role::Field(FieldType::Bool),
        _ => Role::Field(FieldType::String),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("t") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value.eq_ignore_ascii_case("f") {
        Some(false)
    } else {
        None
    }
}

/// Builds the line of one CSV record up to its time, which it returns. Empty cells are
/// nulls (the field or tag is left out).
fn csv_line(
    line: &mut Line,
    plan: &Plan,
    record: &csv::ByteRecord,
    measurement: &str,
    precision: Precision,
) -> Result<i64, String> {
    let cell = |index: usize, name: &str| -> Result<&str, String> {
        let raw = record.get(index).unwrap_or_default();
        std::str::from_utf8(raw).map_err(|_| format!("column {name:?}: invalid UTF-8"))
    };
    let time = parse_time_text(cell(plan.time, "time")?, precision)?;
    line.start(measurement);
    for column in &plan.columns {
        let value = cell(column.index, &column.name)?;
        if value.is_empty() {
            continue;
        }
        let key = &column.key;
        let invalid = || {
            format!(
                "column {:?}: {value:?} is not a valid {}",
                column.name,
                column.role.name()
            )
        };
        match column.role {
            Role::Tag => line.tag(key, value)?,
            Role::Field(FieldType::F64) => {
                line.f64(key, value.trim().parse().map_err(|_| invalid())?)?;
            }
            Role::Field(FieldType::I64) => {
                line.i64(key, value.trim().parse().map_err(|_| invalid())?)
            }
            Role::Field(FieldType::U64) => {
                line.u64(key, value.trim().parse().map_err(|_| invalid())?)
            }
            Role::Field(FieldType::Bool) => {
                line.bool(key, parse_bool(value.trim()).ok_or_else(invalid)?);
            }
            Role::Field(FieldType::String) => line.string(key, value)?,
            Role::Time => {}
        }
    }
    Ok(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_marks_give_roles_and_plain_names_are_inferred() {
        let tags = vec!["site".to_owned()];
        assert_eq!(
            header_role("time", "time", &tags),
            ("time".into(), Some(Role::Time))
        );
        assert_eq!(
            header_role("power:f64", "time", &tags),
            ("power".into(), Some(Role::Field(FieldType::F64)))
        );
        assert_eq!(
            header_role("a:b:u64", "time", &tags),
            ("a:b".into(), Some(Role::Field(FieldType::U64)))
        );
        assert_eq!(
            header_role("device:tag", "time", &tags),
            ("device".into(), Some(Role::Tag))
        );
        assert_eq!(
            header_role("site", "time", &tags),
            ("site".into(), Some(Role::Tag))
        );
        // An unknown suffix is part of the name.
        assert_eq!(
            header_role("ratio:x", "time", &tags),
            ("ratio:x".into(), None)
        );
    }

    #[test]
    fn plain_columns_are_f64_bool_or_string() {
        assert_eq!(
            infer(["1", "2.5", "", "-3e5"].into_iter()),
            Role::Field(FieldType::F64)
        );
        assert_eq!(
            infer(["true", "F"].into_iter()),
            Role::Field(FieldType::Bool)
        );
        assert_eq!(
            infer(["1", "x"].into_iter()),
            Role::Field(FieldType::String)
        );
        assert_eq!(
            infer(["1", "true"].into_iter()),
            Role::Field(FieldType::String)
        );
        assert_eq!(infer(["NaN"].into_iter()), Role::Field(FieldType::String));
        assert_eq!(infer(["", ""].into_iter()), Role::Field(FieldType::F64));
    }

    #[test]
    fn csv_rows_become_lines_and_bad_values_name_the_column() {
        let roles = [
            ("time".to_owned(), Role::Time),
            ("site".to_owned(), Role::Tag),
            ("p".to_owned(), Role::Field(FieldType::F64)),
            ("n".to_owned(), Role::Field(FieldType::I64)),
        ];
        let plan = Plan::new(&roles).unwrap();
        let mut line = Line::default();
        let record =
            csv::ByteRecord::from(vec!["2024-01-01T00:00:00.000000001Z", "a b", "1.5", ""]);
        let time = csv_line(&mut line, &plan, &record, "m", Precision::Nanoseconds).unwrap();
        assert_eq!(
            line.finish(time).unwrap(),
            "m,site=a\\ b p=1.5 1704067200000000001"
        );

        let record = csv::ByteRecord::from(vec!["1704067200", "", "", "7"]);
        let time = csv_line(&mut line, &plan, &record, "m", Precision::Seconds).unwrap();
        assert_eq!(line.finish(time).unwrap(), "m n=7i 1704067200000000000");

        let record = csv::ByteRecord::from(vec!["1", "", "abc", ""]);
        let err = csv_line(&mut line, &plan, &record, "m", Precision::Nanoseconds).unwrap_err();
        assert!(err.contains("\"p\"") && err.contains("abc"), "{err}");

        let record = csv::ByteRecord::from(vec!["yesterday", "", "1", ""]);
        let err = csv_line(&mut line, &plan, &record, "m", Precision::Nanoseconds).unwrap_err();
        assert!(err.contains("yesterday"), "{err}");
    }

    #[test]
    fn format_is_detected_by_magic_then_extension() {
        let dir = tempfile::tempdir().unwrap();
        let parquet = dir.path().join("data.bin");
        std::fs::write(&parquet, b"PAR1....PAR1").unwrap();
        assert_eq!(
            detect(&parquet, ImportFormat::Auto).unwrap(),
            ImportFormat::Parquet
        );
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, b"time,x\n").unwrap();
        assert_eq!(detect(&csv, ImportFormat::Auto).unwrap(), ImportFormat::Csv);
        assert_eq!(detect(&csv, ImportFormat::Lp).unwrap(), ImportFormat::Lp);
        let unknown = dir.path().join("data");
        std::fs::write(&unknown, b"m v=1\n").unwrap();
        let err = detect(&unknown, ImportFormat::Auto).unwrap_err();
        assert!(err.to_string().contains("--format"), "{err}");
    }

    #[test]
    fn times_without_an_offset_are_utc() {
        assert_eq!(
            parse_time_text("2024-01-01 00:00:00", Precision::Nanoseconds),
            Ok(1_704_067_200_000_000_000)
        );
    }
}

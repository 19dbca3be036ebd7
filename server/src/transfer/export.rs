//! `gridlake export`: one table's rows from a running server into a Parquet or CSV file.
//!
//! The rows come through `POST /api/v1/sql` as Arrow IPC, one span of time (`--chunk`,
//! a UTC day by default) per query, and each batch is written as it arrives: the client
//! holds one batch and the writer's current row group, the server one chunk's result. A
//! chunk the server cannot answer within its query timeout (408) is split in two and
//! asked again. The columns are fixed by the first query, so a column added while the
//! export runs is not half present.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, SecondsFormat, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use reqwest::StatusCode;

use super::client::Client;
use super::columns::{Plan, Role};
use super::{
    ExportArgs, ExportFormat, TABLE_METADATA_KEY, TransferError, human_bytes, progress_bar,
};

/// The progress bar: time covered so far out of the export's span.
pub(super) const PROGRESS_TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] [{wide_bar}] {percent:>3}% {msg}";

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The CSV writer's format of `time`: RFC 3339 in UTC with all nine fractional digits,
/// so that every nanosecond survives and the column sorts as text.
const CSV_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.9fZ";

/// Runs `gridlake export`.
pub(crate) fn run(args: ExportArgs) -> Result<(), TransferError> {
    let started = Instant::now();
    let format = output_format(args.format, &args.output)?;
    let to_stdout = args.output == Path::new("-");
    if to_stdout && format == ExportFormat::Parquet && std::io::stdout().is_terminal() {
        return Err(TransferError::Usage(
            "refusing to write Parquet to a terminal; give --output FILE or redirect stdout"
                .to_owned(),
        ));
    }
    let client = Client::new(&args.server)?;
    let table = &args.table;
    let what = format!("export of table {table:?}");

    let schema = client
        .sql_arrow(&format!("SELECT * FROM {} LIMIT 0", ident(table)), &what)?
        .schema();
    let plan = Plan::from_arrow(&schema, "time", &[]).map_err(|reason| {
        TransferError::Usage(format!("table {table:?} cannot be exported: {reason}"))
    })?;
    let select = schema
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect::<Vec<_>>()
        .join(", ");
    // Tags after time: a stable order for equal times, and runs of one series that
    // compress well.
    let mut order = vec![ident(schema.field(plan.time).name())];
    order.extend(
        plan.columns
            .iter()
            .filter(|c| c.role == Role::Tag)
            .map(|c| ident(&c.name)),
    );
    let order = order.join(", ");

    let span = span(&client, table, args.from, args.to, &what)?;
    let mut output = Output::open(&args.output)?;
    let sink = output.take_sink();
    let mut writer = match format {
        ExportFormat::Parquet => Writer::parquet(sink, &schema, table)?,
        ExportFormat::Csv => Writer::csv(sink, &schema, &plan),
    };

    let chunk_ns = i64::try_from(args.chunk.as_nanos()).unwrap_or(i64::MAX);
    let mut chunks: VecDeque<(i64, i64)> = span
        .map(|(from, to)| chunks(from, to, chunk_ns))
        .unwrap_or_default()
        .into();
    let total_seconds = span.map_or(0, |(from, to)| seconds(from, to));
    let bar = progress_bar(total_seconds, PROGRESS_TEMPLATE);
    let mut rows = 0u64;
    while let Some((lo, hi)) = chunks.pop_front() {
        let sql = format!(
            "SELECT {select} FROM {} WHERE time >= '{}' AND time < '{}' ORDER BY {order}",
            ident(table),
            rfc3339(lo),
            rfc3339(hi)
        );
        let stream = match client.sql_arrow(&sql, &what) {
            Ok(stream) => stream,
            Err(TransferError::Server { status, .. })
                if status == StatusCode::REQUEST_TIMEOUT && hi - lo >= 2 * NANOS_PER_SECOND =>
            {
                let mid = lo + (hi - lo) / 2;
                chunks.push_front((mid, hi));
                chunks.push_front((lo, mid));
                continue;
            }
            Err(e) => return Err(e),
        };
        for batch in stream {
            let batch = batch.map_err(|source| TransferError::Arrow {
                what: format!("{what}: reading rows from {}", rfc3339(lo)),
                source,
            })?;
            rows += batch.num_rows() as u64;
            writer.write(&batch, &schema)?;
            bar.set_message(format!("{rows} rows"));
        }
        bar.inc(seconds(lo, hi));
    }
    let bytes = writer.finish()?;
    output.commit()?;
    bar.finish_and_clear();

    let range = match span {
        Some((from, to)) => format!("{} to {}", rfc3339(from), rfc3339(to)),
        None => "no rows".to_owned(),
    };
    let format = match format {
        ExportFormat::Parquet => "Parquet",
        ExportFormat::Csv => "CSV",
    };
    eprintln!(
        "exported {rows} rows of table {table} ({range}) to {} as {format}: {} in {:.1} s",
        args.output.display(),
        human_bytes(bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--format`, or the one the output's extension names.
fn output_format(
    format: Option<ExportFormat>,
    output: &Path,
) -> Result<ExportFormat, TransferError> {
    if let Some(format) = format {
        return Ok(format);
    }
    let extension = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("parquet" | "pq") => Ok(ExportFormat::Parquet),
        Some("csv") => Ok(ExportFormat::Csv),
        _ => Err(TransferError::Usage(format!(
            "cannot tell the format from --output {}; give --format parquet or --format csv",
            output.display()
        ))),
    }
}

/// A SQL identifier, quoted: table and column names keep their case and may hold any
/// character.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// RFC 3339 with nanoseconds in UTC, for SQL literals and messages.
fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn seconds(from: i64, to: i64) -> u64 {
    u64::try_from(to.saturating_sub(from) / NANOS_PER_SECOND).unwrap_or(0)
}

/// The span to export, `[from, to)` in nanoseconds: the flags, with the table's first
/// and last row for what they leave open; `None` when there is nothing to export.
fn span(
    client: &Client,
    table: &str,
    from: Option<i64>,
    to: Option<i64>,
    what: &str,
) -> Result<Option<(i64, i64)>, TransferError> {
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        _ => {
            let rows = client.sql_json(
                &format!(
                    "SELECT CAST(min(time) AS BIGINT) AS lo, CAST(max(time) AS BIGINT) AS hi \
                     FROM {}",
                    ident(table)
                ),
                what,
            )?;
            let bound = |key: &str| {
                rows.first()
                    .and_then(|r| r.get(key))
                    .and_then(|v| v.as_i64())
            };
            let (Some(lo), Some(hi)) = (bound("lo"), bound("hi")) else {
                return Ok(None); // no rows at all
            };
            (from.unwrap_or(lo), to.unwrap_or(hi.saturating_add(1)))
        }
    };
    Ok((from < to).then_some((from, to)))
}

/// `[from, to)` cut at the multiples of `chunk` since the epoch (UTC midnights for a day).
fn chunks(from: i64, to: i64, chunk: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut lo = from;
    while lo < to {
        let next = lo.div_euclid(chunk).saturating_add(1).saturating_mul(chunk);
        let hi = next.min(to);
        out.push((lo, hi));
        if hi <= lo {
            break;
        }
        lo = hi;
    }
    out
}

/// A writer that counts the bytes it passes on, for the summary.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Sink = Counting<Box<dyn Write + Send>>;

/// Where the export goes: stdout, or a file written under a temporary name and renamed
/// over `--output` only once complete (removed if the export fails).
struct Output {
    sink: Option<Sink>,
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn open(path: &Path) -> Result<Output, TransferError> {
        if path == Path::new("-") {
            let stdout: Box<dyn Write + Send> = Box::new(BufWriter::new(std::io::stdout()));
            return Ok(Output {
                sink: Some(Counting {
                    inner: stdout,
                    bytes: 0,
                }),
                file: None,
            });
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|source| TransferError::File {
            path: partial.clone(),
            source,
        })?;
        let file: Box<dyn Write + Send> = Box::new(BufWriter::new(file));
        Ok(Output {
            sink: Some(Counting {
                inner: file,
                bytes: 0,
            }),
            file: Some((partial, path.to_owned())),
        })
    }

    fn take_sink(&mut self) -> Sink {
        self.sink.take().unwrap_or(Counting {
            inner: Box::new(std::io::sink()),
            bytes: 0,
        })
    }

    /// Moves the complete file into place.
    fn commit(&mut self) -> Result<(), TransferError> {
        if let Some((partial, path)) = self.file.take() {
            std::fs::rename(&partial, &path).map_err(|source| TransferError::File {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl<W> std::fmt::Debug for Counting<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counting")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some((partial, _)) = self.file.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// The file writer of the chosen format.
enum Writer {
    Parquet(ArrowWriter<Sink>),
    Csv {
        writer: arrow::csv::Writer<Sink>,
        /// The columns renamed `name:type`, time as UTC timestamp, tags as plain text.
        schema: SchemaRef,
        wrote: bool,
    },
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Writer::Parquet(_) => "Writer::Parquet",
            Writer::Csv { .. } => "Writer::Csv",
        })
    }
}

fn parquet_error(source: parquet::errors::ParquetError) -> TransferError {
    TransferError::Parquet {
        what: "writing the Parquet file".to_owned(),
        source,
    }
}

fn csv_error(source: arrow::error::ArrowError) -> TransferError {
    TransferError::Arrow {
        what: "writing the CSV file".to_owned(),
        source,
    }
}

impl Writer {
    /// Parquet with the server's Arrow schema as it is: the column-role metadata and the
    /// dictionary-encoded tags are kept (the Arrow schema travels in the file's
    /// metadata), and the table's name is recorded for `import`.
    fn parquet(sink: Sink, schema: &SchemaRef, table: &str) -> Result<Writer, TransferError> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                TABLE_METADATA_KEY.to_owned(),
                table.to_owned(),
            )]))
            .build();
        ArrowWriter::try_new(sink, Arc::clone(schema), Some(properties))
            .map(Writer::Parquet)
            .map_err(parquet_error)
    }

    /// CSV whose header carries each column's role and type.
    fn csv(sink: Sink, schema: &SchemaRef, plan: &Plan) -> Writer {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[plan.time] = Field::new(
            schema.field(plan.time).name(),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        );
        for column in &plan.columns {
            let data_type = match column.role {
                Role::Tag => DataType::Utf8,
                _ => schema.field(column.index).data_type().clone(),
            };
            fields[column.index] = Field::new(
                format!("{}:{}", column.name, column.role.name()),
                data_type,
                true,
            );
        }
        let writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_timestamp_tz_format(CSV_TIME_FORMAT.to_owned())
            .build(sink);
        Writer::Csv {
            writer,
            schema: Arc::new(Schema::new(fields)),
            wrote: false,
        }
    }

    /// Writes one batch of the query's result; `schema` is the table's, as first read.
    fn write(&mut self, batch: &RecordBatch, schema: &SchemaRef) -> Result<(), TransferError> {
        let shape_error = |source| TransferError::Arrow {
            what: "the server's answer does not have the table's columns".to_owned(),
            source,
        };
        // Under the first query's schema: the same columns, and its metadata on every batch.
        let batch = RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())
            .map_err(shape_error)?;
        match self {
            Writer::Parquet(writer) => writer.write(&batch).map_err(parquet_error),
            Writer::Csv {
                writer,
                schema,
                wrote,
            } => {
                let columns = batch
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(array, field)| {
                        if array.data_type() == field.data_type() {
                            Ok(Arc::clone(array))
                        } else {
                            arrow::compute::cast(array, field.data_type())
                        }
                    })
                    .collect::<Result<Vec<ArrayRef>, _>>()
                    .map_err(csv_error)?;
                let batch = RecordBatch::try_new(Arc::clone(schema), columns).map_err(csv_error)?;
                *wrote = true;
                writer.write(&batch).map_err(csv_error)
            }
        }
    }

    /// Completes the file; the bytes written.
    fn finish(self) -> Result<u64, TransferError> {
        let mut sink = match self {
            Writer::Parquet(writer) => writer.into_inner().map_err(parquet_error)?,
            Writer::Csv {
                mut writer,
                schema,
                wrote,
            } => {
                if !wrote {
                    // The CSV writer writes the header with the first batch.
                    writer
                        .write(&RecordBatch::new_empty(schema))
                        .map_err(csv_error)?;
                }
                writer.into_inner()
            }
        };
        sink.flush().map_err(|source| TransferError::File {
            path: PathBuf::from("(output)"),
            source,
        })?;
        Ok(sink.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * NANOS_PER_SECOND;

    #[test]
    fn chunks_are_cut_at_utc_midnight_and_cover_the_span() {
        let from = 10 * DAY + 5;
        let to = 12 * DAY + 7;
        assert_eq!(
            chunks(from, to, DAY),
            [(from, 11 * DAY), (11 * DAY, 12 * DAY), (12 * DAY, to)]
        );
        assert_eq!(
            chunks(-DAY - 1, -DAY + 1, DAY),
            [(-DAY - 1, -DAY), (-DAY, -DAY + 1)]
        );
        assert_eq!(chunks(5, 5, DAY), []);
        assert_eq!(
            chunks(i64::MAX - 2, i64::MAX, DAY),
            [(i64::MAX - 2, i64::MAX)]
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("meter"), "\"meter\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn format_comes_from_the_flag_or_the_extension() {
        assert_eq!(
            output_format(None, Path::new("x.parquet")).unwrap(),
            ExportFormat::Parquet
        );
        assert_eq!(
            output_format(None, Path::new("x.CSV")).unwrap(),
            ExportFormat::Csv
        );
        assert_eq!(
            output_format(Some(ExportFormat::Csv), Path::new("-")).unwrap(),
            ExportFormat::Csv
        );
        let err = output_format(None, Path::new("-")).unwrap_err();
        assert!(err.to_string().contains("--format"), "{err}");
    }

    #[test]
    fn times_are_nanosecond_rfc3339() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }
}

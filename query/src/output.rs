//! Query results and their encodings for HTTP clients and the CLI.

use std::fmt;
use std::str::FromStr;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// The complete result of a query.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Columns of the result; also valid when there are no rows.
    pub schema: SchemaRef,
    /// The rows, in the order the query produced them.
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    /// Number of rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// How a result is encoded for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A JSON array of objects, one per row, keyed by column name.
    #[default]
    Json,
    /// One JSON object per line (JSON Lines).
    Jsonl,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl OutputFormat {
    /// Every format, in the order they are listed in error messages.
    pub const ALL: [OutputFormat; 5] = [
        OutputFormat::Json,
        OutputFormat::Jsonl,
        OutputFormat::Csv,
        OutputFormat::Arrow,
        OutputFormat::Parquet,
    ];

    /// The name used in `format=` parameters.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Csv => "csv",
            OutputFormat::Arrow => "arrow",
            OutputFormat::Parquet => "parquet",
        }
    }

    /// The HTTP `Content-Type` of the encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Jsonl => "application/jsonl",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `format=` value that names no [`OutputFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?}; expected one of json, jsonl, csv, arrow, parquet")]
pub struct UnknownFormat(pub String);

impl FromStr for OutputFormat {
    type Err = UnknownFormat;

    /// Accepts the names case-insensitively; `ndjson` is taken for `jsonl`.
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "ndjson" {
            return Ok(OutputFormat::Jsonl);
        }
        OutputFormat::ALL
            .into_iter()
            .find(|format| format.name() == lower)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// Encodes a result. Timestamps with a time zone (such as `time`) come out as RFC 3339
/// (`2024-01-01T00:00:00Z`) in JSON and CSV; the binary formats keep Arrow's types.
/// JSON writes nulls explicitly, so every object has every column.
pub fn encode(output: &QueryOutput, format: OutputFormat) -> Result<Vec<u8>> {
    let encode_error = |source: ArrowError| Error::Encode {
        format: format.name(),
        source,
    };
    let batches: Vec<&RecordBatch> = output.batches.iter().collect();
    match format {
        OutputFormat::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(Vec::new());
            writer.write_batches(&batches).map_err(encode_error)?;
            writer.finish().map_err(encode_error)?;
            Ok(writer.into_inner())
        }
        OutputFormat::Jsonl => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
            writer.write_batches(&batches).map_err(encode_error)?;
            writer.finish().map_err(encode_error)?;
            Ok(writer.into_inner())
        }
        OutputFormat::Csv => {
            let mut bytes = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut bytes);
                if batches.is_empty() {
                    // The CSV writer writes the header with the first batch.
                    let empty = RecordBatch::new_empty(output.schema.clone());
                    writer.write(&empty).map_err(encode_error)?;
                }
                for batch in &batches {
                    writer.write(batch).map_err(encode_error)?;
                }
            }
            Ok(bytes)
        }
        OutputFormat::Arrow => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &output.schema)
                .map_err(encode_error)?;
            for batch in &batches {
                writer.write(batch).map_err(encode_error)?;
            }
            writer.finish().map_err(encode_error)?;
            writer.into_inner().map_err(encode_error)
        }
        OutputFormat::Parquet => {
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut writer =
                ArrowWriter::try_new(Vec::new(), output.schema.clone(), Some(properties))?;
            for batch in &batches {
                writer.write(batch)?;
            }
            Ok(writer.into_inner()?)
        }
    }
}

/// Renders a result as a text table, for the CLI.
pub fn pretty(output: &QueryOutput) -> Result<String> {
    arrow::util::pretty::pretty_format_batches_with_schema(output.schema.clone(), &output.batches)
        .map(|table| table.to_string())
        .map_err(|source| Error::Encode {
            format: "table",
            source,
        })
}

//! Runs every `tests/slt/*.slt` file (sqllogictest format) against a [`QueryEngine`] over
//! a store in a temporary directory, one store per file, holding the standard data set
//! ([`Fixture::write_meters`]: table `meter`). The files test the SQL functions, mostly
//! with inline data (VALUES, `unnest(generate_series(...))`); each expected value is
//! computed by hand in a comment beside it.
//!
//! Values are written as text: NULL as `NULL`, an empty string as `(empty)`, floats
//! rounded to 6 decimals and printed without trailing zeros (`1`, `0.958333`),
//! timestamps in RFC 3339 as Arrow prints them (`2024-03-31T01:00:00Z`). Column types
//! are checked strictly: `I` integers, `R` floats, `T` strings, `?` anything else.
//!
//! [`QueryEngine`]: query::QueryEngine

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use query::QueryOutput;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner, strict_column_validator};

use crate::common::Fixture;

/// A store and an engine, as sqllogictest's database.
struct Engine {
    fixture: Fixture,
}

#[async_trait]
impl AsyncDB for Engine {
    type Error = query::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let output = self.fixture.engine.sql(sql).await?;
        if output.schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: output
                .schema
                .fields()
                .iter()
                .map(|field| column_type(field.data_type()))
                .collect(),
            rows: rows(&output),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "gridlake"
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else if matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        DefaultColumnType::Text
    } else {
        DefaultColumnType::Any
    }
}

/// The result as text, row by row.
fn rows(output: &QueryOutput) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in &output.batches {
        let columns: Vec<Vec<String>> = batch
            .columns()
            .iter()
            .map(|column| {
                let formatter = ArrayFormatter::try_new(column.as_ref(), &options)
                    .expect("every column type can be printed");
                (0..column.len())
                    .map(|row| {
                        if column.is_null(row) {
                            return "NULL".to_owned();
                        }
                        match column.data_type() {
                            DataType::Float64 => {
                                float(column.as_primitive::<Float64Type>().value(row))
                            }
                            DataType::Float32 => {
                                float(f64::from(column.as_primitive::<Float32Type>().value(row)))
                            }
                            _ => match formatter.value(row).to_string() {
                                empty if empty.is_empty() => "(empty)".to_owned(),
                                text => text,
                            },
                        }
                    })
                    .collect()
            })
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(columns.iter().map(|column| column[row].clone()).collect());
        }
    }
    rows
}

/// Rounded to 6 decimals, so hand-computed values (1/24 = 0.041667) can be written down.
fn float(value: f64) -> String {
    let rounded = (value * 1e6).round() / 1e6;
    // -0 prints as "-0".
    if rounded == 0.0 {
        "0".to_owned()
    } else {
        rounded.to_string()
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files in tests/slt");
    let mut failures = Vec::new();
    for file in &files {
        let mut runner = Runner::new(|| async {
            let fixture = Fixture::new();
            fixture.write_meters().await;
            Ok(Engine { fixture })
        });
        runner.with_column_validator(strict_column_validator);
        // The error names the file and the line of the failing record.
        if let Err(error) = runner.run_file_async(file).await {
            failures.push(format!("{}: {error}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn floats_print_rounded() {
    assert_eq!(float(1.0), "1");
    assert_eq!(float(23.0 / 24.0), "0.958333");
    assert_eq!(float(-0.0000001), "0");
    assert_eq!(float(2.5), "2.5");
}

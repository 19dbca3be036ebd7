//! The catalog: which Parquet files hold which table's data, the table schemas, and how
//! far the WAL has been persisted.
//!
//! It is one JSON file, replaced atomically (write a temporary file, fsync, rename,
//! fsync the directory), so a crash leaves either the old or the new catalog, never a
//! mix. WAL segments are deleted only after a catalog naming their Parquet files is
//! durable.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::ColumnDef;
use crate::types::TimeRange;
use crate::wal::sync_dir;

const FILE_NAME: &str = "catalog.json";
const FORMAT_VERSION: u32 = 1;

/// One persisted Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetFile {
    /// Unique, growing with every file written: a higher id holds newer writes.
    pub id: u64,
    /// Path relative to the data directory.
    pub path: String,
    /// Earliest `time` in the file (ns).
    pub min_time: i64,
    /// Latest `time` in the file (ns).
    pub max_time: i64,
    /// Rows in the file.
    pub row_count: u64,
    /// File size in bytes.
    pub size_bytes: u64,
}

impl ParquetFile {
    /// The file's time range.
    pub fn time_range(&self) -> TimeRange {
        TimeRange {
            min: self.min_time,
            max: self.max_time,
        }
    }
}

/// A table as the catalog records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TableEntry {
    pub(crate) columns: Vec<ColumnDef>,
    pub(crate) files: Vec<ParquetFile>,
}

/// The catalog's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Catalog {
    pub(crate) version: u32,
    /// Next Parquet file id.
    pub(crate) next_file_id: u64,
    /// Every WAL segment up to and including this id is in Parquet files listed here.
    pub(crate) wal_persisted_through: u64,
    pub(crate) tables: BTreeMap<String, TableEntry>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            next_file_id: 1,
            wal_persisted_through: 0,
            tables: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Path of the catalog in `data_dir`.
    pub(crate) fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Loads the catalog of `data_dir`, or an empty one if there is none yet.
    pub(crate) fn load(data_dir: &Path) -> Result<Self> {
        let path = Self::path(data_dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io("read catalog", &path)(e)),
        };
        let catalog: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::Catalog {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if catalog.version != FORMAT_VERSION {
            return Err(Error::Catalog {
                path,
                reason: format!(
                    "format version {} is not supported (this build reads {FORMAT_VERSION})",
                    catalog.version
                ),
            });
        }
        Ok(catalog)
    }

    /// Replaces the catalog of `data_dir` with `self`, atomically and durably.
    pub(crate) fn save(&self, data_dir: &Path) -> Result<()> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Catalog {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                f.sync_all()
            })
            .map_err(Error::io("write catalog", &tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io("replace catalog", &path))?;
        sync_dir(data_dir)
    }

    /// Number of files and their total size.
    pub(crate) fn file_totals(&self) -> (usize, u64) {
        self.tables
            .values()
            .flat_map(|t| &t.files)
            .fold((0, 0), |(n, b), f| (n + 1, b + f.size_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_is_identity_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Catalog::load(dir.path()).unwrap(), Catalog::default());
        let mut c = Catalog {
            next_file_id: 9,
            wal_persisted_through: 4,
            ..Catalog::default()
        };
        c.tables.insert(
            "meter".into(),
            TableEntry {
                columns: vec![],
                files: vec![ParquetFile {
                    id: 8,
                    path: "tables/meter/2026-11-21/8.parquet".into(),
                    min_time: 1,
                    max_time: 2,
                    row_count: 2,
                    size_bytes: 100,
                }],
            },
        );
        c.save(dir.path()).unwrap();
        assert_eq!(Catalog::load(dir.path()).unwrap(), c);
        assert!(!dir.path().join("catalog.json.tmp").exists());
        assert_eq!(c.file_totals(), (1, 100));
    }

    #[test]
    fn a_damaged_catalog_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Catalog::path(dir.path()), b"{not json").unwrap();
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("catalog.json"), "{err}");
    }
}

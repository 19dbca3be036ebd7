//! The catalog: which Parquet files hold which table's data, the table schemas, and how
//! far the WAL has been persisted.
//!
//! It is one JSON object in the object storage (`catalog.json`), replaced atomically
//! (local: write a temporary file, fsync, rename, fsync the directory; S3: one PUT), so a
//! crash leaves either the old or the new catalog, never a mix. WAL segments are deleted only after a catalog naming their Parquet files is
//! durable.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::objects::ObjectStorage;
use crate::schema::ColumnDef;
use crate::tombstone::Tombstone;
use crate::types::TimeRange;

const FILE_NAME: &str = "catalog.json";
/// Version 2 added tombstones, retention overrides and `deletes_applied`; a version-1
/// catalog reads as one with none of them.
const FORMAT_VERSION: u32 = 2;
const OLDEST_READABLE_VERSION: u32 = 1;

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
    /// Every tombstone with an id up to this one has been applied: the file holds none
    /// of the rows they delete.
    #[serde(default)]
    pub deletes_applied: u64,
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
    /// Deletes not yet applied to every file they concern.
    #[serde(default)]
    pub(crate) tombstones: Vec<Tombstone>,
    /// Next tombstone id (ids start at 1, so `deletes_applied = 0` means none).
    #[serde(default = "first_id")]
    pub(crate) next_tombstone_id: u64,
    /// Retention set through the API, by table: `None` keeps the data forever; a table
    /// not listed takes the configured retention.
    #[serde(default)]
    pub(crate) retention: BTreeMap<String, Option<Ttl>>,
}

fn first_id() -> u64 {
    1
}

/// A time-to-live, written in the catalog as humantime text (`"30days"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ttl(#[serde(with = "humantime_serde")] pub(crate) std::time::Duration);

impl Default for Catalog {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            next_file_id: 1,
            wal_persisted_through: 0,
            tables: BTreeMap::new(),
            tombstones: Vec::new(),
            next_tombstone_id: 1,
            retention: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Where the catalog is, for errors: `file:///data/catalog.json`.
    fn location(objects: &ObjectStorage) -> PathBuf {
        PathBuf::from(format!("{}/{FILE_NAME}", objects.describe()))
    }

    /// Loads the catalog from `objects`, or an empty one if there is none yet.
    pub(crate) fn load(objects: &ObjectStorage) -> Result<Self> {
        let Some(bytes) = objects.get(FILE_NAME)? else {
            return Ok(Self::default());
        };
        let path = Self::location(objects);
        let mut catalog: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::Catalog {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&catalog.version) {
            return Err(Error::Catalog {
                path,
                reason: format!(
                    "format version {} is not supported (this build reads {FORMAT_VERSION})",
                    catalog.version
                ),
            });
        }
        // Saved in the current format from now on.
        catalog.version = FORMAT_VERSION;
        Ok(catalog)
    }

    /// Replaces the catalog in `objects` with `self`, atomically and durably: a crash
    /// leaves the old catalog or the new one (local: temporary file, fsync, rename,
    /// fsync of the directory; S3: a PUT replaces an object whole).
    pub(crate) fn save(&self, objects: &ObjectStorage) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Catalog {
            path: Self::location(objects),
            reason: e.to_string(),
        })?;
        objects.put(FILE_NAME, json.into())
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
    use crate::config::StoreConfig;

    #[test]
    fn save_then_load_is_identity_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStorage::open(dir.path(), &StoreConfig::default()).unwrap();
        assert_eq!(Catalog::load(&objects).unwrap(), Catalog::default());
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
                    deletes_applied: 0,
                }],
            },
        );
        c.save(&objects).unwrap();
        assert_eq!(Catalog::load(&objects).unwrap(), c);
        assert!(!dir.path().join("catalog.json.tmp").exists());
        assert_eq!(c.file_totals(), (1, 100));
    }

    #[test]
    fn a_damaged_catalog_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let objects = ObjectStorage::open(dir.path(), &StoreConfig::default()).unwrap();
        let err = Catalog::load(&objects).unwrap_err().to_string();
        assert!(err.contains("catalog.json"), "{err}");
    }
}

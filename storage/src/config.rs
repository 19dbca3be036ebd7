//! Storage settings, with defaults that suit a small node.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Settings of the store. Every field has a default, so an empty `[storage]` section
/// (or none) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A WAL segment is closed and a new one started when it grows past this size.
    pub wal_segment_size: ByteSize,
    /// Write requests waiting for the WAL writer. When the queue is full, writes are
    /// refused with "busy" (HTTP 503) instead of queueing without bound.
    pub queue_capacity: usize,
    /// At most this many queued write requests share one WAL write and fsync.
    pub max_group_requests: usize,
    /// The write buffer is snapshotted to Parquet when it holds this many rows ...
    pub snapshot_rows: usize,
    /// ... or this many bytes of Arrow data ...
    pub snapshot_size: ByteSize,
    /// ... or when its oldest unpersisted row is this old.
    #[serde(with = "humantime_serde")]
    pub snapshot_age: Duration,
    /// Largest row group in a Parquet file.
    pub parquet_row_group_rows: usize,
    /// ZSTD level for Parquet files (1 fastest, 22 smallest).
    pub parquet_zstd_level: i32,
    /// How often the background compaction looks for work (merging small files,
    /// applying deletes, dropping expired files). Zero turns it off; `compact_now`
    /// still works.
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// Compaction cuts its output files near this size. A file under half of it is
    /// "small" and may be merged again.
    pub compaction_target_size: ByteSize,
    /// A run of this many small files of one partition (table and UTC day) is merged
    /// at once ...
    pub compaction_min_files: usize,
    /// ... and a shorter run (two or more) once its newest file is this old: a
    /// backfilled or finished day ends up in few files.
    #[serde(with = "humantime_serde")]
    pub compaction_delay: Duration,
    /// Time to live by table name, e.g. `meter = "400d"`, `meter_1d = "3650d"`. Rows
    /// older are hidden from queries, refused on write, and their files dropped. A
    /// table not listed keeps its data forever, unless the API set a retention.
    #[serde(with = "retention_serde")]
    pub retention: BTreeMap<String, Duration>,
    /// Where Parquet files and the catalog are kept: `local` (under the data
    /// directory) or `s3`. The WAL stays in the data directory either way.
    pub object_store: ObjectStoreKind,
    /// The bucket, for `object_store = "s3"` (required then).
    pub s3_bucket: String,
    /// Key prefix inside the bucket (`gridlake/site-a`), so several stores can share
    /// one bucket; empty for the bucket's root.
    pub s3_prefix: String,
    /// The bucket's region.
    pub s3_region: String,
    /// Endpoint of an S3-compatible store (`http://minio:9000`); empty for AWS.
    pub s3_endpoint: String,
    /// Access key id. With the key id and the secret both empty, the `AWS_*`
    /// environment variables (or the instance's role) are used.
    pub s3_access_key_id: String,
    /// Secret access key. Prefer `GRIDLAKE_STORAGE_S3_SECRET_ACCESS_KEY` to writing it
    /// in a file.
    pub s3_secret_access_key: String,
    /// Allow a plain `http://` endpoint (a local MinIO or test server).
    pub s3_allow_http: bool,
}

/// Which object storage holds Parquet files and the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreKind {
    /// Files under the data directory.
    #[default]
    Local,
    /// An S3 bucket, or an S3-compatible store.
    S3,
}

/// `retention` as a table of humantime strings.
mod retention_serde {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Ttl(#[serde(with = "humantime_serde")] Duration);

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k, Ttl(*v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        let map = BTreeMap::<String, Ttl>::deserialize(deserializer)?;
        Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            wal_segment_size: ByteSize::mib(64),
            queue_capacity: 1024,
            max_group_requests: 256,
            snapshot_rows: 2_000_000,
            snapshot_size: ByteSize::mib(256),
            snapshot_age: Duration::from_secs(600),
            parquet_row_group_rows: 1024 * 1024,
            parquet_zstd_level: 3,
            compaction_interval: Duration::from_secs(60),
            compaction_target_size: ByteSize::mib(64),
            compaction_min_files: 4,
            compaction_delay: Duration::from_secs(300),
            retention: BTreeMap::new(),
            object_store: ObjectStoreKind::Local,
            s3_bucket: String::new(),
            s3_prefix: String::new(),
            s3_region: "us-east-1".into(),
            s3_endpoint: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_allow_http: false,
        }
    }
}

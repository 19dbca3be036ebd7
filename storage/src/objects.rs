//! Where Parquet files and the catalog live: a directory on local disk (the default) or
//! an S3 bucket (AWS, or anything that speaks its API: MinIO, Ceph, moto).
//!
//! Paths are relative strings such as `catalog.json` or
//! `tables/meter/2026-11-21/00000000000000000007.parquet`, the same on every backend, so
//! the catalog does not care where it is stored. The WAL, the rollup state and the crm
//! database stay on local disk whatever the backend: they are small and fsynced often.
//!
//! Every call blocks. The S3 client is async; its futures run on a small runtime owned
//! by [`ObjectStorage`] and the caller waits on a channel, which is safe from any thread
//! (a plain thread, `spawn_blocking`, even a runtime worker, where `block_on` would
//! panic). Callers in async code use `spawn_blocking`, as for every store call.

use std::collections::HashMap;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use crate::config::{ObjectStoreKind, StoreConfig};
use crate::error::{Error, Result};
use crate::wal::sync_dir;

/// Remote Parquet files are read in blocks of this size, each fetched once with one
/// ranged GET. Parquet's reader asks for every page header and page separately; a GET
/// each would be hundreds of round trips per file. A snapshot file usually fits one
/// block, so it costs one GET (two when the footer is in a second block).
const BLOCK_SIZE: u64 = 4 * 1024 * 1024;

/// Blocks one reader keeps between reads (16 MiB): enough for a footer and the column
/// chunks a forward read is in.
const CACHED_BLOCKS: usize = 4;

/// The object storage of a store: a cheap handle, clones share one backend.
#[derive(Debug, Clone)]
pub(crate) struct ObjectStorage {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    /// Plain files under `root` (the data directory).
    ///
    /// Not object_store's `LocalFileSystem`: it does not fsync, and it renames its
    /// staging file into place before anything is durable, so a power cut could leave a
    /// torn `catalog.json` under the real name. The store's promise (a snapshot's WAL
    /// segments are deleted only once its files and catalog are on disk) needs fsync of
    /// the file and of its directory, done here by hand.
    Local {
        root: PathBuf,
    },
    S3(Arc<S3>),
}

#[derive(Debug)]
struct S3 {
    store: Arc<AmazonS3>,
    bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    runtime: IoRuntime,
}

/// The runtime the S3 client's futures run on.
#[derive(Debug)]
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // The last handle may be dropped inside the server's runtime, where dropping a
        // runtime (which waits for its tasks) panics. Nothing is in flight by then:
        // every call waits for its own future.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl ObjectStorage {
    /// The storage `config` names: the local `data_dir` by default, or an S3 bucket.
    pub(crate) fn open(data_dir: &Path, config: &StoreConfig) -> Result<Self> {
        let backend = match config.object_store {
            ObjectStoreKind::Local => Backend::Local {
                root: data_dir.to_path_buf(),
            },
            ObjectStoreKind::S3 => Backend::S3(Arc::new(S3::open(config)?)),
        };
        Ok(Self {
            backend: Arc::new(backend),
        })
    }

    /// Where the objects are, for logs and errors: `file:///data` or
    /// `s3://bucket/prefix`. Never includes credentials.
    pub(crate) fn describe(&self) -> String {
        match &*self.backend {
            Backend::Local { root } => format!("file://{}", root.display()),
            Backend::S3(s3) if s3.prefix.is_empty() => format!("s3://{}", s3.bucket),
            Backend::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
        }
    }

    /// Stores `bytes` at `path`, replacing what was there. Durable when it returns, and
    /// atomic: a reader (or a restart after a crash) sees the old object or the new
    /// one, never a part. Puts of one path must not race each other.
    pub(crate) fn put(&self, path: &str, bytes: Bytes) -> Result<()> {
        match &*self.backend {
            Backend::Local { root } => put_local(root, path, &bytes),
            // An S3 PUT is atomic and durable once answered.
            Backend::S3(s3) => {
                let store = Arc::clone(&s3.store);
                let key = s3.key(path)?;
                s3.run("put", path, async move {
                    store.put(&key, PutPayload::from(bytes)).await.map(drop)
                })
            }
        }
    }

    /// The whole object at `path`, or `None` when there is none.
    pub(crate) fn get(&self, path: &str) -> Result<Option<Bytes>> {
        match &*self.backend {
            Backend::Local { root } => {
                let full = root.join(path);
                match fs::read(&full) {
                    Ok(b) => Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("read", full)(e)),
                }
            }
            Backend::S3(s3) => {
                let store = Arc::clone(&s3.store);
                let key = s3.key(path)?;
                s3.run("get", path, async move {
                    match store.get(&key).await {
                        Ok(r) => r.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
            }
        }
    }

    /// A Parquet [`ChunkReader`] over the object at `path`, which is `size` bytes long
    /// (from the catalog, which saves asking). Local: the file itself. S3: blocks of
    /// the object fetched with ranged GETs as the reader needs them.
    pub(crate) fn reader(&self, path: &str, size: u64) -> Result<ObjectReader> {
        match &*self.backend {
            Backend::Local { root } => {
                let full = root.join(path);
                let file = File::open(&full).map_err(Error::io("open", &full))?;
                Ok(ObjectReader::File(file))
            }
            Backend::S3(s3) => Ok(ObjectReader::Remote(Arc::new(RemoteObject {
                s3: Arc::clone(s3),
                path: path.to_string(),
                size,
                blocks: Mutex::new(HashMap::new()),
            }))),
        }
    }

    /// Removes the object at `path`. A missing object is not an error: a delete that
    /// is retried after a crash finds nothing.
    pub(crate) fn delete(&self, path: &str) -> Result<()> {
        match &*self.backend {
            Backend::Local { root } => {
                let full = root.join(path);
                match fs::remove_file(&full) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io("delete", full)(e)),
                }
            }
            Backend::S3(s3) => {
                let store = Arc::clone(&s3.store);
                let key = s3.key(path)?;
                s3.run("delete", path, async move {
                    match store.delete(&key).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        other => other,
                    }
                })
            }
        }
    }

    /// Every object under the directory-like `prefix` (`tables`, `tables/meter`), at
    /// any depth, as (path, size) with paths relative to the storage root like the
    /// ones given to [`ObjectStorage::put`]. In no particular order.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let prefix = prefix.trim_matches('/');
        match &*self.backend {
            Backend::Local { root } => list_local(root, prefix),
            Backend::S3(s3) => {
                let store = Arc::clone(&s3.store);
                let key = s3.key(prefix)?;
                let objects = s3.run("list", prefix, async move {
                    store
                        .list(Some(&key))
                        .map_ok(|meta| (meta.location, meta.size))
                        .try_collect::<Vec<_>>()
                        .await
                })?;
                Ok(objects
                    .into_iter()
                    .filter_map(|(location, size)| {
                        let location: &str = location.as_ref();
                        let relative = if s3.prefix.is_empty() {
                            location
                        } else {
                            location.strip_prefix(&s3.prefix)?.strip_prefix('/')?
                        };
                        Some((relative.to_string(), size))
                    })
                    .collect())
            }
        }
    }

    /// Removes the empty directories under `prefix`, bottom up, so that partitions
    /// whose files were all replaced or expired leave nothing behind. Only the local
    /// backend has directories. Call it when nothing writes (at start): a put racing
    /// with it could find its directory gone.
    pub(crate) fn remove_empty_dirs(&self, prefix: &str) -> Result<()> {
        let Backend::Local { root } = &*self.backend else {
            return Ok(());
        };
        fn walk(dir: &Path) -> Result<bool> {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io("list directory", dir)(e)),
            };
            let mut empty = true;
            for entry in entries {
                let entry = entry.map_err(Error::io("list directory", dir))?;
                let is_dir = entry
                    .file_type()
                    .map_err(Error::io("list directory", dir))?
                    .is_dir();
                if !(is_dir && walk(&entry.path())?) {
                    empty = false;
                }
            }
            if empty {
                fs::remove_dir(dir).map_err(Error::io("remove empty directory", dir))?;
            }
            Ok(empty)
        }
        let top = root.join(prefix.trim_matches('/'));
        let entries = match fs::read_dir(&top) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list directory", top)(e)),
        };
        for entry in entries {
            let path = entry.map_err(Error::io("list directory", &top))?.path();
            if path.is_dir() {
                walk(&path)?;
            }
        }
        Ok(())
    }
}

impl S3 {
    fn open(config: &StoreConfig) -> Result<Self> {
        let bucket = config.s3_bucket.trim();
        if bucket.is_empty() {
            return Err(Error::Config {
                key: "storage.s3_bucket",
                reason: "object_store = \"s3\" needs a bucket name".into(),
            });
        }
        let has_key = !config.s3_access_key_id.is_empty();
        let has_secret = !config.s3_secret_access_key.is_empty();
        let mut builder = match (has_key, has_secret) {
            // No keys in the config: the usual AWS_* variables (keys, session token,
            // endpoint, ...), or the instance's role.
            (false, false) => AmazonS3Builder::from_env(),
            (true, true) => AmazonS3Builder::new()
                .with_access_key_id(&config.s3_access_key_id)
                .with_secret_access_key(&config.s3_secret_access_key),
            (true, false) => {
                return Err(Error::Config {
                    key: "storage.s3_secret_access_key",
                    reason: "storage.s3_access_key_id is set, so the secret is needed too".into(),
                });
            }
            (false, true) => {
                return Err(Error::Config {
                    key: "storage.s3_access_key_id",
                    reason: "storage.s3_secret_access_key is set, so the key id is needed too"
                        .into(),
                });
            }
        };
        builder = builder.with_bucket_name(bucket);
        if !config.s3_region.is_empty() {
            builder = builder.with_region(&config.s3_region);
        }
        if !config.s3_endpoint.is_empty() {
            builder = builder.with_endpoint(&config.s3_endpoint);
        }
        if config.s3_allow_http {
            builder = builder.with_allow_http(true);
        }
        // The client retries failed requests with backoff. Its default gives up after
        // three minutes, long enough for a wrong endpoint to look like a hung start; the
        // persister retries a failed snapshot on its own, so 30 seconds is plenty.
        builder = builder.with_retry(object_store::RetryConfig {
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(30),
            ..object_store::RetryConfig::default()
        });
        let store = builder.build().map_err(|source| Error::ObjectStore {
            op: "configure",
            path: format!("s3://{bucket}"),
            source: Box::new(source),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gridlake-objects")
            .enable_all()
            .build()
            .map_err(Error::io(
                "start the object storage runtime",
                "gridlake-objects",
            ))?;
        let s3 = Self {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix: config.s3_prefix.trim_matches('/').to_string(),
            runtime: IoRuntime(Some(runtime)),
        };
        // S3 answers a GET in a missing bucket with 404, which would read as "no catalog
        // yet": an empty store over a typo. One listing at start tells a missing bucket,
        // wrong keys or an unreachable endpoint apart, with the error naming the bucket.
        let store = Arc::clone(&s3.store);
        let key = s3.key("")?;
        s3.run("check the bucket at", "", async move {
            store.list_with_delimiter(Some(&key)).await.map(drop)
        })?;
        Ok(s3)
    }

    /// Fetches `range` of the object at `path`.
    fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let store = Arc::clone(&self.store);
        let key = self.key(path)?;
        self.run(
            "read",
            path,
            async move { store.get_range(&key, range).await },
        )
    }

    /// Where `path` is, for errors.
    fn location(&self, path: &str) -> String {
        let path = path.trim_matches('/');
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, true) => format!("s3://{}", self.bucket),
            (true, false) => format!("s3://{}/{path}", self.bucket),
            (false, true) => format!("s3://{}/{}", self.bucket, self.prefix),
            (false, false) => format!("s3://{}/{}/{path}", self.bucket, self.prefix),
        }
    }

    /// The object key of a relative path.
    fn key(&self, path: &str) -> Result<ObjectPath> {
        let path = path.trim_matches('/');
        let full = match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{path}", self.prefix),
        };
        // `parse`, not `from`: `from` percent-encodes characters such as `%` or `#`,
        // and the key would no longer be the path the catalog names.
        ObjectPath::parse(&full).map_err(|e| Error::ObjectStore {
            op: "name",
            path: format!("s3://{}/{full}", self.bucket),
            source: Box::new(e.into()),
        })
    }

    /// Runs `future` on the storage runtime and waits for it on this thread.
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &str,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as S3");
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        match rx.recv() {
            Ok(result) => result.map_err(|source| Error::ObjectStore {
                op,
                path: self.location(path),
                source: Box::new(source),
            }),
            // The task was dropped without an answer: only a panic in the client does
            // that.
            Err(_) => Err(Error::ObjectStore {
                op,
                path: self.location(path),
                source: Box::new(object_store::Error::Generic {
                    store: "S3",
                    source: "the request task ended without an answer".into(),
                }),
            }),
        }
    }
}

/// Writes `bytes` to `root/path` through a temporary file: write, fsync, rename, fsync
/// the directory. Directories it creates are fsynced into their parents too, or a new
/// partition's directory entry could vanish in a crash with the files in it.
fn put_local(root: &Path, path: &str, bytes: &[u8]) -> Result<()> {
    let full = root.join(path);
    let dir = full.parent().unwrap_or(root).to_path_buf();
    if !dir.is_dir() {
        // Find the first ancestor that exists: everything below it is new.
        let mut missing = Vec::new();
        let mut d = dir.as_path();
        while !d.is_dir() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        for new in missing.iter().rev() {
            if let Some(parent) = new.parent() {
                sync_dir(parent)?;
            }
        }
    }
    let mut tmp_name = full.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = full.with_file_name(tmp_name);
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(Error::io("write", &tmp))?;
    fs::rename(&tmp, &full).map_err(Error::io("rename into place", &full))?;
    sync_dir(&dir)
}

fn list_local(root: &Path, prefix: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(prefix)];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // The prefix names a file, not a directory: it is the only match.
            Err(_) if dir.is_file() => {
                let size = dir.metadata().map_err(Error::io("stat", &dir))?.len();
                out.push((prefix.to_string(), size));
                continue;
            }
            Err(e) => return Err(Error::io("list directory", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Error::io("list directory", &dir))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(Error::io("stat", &path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                let relative: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((relative.join("/"), meta.len()));
            }
        }
    }
    Ok(out)
}

/// A Parquet file in object storage, readable by the parquet crate's synchronous
/// reader ([`ChunkReader`] and [`Length`]).
#[derive(Debug)]
pub(crate) enum ObjectReader {
    /// A local file, read directly.
    File(File),
    /// A remote object, fetched in blocks.
    Remote(Arc<RemoteObject>),
}

/// A remote object and the blocks of it fetched so far.
#[derive(Debug)]
pub(crate) struct RemoteObject {
    s3: Arc<S3>,
    path: String,
    size: u64,
    /// Block index to its bytes: at most [`CACHED_BLOCKS`] besides the ones a read
    /// needs at once, so a compaction streaming 32 inputs does not end up holding each
    /// input whole (a scan reads forward, and a block dropped too early is fetched
    /// again, not lost).
    blocks: Mutex<HashMap<u64, Bytes>>,
}

impl RemoteObject {
    /// The bytes of blocks `first..=last`, fetching the missing ones with one GET.
    fn blocks(&self, first: u64, last: u64) -> Result<Vec<Bytes>> {
        let mut cached = self.blocks.lock();
        if (first..=last).any(|b| !cached.contains_key(&b)) {
            let start = first * BLOCK_SIZE;
            let end = ((last + 1) * BLOCK_SIZE).min(self.size);
            let bytes = self.s3.get_range(&self.path, start..end)?;
            if bytes.len() as u64 != end - start {
                return Err(Error::ObjectStore {
                    op: "read",
                    path: self.s3.location(&self.path),
                    source: Box::new(object_store::Error::Generic {
                        store: "S3",
                        source: format!(
                            "asked for bytes {start}..{end}, got {}: the object is shorter than the catalog says",
                            bytes.len()
                        )
                        .into(),
                    }),
                });
            }
            // Make room first: the blocks furthest behind this read go.
            while cached.len() >= CACHED_BLOCKS {
                let Some(&oldest) = cached.keys().filter(|b| !(first..=last).contains(*b)).min()
                else {
                    break;
                };
                cached.remove(&oldest);
            }
            for b in first..=last {
                let from = ((b - first) * BLOCK_SIZE) as usize;
                let to = (from + BLOCK_SIZE as usize).min(bytes.len());
                cached.entry(b).or_insert_with(|| bytes.slice(from..to));
            }
        }
        Ok((first..=last).map(|b| cached[&b].clone()).collect())
    }

    /// `length` bytes from `start`.
    fn bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let end = start + length as u64;
        if end > self.size {
            return Err(Error::ObjectStore {
                op: "read",
                path: self.s3.location(&self.path),
                source: Box::new(object_store::Error::Generic {
                    store: "S3",
                    source: format!(
                        "bytes {start}..{end} are past the end of the object ({} bytes)",
                        self.size
                    )
                    .into(),
                }),
            });
        }
        if length == 0 {
            return Ok(Bytes::new());
        }
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let blocks = self.blocks(first, last)?;
        let offset = (start - first * BLOCK_SIZE) as usize;
        if let [block] = blocks.as_slice() {
            return Ok(block.slice(offset..offset + length));
        }
        let mut out = Vec::with_capacity(length);
        for block in &blocks {
            out.extend_from_slice(block);
        }
        Ok(Bytes::from(out).slice(offset..offset + length))
    }
}

impl Length for ObjectReader {
    fn len(&self) -> u64 {
        match self {
            ObjectReader::File(f) => f.len(),
            ObjectReader::Remote(r) => r.size,
        }
    }
}

impl ChunkReader for ObjectReader {
    type T = ObjectRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<ObjectRead> {
        match self {
            ObjectReader::File(f) => Ok(ObjectRead::File(f.get_read(start)?)),
            ObjectReader::Remote(r) => Ok(ObjectRead::Remote {
                object: Arc::clone(r),
                position: start,
            }),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            ObjectReader::File(f) => f.get_bytes(start, length),
            ObjectReader::Remote(r) => r
                .bytes(start, length)
                .map_err(|e| ParquetError::External(Box::new(e))),
        }
    }
}

/// A [`Read`] from some offset of an [`ObjectReader`].
#[derive(Debug)]
pub(crate) enum ObjectRead {
    /// A local file.
    File(BufReader<File>),
    /// A remote object, served from its blocks.
    Remote {
        object: Arc<RemoteObject>,
        position: u64,
    },
}

impl Read for ObjectRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ObjectRead::File(f) => f.read(buf),
            ObjectRead::Remote { object, position } => {
                if *position >= object.size || buf.is_empty() {
                    return Ok(0);
                }
                let block = *position / BLOCK_SIZE;
                let bytes = object
                    .blocks(block, block)
                    .map_err(io::Error::other)?
                    .remove(0);
                let offset = (*position - block * BLOCK_SIZE) as usize;
                let n = buf.len().min(bytes.len() - offset);
                buf[..n].copy_from_slice(&bytes[offset..offset + n]);
                *position += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (tempfile::TempDir, ObjectStorage) {
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStorage::open(dir.path(), &StoreConfig::default()).unwrap();
        (dir, objects)
    }

    #[test]
    fn local_put_get_list_delete_round_trip() {
        let (dir, objects) = local();
        assert_eq!(objects.get("catalog.json").unwrap(), None);
        objects
            .put("catalog.json", Bytes::from_static(b"{}"))
            .unwrap();
        objects
            .put("tables/m/2026-01-01/1.parquet", Bytes::from_static(b"abc"))
            .unwrap();
        // A replace is whole, and leaves no temporary file.
        objects
            .put("catalog.json", Bytes::from_static(b"{\"v\":2}"))
            .unwrap();
        assert_eq!(
            objects.get("catalog.json").unwrap().as_deref(),
            Some(&b"{\"v\":2}"[..])
        );
        assert!(!dir.path().join("catalog.json.tmp").exists());
        assert_eq!(
            objects.list("tables").unwrap(),
            [("tables/m/2026-01-01/1.parquet".to_string(), 3)]
        );
        assert_eq!(objects.list("nothing").unwrap(), []);
        let reader = objects.reader("tables/m/2026-01-01/1.parquet", 3).unwrap();
        assert_eq!(reader.len(), 3);
        assert_eq!(&reader.get_bytes(1, 2).unwrap()[..], b"bc");
        objects.delete("tables/m/2026-01-01/1.parquet").unwrap();
        // Deleting what is not there is fine: a retried delete.
        objects.delete("tables/m/2026-01-01/1.parquet").unwrap();
        assert_eq!(objects.list("tables").unwrap(), []);
        objects.remove_empty_dirs("tables").unwrap();
        assert!(!dir.path().join("tables/m").exists());
        assert!(dir.path().join("tables").exists());
        assert_eq!(
            objects.describe(),
            format!("file://{}", dir.path().display())
        );
    }

    #[test]
    fn a_missing_object_is_an_error_naming_it() {
        let (_dir, objects) = local();
        let err = objects.reader("tables/x/1.parquet", 10).unwrap_err();
        assert!(err.to_string().contains("tables/x/1.parquet"), "{err}");
    }

    #[test]
    fn s3_settings_are_checked_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = StoreConfig {
            object_store: ObjectStoreKind::S3,
            ..StoreConfig::default()
        };
        let err = ObjectStorage::open(dir.path(), &s3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.s3_bucket"), "{err}");
        let half = StoreConfig {
            s3_bucket: "b".into(),
            s3_access_key_id: "id".into(),
            ..s3
        };
        let err = ObjectStorage::open(dir.path(), &half)
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.s3_secret_access_key"), "{err}");
    }

    #[test]
    fn s3_keys_are_the_paths_under_the_prefix_unencoded() {
        let s3 = |prefix: &str| S3 {
            store: Arc::new(
                AmazonS3Builder::new()
                    .with_bucket_name("b")
                    .with_access_key_id("k")
                    .with_secret_access_key("s")
                    .build()
                    .unwrap(),
            ),
            bucket: "b".into(),
            prefix: prefix.into(),
            runtime: IoRuntime(None),
        };
        let with = s3("site/a");
        assert_eq!(
            with.key("tables/m%#1/x.parquet").unwrap().as_ref(),
            "site/a/tables/m%#1/x.parquet"
        );
        assert_eq!(with.key("").unwrap().as_ref(), "site/a");
        assert_eq!(with.location("catalog.json"), "s3://b/site/a/catalog.json");
        let root = s3("");
        assert_eq!(root.key("catalog.json").unwrap().as_ref(), "catalog.json");
        assert_eq!(root.location(""), "s3://b");
    }
}

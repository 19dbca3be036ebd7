//! The object storage backends the storage tests run on: files under a temporary data
//! directory, and an S3 bucket on a moto server (the S3 API implemented in Python, run
//! as a real HTTP server on a free port), started once per test binary.
//!
//! A test takes an [`Env`] (a data directory for the WAL and a [`StoreConfig`] pointing
//! at the backend, with a key prefix of its own on S3) and looks at stored objects only
//! through [`Env::list`] and friends, so the same test runs on both backends.
//!
//! Without moto (`python3 -m pip install 'moto[server]==5.2.*'`) the S3 variants are
//! skipped with a message, except where `GRIDLAKE_REQUIRE_PEERS` or `CI=true` is set
//! (scripts/test.sh, CI): there they fail.

// Each test binary (main, lifecycle, compaction) includes this file and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use storage::{ObjectStoreKind, Store, StoreConfig};
use tempfile::TempDir;

/// The bucket every S3 test shares; each test has its own prefix in it.
const BUCKET: &str = "gridlake-test";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Local,
    S3,
}

/// One test's storage: its data directory and config, and a way to look at the objects.
#[derive(Debug)]
pub(crate) struct Env {
    dir: TempDir,
    config: StoreConfig,
    backend: Backend,
}

impl Backend {
    /// A fresh environment on this backend, or `None` when S3 cannot run here (the test
    /// is skipped; see the module docs).
    pub(crate) fn env(self) -> Option<Env> {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let config = match self {
            Backend::Local => StoreConfig::default(),
            Backend::S3 => {
                let endpoint = moto_endpoint()?;
                static NEXT: AtomicU64 = AtomicU64::new(0);
                StoreConfig {
                    object_store: ObjectStoreKind::S3,
                    s3_bucket: BUCKET.into(),
                    s3_prefix: format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
                    s3_endpoint: endpoint,
                    s3_region: "us-east-1".into(),
                    s3_access_key_id: "test".into(),
                    s3_secret_access_key: "test".into(),
                    s3_allow_http: true,
                    ..StoreConfig::default()
                }
            }
        };
        Some(Env {
            dir,
            config,
            backend: self,
        })
    }
}

impl Env {
    /// The backend.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// The data directory (WAL; everything on the local backend).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The default store settings on this backend; change fields with
    /// `StoreConfig { snapshot_rows: 10, ..env.config() }`.
    pub(crate) fn config(&self) -> StoreConfig {
        self.config.clone()
    }

    /// Opens the store with the default settings.
    pub(crate) fn open(&self) -> Store {
        self.open_with(self.config())
    }

    /// Opens the store with `config` (built from [`Env::config`]).
    pub(crate) fn open_with(&self, config: StoreConfig) -> Store {
        Store::open(self.dir(), config).expect("open the store")
    }

    /// Opens the store read-only with the default settings.
    pub(crate) fn open_read_only(&self) -> Store {
        Store::open_read_only(self.dir(), self.config()).expect("open the store read-only")
    }

    /// Every stored object under `prefix` (`tables`, `tables/meter`, `` for all), as
    /// paths relative to the storage root, sorted.
    pub(crate) fn list(&self, prefix: &str) -> Vec<String> {
        let mut out = match self.backend {
            Backend::Local => {
                let mut out = Vec::new();
                walk(self.dir(), &self.dir().join(prefix), &mut out);
                // The WAL is not object storage.
                out.retain(|p| !p.starts_with("wal/"));
                out
            }
            Backend::S3 => {
                let s3 = self.s3();
                let key = self.key(prefix);
                let metas: Vec<_> = RUNTIME
                    .block_on(s3.list(Some(&key)).try_collect())
                    .expect("list the bucket");
                let strip = format!("{}/", self.config.s3_prefix);
                metas
                    .into_iter()
                    .map(|m| {
                        let location: &str = m.location.as_ref();
                        location
                            .strip_prefix(&strip)
                            .expect("listed under the test's prefix")
                            .to_string()
                    })
                    .collect()
            }
        };
        out.sort();
        out
    }

    /// The Parquet files stored, whether or not a catalog names them.
    pub(crate) fn parquet_files(&self) -> Vec<String> {
        let mut files = self.list("tables");
        files.retain(|p| p.ends_with(".parquet"));
        files
    }

    /// Whether an object exists at `path`.
    pub(crate) fn exists(&self, path: &str) -> bool {
        self.read(path).is_some()
    }

    /// The object at `path`, if there is one.
    pub(crate) fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.backend {
            Backend::Local => std::fs::read(self.dir().join(path)).ok(),
            Backend::S3 => {
                let s3 = self.s3();
                let key = self.key(path);
                RUNTIME.block_on(async {
                    match s3.get(&key).await {
                        Ok(r) => Some(r.bytes().await.expect("read an object").to_vec()),
                        Err(object_store::Error::NotFound { .. }) => None,
                        Err(e) => panic!("get {path}: {e}"),
                    }
                })
            }
        }
    }

    /// Stores `bytes` at `path`, behind the store's back (to plant an orphan or damage
    /// a file).
    pub(crate) fn write(&self, path: &str, bytes: Vec<u8>) {
        match self.backend {
            Backend::Local => {
                let full = self.dir().join(path);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(full, bytes).unwrap();
            }
            Backend::S3 => {
                let s3 = self.s3();
                let key = self.key(path);
                RUNTIME
                    .block_on(s3.put(&key, bytes.into()))
                    .expect("put an object");
            }
        }
    }

    fn key(&self, path: &str) -> ObjectPath {
        let path = path.trim_matches('/');
        if path.is_empty() {
            ObjectPath::parse(&self.config.s3_prefix).unwrap()
        } else {
            ObjectPath::parse(format!("{}/{path}", self.config.s3_prefix)).unwrap()
        }
    }

    /// A client of the test bucket of its own, independent of the store's.
    fn s3(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.config.s3_endpoint)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_allow_http(true)
                .build()
                .expect("an S3 client for moto"),
        )
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let relative = p.strip_prefix(root).unwrap();
            out.push(
                relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
}

/// Runs the harness's own S3 requests (the tests themselves are synchronous).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the test S3 client")
});

/// The moto server of this test binary: started at the first S3 test, stopped when the
/// binary exits (it reads its stdin, a pipe from us, and quits when the pipe closes:
/// nothing is left running even if a test panics or the binary is killed).
static MOTO: LazyLock<Mutex<Option<Moto>>> = LazyLock::new(|| Mutex::new(start_moto()));

#[derive(Debug)]
struct Moto {
    endpoint: String,
    /// Kept so that its stdin stays open while the binary runs.
    _child: Child,
}

/// Starts moto on a free port, creates the test bucket, prints the endpoint, then
/// waits for its stdin to close.
const MOTO_SCRIPT: &str = r#"
import os, sys, urllib.request
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
endpoint = f"http://{host}:{port}"
urllib.request.urlopen(urllib.request.Request(f"{endpoint}/BUCKET", method="PUT")).read()
print(endpoint, flush=True)
sys.stdin.read()
os._exit(0)
"#;

fn moto_endpoint() -> Option<String> {
    MOTO.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|m| m.endpoint.clone())
}

fn start_moto() -> Option<Moto> {
    // Its request log goes to a file: a pipe nobody reads would fill up and stall it.
    let log_path = std::env::temp_dir().join(format!("gridlake-moto-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("create the moto log file");
    let child = Command::new("python3")
        .args(["-c", &MOTO_SCRIPT.replace("BUCKET", BUCKET)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn();
    let missing = match child {
        Err(e) => format!("python3 cannot be run: {e}"),
        Ok(mut child) => {
            let mut line = String::new();
            let stdout = child.stdout.take().expect("piped stdout");
            let _ = BufReader::new(stdout).read_line(&mut line);
            if line.starts_with("http://") {
                return Some(Moto {
                    endpoint: line.trim().to_string(),
                    _child: child,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!(
                "the moto S3 server did not start ({}); install it with \
                 `python3 -m pip install 'moto[server]==5.2.*'` or run scripts/test.sh",
                stderr.trim().lines().last().unwrap_or("no output")
            )
        }
    };
    let required = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var_os("GRIDLAKE_REQUIRE_PEERS").is_some();
    assert!(
        !required,
        "S3 tests are required here (CI=true or GRIDLAKE_REQUIRE_PEERS) and cannot run: {missing}"
    );
    eprintln!("SKIPPED (S3): {missing}");
    None
}

/// Generates, for each named test function `fn name(env: &Env)`, a `local::name` and an
/// `s3::name` test.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[test]
                fn $name() {
                    let env = $crate::common::backend::Backend::Local
                        .env()
                        .expect("the local backend always runs");
                    super::$name(&env);
                }
            )*
        }
        mod s3 {
            $(
                #[test]
                fn $name() {
                    if let Some(env) = $crate::common::backend::Backend::S3.env() {
                        super::$name(&env);
                    }
                }
            )*
        }
    };
}

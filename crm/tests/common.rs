//! The test harness: a fresh store per test on SQLite (tempdir file) or PostgreSQL (a new
//! database in one cluster shared by the whole test binary).

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crm::{Crm, CrmConfig, ManualClock};
use sqlx::{Connection, Executor, PgConnection};

/// Start of the test clock: 2026-01-01T00:00:00Z.
pub(crate) const T0: i64 = 1_767_225_600_000;

/// A store under test and the clock it runs on.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) crm: Crm,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) config: CrmConfig,
    pub(crate) data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn open(config: CrmConfig) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let clock = Arc::new(ManualClock::new(T0));
        let crm = Crm::open_with_clock(&config, &data_dir, clock.clone())
            .await
            .expect("open crm");
        Harness {
            crm,
            clock,
            config,
            data_dir,
            _dir: dir,
        }
    }

    /// Opens a second store on the same database (a restart).
    pub(crate) async fn reopen(&self) -> Crm {
        Crm::open_with_clock(&self.config, &self.data_dir, self.clock.clone())
            .await
            .expect("reopen crm")
    }
}

/// A store on a new SQLite file.
pub(crate) async fn sqlite() -> Harness {
    Harness::open(CrmConfig::default()).await
}

/// A store on a new database of the shared PostgreSQL cluster; `None` (after printing
/// SKIPPED) when the server binaries are missing, unless CI requires them.
pub(crate) async fn postgres() -> Option<Harness> {
    let Some(cluster) = cluster() else {
        let required = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var_os("GRIDLAKE_REQUIRE_PEERS").is_some();
        assert!(
            !required,
            "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are required \
             (CI=true or GRIDLAKE_REQUIRE_PEERS is set)"
        );
        // Straight to stderr, past libtest's capture, so a skip shows in a passing run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb)"
        );
        return None;
    };
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("crm_test_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to test cluster");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create test database");
    conn.close().await.ok();
    let config = CrmConfig {
        url: Some(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            cluster.port
        )),
        max_connections: 4,
        ..CrmConfig::default()
    };
    Some(Harness::open(config).await)
}

/// Runs a test body on SQLite and on PostgreSQL: `both!(name)` makes `name::sqlite` and
/// `name::postgres` from `async fn name(h: &Harness)`.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let h = crate::common::sqlite().await;
                super::$name(&h).await;
                h.crm.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(h) = crate::common::postgres().await {
                    super::$name(&h).await;
                    h.crm.close().await;
                }
            }
        }
    )+};
}
pub(crate) use both_backends as both;

#[derive(Debug)]
struct Cluster {
    port: u16,
}

fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster).as_ref()
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    // Highest version: directory names are major versions.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command for a PostgreSQL binary: through `runuser -u postgres` when we are root,
/// since the server refuses to run as root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) {
    let status = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_cluster() -> Option<Cluster> {
    let bin = bin_dir()?;
    let started = Instant::now();
    // Kept past the end of this process: the watchdog below removes it.
    let dir = tempfile::Builder::new()
        .prefix("crm-pg-")
        .tempdir()
        .expect("tempdir")
        .keep();
    if is_root() {
        let mut chown = Command::new("chown");
        chown.arg("-R").arg("postgres:postgres").arg(&dir);
        run(chown, "chown the cluster directory to postgres");
    }
    let data = dir.join("data");
    let mut initdb = pg_command(&bin, "initdb");
    initdb.arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initdb");
    let port = free_port();
    let mut pg_ctl = pg_command(&bin, "pg_ctl");
    pg_ctl
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        ))
        .args(["-w", "-t", "30", "start"]);
    run(pg_ctl, "pg_ctl start");
    // Stop the cluster and remove its files when this test binary exits, however it
    // exits: a detached shell waits for our pid to disappear.
    let stop = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {runas}{pg_ctl} -D {data} -m immediate stop; rm -rf {dir}",
        pid = std::process::id(),
        runas = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    #[expect(
        clippy::zombie_processes,
        reason = "the watchdog must outlive this process, so nobody waits for it"
    )]
    let _watchdog = Command::new("sh")
        .arg("-c")
        .arg(stop)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster watchdog");
    eprintln!(
        "PostgreSQL test cluster on port {port} in {} (started in {:?})",
        dir.display(),
        started.elapsed()
    );
    Some(Cluster { port })
}

//! Opening the store: backend choice, pool, pragmas, migrations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, SqlSafeStr};

use crate::accounts::Accounts;
use crate::clock::{Clock, SystemClock};
use crate::config::CrmConfig;
use crate::devices::Devices;
use crate::error::{Error, Result};
use crate::login_attempts::LoginAttempts;
use crate::sessions::Sessions;
use crate::sites::Sites;
use crate::tokens::ApiTokens;
use crate::users::Users;

/// The migrations, embedded: `(version, description, SQLite file, PostgreSQL file)`.
///
/// Listed by hand rather than found by `sqlx::migrate!`: the macro needs sqlx's `macros`
/// feature, which builds both database drivers a second time for the proc-macro host
/// (about a minute of CPU per clean build). A test checks that every file under
/// `migrations/` is listed here. The checksum is the one `migrate!` would compute.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "device_assignment",
        include_str!("../migrations/sqlite/0002_device_assignment.sql"),
        include_str!("../migrations/postgres/0002_device_assignment.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sqlite, postgres)| {
                let sql = match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Options for a `sqlite:` URL. Like the default file, the file (and its directory) is
/// created if missing: a fresh install pointed at a new path should start, not fail
/// with "unable to open database file". A URL that names a `mode` (`ro`, `rw`,
/// `memory`...) gets exactly that mode.
fn sqlite_options(url: &str) -> Result<AnyConnectOptions> {
    let invalid =
        |e: sqlx::Error| Error::invalid("url", format!("is not a usable SQLite URL: {e}"));
    let mut sqlite: SqliteConnectOptions = url.parse().map_err(invalid)?;
    // sqlx reads the parameters after the first `?` in the same way.
    let has_mode = url.split_once('?').is_some_and(|(_, query)| {
        url::form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "mode")
    });
    if !has_mode {
        sqlite = sqlite.create_if_missing(true);
        if let Some(dir) = sqlite
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    Ok(AnyConnectOptions::from_url(&sqlite.to_url_lossy())?)
}

/// Options for a `postgres://` URL.
fn postgres_options(url: &str) -> Result<AnyConnectOptions> {
    let mut parsed: url::Url = url
        .parse()
        .map_err(|_| Error::invalid("url", "is not a valid URL"))?;
    // `sqlx::Any` sends a NULL to PostgreSQL as a parameter of its own type (not the
    // column's); a statement cached after a NULL then refuses a real value in that
    // place ("incorrect binary data format"). Without the cache each statement is
    // prepared with the types of its own arguments, in the same round trip. Forced: a
    // URL that turns the cache on would bring the failure back.
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "statement-cache-capacity")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("statement-cache-capacity", "0");
    Ok(AnyConnectOptions::from_url(&parsed)?)
}

/// Takes an exclusive lock on `<file>.migrate-lock`, waiting for another process that
/// holds it; released when the returned file is dropped.
async fn lock_file(file: &Path) -> Result<std::fs::File> {
    let mut path = file.as_os_str().to_owned();
    path.push(".migrate-lock");
    let path = PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        lock.lock().map_err(io)?;
        Ok(lock)
    })
    .await
    .map_err(|e| Error::Io {
        path: file.to_owned(),
        source: std::io::Error::other(e),
    })?
}

/// The file name of the default SQLite store inside the data directory.
pub const SQLITE_FILE: &str = "crm.sqlite";

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The side store: a connection pool plus the clock its expiries are measured with.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Crm {
    pool: AnyPool,
    backend: Backend,
    clock: Arc<dyn Clock>,
}

impl Crm {
    /// Opens (creating if needed) the store `config` names, with the wall clock, and runs
    /// pending migrations.
    pub async fn open(config: &CrmConfig, data_dir: &Path) -> Result<Self> {
        Self::open_with_clock(config, data_dir, Arc::new(SystemClock)).await
    }

    /// [`Crm::open`] with a clock the caller controls (tests move it to expire sessions).
    pub async fn open_with_clock(
        config: &CrmConfig,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        // Idempotent (guarded by a `Once` inside sqlx).
        sqlx::any::install_default_drivers();

        // The SQLite file, when there is one: migrations take a lock beside it.
        let mut sqlite_file: Option<PathBuf> = None;
        let (backend, options) = match config.url.as_deref() {
            None => {
                std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
                    path: data_dir.to_owned(),
                    source,
                })?;
                let sqlite = SqliteConnectOptions::new()
                    .filename(data_dir.join(SQLITE_FILE))
                    .create_if_missing(true);
                sqlite_file = Some(data_dir.join(SQLITE_FILE));
                let url = sqlite.to_url_lossy();
                (Backend::Sqlite, AnyConnectOptions::from_url(&url)?)
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                (Backend::Postgres, postgres_options(url)?)
            }
            Some(url) if url.starts_with("sqlite:") => {
                sqlite_file = url
                    .parse::<SqliteConnectOptions>()
                    .ok()
                    .map(|o| o.get_filename().to_owned())
                    .filter(|f| !f.as_os_str().is_empty() && f != Path::new(":memory:"));
                (Backend::Sqlite, sqlite_options(url)?)
            }
            Some(_) => {
                return Err(Error::invalid(
                    "url",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
        };
        // sqlx's migrator locks PostgreSQL (an advisory lock) but not SQLite: two
        // processes opening a new file at once (`gridlake serve` and `gridlake user
        // create`) would both apply migration 1, and one would fail; switching the new
        // file to WAL at the same time fails with "database is locked". A file lock
        // beside the database serialises both; the second finds the file set up.
        let lock = match &sqlite_file {
            Some(file) => Some(lock_file(file).await?),
            None => None,
        };
        // sqlx's SQLite defaults already turn foreign keys on and wait 5 s on a busy
        // database; WAL lets the API read while ingest updates last-seen times.
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // Persistent in the file: set once, every later connection uses WAL.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        migrator(backend)
            .run(&pool)
            .await
            .map_err(|e| Error::Database(e.into()))?;
        drop(lock);
        tracing::info!(?backend, "crm side store open");
        Ok(Self {
            pool,
            backend,
            clock,
        })
    }

    /// Runs the migrations again (a no-op when the schema is current).
    pub async fn migrate(&self) -> Result<()> {
        migrator(self.backend)
            .run(&self.pool)
            .await
            .map_err(|e| Error::Database(e.into()))
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for statements the repositories do not cover (tests, diagnostics).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Users and their passwords.
    pub fn users(&self) -> Users<'_> {
        Users::new(self)
    }

    /// Billing accounts.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts::new(self)
    }

    /// Sites (physical locations).
    pub fn sites(&self) -> Sites<'_> {
        Sites::new(self)
    }

    /// The device registry.
    pub fn devices(&self) -> Devices<'_> {
        Devices::new(self)
    }

    /// Login sessions.
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions::new(self)
    }

    /// API tokens (gateways, analysts, admins).
    pub fn api_tokens(&self) -> ApiTokens<'_> {
        ApiTokens::new(self)
    }

    /// Failed logins, for rate limiting.
    pub fn login_attempts(&self) -> LoginAttempts<'_> {
        LoginAttempts::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Every migration file is embedded, for both backends, in version order.
    #[test]
    fn every_migration_file_is_listed() {
        for backend in ["sqlite", "postgres"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            files.sort();
            let listed: Vec<String> = MIGRATIONS
                .iter()
                .map(|(v, d, _, _)| format!("{v:04}_{d}.sql"))
                .collect();
            assert_eq!(files, listed, "{}", dir.display());
        }
    }
}

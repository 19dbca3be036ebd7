use crm::{Backend, CrmConfig, Error, UnknownDevices};
use sqlx::Row;

use crate::common::{Harness, both};

async fn migrations_apply_twice(h: &Harness) {
    // Again on the open store, then a whole reopen (a restart): both are no-ops.
    h.crm.migrate().await.expect("second migration run");
    let again = h.reopen().await;
    again.migrate().await.expect("third migration run");
    let row = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
        .fetch_one(again.pool())
        .await
        .unwrap();
    let n: i64 = row.try_get("n").unwrap();
    let files = std::fs::read_dir(match again.backend() {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    })
    .unwrap()
    .count();
    assert_eq!(
        n,
        i64::try_from(files).unwrap(),
        "each migration applied once"
    );
    again.close().await;
}

#[tokio::test]
async fn sqlite_file_wal_and_foreign_keys() {
    let h = crate::common::sqlite().await;
    assert_eq!(h.crm.backend(), Backend::Sqlite);
    assert!(h.data_dir.join(crm::SQLITE_FILE).exists());
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(h.crm.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(h.crm.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(fk, 1);
    h.crm.close().await;
}

both!(migrations_apply_twice);

#[tokio::test]
async fn bad_url_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = CrmConfig {
        url: Some("mysql://localhost/crm".into()),
        ..CrmConfig::default()
    };
    match crm::Crm::open(&config, dir.path()).await {
        Err(Error::Validation(errors)) => assert_eq!(errors[0].field, "url"),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn config_defaults_and_unknown_fields() {
    let config: CrmConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, CrmConfig::default());
    assert_eq!(config.unknown_devices, UnknownDevices::Register);
    let config: CrmConfig =
        serde_json::from_str(r#"{"unknown_devices": "reject", "max_connections": 2}"#).unwrap();
    assert_eq!(config.unknown_devices, UnknownDevices::Reject);
    assert!(serde_json::from_str::<CrmConfig>(r#"{"urll": "x"}"#).is_err());
}

#[tokio::test]
async fn a_sqlite_url_to_a_missing_file_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new").join("side.sqlite");
    let config = CrmConfig {
        url: Some(format!("sqlite://{}", file.display())),
        ..CrmConfig::default()
    };
    let crm = crm::Crm::open(&config, &dir.path().join("unused"))
        .await
        .expect("a missing file is created");
    assert_eq!(crm.backend(), Backend::Sqlite);
    crm.close().await;
    assert!(file.exists());
    assert!(
        !dir.path().join("unused").exists(),
        "the data dir is not used"
    );
    // And opened again, migrations already applied.
    let crm = crm::Crm::open(&config, dir.path()).await.expect("reopen");
    crm.close().await;

    // A mode in the URL is kept: `rw` does not create.
    let missing = dir.path().join("other.sqlite");
    let config = CrmConfig {
        url: Some(format!("sqlite://{}?mode=rw", missing.display())),
        ..CrmConfig::default()
    };
    assert!(crm::Crm::open(&config, dir.path()).await.is_err());
    assert!(!missing.exists());
}

#[test]
fn config_last_seen_interval_is_humantime_and_round_trips() {
    let config: CrmConfig = serde_json::from_str(r#"{"last_seen_interval": "250ms"}"#).unwrap();
    assert_eq!(
        config.last_seen_interval,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        CrmConfig::default().last_seen_interval,
        std::time::Duration::from_secs(5)
    );
    let config = CrmConfig {
        url: Some("postgres://crm:s3cret@db/crm".into()),
        ..config
    };
    // Serialised in full (the effective config must load back), password included.
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains("250ms") && text.contains("s3cret"), "{text}");
    assert_eq!(serde_json::from_str::<CrmConfig>(&text).unwrap(), config);
    // Debug, which reaches logs, hides it.
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_new_file_all_succeed() {
    // `gridlake serve` and `gridlake user create` starting on a fresh data directory at
    // once: both migrate the new file; neither may fail.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = dir.path().to_owned();
                tokio::spawn(async move { crm::Crm::open(&CrmConfig::default(), &path).await })
            })
            .collect();
        for open in opens {
            let crm = open
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            crm.close().await;
        }
    }
}

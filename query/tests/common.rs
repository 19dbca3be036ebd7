//! One place for the fixtures: a store in a tempdir, an engine over it, rows to write.

use std::path::Path;
use std::time::Duration;

use query::{OutputFormat, QueryConfig, QueryEngine, encode};
use serde_json::Value;
use storage::{FieldValue, ParsedLine, Row, Store, StoreConfig};
use tempfile::TempDir;

/// 2024-01-01T00:00:00Z in nanoseconds.
pub(crate) const JAN1: i64 = 1_704_067_200_000_000_000;
/// One minute in nanoseconds.
pub(crate) const MINUTE: i64 = 60_000_000_000;

/// A store in a temporary directory and an engine over it.
pub(crate) struct Fixture {
    pub(crate) store: Store,
    pub(crate) engine: QueryEngine,
    /// None when the fixture opened a directory it does not own.
    _dir: Option<TempDir>,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        Self::with_config(QueryConfig::default())
    }

    pub(crate) fn with_config(config: QueryConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fixture = Self::open(dir.path(), config);
        fixture._dir = Some(dir);
        fixture
    }

    /// A store in `dir` (opened as a restarted server would) and an engine over it.
    pub(crate) fn open(dir: &Path, config: QueryConfig) -> Self {
        let store = Store::open(dir, StoreConfig::default()).expect("open store");
        let engine = QueryEngine::new(store.clone(), config).expect("engine");
        Self {
            store,
            engine,
            _dir: None,
        }
    }

    /// Writes lines the way the HTTP layer does; every line must be accepted.
    pub(crate) async fn write(&self, lines: Vec<ParsedLine>) {
        let (batch, errors) = self.store.validate(lines);
        assert!(errors.is_empty(), "rejected: {errors:?}");
        self.store
            .submit(batch, true)
            .expect("submit")
            .wait()
            .await
            .expect("durable");
    }

    /// Writes the standard data set: table `meter`, sites `a` and `b`, one device
    /// each, one row per minute from 00:00 to 00:04 with power = minute (+ 10 for b)
    /// and energy = 100 * minute.
    pub(crate) async fn write_meters(&self) {
        let mut lines = Vec::new();
        for (site, device, offset) in [("a", "m1", 0.0), ("b", "m2", 10.0)] {
            for minute in 0..5 {
                lines.push(line(
                    "meter",
                    JAN1 + minute * MINUTE,
                    &[("device", device), ("site", site)],
                    vec![
                        ("power", FieldValue::F64(minute as f64 + offset)),
                        ("energy", FieldValue::I64(100 * minute)),
                    ],
                ));
            }
        }
        self.write(lines).await;
    }

    /// Runs `sql` and returns its rows as JSON objects.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Value> {
        let output = self
            .engine
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let json = encode(&output, OutputFormat::Json).expect("encode json");
        match serde_json::from_slice(&json).expect("valid JSON") {
            Value::Array(rows) => rows,
            other => panic!("not an array: {other}"),
        }
    }

    /// Runs `sql` and returns the number of rows.
    pub(crate) async fn count(&self, sql: &str) -> usize {
        self.engine
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .num_rows()
    }
}

/// A parsed line; tags must be given sorted by key.
pub(crate) fn line(
    table: &str,
    time: i64,
    tags: &[(&str, &str)],
    fields: Vec<(&str, FieldValue)>,
) -> ParsedLine {
    ParsedLine {
        line: 1,
        table: table.to_owned(),
        row: Row {
            time,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        },
    }
}

/// A config with a short timeout, for tests that expect one.
pub(crate) fn with_timeout(timeout: Duration) -> QueryConfig {
    QueryConfig {
        timeout,
        ..QueryConfig::default()
    }
}

//! SQL through `query::QueryEngine` as the HTTP API runs it, over meter data persisted
//! to Parquet: rows of the table per second for the three query shapes users run most.
//!
//! - `latest_per_device`: the last reading time and power of every meter, a fleet
//!   dashboard's "current state" (`max(time)`, `last_value(... ORDER BY time)`,
//!   `GROUP BY device_id`).
//! - `device_series_15min`: one meter's power in 15-minute buckets, a device page's
//!   chart (`date_bin`, `WHERE device_id = ...`, `GROUP BY 1 ORDER BY 1`).
//! - `site_rollup`: average and peak power per site, an analyst's scan
//!   (`GROUP BY site_id`).
//!
//! The table holds 1,000,000 rows: 1,000 meters at 10 sites, one reading every 10 s
//! for 1,000 readings (2 h 46 min of one day), loaded once per process with
//! `sync = false` and persisted, so the queries read one Parquet file and an empty
//! write buffer. No query filters on time, so each reads every row of the columns it
//! needs; the throughput is those rows, not the rows returned.
//!
//! Debug builds (`cargo test --all-targets` runs each bench once) load 100 meters × 100
//! readings instead, so that run stays short; figures come from `cargo bench`, which
//! builds in release.
//!
//! Run with `cargo bench -p benches --bench queries` (release profile).

mod meter;

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use meter::{Fleet, SECOND_NS, START_NS, TABLE};
use query::{QueryConfig, QueryEngine};
use storage::{Store, StoreConfig};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const FLEET: Fleet = Fleet {
    devices: if cfg!(debug_assertions) { 100 } else { 1_000 },
    sites: 10,
};
const READINGS: usize = if cfg!(debug_assertions) { 100 } else { 1_000 };
const INTERVAL_NS: i64 = 10 * SECOND_NS;
const BUCKET_NS: i64 = 15 * 60 * SECOND_NS;

/// The store with the data persisted, and the engine over it.
struct Fixture {
    store: Store,
    engine: QueryEngine,
    /// The caller's runtime: `QueryEngine::sql` runs the plan on the engine's own
    /// threads and its timeout on this one.
    runtime: Runtime,
    /// Removed when the fixture is dropped; declared last so it is dropped last.
    _dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new().expect("create a scratch directory");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open the store");
        meter::load(&store, FLEET, START_NS, INTERVAL_NS, READINGS);
        store.persist_now().expect("persist");
        assert_eq!(store.stats().buffer_rows, 0);
        let engine =
            QueryEngine::new(store.clone(), QueryConfig::default()).expect("start the engine");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("start a runtime");
        Fixture {
            store,
            engine,
            runtime,
            _dir: dir,
        }
    }

    /// Runs `sql` and returns the number of rows it produced.
    fn run(&self, sql: &str) -> usize {
        self.runtime
            .block_on(self.engine.sql(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .num_rows()
    }
}

fn bench_queries(c: &mut Criterion) {
    let fixture = Fixture::new();
    let rows = FLEET.rows(READINGS);
    let span_ns = (READINGS as i64 - 1) * INTERVAL_NS;
    let queries = [
        (
            "latest_per_device",
            format!(
                "SELECT device_id, max(time) AS time, last_value(power_w ORDER BY time) AS power_w \
                 FROM {TABLE} GROUP BY device_id"
            ),
            FLEET.devices,
        ),
        (
            "device_series_15min",
            format!(
                "SELECT date_bin(INTERVAL '15 minutes', time) AS bucket, \
                 avg(power_w) AS avg_power_w, max(power_w) AS max_power_w \
                 FROM {TABLE} WHERE device_id = 'meter0000042' GROUP BY 1 ORDER BY 1"
            ),
            // The data starts on a bucket boundary.
            (span_ns / BUCKET_NS + 1) as usize,
        ),
        (
            "site_rollup",
            format!(
                "SELECT site_id, avg(power_w) AS avg_power_w, max(power_w) AS max_power_w \
                 FROM {TABLE} GROUP BY site_id"
            ),
            FLEET.sites,
        ),
    ];
    // Guard: every query answers what it should, so no figure measures an error.
    for (name, sql, expected) in &queries {
        assert_eq!(fixture.run(sql), *expected, "{name}");
    }

    let mut group = c.benchmark_group("queries");
    group.throughput(Throughput::Elements(rows as u64));
    // A query over a million rows takes a good fraction of a second; flat sampling
    // needs 10 runs rather than the 55 that linear sampling asks for at 10 samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, sql, _) in &queries {
        group.bench_function(*name, |b| b.iter(|| fixture.run(sql)));
    }
    group.finish();
    fixture.store.shutdown().expect("shut the store down");
}

criterion_group!(benches, bench_queries);
criterion_main!(benches);

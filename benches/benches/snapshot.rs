//! Snapshot of the write buffer to Parquet: rows per second through
//! `Store::persist_now`, which moves the buffer into a chunk, writes one Parquet file
//! per table and UTC day (deduplicated, sorted by series then time, ZSTD), records the
//! files in the catalog, deletes the WAL segments they came from, and returns when all
//! of that is done.
//!
//! Every iteration snapshots 200,000 fresh rows: 10,000 meters at 100 sites, 20
//! readings 10 s apart (2 tags, 5 float fields), loaded as 20 requests of one reading
//! per meter with `sync = false` before the clock starts. Each iteration's readings
//! follow the previous ones, so deduplication removes nothing. The store (default
//! config, scratch directory) stays open; its size and age triggers do not fire while
//! a load takes well under their limits.
//!
//! Debug builds (`cargo test --all-targets` runs each bench once) load 1,000 meters
//! instead, so that run stays short; figures come from `cargo bench`, which builds in
//! release.
//!
//! Run with `cargo bench -p benches --bench snapshot` (release profile).

mod meter;

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use meter::{Fleet, SECOND_NS, START_NS, TABLE};
use storage::{Store, StoreConfig};
use tempfile::TempDir;

const FLEET: Fleet = Fleet {
    devices: if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    },
    sites: 100,
};
const READINGS: usize = 20;
const INTERVAL_NS: i64 = 10 * SECOND_NS;

fn bench_snapshot(c: &mut Criterion) {
    let dir = TempDir::new().expect("create a scratch directory");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open the store");
    let rows = FLEET.rows(READINGS);
    // Where the next load starts, so that no two loads share a point.
    let mut next_start = START_NS;
    let mut load_next = |store: &Store| {
        meter::load(store, FLEET, next_start, INTERVAL_NS, READINGS);
        next_start += READINGS as i64 * INTERVAL_NS;
    };

    // Guard: one snapshot must put every row in Parquet and leave the buffer empty.
    load_next(&store);
    store.persist_now().expect("persist");
    let persisted: u64 = store.parquet_files(TABLE).iter().map(|f| f.row_count).sum();
    assert_eq!(persisted, rows as u64);
    assert_eq!(store.stats().buffer_rows, 0);

    let mut group = c.benchmark_group("snapshot");
    group.throughput(Throughput::Elements(rows as u64));
    // An iteration takes a good fraction of a second; flat sampling needs 10 of them
    // rather than the 55 that linear sampling asks for at 10 samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function(format!("persist_{}k_rows", rows / 1_000), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                load_next(&store);
                let started = Instant::now();
                store.persist_now().expect("persist");
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.finish();
    store.shutdown().expect("shut the store down");
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);

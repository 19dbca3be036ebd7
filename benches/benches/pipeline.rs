//! The write path inside the store, end to end: rows per second for one 10,000-line
//! request, measured in four nested stages so each stage's cost is the difference to
//! the one before.
//!
//! - `parse`: `ingest::parse_line_protocol`.
//! - `parse_validate`: plus `Store::validate` against the table schema.
//! - `commit_no_sync`: plus `Store::submit(batch, false)` and waiting for the receipt:
//!   WAL append and write buffer (Arrow), no fsync.
//! - `commit_sync`: the same with `sync = true`: one fsync per request, which is what
//!   an HTTP write without `no_sync` waits for.
//!
//! The request is one reading of 10,000 meters at 100 sites (the load tool's default
//! batch). The store stays open across iterations in a scratch directory; every
//! iteration of the committing stages writes a new second of readings, so deduplication
//! never hides rows. Snapshots to Parquet are kept out of the timed part: the size and
//! age triggers are off and the buffer is persisted between samples instead, so the
//! figures are the commit path alone (`snapshot` measures the other part).
//!
//! Run with `cargo bench -p benches --bench pipeline` (release profile).

mod meter;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::{Precision, parse_line_protocol};
use meter::{Fleet, SECOND_NS, START_NS};
use storage::{Store, StoreConfig};
use tempfile::TempDir;

const FLEET: Fleet = Fleet {
    devices: 10_000,
    sites: 100,
};

fn bench_pipeline(c: &mut Criterion) {
    let dir = TempDir::new().expect("create a scratch directory");
    let config = StoreConfig {
        snapshot_rows: usize::MAX,
        snapshot_age: Duration::from_secs(24 * 3600),
        // `snapshot_size` stays: a guard on memory should a sample run long.
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("open the store");
    let lines = FLEET.rows(1);
    let body = FLEET.body(START_NS, SECOND_NS, 1);
    // Guard against benchmarking the error path; this also creates the table, so
    // every measured validation takes the schema's fast path, as a running server does.
    meter::validated(&store, &body);

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(lines as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    group.bench_function("parse", |b| {
        b.iter(|| parse_line_protocol(black_box(body.as_bytes()), Precision::Nanoseconds, 0))
    });
    group.bench_function("parse_validate", |b| {
        b.iter(|| {
            let (lines, _) =
                parse_line_protocol(black_box(body.as_bytes()), Precision::Nanoseconds, 0);
            store.validate(lines)
        })
    });

    // The next second of readings; shared by both committing stages so that no
    // iteration ever repeats a point.
    let mut next_second = 1;
    for (name, sync) in [("commit_no_sync", false), ("commit_sync", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let body = FLEET.body(START_NS + next_second * SECOND_NS, SECOND_NS, 1);
                    next_second += 1;
                    let started = Instant::now();
                    let (lines, _) =
                        parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 0);
                    let (batch, errors) = store.validate(lines);
                    store
                        .submit(batch, sync)
                        .expect("the queue has room")
                        .wait_blocking()
                        .expect("the write commits");
                    elapsed += started.elapsed();
                    assert!(errors.is_empty(), "{errors:?}");
                }
                store.persist_now().expect("persist between samples");
                elapsed
            })
        });
    }
    group.finish();
    store.shutdown().expect("shut the store down");
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);

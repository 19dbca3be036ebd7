//! The last-value cache (`query::LastValues`): what it adds to every committed write on
//! the WAL writer thread, and what a snapshot of every series costs.
//!
//! - `apply_known_series`: one request of 10,000 meter rows (one reading of each of
//!   10,000 meters: 2 tags, 5 float fields) folded into a cache that already holds
//!   those series: the steady state, rows/s.
//! - `apply_new_series`: the same batch into an empty cache: every row makes a series.
//! - `snapshot_all`: the Arrow snapshot of the 10,000 series (series/s).
//!
//! The batches are the ones the store hands its observers, captured from a real write.
//! Debug builds (`cargo test --all-targets` runs each bench once) use 1,000 meters.
//!
//! Run with `cargo bench -p benches --bench latest` (release profile).

mod meter;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meter::{Fleet, SECOND_NS, START_NS, TABLE};
use query::{LastValues, LatestFilter};
use storage::{Store, StoreConfig, WriteObserver};

const FLEET: Fleet = Fleet {
    devices: if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    },
    sites: 100,
};

/// Keeps the batches the store hands its observers.
#[derive(Debug, Default)]
struct Capture(Mutex<Vec<RecordBatch>>);

impl WriteObserver for Capture {
    fn written(&self, _table: &str, batch: &RecordBatch) {
        self.0.lock().expect("not poisoned").push(batch.clone());
    }
}

/// One request's batch of one reading per meter, as the WAL writer sees it.
fn batch() -> RecordBatch {
    let dir = tempfile::tempdir().expect("create a scratch directory");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open the store");
    let capture = Arc::new(Capture::default());
    store.observe(Arc::clone(&capture) as Arc<dyn WriteObserver>);
    meter::load(&store, FLEET, START_NS, 10 * SECOND_NS, 1);
    store.shutdown().expect("shut the store down");
    let mut batches = capture.0.lock().expect("not poisoned");
    assert_eq!(batches.len(), 1, "one request, one table");
    batches.pop().expect("one batch")
}

fn bench_latest(c: &mut Criterion) {
    let batch = batch();
    let rows = batch.num_rows() as u64;
    let warm = LastValues::new();
    warm.apply(TABLE, &batch);
    assert_eq!(warm.series(TABLE), FLEET.devices);

    let mut group = c.benchmark_group("latest");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(rows));
    group.bench_function("apply_known_series", |b| {
        b.iter(|| warm.apply(TABLE, &batch));
    });
    group.bench_function("apply_new_series", |b| {
        b.iter_batched(
            LastValues::new,
            |cold| {
                cold.apply(TABLE, &batch);
                cold
            },
            BatchSize::SmallInput,
        );
    });
    let schema = batch.schema();
    group.bench_function("snapshot_all", |b| {
        b.iter(|| {
            warm.snapshot(TABLE, &schema, &LatestFilter::all())
                .expect("snapshot")
                .expect("table cached")
                .num_rows()
        });
    });
    group.finish();
}

criterion_group!(benches, bench_latest);
criterion_main!(benches);

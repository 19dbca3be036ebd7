//! Group commit: durable rows per second when 1, 4 or 16 clients write at once, each
//! sending small requests (100 rows) with `sync = true` and waiting for every
//! acknowledgement before it sends the next request.
//!
//! An fsync costs about the same for one request as for many. The WAL writer puts every
//! request queued behind the one it is committing into the same WAL write and fsync, so
//! one submitter is bound by fsync latency while more submitters share each fsync and
//! throughput grows with their number. If it stays flat, group commit is broken.
//!
//! Each submitter thread owns 100 meters; each of its requests carries one reading of
//! each at a second no earlier request used, so deduplication never hides rows. The
//! requests are built before the clock starts (validated once, since only the time
//! changes); what is timed is submit → WAL append → fsync → write buffer → receipt. The
//! store (default config, scratch directory) persists its buffer between samples, which
//! keeps memory and WAL bounded and out of the timing.
//!
//! Run with `cargo bench -p benches --bench group_commit` (release profile).

mod meter;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meter::{Fleet, SECOND_NS, START_NS, TABLE};
use storage::{Row, Store, StoreConfig, TableWrite, WriteBatch};
use tempfile::TempDir;

/// Rows in one request: a small gateway or one MQTT batch.
const ROWS_PER_REQUEST: usize = 100;

/// Concurrent submitters, each a thread with one request in flight.
const SUBMITTERS: [usize; 3] = [1, 4, 16];

/// A request of `rows` (already validated) moved to `time`.
fn request(rows: &[Row], time: i64) -> WriteBatch {
    let rows = rows
        .iter()
        .map(|row| Row {
            time,
            ..row.clone()
        })
        .collect();
    WriteBatch {
        tables: vec![TableWrite {
            table: TABLE.to_string(),
            rows,
        }],
    }
}

fn bench_group_commit(c: &mut Criterion) {
    let dir = TempDir::new().expect("create a scratch directory");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open the store");
    let max_submitters = SUBMITTERS.into_iter().max().unwrap_or(1);
    let fleet = Fleet {
        devices: ROWS_PER_REQUEST * max_submitters,
        sites: max_submitters,
    };
    let mut template = meter::validated(&store, &fleet.body(START_NS, SECOND_NS, 1));
    let rows = template.tables.pop().expect("one table").rows;
    let meters_of: Vec<&[Row]> = rows.chunks(ROWS_PER_REQUEST).collect();
    // The next unused second, across all samples and submitter counts.
    let mut next_second = 1;

    let mut group = c.benchmark_group("group_commit");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for submitters in SUBMITTERS {
        group.throughput(Throughput::Elements((submitters * ROWS_PER_REQUEST) as u64));
        group.bench_function(BenchmarkId::new("submitters", submitters), |b| {
            b.iter_custom(|iters| {
                let first = next_second;
                next_second += iters as i64;
                let requests: Vec<Vec<WriteBatch>> = meters_of[..submitters]
                    .iter()
                    .map(|meters| {
                        (first..next_second)
                            .map(|second| request(meters, START_NS + second * SECOND_NS))
                            .collect()
                    })
                    .collect();
                let start = Barrier::new(submitters + 1);
                let elapsed = std::thread::scope(|s| {
                    let (store, start) = (&store, &start);
                    let threads: Vec<_> = requests
                        .into_iter()
                        .map(|batches| {
                            s.spawn(move || {
                                start.wait();
                                for batch in batches {
                                    store
                                        .submit(batch, true)
                                        .expect("the queue has room")
                                        .wait_blocking()
                                        .expect("the write commits");
                                }
                            })
                        })
                        .collect();
                    start.wait();
                    let started = Instant::now();
                    for thread in threads {
                        thread.join().expect("a submitter panicked");
                    }
                    started.elapsed()
                });
                store.persist_now().expect("persist between samples");
                elapsed
            })
        });
    }
    group.finish();
    store.shutdown().expect("shut the store down");
}

criterion_group!(benches, bench_group_commit);
criterion_main!(benches);

//! The store: validation, the WAL writer thread (group commit), the persister thread,
//! and scans over Parquet files and the write buffer as one table.
//!
//! ```text
//!  submit ──► bounded queue ──► writer thread ──► WAL append + one fsync per group
//!  (503 when full)                    │            ──► write buffer ──► ack
//!                                     └─ snapshot: rotate WAL, move buffer to a
//!                                        persisting chunk ──► persister thread:
//!                                        Parquet files ──► catalog (fsynced)
//!                                        ──► drop chunk ──► delete WAL segments
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::TimestampNanosecondArray;
use arrow::compute::{max, min};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TrySendError};
use futures_channel::oneshot;
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;

use crate::buffer::{WriteBuffer, rows_to_batch};
use crate::catalog::{Catalog, ParquetFile};
use crate::config::StoreConfig;
use crate::dedup::last_write_wins;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::objects::ObjectStorage;
use crate::persist::{self, conform, filter_time};
use crate::schema::{ColumnDef, ColumnKind, KeySlots, TableSchema};
use crate::tombstone::{self, DeletePredicate, Tombstone};
use crate::types::{LineError, ParsedLine, TIME_COLUMN, TableWrite, TimeRange, WriteBatch};
use crate::wal::{self, Record, WalWriter};

mod lifecycle;

pub use lifecycle::{CompactionStats, TableStats};
use lifecycle::{Lease, Swap};

/// How often the writer wakes up without writes, to check the snapshot age.
const TICK: Duration = Duration::from_millis(250);
/// Wait before retrying a snapshot that failed to persist.
const PERSIST_RETRY: Duration = Duration::from_secs(5);

/// A snapshot of the write buffer on its way to Parquet. Queryable until its files are
/// in the catalog.
#[derive(Debug)]
struct Chunk {
    /// WAL segments up to this id hold exactly the rows of this and earlier chunks.
    wal_through: u64,
    tables: HashMap<String, Vec<RecordBatch>>,
}

#[derive(Debug, Default)]
struct State {
    buffer: WriteBuffer,
    /// Oldest first.
    persisting: VecDeque<Arc<Chunk>>,
    catalog: Catalog,
    /// One per catalog file, by path; see [`Lease`].
    leases: HashMap<String, Arc<Lease>>,
}

/// What the writer and persister threads share with the handles.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    wal_dir: PathBuf,
    config: StoreConfig,
    schemas: RwLock<HashMap<String, Arc<TableSchema>>>,
    state: RwLock<State>,
    metrics: Metrics,
    closing: AtomicBool,
    /// Told about every committed write; see [`Store::observe`].
    observers: RwLock<Vec<Arc<dyn WriteObserver>>>,
    /// Where Parquet files and the catalog live (the WAL is always on local disk).
    objects: ObjectStorage,
    /// Next Parquet file id (and unique number of a compaction output). Held by the
    /// persister while a snapshot writes its files, so that ids stay in write order.
    next_file_id: Mutex<u64>,
    /// Paths of replaced files that no scan holds any more, to delete.
    garbage: (Sender<String>, Receiver<String>),
    /// One compaction pass at a time.
    compaction: Mutex<()>,
}

/// Something kept up to date from the write path: the last-value cache, the rollups'
/// stale buckets. See [`Store::observe`].
pub trait WriteObserver: Send + Sync + std::fmt::Debug {
    /// The rows of `table` that one committed write added, as the Arrow batch the
    /// buffer got (the table's columns at the time of the write, a prefix of its
    /// current schema). Called on the WAL writer thread, in commit order, after the
    /// rows are in the buffer and before the write is acknowledged: it must be quick
    /// and must not call back into the store's writes.
    fn written(&self, table: &str, batch: &RecordBatch);
}

struct WriteRequest {
    write: PreparedWrite,
    sync: bool,
    ack: oneshot::Sender<Result<()>>,
    /// The write's batches, kept for the observers while the buffer takes them.
    observed: Vec<(String, RecordBatch)>,
}

enum Command {
    Write(WriteRequest),
    Delete(DeletePredicate, oneshot::Sender<Result<Tombstone>>),
    Persist(oneshot::Sender<Result<()>>),
    Shutdown(oneshot::Sender<Result<()>>),
}

impl Command {
    /// The write that could not be queued. Only writes are sent by
    /// [`Store::try_submit`], so the other commands never come back through it.
    fn into_write(self) -> PreparedWrite {
        match self {
            Command::Write(request) => request.write,
            Command::Persist(_) | Command::Shutdown(_) | Command::Delete(..) => {
                PreparedWrite::default()
            }
        }
    }
}

enum PersistJob {
    Chunk(Arc<Chunk>),
    /// Record a tombstone (after the chunk holding every earlier write).
    Delete(DeletePredicate, oneshot::Sender<Result<Tombstone>>),
    /// Put a compaction's outputs in place of its inputs; answers whether it did.
    Swap(Swap, oneshot::Sender<Result<bool>>),
    /// Set (`Some`) or clear (`None`) a table's retention override.
    Retention(
        String,
        Option<Option<Duration>>,
        oneshot::Sender<Result<()>>,
    ),
    /// Answered once every job before it is done.
    Flush(oneshot::Sender<Result<()>>),
}

#[derive(Debug)]
struct Handle {
    tx: Option<Sender<Command>>,
    /// For `compact_now` and the API's retention settings; taken at shutdown so that
    /// the persister ends.
    persist_tx: Mutex<Option<Sender<PersistJob>>>,
    /// Stops the compaction thread (when it runs).
    stop_compaction: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// gridlake's time-series store. Cheap to clone; all clones share one store.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
    handle: Arc<Handle>,
}

/// Sizes of what the store holds, for `/health`, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Tables known.
    pub tables: usize,
    /// Rows in the write buffer (not yet in Parquet).
    pub buffer_rows: usize,
    /// Approximate bytes of the write buffer.
    pub buffer_bytes: usize,
    /// Parquet files in the catalog.
    pub parquet_files: usize,
    /// Bytes of those files.
    pub parquet_bytes: u64,
    /// WAL segments on disk.
    pub wal_segments: usize,
}

/// A validated batch made ready for the WAL writer: its WAL record encoded and its rows
/// turned into Arrow columns, one batch per table. [`Store::prepare`] does this on the
/// caller's thread, so that the single writer thread only writes, fsyncs and appends.
#[derive(Debug, Default)]
pub struct PreparedWrite {
    payload: Vec<u8>,
    tables: Vec<(String, RecordBatch)>,
    rows: usize,
}

impl PreparedWrite {
    /// Rows over all tables.
    pub fn row_count(&self) -> usize {
        self.rows
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// Completes when a submitted write is durable (or failed).
#[derive(Debug)]
pub struct WriteReceipt(oneshot::Receiver<Result<()>>);

impl WriteReceipt {
    /// Waits for the WAL writer's answer.
    pub async fn wait(self) -> Result<()> {
        self.0.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Waits for the WAL writer's answer, blocking the thread.
    pub fn wait_blocking(self) -> Result<()> {
        block_on(self.0).unwrap_or(Err(Error::ShuttingDown))
    }
}

/// Sends the persister a job carrying `make`'s answer channel and waits for the answer.
fn ask_persister<T>(
    tx: &Sender<PersistJob>,
    make: impl FnOnce(oneshot::Sender<Result<T>>) -> PersistJob,
) -> Result<T> {
    let (ack, rx) = oneshot::channel();
    tx.send(make(ack)).map_err(|_| Error::WriterGone)?;
    block_on(rx).unwrap_or(Err(Error::ShuttingDown))
}

/// Blocks on a oneshot without an async runtime. Written by hand because a oneshot
/// receiver is the only future we ever block on, and pulling in an executor crate for
/// it would be heavier than these lines.
fn block_on<T>(rx: oneshot::Receiver<T>) -> std::result::Result<T, oneshot::Canceled> {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Wake, Waker};

    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut rx = pin!(rx);
    loop {
        match rx.as_mut().poll(&mut cx) {
            Poll::Ready(r) => return r,
            Poll::Pending => std::thread::park(),
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, replays the WAL and starts the writer
    /// and persister threads.
    pub fn open(data_dir: impl Into<PathBuf>, config: StoreConfig) -> Result<Store> {
        Self::open_inner(data_dir.into(), config, false)
    }

    /// Opens the store without writing anything: the catalog and WAL are read as they
    /// are, and writes are refused. For `gridlake sql` and other offline readers.
    pub fn open_read_only(data_dir: impl Into<PathBuf>, config: StoreConfig) -> Result<Store> {
        Self::open_inner(data_dir.into(), config, true)
    }

    fn open_inner(dir: PathBuf, config: StoreConfig, read_only: bool) -> Result<Store> {
        if !read_only {
            std::fs::create_dir_all(&dir).map_err(Error::io("create data directory", &dir))?;
        }
        let wal_dir = dir.join("wal");
        let objects = ObjectStorage::open(&dir, &config)?;
        let catalog = Catalog::load(&objects)?;
        let schemas: HashMap<String, Arc<TableSchema>> = catalog
            .tables
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    Arc::new(TableSchema::from_columns(with_time(&t.columns))),
                )
            })
            .collect();
        let persisted_through = catalog.wal_persisted_through;
        let garbage = channel::unbounded();
        let leases = catalog
            .tables
            .values()
            .flat_map(|t| &t.files)
            .map(|f| {
                (
                    f.path.clone(),
                    Lease::new(f.path.clone(), garbage.0.clone()),
                )
            })
            .collect();
        let next_file_id = catalog.next_file_id;
        let shared = Arc::new(Shared {
            dir,
            wal_dir,
            config,
            schemas: RwLock::new(schemas),
            state: RwLock::new(State {
                catalog,
                leases,
                ..State::default()
            }),
            metrics: Metrics::default(),
            closing: AtomicBool::new(read_only),
            observers: RwLock::new(Vec::new()),
            objects,
            next_file_id: Mutex::new(next_file_id),
            garbage,
            compaction: Mutex::new(()),
        });

        let started = Instant::now();
        let replay = wal::replay(&shared.wal_dir, persisted_through, |_, record| {
            shared.apply_replayed(record)
        })?;
        tracing::info!(
            segments = replay.segments,
            records = replay.records,
            torn_segments = replay.torn_segments,
            rows = shared.state.read().buffer.rows(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "WAL replayed"
        );
        shared.update_gauges();

        if read_only {
            return Ok(Store {
                shared,
                handle: Arc::new(Handle {
                    tx: None,
                    persist_tx: Mutex::new(None),
                    stop_compaction: Mutex::new(None),
                    threads: Mutex::new(Vec::new()),
                }),
            });
        }

        // Segments already in Parquet may survive a crash between the catalog update and
        // their deletion.
        wal::remove_segments_through(&shared.wal_dir, persisted_through)?;
        persist::remove_orphans(&shared.objects, &shared.state.read().catalog)?;
        let wal = WalWriter::create(
            &shared.wal_dir,
            replay.last_segment.max(persisted_through) + 1,
        )?;
        let (tx, rx) = channel::bounded(shared.config.queue_capacity.max(1));
        let (persist_tx, persist_rx) = channel::unbounded();
        let writer = {
            let shared = Arc::clone(&shared);
            let persist_tx = persist_tx.clone();
            std::thread::Builder::new()
                .name("gridlake-wal".into())
                .spawn(move || {
                    Writer {
                        shared,
                        wal,
                        next_seq: replay.last_seq + 1,
                        persist_tx,
                    }
                    .run(rx)
                })
                .map_err(Error::io("spawn WAL writer thread", "gridlake-wal"))?
        };
        let persister = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("gridlake-persist".into())
                .spawn(move || shared.run_persister(persist_rx))
                .map_err(Error::io("spawn persister thread", "gridlake-persist"))?
        };
        let mut threads = vec![writer, persister];
        let mut stop_compaction = None;
        if !shared.config.compaction_interval.is_zero() {
            let (stop_tx, stop_rx) = channel::bounded(1);
            let shared = Arc::clone(&shared);
            let persist_tx = persist_tx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("gridlake-compact".into())
                    .spawn(move || lifecycle::run_compaction(shared, persist_tx, stop_rx))
                    .map_err(Error::io("spawn compaction thread", "gridlake-compact"))?,
            );
            stop_compaction = Some(stop_tx);
        }
        Ok(Store {
            shared,
            handle: Arc::new(Handle {
                tx: Some(tx),
                persist_tx: Mutex::new(Some(persist_tx)),
                stop_compaction: Mutex::new(stop_compaction),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Checks parsed lines against the table schemas: creates tables and adds columns as
    /// needed, and turns every line that cannot be stored into a [`LineError`]. Writes
    /// nothing; the accepted rows come back grouped by table, in request order.
    pub fn validate(&self, lines: Vec<ParsedLine>) -> (WriteBatch, Vec<LineError>) {
        let mut groups: Vec<(String, Vec<ParsedLine>)> = Vec::new();
        // Most requests write one table: keep their lines where they are instead of
        // moving every one into a group.
        let single = match lines.first() {
            Some(first) if lines.iter().all(|l| l.table == first.table) => {
                Some(first.table.clone())
            }
            _ => None,
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut previous: Option<usize> = None;
        let lines = match single {
            Some(table) => {
                groups.push((table, lines));
                Vec::new()
            }
            None => lines,
        };
        for line in lines {
            // Requests are mostly runs of one table: compare with the previous line's
            // table before hashing (and copying) the name.
            let i = match previous {
                Some(i) if groups[i].0 == line.table => i,
                _ => *index.entry(line.table.clone()).or_insert_with(|| {
                    groups.push((line.table.clone(), Vec::new()));
                    groups.len() - 1
                }),
            };
            previous = Some(i);
            groups[i].1.push(line);
        }
        let mut batch = WriteBatch::default();
        let mut errors = Vec::new();
        for (table, lines) in groups {
            if let Err(reason) = check_table_name(&table) {
                errors.extend(lines.iter().map(|l| LineError::new(l.line, reason.clone())));
                continue;
            }
            let cutoff = self
                .retention(&table)
                .map(|ttl| (ttl, lifecycle::cutoff(lifecycle::now_ns(), ttl)));
            let lines = match cutoff {
                Some((ttl, cutoff)) if lines.iter().any(|l| l.row.time < cutoff) => {
                    let (kept, expired): (Vec<_>, Vec<_>) =
                        lines.into_iter().partition(|l| l.row.time >= cutoff);
                    errors.extend(expired.iter().map(|l| {
                        LineError::new(
                            l.line,
                            format!(
                                "time {} is older than the retention of table {table:?} ({}): it would never be visible",
                                l.row.time,
                                humantime::format_duration(ttl)
                            ),
                        )
                    }));
                    kept
                }
                _ => lines,
            };
            let rows = self.shared.validate_table(&table, lines, &mut errors);
            if !rows.is_empty() {
                batch.tables.push(TableWrite { table, rows });
            }
        }
        errors.sort_by_key(|e| e.line);
        (batch, errors)
    }

    /// Makes a validated batch ready for the WAL writer: encodes its WAL record and
    /// builds its Arrow columns. CPU work proportional to the batch; call it on the
    /// producer's thread (it takes no lock but a brief read lock on the schemas).
    ///
    /// # Errors
    ///
    /// [`Error::Wal`] when the batch is too large for one WAL record, and
    /// [`Error::TableNotFound`] for a table that [`Store::validate`] did not create.
    pub fn prepare(&self, batch: WriteBatch) -> Result<PreparedWrite> {
        let mut tables = Vec::with_capacity(batch.tables.len());
        let mut rows = 0;
        for t in batch.tables {
            if t.rows.is_empty() {
                continue;
            }
            let schema = self
                .shared
                .schemas
                .read()
                .get(&t.table)
                .cloned()
                .ok_or_else(|| Error::TableNotFound(t.table.clone()))?;
            rows += t.rows.len();
            tables.push((t.table, rows_to_batch(&schema, &t.rows)));
        }
        let payload = wal::encode(&tables)?;
        Ok(PreparedWrite {
            payload,
            tables,
            rows,
        })
    }

    /// Hands a validated batch to the WAL writer ([`Store::prepare`], then
    /// [`Store::submit_prepared`]). Returns at once; the receipt completes when the
    /// batch is durable (fsynced, unless `sync` is false) and queryable.
    pub fn submit(&self, batch: WriteBatch, sync: bool) -> Result<WriteReceipt> {
        self.submit_prepared(self.prepare(batch)?, sync)
    }

    /// Hands a prepared write to the WAL writer; see [`Store::submit`].
    pub fn submit_prepared(&self, write: PreparedWrite, sync: bool) -> Result<WriteReceipt> {
        self.try_submit(write, sync).map_err(|(e, _)| e)
    }

    /// Like [`Store::submit_prepared`], but hands the write back with the error, so
    /// that a producer that cannot ask its client to retry (the MQTT collector, whose
    /// messages are already received) can keep it and try again when the queue is no
    /// longer full ([`Error::Busy`]).
    pub fn try_submit(
        &self,
        write: PreparedWrite,
        sync: bool,
    ) -> std::result::Result<WriteReceipt, (Error, PreparedWrite)> {
        let Some(tx) = &self.handle.tx else {
            return Err((Error::ReadOnly, write));
        };
        if self.shared.closing.load(Ordering::Acquire) {
            return Err((Error::ShuttingDown, write));
        }
        let (ack, rx) = oneshot::channel();
        match tx.try_send(Command::Write(WriteRequest {
            write,
            sync,
            ack,
            observed: Vec::new(),
        })) {
            Ok(()) => Ok(WriteReceipt(rx)),
            Err(TrySendError::Full(command)) => Err((Error::Busy, command.into_write())),
            Err(TrySendError::Disconnected(command)) => {
                Err((Error::WriterGone, command.into_write()))
            }
        }
    }

    /// Names of all tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.schemas.read().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The Arrow schema of a table.
    pub fn table_schema(&self, table: &str) -> Option<SchemaRef> {
        self.shared
            .schemas
            .read()
            .get(table)
            .map(|s| Arc::clone(s.arrow_schema()))
    }

    /// Reads the rows of `table` with a time in `range`, from Parquet files, chunks being
    /// persisted and the write buffer, keeping the last write of every point. Blocking.
    pub fn scan(
        &self,
        table: &str,
        projection: Option<&[usize]>,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>> {
        self.shared.scan(table, projection, range)
    }

    /// Has `observer` told about every write committed from now on (rows already in the
    /// store are not replayed to it: it reads them with [`Store::scan`] if it needs
    /// them). A write is acknowledged only after every observer has seen it, so a
    /// client that got its ack finds its rows in what the observers keep.
    pub fn observe(&self, observer: Arc<dyn WriteObserver>) {
        self.shared.observers.write().push(observer);
    }

    /// The earliest and latest time of the rows of `table` that are not in Parquet
    /// yet (the write buffer and chunks being persisted), or `None` when there are
    /// none. After a restart these are the rows the WAL replayed.
    pub fn unpersisted_time_range(&self, table: &str) -> Option<TimeRange> {
        let state = self.shared.state.read();
        let mut batches = state.buffer.table_batches(table);
        for chunk in &state.persisting {
            if let Some(b) = chunk.tables.get(table) {
                batches.extend(b.iter().cloned());
            }
        }
        drop(state);
        let mut range: Option<TimeRange> = None;
        for batch in &batches {
            let Some(times) = batch
                .column_by_name(TIME_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            else {
                continue;
            };
            if let (Some(min), Some(max)) = (min(times), max(times)) {
                range = Some(match range {
                    None => TimeRange { min, max },
                    Some(r) => TimeRange {
                        min: r.min.min(min),
                        max: r.max.max(max),
                    },
                });
            }
        }
        range
    }

    /// Registers the store's metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.shared.metrics.register(registry);
    }

    /// Current sizes.
    pub fn stats(&self) -> StoreStats {
        let tables = self.shared.schemas.read().len();
        let state = self.shared.state.read();
        let (parquet_files, parquet_bytes) = state.catalog.file_totals();
        StoreStats {
            tables,
            buffer_rows: state.buffer.rows()
                + state
                    .persisting
                    .iter()
                    .flat_map(|c| c.tables.values().flatten())
                    .map(RecordBatch::num_rows)
                    .sum::<usize>(),
            buffer_bytes: state.buffer.bytes(),
            parquet_files,
            parquet_bytes,
            wal_segments: wal::list_segments(&self.shared.wal_dir).map_or(0, |s| s.len()),
        }
    }

    /// Parquet files of a table, oldest first.
    pub fn parquet_files(&self, table: &str) -> Vec<ParquetFile> {
        self.shared
            .state
            .read()
            .catalog
            .tables
            .get(table)
            .map(|t| t.files.clone())
            .unwrap_or_default()
    }

    /// Snapshots the whole write buffer to Parquet and waits until the files are in the
    /// catalog. Blocking.
    pub fn persist_now(&self) -> Result<()> {
        self.request(Command::Persist)
    }

    /// Stops taking writes, commits the ones already queued, persists the buffer and
    /// stops the threads. Blocking. Later calls return at once.
    pub fn shutdown(&self) -> Result<()> {
        if self.handle.tx.is_none() || self.shared.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The compaction thread first: it finishes the merge it is in, and the
        // persister must still be there to answer its swap.
        if let Some(stop) = self.handle.stop_compaction.lock().take() {
            let _ = stop.send(());
        }
        let result = self.request(Command::Shutdown);
        self.handle.persist_tx.lock().take();
        for t in self.handle.threads.lock().drain(..) {
            if t.join().is_err() {
                tracing::error!("a storage thread panicked");
            }
        }
        self.shared.collect_garbage();
        result
    }

    /// Deletes the rows of `predicate.table` whose tags equal `predicate.tags` and
    /// whose time lies in `predicate.range`. When it returns the delete is durable
    /// (a tombstone in the catalog) and no scan sees the rows; compaction removes them
    /// from the files. Rows written after the call are kept. Blocking.
    ///
    /// # Errors
    ///
    /// [`Error::TableNotFound`], and [`Error::Invalid`] for a column that is not a
    /// tag of the table or a range that ends before it starts.
    pub fn delete(&self, predicate: DeletePredicate) -> Result<Tombstone> {
        self.shared.check_delete(&predicate)?;
        self.request(|ack| Command::Delete(predicate, ack))
    }

    /// Deletes not yet applied to every file by compaction.
    pub fn tombstones(&self) -> Vec<Tombstone> {
        self.shared.state.read().catalog.tombstones.clone()
    }

    /// The time to live of `table`'s rows: the one set through
    /// [`Store::set_retention`], else the configured one; `None` keeps them forever.
    pub fn retention(&self, table: &str) -> Option<Duration> {
        self.shared
            .retention_in(&self.shared.state.read().catalog, table)
    }

    /// The retention set through [`Store::set_retention`]: `None` when the table
    /// follows the configuration, `Some(None)` when it keeps its rows forever.
    pub fn retention_override(&self, table: &str) -> Option<Option<Duration>> {
        self.shared
            .state
            .read()
            .catalog
            .retention
            .get(table)
            .map(|ttl| ttl.map(|t| t.0))
    }

    /// Sets the retention of `table` (`Some(Some(ttl))`, or `Some(None)` for forever)
    /// or returns it to the configured one (`None`). Durable when it returns; rows
    /// older than the new retention disappear from scans at once and their files are
    /// dropped by the next compaction pass. Blocking.
    pub fn set_retention(&self, table: &str, ttl: Option<Option<Duration>>) -> Result<()> {
        if !self.shared.schemas.read().contains_key(table) {
            return Err(Error::TableNotFound(table.to_owned()));
        }
        if let Some(Some(ttl)) = ttl
            && ttl.is_zero()
        {
            return Err(Error::Invalid(format!(
                "the retention of table {table:?} must be longer than zero"
            )));
        }
        ask_persister(&self.persister()?, |ack| {
            PersistJob::Retention(table.to_owned(), ttl, ack)
        })
    }

    /// Runs one compaction pass now, on this thread: drops expired files, merges the
    /// runs of small files and the files with pending deletes, and deletes replaced
    /// files that no scan reads. Blocking.
    pub fn compact_now(&self) -> Result<CompactionStats> {
        self.compact_at(lifecycle::now_ns())
    }

    /// [`Store::compact_now`] as if the time were `now_ns` (retention and
    /// `compaction_delay` are measured from it). For tests and tools.
    pub fn compact_at(&self, now_ns: i64) -> Result<CompactionStats> {
        self.shared.compaction_pass(&self.persister()?, now_ns)
    }

    /// Files, bytes, rows and time span of a table; `None` when there is no such table.
    pub fn table_stats(&self, table: &str) -> Option<TableStats> {
        self.shared.table_stats(table)
    }

    /// Where the Parquet files and the catalog are: `file:///...` or `s3://bucket/prefix`.
    pub fn object_store(&self) -> String {
        self.shared.objects.describe()
    }

    /// The persister's queue, for catalog changes asked for from outside it.
    fn persister(&self) -> Result<Sender<PersistJob>> {
        self.handle.persist_tx.lock().clone().ok_or(Error::ReadOnly)
    }

    /// Sends the WAL writer a command carrying `make`'s answer channel and waits for
    /// the answer.
    fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let Some(tx) = &self.handle.tx else {
            return Err(Error::ReadOnly);
        };
        let (ack, rx) = oneshot::channel();
        tx.send(make(ack)).map_err(|_| Error::WriterGone)?;
        block_on(rx).unwrap_or(Err(Error::ShuttingDown))
    }
}

/// Table names become directory names: refuse the ones that would escape or confuse.
fn check_table_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("table name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("table name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Err(format!(
            "table name {name:?} contains the character {c:?}, which is not allowed"
        ));
    }
    if name.len() > 200 {
        return Err(format!(
            "table name is {} bytes long; at most 200 are allowed",
            name.len()
        ));
    }
    Ok(())
}

/// Catalog columns always start with `time`; make sure even a damaged list does.
fn with_time(columns: &[ColumnDef]) -> Vec<ColumnDef> {
    if columns.first().is_some_and(|c| c.kind == ColumnKind::Time) {
        return columns.to_vec();
    }
    let mut out = vec![ColumnDef {
        name: TIME_COLUMN.into(),
        kind: ColumnKind::Time,
    }];
    out.extend(
        columns
            .iter()
            .filter(|c| c.kind != ColumnKind::Time)
            .cloned(),
    );
    out
}

/// Outcome of checking one line against a schema.
enum Check {
    Ok,
    /// The line needs these new columns.
    NeedsColumns(Vec<ColumnDef>),
    Reject(String),
}

fn check_line(schema: &TableSchema, table: &str, line: &ParsedLine) -> Check {
    check_line_with(schema, table, line, &mut KeySlots::default())
}

/// [`check_line`] for one of many lines of a table, remembering where the previous
/// line's keys were.
fn check_line_with<'a>(
    schema: &TableSchema,
    table: &str,
    line: &'a ParsedLine,
    slots: &mut KeySlots<'a>,
) -> Check {
    let row = &line.row;
    if row.fields.is_empty() {
        return Check::Reject("a line needs at least one field".into());
    }
    let kind = |i: usize| schema.columns()[i].kind;
    let mut new = Vec::new();
    for (n, (k, _)) in row.tags.iter().enumerate() {
        match slots.tag(n, k, schema).map(kind) {
            Some(ColumnKind::Tag) => {}
            Some(ColumnKind::Time) => {
                return Check::Reject(format!("{TIME_COLUMN:?} is reserved and cannot be a tag"));
            }
            Some(ColumnKind::Field(t)) => {
                return Check::Reject(format!(
                    "tag {k:?} is a {t} field in table {table:?}; a column cannot be both"
                ));
            }
            None => new.push(ColumnDef {
                name: k.clone(),
                kind: ColumnKind::Tag,
            }),
        }
    }
    for (n, (k, v)) in row.fields.iter().enumerate() {
        let got = v.field_type();
        match slots.field(n, k, schema).map(kind) {
            Some(ColumnKind::Field(t)) if t == got => {}
            Some(ColumnKind::Field(t)) => {
                return Check::Reject(format!(
                    "field {k:?} is {t} in table {table:?}, but this line has {got} value"
                ));
            }
            Some(ColumnKind::Tag) => {
                return Check::Reject(format!(
                    "field {k:?} is a tag in table {table:?}; a column cannot be both"
                ));
            }
            Some(ColumnKind::Time) => {
                return Check::Reject(format!("{TIME_COLUMN:?} is reserved and cannot be a field"));
            }
            None => new.push(ColumnDef {
                name: k.clone(),
                kind: ColumnKind::Field(got),
            }),
        }
    }
    if new.is_empty() {
        Check::Ok
    } else {
        Check::NeedsColumns(new)
    }
}

impl Shared {
    /// Validates the lines of one table; see [`Store::validate`].
    fn validate_table(
        &self,
        table: &str,
        lines: Vec<ParsedLine>,
        errors: &mut Vec<LineError>,
    ) -> Vec<crate::types::Row> {
        // Fast path: the schema already has every column, a read lock is enough.
        if let Some(schema) = self.schemas.read().get(table).cloned() {
            let mut checks = Vec::with_capacity(lines.len());
            let mut grows = false;
            let mut slots = KeySlots::default();
            for line in &lines {
                let c = check_line_with(&schema, table, line, &mut slots);
                grows |= matches!(c, Check::NeedsColumns(_));
                if grows {
                    break;
                }
                checks.push(c);
            }
            if !grows {
                return collect(lines, checks, errors);
            }
        }
        // Slow path: the schema grows. Hold the write lock so that two requests bringing
        // the same new column cannot give it two types; the first one wins.
        let mut schemas = self.schemas.write();
        let mut schema = schemas
            .get(table)
            .map_or_else(TableSchema::new, |s| (**s).clone());
        let mut checks = Vec::with_capacity(lines.len());
        for line in &lines {
            let c = match check_line(&schema, table, line) {
                Check::NeedsColumns(cols) => {
                    schema = schema.extended(cols);
                    Check::Ok
                }
                c => c,
            };
            checks.push(c);
        }
        schemas.insert(table.to_string(), Arc::new(schema));
        collect(lines, checks, errors)
    }

    /// Replays one WAL record into schemas and buffer.
    fn apply_replayed(&self, record: Record) {
        match record {
            Record::Columns(tables) => {
                for (table, batch) in tables {
                    self.apply_replayed_columns(&table, &batch);
                }
            }
            Record::Rows(batch) => self.apply_replayed_rows(&batch),
        }
    }

    /// Replays one table of a WAL record: the batch's columns join the table's schema
    /// (they were in it when the write was accepted, unless the catalog lost them).
    fn apply_replayed_columns(&self, table: &str, batch: &RecordBatch) {
        let mut schemas = self.schemas.write();
        let mut schema = schemas
            .get(table)
            .map_or_else(TableSchema::new, |s| (**s).clone());
        let mut new = Vec::new();
        for field in batch.schema().fields() {
            let Some(def) = ColumnDef::from_arrow(field) else {
                tracing::warn!(table, column = %field.name(), "skipping a WAL record with a column of unknown role or type");
                return;
            };
            match schema.kind(&def.name) {
                Some(kind) if kind == def.kind => {}
                None => new.push(def),
                // Only possible if the catalog and WAL disagree.
                Some(kind) => {
                    tracing::warn!(table, column = %def.name, ?kind, wal_kind = ?def.kind, "skipping a WAL record whose column no longer fits its table");
                    return;
                }
            }
        }
        if !new.is_empty() {
            schema = schema.extended(new);
        }
        let schema = Arc::new(schema);
        let conformed = match conform(batch, schema.arrow_schema()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(table, error = %e, "skipping a WAL record that does not fit its table");
                return;
            }
        };
        schemas.insert(table.to_owned(), Arc::clone(&schema));
        self.state.write().buffer.append(table, &schema, conformed);
    }

    /// Replays a record of the first WAL format (rows).
    fn apply_replayed_rows(&self, batch: &WriteBatch) {
        let mut schemas = self.schemas.write();
        let mut state = self.state.write();
        for t in &batch.tables {
            let mut schema = schemas
                .get(&t.table)
                .map_or_else(TableSchema::new, |s| (**s).clone());
            let mut rows = Vec::with_capacity(t.rows.len());
            for row in &t.rows {
                let line = ParsedLine {
                    line: 0,
                    table: t.table.clone(),
                    row: row.clone(),
                };
                match check_line(&schema, &t.table, &line) {
                    Check::Ok => rows.push(line.row),
                    Check::NeedsColumns(cols) => {
                        schema = schema.extended(cols);
                        rows.push(line.row);
                    }
                    // Only possible if the catalog and WAL disagree; keep what fits.
                    Check::Reject(reason) => {
                        tracing::warn!(table = %t.table, %reason, "skipping WAL row that no longer fits its table")
                    }
                }
            }
            let schema = Arc::new(schema);
            schemas.insert(t.table.clone(), Arc::clone(&schema));
            let batch = rows_to_batch(&schema, &rows);
            state.buffer.append(&t.table, &schema, batch);
        }
    }

    fn update_gauges(&self) {
        let state = self.state.read();
        self.update_buffer_gauges(&state);
        let (files, bytes) = state.catalog.file_totals();
        self.metrics.parquet_files.set(files as i64);
        self.metrics.parquet_bytes.set(bytes as i64);
    }

    /// The buffer gauges alone: these change with every commit, the file gauges only
    /// when a snapshot lands, so the commit path does not walk the catalog.
    fn update_buffer_gauges(&self, state: &State) {
        self.metrics.buffer_rows.set(state.buffer.rows() as i64);
        self.metrics.buffer_bytes.set(state.buffer.bytes() as i64);
    }

    fn scan(
        &self,
        table: &str,
        projection: Option<&[usize]>,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>> {
        let schema = self
            .schemas
            .read()
            .get(table)
            .cloned()
            .ok_or_else(|| Error::TableNotFound(table.to_string()))?;
        let full = schema.arrow_schema();
        let keys: Vec<usize> = schema.tag_positions().chain([0]).collect();
        // Read what was asked for plus the series key, which deduplication needs.
        let needed: Vec<usize> = match projection {
            Some(p) => p
                .iter()
                .chain(&keys)
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => (0..full.fields().len()).collect(),
        };
        let needed_schema = Arc::new(full.project(&needed)?);
        let position = |i: usize| needed.binary_search(&i).unwrap_or(0);
        let key_positions: Vec<usize> = keys.iter().map(|&i| position(i)).collect();
        let time_position = position(0);

        let (files, memory, tombstones, range, _leases) = {
            let state = self.state.read();
            // Rows that outlived the table's retention are gone, whether or not
            // compaction has dropped their files yet.
            let mut range = range;
            if let Some(ttl) = self.retention_in(&state.catalog, table) {
                range.min = range.min.max(lifecycle::cutoff(lifecycle::now_ns(), ttl));
            }
            if range.min > range.max {
                return Ok(Vec::new());
            }
            let mut files: Vec<ParquetFile> = state
                .catalog
                .tables
                .get(table)
                .map(|t| {
                    t.files
                        .iter()
                        .filter(|f| f.time_range().overlaps(&range))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            // Compaction outputs share their id with the newest file they replaced,
            // and hold distinct series: any order among them is right.
            files.sort_by(|a, b| (a.id, &a.path).cmp(&(b.id, &b.path)));
            // Held until the files are read: compaction does not delete a file a
            // scan is reading.
            let leases: Vec<Arc<Lease>> = files
                .iter()
                .filter_map(|f| state.leases.get(&f.path).cloned())
                .collect();
            let tombstones: Vec<Tombstone> = state
                .catalog
                .tombstones
                .iter()
                .filter(|t| t.table == table)
                .cloned()
                .collect();
            let mut memory: Vec<RecordBatch> = state
                .persisting
                .iter()
                .filter_map(|c| c.tables.get(table))
                .flatten()
                .cloned()
                .collect();
            memory.extend(state.buffer.table_batches(table));
            (files, memory, tombstones, range, leases)
        };

        let mut batches = Vec::new();
        for file in &files {
            let hide: Vec<&Tombstone> = tombstones.iter().filter(|t| t.applies_to(file)).collect();
            for b in persist::read_file(&self.objects, file, &needed_schema)? {
                let b = filter_time(conform(&b, &needed_schema)?, time_position, range)?;
                let b = tombstone::remove_hidden(b, hide.iter().copied())?;
                if b.num_rows() > 0 {
                    batches.push(b);
                }
            }
        }
        for b in memory {
            let b = filter_time(conform(&b, &needed_schema)?, time_position, range)?;
            if b.num_rows() > 0 {
                batches.push(b);
            }
        }
        let batches = last_write_wins(batches, &key_positions)?;
        match projection {
            None => Ok(batches),
            Some(p) => {
                let indices: Vec<usize> = p.iter().map(|&i| position(i)).collect();
                Ok(batches
                    .iter()
                    .map(|b| b.project(&indices))
                    .collect::<std::result::Result<_, _>>()?)
            }
        }
    }

    fn run_persister(self: Arc<Self>, rx: Receiver<PersistJob>) {
        for job in rx {
            match job {
                PersistJob::Flush(ack) => {
                    let _ = ack.send(Ok(()));
                }
                PersistJob::Delete(predicate, ack) => {
                    let _ = ack.send(self.record_delete(predicate));
                }
                PersistJob::Swap(swap, ack) => {
                    let _ = ack.send(self.apply_swap(swap));
                }
                PersistJob::Retention(table, ttl, ack) => {
                    let _ = ack.send(self.record_retention(&table, ttl));
                }
                PersistJob::Chunk(chunk) => loop {
                    match self.persist_chunk(&chunk) {
                        Ok(()) => break,
                        Err(e) if self.closing.load(Ordering::Acquire) => {
                            // Nothing is lost: the chunk's WAL segments stay and are
                            // replayed at the next start.
                            tracing::error!(error = %e, "snapshot failed during shutdown; its rows stay in the WAL");
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, retry_in = ?PERSIST_RETRY, "snapshot failed; its rows stay in the WAL and the write buffer");
                            std::thread::sleep(PERSIST_RETRY);
                        }
                    }
                },
            }
        }
    }

    /// Replaces the catalog, atomically and durably.
    fn save_catalog(&self, catalog: &Catalog) -> Result<()> {
        catalog.save(&self.objects)
    }

    /// Writes a chunk's Parquet files, records them durably, then forgets the chunk and
    /// deletes the WAL segments it came from — in that order.
    fn persist_chunk(&self, chunk: &Arc<Chunk>) -> Result<()> {
        let started = Instant::now();
        let mut catalog = self.state.read().catalog.clone();
        let schemas = self.schemas.read().clone();
        let mut rows = 0;
        let mut written = 0;
        let mut added = Vec::new();
        // Held while the files are written: a compaction asking for a unique number
        // waits, so snapshot ids stay in write order.
        let mut next_file_id = self.next_file_id.lock();
        for (table, batches) in &chunk.tables {
            let Some(schema) = schemas.get(table) else {
                continue;
            };
            let files = persist::write_table(
                &self.objects,
                table,
                schema,
                batches,
                &mut next_file_id,
                &self.config,
            )?;
            added.extend(files.iter().map(|f| f.path.clone()));
            rows += files.iter().map(|f| f.row_count).sum::<u64>();
            written += files.len();
            catalog
                .tables
                .entry(table.clone())
                .or_default()
                .files
                .extend(files);
        }
        for (name, schema) in &schemas {
            catalog.tables.entry(name.clone()).or_default().columns = schema.columns().to_vec();
        }
        catalog.next_file_id = *next_file_id;
        drop(next_file_id);
        catalog.wal_persisted_through = chunk.wal_through;
        self.save_catalog(&catalog)?;
        {
            let mut state = self.state.write();
            state.catalog = catalog;
            state.persisting.retain(|c| !Arc::ptr_eq(c, chunk));
            for path in added {
                let lease = Lease::new(path.clone(), self.garbage.0.clone());
                state.leases.insert(path, lease);
            }
        }
        if let Err(e) = wal::remove_segments_through(&self.wal_dir, chunk.wal_through) {
            // Harmless: replay skips segments the catalog says are persisted.
            tracing::warn!(error = %e, "could not remove persisted WAL segments");
        }
        self.metrics.snapshots.inc();
        self.update_gauges();
        tracing::info!(
            files = written,
            rows,
            wal_through = chunk.wal_through,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot persisted"
        );
        Ok(())
    }
}

fn collect(
    lines: Vec<ParsedLine>,
    checks: Vec<Check>,
    errors: &mut Vec<LineError>,
) -> Vec<crate::types::Row> {
    let mut rows = Vec::with_capacity(lines.len());
    for (line, check) in lines.into_iter().zip(checks) {
        match check {
            Check::Reject(reason) => errors.push(LineError::new(line.line, reason)),
            Check::Ok | Check::NeedsColumns(_) => rows.push(line.row),
        }
    }
    rows
}

/// The WAL writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    wal: WalWriter,
    next_seq: u64,
    persist_tx: Sender<PersistJob>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        let max_group = self.shared.config.max_group_requests.max(1);
        loop {
            let first = match rx.recv_timeout(TICK) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.maybe_snapshot();
                    continue;
                }
                // Every Store handle is gone without a shutdown: make what we have
                // durable and stop. The WAL is replayed at the next start.
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.wal.sync();
                    return;
                }
            };
            let mut writes = Vec::new();
            let mut control = None;
            match first {
                Command::Write(w) => writes.push(w),
                c => control = Some(c),
            }
            while control.is_none() && writes.len() < max_group {
                match rx.try_recv() {
                    Ok(Command::Write(w)) => writes.push(w),
                    Ok(c) => control = Some(c),
                    Err(_) => break,
                }
            }
            self.commit(writes);
            match control {
                None => self.maybe_snapshot(),
                Some(Command::Write(_)) => unreachable!("writes are never held as control"),
                Some(Command::Persist(ack)) => {
                    let _ = ack.send(self.snapshot_and_wait());
                }
                Some(Command::Delete(predicate, ack)) => {
                    // Every write acknowledged so far goes to a file first, and the
                    // persister records the tombstone after that file: the delete
                    // covers exactly the writes before it.
                    match self.snapshot() {
                        Ok(()) => {
                            let _ = self.persist_tx.send(PersistJob::Delete(predicate, ack));
                        }
                        Err(e) => {
                            let _ = ack.send(Err(e));
                        }
                    }
                }
                Some(Command::Shutdown(ack)) => {
                    // Writes queued before the shutdown was asked for were accepted:
                    // commit them too.
                    let queued: Vec<WriteRequest> = rx
                        .try_iter()
                        .filter_map(|c| match c {
                            Command::Write(w) => Some(w),
                            Command::Persist(ack) | Command::Shutdown(ack) => {
                                let _ = ack.send(Err(Error::ShuttingDown));
                                None
                            }
                            Command::Delete(_, ack) => {
                                let _ = ack.send(Err(Error::ShuttingDown));
                                None
                            }
                        })
                        .collect();
                    let mut queued = queued.into_iter();
                    loop {
                        let group: Vec<WriteRequest> = queued.by_ref().take(max_group).collect();
                        if group.is_empty() {
                            break;
                        }
                        self.commit(group);
                    }
                    let result = self.snapshot_and_wait();
                    let _ = ack.send(result);
                    return;
                }
            }
        }
    }

    /// Appends a group of writes to the WAL with at most one fsync, applies them to the
    /// buffer, and acknowledges them.
    fn commit(&mut self, writes: Vec<WriteRequest>) {
        if writes.is_empty() {
            return;
        }
        let mut accepted = Vec::with_capacity(writes.len());
        for w in writes {
            let seq = self.next_seq;
            match self.wal.push_encoded(seq, &w.write.payload) {
                Ok(()) => {
                    self.next_seq += 1;
                    accepted.push(w);
                }
                Err(e) => {
                    let _ = w.ack.send(Err(e));
                }
            }
        }
        let before = self.wal.segment_len();
        let sync = accepted.iter().any(|w| w.sync);
        let mut result = self.wal.write_pending();
        if result.is_ok() && sync {
            let started = Instant::now();
            result = self.wal.sync();
            self.shared
                .metrics
                .wal_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if let Err(e) = result {
            tracing::error!(error = %e, requests = accepted.len(), "WAL write failed; the writes were not acknowledged");
            let reason = e.to_string();
            for w in accepted {
                let _ = w
                    .ack
                    .send(Err(Error::Wal(std::io::Error::other(reason.clone()))));
            }
            // Continue in a fresh segment so that nothing lands behind a torn record.
            if let Err(e) = self.wal.rotate() {
                tracing::error!(error = %e, "could not start a new WAL segment");
            }
            return;
        }
        self.shared
            .metrics
            .wal_bytes
            .inc_by(self.wal.segment_len() - before);

        let mut rows = 0;
        let observers = self.shared.observers.read().clone();
        {
            let schemas = self.shared.schemas.read();
            let mut state = self.shared.state.write();
            for w in &mut accepted {
                for (table, batch) in w.write.tables.drain(..) {
                    if let Some(schema) = schemas.get(&table) {
                        rows += batch.num_rows();
                        if !observers.is_empty() {
                            // Cheap: a batch's columns are reference counted.
                            w.observed.push((table.clone(), batch.clone()));
                        }
                        state.buffer.append(&table, schema, batch);
                    }
                }
            }
            self.shared.update_buffer_gauges(&state);
        }
        // Outside the locks: observers may take their own, and scans must not wait.
        for w in &mut accepted {
            for (table, batch) in w.observed.drain(..) {
                for observer in &observers {
                    observer.written(&table, &batch);
                }
            }
        }
        self.shared.metrics.rows_written.inc_by(rows as u64);
        for w in accepted {
            let _ = w.ack.send(Ok(()));
        }
        if self.wal.segment_len() >= self.shared.config.wal_segment_size.as_u64()
            && let Err(e) = self.wal.rotate()
        {
            tracing::error!(error = %e, "could not start a new WAL segment");
        }
    }

    fn maybe_snapshot(&mut self) {
        let due = {
            let state = self.shared.state.read();
            let b = &state.buffer;
            let c = &self.shared.config;
            b.rows() > 0
                && (b.rows() >= c.snapshot_rows
                    || b.bytes() as u64 >= c.snapshot_size.as_u64()
                    || b.oldest().is_some_and(|t| t.elapsed() >= c.snapshot_age))
        };
        if due && let Err(e) = self.snapshot() {
            tracing::error!(error = %e, "could not start a snapshot");
        }
    }

    /// Moves the buffer into a persisting chunk and hands it to the persister.
    fn snapshot(&mut self) -> Result<()> {
        let wal_through = self.wal.rotate()?;
        let chunk = {
            let mut state = self.shared.state.write();
            let chunk = Arc::new(Chunk {
                wal_through,
                tables: state.buffer.take(),
            });
            state.persisting.push_back(Arc::clone(&chunk));
            chunk
        };
        self.persist_tx
            .send(PersistJob::Chunk(chunk))
            .map_err(|_| Error::WriterGone)
    }

    fn snapshot_and_wait(&mut self) -> Result<()> {
        self.snapshot()?;
        let (ack, rx) = oneshot::channel();
        self.persist_tx
            .send(PersistJob::Flush(ack))
            .map_err(|_| Error::WriterGone)?;
        WriteReceipt(rx).wait_blocking()?;
        // A chunk that could not be persisted is still queued: report it.
        if self.shared.state.read().persisting.is_empty() {
            Ok(())
        } else {
            Err(Error::Wal(std::io::Error::other(
                "a snapshot could not be written to Parquet; its rows stay in the WAL",
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FieldValue, Row};

    fn batch(time: i64) -> WriteBatch {
        WriteBatch {
            tables: vec![TableWrite {
                table: "meter".into(),
                rows: vec![Row {
                    time,
                    tags: vec![],
                    fields: vec![("power_w".into(), FieldValue::F64(1.0))],
                }],
            }],
        }
    }

    #[test]
    fn a_full_queue_refuses_writes_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            queue_capacity: 2,
            max_group_requests: 1,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), config).unwrap();
        let (b, errors) = store.validate(vec![ParsedLine {
            line: 1,
            table: "meter".into(),
            row: batch(0).tables[0].rows[0].clone(),
        }]);
        assert!(errors.is_empty());
        store.submit(b, true).unwrap().wait_blocking().unwrap();

        // Hold the buffer: the writer stalls on its first commit, the queue fills up.
        let guard = store.shared.state.write();
        let mut receipts = Vec::new();
        let mut busy = 0;
        for t in 1..=4 {
            match store.submit(batch(t), true) {
                Ok(r) => receipts.push(r),
                Err(Error::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            busy >= 1,
            "a queue of 2 took 4 writes while its writer was stalled"
        );
        drop(guard);
        for r in receipts {
            r.wait_blocking().unwrap();
        }
        store.shutdown().unwrap();
    }
}

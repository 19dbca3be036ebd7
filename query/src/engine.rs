//! The DataFusion session over the store, and running one SQL statement on it.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::collect;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use prometheus_client::registry::Registry;
use storage::Store;
use tokio::runtime::{Handle, Runtime};
use tracing::debug;

use crate::catalog::StoreSchema;
use crate::latest::LastValues;
use crate::metrics::{Outcome, QueryMetrics};
use crate::rollup::Rollups;
use crate::{Error, QueryConfig, QueryOutput, Result};

/// The catalog the store's tables live in. `public.public.<table>` follows PostgreSQL's
/// habit (and DataFusion's default schema name), so Grafana and psql-minded clients
/// find the tables where they look; unqualified names resolve there too.
pub const CATALOG: &str = "public";
/// The schema the store's tables live in; see [`CATALOG`].
pub const SCHEMA: &str = "public";

/// DataFusion's default `sort_spill_reservation_bytes`, kept unless the memory limit
/// is small.
const SORT_SPILL_RESERVATION: usize = 10 * 1024 * 1024;

/// How many memory consumers a "resources exhausted" error names.
const TOP_CONSUMERS: NonZeroUsize = NonZeroUsize::new(5).unwrap();

/// Runs read-only SQL over the store's tables. Cheap to clone; clones share the
/// session, the memory pool, the query threads and the metrics.
#[derive(Clone)]
pub struct QueryEngine {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: SessionContext,
    config: QueryConfig,
    metrics: QueryMetrics,
    runtime: QueryRuntime,
    rollups: Rollups,
    /// The last-value cache, fed by the store's writer thread.
    latest: LastValues,
    /// The cache's warm-up thread. Not joined on drop (that could block an async
    /// thread for a whole day's read): dropping the engine asks it to stop instead.
    _warm_up: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.latest.stop_warm_up();
    }
}

/// The threads queries run on, apart from the caller's runtime. DataFusion operators
/// can compute for seconds without yielding (a cross join does); on their own threads
/// they cannot starve the HTTP server, and the caller's timer still fires on time.
#[derive(Debug)]
struct QueryRuntime {
    handle: Handle,
    /// Taken only by `drop`.
    runtime: Option<Runtime>,
}

impl QueryRuntime {
    fn start(threads: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("gridlake-query")
            .enable_all()
            .build()
            .map_err(Error::Threads)?;
        Ok(QueryRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Spawns `future` on the query threads; dropping the returned task aborts it.
    fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> SpawnedTask<T> {
        let _context = self.handle.enter();
        SpawnedTask::spawn(future)
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // The last engine may be dropped inside an async task, where a runtime must
        // not block to shut down. Running queries are aborted at their next yield.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryEngine")
            .field("session_id", &self.inner.ctx.session_id())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// A session whose `public.public` schema lists the store's tables as they are at
    /// each query, with `information_schema` (so `SHOW TABLES` and `SHOW COLUMNS`
    /// work) and one memory pool of `config.memory_limit` for all queries together.
    pub fn new(store: Store, config: QueryConfig) -> Result<QueryEngine> {
        let memory_limit = usize::try_from(config.memory_limit.as_u64()).unwrap_or(usize::MAX);
        // FairSpillPool gives each spilling operator (sort, aggregation) an equal share
        // so one query cannot starve the others; the tracking wrapper names the
        // biggest consumers when a query is refused memory.
        let pool = TrackConsumersPool::new(FairSpillPool::new(memory_limit), TOP_CONSUMERS);
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(Error::Setup)?;
        let session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_target_partitions(config.target_partitions)
            // A sort reserves this much up front for merging what it spilled. The
            // default (10 MB) would make every sort fail under a small memory limit.
            .with_sort_spill_reservation_bytes(SORT_SPILL_RESERVATION.min(memory_limit / 10));
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime_env)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::functions::register(&ctx);
        let threads = match config.target_partitions {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let runtime = QueryRuntime::start(threads)?;
        // Registers itself with the store: from here on every write marks its buckets.
        let rollups = Rollups::new(store.clone(), &config)?;

        // The last-value cache sees every write from here on; the warm-up thread reads
        // what came before.
        let latest = LastValues::new();
        store.observe(Arc::new(latest.clone()));
        let warm_up = latest.start_warm_up(store.clone(), config.latest_warmup);

        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema(SCHEMA, Arc::new(StoreSchema::new(store, latest.clone())))
            .map_err(Error::Setup)?;
        ctx.register_catalog(CATALOG, Arc::new(catalog));

        Ok(QueryEngine {
            inner: Arc::new(Inner {
                ctx,
                config,
                metrics: QueryMetrics::new(),
                runtime,
                rollups,
                latest,
                _warm_up: warm_up,
            }),
        })
    }

    /// Runs one SQL statement and collects its whole result.
    ///
    /// Only queries are accepted: `SELECT`, `WITH`, `VALUES`, `SHOW TABLES`,
    /// `SHOW COLUMNS`, `DESCRIBE` and `EXPLAIN`. Statements that would change data,
    /// schema or session state (`CREATE`, `INSERT`, `DROP`, `COPY`, `SET`, ...) are
    /// refused with [`Error::Refused`]. Planning and execution together are limited to
    /// `query.timeout` ([`Error::Timeout`]).
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        let started = Instant::now();
        let timeout = self.inner.config.timeout;
        // The query runs on the query threads, the timer on the caller's runtime, so
        // the caller gets its answer on time however busy the query keeps its threads.
        // Dropping the task, on timeout or when the caller goes away, aborts the query
        // at its next yield, and DataFusion then aborts the tasks the query spawned.
        // The task holds only the session, so the query threads never drop the engine
        // (and with it themselves).
        let ctx = self.inner.ctx.clone();
        let owned_sql = sql.to_owned();
        let task = self.inner.runtime.spawn(run(ctx, owned_sql));
        let joined = if timeout.is_zero() {
            Ok(task.join().await)
        } else {
            tokio::time::timeout(timeout, task.join()).await
        };
        let result = match joined {
            Ok(Ok(result)) => result,
            // The query panicked (a bug).
            Ok(Err(join_error)) => Err(Error::Execution(DataFusionError::ExecutionJoin(Box::new(
                join_error,
            )))),
            Err(_elapsed) => Err(Error::Timeout(timeout)),
        };
        let outcome = Outcome::of(&result);
        let elapsed = started.elapsed();
        self.inner.metrics.record(outcome, elapsed);
        debug!(?outcome, ?elapsed, sql, "query");
        result
    }

    /// The settings the engine was made with (the chart API reads
    /// `rollup_timezone` to know where the daily rollups' days start).
    pub fn config(&self) -> &QueryConfig {
        &self.inner.config
    }

    /// The rollup tables (`<table>_15m`, `_1h`, `_1d`) of the store: refresh them now,
    /// or start their background refresh.
    pub fn rollups(&self) -> &Rollups {
        &self.inner.rollups
    }

    /// The last value of every series (the cache behind `<table>_latest`).
    pub fn latest(&self) -> &LastValues {
        &self.inner.latest
    }

    /// Registers `gridlake_queries_total` (by `outcome`) and `gridlake_query_seconds`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
    }
}

/// Plans, checks and runs one statement.
async fn run(ctx: SessionContext, sql: String) -> Result<QueryOutput> {
    let plan = ctx
        .state()
        .create_logical_plan(&sql)
        .await
        .map_err(Error::from_datafusion)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|refusal| Error::Refused(refusal.message().into_owned()))?;
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(Error::from_datafusion)?;
    let task_ctx = Arc::new(frame.task_ctx());
    let plan = frame
        .create_physical_plan()
        .await
        .map_err(Error::from_datafusion)?;
    let schema = plan.schema();
    let batches = collect(plan, task_ctx)
        .await
        .map_err(Error::from_datafusion)?;
    Ok(QueryOutput { schema, batches })
}

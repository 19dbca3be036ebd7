//! The timeout and the memory limit end queries with errors the client understands.

use std::time::{Duration, Instant};

use bytesize::ByteSize;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use query::{Error, QueryConfig};

use crate::common::{Fixture, with_timeout};

/// 10^12 rows: far more than any test machine sums in a few seconds. The small side
/// is the cross join's build side, so the join returns to the (cooperative) scan of
/// the large side often and the cancelled query stops promptly.
const ENDLESS: &str =
    "SELECT sum(a.value * b.value) AS s FROM range(1000) a CROSS JOIN range(1000000000) b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_times_out_and_the_engine_carries_on() {
    let fx = Fixture::with_config(with_timeout(Duration::from_millis(300)));
    let mut registry = Registry::default();
    fx.engine.register_metrics(&mut registry);

    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(60), fx.engine.sql(ENDLESS))
        .await
        .expect("the engine's timeout fired before the test's")
        .expect_err("cannot finish in 300 ms");
    assert!(matches!(error, Error::Timeout(_)), "{error:?}");
    assert!(error.is_timeout() && !error.is_client_error());
    assert!(error.to_string().contains("query.timeout"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    assert_eq!(fx.count("SELECT 1").await, 1);
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode metrics");
    assert!(
        text.contains("gridlake_queries_total{outcome=\"timeout\"} 1"),
        "{text}"
    );
}

/// A cross join with a big build side computes for a long time without yielding; the
/// caller must still get its timeout on time (the query runs on its own threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_never_yields_still_times_out_on_time() {
    let fx = Fixture::with_config(with_timeout(Duration::from_millis(300)));
    let hog =
        "SELECT sum(a.value * b.value) AS s FROM range(1000000) a CROSS JOIN range(1000000) b";
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(60), fx.engine.sql(hog))
        .await
        .expect("the engine's timeout fired before the test's")
        .expect_err("cannot finish in 300 ms");
    assert!(error.is_timeout(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_fails_as_the_clients_error() {
    let fx = Fixture::with_config(QueryConfig {
        memory_limit: ByteSize::mib(1),
        ..QueryConfig::default()
    });
    fx.write_meters().await;
    // Small queries still run.
    assert_eq!(fx.count("SELECT * FROM meter ORDER BY power").await, 10);

    let error = fx
        .engine
        .sql("SELECT array_agg(value) AS all_values FROM range(2000000)")
        .await
        .expect_err("2 million values do not fit in 1 MiB");
    assert!(matches!(error, Error::ResourcesExhausted(_)), "{error:?}");
    assert!(error.is_client_error());
    assert!(error.to_string().contains("query.memory_limit"), "{error}");
}

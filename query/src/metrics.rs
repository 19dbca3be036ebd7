//! Prometheus metrics of the query engine.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;

/// How a query ended, the `outcome` label of `gridlake_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    ClientError,
    Error,
    Timeout,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, Error>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) if e.is_timeout() => Outcome::Timeout,
            Err(e) if e.is_client_error() => Outcome::ClientError,
            Err(_) => Outcome::Error,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

type OutcomeLabel = [(&'static str, &'static str); 1];

/// Counters shared by every clone of the engine; registering hands the registry
/// clones of the same (Arc-backed) metrics.
#[derive(Debug, Clone)]
pub(crate) struct QueryMetrics {
    queries: Family<OutcomeLabel, Counter>,
    seconds: Histogram,
}

impl QueryMetrics {
    pub(crate) fn new() -> Self {
        Self {
            queries: Family::default(),
            // 1 ms to about 33 s: from a last-value lookup to a query near the
            // default 30 s timeout.
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }

    pub(crate) fn record(&self, outcome: Outcome, elapsed: Duration) {
        self.queries
            .get_or_create(&[("outcome", outcome.label())])
            .inc();
        self.seconds.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            // The text encoder appends `_total` to counters.
            "gridlake_queries",
            "SQL queries run, by outcome (ok, client_error, error, timeout)",
            self.queries.clone(),
        );
        registry.register(
            "gridlake_query_seconds",
            "Time from receiving a SQL query to having its whole result",
            self.seconds.clone(),
        );
    }
}

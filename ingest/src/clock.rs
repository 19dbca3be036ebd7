//! The wall clock and timed waits the collectors share.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Nanoseconds since the Unix epoch; 0 for a clock set before 1970, and `i64::MAX`
/// past the year 2262.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Sleeps until `at`, or forever without one: a `select!` branch for a deadline that
/// may not be set.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

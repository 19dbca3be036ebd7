//! The background refresh: a thread that refreshes the stale rollup buckets every
//! `query.rollup_refresh_interval`, and its orderly stop.
//!
//! Each pass refreshes at most a day of hour-long chunks per table (so one table's
//! backfill does not hold up the others); while ended buckets are left, the next pass
//! starts at once. After every pass that leaves anything stale (the current quarter
//! hour always is while data arrives; see `Rollups::save_after_refresh`), the marks
//! are saved to `rollups.json`, so a crash loses at most the marks of the last
//! interval (and the start-up checks find those at the tail of a table or in the
//! replayed WAL).

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::{info, warn};

use super::{Rollups, log_stats};
use crate::{Error, Result};

/// How long a shutdown waits for a refresh in progress to reach the end of its chunk
/// (an hour of one table's rows).
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long the last refresh at shutdown may start new chunks (checked between
/// chunks: it ends at most one chunk later).
const FINAL_REFRESH: Duration = Duration::from_secs(15);

/// The stop request, with a condition variable so that the thread's wait between
/// refreshes ends at once.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn set(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.stopped.lock()
    }

    /// Waits up to `timeout`; true when stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut stopped = self.stopped.lock();
        while !*stopped {
            if self.wake.wait_until(&mut stopped, deadline).timed_out() {
                break;
            }
        }
        *stopped
    }
}

/// The running background refresh of the rollups. Stop it with
/// [`RollupRefresh::shutdown`] before the store shuts down; dropping it only asks the
/// thread to stop.
#[derive(Debug)]
pub struct RollupRefresh {
    rollups: Rollups,
    interval: Duration,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread has ended.
    ended: Option<mpsc::Receiver<()>>,
}

impl RollupRefresh {
    pub(super) fn start(rollups: Rollups, interval: Duration) -> Result<RollupRefresh> {
        let stop = Arc::new(Stop::default());
        let (thread, ended) = if interval.is_zero() {
            (None, None)
        } else {
            let (ended_tx, ended) = mpsc::channel::<()>();
            let thread = {
                let rollups = rollups.clone();
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name("gridlake-rollup".into())
                    .spawn(move || {
                        // Dropped when the thread ends, however it ends.
                        let _ended = ended_tx;
                        run(&rollups, &stop, interval);
                    })
                    .map_err(Error::Threads)?
            };
            (Some(thread), Some(ended))
        };
        Ok(RollupRefresh {
            rollups,
            interval,
            stop,
            thread,
            ended,
        })
    }

    /// Stops the background refresh, refreshes what is stale one last time (unless
    /// the refresh is off, `rollup_refresh_interval = 0`), and saves the buckets still
    /// stale to the data directory for the next start. Blocking, for at most about
    /// 25 seconds plus one chunk: a refresh in progress ends after its current chunk.
    pub fn shutdown(mut self) {
        self.stop.set();
        let mut stopped = true;
        if let Some(ended) = self.ended.take() {
            match ended.recv_timeout(STOP_WAIT) {
                Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                    if let Some(thread) = self.thread.take()
                        && thread.join().is_err()
                    {
                        warn!("the rollup refresh thread panicked");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    warn!(waited = ?STOP_WAIT, "the rollup refresh did not stop in time; leaving it behind");
                    stopped = false;
                }
            }
        }
        if stopped && !self.interval.is_zero() {
            let deadline = Instant::now() + FINAL_REFRESH;
            match self
                .rollups
                .refresh(super::now_ns(), &|| false, Some(deadline), true)
            {
                Ok(stats) => log_stats("shutdown", &stats),
                Err(e) => warn!(error = %e, "the last rollup refresh failed"),
            }
        }
        match self.rollups.save_stale() {
            Ok(()) => info!("rollup refresh stopped"),
            Err(e) => {
                warn!(error = %e, "cannot save the stale rollup buckets; they are rolled up only if written again")
            }
        }
    }
}

impl Drop for RollupRefresh {
    fn drop(&mut self) {
        // Not shut down (an early return): let the thread end on its own, without
        // blocking whoever drops this.
        self.stop.set();
    }
}

fn run(rollups: &Rollups, stop: &Stop, interval: Duration) {
    let mut wait = true;
    while !(if wait {
        stop.wait(interval)
    } else {
        stop.is_set()
    }) {
        let result = rollups.refresh(super::now_ns(), &|| stop.is_set(), None, false);
        // More ended buckets left by the chunk cap: the next pass at once.
        wait = !matches!(&result, Ok(stats) if !stats.complete);
        match result {
            Ok(stats) if stats.elapsed >= interval => log_stats("slower than the interval", &stats),
            Ok(_) => {}
            // Already logged per table; the buckets stay stale and are retried.
            Err(_) => {}
        }
    }
}

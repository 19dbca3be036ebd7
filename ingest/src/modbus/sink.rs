//! The sink: one task that gathers the rows of every device's polls into batches and
//! hands them to the store.
//!
//! Thousands of devices each produce a few rows per cycle; one WAL record per cycle
//! would cost an fsync each. The sink batches up to `batch_rows` rows, or what arrived
//! within `batch_linger` of the first, validates and prepares the batch on its own
//! task, and submits it. A full store queue is retried; while it is, the sink stops
//! receiving, and the bounded channel makes the endpoint tasks wait: backpressure, not
//! loss. Rows the device gate (the registry) or the store refuses are logged and
//! counted, not fatal.

use std::sync::Arc;
use std::time::Duration;

use storage::{LineError, ParsedLine, PreparedWrite, Store};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::metrics::ModbusMetrics;
use crate::clock::sleep_until;
use crate::gate::DeviceGate;

/// How long a batch waits before it is offered to a full store queue again.
const BUSY_RETRY: Duration = Duration::from_millis(10);

/// How often refused rows are logged as a warning.
const REFUSED_WARNING: Duration = Duration::from_secs(60);

/// How long shutdown waits for the last batches to be taken and made durable.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The sink's settings and state.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) store: Store,
    /// Decides which devices' rows may be stored, when a registry is configured.
    pub(crate) gate: Option<Arc<dyn DeviceGate>>,
    pub(crate) metrics: ModbusMetrics,
    pub(crate) batch_rows: usize,
    pub(crate) linger: Duration,
    /// When rows the store refused were last logged as a warning.
    pub(crate) warned: Option<Instant>,
    /// When rows the gate refused were last logged as a warning.
    pub(crate) warned_gate: Option<Instant>,
}

/// A prepared batch the store's queue had no room for yet.
#[derive(Debug)]
pub(super) struct Ready {
    write: PreparedWrite,
    rows: usize,
}

impl Sink {
    /// Runs until every sender is gone, then writes what is left and waits for it to
    /// be durable.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Vec<ParsedLine>>) {
        let mut pending: Vec<ParsedLine> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut ready: Option<Ready> = None;
        let mut inflight: JoinSet<storage::Result<()>> = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                Some(done) = inflight.join_next(), if !inflight.is_empty() => self.complete(done),
                () = tokio::time::sleep(BUSY_RETRY), if ready.is_some() => {
                    ready = self.submit(ready.take(), &mut inflight);
                }
                rows = rx.recv(), if ready.is_none() => match rows {
                    Some(rows) => {
                        pending.extend(rows);
                        deadline.get_or_insert_with(|| Instant::now() + self.linger);
                        if pending.len() >= self.batch_rows {
                            deadline = None;
                            let batch = self.prepare(std::mem::take(&mut pending));
                            ready = self.submit(batch, &mut inflight);
                        }
                    }
                    None => break,
                },
                () = sleep_until(deadline), if ready.is_none() => {
                    deadline = None;
                    let batch = self.prepare(std::mem::take(&mut pending));
                    ready = self.submit(batch, &mut inflight);
                }
            }
        }

        // Shutdown: every endpoint task has stopped; write what they sent.
        let give_up = Instant::now() + SHUTDOWN_GRACE;
        let last = self.prepare(std::mem::take(&mut pending));
        for batch in ready.into_iter().chain(last) {
            let mut batch = Some(batch);
            loop {
                batch = self.submit(batch, &mut inflight);
                let Some(lost) = &batch else { break };
                if Instant::now() >= give_up {
                    self.metrics.store_failures.inc();
                    tracing::error!(
                        rows = lost.rows,
                        "shutdown: the store did not take the last polled rows in time; they are lost"
                    );
                    break;
                }
                tokio::time::sleep(BUSY_RETRY).await;
            }
        }
        while let Ok(Some(done)) = tokio::time::timeout_at(give_up, inflight.join_next()).await {
            self.complete(done);
        }
        if !inflight.is_empty() {
            tracing::warn!("shutdown: a batch of polled rows did not become durable in time");
        }
    }

    /// Gates, validates and prepares rows, and tells the gate which will be stored;
    /// `None` when nothing is left to write.
    pub(super) fn prepare(&mut self, mut lines: Vec<ParsedLine>) -> Option<Ready> {
        if lines.is_empty() {
            return None;
        }
        for (i, line) in lines.iter_mut().enumerate() {
            line.line = i + 1;
        }
        if let Some(gate) = &self.gate {
            let mut refused = Vec::new();
            gate.check(&mut lines, &mut refused, None);
            count_refused(
                &self.metrics,
                &mut self.warned_gate,
                &refused,
                "the device registry",
            );
        }
        let (batch, errors) = self.store.validate(lines);
        count_refused(&self.metrics, &mut self.warned, &errors, "the store");
        // Only rows the store takes register their device and count as signs of life.
        if let Some(gate) = &self.gate {
            gate.note_stored(&batch, None);
        }
        let rows: usize = batch.tables.iter().map(|t| t.rows.len()).sum();
        if rows == 0 {
            return None;
        }
        match self.store.prepare(batch) {
            Ok(write) => Some(Ready { write, rows }),
            Err(e) => {
                self.metrics.store_failures.inc();
                tracing::error!(error = %e, rows, "polled rows could not be prepared for the store; they are lost");
                None
            }
        }
    }

    /// Offers a batch to the store; hands it back if the queue is full.
    fn submit(
        &self,
        ready: Option<Ready>,
        inflight: &mut JoinSet<storage::Result<()>>,
    ) -> Option<Ready> {
        let Ready { write, rows } = ready?;
        match self.store.try_submit(write, true) {
            Ok(receipt) => {
                self.metrics.readings.inc_by(rows as u64);
                inflight.spawn(receipt.wait());
                None
            }
            Err((storage::Error::Busy, write)) => {
                self.metrics.store_busy.inc();
                Some(Ready { write, rows })
            }
            Err((e, _)) => {
                self.metrics.store_failures.inc();
                tracing::error!(error = %e, rows, "the store did not take polled rows; they are lost");
                None
            }
        }
    }

    fn complete(&self, done: Result<storage::Result<()>, tokio::task::JoinError>) {
        let error = match done {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.metrics.store_failures.inc();
        tracing::error!(error = %error, "a batch of polled rows did not become durable");
    }
}

/// Counts rows `by` refused in the invalid-rows metric and logs them. A device the
/// registry rejects, or a schema conflict, refuses rows every cycle: a warning now and
/// then (`warned` holds when the last one was), debug lines in between.
fn count_refused(
    metrics: &ModbusMetrics,
    warned: &mut Option<Instant>,
    errors: &[LineError],
    by: &str,
) {
    let Some(first) = errors.first() else {
        return;
    };
    metrics.invalid_rows.inc_by(errors.len() as u64);
    let now = Instant::now();
    if warned.is_none_or(|at| now >= at + REFUSED_WARNING) {
        *warned = Some(now);
        tracing::warn!(
            rows = errors.len(),
            first = %first.reason,
            "{by} refused polled rows (counted in gridlake_modbus_invalid_rows)"
        );
    } else {
        tracing::debug!(rows = errors.len(), first = %first.reason, "{by} refused polled rows");
    }
}

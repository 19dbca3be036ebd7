//! The life of stored files after a snapshot: deletes (tombstones), retention,
//! compaction, and removing replaced files once no scan reads them.
//!
//! Every change to the catalog happens on the persister thread, one after another:
//! snapshots, deletes, retention settings and compaction swaps. The compaction thread
//! only reads the catalog, writes new files and asks the persister to swap them in; the
//! persister refuses a swap whose inputs are no longer all in the catalog, and the
//! compaction's outputs are deleted again.
//!
//! ```text
//!  compaction thread: plan ─► merge files ─► outputs durable ─► Swap job ─┐
//!  persister thread:  check inputs unchanged ─► catalog without inputs,   ◄┘
//!                     with outputs (atomic, durable) ─► retire inputs
//!  last scan holding a retired file drops its lease ─► file deleted
//! ```

use std::sync::OnceLock;
use std::time::SystemTime;

use super::*;
use crate::catalog::Ttl;
use crate::compact::{self, CompactionJob};
use crate::tombstone::{DeletePredicate, Tombstone};

/// A catalog file as scans hold it. When compaction or retention replaces the file,
/// the catalog's lease is marked retired and dropped; the file is deleted when the last
/// scan reading it drops its clone, so a running query never loses a file under it.
#[derive(Debug)]
pub(super) struct Lease {
    path: String,
    retired: AtomicBool,
    garbage: Sender<String>,
}

impl Lease {
    pub(super) fn new(path: String, garbage: Sender<String>) -> Arc<Lease> {
        Arc::new(Lease {
            path,
            retired: AtomicBool::new(false),
            garbage,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            // The compaction thread deletes it (and the next start does, should the
            // process die first: a file the catalog does not name is an orphan).
            let _ = self.garbage.send(std::mem::take(&mut self.path));
        }
    }
}

/// A compaction's result, for the persister to put in place of its inputs.
#[derive(Debug)]
pub(super) struct Swap {
    pub(super) table: String,
    pub(super) removed: Vec<ParquetFile>,
    pub(super) added: Vec<ParquetFile>,
}

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Runs of files merged.
    pub runs: usize,
    /// Files merged away.
    pub files_in: usize,
    /// Files written in their place.
    pub files_out: usize,
    /// Rows read from the merged files.
    pub rows_in: u64,
    /// Rows written (fewer: overwritten, deleted and expired rows are gone).
    pub rows_out: u64,
    /// Bytes of the merged files.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Files dropped whole because every row in them outlived the retention.
    pub expired_files: usize,
    /// Merges whose swap was refused because their inputs left the catalog
    /// meanwhile; they are retried in the next pass.
    pub retried: usize,
    /// Replaced files deleted from storage in this pass.
    pub deleted_files: usize,
}

/// Sizes of one table, for the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Parquet files.
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
    /// Rows in those files (overwritten and deleted rows not yet compacted away are
    /// counted too).
    pub file_rows: u64,
    /// Rows not in Parquet yet.
    pub buffer_rows: usize,
    /// Earliest time in the files, ns.
    pub min_time: Option<i64>,
    /// Latest time in the files, ns.
    pub max_time: Option<i64>,
    /// Tombstones waiting for compaction.
    pub tombstones: usize,
}

/// Aborts the process at the named point when `GRIDLAKE_FAILPOINTS` (a comma-separated
/// list) names it: how the crash tests kill the server at an exact step of a
/// compaction. Written by hand because the `fail` crate compiles its points in only
/// with a cargo feature, and the crash tests run the binary CI builds anyway.
pub(super) fn failpoint(name: &str) {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var("GRIDLAKE_FAILPOINTS")
            .map(|v| v.split(',').map(|p| p.trim().to_owned()).collect())
            .unwrap_or_default()
    });
    if points.iter().any(|p| p == name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting");
        std::process::abort();
    }
}

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// `now - ttl` in ns: rows before it have expired.
pub(super) fn cutoff(now_ns: i64, ttl: Duration) -> i64 {
    now_ns.saturating_sub(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX))
}

impl Shared {
    /// The retention of `table`: the API's setting, else the configured one.
    pub(super) fn retention_in(&self, catalog: &Catalog, table: &str) -> Option<Duration> {
        match catalog.retention.get(table) {
            Some(setting) => setting.map(|t| t.0),
            None => self.config.retention.get(table).copied(),
        }
    }

    /// Checks a delete before it is queued: the table exists, the tags are its tags.
    pub(super) fn check_delete(&self, predicate: &DeletePredicate) -> Result<()> {
        let schema = self
            .schemas
            .read()
            .get(&predicate.table)
            .cloned()
            .ok_or_else(|| Error::TableNotFound(predicate.table.clone()))?;
        for (tag, _) in &predicate.tags {
            match schema.kind(tag) {
                Some(ColumnKind::Tag) => {}
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "column {tag:?} of table {:?} is not a tag: deletes select series by tags",
                        predicate.table
                    )));
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "table {:?} has no tag {tag:?}",
                        predicate.table
                    )));
                }
            }
        }
        if predicate.range.min > predicate.range.max {
            return Err(Error::Invalid(format!(
                "the delete's time range ends ({}) before it starts ({})",
                predicate.range.max, predicate.range.min
            )));
        }
        Ok(())
    }

    /// Records a tombstone (persister thread). Every write acknowledged before the
    /// delete is in a file by now: the writer snapshotted the buffer before queueing
    /// the delete behind that snapshot.
    pub(super) fn record_delete(&self, predicate: DeletePredicate) -> Result<Tombstone> {
        // A snapshot the persister gave up on (at shutdown) still holds writes from
        // before the delete; they come back from the WAL into newer files, which the
        // tombstone would not cover. Refuse rather than half delete.
        if !self.state.read().persisting.is_empty() {
            return Err(Error::Wal(std::io::Error::other(
                "a snapshot could not be written to Parquet; the delete was not recorded",
            )));
        }
        let mut catalog = self.state.read().catalog.clone();
        let next_file_id = *self.next_file_id.lock();
        let tombstone = Tombstone {
            id: catalog.next_tombstone_id,
            table: predicate.table,
            tags: predicate.tags,
            min_time: predicate.range.min,
            max_time: predicate.range.max,
            files_through: next_file_id.saturating_sub(1),
            created_ns: now_ns(),
        };
        catalog.next_tombstone_id += 1;
        catalog.tombstones.push(tombstone.clone());
        prune_tombstones(&mut catalog);
        catalog.next_file_id = next_file_id;
        self.save_catalog(&catalog)?;
        self.state.write().catalog = catalog;
        self.update_gauges();
        tracing::info!(
            id = tombstone.id,
            table = %tombstone.table,
            tags = ?tombstone.tags,
            min_time = tombstone.min_time,
            max_time = tombstone.max_time,
            "delete recorded"
        );
        Ok(tombstone)
    }

    /// Sets or clears a table's retention override (persister thread).
    pub(super) fn record_retention(
        &self,
        table: &str,
        ttl: Option<Option<Duration>>,
    ) -> Result<()> {
        let mut catalog = self.state.read().catalog.clone();
        match ttl {
            Some(ttl) => {
                catalog.retention.insert(table.to_owned(), ttl.map(Ttl));
            }
            None => {
                catalog.retention.remove(table);
            }
        }
        catalog.next_file_id = *self.next_file_id.lock();
        self.save_catalog(&catalog)?;
        self.state.write().catalog = catalog;
        Ok(())
    }

    /// Puts a compaction's outputs in place of its inputs, or refuses when the inputs
    /// changed since the compaction planned (persister thread). Returns whether it
    /// swapped.
    pub(super) fn apply_swap(&self, swap: Swap) -> Result<bool> {
        let mut catalog = self.state.read().catalog.clone();
        let Some(entry) = catalog.tables.get_mut(&swap.table) else {
            return Ok(false);
        };
        // A delete recorded while the compaction ran needs no check here: the outputs
        // carry the newest input's id, at most the tombstone's `files_through`, and
        // `deletes_applied` from before it, so the tombstone applies to them too.
        let all_present = swap
            .removed
            .iter()
            .all(|r| entry.files.iter().any(|f| f.path == r.path));
        if !all_present {
            return Ok(false);
        }
        entry
            .files
            .retain(|f| !swap.removed.iter().any(|r| r.path == f.path));
        entry.files.extend(swap.added.iter().cloned());
        // Id order is write order; the scans sort anyway, the catalog stays readable.
        entry
            .files
            .sort_by(|a, b| (a.id, &a.path).cmp(&(b.id, &b.path)));
        prune_tombstones(&mut catalog);
        catalog.next_file_id = *self.next_file_id.lock();
        self.save_catalog(&catalog)?;
        {
            let mut state = self.state.write();
            state.catalog = catalog;
            for f in &swap.added {
                state.leases.insert(
                    f.path.clone(),
                    Lease::new(f.path.clone(), self.garbage.0.clone()),
                );
            }
            for f in &swap.removed {
                if let Some(lease) = state.leases.remove(&f.path) {
                    lease.retired.store(true, Ordering::Release);
                }
            }
        }
        self.update_gauges();
        Ok(true)
    }

    /// One pass: drop expired files, merge what the plan picks, delete replaced files
    /// no scan holds. One pass at a time (the background thread and `compact_now`).
    pub(super) fn compaction_pass(
        &self,
        persist_tx: &Sender<PersistJob>,
        now_ns: i64,
    ) -> Result<CompactionStats> {
        let _one_at_a_time = self.compaction.lock();
        let mut stats = CompactionStats::default();
        self.expire(persist_tx, now_ns, &mut stats)?;

        let catalog = self.state.read().catalog.clone();
        let schemas = self.schemas.read().clone();
        let jobs = compact::plan(&catalog, &self.config, now_ns);
        let max_tombstone_id = catalog.next_tombstone_id.saturating_sub(1);
        for job in jobs {
            if self.closing.load(Ordering::Acquire) {
                break;
            }
            let Some(schema) = schemas.get(&job.table) else {
                continue;
            };
            let tombstones: Vec<Tombstone> = catalog
                .tombstones
                .iter()
                .filter(|t| t.table == job.table)
                .cloned()
                .collect();
            let expire_before = self
                .retention_in(&catalog, &job.table)
                .map(|ttl| cutoff(now_ns, ttl));
            let outputs = self.merge(&job, schema, &tombstones, max_tombstone_id, expire_before)?;
            failpoint("compact-after-write");
            let swap = Swap {
                table: job.table.clone(),
                removed: job.files.clone(),
                added: outputs.clone(),
            };
            // On an error the catalog on disk may or may not name the outputs (a
            // save that failed after its rename): they are left for the next start,
            // which removes them if they are orphans.
            if ask_persister(persist_tx, |ack| PersistJob::Swap(swap, ack))? {
                failpoint("compact-after-swap");
                stats.runs += 1;
                stats.files_in += job.files.len();
                stats.files_out += outputs.len();
                stats.rows_in += job.files.iter().map(|f| f.row_count).sum::<u64>();
                stats.rows_out += outputs.iter().map(|f| f.row_count).sum::<u64>();
                stats.bytes_in += job.files.iter().map(|f| f.size_bytes).sum::<u64>();
                stats.bytes_out += outputs.iter().map(|f| f.size_bytes).sum::<u64>();
                self.metrics.compactions.inc();
                self.metrics.compacted_files.inc_by(job.files.len() as u64);
                self.metrics
                    .compaction_bytes_written
                    .inc_by(outputs.iter().map(|f| f.size_bytes).sum());
                tracing::info!(
                    table = %job.table,
                    day = %persist::day_name(job.day),
                    files_in = job.files.len(),
                    files_out = outputs.len(),
                    "compacted"
                );
            } else {
                // The outputs were never in the catalog: nobody reads them.
                for f in &outputs {
                    self.delete_object(&f.path);
                }
                stats.retried += 1;
            }
        }
        stats.deleted_files += self.collect_garbage();
        Ok(stats)
    }

    /// Merges one job's files (compaction thread).
    fn merge(
        &self,
        job: &CompactionJob,
        schema: &TableSchema,
        tombstones: &[Tombstone],
        max_tombstone_id: u64,
        expire_before: Option<i64>,
    ) -> Result<Vec<ParquetFile>> {
        let next_uniq = || {
            let mut next = self.next_file_id.lock();
            let id = *next;
            *next += 1;
            id
        };
        compact::compact(
            &self.objects,
            schema,
            job,
            tombstones,
            max_tombstone_id,
            expire_before,
            &self.config,
            &next_uniq,
        )
    }

    /// Drops the files all of whose rows have expired.
    fn expire(
        &self,
        persist_tx: &Sender<PersistJob>,
        now_ns: i64,
        stats: &mut CompactionStats,
    ) -> Result<()> {
        let catalog = self.state.read().catalog.clone();
        for (table, entry) in &catalog.tables {
            let Some(ttl) = self.retention_in(&catalog, table) else {
                continue;
            };
            let before = cutoff(now_ns, ttl);
            let expired: Vec<ParquetFile> = entry
                .files
                .iter()
                .filter(|f| f.max_time < before)
                .cloned()
                .collect();
            if expired.is_empty() {
                continue;
            }
            let count = expired.len();
            let swap = Swap {
                table: table.clone(),
                removed: expired,
                added: Vec::new(),
            };
            // On an error the catalog on disk may or may not name the outputs (a
            // save that failed after its rename): they are left for the next start,
            // which removes them if they are orphans.
            if ask_persister(persist_tx, |ack| PersistJob::Swap(swap, ack))? {
                stats.expired_files += count;
                self.metrics.expired_files.inc_by(count as u64);
                tracing::info!(%table, files = count, ?ttl, "dropped expired files");
            }
        }
        Ok(())
    }

    /// Deletes the replaced files that no scan holds any more; returns how many.
    pub(super) fn collect_garbage(&self) -> usize {
        let mut deleted = 0;
        while let Ok(path) = self.garbage.1.try_recv() {
            self.delete_object(&path);
            deleted += 1;
        }
        deleted
    }

    /// Deletes a file that is not in the catalog. A failure is only logged: the file
    /// is an orphan, removed at the next start.
    fn delete_object(&self, path: &str) {
        if let Err(e) = self.objects.delete(path) {
            tracing::warn!(error = %e, path, "could not delete a replaced Parquet file; the next start removes it");
        }
    }

    /// Sizes of one table.
    pub(super) fn table_stats(&self, table: &str) -> Option<TableStats> {
        if !self.schemas.read().contains_key(table) {
            return None;
        }
        let state = self.state.read();
        let mut stats = TableStats::default();
        if let Some(entry) = state.catalog.tables.get(table) {
            for f in &entry.files {
                stats.files += 1;
                stats.bytes += f.size_bytes;
                stats.file_rows += f.row_count;
                stats.min_time = Some(stats.min_time.map_or(f.min_time, |t| t.min(f.min_time)));
                stats.max_time = Some(stats.max_time.map_or(f.max_time, |t| t.max(f.max_time)));
            }
        }
        stats.buffer_rows = state
            .buffer
            .table_batches(table)
            .iter()
            .chain(
                state
                    .persisting
                    .iter()
                    .filter_map(|c| c.tables.get(table))
                    .flatten(),
            )
            .map(RecordBatch::num_rows)
            .sum();
        stats.tombstones = state
            .catalog
            .tombstones
            .iter()
            .filter(|t| t.table == table)
            .count();
        Some(stats)
    }
}

/// Drops the tombstones that no file needs any more: every file they applied to has
/// been rewritten without their rows or dropped.
fn prune_tombstones(catalog: &mut Catalog) {
    let tables = &catalog.tables;
    catalog.tombstones.retain(|t| {
        tables
            .get(&t.table)
            .is_some_and(|entry| entry.files.iter().any(|f| t.applies_to(f)))
    });
}

/// The compaction thread: a pass every `compaction_interval` until told to stop.
pub(super) fn run_compaction(
    shared: Arc<Shared>,
    persist_tx: Sender<PersistJob>,
    stop: Receiver<()>,
) {
    let interval = shared.config.compaction_interval;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        match shared.compaction_pass(&persist_tx, now_ns()) {
            Ok(stats) if stats.runs > 0 || stats.expired_files > 0 => {
                tracing::debug!(?stats, "compaction pass");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "compaction pass failed; its inputs stay as they were")
            }
        }
    }
    shared.collect_garbage();
}

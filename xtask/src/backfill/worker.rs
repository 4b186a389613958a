//! One backfill worker: claims page ranges of a table from a shared counter until none are
//! left, each range one UPDATE (one transaction) through a TID range scan, so the heap is read
//! in order. A batch slower than the batch time halves the next range; a fast one doubles it
//! again, up to the range that holds about `--batch-size` rows.
//!
//! Each batch waits at most [`super::BATCH_LOCK_TIMEOUT`] for a lock: a batch that finds a row
//! another transaction holds gives up at once (releasing the rows it had filled, so no app
//! update waits behind it) and fills the range around the held rows instead; the range is
//! handed to `held` to come back for.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::Client;

use super::held;
use super::replica::ReplicaGate;
use crate::{db, interrupt, tenancy};

/// What the workers of one table read: the table, its size and the batch limits.
pub(crate) struct TablePlan<'a> {
    pub table: &'a str,
    /// The table's size in pages when the backfill started; rows that move to later pages while
    /// it runs already have a `workspaceId` (the trigger fills every row the app writes).
    pub pages: i64,
    /// The page range that holds about `--batch-size` rows: the largest a batch may claim.
    pub max_pages: i64,
    pub batch_time: Duration,
    pub deadline: Option<Instant>,
    /// Waits before each batch while a standby lags (`--max-replica-lag`).
    pub replica: Option<&'a ReplicaGate>,
}

/// What the workers of one table share: the next unclaimed page and the running totals.
#[derive(Default)]
pub(crate) struct WorkerState {
    pub next_page: AtomicI64,
    pub rows: AtomicI64,
    pub batches: AtomicU64,
    /// Another worker failed: stop claiming.
    pub stop: AtomicBool,
    pub out_of_time: AtomicBool,
    /// Page ranges with rows another transaction held, to come back for.
    pub held: Mutex<Vec<(i64, i64)>>,
    /// NULL rows left in those ranges when they were filled around.
    pub held_rows: AtomicI64,
}

pub(crate) fn run(client: &mut Client, plan: &TablePlan, state: &WorkerState) -> Result<()> {
    let sql = tenancy::backfill_batch_sql(plan.table);
    let statement = client
        .prepare(&sql)
        .with_context(|| format!("cannot prepare the backfill batch of `{}`", plan.table))?;
    let mut pages_per_batch = plan.max_pages;
    loop {
        interrupt::check()?;
        if state.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(deadline) = plan.deadline {
            if Instant::now() >= deadline && state.batches.load(Ordering::SeqCst) > 0 {
                state.out_of_time.store(true, Ordering::SeqCst);
                return Ok(());
            }
        }
        if let Some(gate) = plan.replica {
            if !gate.wait_for_standbys(client, plan.table, plan.deadline, &state.stop)? {
                // Out of time while a standby lagged (unless another worker failed).
                if !state.stop.load(Ordering::SeqCst) {
                    state.out_of_time.store(true, Ordering::SeqCst);
                }
                return Ok(());
            }
        }
        let first = state.next_page.fetch_add(pages_per_batch, Ordering::SeqCst);
        if first >= plan.pages {
            return Ok(());
        }
        let end = (first + pages_per_batch).min(plan.pages);
        let batch_started = Instant::now();
        let batch =
            interrupt::cancellable(client, |client| client.execute(&statement, &[&first, &end]));
        let updated = match batch {
            Ok(updated) => updated as i64,
            Err(error) if db::is_lock_timeout(&error) => {
                let (updated, left) = held::fill_around(client, plan.table, first, end)?;
                if left > 0 {
                    state
                        .held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((first, end));
                    state.held_rows.fetch_add(left, Ordering::SeqCst);
                }
                updated
            }
            Err(error) => return Err(batch_error(error, plan.table, first, end)),
        };
        state.rows.fetch_add(updated, Ordering::SeqCst);
        state.batches.fetch_add(1, Ordering::SeqCst);
        let took = batch_started.elapsed();
        if took > plan.batch_time {
            pages_per_batch = (pages_per_batch / 2).max(1);
        } else if took < plan.batch_time / 2 {
            pages_per_batch = (pages_per_batch * 2).min(plan.max_pages);
        }
    }
}

/// A failed batch: rolled back whole, so nothing of it is left half done.
pub(crate) fn batch_error(
    error: postgres::Error,
    table: &str,
    first: i64,
    end: i64,
) -> anyhow::Error {
    let what = format!(
        "the backfill batch of `{table}` (pages {first} to {end}) was rolled back; the rows filled before it are kept: run `cargo xtask backfill` again to continue"
    );
    match interrupt::requested() {
        Some(signal) if interrupt::stopped_by(&error).is_some() => {
            anyhow::Error::new(interrupt::Interrupted(signal)).context(what)
        }
        _ => anyhow::Error::new(error).context(what),
    }
}

//! One backfill worker: claims page ranges of a table from a shared counter until none are
//! left, each range one UPDATE (one transaction) through a TID range scan, so the heap is read
//! in order. A batch slower than the batch time halves the next range; a fast one doubles it
//! again, up to the range that holds about `--batch-size` rows.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::Client;

use super::replica::ReplicaGate;
use crate::tenancy;

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
}

pub(crate) fn run(client: &mut Client, plan: &TablePlan, state: &WorkerState) -> Result<()> {
    let sql = tenancy::backfill_batch_sql(plan.table);
    let statement = client
        .prepare(&sql)
        .with_context(|| format!("cannot prepare the backfill batch of `{}`", plan.table))?;
    let mut pages_per_batch = plan.max_pages;
    loop {
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
        let updated = client.execute(&statement, &[&first, &end]).with_context(|| {
            format!(
                "the backfill batch of `{}` (pages {first} to {end}) failed; run `cargo xtask backfill` again to continue",
                plan.table
            )
        })?;
        state.rows.fetch_add(updated as i64, Ordering::SeqCst);
        state.batches.fetch_add(1, Ordering::SeqCst);
        let took = batch_started.elapsed();
        if took > plan.batch_time {
            pages_per_batch = (pages_per_batch / 2).max(1);
        } else if took < plan.batch_time / 2 {
            pages_per_batch = (pages_per_batch * 2).min(plan.max_pages);
        }
    }
}

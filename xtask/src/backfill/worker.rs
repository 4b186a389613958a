//! One backfill worker: claims page ranges of a table from a shared counter until none are
//! left, each range one UPDATE (one transaction) through a TID range scan, so the heap is read
//! in order. A batch slower than the batch time halves the next range; a fast one doubles it
//! again, up to the range that holds about `--batch-size` rows.
//!
//! Each batch waits at most [`super::BATCH_LOCK_TIMEOUT`] for a lock: a batch that finds a row
//! another transaction holds gives up at once (releasing the rows it had filled, so no app
//! update waits behind it) and fills the range around the held rows instead; the range is
//! handed to `held` to come back for.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::db::Client;
use anyhow::{Context, Result};

use super::held;
use super::plan::{batch_error, TablePlan, WorkerState};
use crate::{db, interrupt};

pub(crate) fn run(client: &mut Client, plan: &TablePlan, state: &WorkerState) -> Result<()> {
    let sql = plan.rule.batch_sql(plan.table, plan.column);
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
        if let Some(gate) = plan.horizon {
            if !gate.wait_for_horizon(client, plan.table, plan.deadline, &state.stop)? {
                // Out of time while paused (unless another worker failed).
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
                let (updated, left) = held::fill_around(client, plan, first, end)?;
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

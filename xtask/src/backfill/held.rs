//! Rows another transaction holds. The app (or anyone) may hold a row lock for as long as its
//! transaction stays open; a batch that waited for it would keep the row locks of every row it
//! had already filled, and app updates of those unrelated rows would queue behind it. So a
//! batch gives up on a lock at once, the range is filled around the held rows (SKIP LOCKED),
//! and the backfill comes back for them at the end of the table, with backoff, within the lock
//! budget (`--lock-timeout`). Rows still held after that are left NULL and named: the next
//! `cargo xtask backfill` continues, and `check` stops the contract until then.

use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};

use super::plan::{batch_error, TablePlan};
use crate::releases::rule;
use crate::{db, interrupt};

/// Fills pages `first` to `end` (exclusive) of `table` around the rows another transaction
/// holds; returns the rows filled and the NULL rows left (held). When even the table lock is
/// not to be had within the batch's `lock_timeout`, nothing is filled and the range counts as
/// held, with one row standing for the unknown number.
pub(crate) fn fill_around(
    client: &mut Client,
    plan: &TablePlan,
    first: i64,
    end: i64,
) -> Result<(i64, i64)> {
    let table = plan.table;
    let fill = plan.rule.batch_skip_held_sql(table, plan.column);
    let filled = match interrupt::cancellable(client, |client| {
        client.execute(fill.as_str(), &[&first, &end])
    }) {
        Ok(filled) => filled as i64,
        Err(error) if db::is_lock_timeout(&error) => return Ok((0, 1)),
        Err(error) => return Err(batch_error(error, table, first, end)),
    };
    let count = rule::nulls_in_pages_sql(table, plan.column);
    let left: i64 = match client.query_one(count.as_str(), &[&first, &end]) {
        Ok(row) => row.get(0),
        Err(error) if db::is_lock_timeout(&error) => 1,
        Err(error) => {
            return Err(error).with_context(|| format!("cannot count the held rows of `{table}`"))
        }
    };
    Ok((filled, left))
}

/// What coming back for held rows achieved.
pub(crate) struct CameBack {
    pub filled: i64,
    /// NULL rows still held when the budget ran out (0: all filled).
    pub still_held: i64,
}

/// Comes back for the held page ranges of `table` until they are filled, the lock budget is
/// spent or the deadline passes, saying on the progress line how many rows are held.
pub(crate) fn come_back(
    client: &mut Client,
    plan: &TablePlan,
    mut ranges: Vec<(i64, i64)>,
    budget: Duration,
    deadline: Option<Instant>,
    progress: bool,
) -> Result<CameBack> {
    let started = Instant::now();
    let table = plan.table;
    let mut filled = 0;
    let mut wait = Duration::from_millis(250);
    loop {
        let mut still_held = 0;
        let mut kept = Vec::new();
        for (first, end) in ranges {
            let (done, left) = fill_around(client, plan, first, end)?;
            filled += done;
            if left > 0 {
                still_held += left;
                kept.push((first, end));
            }
        }
        ranges = kept;
        if ranges.is_empty() {
            return Ok(CameBack {
                filled,
                still_held: 0,
            });
        }
        let out_of_time = deadline.is_some_and(|d| Instant::now() + wait >= d);
        if started.elapsed() + wait > budget || out_of_time {
            return Ok(CameBack { filled, still_held });
        }
        if progress {
            eprintln!(
                "  {table}: {still_held} row(s) held by other transactions (row locks); coming back for them in {} ms ({:.0} s of the {} s lock budget spent)",
                wait.as_millis(),
                started.elapsed().as_secs_f64(),
                budget.as_secs()
            );
        }
        interrupt::sleep(wait)?;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

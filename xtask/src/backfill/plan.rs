//! What the workers of one column share: the plan they read (the table, its size, the rule and
//! the batch limits) and the state they update (the next unclaimed page, the running totals,
//! the ranges with held rows), and how a failed batch is reported.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::horizon::HorizonGate;
use super::replica::ReplicaGate;
use crate::interrupt;
use crate::releases::Rule;

/// What the workers of one table read: the table, its size and the batch limits.
pub(crate) struct TablePlan<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub rule: &'a Rule,
    /// The table's size in pages when the backfill started; rows that move to later pages while
    /// it runs already have a `workspaceId` (the trigger fills every row the app writes).
    pub pages: i64,
    /// The page range that holds about `--batch-size` rows: the largest a batch may claim.
    pub max_pages: i64,
    pub batch_time: Duration,
    pub deadline: Option<Instant>,
    /// Waits before each batch while a standby lags (`--max-replica-lag`).
    pub replica: Option<&'a ReplicaGate>,
    /// Pauses before each batch while the xmin horizon is held back (`--max-horizon-age`).
    pub horizon: Option<&'a HorizonGate>,
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

//! The bench's standby, watched: how far its replay falls behind while a step runs (sampled
//! from `pg_stat_replication` on the primary, by the same rule the backfill waits by), and how
//! much WAL a step writes (the primary's WAL insert position before and after).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{bail, Context, Result};

use crate::backfill::replica::standbys;
use crate::db::{Connect, DatabaseUrl};

/// How often the sampler reads `pg_stat_replication`.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// The standby's replay lag seen while a step ran.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lag {
    /// The largest `replay_lag` seen while WAL was left to replay, in ms.
    pub max_ms: f64,
    /// The most WAL seen not yet replayed, in bytes.
    pub max_bytes: i64,
}

/// Samples the standbys' replay lag from its own connection until `finish`.
pub(crate) struct LagSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Lag>>,
}

impl LagSampler {
    pub(crate) fn start(url: &DatabaseUrl) -> Result<LagSampler> {
        let mut client = url.connect()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || -> Result<Lag> {
            let mut lag = Lag::default();
            while !stopping.load(Ordering::SeqCst) {
                for standby in standbys(&mut client)? {
                    // Caught up (no WAL left to replay), a stale `replay_lag` is no lag.
                    let bytes = standby.bytes_behind.unwrap_or(0);
                    if bytes > 0 {
                        lag.max_ms = lag.max_ms.max(standby.lag_ms());
                        lag.max_bytes = lag.max_bytes.max(bytes);
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            Ok(lag)
        });
        Ok(LagSampler { stop, handle })
    }

    pub(crate) fn finish(self) -> Result<Lag> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the replica lag sampler panicked"))?
    }
}

/// The primary's WAL insert position, to measure the WAL a step writes.
pub(crate) fn wal_position(client: &mut Client) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .context("cannot read the WAL position")?
        .get(0))
}

/// Bytes of WAL written since `position` (by the whole cluster: the step, the simulated app's
/// writes, autovacuum and checkpoints' full-page images included).
pub(crate) fn wal_since(client: &mut Client, position: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint",
            &[&position],
        )
        .context("cannot measure the WAL written")?
        .get(0))
}

/// Waits until every standby has replayed all WAL, then checkpoints, so each measured step
/// starts with the standby caught up and its first page writes paying full-page images alike.
pub(crate) fn settle(client: &mut Client) -> Result<()> {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let behind: i64 = standbys(client)?
            .iter()
            .map(|s| s.bytes_behind.unwrap_or(0))
            .max()
            .unwrap_or(0);
        if behind <= 0 {
            break;
        }
        if !announced && started.elapsed() > Duration::from_secs(5) {
            eprintln!("waiting for the standby to replay {behind} bytes of WAL ...");
            announced = true;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the bench's standby did not catch up within 30 minutes ({behind} bytes behind); see the cluster's standby.log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    client
        .batch_execute("CHECKPOINT")
        .context("cannot CHECKPOINT")?;
    Ok(())
}

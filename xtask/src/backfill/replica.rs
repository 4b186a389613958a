//! Keeping streaming standbys in step: before each batch a worker reads `pg_stat_replication` on
//! the primary and waits while any standby replays more than `--max-replica-lag` behind, saying
//! which standby and how far behind it is.
//!
//! The rule has to be right in the three states a standby shows:
//! - idle and caught up: `replay_lag` turns NULL about a second after the last WAL, and no WAL
//!   is left to replay: not lagging;
//! - just caught up: `replay_lag` keeps a stale value for about a second, but no WAL is left to
//!   replay: not lagging;
//! - replay stopped or slow: WAL is left to replay and `replay_lag` grows with wall time, even
//!   while no new WAL arrives: lagging once it reaches the limit.
//!
//! So a standby lags when WAL is left to replay AND its replay lag (NULL counts as 0) is at
//! least the limit; a limit of 0 waits until every byte is replayed. Right after an idle spell
//! `replay_lag` is NULL until the standby's next reply, so one batch may pass before the first
//! measurement: the lag can exceed the limit by at most one batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};

use crate::error::environment;

/// The limit when the server streams to a standby and no `--max-replica-lag` is given.
pub const DEFAULT_MAX_REPLICA_LAG: Duration = Duration::from_secs(1);

/// How often a waiting worker reads `pg_stat_replication` again.
const POLL: Duration = Duration::from_millis(50);

/// `--max-replica-lag`, or its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaLagLimit {
    /// `DEFAULT_MAX_REPLICA_LAG` when the server streams to a standby, no limit otherwise.
    Auto,
    /// `--max-replica-lag MS`: wait for every standby, however many there are.
    Max(Duration),
}

/// One standby (or other WAL receiver) as the primary sees it in `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Standby {
    /// Its `application_name` (a standby's `cluster_name`), else its address.
    pub name: String,
    /// `streaming`, `catchup`, `startup`, …; None when this role may not see it (it needs
    /// `pg_monitor`), and then its positions and lags are hidden too.
    pub state: Option<String>,
    /// WAL written on the primary that the standby has not replayed yet.
    pub bytes_behind: Option<i64>,
    /// `replay_lag` in milliseconds; None once the standby has been idle for a second.
    pub replay_lag_ms: Option<f64>,
}

/// Every WAL receiver but a base backup in progress, most behind first. Reads a statistics view:
/// no lock. `pg_current_wal_lsn()` fails on a standby, where the backfill cannot write anyway.
const STANDBYS_SQL: &str = r#"
    SELECT coalesce(nullif(application_name, ''), host(client_addr), 'walsender pid ' || pid),
           state,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
           (extract(epoch FROM replay_lag) * 1000)::float8
    FROM pg_stat_replication
    WHERE state IS DISTINCT FROM 'backup'
    ORDER BY 3 DESC NULLS LAST, 1"#;

pub(crate) fn standbys(client: &mut Client) -> Result<Vec<Standby>> {
    Ok(client
        .query(STANDBYS_SQL, &[])
        .context("cannot read `pg_stat_replication`")?
        .iter()
        .map(|row| Standby {
            name: row.get(0),
            state: row.get(1),
            bytes_behind: row.get(2),
            replay_lag_ms: row.get(3),
        })
        .collect())
}

impl Standby {
    /// A standby whose replay position the primary knows and reports.
    fn measured(&self) -> bool {
        matches!(self.state.as_deref(), Some("streaming" | "catchup"))
    }

    /// The replay lag to compare with the limit: NULL (idle) counts as 0.
    pub(crate) fn lag_ms(&self) -> f64 {
        self.replay_lag_ms.unwrap_or(0.0)
    }

    /// WAL left to replay, and replay `limit` or more behind.
    pub(crate) fn lags(&self, limit: Duration) -> bool {
        self.measured()
            && self.bytes_behind.unwrap_or(0) > 0
            && self.lag_ms() >= limit.as_secs_f64() * 1000.0
    }

    /// `` `standby1`: replay 2.4 s behind, 14.2 MB of WAL ``
    pub(crate) fn describe(&self) -> String {
        format!(
            "`{}`: replay {:.1} s behind, {} of WAL",
            self.name,
            self.lag_ms() / 1000.0,
            bytes(self.bytes_behind.unwrap_or(0))
        )
    }
}

/// The standby furthest behind among those over the limit, if any.
pub(crate) fn most_behind(standbys: &[Standby], limit: Duration) -> Option<&Standby> {
    standbys
        .iter()
        .filter(|s| s.lags(limit))
        .max_by(|a, b| a.lag_ms().total_cmp(&b.lag_ms()))
}

fn bytes(n: i64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// What the backfill's report says about the standbys.
#[derive(Debug, Clone)]
pub struct ReplicaSummary {
    pub limit: Duration,
    /// The standbys streaming when the backfill started.
    pub standbys: Vec<String>,
    /// How many times the backfill paused for a standby, and for how long in all.
    pub waits: u64,
    pub waited: Duration,
}

/// Shared by the workers of one backfill: one worker reads the standbys at a time, so while one
/// waits the others wait behind it and the wait is announced once.
pub(crate) struct ReplicaGate {
    limit: Duration,
    progress: bool,
    turn: Mutex<()>,
    /// The standbys known so far, to say when one disappears (it no longer holds the backfill).
    known: Mutex<Vec<String>>,
    started_with: Vec<String>,
    /// While waiting: what the progress line says.
    waiting: Mutex<Option<String>>,
    waits: AtomicU64,
    waited_ms: AtomicU64,
}

/// The gate for this run: None when there is nothing to wait for (no standby and no explicit
/// limit) or, with the default limit, when this role cannot see the standbys' replay positions
/// (it says so). An explicit limit that cannot be measured is an error.
pub(crate) fn gate(
    client: &mut Client,
    limit: ReplicaLagLimit,
    progress: bool,
) -> Result<Option<ReplicaGate>> {
    let found = standbys(client)?;
    let hidden: Vec<&Standby> = found.iter().filter(|s| s.state.is_none()).collect();
    let limit = match limit {
        ReplicaLagLimit::Auto if found.is_empty() => return Ok(None),
        ReplicaLagLimit::Auto if !hidden.is_empty() => {
            if progress {
                eprintln!(
                    "  note: {} WAL receiver(s) stream from this server, but this role cannot see their replay lag, so the backfill does not wait for them; run `GRANT pg_monitor TO {}` to keep them in step",
                    found.len(),
                    current_user(client)?
                );
            }
            return Ok(None);
        }
        ReplicaLagLimit::Auto => DEFAULT_MAX_REPLICA_LAG,
        ReplicaLagLimit::Max(_) if !hidden.is_empty() => {
            return Err(environment(format!(
                "cannot measure the replay lag of `{}` for `--max-replica-lag`: the role `{user}` sees no positions in `pg_stat_replication`; run `GRANT pg_monitor TO {user}` as a superuser, or leave out `--max-replica-lag`",
                hidden[0].name,
                user = current_user(client)?
            )));
        }
        ReplicaLagLimit::Max(limit) => limit,
    };
    let names: Vec<String> = found
        .iter()
        .filter(|s| s.measured())
        .map(|s| s.name.clone())
        .collect();
    if progress {
        eprintln!(
            "  replica lag limit {} ms: {}",
            limit.as_millis(),
            match names.len() {
                0 => "no standby streams now; the backfill waits for any that starts".to_string(),
                _ => format!("waiting between batches while {} lags", quoted(&names)),
            }
        );
    }
    Ok(Some(ReplicaGate {
        limit,
        progress,
        turn: Mutex::new(()),
        known: Mutex::new(names.clone()),
        started_with: names,
        waiting: Mutex::new(None),
        waits: AtomicU64::new(0),
        waited_ms: AtomicU64::new(0),
    }))
}

fn current_user(client: &mut Client) -> Result<String> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .context("cannot read the current role")?
        .get(0))
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ReplicaGate {
    /// Returns true once no standby lags over the limit, false when `deadline` passes (or
    /// `stop` is set) first. Announces a wait when it starts and when it ends.
    pub(crate) fn wait_for_standbys(
        &self,
        client: &mut Client,
        table: &str,
        deadline: Option<Instant>,
        stop: &AtomicBool,
    ) -> Result<bool> {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut since: Option<Instant> = None;
        loop {
            let found = standbys(client)?;
            self.note_arrivals_and_departures(&found);
            let Some(standby) = most_behind(&found, self.limit) else {
                if let Some(since) = since {
                    self.end_wait(since);
                    if self.progress {
                        eprintln!(
                            "  {table}: replicas within {} ms again after {:.1} s; resuming",
                            self.limit.as_millis(),
                            since.elapsed().as_secs_f64()
                        );
                    }
                }
                return Ok(true);
            };
            let why = format!(
                "waiting for replica {}, over --max-replica-lag {} ms",
                standby.describe(),
                self.limit.as_millis()
            );
            if since.is_none() {
                since = Some(Instant::now());
                self.waits.fetch_add(1, Ordering::SeqCst);
                if self.progress {
                    eprintln!("  {table}: {why}");
                }
            }
            *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if out_of_time || stop.load(Ordering::SeqCst) {
                if let Some(since) = since {
                    self.end_wait(since);
                }
                return Ok(false);
            }
            // A signal ends the wait at once: the backfill then stops as it does between
            // batches, its batches so far committed.
            if crate::interrupt::requested().is_some() {
                if let Some(since) = since {
                    self.end_wait(since);
                }
                crate::interrupt::check()?;
            }
            std::thread::sleep(POLL);
        }
    }

    fn end_wait(&self, since: Instant) {
        self.waited_ms
            .fetch_add(since.elapsed().as_millis() as u64, Ordering::SeqCst);
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A standby that leaves `pg_stat_replication` no longer holds the backfill back, and one
    /// that starts streaming does from now on: both are said once.
    fn note_arrivals_and_departures(&self, found: &[Standby]) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let now: Vec<&Standby> = found.iter().filter(|s| s.measured()).collect();
        for name in known.clone() {
            if !now.iter().any(|s| s.name == name) {
                known.retain(|n| *n != name);
                if self.progress {
                    eprintln!("  replica `{name}` no longer streams from this server; the backfill no longer waits for it");
                }
            }
        }
        for standby in now {
            if !known.contains(&standby.name) {
                known.push(standby.name.clone());
                if self.progress {
                    eprintln!(
                        "  replica `{}` streams from this server; the backfill keeps it within {} ms too",
                        standby.name,
                        self.limit.as_millis()
                    );
                }
            }
        }
    }

    /// What the progress line adds while a worker waits for a standby.
    pub(crate) fn waiting(&self) -> Option<String> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn summary(&self) -> ReplicaSummary {
        ReplicaSummary {
            limit: self.limit,
            standbys: self.started_with.clone(),
            waits: self.waits.load(Ordering::SeqCst),
            waited: Duration::from_millis(self.waited_ms.load(Ordering::SeqCst)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standby(state: Option<&str>, bytes: Option<i64>, lag_ms: Option<f64>) -> Standby {
        Standby {
            name: "standby1".into(),
            state: state.map(str::to_string),
            bytes_behind: bytes,
            replay_lag_ms: lag_ms,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn idle_and_caught_up_is_not_lagging_whatever_the_limit() {
        // replay_lag NULL after an idle second, or a stale value just after catching up.
        for lag in [None, Some(3500.0)] {
            let s = standby(Some("streaming"), Some(0), lag);
            assert!(!s.lags(Duration::ZERO), "{s:?}");
            assert!(!s.lags(SECOND), "{s:?}");
        }
    }

    #[test]
    fn unreplayed_wal_lags_once_the_time_reaches_the_limit() {
        let behind = |ms| standby(Some("streaming"), Some(220_000), Some(ms));
        assert!(!behind(999.0).lags(SECOND));
        assert!(behind(1000.0).lags(SECOND));
        assert!(behind(4020.0).lags(SECOND));
        // A stopped standby in catch-up counts the same.
        assert!(standby(Some("catchup"), Some(1), Some(2000.0)).lags(SECOND));
    }

    #[test]
    fn a_limit_of_zero_waits_for_every_byte() {
        assert!(standby(Some("streaming"), Some(56), None).lags(Duration::ZERO));
        assert!(!standby(Some("streaming"), Some(56), None).lags(SECOND));
    }

    #[test]
    fn standbys_without_a_position_never_hold_the_backfill() {
        // Hidden from this role, still starting, or not yet reporting a replay position.
        assert!(!standby(None, None, None).lags(Duration::ZERO));
        assert!(!standby(Some("startup"), Some(100), Some(5000.0)).lags(SECOND));
        assert!(!standby(Some("streaming"), None, None).lags(Duration::ZERO));
    }

    #[test]
    fn the_standby_furthest_behind_is_named() {
        let mut far = standby(Some("streaming"), Some(10), Some(3000.0));
        far.name = "far".into();
        let mut near = standby(Some("streaming"), Some(10_000_000), Some(1500.0));
        near.name = "near".into();
        let ok = standby(Some("streaming"), Some(0), Some(9000.0));
        let all = [near, ok, far];
        assert_eq!(
            most_behind(&all, SECOND).map(|s| s.name.as_str()),
            Some("far")
        );
        assert_eq!(most_behind(&all, Duration::from_secs(5)), None);
        assert_eq!(
            all[0].describe(),
            "`near`: replay 1.5 s behind, 9.5 MB of WAL"
        );
    }
}

//! What holds back the xmin horizon while the backfill runs: every row it fills leaves the old
//! row version behind as a dead tuple, which VACUUM removes only once no snapshot that could
//! still see it is left. A session in an old transaction (an idle REPEATABLE READ one, a long
//! report), a prepared transaction or a replication slot with an old `xmin` keeps all of them,
//! and a large backfill then leaves the tables bloated without a word. A watcher with a
//! connection of its own reads the holders older than the backfill every few seconds; the
//! progress line names the oldest, and the end of the backfill says how many dead tuples
//! VACUUM cannot remove yet, and what to end so it can.
//!
//! With `--max-horizon-age SECONDS` the workers also pause between batches while a holder has
//! held the horizon that long (`HorizonGate`), within the lock budget (`--lock-timeout`): a
//! holder still there at the end of it stops the backfill (exit 1), its batches kept.
//!
//! A logical slot's `catalog_xmin` is left out on purpose: it holds back only the system
//! catalogs' dead tuples, never those of the user tables the backfill writes (and its `xmin`
//! stays NULL once the slot is created).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::db::{Client, Connect, DatabaseUrl};

/// How often the watcher reads the holders.
const POLL: Duration = Duration::from_secs(2);

/// Holders of the horizon, oldest first: sessions in this database (and WAL senders, whose
/// standby feedback counts for every database), prepared transactions of this database,
/// replication slots with an `xmin`. A session holds it with its snapshot (`backend_xmin`) or,
/// between statements, with its own transaction id (`backend_xid`): the snapshot, when it has
/// one, is never newer. Sessions whose snapshot a prepared transaction or another session's
/// transaction id holds back show the same horizon: the oldest in time comes first, as the
/// cause. `$1`, an xid as text: only holders older than it (the backfill's
/// start), or all when NULL; `$2`: the backfill's own connections, left out. An autovacuum's
/// own snapshot holds nothing back (PostgreSQL leaves it out), nor does a WAL sender decoding
/// a logical slot (its slot's `catalog_xmin` stands for it). A WAL sender's age is unknown:
/// its `backend_start` is the connection's, not its standby's oldest query's. Reads statistics
/// views: no lock.
const HOLDERS_SQL: &str = "
    WITH start AS (SELECT age($1::text::xid) AS age)
    SELECT kind, who, application, state, seconds, horizon FROM (
        SELECT 'session' AS kind, 'pid ' || pid AS who,
               coalesce(nullif(application_name, ''), backend_type) AS application,
               coalesce(state, '') AS state,
               CASE WHEN backend_type <> 'walsender' THEN
                   extract(epoch FROM now() - coalesce(xact_start, backend_start))::float8
               END AS seconds,
               age(coalesce(backend_xmin, backend_xid)) AS xmin_age,
               coalesce(backend_xmin, backend_xid)::text AS horizon
        FROM pg_stat_activity
        WHERE coalesce(backend_xmin, backend_xid) IS NOT NULL
          AND pid <> pg_backend_pid() AND pid <> ALL($2::int4[])
          AND ((datname = current_database() AND backend_type = 'client backend')
               OR (backend_type = 'walsender' AND pid NOT IN (
                   SELECT active_pid FROM pg_replication_slots
                   WHERE slot_type = 'logical' AND active_pid IS NOT NULL)))
        UNION ALL
        SELECT 'prepared transaction', quote_literal(gid), owner::text, 'prepared',
               extract(epoch FROM now() - prepared)::float8, age(transaction), transaction::text
        FROM pg_prepared_xacts WHERE database = current_database()
        UNION ALL
        SELECT 'replication slot', quote_literal(slot_name), coalesce(plugin, 'physical'),
               CASE WHEN active THEN 'active' ELSE 'inactive' END, NULL::float8, age(xmin),
               xmin::text
        FROM pg_replication_slots WHERE xmin IS NOT NULL
    ) holders, start
    WHERE start.age IS NULL OR holders.xmin_age > start.age
    ORDER BY xmin_age DESC, seconds DESC NULLS LAST, who";

/// The backfill's start, as an xid: the next transaction id when it began.
const START_SQL: &str = "SELECT (txid_snapshot_xmax(txid_current_snapshot()) % 4294967296)::text";

#[derive(Debug, Clone, PartialEq)]
struct Holder {
    kind: String,
    who: String,
    application: String,
    state: String,
    /// Since its transaction began; None for a slot or a WAL sender, whose age is unknown.
    seconds: Option<f64>,
    /// The xid it holds the horizon at, as text.
    horizon: String,
}

impl Holder {
    fn describe(&self) -> String {
        let age = self
            .seconds
            .map(|s| format!(" for {s:.0} s"))
            .unwrap_or_default();
        format!(
            "{} {} (`{}`, {}{age})",
            self.kind, self.who, self.application, self.state
        )
    }

    /// What ends its hold.
    fn remedy(&self) -> String {
        match self.kind.as_str() {
            "session" => format!(
                "end that transaction (`SELECT pg_terminate_backend({})` if it is idle)",
                self.who.trim_start_matches("pid ")
            ),
            "prepared transaction" => format!(
                "`COMMIT PREPARED {}` or `ROLLBACK PREPARED {}`",
                self.who, self.who
            ),
            _ => format!(
                "let its consumer catch up, or drop it with `SELECT pg_drop_replication_slot({})`",
                self.who
            ),
        }
    }
}

/// The holders seen by the last read, for the progress line.
static LATEST: Mutex<Vec<Holder>> = Mutex::new(Vec::new());

/// The watcher, reading until dropped.
pub(crate) struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: Option<i32>,
}

impl Watch {
    /// Starts reading the holders on a connection of its own, leaving out the backfill's own
    /// connections (`own_pids`: their snapshots wait on the same holders); without a free
    /// connection slot (or any other failure to connect) it says so once and the backfill goes
    /// on unwatched.
    pub(crate) fn start(url: &DatabaseUrl, own_pids: Vec<i32>) -> Watch {
        LATEST.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let stop = Arc::new(AtomicBool::new(false));
        let mut pid = None;
        let thread = match url.connect() {
            Ok(mut client) => match start_xid(&mut client) {
                Some(start) => {
                    pid = own_pid(&mut client).ok();
                    // The first read before the first batch, so the first progress line knows.
                    if let Ok(holders) = read(&mut client, Some(&start), &own_pids) {
                        *LATEST.lock().unwrap_or_else(|e| e.into_inner()) = holders;
                    }
                    let stop = Arc::clone(&stop);
                    Some(std::thread::spawn(move || {
                        watch(client, start, &own_pids, &stop)
                    }))
                }
                None => None,
            },
            Err(_) => {
                eprintln!("backfill: no connection left to watch the xmin horizon with; dead tuples it cannot remove go unreported");
                None
            }
        };
        Watch { stop, thread, pid }
    }

    /// The watcher's backend, which the workers' pause leaves out.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Says, after the backfill, how many of the dead tuples it left VACUUM cannot remove yet,
    /// and what holds them.
    pub(crate) fn finish(mut self, rows_updated: i64) {
        self.stop_thread();
        let holders = LATEST.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let (Some(oldest), true) = (holders.first(), rows_updated > 0) {
            eprintln!(
                "backfill: the {} old row versions it replaced are dead tuples VACUUM cannot remove yet: the xmin horizon is held back by {}{}; they stay until it ends: {}",
                crate::report::thousands(rows_updated),
                oldest.describe(),
                match holders.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                },
                oldest.remedy()
            );
        }
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn start_xid(client: &mut Client) -> Option<String> {
    client
        .query_one(START_SQL, &[])
        .ok()
        .map(|row| row.get::<_, String>(0))
}

fn watch(mut client: Client, start: String, own_pids: &[i32], stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match read(&mut client, Some(&start), own_pids) {
            Ok(holders) => *LATEST.lock().unwrap_or_else(|e| e.into_inner()) = holders,
            Err(_) => return,
        }
        let mut slept = Duration::ZERO;
        while slept < POLL && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
    }
}

pub(crate) fn own_pid(client: &mut Client) -> Result<i32> {
    Ok(client
        .query_one("SELECT pg_backend_pid()", &[])
        .context("cannot read the backend's process id")?
        .get(0))
}

fn read(
    client: &mut Client,
    start: Option<&str>,
    leave_out: &[i32],
) -> Result<Vec<Holder>, postgres::Error> {
    Ok(client
        .query(HOLDERS_SQL, &[&start, &leave_out])?
        .iter()
        .map(|row| Holder {
            kind: row.get(0),
            who: row.get(1),
            application: row.get(2),
            state: row.get(3),
            seconds: row.get(4),
            horizon: row.get(5),
        })
        .collect())
}

/// For the progress line: the oldest holder, when one holds back the horizon.
pub(crate) fn note() -> Option<String> {
    if PAUSED.load(Ordering::SeqCst) {
        // The pause's own words name the holder.
        return None;
    }
    let holders = LATEST.lock().unwrap_or_else(|e| e.into_inner());
    holders.first().map(|oldest| {
        format!(
            "xmin horizon held back by {}: the row versions replaced stay until it ends",
            oldest.describe()
        )
    })
}

/// A pause for the horizon is on: the progress line says so instead of the watcher's note.
static PAUSED: AtomicBool = AtomicBool::new(false);

/// How often a paused worker reads the holders again.
const PAUSE_POLL: Duration = Duration::from_millis(200);

/// What the backfill's report says about its pauses for the horizon.
#[derive(Debug, Clone)]
pub struct HorizonSummary {
    /// `--max-horizon-age`.
    pub limit: Duration,
    /// How many times the backfill paused, and for how long in all.
    pub pauses: u64,
    pub paused: Duration,
}

/// `--max-horizon-age`, shared by the workers of one backfill: one worker reads the holders at a
/// time, so while one waits the others wait behind it and the pause is announced once.
pub(crate) struct HorizonGate {
    limit: Duration,
    /// The longest one pause lasts (`--lock-timeout`).
    budget: Duration,
    progress: bool,
    /// The backfill's own connections (workers and watcher): their snapshots are its own.
    own_pids: Vec<i32>,
    turn: Mutex<()>,
    /// Holders whose age PostgreSQL does not show (slots, WAL senders): since when each was
    /// seen holding the horizon at the same xid.
    first_seen: Mutex<Vec<(String, String, Instant)>>,
    waiting: Mutex<Option<String>>,
    pauses: AtomicU64,
    paused_ms: AtomicU64,
}

/// The gate for `--max-horizon-age`, when given.
pub(crate) fn gate(
    limit: Option<Duration>,
    budget: Duration,
    progress: bool,
    own_pids: Vec<i32>,
) -> Option<HorizonGate> {
    let limit = limit?;
    PAUSED.store(false, Ordering::SeqCst);
    if progress {
        eprintln!(
            "  xmin horizon age limit {} s: pausing between batches while a transaction, prepared transaction or replication slot that old holds it back (at most {} s each time)",
            limit.as_secs(),
            budget.as_secs()
        );
    }
    Some(HorizonGate {
        limit,
        budget,
        progress,
        own_pids,
        turn: Mutex::new(()),
        first_seen: Mutex::new(Vec::new()),
        waiting: Mutex::new(None),
        pauses: AtomicU64::new(0),
        paused_ms: AtomicU64::new(0),
    })
}

impl HorizonGate {
    /// Returns true once no holder is over the limit, false when `deadline` passes (or `stop`
    /// is set) first; fails when one pause outlasts the lock budget, naming the holder and its
    /// remedy. Announces a pause when it starts and when it ends. Runs between batches, on a
    /// worker's connection outside any transaction.
    pub(crate) fn wait_for_horizon(
        &self,
        client: &mut Client,
        table: &str,
        deadline: Option<Instant>,
        stop: &AtomicBool,
    ) -> Result<bool> {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut since: Option<Instant> = None;
        loop {
            let holders = read(client, None, &self.own_pids)
                .context("cannot read what holds back the xmin horizon (`pg_stat_activity`, `pg_prepared_xacts`, `pg_replication_slots`)")?;
            let Some((holder, age)) = self.oldest_over_limit(holders) else {
                if let Some(since) = since {
                    self.end_pause(since);
                    if self.progress {
                        eprintln!(
                            "  {table}: no transaction holds the xmin horizon over {} s any more after {:.1} s; resuming",
                            self.limit.as_secs(),
                            since.elapsed().as_secs_f64()
                        );
                    }
                }
                return Ok(true);
            };
            let held = match holder.seconds {
                Some(_) => holder.describe(),
                None => format!(
                    "{}, its xmin unchanged for {:.0} s",
                    holder.describe(),
                    age.as_secs_f64()
                ),
            };
            let why = format!(
                "paused: xmin horizon held back by {held}, over --max-horizon-age {} s; {}",
                self.limit.as_secs(),
                holder.remedy()
            );
            let started = *since.get_or_insert_with(|| {
                self.pauses.fetch_add(1, Ordering::SeqCst);
                PAUSED.store(true, Ordering::SeqCst);
                if self.progress {
                    eprintln!("  {table}: {why}");
                }
                Instant::now()
            });
            *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            if deadline.is_some_and(|d| Instant::now() >= d) || stop.load(Ordering::SeqCst) {
                self.end_pause(started);
                return Ok(false);
            }
            // A signal ends the pause at once: the backfill then stops as it does between
            // batches, its batches so far committed.
            if crate::interrupt::requested().is_some() {
                self.end_pause(started);
                crate::interrupt::check()?;
            }
            if started.elapsed() >= self.budget {
                self.end_pause(started);
                bail!(
                    "the backfill of `{table}` paused {} s (`--lock-timeout`) while the xmin horizon was held back by {held}, over `--max-horizon-age {}`; the batches before the pause are kept: {}, then run `cargo xtask backfill` again",
                    self.budget.as_secs(),
                    self.limit.as_secs(),
                    holder.remedy()
                );
            }
            std::thread::sleep(PAUSE_POLL);
        }
    }

    /// The oldest holder that has held the horizon for the limit or longer, with its age.
    fn oldest_over_limit(&self, holders: Vec<Holder>) -> Option<(Holder, Duration)> {
        let now = Instant::now();
        let mut first_seen = self.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        first_seen.retain(|(who, horizon, _)| {
            holders
                .iter()
                .any(|h| &h.who == who && &h.horizon == horizon)
        });
        let mut over = None;
        for holder in holders {
            let age = match holder.seconds {
                Some(seconds) => Duration::from_secs_f64(seconds.max(0.0)),
                None => {
                    let seen = first_seen
                        .iter()
                        .find(|(who, horizon, _)| *who == holder.who && *horizon == holder.horizon)
                        .map(|(_, _, seen)| *seen);
                    let seen = seen.unwrap_or_else(|| {
                        first_seen.push((holder.who.clone(), holder.horizon.clone(), now));
                        now
                    });
                    now - seen
                }
            };
            // Oldest xmin first: the first one over the limit holds back the most.
            if over.is_none() && age >= self.limit {
                over = Some((holder, age));
            }
        }
        over
    }

    fn end_pause(&self, since: Instant) {
        self.paused_ms
            .fetch_add(since.elapsed().as_millis() as u64, Ordering::SeqCst);
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        PAUSED.store(false, Ordering::SeqCst);
    }

    /// What the progress line adds while a worker pauses.
    pub(crate) fn waiting(&self) -> Option<String> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn summary(&self) -> HorizonSummary {
        HorizonSummary {
            limit: self.limit,
            pauses: self.pauses.load(Ordering::SeqCst),
            paused: Duration::from_millis(self.paused_ms.load(Ordering::SeqCst)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(who: &str, seconds: Option<f64>, horizon: &str) -> Holder {
        Holder {
            kind: if seconds.is_some() {
                "session"
            } else {
                "replication slot"
            }
            .into(),
            who: who.into(),
            application: "app".into(),
            state: "idle in transaction".into(),
            seconds,
            horizon: horizon.into(),
        }
    }

    fn gate_of(limit: Duration) -> HorizonGate {
        gate(Some(limit), Duration::from_secs(60), false, vec![]).unwrap()
    }

    #[test]
    fn the_oldest_holder_at_or_over_the_limit_is_the_one_paused_for() {
        let gate = gate_of(Duration::from_secs(60));
        let young_but_oldest_xmin = holder("pid 1", Some(59.0), "100");
        let old = holder("pid 2", Some(61.0), "120");
        let older = holder("pid 3", Some(600.0), "130");
        let (found, age) = gate
            .oldest_over_limit(vec![young_but_oldest_xmin.clone(), old, older])
            .unwrap();
        assert_eq!(found.who, "pid 2");
        assert_eq!(age, Duration::from_secs(61));
        assert!(gate
            .oldest_over_limit(vec![young_but_oldest_xmin])
            .is_none());
        assert!(gate.oldest_over_limit(vec![]).is_none());
    }

    #[test]
    fn a_slot_ages_from_when_its_xmin_was_first_seen_unchanged() {
        // PostgreSQL records no time for a slot's xmin: it is new when first seen.
        let gate = gate_of(Duration::from_secs(60));
        assert!(gate
            .oldest_over_limit(vec![holder("'standby'", None, "100")])
            .is_none());
        assert_eq!(gate.first_seen.lock().unwrap().len(), 1);
        // A moved xmin starts again; a slot gone is forgotten.
        gate.oldest_over_limit(vec![holder("'standby'", None, "140")]);
        let seen = gate.first_seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, "140");
        gate.oldest_over_limit(vec![]);
        assert!(gate.first_seen.lock().unwrap().is_empty());
        // With a limit of 0 any holder pauses, the slot first seen included.
        let any = gate_of(Duration::ZERO);
        assert!(any
            .oldest_over_limit(vec![holder("'standby'", None, "100")])
            .is_some());
    }
}

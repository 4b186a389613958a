//! What holds back the xmin horizon while the backfill runs: every row it fills leaves the old
//! row version behind as a dead tuple, which VACUUM removes only once no snapshot that could
//! still see it is left. A session in an old transaction (an idle REPEATABLE READ one, a long
//! report), a prepared transaction or a replication slot with an old `xmin` keeps all of them,
//! and a large backfill then leaves the tables bloated without a word. A watcher with a
//! connection of its own reads the holders older than the backfill every few seconds; the
//! progress line names the oldest, and the end of the backfill says how many dead tuples
//! VACUUM cannot remove yet, and what to end so it can.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::db::Client;

use crate::db::{Connect, DatabaseUrl};

/// How often the watcher reads the holders.
const POLL: Duration = Duration::from_secs(2);

/// Holders whose snapshot is older than the backfill's start (`$1`, an xid as text), oldest
/// first: sessions in this database (and WAL senders, whose standby feedback counts for every
/// database), prepared transactions of this database, replication slots with an `xmin`.
/// (An autovacuum's own snapshot holds nothing back: PostgreSQL leaves it out.)
const HOLDERS_SQL: &str = "
    WITH start AS (SELECT age($1::text::xid) AS age)
    SELECT kind, who, application, state, seconds, xmin_age FROM (
        SELECT 'session' AS kind, 'pid ' || pid AS who,
               coalesce(nullif(application_name, ''), backend_type) AS application,
               coalesce(state, '') AS state,
               extract(epoch FROM now() - coalesce(xact_start, backend_start))::float8 AS seconds,
               age(backend_xmin) AS xmin_age
        FROM pg_stat_activity
        WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
          AND ((datname = current_database() AND backend_type = 'client backend')
               OR backend_type = 'walsender')
        UNION ALL
        SELECT 'prepared transaction', quote_literal(gid), owner::text, 'prepared',
               extract(epoch FROM now() - prepared)::float8, age(transaction)
        FROM pg_prepared_xacts WHERE database = current_database()
        UNION ALL
        SELECT 'replication slot', quote_literal(slot_name), coalesce(plugin, 'physical'),
               CASE WHEN active THEN 'active' ELSE 'inactive' END, NULL::float8, age(xmin)
        FROM pg_replication_slots WHERE xmin IS NOT NULL
    ) holders, start
    WHERE holders.xmin_age > start.age
    ORDER BY xmin_age DESC, who";

/// The backfill's start, as an xid: the next transaction id when it began.
const START_SQL: &str = "SELECT (txid_snapshot_xmax(txid_current_snapshot()) % 4294967296)::text";

#[derive(Debug, Clone, PartialEq)]
struct Holder {
    kind: String,
    who: String,
    application: String,
    state: String,
    seconds: Option<f64>,
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
}

impl Watch {
    /// Starts reading the holders on a connection of its own; without a free connection slot
    /// (or any other failure to connect) it says so once and the backfill goes on unwatched.
    pub(crate) fn start(url: &DatabaseUrl) -> Watch {
        LATEST.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match url.connect() {
            Ok(mut client) => match start_xid(&mut client) {
                Some(start) => {
                    let stop = Arc::clone(&stop);
                    Some(std::thread::spawn(move || watch(client, start, &stop)))
                }
                None => None,
            },
            Err(_) => {
                eprintln!("backfill: no connection left to watch the xmin horizon with; dead tuples it cannot remove go unreported");
                None
            }
        };
        Watch { stop, thread }
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

fn watch(mut client: Client, start: String, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match read(&mut client, &start) {
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

fn read(client: &mut Client, start: &str) -> Result<Vec<Holder>, postgres::Error> {
    Ok(client
        .query(HOLDERS_SQL, &[&start])?
        .iter()
        .map(|row| Holder {
            kind: row.get(0),
            who: row.get(1),
            application: row.get(2),
            state: row.get(3),
            seconds: row.get(4),
        })
        .collect())
}

/// For the progress line: the oldest holder, when one holds back the horizon.
pub(crate) fn note() -> Option<String> {
    let holders = LATEST.lock().unwrap_or_else(|e| e.into_inner());
    holders.first().map(|oldest| {
        format!(
            "xmin horizon held back by {}: the row versions replaced stay until it ends",
            oldest.describe()
        )
    })
}

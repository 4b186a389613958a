//! `CREATE INDEX CONCURRENTLY`, watched and bounded. Its lock (SHARE UPDATE EXCLUSIVE) never
//! blocks the app, but the build waits for every transaction that could still see the table
//! without the index, and an open app transaction makes it wait as long as it stays open,
//! holding the migration lock. A second connection watches the build
//! (`pg_stat_progress_create_index`): it prints each phase, names the backend the build waits
//! for and for how long, and cancels the build once its waits together exceed the lock budget
//! (`--lock-timeout`). A cancelled build leaves an INVALID index, which is dropped here when it
//! can be dropped at once, else by the next deploy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};

use crate::db::{self, quote_ident, Connect, DatabaseUrl};
use crate::interrupt;
use crate::migrations::Migration;

/// An index of the URL's schema that exists but is INVALID: `Some(false)` when valid, `None`
/// when absent. Catalog reads only.
pub(crate) const INDEX_VALID_SQL: &str = "
    SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relname = $1
      AND c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())";

/// The build's phase, and the backend it waits for (`current_locker_pid`) with what that
/// backend is doing: catalog and statistics views only.
const PROGRESS_SQL: &str = "
    SELECT p.phase, coalesce(p.current_locker_pid, 0)::int,
           coalesce(b.application_name, ''), coalesce(b.state, ''),
           coalesce(extract(epoch FROM now() - b.xact_start)::float8, 0)
    FROM pg_stat_progress_create_index p
    LEFT JOIN pg_stat_activity b ON b.pid = p.current_locker_pid
    WHERE p.pid = $1";

/// How often the watcher reads the build's progress.
const POLL: Duration = Duration::from_millis(200);
/// How often a wait that goes on is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What the build came to.
pub(crate) struct Build {
    pub outcome: Result<(), postgres::Error>,
    /// Set when the watcher cancelled the build: what it waited for, and how long.
    pub gave_up: Option<String>,
}

/// Whether `index` exists and is valid (`Some(true)`), INVALID (`Some(false)`) or absent.
pub(crate) fn index_validity(client: &mut Client, index: &str) -> Result<Option<bool>> {
    Ok(client
        .query_opt(INDEX_VALID_SQL, &[&index])
        .with_context(|| format!("cannot look up the index `{index}`"))?
        .map(|row| row.get(0)))
}

/// What the catalog shows of the index a migration builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexState {
    Absent,
    Invalid,
    /// VALID, with `pg_get_indexdef` and whether it is the definition the file asks for.
    Valid {
        definition: String,
        matches: bool,
    },
}

/// The index's definition as PostgreSQL prints it, and the schema it is in (quoted as
/// `pg_get_indexdef` quotes it).
const INDEX_DEFINITION_SQL: &str = "
    SELECT i.indisvalid, pg_get_indexdef(i.indexrelid), quote_ident(n.nspname)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = $1 AND n.nspname = current_schema()";

pub(crate) fn index_state(
    client: &mut Client,
    migration: &Migration,
    index: &str,
) -> Result<IndexState> {
    let Some(row) = client
        .query_opt(INDEX_DEFINITION_SQL, &[&index])
        .with_context(|| format!("cannot read the definition of the index `{index}`"))?
    else {
        return Ok(IndexState::Absent);
    };
    let (valid, definition, schema): (bool, String, String) = (row.get(0), row.get(1), row.get(2));
    if !valid {
        return Ok(IndexState::Invalid);
    }
    let matches = same_definition(&migration.script, &definition, &schema);
    Ok(IndexState::Valid {
        definition,
        matches,
    })
}

/// Whether the file's `CREATE INDEX CONCURRENTLY` statement defines the index `pg_get_indexdef`
/// prints: both are brought to one form (no CONCURRENTLY or IF NOT EXISTS, no schema before the
/// table, the default `USING btree` dropped, identifiers compared without their quotes, no
/// whitespace), then compared exactly. Case is kept: a keyword spelt differently or an
/// expression PostgreSQL deparses otherwise counts as different, which makes recover ask a
/// person instead of guessing.
pub(crate) fn same_definition(script: &str, definition: &str, quoted_schema: &str) -> bool {
    let statement: String = script
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let statement = statement
        .trim()
        .trim_end_matches(';')
        .replacen(" CONCURRENTLY", "", 1)
        .replacen(" IF NOT EXISTS", "", 1);
    let definition = definition.replacen(&format!(" ON {quoted_schema}."), " ON ", 1);
    let definition = definition.replacen(&format!(" ON ONLY {quoted_schema}."), " ON ONLY ", 1);
    normal_form(&statement) == normal_form(&definition)
}

fn normal_form(sql: &str) -> String {
    sql.replace(" USING btree", "")
        .chars()
        .filter(|c| *c != '"' && !c.is_whitespace())
        .collect()
}

/// What watches an index build: the build's backend pid and a second connection. Opened before
/// the attempt is recorded, so that failing to open it leaves nothing behind.
pub(crate) struct Watcher {
    pid: i32,
    client: Client,
}

impl Watcher {
    pub(crate) fn open(client: &mut Client, url: &DatabaseUrl) -> Result<Watcher> {
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .context("cannot read the backend pid of the index build")?
            .get(0);
        let watcher = url
            .connect()
            .context("cannot open the connection that watches the index build")?;
        Ok(Watcher {
            pid,
            client: watcher,
        })
    }

    /// Runs the migration's script (one `CREATE INDEX CONCURRENTLY`) under the watcher.
    pub(crate) fn build(
        mut self,
        client: &mut Client,
        migration: &Migration,
        index: &str,
        budget: Duration,
    ) -> Build {
        let token = client.cancel_token();
        let done = AtomicBool::new(false);
        let gave_up: Mutex<Option<String>> = Mutex::new(None);
        let pid = self.pid;
        let outcome = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                watch(
                    &mut self.client,
                    pid,
                    index,
                    budget,
                    &done,
                    &gave_up,
                    &token,
                )
            });
            let outcome = interrupt::cancellable(client, |client| {
                client.long(&format!("migration `{}`", migration.name), |client| {
                    client.batch_execute(&migration.script)
                })
            });
            done.store(true, Ordering::SeqCst);
            // Woken at once, so the next migration does not wait for the watcher's poll.
            watcher.thread().unpark();
            // The watcher's own errors (a lost second connection) only end the watching.
            let _ = watcher.join();
            outcome
        });
        let gave_up = gave_up.into_inner().unwrap_or_else(|e| e.into_inner());
        Build { outcome, gave_up }
    }
}

/// The watcher: prints phase changes and waits, and cancels the build when its waits add up to
/// more than `budget`.
fn watch(
    client: &mut Client,
    pid: i32,
    index: &str,
    budget: Duration,
    done: &AtomicBool,
    gave_up: &Mutex<Option<String>>,
    token: &postgres::CancelToken,
) -> Result<()> {
    let mut last_phase = String::new();
    let mut last_locker = 0;
    let mut waited = Duration::ZERO;
    let mut last_report = Instant::now();
    let mut last_poll = Instant::now();
    while !done.load(Ordering::SeqCst) {
        // Parked, not slept: the end of the build unparks it.
        std::thread::park_timeout(POLL);
        if done.load(Ordering::SeqCst) {
            break;
        }
        let Some(row) = client.query_opt(PROGRESS_SQL, &[&pid])? else {
            continue;
        };
        let phase: String = row.get(0);
        let locker: i32 = row.get(1);
        let blocker = describe_blocker(locker, row.get(2), row.get(3), row.get(4));
        let waiting = phase.starts_with("waiting");
        let since_poll = last_poll.elapsed();
        last_poll = Instant::now();
        if waiting {
            waited += since_poll;
        }
        if phase != last_phase || (waiting && locker != last_locker) {
            eprintln!("  `{index}`: {phase}{blocker}");
            last_phase = phase.clone();
            last_locker = locker;
            last_report = Instant::now();
        } else if waiting && last_report.elapsed() >= REPORT_EVERY {
            eprintln!(
                "  `{index}`: still {phase}{blocker}; waited {:.0} s of the {} s lock budget",
                waited.as_secs_f64(),
                budget.as_secs()
            );
            last_report = Instant::now();
        }
        if waiting && waited >= budget {
            let why = format!(
                "the build waited {:.0} s ({phase}{blocker}), more than the {} s lock budget (`--lock-timeout`)",
                waited.as_secs_f64(),
                budget.as_secs()
            );
            eprintln!("  `{index}`: gave up: {why}; cancelling the build");
            *gave_up.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            interrupt::cancel(token);
            // One cancel is enough: the build is waiting, and a wait is always cancellable.
            while !done.load(Ordering::SeqCst) {
                std::thread::park_timeout(POLL);
            }
        }
    }
    Ok(())
}

fn describe_blocker(pid: i32, application: String, state: String, open_seconds: f64) -> String {
    if pid == 0 {
        return String::new();
    }
    let application = if application.is_empty() {
        "unknown application".to_string()
    } else {
        application
    };
    format!(" for backend pid {pid} (`{application}`, {state}, its transaction open {open_seconds:.0} s)")
}

/// A CREATE INDEX CONCURRENTLY that failed or was interrupted leaves an INVALID index, which the
/// planner never uses and which would make the next attempt fail with "already exists". It holds
/// no data of its own, so dropping it loses nothing. DROP INDEX CONCURRENTLY: SHARE UPDATE
/// EXCLUSIVE, which blocks neither reads nor writes; it waits for the transactions that use the
/// table, within `lock_timeout` per try and the lock budget. Returns whether it dropped one.
pub(crate) fn drop_invalid_index(
    client: &mut Client,
    index: &str,
    per_try: Duration,
    budget: Duration,
) -> Result<bool> {
    if index_validity(client, index)? != Some(false) {
        return Ok(false);
    }
    eprintln!("  dropping the invalid index `{index}` an earlier attempt left behind ...");
    db::set_lock_timeout(client, per_try)?;
    let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", quote_ident(index));
    let tries = db::retry_on_lock_timeout(&format!("dropping `{index}`"), per_try, budget, || {
        interrupt::cancellable(client, |client| {
            client.long(&format!("dropping the index `{index}`"), |client| {
                client.batch_execute(&sql)
            })
        })
    });
    db::set_lock_timeout(client, Duration::ZERO)?;
    tries
        .outcome
        .with_context(|| format!("cannot drop the invalid index `{index}`"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_and_pg_get_indexdef_are_compared_in_one_form() {
        let script = "-- Built CONCURRENTLY; see above.\n\n-- CreateIndex\nCREATE INDEX CONCURRENTLY \"MetricDaily_workspaceId_provider_date_idx\" ON \"MetricDaily\"(\"workspaceId\", \"provider\", \"date\");\n";
        let printed = "CREATE INDEX \"MetricDaily_workspaceId_provider_date_idx\" ON public.\"MetricDaily\" USING btree (\"workspaceId\", provider, date)";
        assert!(same_definition(script, printed, "public"));
        let tenant = "CREATE INDEX \"MetricDaily_workspaceId_provider_date_idx\" ON \"a b\".\"MetricDaily\" USING btree (\"workspaceId\", provider, date)";
        assert!(same_definition(script, tenant, "\"a b\""));
        let other_columns = "CREATE INDEX \"MetricDaily_workspaceId_provider_date_idx\" ON public.\"MetricDaily\" USING btree (\"workspaceId\", date)";
        assert!(!same_definition(script, other_columns, "public"));
        let unique = "CREATE UNIQUE INDEX \"MetricDaily_workspaceId_provider_date_idx\" ON public.\"MetricDaily\" USING btree (\"workspaceId\", provider, date)";
        assert!(!same_definition(script, unique, "public"));
        let hash = "CREATE INDEX \"MetricDaily_workspaceId_provider_date_idx\" ON public.\"MetricDaily\" USING hash (\"workspaceId\", provider, date)";
        assert!(!same_definition(script, hash, "public"));
    }
}

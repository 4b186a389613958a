//! Backends that are still running a migration script: a Prisma or xtask deploy on another
//! machine, a psql session, or the backend of a deploy that was killed (PostgreSQL notices a
//! vanished client only when it next talks to it, so the script goes on and may commit).
//! Commands that judge what a migration left behind wait for these first: a judgement made
//! while a script still runs reads uncommitted state, and a `DROP INDEX CONCURRENTLY` against
//! a build in progress deadlocks with it.

use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};

use crate::migrations::{self, Migration};

/// Active client backends of this database other than ours, with what they run. Reading
/// another role's query text needs `pg_read_all_stats` (or superuser); without it the text is
/// hidden and such a backend is not recognised.
const ACTIVE_BACKENDS_SQL: &str = "
    SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown application'),
           coalesce(a.query, ''),
           coalesce(extract(epoch FROM now() - a.query_start)::float8, 0),
           coalesce(a.wait_event_type || ': ' || a.wait_event, '')
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND a.backend_type = 'client backend' AND a.state = 'active'
    ORDER BY a.pid";

/// One backend running a migration script.
#[derive(Debug, Clone)]
pub(crate) struct RunningMigration {
    pub pid: i32,
    pub application: String,
    pub migration: String,
    pub seconds: f64,
    pub waiting_for: String,
}

impl RunningMigration {
    pub(crate) fn describe(&self) -> String {
        let waiting = if self.waiting_for.is_empty() {
            String::new()
        } else {
            format!(", waiting for {}", self.waiting_for)
        };
        format!(
            "backend pid {} (`{}`) is running migration `{}` (for {:.0} s{waiting})",
            self.pid, self.application, self.migration, self.seconds
        )
    }
}

pub(crate) fn running(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<RunningMigration>> {
    let rows = client
        .query(ACTIVE_BACKENDS_SQL, &[])
        .context("cannot read `pg_stat_activity` to find migrations still running")?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let query: String = row.get(2);
            let migration = migrations::running_script(&query, migrations)?;
            Some(RunningMigration {
                pid: row.get(0),
                application: row.get(1),
                migration: migration.to_string(),
                seconds: row.get(3),
                waiting_for: row.get(4),
            })
        })
        .collect())
}

/// Waits, at most `wait`, until no other backend runs a migration script, saying once which
/// ones it waits for. After `wait` it fails naming them, with what to do. Returns what it
/// waited for (empty when nothing ran), for the report.
pub(crate) fn wait_for_others(
    client: &mut Client,
    migrations: &[Migration],
    wait: Duration,
) -> Result<Vec<String>> {
    let started = Instant::now();
    let mut waited_for: Vec<String> = Vec::new();
    loop {
        let running = running(client, migrations)?;
        if running.is_empty() {
            return Ok(waited_for);
        }
        for backend in &running {
            let line = backend.describe();
            let pid = format!("backend pid {} ", backend.pid);
            if !waited_for.iter().any(|w| w.starts_with(&pid)) {
                eprintln!("waiting for it to finish: {line} ...");
                waited_for.push(line);
            }
        }
        if started.elapsed() >= wait {
            let pids: Vec<String> = running.iter().map(|r| r.pid.to_string()).collect();
            anyhow::bail!(
                "{}; gave up after waiting {} s, and nothing was changed: its outcome decides what is true, so let it finish (or stop it with `SELECT pg_cancel_backend({})`), then run the command again",
                running.iter().map(RunningMigration::describe).collect::<Vec<_>>().join("; "),
                wait.as_secs(),
                pids.join("), pg_cancel_backend(")
            );
        }
        crate::interrupt::sleep(Duration::from_millis(100))?;
    }
}

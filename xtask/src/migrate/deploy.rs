//! `migrate deploy [--to NAME]`: applies pending migrations in order, each as one script, under
//! Prisma's advisory lock, recording each in `_prisma_migrations` exactly as Prisma does.
//!
//! DDL runs with a short `lock_timeout`: a migration that cannot get its lock quickly gives up
//! and is retried with backoff, rather than queueing every app query behind its lock request.

use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{anyhow, Context, Result};
use serde_json::json;

use super::state::{self, State};
use super::{baseline, concurrent, enforces, history, logs};
use crate::db::{self, quote_ident, DatabaseUrl};
use crate::migrations::{self, Migration};
use crate::report::{Report, Style};

#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Apply up to and including this migration.
    pub to: Option<String>,
    /// How long to wait for another deploy holding the advisory lock.
    pub lock_wait: Duration,
    /// `lock_timeout` of each try of a migration script: how long an app query can be queued
    /// behind the script's lock request ([`db::LOCK_TRY`]).
    pub lock_timeout: Duration,
    /// The total lock wait of one migration, all tries together (`--lock-timeout`), and the
    /// longest an index build may wait for other transactions.
    pub lock_budget: Duration,
    /// Before a migration that sets a column NOT NULL or validates a constraint, count the rows
    /// that would make it fail, and stop before it (recording nothing) when there are any.
    /// Only the incident replays (`demo`) turn it off, to deploy as Prisma would.
    pub check_rows: bool,
    /// Columns (table, column) a gate has just proved hold no NULL (a release's backfill and
    /// check): their NOT NULL is not counted again. Every other rule a migration enforces is.
    pub proven: Vec<(String, String)>,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            to: None,
            lock_wait: Duration::from_secs(60),
            lock_timeout: db::LOCK_TRY,
            lock_budget: db::LOCK_BUDGET,
            check_rows: true,
            proven: Vec::new(),
        }
    }
}

/// What a failed attempt left in `_prisma_migrations`, so that a runbook names a true next
/// step: only a failed row is something `recover` resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// Recorded as failed (an error in the script, as Prisma records it).
    Failed,
    /// Given up and rolled back by PostgreSQL: nothing applied, no row left, the migration is
    /// pending again.
    RolledBack,
    /// The connection broke mid-script: the row says failed, the outcome is unknown.
    Unknown,
    /// Not tried: rows the migration enforces a rule on break it (see `enforces`). Nothing was
    /// applied or recorded.
    Refused,
}

/// A deploy's error message, marked with what the attempt left.
#[derive(Debug)]
pub(crate) struct DeployFailure {
    pub left: Left,
    message: String,
    /// What happened on the server, when the error that ended the attempt said (a full disk, a
    /// crash): the error itself is not kept once the connection is gone.
    fault: Option<String>,
}

impl std::fmt::Display for DeployFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeployFailure {}

fn failure(left: Left, message: String) -> DeployFailure {
    DeployFailure {
        left,
        message,
        fault: None,
    }
}

/// What the attempt behind `error` left, when `error` comes from applying a migration.
pub(crate) fn left_by(error: &anyhow::Error) -> Option<Left> {
    // `downcast_ref` of the error itself finds a context at any depth; the items of `chain()`
    // are anyhow's context wrappers, so searching them never finds one given as a context.
    error
        .downcast_ref::<DeployFailure>()
        .map(|failure| failure.left)
}

/// What happened on the server when an attempt behind `error` lost its connection, if known.
pub(crate) fn fault_by(error: &anyhow::Error) -> Option<String> {
    error
        .downcast_ref::<DeployFailure>()
        .and_then(|failure| failure.fault.clone())
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub name: String,
    pub duration: Duration,
    /// Tries that ended in a lock timeout before the one that went through.
    pub lock_timeouts: u32,
}

#[derive(Debug, Clone, Default)]
pub struct DeployReport {
    pub applied: Vec<Applied>,
}

impl Report for DeployReport {
    fn render_with(&self, style: Style) -> String {
        if self.applied.is_empty() {
            return "No pending migrations to apply.\n".to_string();
        }
        let mut out = String::new();
        for applied in &self.applied {
            let retries = match applied.lock_timeouts {
                0 => String::new(),
                n => format!(" after {n} lock timeout(s)"),
            };
            out.push_str(&format!(
                "applied `{}` in {}{retries}\n",
                applied.name,
                style.millis(applied.duration)
            ));
        }
        out.push_str(&format!("{} migration(s) applied.\n", self.applied.len()));
        out
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "applied": self.applied.iter().map(|a| json!({
                "name": a.name,
                "seconds": a.duration.as_secs_f64(),
                "lock_timeouts": a.lock_timeouts,
            })).collect::<Vec<_>>(),
        })
    }

    fn ok(&self) -> bool {
        true
    }
}

pub fn deploy(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &DeployOptions,
) -> Result<DeployReport> {
    if let Some(to) = &options.to {
        migrations::find(migrations, to)?;
    }
    db::with_migration_lock(client, options.lock_wait, migrations, |client| {
        deploy_locked(client, url, migrations, options)
    })
}

fn deploy_locked(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &DeployOptions,
) -> Result<DeployReport> {
    // Prisma's P3005: a schema with tables but no bookkeeping is never taken over.
    baseline::refuse_takeover(client, migrations)?;
    if url.has_explicit_schema() {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(url.schema())
            ))
            .with_context(|| format!("cannot create the schema `{}`", url.schema()))?;
    }
    history::create_table(client)?;
    let records = history::load(client)?;
    let entries = state::compute(migrations, &records);
    refuse_unless_clean(&entries)?;

    let mut report = DeployReport::default();
    for migration in migrations {
        let pending = entries
            .iter()
            .find(|e| e.name == migration.name)
            .is_none_or(|e| e.state.is_pending());
        if pending {
            crate::interrupt::check()?;
            if options.check_rows {
                refuse_known_failure(client, migrations, migration, &options.proven)?;
            }
            report.applied.push(apply(client, url, migration, options)?);
        }
        if options.to.as_deref() == Some(migration.name.as_str()) {
            break;
        }
    }
    Ok(report)
}

/// Stops before `migration` when existing rows would make it fail: the NULLs of a column it sets
/// NOT NULL, the rows a constraint it validates refuses. Nothing is applied or recorded; the
/// error names each table, column and count, and the command that fills them.
fn refuse_known_failure(
    client: &mut Client,
    migrations: &[Migration],
    migration: &Migration,
    proven: &[(String, String)],
) -> Result<()> {
    let violations = enforces::violations(client, &migration.script, proven)?;
    if violations.is_empty() {
        return Ok(());
    }
    let name = &migration.name;
    let found = violations
        .iter()
        .map(|v| v.describe())
        .collect::<Vec<_>>()
        .join("; ");
    let declared = crate::releases::load(migrations).unwrap_or_default();
    let fills = violations.iter().find_map(|v| {
        let column = v.column.as_deref()?;
        crate::releases::filling(&declared, v.enforcement.table(), column)
    });
    let not_null_only = violations.iter().all(|v| v.column.is_some());
    let next = match (fills, crate::releases::by_contract(&declared, name)) {
        _ if !not_null_only => "a backfill cannot fix rows that break a constraint: fix those rows (the constraint's definition is in `pg_constraint`), then deploy again".to_string(),
        (Some(release), _) | (None, Some(release)) if release.rule.is_some() => format!(
            "run `cargo xtask release` (or `cargo xtask backfill --release {}`, then deploy again): the `{}` release fills them",
            release.name, release.name
        ),
        (Some(release), _) | (None, Some(release)) => format!(
            "the `{}` release declares no backfill rule: fill those rows, then deploy again",
            release.name
        ),
        _ => "no release declares how to fill them: declare one beside its expand migration (`cargo xtask release new --help`), or fix those rows by hand, then deploy again".to_string(),
    };
    Err(anyhow::Error::new(failure(
        Left::Refused,
        format!(
            "migration `{name}` was not applied, because it would fail: {found}. Nothing was applied or recorded; {next}"
        ),
    )))
}

/// Prisma refuses to deploy over a failed migration (P3009); we also refuse over an edited or
/// missing one, because the database no longer matches the folder.
fn refuse_unless_clean(entries: &[state::Entry]) -> Result<()> {
    for entry in entries {
        let name = &entry.name;
        match entry.state {
            State::Failed => anyhow::bail!(
                "migration `{name}` failed at {} UTC ({}) and is not resolved, so nothing was deployed: run `cargo xtask recover` (by hand: `cargo xtask migrate resolve --rolled-back {name}` once the cause is fixed, then `cargo xtask migrate deploy`)",
                entry.at.as_deref().unwrap_or("?"),
                entry.logs.as_deref().map(logs::database_error).unwrap_or_else(|| "no error recorded".into()),
            ),
            State::Edited => anyhow::bail!(
                "migration `{name}` was edited after it was applied (its checksum differs from `_prisma_migrations`), so nothing was deployed: restore the applied file (`git checkout -- migrations/{name}/migration.sql`) and put changes in a new migration (`cargo xtask migrate new NAME`)"
            ),
            State::MissingLocally => anyhow::bail!(
                "migration `{name}` is applied in the database but missing from the migrations folder, so nothing was deployed: restore it from version control or check out the branch that has it"
            ),
            _ => {}
        }
    }
    Ok(())
}

fn apply(
    client: &mut Client,
    url: &DatabaseUrl,
    migration: &Migration,
    options: &DeployOptions,
) -> Result<Applied> {
    let name = &migration.name;
    eprintln!("applying `{name}` ...");
    let started = Instant::now();
    let index = migration.concurrent_index();
    // Everything that can fail before the script runs is done before the attempt is recorded,
    // so that such a failure leaves no row behind.
    let watcher = match &index {
        Some(index) => {
            concurrent::drop_invalid_index(
                client,
                index,
                options.lock_timeout,
                options.lock_budget,
            )?;
            Some(concurrent::Watcher::open(client, url)?)
        }
        None => {
            db::set_lock_timeout(client, options.lock_timeout)?;
            None
        }
    };
    let id = history::insert_started(client, name, &migration.checksum)?;
    let run = match (&index, watcher) {
        // CREATE INDEX CONCURRENTLY takes SHARE UPDATE EXCLUSIVE, which never blocks the app's
        // reads or writes; its waits for other transactions are watched and bounded instead.
        (Some(index), Some(watcher)) => {
            let build = watcher.build(client, migration, index, options.lock_budget);
            Run {
                outcome: build.outcome,
                lock_timeouts: 0,
                gave_up: build.gave_up,
            }
        }
        _ => run_script(client, migration, options),
    };
    match run.outcome {
        Ok(()) => {
            record(client, |client| history::mark_finished(client, &id)).map_err(|error| {
                error.context(failure(
                    Left::Unknown,
                    format!("`{name}` was applied, but its success could not be recorded in `_prisma_migrations`, which shows it as failed: run `cargo xtask recover`, which proves from the catalog that it was applied"),
                ))
            })?;
            Ok(Applied {
                name: name.clone(),
                duration: started.elapsed(),
                lock_timeouts: run.lock_timeouts,
            })
        }
        Err(error) => Err(settle_failure(
            client,
            url,
            options,
            &id,
            migration,
            index.as_deref(),
            Tried {
                lock_timeouts: run.lock_timeouts,
                gave_up: run.gave_up,
            },
            error,
        )),
    }
}

/// A migration script's tries.
struct Run {
    outcome: Result<(), postgres::Error>,
    lock_timeouts: u32,
    /// Set when the lock budget ran out: what the tries waited for.
    gave_up: Option<String>,
}

/// How the tries of a failed attempt went.
struct Tried {
    lock_timeouts: u32,
    gave_up: Option<String>,
}

/// Runs a (transactional) migration script under `lock_timeout`, retrying lock timeouts with
/// backoff within the lock budget. The script is one simple-query message, as Prisma sends it,
/// so PostgreSQL runs it as one transaction and rolls it back whole on any error.
fn run_script(client: &mut Client, migration: &Migration, options: &DeployOptions) -> Run {
    let tries = db::retry_on_lock_timeout(
        &format!("`{}`", migration.name),
        options.lock_timeout,
        options.lock_budget,
        || {
            let result = crate::interrupt::cancellable(client, |client| {
                client.long(&format!("migration `{}`", migration.name), |client| {
                    client.batch_execute(&migration.script)
                })
            });
            if result.as_ref().is_err_and(|e| !db::is_connection_lost(e)) {
                // A script with its own BEGIN leaves the session in an aborted transaction on
                // error; outside a transaction this ROLLBACK is only a warning.
                let _ = client.batch_execute("ROLLBACK");
            }
            result
        },
    );
    if !client.is_closed() {
        // Failing to reset only leaves this session's lock_timeout short; the outcome decides.
        let _ = client.batch_execute("RESET lock_timeout");
    }
    let gave_up = (tries.gave_up && crate::interrupt::requested().is_none()).then(|| {
        format!(
            "it could not get its locks in {} tries of {} ms within the {} s lock budget (`--lock-timeout`)",
            tries.lock_timeouts,
            options.lock_timeout.as_millis(),
            options.lock_budget.as_secs()
        )
    });
    Run {
        outcome: tries.outcome,
        lock_timeouts: tries.lock_timeouts,
        gave_up,
    }
}

/// Records what a failed attempt really left, and returns the error that says so.
///
/// - The connection broke: nothing can be recorded, and the server may still run the script
///   (a killed client's backend goes on until it next talks to it). The row stays "failed";
///   `recover` waits for the backend and proves the outcome from the catalog.
/// - The lock budget ran out, or SIGINT/SIGTERM cancelled the script: PostgreSQL rolled it back,
///   nothing of it was applied, so the attempt's row is removed: the migration is pending
///   again for us and for Prisma (whose `status` reads any row as applied), nothing to
///   resolve; the reason is in the error. An index build leaves an INVALID index, dropped
///   here when that is quick, else by the next deploy.
/// - Anything else: recorded as failed, as Prisma records it (P3018), for a person or `recover`.
#[allow(clippy::too_many_arguments)]
fn settle_failure(
    client: &mut Client,
    url: &DatabaseUrl,
    options: &DeployOptions,
    id: &str,
    migration: &Migration,
    index: Option<&str>,
    tried: Tried,
    error: postgres::Error,
) -> anyhow::Error {
    let name = &migration.name;
    // A PANIC or a FATAL error ends the session as it arrives (a PANIC, such as a WAL write on a
    // full disk, restarts the whole server): nothing more can be written on this connection,
    // and what the script left is as unknown as after a lost connection.
    let session_ended = error
        .as_db_error()
        .is_some_and(|db| matches!(db.severity(), "PANIC" | "FATAL"));
    if db::is_connection_lost(&error) || client.is_closed() || session_ended {
        // Without the server's words, a new connection shows whether it crashed.
        let fault = db::cause::server_fault(&error).or_else(|| db::cause::probe_after_loss(url));
        let said = fault
            .as_ref()
            .map(|fault| format!(": {fault}"))
            .unwrap_or_default();
        return anyhow!(db::describe_driver_error(&error)).context(DeployFailure {
            fault,
            ..failure(Left::Unknown, format!(
                "lost the connection to PostgreSQL while `{name}` was running{said}: its outcome is unknown, and `_prisma_migrations` shows it as failed (started, never finished); once the server answers, run `cargo xtask recover`, which waits for the script if its backend still runs and resolves the migration by what the database shows"
            ))
        });
    }
    let logs = logs::prisma_logs(name, &error);
    let signal = crate::interrupt::stopped_by(&error);
    let stopped = match (signal, tried.gave_up) {
        (Some(signal), _) => Some(format!(
            "{} cancelled it",
            crate::interrupt::signal_name(signal)
        )),
        (None, Some(why)) => Some(why),
        (None, None) => None,
    };
    let Some(why) = stopped else {
        if let Err(record_error) = record(client, |client| history::mark_failed(client, id, &logs))
        {
            return unrecorded(record_error, name);
        }
        let lock_note = match tried.lock_timeouts {
            0 => String::new(),
            n => format!(" after {n} lock timeout(s)"),
        };
        let left = match index {
            Some(index) => format!("an INVALID index `{index}` is left behind, which the next deploy drops before it builds the index again"),
            None => "PostgreSQL rolled the whole script back, so nothing of it was applied".into(),
        };
        let message = format!(
            "migration `{name}` failed{lock_note}: {}; {left}, and the failure is recorded in `_prisma_migrations`{}: run `cargo xtask recover`",
            logs::database_error(&logs),
            deadlocked_with_a_deploy(&error)
        );
        return anyhow!(logs).context(failure(Left::Failed, message));
    };
    let left = match index {
        // One short try: the transaction the build waited for usually still blocks the drop.
        Some(index) => match concurrent::drop_invalid_index(
            client,
            index,
            options.lock_timeout,
            options.lock_timeout,
        ) {
            Ok(_) => format!("the interrupted build's INVALID index `{index}` was dropped"),
            Err(_) => format!("the interrupted build left an INVALID index `{index}`, which the next `cargo xtask migrate deploy` drops before it builds it again"),
        },
        None => "PostgreSQL rolled its script back, so nothing of it was applied".to_string(),
    };
    let logs = format!("{logs}\n\nNot applied: {why}; {left}.");
    if let Err(record_error) = record(client, |client| history::forget_attempt(client, id)) {
        return unrecorded(record_error, name);
    }
    let next = match signal {
        Some(_) => "run the command again to continue".to_string(),
        None => format!(
            "run `cargo xtask migrate deploy` again once the session that holds the lock is done (`pg_locks` shows it), or give it longer with `--lock-timeout SECONDS` (default {} s)",
            db::LOCK_BUDGET.as_secs()
        ),
    };
    let message = format!(
        "migration `{name}` was not applied: {why}; {left}, and its attempt is taken out of `_prisma_migrations`, so it is pending again for this tool and for Prisma alike (nothing to resolve): {next}"
    );
    match signal {
        Some(signal) => anyhow::Error::new(crate::interrupt::Interrupted(signal))
            .context(logs::database_error(&logs))
            .context(failure(Left::RolledBack, message)),
        None => anyhow!(logs).context(failure(Left::RolledBack, message)),
    }
}

/// A clause for a deadlock of the script with a session waiting for the migration lock: an
/// index build's last phase waits for every older snapshot, and a deploy waiting in
/// `pg_advisory_lock` (Prisma's `migrate deploy`) holds one while it waits for ours.
fn deadlocked_with_a_deploy(error: &postgres::Error) -> &'static str {
    let with_the_migration_lock = error.as_db_error().is_some_and(|db| {
        *db.code() == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            && db.detail().is_some_and(|detail| {
                detail.contains("advisory lock [")
                    && detail.contains(&format!(",{},", db::MIGRATION_LOCK_KEY))
            })
    });
    if with_the_migration_lock {
        " (the build deadlocked with another deploy waiting for the migration lock, such as Prisma's `migrate deploy`: run one deploy at a time)"
    } else {
        ""
    }
}

/// The outcome of an attempt could not be written: the row still says "failed".
fn unrecorded(error: anyhow::Error, name: &str) -> anyhow::Error {
    error.context(failure(
        Left::Unknown,
        format!("the outcome of `{name}` could not be recorded in `_prisma_migrations`, which shows it as failed: run `cargo xtask recover`, which proves from the catalog what the script left"),
    ))
}

/// Writes the outcome of an attempt. A cancel request meant for the script can still arrive
/// just after it ended (it travels through a connection of its own); the bookkeeping is then
/// simply written again.
fn record(client: &mut Client, mut write: impl FnMut(&mut Client) -> Result<()>) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match write(client) {
            Err(error) if tries < 3 && is_stray_cancel(&error) => continue,
            other => return other,
        }
    }
}

fn is_stray_cancel(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<postgres::Error>()
            .is_some_and(|e| e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_by_finds_the_failure_given_as_a_context() {
        let error = anyhow!("the database's words")
            .context(failure(Left::Unknown, "lost the connection".into()))
            .context("deploy");
        assert!(matches!(left_by(&error), Some(Left::Unknown)));
        let refused = anyhow::Error::new(failure(Left::Refused, "would fail".into()));
        assert!(matches!(left_by(&refused), Some(Left::Refused)));
        assert!(left_by(&anyhow!("anything else")).is_none());
    }
}

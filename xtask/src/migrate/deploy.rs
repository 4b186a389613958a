//! `migrate deploy [--to NAME]`: applies pending migrations in order, each as one script, under
//! Prisma's advisory lock, recording each in `_prisma_migrations` exactly as Prisma does.
//!
//! DDL runs with a short `lock_timeout`: a migration that cannot get its lock quickly gives up
//! and is retried with backoff, rather than queueing every app query behind its lock request.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use postgres::Client;
use serde_json::json;

use super::state::{self, State};
use super::{baseline, history, logs};
use crate::db::{self, quote_ident, DatabaseUrl};
use crate::migrations::{self, Migration};
use crate::report::{Report, Style};

#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Apply up to and including this migration.
    pub to: Option<String>,
    /// How long to wait for another deploy holding the advisory lock.
    pub lock_wait: Duration,
    /// `lock_timeout` for the migration scripts.
    pub lock_timeout: Duration,
    /// How many times a script that hit `lock_timeout` is tried again.
    pub lock_retries: u32,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            to: None,
            lock_wait: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(2),
            lock_retries: 5,
        }
    }
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
                "lockTimeouts": a.lock_timeouts,
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
    db::with_migration_lock(client, options.lock_wait, |client| {
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
            report.applied.push(apply(client, migration, options)?);
        }
        if options.to.as_deref() == Some(migration.name.as_str()) {
            break;
        }
    }
    Ok(report)
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

fn apply(client: &mut Client, migration: &Migration, options: &DeployOptions) -> Result<Applied> {
    let name = &migration.name;
    eprintln!("applying `{name}` ...");
    let started = Instant::now();
    let index = migration.concurrent_index();
    if let Some(index) = &index {
        drop_invalid_index(client, index)?;
    }
    let id = history::insert_started(client, name, &migration.checksum)?;
    // CREATE INDEX CONCURRENTLY takes SHARE UPDATE EXCLUSIVE, which never blocks the app's
    // reads or writes, and it waits for running transactions by design: no lock_timeout there
    // (a timeout would only leave an invalid index behind).
    let lock_timeout = match index {
        Some(_) => Duration::ZERO,
        None => options.lock_timeout,
    };
    db::set_lock_timeout(client, lock_timeout)?;
    let (outcome, lock_timeouts) = db::retry_on_lock_timeout(
        &format!("`{name}`"),
        lock_timeout,
        options.lock_retries,
        || {
            let result = client.batch_execute(&migration.script);
            if result.is_err() {
                // A script with its own BEGIN leaves the session in an aborted transaction on
                // error; outside a transaction this ROLLBACK is only a warning.
                let _ = client.batch_execute("ROLLBACK");
            }
            result
        },
    );
    client
        .batch_execute("RESET lock_timeout")
        .context("cannot reset `lock_timeout`")?;
    match outcome {
        Ok(()) => {
            history::mark_finished(client, &id)?;
            Ok(Applied {
                name: name.clone(),
                duration: started.elapsed(),
                lock_timeouts,
            })
        }
        Err(error) => {
            let failure_logs = logs::prisma_logs(name, &error);
            history::mark_failed(client, &id, &failure_logs)?;
            let lock_note = match lock_timeouts {
                0 => String::new(),
                n => format!(" after {n} lock timeout(s)"),
            };
            let left = match &index {
                Some(index) => format!("an INVALID index `{index}` is left behind, which the next deploy drops before it builds the index again"),
                None => "PostgreSQL rolled the whole script back, so nothing of it was applied".into(),
            };
            let message = format!(
                "migration `{name}` failed{lock_note}: {}; {left}, and the failure is recorded in `_prisma_migrations`: run `cargo xtask recover`",
                logs::database_error(&failure_logs)
            );
            Err(anyhow!(failure_logs).context(message))
        }
    }
}

/// An index of the URL's schema that exists but is INVALID: `Some(false)` when valid, `None`
/// when absent. Catalog reads only.
pub(crate) const INDEX_VALID_SQL: &str = "
    SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relname = $1
      AND c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())";

/// A CREATE INDEX CONCURRENTLY that failed or was interrupted leaves an INVALID index, which the
/// planner never uses and which would make the next attempt fail with "already exists". It holds
/// no data of its own, so dropping it loses nothing. DROP INDEX CONCURRENTLY: SHARE UPDATE
/// EXCLUSIVE, which blocks neither reads nor writes.
fn drop_invalid_index(client: &mut Client, index: &str) -> Result<()> {
    let valid: Option<bool> = client
        .query_opt(INDEX_VALID_SQL, &[&index])
        .with_context(|| format!("cannot look up the index `{index}`"))?
        .map(|row| row.get(0));
    if valid == Some(false) {
        eprintln!("  dropping the invalid index `{index}` an earlier attempt left behind ...");
        client
            .batch_execute(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                quote_ident(index)
            ))
            .with_context(|| format!("cannot drop the invalid index `{index}`"))?;
    }
    Ok(())
}

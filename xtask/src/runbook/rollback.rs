//! `cargo xtask rollback --yes`: the release checklist's Emergency Rollback. `workspaceId`
//! becomes nullable again on the four tables and the contract migration is marked rolled back,
//! in one transaction under Prisma's advisory lock, so `migrate deploy` brings it back later.
//! Without `--yes` it only prints what it would do.
//!
//! It also re-adds the expand step's `CHECK ("workspaceId" IS NOT NULL) NOT VALID` constraints
//! (brief locks, no scan), which returns the tables to exactly their post-expand state: the
//! expand trigger still fills `workspaceId` on every insert and update, so the checks reject
//! nothing the app writes, and the contract re-deploys without an ACCESS EXCLUSIVE scan.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pico_args::Arguments;
use postgres::Client;

use super::inspect;
use super::step::{RunbookReport, Step, Steps};
use crate::cli::{self, Globals};
use crate::db::{self, quote_ident, Connect};
use crate::error::Outcome;
use crate::migrate::history;
use crate::migrate::state::State;
use crate::migrate::DeployOptions;
use crate::migrations::Migration;
use crate::report;
use crate::tenancy::{self, Column, CONTRACT, DATAHUB_TABLES};

pub(crate) const SUMMARY: &str = "the Emergency Rollback: workspaceId nullable again";

pub(crate) const HELP: &str = "\
cargo xtask rollback [--yes]
The release checklist's Emergency Rollback. Makes workspaceId nullable again on the four Data
Hub tables and marks the contract migration rolled back, in one transaction; `cargo xtask
migrate deploy` brings NOT NULL back. Without --yes it prints what it would do and changes
nothing.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let yes = args.contains("--yes");
    cli::finish(args, "rollback")?;
    let migrations = globals.migrations()?;
    let mut client = globals.url()?.connect()?;
    let report = rollback(&mut client, &migrations, yes, &DeployOptions::default())?;
    report::emit(&report, false)
}

pub fn rollback(
    client: &mut Client,
    migrations: &[Migration],
    yes: bool,
    deploy: &DeployOptions,
) -> Result<RunbookReport> {
    let mut steps = Steps::new(if yes {
        "rollback"
    } else {
        "rollback (preview)"
    });
    let state = inspect::inspect(client, migrations)?;
    let not_null: Vec<String> = state
        .columns
        .iter()
        .filter(|(_, c)| *c == Column::NotNull)
        .map(|(t, _)| t.clone())
        .collect();
    let contract_applied = state.status.state_of(CONTRACT) == Some(&State::Applied);
    if not_null.is_empty() && !contract_applied {
        return Ok(steps.finish(
            true,
            format!(
                "Nothing to roll back: workspaceId is not NOT NULL on any table and `{CONTRACT}` is {}.",
                state
                    .status
                    .state_of(CONTRACT)
                    .map(State::label)
                    .unwrap_or("unknown")
            ),
        ));
    }
    let statements = statements(client, &not_null)?;
    if !yes {
        for sql in &statements {
            steps.planned("sql", sql.clone());
        }
        if contract_applied {
            steps.planned(
                "mark rolled back",
                format!("`{CONTRACT}` in `_prisma_migrations` (rolled_back_at = now())"),
            );
        }
        return Ok(steps.finish(
            true,
            "Preview only: nothing was changed. Run `cargo xtask rollback --yes` to do this.",
        ));
    }

    db::acquire_migration_lock(client, deploy.lock_wait)?;
    let started = Instant::now();
    let result = run_with_retries(client, &statements, contract_applied, deploy);
    db::release_migration_lock(client)?;
    match result {
        Ok(lock_timeouts) => {
            let retries = match lock_timeouts {
                0 => String::new(),
                n => format!(" (after {n} lock timeout(s))"),
            };
            steps.push(Step::done(
                "drop NOT NULL",
                started,
                format!(
                    "workspaceId nullable on {}; NOT VALID checks re-added{retries}",
                    if not_null.is_empty() {
                        "no table (it already was)".to_string()
                    } else {
                        not_null.join(", ")
                    }
                ),
            ));
            if contract_applied {
                steps.push(Step {
                    duration: Duration::ZERO,
                    ..Step::done("mark rolled back", started, format!("`{CONTRACT}`"))
                });
            }
            Ok(steps.finish(
                true,
                format!("✅ Rolled back: workspaceId is nullable again and `{CONTRACT}` is pending. Once the cause is fixed: `cargo xtask check`, then `cargo xtask migrate deploy` restores NOT NULL."),
            ))
        }
        Err(error) => {
            steps.push(Step::error("drop NOT NULL", started, &error));
            Ok(steps.finish(
                false,
                "❌ Nothing was changed (the rollback runs as one transaction). Fix the cause above, then run `cargo xtask rollback --yes` again.",
            ))
        }
    }
}

/// DROP NOT NULL where it is set, and the NOT VALID check where it is missing.
fn statements(client: &mut Client, not_null: &[String]) -> Result<Vec<String>> {
    let mut statements = Vec::new();
    for table in DATAHUB_TABLES {
        if not_null.iter().any(|t| t == table) {
            statements.push(tenancy::drop_not_null_sql(table));
        }
        let has_check = client
            .query_opt(
                tenancy::CHECK_EXISTS_SQL,
                &[&tenancy::not_null_check(table), &quote_ident(table)],
            )
            .with_context(|| format!("cannot look up the NOT NULL check of `{table}`"))?
            .is_some();
        if !has_check {
            statements.push(tenancy::add_not_null_check_sql(table));
        }
    }
    Ok(statements)
}

/// Runs the statements and the bookkeeping in one transaction under `lock_timeout`, retrying
/// a lock timeout with backoff; returns how many lock timeouts it took.
fn run_with_retries(
    client: &mut Client,
    statements: &[String],
    mark_contract: bool,
    deploy: &DeployOptions,
) -> Result<u32> {
    let (outcome, lock_timeouts) = db::retry_on_lock_timeout(
        "the rollback",
        deploy.lock_timeout,
        deploy.lock_retries,
        || {
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT set_config('lock_timeout', $1, true)",
                &[&format!("{}ms", deploy.lock_timeout.as_millis())],
            )?;
            for sql in statements {
                tx.batch_execute(sql)?;
            }
            if mark_contract {
                history::mark_applied_rolled_back(&mut tx, CONTRACT)?;
            }
            tx.commit()
        },
    );
    outcome.map(|()| lock_timeouts).map_err(|error| {
        let retries = match lock_timeouts {
            0 => String::new(),
            n => format!(" (after {n} lock timeout(s): something holds a lock on these tables; see pg_locks)"),
        };
        anyhow::anyhow!(
            "the rollback failed{retries}: {}",
            db::describe_driver_error(&error)
        )
    })
}

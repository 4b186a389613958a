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

use anyhow::Result;
use postgres::Client;

use super::inspect::{self, Column};
use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::db::{self, quote_ident};
use crate::migrate::history;
use crate::migrate::state::State;
use crate::migrate::DeployOptions;
use crate::migrations::{Migration, CONTRACT};

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
            steps.push(Step {
                name: "drop NOT NULL".into(),
                result: StepResult::Done,
                detail: format!(
                    "workspaceId nullable on {}; NOT VALID checks re-added{retries}",
                    if not_null.is_empty() {
                        "no table (it already was)".to_string()
                    } else {
                        not_null.join(", ")
                    }
                ),
                duration: started.elapsed(),
                rows: None,
            });
            if contract_applied {
                steps.push(Step {
                    name: "mark rolled back".into(),
                    result: StepResult::Done,
                    detail: format!("`{CONTRACT}`"),
                    duration: Duration::ZERO,
                    rows: None,
                });
            }
            Ok(steps.finish(
                true,
                format!("✅ Rolled back: workspaceId is nullable again and `{CONTRACT}` is pending. Once the cause is fixed: `cargo xtask check`, then `cargo xtask migrate deploy` restores NOT NULL."),
            ))
        }
        Err(error) => {
            steps.push(Step {
                name: "drop NOT NULL".into(),
                result: StepResult::Failed,
                detail: format!("{error:#}"),
                duration: started.elapsed(),
                rows: None,
            });
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
    for table in crate::tables::DATAHUB_TABLES {
        if not_null.iter().any(|t| t == table) {
            statements.push(format!(
                "ALTER TABLE {} ALTER COLUMN \"workspaceId\" DROP NOT NULL",
                quote_ident(table)
            ));
        }
        let check = format!("{table}_workspaceId_not_null");
        let has_check = client
            .query_opt(
                "SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)",
                &[&check, &quote_ident(table)],
            )?
            .is_some();
        if !has_check {
            statements.push(format!(
                "ALTER TABLE {} ADD CONSTRAINT {} CHECK (\"workspaceId\" IS NOT NULL) NOT VALID",
                quote_ident(table),
                quote_ident(&check)
            ));
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
        anyhow::anyhow!("{}{retries}", db::describe_driver_error(&error))
    })
}

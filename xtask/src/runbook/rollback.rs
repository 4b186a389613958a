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
use crate::db::{self, quote_ident, Connect, Failure};
use crate::error::Outcome;
use crate::interrupt;
use crate::migrate::history;
use crate::migrate::running;
use crate::migrate::state::State;
use crate::migrate::DeployOptions;
use crate::migrations::Migration;
use crate::report;
use crate::tenancy::{self, Column, CONTRACT, DATAHUB_TABLES};

pub(crate) const SUMMARY: &str = "the Emergency Rollback: workspaceId nullable again";

pub(crate) const HELP: &str = "\
cargo xtask rollback [--yes] [--lock-wait SECONDS] [--lock-timeout SECONDS]
The release checklist's Emergency Rollback. Makes workspaceId nullable again on the four Data
Hub tables and marks the contract migration rolled back, in one transaction; `cargo xtask
migrate deploy` brings NOT NULL back. Without --yes it prints what it would do and changes
nothing. With --yes it decides under the migration lock, after any migration still running
has finished. Each try waits at most 500 ms for a table lock; tries repeat until
--lock-timeout seconds of lock waits are spent (default 60).
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let yes = args.contains("--yes");
    let mut deploy = DeployOptions::default();
    crate::migrate::take_lock_options(&mut args, &mut deploy)?;
    cli::finish(args, "rollback")?;
    let migrations = globals.migrations()?;
    let mut client = globals.url()?.connect()?;
    let report = rollback(&mut client, &migrations, yes, &deploy)?;
    report::emit(&report, false)
}

pub fn rollback(
    client: &mut Client,
    migrations: &[Migration],
    yes: bool,
    deploy: &DeployOptions,
) -> Result<RunbookReport> {
    if !yes {
        let mut steps = Steps::new("rollback (preview)");
        return Ok(match decide(client, migrations)? {
            Decision::Nothing(why) => steps.finish(true, why),
            Decision::RollBack(plan) => {
                for sql in &plan.statements {
                    steps.planned("sql", sql.clone());
                }
                if plan.contract_applied {
                    steps.planned(
                        "mark rolled back",
                        format!("`{CONTRACT}` in `_prisma_migrations` (rolled_back_at = now())"),
                    );
                }
                steps.finish(
                    true,
                    "Preview only: nothing was changed. Run `cargo xtask rollback --yes` to do this.",
                )
            }
        });
    }
    // Decided under the migration lock, after any migration still running has finished: a
    // contract that lands while a rollback decides "nothing to roll back" would stay.
    db::with_migration_lock(client, deploy.lock_wait, migrations, |client| {
        running::wait_for_others(client, migrations, deploy.lock_wait)?;
        let steps = Steps::new("rollback");
        match decide(client, migrations)? {
            Decision::Nothing(why) => Ok(steps.finish(true, why)),
            Decision::RollBack(plan) => Ok(execute(client, &plan, deploy, steps)),
        }
    })
}

/// What the rollback would do, from what the database shows now.
struct Plan {
    statements: Vec<String>,
    not_null: Vec<String>,
    contract_applied: bool,
}

enum Decision {
    Nothing(String),
    RollBack(Plan),
}

fn decide(client: &mut Client, migrations: &[Migration]) -> Result<Decision> {
    let state = inspect::inspect(client, migrations)?;
    let not_null: Vec<String> = state
        .columns
        .iter()
        .filter(|(_, c)| *c == Column::NotNull)
        .map(|(t, _)| t.clone())
        .collect();
    let contract_applied = state.status.state_of(CONTRACT) == Some(&State::Applied);
    if not_null.is_empty() && !contract_applied {
        return Ok(Decision::Nothing(format!(
            "Nothing to roll back: workspaceId is not NOT NULL on any table and `{CONTRACT}` is {}.",
            state
                .status
                .state_of(CONTRACT)
                .map(State::label)
                .unwrap_or("unknown")
        )));
    }
    Ok(Decision::RollBack(Plan {
        statements: statements(client, &not_null)?,
        not_null,
        contract_applied,
    }))
}

fn execute(
    client: &mut Client,
    plan: &Plan,
    deploy: &DeployOptions,
    mut steps: Steps,
) -> RunbookReport {
    let started = Instant::now();
    match run_with_retries(client, &plan.statements, plan.contract_applied, deploy) {
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
                    if plan.not_null.is_empty() {
                        "no table (it already was)".to_string()
                    } else {
                        plan.not_null.join(", ")
                    }
                ),
            ));
            if plan.contract_applied {
                steps.push(Step {
                    duration: Duration::ZERO,
                    ..Step::done("mark rolled back", started, format!("`{CONTRACT}`"))
                });
            }
            steps.finish(
                true,
                format!("✅ Rolled back: workspaceId is nullable again and `{CONTRACT}` is pending. Once the cause is fixed: `cargo xtask check`, then `cargo xtask migrate deploy` restores NOT NULL."),
            )
        }
        Err(error) => {
            steps.push(Step::error("drop NOT NULL", started, &error));
            let conclusion = match db::classify(&error) {
                Failure::ConnectionLost => "❌ The connection was lost; the rollback runs as one transaction, so either all of it or none of it happened: once the server answers, run `cargo xtask rollback --yes` again (it reads what is there first).".to_string(),
                _ => "❌ Nothing was changed (the rollback runs as one transaction). Fix the cause above, then run `cargo xtask rollback --yes` again.".to_string(),
            };
            steps.finish(false, conclusion)
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
/// a lock timeout with backoff within the lock budget; returns how many lock timeouts it took.
fn run_with_retries(
    client: &mut Client,
    statements: &[String],
    mark_contract: bool,
    deploy: &DeployOptions,
) -> Result<u32> {
    let tries = db::retry_on_lock_timeout(
        "the rollback",
        deploy.lock_timeout,
        deploy.lock_budget,
        || {
            let token = client.cancel_token();
            let _cancellable = interrupt::register(token);
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
    let lock_timeouts = tries.lock_timeouts;
    tries.outcome.map(|()| lock_timeouts).map_err(|error| {
        let why = if let Some(signal) = interrupt::stopped_by(&error) {
            format!("{} cancelled it", interrupt::signal_name(signal))
        } else if tries.gave_up {
            format!("it could not get its locks in {lock_timeouts} tries of {} ms within the {} s lock budget (`--lock-timeout`): something holds a lock on these tables (see `pg_locks`)", deploy.lock_timeout.as_millis(), deploy.lock_budget.as_secs())
        } else {
            db::describe_driver_error(&error)
        };
        let message = anyhow::anyhow!("the rollback failed: {why}");
        match interrupt::requested() {
            Some(signal) => anyhow::Error::new(error)
                .context(interrupt::Interrupted(signal))
                .context(message.to_string()),
            None => anyhow::Error::new(error).context(message.to_string()),
        }
    })
}

//! `cargo xtask rollback --yes`: the release checklist's Emergency Rollback, for the release
//! contracted last (or `--release NAME`) and no other. The columns its contract made NOT NULL
//! become nullable again and the contract migration is marked rolled back, in one transaction
//! under Prisma's advisory lock, so `migrate deploy` (or `release`) brings it back later.
//! Without `--yes` it only prints what it would do.
//!
//! It also re-adds the `CHECK (column IS NOT NULL) NOT VALID` constraints the release's expand
//! added and its contract dropped (brief locks, no scan), which returns the tables to exactly
//! their post-expand state, and the contract re-deploys without an ACCESS EXCLUSIVE scan.

use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};
use pico_args::Arguments;

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
use crate::releases::{self, rule, Column, Release};
use crate::report;

pub(crate) const SUMMARY: &str = "the Emergency Rollback of the release contracted last";

pub(crate) const HELP: &str = "\
cargo xtask rollback [--release NAME] [--yes] [--json] [--lock-wait SECONDS] [--lock-timeout SECONDS]
The release checklist's Emergency Rollback of the release contracted last (or --release NAME):
the columns its contract made NOT NULL become nullable again and the contract migration is
marked rolled back, in one transaction; `cargo xtask release` brings NOT NULL back. It refuses
when it cannot tell which release was contracted last. Without --yes it prints what it would do and changes
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
    let json = args.contains("--json");
    let release: Option<String> = args
        .opt_value_from_str("--release")
        .map_err(cli::parse_error)?;
    let mut deploy = DeployOptions::default();
    crate::migrate::take_lock_options(&mut args, &mut deploy)?;
    cli::finish(args, "rollback")?;
    let migrations = globals.migrations()?;
    let mut client = globals.url()?.connect()?;
    let report = rollback_release(&mut client, &migrations, release.as_deref(), yes, &deploy)?;
    report::emit(&report, json)
}

/// Rolls back the release contracted last.
pub fn rollback(
    client: &mut Client,
    migrations: &[Migration],
    yes: bool,
    deploy: &DeployOptions,
) -> Result<RunbookReport> {
    rollback_release(client, migrations, None, yes, deploy)
}

/// Rolls back `release` (by name), or the release contracted last.
pub fn rollback_release(
    client: &mut Client,
    migrations: &[Migration],
    release: Option<&str>,
    yes: bool,
    deploy: &DeployOptions,
) -> Result<RunbookReport> {
    if !yes {
        let mut steps = Steps::new("rollback (preview)");
        return Ok(match decide(client, migrations, release)? {
            Decision::Nothing(why) => steps.finish(true, why),
            Decision::Refuse(why) => steps.finish(false, why),
            Decision::RollBack(plan) => {
                for sql in &plan.statements {
                    steps.planned("sql", sql.clone());
                }
                if plan.contract_applied {
                    steps.planned(
                        "mark rolled back",
                        format!(
                            "`{}` in `_prisma_migrations` (rolled_back_at = now())",
                            plan.contract
                        ),
                    );
                }
                steps.finish(
                    true,
                    match release {
                        Some(name) => format!("Preview only: nothing was changed. Run `cargo xtask rollback --release {name} --yes` to do this."),
                        None => format!("Preview only: nothing was changed. Run `cargo xtask rollback --yes` to do this to `{}`, the release contracted last.", plan.release),
                    },
                )
            }
        });
    }
    // Decided under the migration lock, after any migration still running has finished: a
    // contract that lands while a rollback decides "nothing to roll back" would stay.
    db::with_migration_lock(client, deploy.lock_wait, migrations, |client| {
        running::wait_for_others(client, migrations, deploy.lock_wait)?;
        let steps = Steps::new("rollback");
        match decide(client, migrations, release)? {
            Decision::Nothing(why) => Ok(steps.finish(true, why)),
            Decision::Refuse(why) => Ok(steps.finish(false, why)),
            Decision::RollBack(plan) => Ok(execute(client, &plan, deploy, steps)),
        }
    })
}

/// What the rollback would do, from what the database shows now.
struct Plan {
    release: String,
    contract: String,
    statements: Vec<String>,
    not_null: Vec<String>,
    contract_applied: bool,
}

enum Decision {
    Nothing(String),
    Refuse(String),
    RollBack(Plan),
}

fn decide(client: &mut Client, migrations: &[Migration], name: Option<&str>) -> Result<Decision> {
    let state = inspect::inspect(client, migrations)?;
    let applied = |m: &str| state.status.state_of(m) == Some(&State::Applied);
    let position = |m: &str| migrations.iter().position(|x| x.name == m);
    let contracted: Vec<&(Release, releases::ColumnState)> = state
        .releases
        .iter()
        .filter(|(r, c)| {
            r.contract.as_deref().is_some_and(&applied)
                || (!r.fills.is_empty() && c.any(Column::NotNull))
        })
        .collect();
    let chosen = match name {
        Some(name) => {
            let release = releases::find(
                &state
                    .releases
                    .iter()
                    .map(|(r, _)| r.clone())
                    .collect::<Vec<_>>(),
                name,
            )?
            .name
            .clone();
            state.releases.iter().find(|(r, _)| r.name == release)
        }
        None => {
            // The release contracted last: the latest contract (in the folder's order) that is
            // recorded applied. A release whose columns are NOT NULL without its contract
            // recorded was changed by hand: which came last cannot be told from the database.
            let by_hand: Vec<&str> = contracted
                .iter()
                .filter(|(r, _)| !r.contract.as_deref().is_some_and(&applied))
                .map(|(r, _)| r.name.as_str())
                .collect();
            if !by_hand.is_empty() && contracted.len() > 1 {
                return Ok(Decision::Refuse(format!(
                    "❌ Nothing was changed: the columns of {} are NOT NULL without their contract recorded applied, so which release was contracted last cannot be told. Name it: `cargo xtask rollback --release NAME`.",
                    by_hand.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                )));
            }
            contracted
                .iter()
                .max_by_key(|(r, _)| r.contract.as_deref().and_then(position))
                .copied()
        }
    };
    let Some((release, columns)) = chosen else {
        return Ok(Decision::Nothing(
            "Nothing to roll back: no declared release has its contract applied.".to_string(),
        ));
    };
    let Some(contract) = release.contract.clone() else {
        return Ok(Decision::Refuse(format!(
            "❌ Nothing was changed: the `{}` release has no contract (it fills no column), so there is no NOT NULL to undo; undo its migrations with a new migration (`cargo xtask migrate new NAME`).",
            release.name
        )));
    };
    // Rollback undoes what the contract does to the release's columns (NOT NULL, and the
    // NOT VALID checks it drops); a contract that does more leaves what rollback cannot undo,
    // and a later deploy of it would trip over that.
    let Some(script) = migrations.iter().find(|m| m.name == contract) else {
        return Ok(Decision::Refuse(format!(
            "❌ Nothing was changed: the contract `{contract}` that `migrations/{}/release.toml` names is not in the migrations folder, so what it did cannot be read; correct `contract` there (see `cargo xtask migrate status` for the applied names).",
            release.expand
        )));
    };
    let checks: Vec<&str> = release
        .fills
        .iter()
        .filter_map(|f| f.not_null_check.as_deref())
        .collect();
    let beyond: Vec<String> = crate::migrate::effects::effects(&script.script)
        .into_iter()
        .filter(|e| {
            !matches!(&e.object, crate::migrate::effects::Object::Constraint { name, .. }
                if !e.exists_after && checks.contains(&name.as_str()))
        })
        .map(|e| e.object.describe())
        .collect();
    if !beyond.is_empty() {
        return Ok(Decision::Refuse(format!(
            "❌ Nothing was changed: the contract `{contract}` of `{}` does more than set its columns NOT NULL ({}), which rollback cannot undo; undo it with a new migration (`cargo xtask migrate new NAME`).",
            release.name,
            beyond.join(", ")
        )));
    }
    let not_null: Vec<String> = columns
        .of(Column::NotNull)
        .into_iter()
        .map(|f| format!("{}.{}", f.table, f.column))
        .collect();
    let contract_applied = applied(&contract);
    if not_null.is_empty() && !contract_applied {
        return Ok(Decision::Nothing(format!(
            "Nothing to roll back: no column of the `{}` release is NOT NULL and `{contract}` is {}.",
            release.name,
            state
                .status
                .state_of(&contract)
                .map(State::label)
                .unwrap_or("unknown")
        )));
    }
    Ok(Decision::RollBack(Plan {
        release: release.name.clone(),
        statements: statements(client, release, columns)?,
        contract,
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
    let contract = plan.contract_applied.then_some(plan.contract.as_str());
    match run_with_retries(client, &plan.statements, contract, deploy) {
        Ok(lock_timeouts) => {
            let retries = match lock_timeouts {
                0 => String::new(),
                n => format!(" (after {n} lock timeout(s))"),
            };
            steps.push(Step::done(
                "drop NOT NULL",
                started,
                format!(
                    "nullable again: {}; NOT VALID checks re-added{retries}",
                    if plan.not_null.is_empty() {
                        "no column (each already was)".to_string()
                    } else {
                        plan.not_null.join(", ")
                    }
                ),
            ));
            if plan.contract_applied {
                steps.push(Step {
                    duration: Duration::ZERO,
                    ..Step::done("mark rolled back", started, format!("`{}`", plan.contract))
                });
            }
            steps.finish(
                true,
                format!(
                    "✅ Rolled back `{}`: its columns are nullable again and `{}` is pending. Once the cause is fixed: `cargo xtask check --release {}`, then `cargo xtask release` restores NOT NULL.",
                    plan.release, plan.contract, plan.release
                ),
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

/// DROP NOT NULL where it is set, and the expand's NOT VALID check where it is missing.
fn statements(
    client: &mut Client,
    release: &Release,
    columns: &releases::ColumnState,
) -> Result<Vec<String>> {
    let mut statements = Vec::new();
    for (fill, column) in &columns.fills {
        if *column == Column::NotNull {
            statements.push(rule::drop_not_null_sql(&fill.table, &fill.column));
        }
        if *column == Column::Missing {
            continue;
        }
        let Some(check) = &fill.not_null_check else {
            continue;
        };
        let has_check = client
            .query_opt(rule::CHECK_EXISTS_SQL, &[check, &quote_ident(&fill.table)])
            .with_context(|| format!("cannot look up the check `{check}` of `{}`", release.name))?
            .is_some();
        if !has_check {
            statements.push(rule::add_not_null_check_sql(
                &fill.table,
                &fill.column,
                check,
            ));
        }
    }
    Ok(statements)
}

/// Runs the statements and the bookkeeping in one transaction under `lock_timeout`, retrying
/// a lock timeout with backoff within the lock budget; returns how many lock timeouts it took.
fn run_with_retries(
    client: &mut Client,
    statements: &[String],
    mark_contract: Option<&str>,
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
            if let Some(contract) = mark_contract {
                history::mark_applied_rolled_back(&mut tx, contract)?;
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

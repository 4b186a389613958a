//! The database half of the release, shared by `release` and `recover`: deploy `--to` expand,
//! backfill, check, deploy the rest (the indexes, then the contract). Each step reads the
//! database first and is skipped, saying why, when it is already done.
//!
//! NULLs are counted once on this path. Before the index migrations no index covers
//! `workspaceId`, so each count is a scan of all four tables: the backfill counts (it needs the
//! totals), and the gate reads what the backfill proved rather than scanning again.

use std::time::Instant;

use anyhow::Result;
use postgres::Client;

use super::step::{Step, Steps};
use crate::backfill::{self, BackfillOptions};
use crate::check;
use crate::db::{self, DatabaseUrl, Failure};
use crate::migrate::deploy::{self, Left};
use crate::migrate::state::State;
use crate::migrate::{self, DeployOptions, DeployReport};
use crate::migrations::Migration;
use crate::tenancy::{self, Column, EXPAND};

/// Where a runbook stopped, and the command to run next.
pub(crate) struct Stop {
    pub at: String,
    pub next: String,
}

impl Stop {
    fn new(at: &str, next: impl Into<String>) -> Stop {
        Stop {
            at: at.into(),
            next: next.into(),
        }
    }
}

pub(crate) fn run(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    deploy_options: &DeployOptions,
    backfill_options: &BackfillOptions,
    steps: &mut Steps,
) -> Result<Option<Stop>> {
    // 1. deploy --to expand
    if migrate::status(client, migrations)?.state_of(EXPAND) == Some(&State::Applied) {
        steps.skipped("deploy expand", format!("`{EXPAND}` is already applied"));
    } else {
        let started = Instant::now();
        let deploy = DeployOptions {
            to: Some(EXPAND.to_string()),
            ..deploy_options.clone()
        };
        match migrate::deploy(client, url, migrations, &deploy) {
            Ok(report) => steps.push(Step::done("deploy expand", started, applied_names(&report))),
            Err(error) => {
                steps.push(Step::error("deploy expand", started, &error));
                let next = next_after(&error, steps.command());
                return Ok(Some(Stop::new("deploy expand", next)));
            }
        }
    }

    // 2. backfill: its count of NULLs (a scan of each table) is the only one on this path.
    let columns = tenancy::columns(client)?;
    let contract_applied = columns.iter().all(|(_, c)| *c == Column::NotNull);
    let mut backfilled = false;
    if contract_applied {
        steps.skipped(
            "backfill",
            "no NULLs: workspaceId is already NOT NULL on all 4 tables",
        );
    } else {
        let started = Instant::now();
        match backfill::backfill(client, url, backfill_options) {
            Ok(report) => {
                backfilled = report.proves_no_nulls();
                if report.changed_nothing() && backfilled {
                    steps.skipped("backfill", "no NULLs");
                } else {
                    steps.push(
                        Step::done(
                            "backfill",
                            started,
                            format!(
                                "{} personal workspace(s) created",
                                report.personal_workspaces
                            ),
                        )
                        .with_rows(report.total_rows()),
                    );
                }
            }
            Err(error) => {
                steps.push(Step::error("backfill", started, &error));
                let next = match db::classify(&error) {
                    Failure::Other | Failure::PermissionDenied => format!("fix the cause above, then run `cargo xtask {}` again (the backfill continues where it stopped)", steps.command()),
                    _ => next_after(&error, steps.command()),
                };
                return Ok(Some(Stop::new("backfill", next)));
            }
        }
    }

    // 3. check: the gate before the contract. A backfill that ran to the end has proved there
    // is no NULL left (its count, or each table's final sweep, found none), and the expand's
    // NOT NULL checks refuse new ones; only without that proof does the gate count again.
    if contract_applied {
        steps.skipped(
            "check",
            "workspaceId is NOT NULL on all 4 tables: no NULL can exist",
        );
    } else if backfilled && tenancy::not_null_checks_present(client)? {
        steps.push(
            Step::done(
                "check",
                Instant::now(),
                format!(
                    "{}, as the backfill proved; not counted again",
                    check::ALL_BACKFILLED.trim_end_matches('.')
                ),
            )
            .with_rows(0),
        );
    } else {
        let started = Instant::now();
        let report = check::check(client)?;
        if report.is_backfilled() {
            steps.push(Step::done("check", started, check::ALL_BACKFILLED).with_rows(0));
        } else {
            steps.push(
                Step::failed("check", started, report.summary()).with_rows(report.total_nulls()),
            );
            let next = format!(
                "run `cargo xtask backfill`, then `cargo xtask {}` again",
                steps.command()
            );
            return Ok(Some(Stop::new("check", next)));
        }
    }

    // 4. deploy the rest (indexes, contract)
    if migrate::status(client, migrations)?.pending().is_empty() {
        steps.skipped("deploy", "no pending migrations");
    } else {
        let started = Instant::now();
        match migrate::deploy(client, url, migrations, deploy_options) {
            Ok(report) => steps.push(Step::done("deploy", started, applied_names(&report))),
            Err(error) => {
                steps.push(Step::error("deploy", started, &error));
                let next = next_after(&error, steps.command());
                return Ok(Some(Stop::new("deploy", next)));
            }
        }
    }
    Ok(None)
}

/// The next step after a failed step, true to what happened: only a migration recorded as
/// failed (or one whose outcome a lost connection hid) is something `recover` resolves.
pub(crate) fn next_after(error: &anyhow::Error, command: &str) -> String {
    let again = format!("`cargo xtask {command}`");
    let fault = db::cause::server_fault_in(error)
        .map(|fault| format!("{fault}; then "))
        .unwrap_or_default();
    match (deploy::left_by(error), db::classify(error)) {
        (Some(Left::Failed), _) => "run `cargo xtask recover`, which resolves the failed migration once it can prove what its script left behind".into(),
        (Some(Left::Unknown), _) => "once the server answers, run `cargo xtask recover`: it waits for the migration's backend if that still runs, then proves from the catalog whether the script was applied".into(),
        (_, Failure::Interrupted) => format!("nothing is left half done; run {again} again to continue"),
        (Some(Left::RolledBack), _) => format!("nothing was applied and nothing needs resolving; run {again} again once the session holding the lock is done (`pg_locks` shows it), or allow longer with `--lock-timeout SECONDS`"),
        (None, Failure::ConnectionLost) => format!("the connection to PostgreSQL was lost, and nothing failed; {fault}once the server answers, run {again} again (it reads the database first)"),
        (None, Failure::PermissionDenied) => format!("the database role lacks a privilege (see above), and nothing failed; run {again} again as a role that owns the tables (the migration owner's URL)"),
        (None, Failure::MigrationLockBusy) => format!("another migration holds the migration lock, and nothing failed; run {again} again once it has finished"),
        (None, _) if !fault.is_empty() => format!("{fault}run {again} again"),
        (None, _) => format!("fix the cause above, then run {again} again"),
    }
}

fn applied_names(report: &DeployReport) -> String {
    match report.applied.len() {
        0 => "no pending migrations".into(),
        1 => format!("applied `{}`", report.applied[0].name),
        n => format!(
            "applied {n} migrations, `{}` … `{}`",
            report.applied[0].name,
            report.applied[n - 1].name
        ),
    }
}

//! The database half of a release, shared by `release` and `recover`: every pending migration
//! in order, with each declared release's steps where they belong. After a release's expand is
//! applied its backfill runs (before the index migrations that follow it, so the backfill's
//! updates maintain no index on the new columns); before its contract the gate proves no NULL
//! is left; before a migration the running app cannot survive, the new app must be live.
//! Migrations no release declares are deployed as they come, and `migrate deploy` itself stops
//! before one that existing rows would make fail (`migrate::enforces`). Each step reads the
//! database first and is skipped, saying why, when it is already done.

use std::time::Instant;

use crate::db::Client;
use anyhow::{Context, Result};

use super::step::{Step, Steps};
use crate::backfill::{self, BackfillOptions};
use crate::check;
use crate::db::{self, DatabaseUrl, Failure};
use crate::migrate::deploy::{self, Left};
use crate::migrate::{self, DeployOptions, DeployReport};
use crate::migrations::Migration;
use crate::releases::{self, Column, Release};

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

/// What the database steps may do besides deploying.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    /// The app of this release is live (`release --app-url` smoke-tested it, or
    /// `--app-deployed`): migrations the previous app cannot survive may run.
    pub app_deployed: bool,
}

/// Where the next pending chunk of migrations ends, and what comes there.
enum Point<'a> {
    /// Deploy through this expand, then backfill its release.
    AfterExpand(&'a Release),
    /// Backfill (if not proven) and gate the release, then deploy its contract.
    BeforeContract(&'a Release),
    /// The previous app, still connected (these backends), cannot survive this migration.
    BeforeNewApp(&'a Release, String, Vec<String>),
}

pub(crate) fn run(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    deploy_options: &DeployOptions,
    backfill_options: &BackfillOptions,
    gates: &Gates,
    steps: &mut Steps,
) -> Result<Option<Stop>> {
    let declared = releases::load(migrations)?;
    // Releases whose backfill, in this run, proved that no NULL is left.
    let mut proven: Vec<String> = Vec::new();
    // Contracts whose gate passed in this run (deployed with the next chunk), and the columns
    // that gate proved free of NULLs (their NOT NULL is not counted again by deploy).
    let mut gated: Vec<String> = Vec::new();
    let mut proven_columns: Vec<(String, String)> = Vec::new();
    let mut deployed_any = false;
    loop {
        let status = migrate::status(client, migrations)?;
        let pending: Vec<String> = status.pending().iter().map(|e| e.name.clone()).collect();
        if pending.is_empty() {
            if !deployed_any {
                steps.skipped("deploy", "no pending migrations");
            }
            return Ok(None);
        }
        let sessions = if gates.app_deployed {
            Vec::new()
        } else {
            app_sessions(client)?
        };
        let point = pending.iter().enumerate().find_map(|(i, name)| {
            if let Some(release) = releases::by_contract(&declared, name) {
                if !gated.contains(name) {
                    return Some((i, Point::BeforeContract(release)));
                }
            }
            if let Some(release) = declared.iter().find(|r| r.needs_new_app.contains(name)) {
                let old: Vec<String> = sessions
                    .iter()
                    .filter(|(_, known)| datahub_core::app_predates(known.as_deref(), name))
                    .map(|(pid, _)| pid.to_string())
                    .collect();
                if !old.is_empty() {
                    return Some((i, Point::BeforeNewApp(release, name.clone(), old)));
                }
            }
            match releases::by_expand(&declared, name) {
                Some(release) if release.rule.is_some() => Some((i, Point::AfterExpand(release))),
                _ => None,
            }
        });
        // The chunk: everything before the point (and the expand itself, after which the
        // backfill runs), or everything left.
        let through = match &point {
            None => pending.last().cloned(),
            Some((i, Point::AfterExpand(_))) => Some(pending[*i].clone()),
            Some((0, _)) => None,
            Some((i, _)) => Some(pending[i - 1].clone()),
        };
        if let Some(to) = through {
            let started = Instant::now();
            let options = DeployOptions {
                to: Some(to),
                proven: proven_columns.clone(),
                ..deploy_options.clone()
            };
            deployed_any = true;
            match migrate::deploy(client, url, migrations, &options) {
                Ok(report) => steps.push(Step::done("deploy", started, applied_names(&report))),
                Err(error) => {
                    steps.push(Step::error("deploy", started, &error));
                    let next = next_after(&error, url, steps.command());
                    return Ok(Some(Stop::new("deploy", next)));
                }
            }
        }
        match point {
            None => return Ok(None),
            Some((_, Point::AfterExpand(release))) => {
                if let Some(stop) =
                    backfill_step(client, url, release, backfill_options, &mut proven, steps)?
                {
                    return Ok(Some(stop));
                }
                // A backfill that did not finish (a time limit, rows held too long): the gate
                // now, before the index migrations and anything else are deployed over it.
                if !proven.contains(&release.name) {
                    if let Some(stop) = gate(client, release, &proven, steps)? {
                        return Ok(Some(stop));
                    }
                }
            }
            Some((_, Point::BeforeContract(release))) => {
                let contract = release.contract.clone().unwrap_or_default();
                if release.rule.is_some() && !proven.contains(&release.name) {
                    if let Some(stop) =
                        backfill_step(client, url, release, backfill_options, &mut proven, steps)?
                    {
                        return Ok(Some(stop));
                    }
                }
                if let Some(stop) = gate(client, release, &proven, steps)? {
                    return Ok(Some(stop));
                }
                gated.push(contract);
                proven_columns.extend(
                    release
                        .fills
                        .iter()
                        .map(|f| (f.table.clone(), f.column.clone())),
                );
            }
            Some((_, Point::BeforeNewApp(release, name, backends))) => {
                steps.push(Step::failed(
                    "new app",
                    Instant::now(),
                    format!(
                        "`{name}` (release `{}`) drops what the previous app uses, and an app that predates it is connected (backend {}): it runs once the app of this release is live",
                        release.name,
                        backends.join(", ")
                    ),
                ));
                return Ok(Some(Stop::new(
                    "new app",
                    format!(
                        "deploy the app of this release, then run `cargo xtask {}` again once the previous app's connections are gone (or with `--app-url URL`, which smoke-tests the running app first, or `--app-deployed`)",
                        steps.command()
                    ),
                )));
            }
        }
    }
}

/// The app's connections to this database other than ours: (pid, the newest migration the app
/// knows, when it names one). An app connected through a pooler, or under another
/// `application_name`, is not seen: `--app-url` or `--app-deployed` say what cannot be seen.
fn app_sessions(client: &mut Client) -> Result<Vec<(i32, Option<String>)>> {
    let rows = client
        .query(
            "SELECT pid, application_name FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE $1 || '%'
             ORDER BY pid",
            &[&datahub_core::APP_NAME],
        )
        .context("cannot look for the app's connections in `pg_stat_activity`")?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(1);
            let known = datahub_core::app_schema(&name)?;
            Some((row.get(0), known.map(str::to_string)))
        })
        .collect())
}

/// The release's backfill, unless its columns are NOT NULL already.
fn backfill_step(
    client: &mut Client,
    url: &DatabaseUrl,
    release: &Release,
    options: &BackfillOptions,
    proven: &mut Vec<String>,
    steps: &mut Steps,
) -> Result<Option<Stop>> {
    let name = format!("backfill {}", release.name);
    let columns = release.columns(client)?;
    if columns.all(Column::NotNull) {
        steps.skipped(
            &name,
            format!("no NULLs: {} NOT NULL", release.describe_fills()),
        );
        proven.push(release.name.clone());
        return Ok(None);
    }
    let started = Instant::now();
    match backfill::backfill(client, url, release, options) {
        Ok(report) => {
            if report.proves_no_nulls() {
                proven.push(release.name.clone());
            }
            if report.changed_nothing() && report.proves_no_nulls() {
                steps.skipped(&name, "no NULLs");
            } else {
                let mut detail = format!("{} {} created", report.prepared, report.prepared_label);
                if report.unfilled() > 0 {
                    detail.push_str(&format!(
                        "; the rule gives no value to {} row(s)",
                        report.unfilled()
                    ));
                }
                steps.push(Step::done(&name, started, detail).with_rows(report.total_rows()));
            }
            Ok(None)
        }
        Err(error) => {
            steps.push(Step::error(&name, started, &error));
            let next = match db::classify(&error) {
                Failure::Other | Failure::PermissionDenied
                    if db::cause::server_fault_in(&error).is_none() =>
                {
                    format!("fix the cause above, then run `cargo xtask {}` again (the backfill continues where it stopped)", steps.command())
                }
                _ => next_after(&error, url, steps.command()),
            };
            Ok(Some(Stop::new(&name, next)))
        }
    }
}

/// The gate before a contract. A backfill that ran to the end in this run has proved there is
/// no NULL left, and the expand's NOT VALID checks refuse new ones: then nothing is counted
/// again. Otherwise the NULLs are counted, and any stops the release here.
fn gate(
    client: &mut Client,
    release: &Release,
    proven: &[String],
    steps: &mut Steps,
) -> Result<Option<Stop>> {
    let name = format!("check {}", release.name);
    let columns = release.columns(client)?;
    if columns.all(Column::NotNull) {
        steps.skipped(
            &name,
            format!("{} NOT NULL: no NULL can exist", release.describe_fills()),
        );
        return Ok(None);
    }
    if proven.contains(&release.name) && release.new_nulls_refused(client, &columns)? {
        steps.push(
            Step::done(
                &name,
                Instant::now(),
                format!(
                    "{}, as the backfill proved; not counted again",
                    release.backfilled.trim_end_matches('.')
                ),
            )
            .with_rows(0),
        );
        return Ok(None);
    }
    let started = Instant::now();
    let report = check::check_release(client, release)?;
    if report.is_backfilled() {
        steps.push(Step::done(&name, started, release.backfilled.clone()).with_rows(0));
        return Ok(None);
    }
    let summary = check::CheckReport {
        releases: vec![report.clone()],
    }
    .summary();
    steps.push(Step::failed(&name, started, summary).with_rows(report.total_nulls()));
    let next = match &release.rule {
        Some(_) => format!(
            "run `cargo xtask backfill --release {}`, then `cargo xtask {}` again",
            release.name,
            steps.command()
        ),
        None => format!(
            "the `{}` release declares no backfill rule: fill those rows, then run `cargo xtask {}` again",
            release.name,
            steps.command()
        ),
    };
    Ok(Some(Stop::new(&name, next)))
}

/// The next step after a failed step, true to what happened: only a migration recorded as
/// failed (or one whose outcome a lost connection hid) is something `recover` resolves.
pub(crate) fn next_after(error: &anyhow::Error, url: &DatabaseUrl, command: &str) -> String {
    let again = format!("`cargo xtask {command}`");
    let lost = matches!(db::classify(error), Failure::ConnectionLost);
    let fault = db::cause::server_fault_in(error)
        .or_else(|| deploy::fault_by(error))
        // Without the server's words, a new connection shows whether it crashed.
        .or_else(|| lost.then(|| db::cause::probe_after_loss(url)).flatten())
        .map(|fault| format!("{fault}; then "))
        .unwrap_or_default();
    match (deploy::left_by(error), db::classify(error)) {
        (Some(Left::Refused), _) => format!("nothing was applied or recorded; do what the error above says, then run {again} again"),
        (Some(Left::Failed), _) => format!("{fault}run `cargo xtask recover`, which resolves the failed migration once it can prove what its script left behind"),
        (Some(Left::Unknown), _) => format!("{fault}once the server answers, run `cargo xtask recover`: it waits for the migration's backend if that still runs, then proves from the catalog whether the script was applied"),
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

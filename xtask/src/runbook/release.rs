//! `cargo xtask release`: the release checklist's Normal Deployment as one command.
//!
//! deploy `--to` expand → backfill → check → deploy the rest → build the app → smoke.
//! Before each step the database is read again; a step that is already done is skipped and the
//! report says how the database shows it. The first failure stops the release with the command
//! to run next.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use postgres::Client;

use super::inspect::{self, Column};
use super::smoke_record;
use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::app_build::{AppBuild, APP_BIN_ENV};
use crate::backfill::{self, BackfillOptions};
use crate::check;
use crate::db::DatabaseUrl;
use crate::migrate::state::State;
use crate::migrate::{self, DeployOptions};
use crate::migrations::{Migration, EXPAND};
use crate::smoke::{self, SmokeOptions};

#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub deploy: DeployOptions,
    pub backfill: BackfillOptions,
    pub build: AppBuild,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            deploy: DeployOptions::default(),
            backfill: BackfillOptions::default(),
            build: AppBuild::from_env(true),
        }
    }
}

pub fn release(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &ReleaseOptions,
) -> Result<RunbookReport> {
    let mut steps = Steps::new("release");

    // Refuse up front what only a person (or `recover`) may decide.
    let state = inspect::inspect(client, migrations)?;
    if let Some(entry) = state.status.entries.iter().find(|e| {
        matches!(
            e.state,
            State::Failed | State::Edited | State::MissingLocally
        )
    }) {
        let next = match entry.state {
            State::Failed => {
                "run `cargo xtask recover` (it reads what the failure left and plans from there)"
                    .to_string()
            }
            _ => state.status.advice().into_iter().next().unwrap_or_default(),
        };
        steps.push(Step {
            name: "preflight".into(),
            result: StepResult::Failed,
            detail: format!("migration `{}` is {}", entry.name, entry.state.label()),
            duration: Default::default(),
            rows: None,
        });
        return Ok(stopped(steps, "preflight", &next));
    }

    if let Some(stop) = database_steps(
        client,
        url,
        migrations,
        &options.deploy,
        &options.backfill,
        &mut steps,
    )? {
        return Ok(stopped(steps, &stop.at, &stop.next));
    }

    // 5. build
    let started = Instant::now();
    let app_bin: PathBuf = match options.build.build() {
        Ok(built) => {
            let (result, detail) = match (&options.build, built.rebuilt) {
                (AppBuild::Prebuilt(_), _) => (
                    StepResult::Skipped,
                    format!("prebuilt app binary ({APP_BIN_ENV})"),
                ),
                (_, false) => (
                    StepResult::Skipped,
                    format!("app binary up to date (`{}`)", options.build.command()),
                ),
                (_, true) => (StepResult::Done, format!("`{}`", options.build.command())),
            };
            steps.push(Step {
                name: "build".into(),
                result,
                detail,
                duration: started.elapsed(),
                rows: None,
            });
            built.path
        }
        Err(error) => {
            steps.push(failed("build", started, &error));
            return Ok(stopped(
                steps,
                "build",
                "fix the build, then run `cargo xtask release` again",
            ));
        }
    };

    // 6. smoke
    let fingerprint = smoke_record::fingerprint(client, &app_bin)?;
    if let Some(when) = smoke_record::passed_before(&fingerprint) {
        steps.skipped(
            "smoke",
            format!("passed {when} against this database and app binary; nothing changed since"),
        );
    } else {
        let started = Instant::now();
        let report = smoke::smoke(
            client,
            url,
            &SmokeOptions {
                url: None,
                app_bin: Some(app_bin),
            },
        )?;
        let passed = report.passed();
        let n_ok = report.checks.iter().filter(|c| c.ok).count();
        let mut detail = format!("{n_ok} of {} checks passed", report.checks.len());
        for check in report.checks.iter().filter(|c| !c.ok) {
            detail.push_str(&format!("\n❌ {}: {}", check.name, check.detail));
        }
        steps.push(Step {
            name: "smoke".into(),
            result: if passed {
                StepResult::Done
            } else {
                StepResult::Failed
            },
            detail,
            duration: started.elapsed(),
            rows: None,
        });
        if !passed {
            return Ok(stopped(
                steps,
                "smoke",
                "fix what the failing checks name, then run `cargo xtask smoke` (or `cargo xtask release` again)",
            ));
        }
        smoke_record::record_pass(&fingerprint)?;
    }

    let all_skipped = steps_all_skipped(&steps);
    let conclusion = if all_skipped {
        "✅ Nothing to do: already released (Database schema is up to date, no NULLs, smoke passed)."
    } else {
        "✅ Released: Database schema is up to date, no NULLs, the app builds and passed the smoke test."
    };
    Ok(steps.finish(true, conclusion))
}

/// Where a runbook stopped, and the command to run next.
pub(super) struct Stop {
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

/// The database half of the release, shared with `recover`: deploy `--to` expand, backfill,
/// check, deploy the rest. Each step reads the database first and is skipped when done.
pub(super) fn database_steps(
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
            Ok(report) => steps.push(Step {
                name: "deploy expand".into(),
                result: StepResult::Done,
                detail: applied_names(&report),
                duration: started.elapsed(),
                rows: None,
            }),
            Err(error) => {
                steps.push(failed("deploy expand", started, &error));
                return Ok(Some(Stop::new("deploy expand", "run `cargo xtask recover`, which resolves the failure once it can prove the migration left nothing behind")));
            }
        }
    }

    // 2. backfill
    let columns = inspect::columns(client)?;
    let contract_applied = columns.iter().all(|(_, c)| *c == Column::NotNull);
    if contract_applied {
        steps.skipped(
            "backfill",
            "no NULLs: workspaceId is already NOT NULL on all 4 tables",
        );
    } else {
        let nulls = check::check(client)?;
        if nulls.is_backfilled() {
            steps.skipped("backfill", "no NULLs");
        } else {
            let started = Instant::now();
            match backfill::backfill(
                client,
                &BackfillOptions {
                    url: Some(url.clone()),
                    ..backfill_options.clone()
                },
            ) {
                Ok(report) => steps.push(Step {
                    name: "backfill".into(),
                    result: StepResult::Done,
                    detail: format!(
                        "{} personal workspace(s) created",
                        report.personal_workspaces
                    ),
                    duration: started.elapsed(),
                    rows: Some(report.total_rows()),
                }),
                Err(error) => {
                    steps.push(failed("backfill", started, &error));
                    return Ok(Some(Stop::new("backfill", format!("fix the cause above, then run `cargo xtask {}` again (the backfill continues where it stopped)", steps.command()))));
                }
            }
        }
    }

    // 3. check: the gate before the contract
    if contract_applied {
        steps.skipped(
            "check",
            "workspaceId is NOT NULL on all 4 tables: no NULL can exist",
        );
    } else {
        let started = Instant::now();
        let report = check::check(client)?;
        if report.is_backfilled() {
            steps.push(Step {
                name: "check".into(),
                result: StepResult::Done,
                detail: check::ALL_BACKFILLED.into(),
                duration: started.elapsed(),
                rows: Some(0),
            });
        } else {
            steps.push(Step {
                name: "check".into(),
                result: StepResult::Failed,
                detail: report.summary(),
                duration: started.elapsed(),
                rows: Some(report.total_nulls()),
            });
            return Ok(Some(Stop::new(
                "check",
                format!(
                    "run `cargo xtask backfill`, then `cargo xtask {}` again",
                    steps.command()
                ),
            )));
        }
    }

    // 4. deploy the rest (indexes, contract)
    let status = migrate::status(client, migrations)?;
    if status.pending().is_empty() {
        steps.skipped("deploy", "no pending migrations");
    } else {
        let started = Instant::now();
        match migrate::deploy(client, url, migrations, deploy_options) {
            Ok(report) => steps.push(Step {
                name: "deploy".into(),
                result: StepResult::Done,
                detail: applied_names(&report),
                duration: started.elapsed(),
                rows: None,
            }),
            Err(error) => {
                steps.push(failed("deploy", started, &error));
                return Ok(Some(Stop::new("deploy", "run `cargo xtask recover`")));
            }
        }
    }

    Ok(None)
}

fn steps_all_skipped(steps: &Steps) -> bool {
    steps.all(|s| s.result == StepResult::Skipped)
}

fn applied_names(report: &migrate::DeployReport) -> String {
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

pub(super) fn failed(name: &str, started: Instant, error: &anyhow::Error) -> Step {
    Step {
        name: name.into(),
        result: StepResult::Failed,
        detail: format!("{error:#}"),
        duration: started.elapsed(),
        rows: None,
    }
}

pub(super) fn stopped(steps: Steps, at: &str, next: &str) -> RunbookReport {
    let command = steps.command();
    steps.finish(
        false,
        format!("❌ {command} stopped at `{at}`. Next: {next}"),
    )
}

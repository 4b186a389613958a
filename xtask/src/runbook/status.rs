//! `cargo xtask status`: the release checklist's Quick Status Check as one summary and one exit
//! code: `migrate status` up to date, `check` green, and the app builds. Read-only.

use std::time::Instant;

use crate::db::Client;
use anyhow::Result;
use pico_args::Arguments;

use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::app_build::{AppBuild, APP_BIN_ENV};
use crate::check;
use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::Outcome;
use crate::migrate::{self, state::State};
use crate::migrations::Migration;
use crate::releases::{self, Phase};
use crate::report::{self, thousands};

pub(crate) const SUMMARY: &str = "the Quick Status Check: migrate status, check, build";

pub(crate) const HELP: &str = "\
cargo xtask status [--json]
The release checklist's Quick Status Check: migrate status, check, and whether the app builds
(cargo build --release -p app, or DATAHUB_APP_BIN). Exit 0 only when all three are fine.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    cli::finish(args, "status")?;
    let migrations = globals.migrations()?;
    let mut client = globals.url()?.connect()?;
    let report = status(&mut client, &migrations, &AppBuild::from_env(true))?;
    report::emit(&report, json)
}

pub fn status(
    client: &mut Client,
    migrations: &[Migration],
    build: &AppBuild,
) -> Result<RunbookReport> {
    let mut steps = Steps::new("status");
    let mut next: Vec<String> = Vec::new();

    let started = Instant::now();
    let status = migrate::status(client, migrations)?;
    let up_to_date = status.is_up_to_date();
    let mut detail = status.summary();
    // Failed, edited or missing migrations come with their own advice; plain pending ones are
    // the release's to deploy, after the backfill.
    let problems = status.not_managed.is_some()
        || status.entries.iter().any(|e| {
            matches!(
                e.state,
                State::Failed | State::Edited | State::MissingLocally
            )
        });
    if problems {
        for line in status.advice() {
            detail.push('\n');
            detail.push_str(&line);
        }
    }
    steps.push(Step {
        result: result(up_to_date),
        ..Step::done("migrate status", started, detail)
    });
    if !up_to_date {
        next.push(if status.not_managed.is_some() {
            "baseline the database (see above)".into()
        } else if status.count(&State::Failed) > 0 {
            "`cargo xtask recover`".into()
        } else {
            "`cargo xtask release`".into()
        });
    }

    let started = Instant::now();
    let report = check::check(client, migrations)?;
    let backfilled = report.is_backfilled();
    steps.push(Step {
        result: result(backfilled),
        ..Step::done("check", started, report.summary()).with_rows(report.total_nulls())
    });
    if !backfilled && next.is_empty() {
        next.push("`cargo xtask backfill`".into());
    }

    // Each declared release's phase, from the same migration states and NULL counts.
    let started = Instant::now();
    let declared = releases::load(migrations)?;
    let phases = declared
        .iter()
        .map(|release| {
            let columns = release.columns(client)?;
            let applied = |name: &str| status.state_of(name) == Some(&State::Applied);
            let phase = match release.phase(&status, &columns) {
                Phase::Pending => "pending".to_string(),
                Phase::Contracted if release.fills.is_empty() => "applied".to_string(),
                Phase::Contracted => "contracted".to_string(),
                Phase::Expanded if release.fills.is_empty() => {
                    let waiting: Vec<&String> = release
                        .needs_new_app
                        .iter()
                        .filter(|m| !applied(m))
                        .collect();
                    format!(
                        "expanded; `{}` waits for the new app",
                        waiting.first().map(|s| s.as_str()).unwrap_or("?")
                    )
                }
                Phase::Expanded => match report.releases.iter().find(|r| r.release == release.name)
                {
                    Some(r) if r.is_backfilled() => {
                        "backfilled and gated; contract pending".to_string()
                    }
                    Some(r) => format!(
                        "expanded, {} NULLs left to backfill",
                        thousands(r.total_nulls())
                    ),
                    None => "expanded".to_string(),
                },
            };
            Ok(format!("{}: {phase}", release.name))
        })
        .collect::<Result<Vec<_>>>()?;
    steps.push(Step::done(
        "releases",
        started,
        if phases.is_empty() {
            "none declared".to_string()
        } else {
            phases.join("; ")
        },
    ));

    let started = Instant::now();
    let built = build.build();
    let detail = match (&built, build) {
        (Ok(_), AppBuild::Prebuilt(_)) => format!("prebuilt app binary ({APP_BIN_ENV})"),
        (Ok(_), _) => format!("`{}` compiled", build.command()),
        (Err(error), _) => error.to_string(),
    };
    steps.push(Step {
        result: result(built.is_ok()),
        ..Step::done("build", started, detail)
    });
    if built.is_err() {
        next.push(format!("fix the build (`{}`)", build.command()));
    }

    let ok = !steps.has_failed();
    let conclusion = if ok {
        "✅ Ready: Database schema is up to date, no NULLs, the app builds.".to_string()
    } else {
        format!("❌ Not ready. Next: {}", next.join(", then "))
    };
    Ok(steps.finish(ok, conclusion))
}

fn result(ok: bool) -> StepResult {
    if ok {
        StepResult::Done
    } else {
        StepResult::Failed
    }
}

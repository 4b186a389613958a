//! `cargo xtask status`: the release checklist's Quick Status Check as one summary and one exit
//! code: `migrate status` up to date, `check` green, and the app builds. Read-only.

use std::time::Instant;

use anyhow::Result;
use postgres::Client;

use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::app_build::{AppBuild, APP_BIN_ENV};
use crate::check;
use crate::migrate::{self, state::State};
use crate::migrations::Migration;

pub fn quick_status(
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
    let problems = status.entries.iter().any(|e| {
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
        name: "migrate status".into(),
        result: result(up_to_date),
        detail,
        duration: started.elapsed(),
        rows: None,
    });
    if !up_to_date {
        next.push(if status.count(&State::Failed) > 0 {
            "`cargo xtask recover`".into()
        } else {
            "`cargo xtask release`".into()
        });
    }

    let started = Instant::now();
    let report = check::check(client)?;
    let backfilled = report.is_backfilled();
    steps.push(Step {
        name: "check".into(),
        result: result(backfilled),
        detail: report.summary(),
        duration: started.elapsed(),
        rows: Some(report.total_nulls()),
    });
    if !backfilled && next.is_empty() {
        next.push("`cargo xtask backfill`".into());
    }

    let started = Instant::now();
    let built = build.build();
    let detail = match (&built, build) {
        (Ok(_), AppBuild::Prebuilt(_)) => format!("prebuilt app binary ({APP_BIN_ENV})"),
        (Ok(_), _) => format!("`{}` compiled", build.command()),
        (Err(error), _) => format!("{error:#}"),
    };
    steps.push(Step {
        name: "build".into(),
        result: result(built.is_ok()),
        detail,
        duration: started.elapsed(),
        rows: None,
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

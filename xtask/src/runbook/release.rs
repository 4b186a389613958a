//! `cargo xtask release`: the release checklist's Normal Deployment as one command.
//!
//! deploy `--to` expand → backfill → check → deploy the rest → build the app → smoke.
//! Before each step the database is read again; a step that is already done is skipped and the
//! report says how the database shows it. The smoke test always runs: it takes seconds and is
//! the proof that the released app works. The first failure stops the release with the command
//! to run next.

use std::time::Instant;

use crate::db::Client;
use anyhow::Result;
use pico_args::Arguments;

use super::database_steps::{self, Gates, Stop};
use super::inspect;
use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::app_build::{AppBuild, APP_BIN_ENV};
use crate::backfill::BackfillOptions;
use crate::cli::{self, Globals};
use crate::db::{self, Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::migrate::running;
use crate::migrate::state::State;
use crate::migrate::DeployOptions;
use crate::migrations::Migration;
use crate::report;
use crate::smoke::{self, SmokeOptions};

pub(crate) const SUMMARY: &str =
    "every pending release, gated: deploy, backfill, check, contract, build, smoke";

pub(crate) const HELP: &str = "\
cargo xtask release [--app-url URL | --app-deployed] [--batch-size N] [--lock-wait SECONDS]
                    [--lock-timeout SECONDS] [--json]
cargo xtask release new NAME --table TABLE --column COLUMN [--type TYPE]   (see `release new --help`)
The release checklist's Normal Deployment, for every pending migration and every release
declared beside its expand migration (migrations/<expand>/release.toml):
  1. deploy each pending migration in order; right after a release's expand, its backfill;
     before its contract, its check (must pass); before a migration the previous app cannot
     survive (the release's needs_new_app), a stop while an app that predates it is connected
     (the app names the newest migration it knows in pg_stat_activity's application_name)
  2. cargo build --release -p app   3. smoke
A migration no release declares that existing rows would make fail (NOT NULL over NULLs, a
constraint they break) is not run: the release stops before it with the count.
Step 1 runs under the migration lock, after any migration still running elsewhere has
finished. Before each step it reads the database; a step already done is skipped and says
why. It stops at the first failure and names the command to run next. Safe to run again at
any time. --lock-wait: how long to wait for the migration lock (default 60 s). --lock-timeout:
the lock budget of each migration (default 60 s; each try waits at most 500 ms).
--app-url URL: the new app is live at URL: it is smoke-tested first, then the migrations the
previous app cannot survive run even while its connections linger (or behind a pooler, where
they cannot be seen). --app-deployed: the same without the smoke test. DATAHUB_APP_BIN=PATH uses a
prebuilt app binary instead of step 2.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if let Ok(Some(sub)) = args.clone().subcommand() {
        if sub == "new" {
            let _ = args.subcommand();
            return crate::releases::scaffold::run(args, globals);
        }
    }
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let app_deployed = args.contains("--app-deployed");
    let app_url: Option<String> = args
        .opt_value_from_str("--app-url")
        .map_err(cli::parse_error)?;
    let batch_size = cli::number(&mut args, "--batch-size", 1..=1_000_000)?;
    let mut options = ReleaseOptions::default();
    options.gates.app_deployed = app_deployed;
    options.app_url = app_url;
    crate::migrate::take_lock_options(&mut args, &mut options.deploy)?;
    cli::finish(args, "release")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    if let Some(n) = batch_size {
        options.backfill.batch_size = n;
    }
    report::emit(&release(&mut client, &url, &migrations, &options)?, json)
}

#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub deploy: DeployOptions,
    pub backfill: BackfillOptions,
    pub build: AppBuild,
    /// What may run besides deploys (the new app is live).
    pub gates: Gates,
    /// The new app's URL: smoke-tested before the migrations it needs run.
    pub app_url: Option<String>,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            deploy: DeployOptions::default(),
            backfill: BackfillOptions::default(),
            build: AppBuild::from_env(true),
            gates: Gates::default(),
            app_url: None,
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
    let mut gates = options.gates.clone();
    if let Some(app_url) = &options.app_url {
        // The new app is live: proven by the smoke test against it, before anything it needs.
        let started = Instant::now();
        let report = smoke::smoke(
            client,
            url,
            &SmokeOptions {
                url: Some(app_url.clone()),
                app_bin: None,
                browser: false,
                lines_on_stdout: false,
            },
        )?;
        let n_ok = report.checks.iter().filter(|c| c.ok).count();
        if !report.passed() {
            steps.push(Step::failed(
                "new app",
                started,
                format!(
                    "{n_ok} of {} smoke checks passed at {app_url}",
                    report.checks.len()
                ),
            ));
            return Ok(steps.stopped(
                "new app",
                "fix what `cargo xtask smoke --url URL` reports about the running app, then run `cargo xtask release --app-url URL` again",
            ));
        }
        steps.push(Step::done(
            "new app",
            started,
            format!(
                "live at {app_url}: {n_ok} of {} smoke checks passed",
                report.checks.len()
            ),
        ));
        gates.app_deployed = true;
    }
    // The database steps decide under the migration lock, after every migration still running
    // elsewhere (a killed deploy's backend, another tool) has finished: two releases, or a
    // release and a recover, take turns instead of deciding from each other's half-done work.
    let stop = db::with_migration_lock(client, options.deploy.lock_wait, migrations, |client| {
        running::wait_for_others(client, migrations, options.deploy.lock_wait)?;
        database_part(client, url, migrations, options, &gates, &mut steps)
    })?;
    if let Some(stop) = stop {
        return Ok(steps.stopped(&stop.at, &stop.next));
    }
    let database_steps_skipped = steps.all(|s| s.result == StepResult::Skipped);

    // 5. build
    let started = Instant::now();
    let app_bin = match options.build.build() {
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
                result,
                ..Step::done("build", started, detail)
            });
            built.path
        }
        Err(error) => {
            steps.push(Step::error("build", started, &error));
            // Ctrl-C reaches cargo too: a build cut short by it is not a broken build.
            let next = match crate::interrupt::requested() {
                Some(_) => "the database steps are done; run `cargo xtask release` again to build and smoke",
                None => "fix the build, then run `cargo xtask release` again",
            };
            return Ok(steps.stopped("build", next));
        }
    };

    // 6. smoke
    let started = Instant::now();
    let report = smoke::smoke(
        client,
        url,
        &SmokeOptions {
            url: None,
            app_bin: Some(app_bin),
            browser: false,
            lines_on_stdout: false,
        },
    )?;
    let n_ok = report.checks.iter().filter(|c| c.ok).count();
    let mut detail = format!("{n_ok} of {} checks passed", report.checks.len());
    for check in report.checks.iter().filter(|c| !c.ok) {
        detail.push_str(&format!("\n❌ {}: {}", check.name, check.detail));
    }
    if !report.passed() {
        steps.push(Step::failed("smoke", started, detail));
        return Ok(steps.stopped(
            "smoke",
            "fix what the failing checks name, then run `cargo xtask smoke` (or `cargo xtask release` again)",
        ));
    }
    steps.push(Step::done("smoke", started, detail));

    let conclusion = if database_steps_skipped {
        "✅ Released: every database step was already done (Database schema is up to date, no NULLs); the app builds and passed the smoke test."
    } else {
        "✅ Released: Database schema is up to date, no NULLs, the app builds and passed the smoke test."
    };
    Ok(steps.finish(true, conclusion))
}

/// Preflight and the database steps: what a failed, edited or missing migration stops (for a
/// person or `recover` to decide), then deploy `--to` expand, backfill, check, deploy the rest.
fn database_part(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &ReleaseOptions,
    gates: &Gates,
    steps: &mut Steps,
) -> Result<Option<Stop>> {
    let state = inspect::inspect(client, migrations)?;
    if let Some(not_managed) = &state.status.not_managed {
        steps.push(Step::failed(
            "preflight",
            Instant::now(),
            not_managed.summary(),
        ));
        return Ok(Some(Stop {
            at: "preflight".into(),
            next: state.status.advice().into_iter().next().unwrap_or_default(),
        }));
    }
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
        steps.push(Step::failed(
            "preflight",
            Instant::now(),
            format!("migration `{}` is {}", entry.name, entry.state.label()),
        ));
        return Ok(Some(Stop {
            at: "preflight".into(),
            next,
        }));
    }
    database_steps::run(
        client,
        url,
        migrations,
        &options.deploy,
        &options.backfill,
        gates,
        steps,
    )
}

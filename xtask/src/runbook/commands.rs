//! Command-line entry points of the runbook commands: flags, help, output and exit code.

use anyhow::Result;
use pico_args::Arguments;

use super::step::RunbookReport;
use crate::app_build::AppBuild;
use crate::cli::{self, Globals};
use crate::error::Outcome;
use crate::migrate::DeployOptions;

const RELEASE_HELP: &str = "\
cargo xtask release [--batch-size N] [--json]: the release checklist's Normal Deployment.
  1. deploy --to the expand migration   2. backfill   3. check (must pass)
  4. deploy the rest (indexes, contract) 5. cargo build --release -p app   6. smoke
Before each step it reads the database; a step already done is skipped and says why. It stops
at the first failure and names the command to run next. Safe to run again at any time.
DATAHUB_APP_BIN=PATH uses a prebuilt app binary instead of step 5.
";

const RECOVER_HELP: &str = "\
cargo xtask recover [--dry-run] [--json]: the recovery plan after a failed migration.
Reads the failed rows of _prisma_migrations and the workspaceId columns (scenario A: expand
applied, contract failed; scenario B: expand failed too), resolves a failed migration as
rolled back only when the database proves it left nothing behind, then deploys up to expand,
backfills, checks, deploys the rest, and ends with migrate status up to date.
--dry-run prints the plan and changes nothing.
";

const ROLLBACK_HELP: &str = "\
cargo xtask rollback [--yes]: the release checklist's Emergency Rollback. Makes workspaceId
nullable again on the four Data Hub tables and marks the contract migration rolled back, in
one transaction; `cargo xtask migrate deploy` brings NOT NULL back. Without --yes it prints
what it would do and changes nothing.
";

const STATUS_HELP: &str = "\
cargo xtask status [--json]: the release checklist's Quick Status Check: migrate status, check,
and whether the app builds (cargo build --release -p app, or DATAHUB_APP_BIN). Exit 0 only
when all three are fine.
";

fn print(report: &RunbookReport, json: bool) -> Result<Outcome> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::from_ready(report.ok))
}

pub fn run_release(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{RELEASE_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let batch_size = cli::positive(&mut args, "--batch-size")?;
    cli::finish(args, "release")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let mut options = super::ReleaseOptions::default();
    if let Some(n) = batch_size {
        options.backfill.batch_size = n;
    }
    let report = super::release(&mut client, &url, &migrations, &options)?;
    print(&report, json)
}

pub fn run_recover(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{RECOVER_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let dry_run = args.contains("--dry-run");
    cli::finish(args, "recover")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let options = super::RecoverOptions {
        dry_run,
        ..Default::default()
    };
    let report = super::recover(&mut client, &url, &migrations, &options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::from_ready(report.report.ok))
}

pub fn run_rollback(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{ROLLBACK_HELP}");
        return Ok(Outcome::Ready);
    }
    let yes = args.contains("--yes");
    cli::finish(args, "rollback")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let report = super::rollback(&mut client, &migrations, yes, &DeployOptions::default())?;
    print(&report, false)
}

pub fn run_status(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{STATUS_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    cli::finish(args, "status")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let report = super::quick_status(&mut client, &migrations, &AppBuild::from_env(true))?;
    print(&report, json)
}

//! `cargo xtask migrate`: status, deploy, resolve and new, compatible with Prisma Migrate. Generic
//! Prisma bookkeeping: nothing here knows the workspace tenancy release.

pub(crate) mod concurrent;
pub mod deploy;
pub mod history;
pub(crate) mod new;
pub mod resolve;
pub(crate) mod running;
pub mod state;
pub mod status;

use std::time::Duration;

use anyhow::Result;
use pico_args::Arguments;

use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::{usage, Outcome};
use crate::report;

pub use deploy::{deploy, DeployOptions, DeployReport};
pub use resolve::{resolve, Resolution};
pub use status::{status, StatusReport};

pub(crate) const SUMMARY: &str = "Prisma-compatible migrations: status, deploy, resolve, new";

pub(crate) const HELP: &str = "\
cargo xtask migrate status [--json]
cargo xtask migrate deploy [--to NAME] [--lock-wait SECONDS] [--lock-timeout SECONDS]
cargo xtask migrate resolve --rolled-back NAME | --applied NAME
cargo xtask migrate new NAME

status    every migration: applied, pending, failed, rolled back, edited, missing locally;
          exits 0 only when the database is up to date
deploy    applies pending migrations in order (up to and including --to NAME), each as one
          script under Prisma's advisory lock (waiting at most --lock-wait seconds, default 60,
          for another deploy); refuses while a migration is failed, edited or missing.
          Each try of a script waits at most 500 ms for a table lock, so the app is never
          queued behind it for longer; tries repeat with backoff until --lock-timeout seconds
          of lock waits are spent (default 60), then the attempt is recorded as rolled back
          and deploy exits 1. An index build (CONCURRENTLY) shows its phase and the backends
          it waits for, and gives up after waiting --lock-timeout seconds in all.
resolve   --rolled-back: a failed migration becomes pending again (its script was rolled back)
          --applied: a failed or pending migration is recorded as applied without running it
new       creates migrations/<UTC timestamp>_<name>/migration.sql

OPTIONS:
    --database-url URL     instead of DATABASE_URL (Prisma URLs work, including ?schema=)
    --migrations-dir DIR   instead of the repository's migrations/
";

/// At most a day of waiting for another deploy's lock.
const LOCK_WAIT_SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// At most a day of lock waits per migration.
pub(crate) const LOCK_TIMEOUT_SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;

/// `--lock-wait SECONDS` (how long to wait for another migration's advisory lock) and
/// `--lock-timeout SECONDS` (the total lock budget of each migration), into `options`.
pub(crate) fn take_lock_options(args: &mut Arguments, options: &mut DeployOptions) -> Result<()> {
    if let Some(seconds) = cli::number(args, "--lock-wait", LOCK_WAIT_SECONDS)? {
        options.lock_wait = Duration::from_secs(seconds);
    }
    if let Some(seconds) = cli::number(args, "--lock-timeout", LOCK_TIMEOUT_SECONDS)? {
        options.lock_budget = Duration::from_secs(seconds);
    }
    Ok(())
}

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let subcommand = args.subcommand().map_err(cli::parse_error)?;
    match subcommand.as_deref() {
        Some("status") => run_status(args, globals),
        Some("deploy") => run_deploy(args, globals),
        Some("resolve") => run_resolve(args, globals),
        Some("new") => run_new(args, globals),
        Some(other) => Err(usage(format!(
            "unknown subcommand `migrate {other}`: use status, deploy, resolve or new (see `cargo xtask migrate --help`)"
        ))),
        None => Err(usage(
            "`cargo xtask migrate` needs a subcommand: status, deploy, resolve or new (see `cargo xtask migrate --help`)",
        )),
    }
}

fn run_status(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    let json = args.contains("--json");
    cli::finish(args, "migrate status")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let report = status(&mut client, &migrations)?;
    if !json {
        println!(
            "{} migrations in `{}`, database `{}`, schema `{}`\n",
            migrations.len(),
            globals.migrations_dir.display(),
            url.describe(),
            url.schema()
        );
    }
    report::emit(&report, json)
}

fn run_deploy(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    let to = cli::text(&mut args, "--to")?;
    let mut options = DeployOptions::default();
    take_lock_options(&mut args, &mut options)?;
    cli::finish(args, "migrate deploy")?;
    let migrations = globals.migrations()?;
    if let Some(to) = &to {
        crate::migrations::find(&migrations, to)?;
    }
    let url = globals.url()?;
    let mut client = url.connect()?;
    options.to = to;
    let report = deploy(&mut client, &url, &migrations, &options)?;
    report::emit(&report, false)
}

fn run_resolve(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    let rolled_back = cli::text(&mut args, "--rolled-back")?;
    let applied = cli::text(&mut args, "--applied")?;
    cli::finish(args, "migrate resolve")?;
    let (resolution, name) = match (rolled_back, applied) {
        (Some(name), None) => (Resolution::RolledBack, name),
        (None, Some(name)) => (Resolution::Applied, name),
        _ => {
            return Err(usage(
                "`cargo xtask migrate resolve` takes exactly one of `--rolled-back NAME` or `--applied NAME`",
            ))
        }
    };
    let migrations = globals.migrations()?;
    let mut client = globals.url()?.connect()?;
    let message = resolve(
        &mut client,
        &migrations,
        resolution,
        &name,
        DeployOptions::default().lock_wait,
    )?;
    println!("{message}");
    Ok(Outcome::Ready)
}

fn run_new(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    let name: Option<String> = args.opt_free_from_str().map_err(cli::parse_error)?;
    cli::finish(args, "migrate new")?;
    let name = name.ok_or_else(|| {
        usage("`cargo xtask migrate new` needs a NAME, e.g. `cargo xtask migrate new add_insight_read_at`")
    })?;
    let path = new::new_migration(&globals.migrations_dir, &name)?;
    println!("Created `{}`", path.display());
    Ok(Outcome::Ready)
}

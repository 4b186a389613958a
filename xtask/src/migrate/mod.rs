//! `cargo xtask migrate`: status, deploy, resolve and new, compatible with Prisma Migrate. Generic
//! Prisma bookkeeping: nothing here knows the workspace tenancy release.

pub mod baseline;
pub(crate) mod checksum;
pub(crate) mod concurrent;
pub mod deploy;
pub mod drift;
pub mod effects;
pub mod enforces;
pub mod history;
pub mod lint;
pub(crate) mod logs;
pub mod new;
pub mod observe;
pub mod plan;
pub mod production;
pub mod resolve;
pub mod rules;
pub(crate) mod running;
pub(crate) mod sample;
pub mod shadow;
pub mod state;
pub mod statements;
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

pub(crate) const SUMMARY: &str =
    "Prisma-compatible migrations: status, deploy, resolve, new; plan and lint on a shadow";

pub(crate) const HELP: &str = "\
cargo xtask migrate status [--json]
cargo xtask migrate deploy [--to NAME] [--lock-wait SECONDS] [--lock-timeout SECONDS] [--skip-row-check]
cargo xtask migrate resolve --rolled-back NAME | --applied NAME
cargo xtask migrate new NAME
cargo xtask migrate plan [NAME…] [--all] [--json | --format text|markdown|json] [--shadow-url URL]
cargo xtask migrate lint [NAME… | --since NAME] [--json] [--shadow-url URL]
cargo xtask migrate drift [--json] [--shadow-url URL]

status    every migration: applied, pending, failed, rolled back, edited, missing locally;
          exits 0 only when the database is up to date
deploy    applies pending migrations in order (up to and including --to NAME), each as one
          script under Prisma's advisory lock (waiting at most --lock-wait seconds, default 60,
          for another deploy); refuses while a migration is failed, edited or missing, and
          refuses a schema with tables but no _prisma_migrations (baseline it with
          resolve --applied). Each try of a script waits at most 500 ms for a table lock,
          so the app is never queued behind it for longer; tries repeat with backoff until
          --lock-timeout seconds of lock waits are spent (default 60), then the attempt is
          recorded as rolled back and deploy exits 1. Before a migration that sets a column NOT
          NULL or validates a constraint, the rows that would make it fail are counted: if any,
          deploy stops before it (exit 1), applies and records nothing, and names table,
          column, count and the release that fills them. --skip-row-check deploys as
          `npx prisma migrate deploy` does, into whatever the rows say (the incident replays). An index build (CONCURRENTLY) shows
          its phase and the backends it waits for, and gives up after waiting
          --lock-timeout seconds in all.
resolve   --rolled-back: a failed migration becomes pending again (its script was rolled back)
          --applied: a failed or pending migration is recorded as applied without running it
new       creates migrations/<UTC timestamp>_<name>/migration.sql, the name made as Prisma's
          `migrate dev --name` makes it ('Add Users-table! v2' -> add_users_table_v2)
plan      runs each migration (default: the pending ones; --all: every one) on a shadow
          database, a copy of the schema just before it with sample rows, never your database,
          and shows per statement the locks held, rewrites, scans and validations
lint      the same observation for every migration (or NAME…); exits 1 when one would block
          the app on an existing table, naming file:line, the lock, the table, what read it and
          the safe rewrite; `-- lint: allow <rule> because <reason>` above a statement records
          a reviewed exception (see `cargo xtask migrate lint --help`; `--rules` lists them)
drift     compares the database with what its applied migrations make on a shadow database
          (tables, columns, constraints, indexes, enum values, triggers); exits 1 on drift

OPTIONS:
    --database-url URL     instead of DATABASE_URL (Prisma URLs work, including ?schema=)
    --migrations-dir DIR   instead of the repository's migrations/
    --shadow-url URL       plan/lint: make the shadow databases on this server (the role needs
                           CREATEDB; only datahub_shadow_* databases are created and dropped)
                           instead of a throwaway cluster
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
    let subcommand = args.subcommand().map_err(cli::parse_error)?;
    if cli::wants_help(&mut args) {
        match subcommand.as_deref() {
            Some("plan") => print!("{}{}", plan::PLAN_HELP, plan::SHADOW_OPTION_HELP),
            Some("lint") => print!("{}{}", plan::LINT_HELP, plan::SHADOW_OPTION_HELP),
            Some("drift") => print!("{}{}", drift::HELP, plan::SHADOW_OPTION_HELP),
            _ => print!("{HELP}"),
        }
        return Ok(Outcome::Ready);
    }
    match subcommand.as_deref() {
        Some("status") => run_status(args, globals),
        Some("deploy") => {
            crate::db::primary::require("migrate deploy");
            run_deploy(args, globals)
        }
        Some("resolve") => {
            crate::db::primary::require("migrate resolve");
            run_resolve(args, globals)
        }
        Some("new") => run_new(args, globals),
        Some("plan") => plan::run_plan(args, globals),
        Some("lint") => plan::run_lint(args, globals),
        Some("drift") => drift::run(args, globals),
        Some(other) => Err(usage(format!(
            "unknown subcommand `migrate {other}`: use status, deploy, resolve, new, plan, lint or drift (see `cargo xtask migrate --help`)"
        ))),
        None => Err(usage(
            "`cargo xtask migrate` needs a subcommand: status, deploy, resolve, new, plan, lint or drift (see `cargo xtask migrate --help`)",
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
    let mut options = DeployOptions {
        check_rows: !args.contains("--skip-row-check"),
        ..DeployOptions::default()
    };
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
    let name = path
        .parent()
        .and_then(|dir| dir.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = if globals.migrations_dir == crate::migrations::default_dir() {
        String::new()
    } else {
        format!(" --migrations-dir {}", globals.migrations_dir.display())
    };
    println!(
        "Write the SQL, then see what it would do to the app's tables (on a shadow database, never yours):\n  cargo xtask migrate lint{dir} {name}\n  cargo xtask migrate plan{dir} {name}"
    );
    Ok(Outcome::Ready)
}

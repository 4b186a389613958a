//! `cargo xtask`: runs every step of the Data Hub workspace tenancy release and its recovery
//! plan. Each subcommand is one module; this file only dispatches and turns errors into exit
//! codes (SPEC §5: 0 done, 1 not in the required state, 2 usage or environment error).

pub mod app_build;
pub mod backfill;
pub mod bench;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod demo;
pub mod error;
pub mod migrate;
pub mod migrations;
pub mod password;
pub mod report;
pub mod runbook;
pub mod seed;
pub mod smoke;
pub mod tables;
pub mod verify;

use std::ffi::OsString;

use anyhow::Result;
use pico_args::Arguments;

use crate::cli::Globals;
use crate::error::{usage, Outcome};

pub const HELP: &str = "\
cargo xtask: the Data Hub workspace tenancy release, one safe command at a time

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    migrate status|deploy|resolve|new   Prisma-compatible migrations
    backfill                            fills NULL workspaceId values by the home-workspace rule
    check                               are all workspaceId values backfilled? (exit 0 / 1)
    verify                              the recovery plan's verification queries
    smoke [--url URL]                   the 5-minute smoke test against the app, automated
    release [--json]                    the Normal Deployment: deploy expand, backfill, check,
                                        deploy, build, smoke; skips what is already done
    recover [--dry-run]                 the recovery plan after a failed migration (scenario A/B)
    rollback [--yes]                    the Emergency Rollback: workspaceId nullable again
    status [--json]                     the Quick Status Check: migrate status, check, build
    seed [--users N]                    pre-tenancy demo data and the demo login
    demo [--users N] [--keep]           the incident and its recovery on a throwaway PostgreSQL
    bench [--quick]                     the performance targets, each against its baseline

OPTIONS (every command):
    --database-url URL     the database (default: DATABASE_URL); Prisma URLs work as they are
    --migrations-dir DIR   the migrations folder (default: the repository's migrations/)
    -h, --help             help for the command

Exit codes: 0 done, 1 the database is not in the required state, 2 usage or environment error.
";

const BACKFILL_HELP: &str = "\
cargo xtask backfill [--batch-size N] [--workers N] [--time-limit SECONDS] [--dry-run] [--json]:
sets workspaceId to the user's home workspace on every Data Hub row where it is NULL: the
earliest OWNER membership, else the earliest membership, else a personal workspace created for
the user. Batches are physical page ranges of about N rows (default 10000), each its own
transaction and shrunk when one takes over 0.5 s: safe to interrupt and run again.
--workers N     N connections on disjoint page ranges (default 2)
--time-limit S  start no new batch after S seconds; the next run continues
--dry-run       only counts
Needs the expand migration; ends with ANALYZE so `cargo xtask check` is fast.
";

const CHECK_HELP: &str = "\
cargo xtask check [--json]: counts NULL workspaceId values in the four Data Hub tables.
Exit 0 when there are none, 1 when some remain (run `cargo xtask backfill`) or the columns do
not exist yet (run the expand migration).
";

const VERIFY_HELP: &str = "\
cargo xtask verify [--json]: the recovery plan's three verification queries (workspaceId
columns, foreign keys to Workspace(id), indexes on workspaceId) with a verdict each.
Exit 0 when all three verdicts are ok.
";

/// Runs `cargo xtask` with these arguments and returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    match dispatch(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("error: {error:#}");
            error::exit_code(&error)
        }
    }
}

fn dispatch(args: Vec<OsString>) -> Result<Outcome> {
    let mut args = Arguments::from_vec(args);
    let globals = Globals::take(&mut args)?;
    let command = args.subcommand().map_err(cli::parse_error)?;
    match command.as_deref() {
        None | Some("help") => {
            print!("{HELP}");
            let asked = cli::wants_help(&mut args) || command.is_some();
            if asked {
                Ok(Outcome::Ready)
            } else {
                Err(usage("no command given; see the list above"))
            }
        }
        Some("migrate") => migrate::run(args, &globals),
        Some("backfill") => run_backfill(args, &globals),
        Some("check") => run_check(args, &globals),
        Some("verify") => run_verify(args, &globals),
        Some("smoke") => run_smoke(args, &globals),
        Some("seed") => run_seed(args, &globals),
        Some("release") => runbook::commands::run_release(args, &globals),
        Some("recover") => runbook::commands::run_recover(args, &globals),
        Some("rollback") => runbook::commands::run_rollback(args, &globals),
        Some("status") => runbook::commands::run_status(args, &globals),
        Some("demo") => demo::run(args, &globals),
        Some("bench") => bench::run(args, &globals),
        Some(other) => Err(usage(format!(
            "unknown command `{other}`; see `cargo xtask --help`"
        ))),
    }
}

fn run_backfill(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{BACKFILL_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let dry_run = args.contains("--dry-run");
    let batch_size = cli::positive(&mut args, "--batch-size")?;
    let workers = cli::positive(&mut args, "--workers")?;
    let time_limit = cli::positive(&mut args, "--time-limit")?;
    cli::finish(args, "backfill")?;
    let url = globals.url()?;
    let mut options = backfill::BackfillOptions {
        dry_run,
        url: Some(url.clone()),
        time_limit: time_limit.map(std::time::Duration::from_secs),
        ..backfill::BackfillOptions::default()
    };
    if let Some(n) = batch_size {
        options.batch_size = n;
    }
    if let Some(n) = workers {
        if n > 16 {
            return Err(usage(
                "`--workers` is at most 16 (each worker is a connection)",
            ));
        }
        options.workers = n as usize;
    }
    let mut client = url.connect()?;
    let report = backfill::backfill(&mut client, &options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::Ready)
}

fn run_check(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{CHECK_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    cli::finish(args, "check")?;
    let mut client = globals.url()?.connect()?;
    let report = check::check(&mut client)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::from_ready(report.is_backfilled()))
}

fn run_verify(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{VERIFY_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    cli::finish(args, "verify")?;
    let mut client = globals.url()?.connect()?;
    let report = verify::verify(&mut client)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::from_ready(report.is_ok()))
}

const SMOKE_HELP: &str = "\
cargo xtask smoke [--url URL] [--app-bin PATH] [--json]: the release checklist's smoke test.
Builds and starts the app on a free port against the database (or tests the app at --url,
which must use the same database), signs in as a smoke user in a smoke workspace of its own,
and checks /data, /data/google-ads, the chat, connect/disconnect and the app's log. Everything
it creates is removed afterwards. Exit 0 only when every check passes.
";

const SEED_HELP: &str = "\
cargo xtask seed [--users N] [--days N]: fills the database with users, teams, connections,
daily metrics, insights and chat messages (default 200 users, 60 days), and the demo login
`demo@datahub.test` / `datahub-demo`. Needs at least the init migration.
";

fn run_smoke(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{SMOKE_HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let url: Option<String> = args.opt_value_from_str("--url").map_err(cli::parse_error)?;
    let app_bin: Option<std::path::PathBuf> = args
        .opt_value_from_str("--app-bin")
        .map_err(cli::parse_error)?;
    cli::finish(args, "smoke")?;
    let database = globals.url()?;
    let mut client = database.connect()?;
    let report = smoke::smoke(
        &mut client,
        &database,
        &smoke::SmokeOptions { url, app_bin },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    Ok(Outcome::from_ready(report.passed()))
}

fn run_seed(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{SEED_HELP}");
        return Ok(Outcome::Ready);
    }
    let users = cli::positive(&mut args, "--users")?.unwrap_or(200);
    let days = cli::positive(&mut args, "--days")?.unwrap_or(60);
    cli::finish(args, "seed")?;
    let mut client = globals.url()?.connect()?;
    let size = seed::SeedSize {
        users: i32::try_from(users).map_err(|_| usage("`--users` is too large"))?,
        days: i32::try_from(days).map_err(|_| usage("`--days` is too large"))?,
        providers_per_user: 3,
    };
    seed::seed_pre_tenancy(&mut client, size)?;
    seed::seed_demo_login(&mut client)?;
    println!(
        "Seeded {} users and {} daily metric rows. Demo login: {} / {}",
        size.users,
        size.metric_rows(),
        seed::DEMO_EMAIL,
        seed::DEMO_PASSWORD
    );
    Ok(Outcome::Ready)
}

//! `cargo xtask`: runs every step of the Data Hub workspace tenancy release and its recovery
//! plan. Each command is one module owning its `HELP` and `run`; this file is the module list,
//! the command table the top-level help is built from, and the dispatch.

mod app_build;
pub mod backfill;
mod bench;
pub mod check;
mod cli;
pub mod cluster;
pub mod db;
mod demo;
mod error;
mod interrupt;
pub mod migrate;
pub mod migrations;
pub mod process;
mod project;
pub mod releases;
pub mod report;
pub mod runbook;
pub mod seed;
pub mod smoke;
pub mod tenancy;
mod test;
pub mod verify;

use std::ffi::OsString;

use anyhow::Result;
use pico_args::Arguments;

use crate::cli::Globals;
use crate::error::{usage, Outcome};

pub use crate::app_build::{AppBuild, APP_BIN_ENV};

/// A command: its name, its line in the top-level help, and its entry point.
struct Command {
    name: &'static str,
    summary: &'static str,
    help: &'static str,
    run: fn(Arguments, &Globals) -> Result<Outcome>,
}

/// `command!("name", module)`: the command whose module owns `SUMMARY`, `HELP` and `run`.
macro_rules! command {
    ($name:literal, $($module:ident)::+) => {
        Command {
            name: $name,
            summary: $($module)::+::SUMMARY,
            help: $($module)::+::HELP,
            run: $($module)::+::run,
        }
    };
}

const COMMANDS: &[Command] = &[
    command!("migrate", migrate),
    command!("backfill", backfill),
    command!("check", check),
    command!("verify", verify),
    command!("smoke", smoke),
    command!("release", runbook::release),
    command!("recover", runbook::recover),
    command!("rollback", runbook::rollback),
    command!("status", runbook::status),
    command!("seed", seed),
    command!("demo", demo),
    command!("bench", bench),
    command!("test", test),
];

/// Commands that write to the database they are pointed at, refused on a read-only standby
/// (`migrate` declares its writing subcommands itself).
const WRITING_COMMANDS: &[&str] = &[
    "backfill", "release", "recover", "rollback", "seed", "smoke",
];

/// The top-level help, built from the command table so it cannot drift from the commands.
pub fn help() -> String {
    let mut out = String::from(
        "cargo xtask: the Data Hub workspace tenancy release, one safe command at a time\n\nUSAGE:\n    cargo xtask <COMMAND> [OPTIONS]\n    cargo xtask <COMMAND> --help     that command's options\n\nCOMMANDS:\n",
    );
    for command in COMMANDS {
        out.push_str(&format!("    {:<10} {}\n", command.name, command.summary));
    }
    out.push_str(
        "\nOPTIONS (every command):\n    --database-url URL     the database (default: DATABASE_URL); Prisma URLs work as they are\n    --migrations-dir DIR   the migrations folder (default: the repository's migrations/)\n    -h, --help             help for the command\n\nExit codes: 0 done, 1 the database is not in the required state, 2 usage or environment error.\n",
    );
    out
}

/// Runs `cargo xtask` with these arguments and returns the process exit code. Meant for the
/// binary's `main`: it takes over SIGINT and SIGTERM for the whole process (see `interrupt`).
pub fn run(args: Vec<OsString>) -> i32 {
    if args.first().and_then(|a| a.to_str()) == Some(cluster::WATCHDOG_COMMAND) {
        return cluster::watchdog(&args[1..]);
    }
    interrupt::install();
    match dispatch(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            let described = error::describe(&error);
            eprint!("{described}");
            if let Some(fault) = db::cause::server_fault_in(&error) {
                if !described.contains(&fault) {
                    eprintln!("  what happened on the server: {fault}");
                }
            }
            error::exit_code(&error)
        }
    }
}

fn dispatch(args: Vec<OsString>) -> Result<Outcome> {
    let mut args = Arguments::from_vec(args);
    let globals = Globals::take(&mut args)?;
    let name = args.subcommand().map_err(cli::parse_error)?;
    match name.as_deref() {
        None if cli::wants_help(&mut args) => {
            print!("{}", help());
            Ok(Outcome::Ready)
        }
        None => {
            print!("{}", help());
            Err(usage("no command given; see the list above"))
        }
        Some("help") => {
            let topic: Option<String> = args.opt_free_from_str().map_err(cli::parse_error)?;
            match topic.as_deref().map(find) {
                None => print!("{}", help()),
                Some(Some(command)) => print!("{}", command.help),
                Some(None) => return Err(unknown(topic.as_deref().unwrap_or_default())),
            }
            Ok(Outcome::Ready)
        }
        Some(name) => match find(name) {
            Some(command) => {
                db::deadline::begin(command.name)?;
                if WRITING_COMMANDS.contains(&command.name) {
                    db::primary::require(command.name);
                }
                (command.run)(args, &globals)
            }
            None => Err(unknown(name)),
        },
    }
}

fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn unknown(name: &str) -> anyhow::Error {
    usage(format!(
        "unknown command `{name}`; see `cargo xtask --help`"
    ))
}

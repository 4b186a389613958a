//! Argument handling shared by the commands: global options, help, and rejecting leftovers.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use pico_args::Arguments;

use crate::db::DatabaseUrl;
use crate::error::usage;
use crate::migrations::{self, Migration};

/// Options every command accepts, wherever they appear on the command line.
#[derive(Debug, Clone)]
pub struct Globals {
    pub database_url: Option<String>,
    pub migrations_dir: PathBuf,
}

impl Globals {
    pub fn take(args: &mut Arguments) -> Result<Globals> {
        let database_url = args
            .opt_value_from_str::<_, String>("--database-url")
            .map_err(parse_error)?;
        let migrations_dir = args
            .opt_value_from_str::<_, PathBuf>("--migrations-dir")
            .map_err(parse_error)?
            .unwrap_or_else(migrations::default_dir);
        Ok(Globals {
            database_url,
            migrations_dir,
        })
    }

    pub fn url(&self) -> Result<DatabaseUrl> {
        DatabaseUrl::from_flag_or_env(self.database_url.clone())
    }

    pub fn migrations(&self) -> Result<Vec<Migration>> {
        migrations::read_dir(&self.migrations_dir)
    }
}

/// Whether `--help` or `-h` was given (checked before anything else is parsed).
pub fn wants_help(args: &mut Arguments) -> bool {
    args.contains(["-h", "--help"])
}

/// Fails on anything not consumed, naming it, with the command's help hint.
pub fn finish(args: Arguments, command: &str) -> Result<()> {
    let rest: Vec<OsString> = args.finish();
    if let Some(first) = rest.first() {
        return Err(usage(format!(
            "unexpected argument `{}` for `cargo xtask {command}`; see `cargo xtask {command} --help`",
            first.to_string_lossy()
        )));
    }
    Ok(())
}

pub fn parse_error(error: pico_args::Error) -> anyhow::Error {
    usage(format!("{error}; see `cargo xtask --help`"))
}

/// A positive integer option, e.g. `--batch-size 10000`.
pub fn positive(args: &mut Arguments, flag: &'static str) -> Result<Option<u64>> {
    let raw: Option<String> = args.opt_value_from_str(flag).map_err(parse_error)?;
    match raw {
        None => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(usage(format!(
                "`{flag} {text}` is not valid: it takes a whole number above 0"
            ))),
        },
    }
}

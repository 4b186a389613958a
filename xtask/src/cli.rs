//! The command-line convention every command follows: `--help` first, then options, then
//! positionals, then anything left over is named and refused (exit 2). Numbers are checked
//! against a range here, so no flag can overflow into a panic or an SQL "out of range".

use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use anyhow::Result;
use pico_args::Arguments;

use crate::db::{self, DatabaseUrl};
use crate::error::usage;
use crate::migrations::{self, Migration};

/// Options every command accepts, wherever they appear on the command line.
#[derive(Debug, Clone)]
pub(crate) struct Globals {
    pub database_url: Option<String>,
    pub migrations_dir: PathBuf,
}

impl Globals {
    pub(crate) fn take(args: &mut Arguments) -> Result<Globals> {
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

    /// `--database-url`, else `DATABASE_URL`.
    pub(crate) fn url(&self) -> Result<DatabaseUrl> {
        db::url_from_flag_or_env(self.database_url.as_deref())
    }

    pub(crate) fn migrations(&self) -> Result<Vec<Migration>> {
        migrations::read_dir(&self.migrations_dir)
    }
}

/// Whether `--help` or `-h` was given (checked before anything else is parsed).
pub(crate) fn wants_help(args: &mut Arguments) -> bool {
    args.contains(["-h", "--help"])
}

/// Fails on anything not consumed, naming it, with the command's help hint.
pub(crate) fn finish(args: Arguments, command: &str) -> Result<()> {
    let rest: Vec<OsString> = args.finish();
    if let Some(first) = rest.first() {
        return Err(usage(format!(
            "unexpected argument `{}` for `cargo xtask {command}`; see `cargo xtask {command} --help`",
            first.to_string_lossy()
        )));
    }
    Ok(())
}

pub(crate) fn parse_error(error: pico_args::Error) -> anyhow::Error {
    match error {
        pico_args::Error::OptionWithoutAValue(flag) => {
            usage(format!("`{flag}` needs a value; see `cargo xtask --help`"))
        }
        other => usage(format!("{other}; see `cargo xtask --help`")),
    }
}

/// A whole-number option within `range`, e.g. `--batch-size 10000`.
pub(crate) fn number(
    args: &mut Arguments,
    flag: &'static str,
    range: RangeInclusive<u64>,
) -> Result<Option<u64>> {
    let raw: Option<String> = args.opt_value_from_str(flag).map_err(parse_error)?;
    let Some(text) = raw else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(usage(format!(
            "`{flag} {text}` is not valid: it takes a whole number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// A comma-separated list of whole numbers, each within `range`, e.g. `--workers 1,2,4`.
pub(crate) fn number_list(
    args: &mut Arguments,
    flag: &'static str,
    range: RangeInclusive<u64>,
) -> Result<Option<Vec<u64>>> {
    let raw: Option<String> = args.opt_value_from_str(flag).map_err(parse_error)?;
    let Some(text) = raw else {
        return Ok(None);
    };
    let numbers: Option<Vec<u64>> = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
        })
        .collect();
    match numbers {
        Some(numbers) if !numbers.is_empty() => Ok(Some(numbers)),
        _ => Err(usage(format!(
            "`{flag} {text}` is not valid: it takes whole numbers from {} to {}, separated by commas",
            range.start(),
            range.end()
        ))),
    }
}

/// A string option that must not be empty.
pub(crate) fn text(args: &mut Arguments, flag: &'static str) -> Result<Option<String>> {
    let raw: Option<String> = args.opt_value_from_str(flag).map_err(parse_error)?;
    match raw {
        Some(text) if text.trim().is_empty() => Err(usage(format!(
            "`{flag}` needs a value; see `cargo xtask --help`"
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Arguments {
        Arguments::from_vec(list.iter().map(OsString::from).collect())
    }

    #[test]
    fn numbers_outside_their_range_are_usage_errors() {
        for value in [
            "0",
            "17",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "ten",
            "",
        ] {
            let mut args = args(&["--workers", value]);
            let error = number(&mut args, "--workers", 1..=16).unwrap_err();
            assert_eq!(crate::error::exit_code(&error), 2, "{value}");
            assert!(error.to_string().contains("from 1 to 16"), "{error}");
        }
        let mut args = args(&["--workers", "16"]);
        assert_eq!(number(&mut args, "--workers", 1..=16).unwrap(), Some(16));
    }

    #[test]
    fn number_lists_check_every_number() {
        for value in ["0,2", "1,17", "1,,2", "1;2", "", "1,two"] {
            let mut args = args(&["--workers", value]);
            let error = number_list(&mut args, "--workers", 1..=16).unwrap_err();
            assert_eq!(crate::error::exit_code(&error), 2, "{value}");
            assert!(error.to_string().contains("from 1 to 16"), "{error}");
        }
        let mut args = args(&["--workers", "2, 1,4"]);
        assert_eq!(
            number_list(&mut args, "--workers", 1..=16).unwrap(),
            Some(vec![2, 1, 4])
        );
    }
}

//! `cargo xtask release new NAME --table T --column C [--type TYPE]`: the files of a new release
//! of the expand → backfill → contract shape, as `migrate new` makes one migration: the expand
//! (a nullable column and its `CHECK … IS NOT NULL` NOT VALID), the contract (a guard, VALIDATE,
//! SET NOT NULL, the check dropped) and the declaration beside the expand, whose backfill rule
//! is left for the author to write. Every statement bounds its lock waits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pico_args::Arguments;

use crate::cli::{self, Globals};
use crate::db::quote_ident;
use crate::error::{usage, Outcome};
use crate::migrate::new::{new_migration, prisma_slug};
use crate::migrations::DECLARATION_FILE;

pub(crate) const HELP: &str = "\
cargo xtask release new NAME --table TABLE --column COLUMN [--type TYPE]
Creates a release of the expand -> backfill -> contract shape:
  migrations/<timestamp>_<name>/migration.sql            the expand: COLUMN (TYPE, default
                                                         TEXT) nullable, and its NOT NULL as
                                                         a CHECK ... NOT VALID
  migrations/<timestamp>_<name>/release.toml             the declaration: write the backfill
                                                         rule (the value of each row `t`)
  migrations/<timestamp+1>_<name>_not_null/migration.sql the contract: guard, VALIDATE,
                                                         SET NOT NULL
Then: write the rule, `cargo xtask migrate lint`, and `cargo xtask release`.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let table: String = required(&mut args, "--table")?;
    let column: String = required(&mut args, "--column")?;
    let column_type: String = args
        .opt_value_from_str("--type")
        .map_err(cli::parse_error)?
        .unwrap_or_else(|| "TEXT".to_string());
    let name: String = args
        .free_from_str()
        .map_err(|_| usage("`cargo xtask release new` needs the release's name, e.g. `cargo xtask release new metric-connection --table MetricDaily --column connectionId`"))?;
    cli::finish(args, "release new")?;
    let written = scaffold(
        &globals.migrations_dir,
        &name,
        &table,
        &column,
        &column_type,
    )?;
    for path in written {
        println!("created {}", path.display());
    }
    println!("Next: write the backfill rule in release.toml, then `cargo xtask migrate lint` and `cargo xtask release`.");
    Ok(Outcome::Ready)
}

fn required(args: &mut Arguments, flag: &'static str) -> Result<String> {
    args.opt_value_from_str(flag)
        .map_err(cli::parse_error)?
        .ok_or_else(|| {
            usage(format!(
                "`cargo xtask release new` needs `{flag}`; see `cargo xtask release new --help`"
            ))
        })
}

/// Writes the three files; returns their paths.
pub(crate) fn scaffold(
    dir: &Path,
    name: &str,
    table: &str,
    column: &str,
    column_type: &str,
) -> Result<Vec<PathBuf>> {
    let slug = prisma_slug(name).map_err(usage)?;
    let release_name = slug.replace('_', "-");
    if column_type
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || " (),_".contains(c)))
    {
        return Err(usage(format!(
            "`--type {column_type}` is not a plain column type (letters, digits, spaces, `(`, `)`, `,`); write e.g. `--type TEXT` or `--type \"NUMERIC(12,2)\"`"
        )));
    }
    let (t, c) = (quote_ident(table), quote_ident(column));
    let check = quote_ident(&format!("{table}_{column}_not_null"));
    let expand = new_migration(dir, &slug)?;
    std::fs::write(
        &expand,
        format!(
            "-- Expand of the `{release_name}` release: {t}.{c} is added nullable. No existing row is changed here;\n\
             -- `cargo xtask backfill --release {release_name}` fills it by the rule in release.toml.\n\n\
             SET LOCAL lock_timeout = '500ms';\n\n\
             -- AlterTable\n\
             ALTER TABLE {t} ADD COLUMN {c} {column_type};\n\n\
             -- The contract's NOT NULL, announced: enforced on new and changed rows, existing ones unscanned.\n\
             -- Rows the previous app writes need a value too: fill them with a trigger, or a default.\n\
             ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID;\n"
        ),
    )
    .with_context(|| format!("cannot write `{}`", expand.display()))?;
    let contract = new_migration(dir, &format!("{slug}_not_null"))?;
    let contract_name = contract
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    std::fs::write(
        &contract,
        format!(
            "-- Contract of the `{release_name}` release: {t}.{c} becomes NOT NULL. No data is changed.\n\n\
             SET LOCAL lock_timeout = '500ms';\n\n\
             DO $$\n\
             DECLARE\n    nulls BIGINT;\n\
             BEGIN\n    SELECT COUNT(*) INTO nulls FROM {t} WHERE {c} IS NULL;\n    \
             IF nulls > 0 THEN\n        RAISE EXCEPTION 'Cannot enforce NOT NULL: NULL values found ({table}.{column}: %). Run the backfill first.', nulls;\n    END IF;\n\
             END $$;\n\n\
             -- VALIDATE scans under SHARE UPDATE EXCLUSIVE, which blocks neither reads nor writes.\n\
             SET LOCAL lock_timeout = '10s';\n\
             ALTER TABLE {t} VALIDATE CONSTRAINT {check};\n\n\
             -- Catalog only: the validated check proves there is no NULL.\n\
             SET LOCAL lock_timeout = '500ms';\n\
             ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL;\n\
             ALTER TABLE {t} DROP CONSTRAINT {check};\n"
        ),
    )
    .with_context(|| format!("cannot write `{}`", contract.display()))?;
    let declaration = expand
        .parent()
        .map(|p| p.join(DECLARATION_FILE))
        .context("the expand migration has no folder")?;
    std::fs::write(
        &declaration,
        format!(
            "# The `{release_name}` release: {table}.{column}, filled by the rule below, then NOT NULL.\n\
             # The columns filled are the ones the contract sets NOT NULL.\n\
             name = \"{release_name}\"\n\
             contract = \"{contract_name}\"\n\n\
             [backfill]\n\
             # The value of each row `t` of {table}; `from` and `where` join other tables, e.g.\n\
             # value = 'c.\"id\"'\n\
             # from = '\"Connection\" c'\n\
             # where = 'c.\"userId\" = t.\"userId\"'\n\
             value = 'NULL'\n"
        ),
    )
    .with_context(|| format!("cannot write `{}`", declaration.display()))?;
    Ok(vec![expand, declaration, contract])
}

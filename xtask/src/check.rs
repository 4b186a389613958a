//! `cargo xtask check`: are all Data Hub `workspaceId` values backfilled? The gate before the
//! contract migration. Counts NULLs per table in one round trip, or reports that the columns do
//! not exist (expand not applied).

use anyhow::{Context, Result};
use pico_args::Arguments;
use postgres::error::SqlState;
use postgres::Client;
use serde_json::json;

use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::Outcome;
use crate::report::{self, thousands, Report, Style, Table};
use crate::tenancy::{self, Column, DATAHUB_TABLES, EXPAND};

pub(crate) const SUMMARY: &str = "are all workspaceId values backfilled? (exit 0 / 1)";

pub(crate) const HELP: &str = "\
cargo xtask check [--json]
Counts NULL workspaceId values in the four Data Hub tables. Exit 0 when there are none, 1 when
some remain (run `cargo xtask backfill`) or the columns do not exist yet (run the expand
migration).
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    cli::finish(args, "check")?;
    let mut client = globals.url()?.connect()?;
    report::emit(&check(&mut client)?, json)
}

pub const ALL_BACKFILLED: &str = "✅ All Data Hub workspaceId values are backfilled (no NULLs).";

#[derive(Debug, Clone)]
pub enum CheckReport {
    /// The expand migration is not (fully) applied: these tables lack the column.
    MissingColumns { missing: Vec<String> },
    /// NULL counts per table (all zero means backfilled).
    Counts { nulls: Vec<(String, i64)> },
}

pub fn check(client: &mut Client) -> Result<CheckReport> {
    match client.query_one(&tenancy::null_counts_sql(), &[]) {
        Ok(row) => {
            let nulls = DATAHUB_TABLES
                .iter()
                .enumerate()
                .map(|(i, table)| (table.to_string(), row.get::<_, i64>(i)))
                .collect();
            return Ok(CheckReport::Counts { nulls });
        }
        Err(error)
            if error.code() == Some(&SqlState::UNDEFINED_COLUMN)
                || error.code() == Some(&SqlState::UNDEFINED_TABLE) => {}
        Err(error) => {
            return Err(error).context("cannot count NULL `workspaceId` values");
        }
    }
    let missing: Vec<String> = tenancy::columns(client)?
        .into_iter()
        .filter(|(_, column)| *column == Column::Missing)
        .map(|(table, _)| table)
        .collect();
    Ok(CheckReport::MissingColumns { missing })
}

impl CheckReport {
    pub fn is_backfilled(&self) -> bool {
        match self {
            CheckReport::MissingColumns { .. } => false,
            CheckReport::Counts { nulls } => nulls.iter().all(|(_, n)| *n == 0),
        }
    }

    pub(crate) fn total_nulls(&self) -> i64 {
        match self {
            CheckReport::MissingColumns { .. } => 0,
            CheckReport::Counts { nulls } => nulls.iter().map(|(_, n)| n).sum(),
        }
    }

    /// One line: the runbook's success line, or the NULL counts, or the missing columns.
    pub(crate) fn summary(&self) -> String {
        match self {
            CheckReport::MissingColumns { missing } => format!(
                "no `workspaceId` column on {}: the expand migration is not applied",
                missing.join(", ")
            ),
            CheckReport::Counts { .. } if self.is_backfilled() => ALL_BACKFILLED.to_string(),
            CheckReport::Counts { nulls } => format!(
                "{} NULL `workspaceId` values ({})",
                thousands(self.total_nulls()),
                nulls
                    .iter()
                    .map(|(t, n)| format!("{t}: {}", thousands(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Report for CheckReport {
    fn render_with(&self, _style: Style) -> String {
        match self {
            CheckReport::MissingColumns { missing } => format!(
                "❌ no `workspaceId` column on {}: the expand migration `{EXPAND}` is not applied; run `cargo xtask migrate deploy --to {EXPAND}`\n",
                missing.join(", ")
            ),
            CheckReport::Counts { .. } if self.is_backfilled() => format!("{ALL_BACKFILLED}\n"),
            CheckReport::Counts { nulls } => {
                let mut table = Table::new(&["table_name", "null_workspace_ids"]);
                for (name, count) in nulls {
                    table.push(vec![name.clone(), thousands(*count)]);
                }
                format!(
                    "{}\n❌ {} Data Hub rows have no `workspaceId` yet; run `cargo xtask backfill`\n",
                    table.render(),
                    thousands(self.total_nulls())
                )
            }
        }
    }

    fn to_json(&self) -> serde_json::Value {
        // One shape for both: no columns to count is `nulls: null`, `columns_missing` listed.
        let fields = match self {
            CheckReport::MissingColumns { missing } => json!({
                "backfilled": false,
                "columns_missing": missing,
                "nulls": null,
                "total_nulls": null,
                "next": format!("cargo xtask migrate deploy --to {EXPAND}"),
            }),
            CheckReport::Counts { nulls } => json!({
                "backfilled": self.is_backfilled(),
                "columns_missing": [],
                "nulls": nulls.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "total_nulls": self.total_nulls(),
                "next": if self.is_backfilled() { serde_json::Value::Null } else { json!("cargo xtask backfill") },
            }),
        };
        crate::report::document("check", fields)
    }

    fn ok(&self) -> bool {
        self.is_backfilled()
    }
}

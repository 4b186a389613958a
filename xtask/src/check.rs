//! `cargo xtask check`: is every column a declared release fills backfilled? The gate before
//! each contract. For each release (or `--release NAME`): the columns its contract sets NOT
//! NULL, missing (expand not applied) or with their NULL counts, counted in one round trip per
//! release; NOT NULL columns are read from the catalog, not counted.

use crate::db::Client;
use anyhow::Result;
use pico_args::Arguments;
use serde_json::json;

use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::Outcome;
use crate::migrations::Migration;
use crate::releases::{self, Column, Release};
use crate::report::{self, thousands, Report, Style, Table};

pub(crate) const SUMMARY: &str = "are all the columns releases fill backfilled? (exit 0 / 1)";

pub(crate) const HELP: &str = "\
cargo xtask check [--release NAME] [--json]
For every declared release (migrations/<expand>/release.toml), or only --release NAME, counts
the NULLs left in the columns its contract sets NOT NULL. Exit 0 when there are none, 1 when
some remain (run `cargo xtask backfill`) or a release's columns do not exist yet (run its expand
migration).
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let release: Option<String> = args
        .opt_value_from_str("--release")
        .map_err(cli::parse_error)?;
    cli::finish(args, "check")?;
    let migrations = globals.migrations()?;
    let declared = releases::load(&migrations)?;
    let chosen: Vec<&Release> = match &release {
        Some(name) => vec![releases::find(&declared, name)?],
        None => declared.iter().filter(|r| !r.fills.is_empty()).collect(),
    };
    let url = globals.url()?;
    let mut client = url.connect()?;
    let report = check_releases(&mut client, &chosen)?;
    crate::db::primary::note_check_on_standby(&mut client, &url, report.is_backfilled())?;
    report::emit(&report, json)
}

/// What `check` found for one release.
#[derive(Debug, Clone)]
pub struct ReleaseCheck {
    pub release: String,
    pub expand: String,
    /// The line to print when nothing is left to fill.
    pub backfilled: String,
    /// Columns that do not exist: the expand is not applied.
    pub missing: Vec<(String, String)>,
    /// NULL counts per (table, column), NOT NULL columns as 0.
    pub nulls: Vec<(String, String, i64)>,
}

impl ReleaseCheck {
    pub fn is_backfilled(&self) -> bool {
        self.missing.is_empty() && self.nulls.iter().all(|(_, _, n)| *n == 0)
    }

    pub fn total_nulls(&self) -> i64 {
        self.nulls.iter().map(|(_, _, n)| n).sum()
    }
}

#[derive(Debug, Clone)]
pub struct CheckReport {
    pub releases: Vec<ReleaseCheck>,
}

/// Checks every declared release that fills columns.
pub fn check(client: &mut Client, migrations: &[Migration]) -> Result<CheckReport> {
    let declared = releases::load(migrations)?;
    let chosen: Vec<&Release> = declared.iter().filter(|r| !r.fills.is_empty()).collect();
    check_releases(client, &chosen)
}

/// Checks these releases.
pub fn check_releases(client: &mut Client, chosen: &[&Release]) -> Result<CheckReport> {
    let mut releases = Vec::new();
    for release in chosen {
        releases.push(check_release(client, release)?);
    }
    Ok(CheckReport { releases })
}

/// Checks one release: its columns' states, then the NULLs of the nullable ones.
pub fn check_release(client: &mut Client, release: &Release) -> Result<ReleaseCheck> {
    let state = release.columns(client)?;
    let missing = state
        .of(Column::Missing)
        .into_iter()
        .map(|f| (f.table.clone(), f.column.clone()))
        .collect();
    let nulls = release
        .null_counts(client, &state)?
        .into_iter()
        .map(|(f, n)| (f.table, f.column, n))
        .collect();
    Ok(ReleaseCheck {
        release: release.name.clone(),
        expand: release.expand.clone(),
        backfilled: release.backfilled.clone(),
        missing,
        nulls,
    })
}

impl CheckReport {
    pub fn is_backfilled(&self) -> bool {
        self.releases.iter().all(ReleaseCheck::is_backfilled)
    }

    pub fn total_nulls(&self) -> i64 {
        self.releases.iter().map(ReleaseCheck::total_nulls).sum()
    }

    /// One line: each release's success line, or its NULL counts, or its missing columns.
    pub(crate) fn summary(&self) -> String {
        self.releases
            .iter()
            .map(|r| {
                if !r.missing.is_empty() {
                    format!(
                        "no {} column: the expand migration `{}` is not applied",
                        columns(&r.missing),
                        r.expand
                    )
                } else if r.is_backfilled() {
                    r.backfilled.clone()
                } else {
                    format!(
                        "{} NULL values left by the `{}` release ({})",
                        thousands(r.total_nulls()),
                        r.release,
                        r.nulls
                            .iter()
                            .filter(|(_, _, n)| *n > 0)
                            .map(|(t, c, n)| format!("{t}.{c}: {}", thousands(*n)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `` `Connection`.`workspaceId`, `MetricDaily`.`workspaceId` ``
fn columns(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(t, c)| format!("`{t}`.`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report for CheckReport {
    fn render_with(&self, _style: Style) -> String {
        if self.releases.is_empty() {
            return "✅ No declared release fills a column: nothing to check.\n".into();
        }
        let mut out = String::new();
        for r in &self.releases {
            if !r.missing.is_empty() {
                out.push_str(&format!(
                    "❌ no {} column: the expand migration `{}` of the `{}` release is not applied; run `cargo xtask migrate deploy --to {}` (or `cargo xtask release`)\n",
                    columns(&r.missing),
                    r.expand,
                    r.release,
                    r.expand
                ));
            } else if r.is_backfilled() {
                out.push_str(&format!("{}\n", r.backfilled));
            } else {
                let mut table = Table::new(&["table_name", "column", "nulls"]);
                for (name, column, count) in &r.nulls {
                    table.push(vec![name.clone(), column.clone(), thousands(*count)]);
                }
                out.push_str(&format!(
                    "{}\n❌ {} rows of the `{}` release have no value yet; run `cargo xtask backfill --release {}`\n",
                    table.render(),
                    thousands(r.total_nulls()),
                    r.release,
                    r.release
                ));
            }
        }
        out
    }

    fn to_json(&self) -> serde_json::Value {
        let fields = json!({
            "backfilled": self.is_backfilled(),
            "total_nulls": self.total_nulls(),
            "releases": self.releases.iter().map(|r| json!({
                "release": r.release,
                "backfilled": r.is_backfilled(),
                "columns_missing": r.missing.iter().map(|(t, c)| format!("{t}.{c}")).collect::<Vec<_>>(),
                "nulls": r.nulls.iter().map(|(t, c, n)| (format!("{t}.{c}"), json!(n))).collect::<serde_json::Map<_, _>>(),
                "total_nulls": r.total_nulls(),
                "next": if !r.missing.is_empty() {
                    json!(format!("cargo xtask migrate deploy --to {}", r.expand))
                } else if r.is_backfilled() {
                    serde_json::Value::Null
                } else {
                    json!(format!("cargo xtask backfill --release {}", r.release))
                },
            })).collect::<Vec<_>>(),
        });
        crate::report::document("check", fields)
    }

    fn ok(&self) -> bool {
        self.is_backfilled()
    }
}

//! Releases, declared beside their migrations (`migrations/<expand>/release.toml`), and what the
//! engine infers from the migrations themselves. A release is expand → backfill → gate →
//! contract: the expand adds nullable columns (the folder the declaration sits in), the
//! backfill fills them by the declared rule, the gate proves no NULL is left, and the contract
//! (named in the declaration) makes them NOT NULL. The columns a release fills are the ones its
//! contract sets NOT NULL; the NOT VALID checks that announce them are the ones its expand adds.
//! Nothing here knows a particular release: `backfill`, `check`, `release`, `recover`,
//! `rollback` and `status` work for every declared one.

mod columns;
pub(crate) mod declaration;
pub mod rule;
pub(crate) mod scaffold;

use anyhow::Result;

pub use columns::{Column, ColumnState, Phase};
pub use rule::Rule;

use crate::error::{environment, usage};
use crate::migrate::enforces::{self, Enforcement};
use crate::migrations::{Migration, DECLARATION_FILE};

/// One column a release fills and its contract makes NOT NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub table: String,
    pub column: String,
    /// The `CHECK (column IS NOT NULL) NOT VALID` the expand adds for it, if it does: it
    /// refuses new NULLs from the moment the expand commits, so a finished backfill stays a
    /// proof until the contract.
    pub not_null_check: Option<String>,
}

/// A declared release, with what is inferred from its migrations.
#[derive(Debug, Clone)]
pub struct Release {
    pub name: String,
    /// The migration whose folder holds the declaration.
    pub expand: String,
    /// The migration that makes the filled columns NOT NULL.
    pub contract: Option<String>,
    /// The columns the contract sets NOT NULL, in its order.
    pub fills: Vec<Fill>,
    pub rule: Option<Rule>,
    /// `check`'s line when no NULL is left.
    pub backfilled: String,
    /// Migrations that the app deployed before this release cannot survive (a key or a column
    /// it uses is dropped): `release` runs them only once the new app is live.
    pub needs_new_app: Vec<String>,
}

impl Release {
    /// Every migration of the release, from its expand up to its contract (or the last one it
    /// names), in the folder's order.
    pub fn migrations<'a>(&self, migrations: &'a [Migration]) -> Vec<&'a Migration> {
        let position = |name: &str| migrations.iter().position(|m| m.name == name);
        let first = position(&self.expand).unwrap_or(0);
        let last = std::iter::once(self.contract.as_deref())
            .flatten()
            .chain(self.needs_new_app.iter().map(String::as_str))
            .filter_map(position)
            .max()
            .unwrap_or(first);
        migrations[first..=last.max(first)].iter().collect()
    }

    /// `Connection.workspaceId, MetricDaily.workspaceId`
    pub fn describe_fills(&self) -> String {
        self.fills
            .iter()
            .map(|f| format!("{}.{}", f.table, f.column))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every release declared in the migrations folder, in the order of their expand migrations.
pub fn load(migrations: &[Migration]) -> Result<Vec<Release>> {
    let mut releases: Vec<Release> = Vec::new();
    for (position, migration) in migrations.iter().enumerate() {
        let Some(text) = &migration.declaration else {
            continue;
        };
        let file = format!("migrations/{}/{DECLARATION_FILE}", migration.name);
        let declared = declaration::parse(&file, text)?;
        if let Some(other) = releases.iter().find(|r| r.name == declared.name) {
            return Err(environment(format!(
                "`{file}` declares the release `{}`, which `migrations/{}/{DECLARATION_FILE}` declares too; give one of them another name",
                declared.name, other.expand
            )));
        }
        let later = |name: &str, key: &str| -> Result<&Migration> {
            match migrations.iter().position(|m| m.name == name) {
                Some(at) if at >= position => Ok(&migrations[at]),
                Some(_) => Err(environment(format!(
                    "`{file}`: `{key}` names `{name}`, which comes before the release's expand `{}`; a release's migrations follow its expand",
                    migration.name
                ))),
                None => Err(environment(format!(
                    "`{file}`: `{key}` names `{name}`, which is not in the migrations folder"
                ))),
            }
        };
        let mut fills = Vec::new();
        let expand_checks = not_null_checks(&migration.script);
        let contract = match &declared.contract {
            // A contract not written yet (the expand ships first): the columns are the ones
            // the expand announces NOT NULL with its checks.
            Some(name) if !migrations.iter().any(|m| &m.name == name) => {
                for (table, column, check) in &expand_checks {
                    fills.push(Fill {
                        table: table.clone(),
                        column: column.clone(),
                        not_null_check: Some(check.clone()),
                    });
                }
                if fills.is_empty() {
                    later(name, "contract")?;
                }
                None
            }
            Some(name) => Some(later(name, "contract")?),
            None => None,
        };
        if let Some(contract) = contract {
            for enforcement in enforces::enforcements(&contract.script) {
                if let Enforcement::NotNull { table, column } = enforcement {
                    if !fills
                        .iter()
                        .any(|f: &Fill| f.table == table && f.column == column)
                    {
                        let not_null_check = expand_checks
                            .iter()
                            .find(|(t, c, _)| *t == table && *c == column)
                            .map(|(_, _, name)| name.clone());
                        fills.push(Fill {
                            table,
                            column,
                            not_null_check,
                        });
                    }
                }
            }
            if fills.is_empty() {
                return Err(environment(format!(
                    "`{file}`: the contract `{}` sets no column NOT NULL (`ALTER TABLE … ALTER COLUMN … SET NOT NULL`), so the release has nothing to fill; name the migration that does",
                    contract.name
                )));
            }
        }
        for name in &declared.needs_new_app {
            later(name, "needs_new_app")?;
        }
        let rule = match declared.backfill {
            Some(_) if fills.is_empty() => {
                return Err(environment(format!(
                    "`{file}`: `[backfill]` is declared but no `contract` names the migration that sets the filled columns NOT NULL"
                )));
            }
            Some(text) => Some(Rule::new(text)),
            None => None,
        };
        let backfilled = declared.backfilled.unwrap_or_else(|| {
            format!(
                "✅ All `{}` values of the `{}` release are backfilled (no NULLs).",
                fills
                    .iter()
                    .map(|f| format!("{}.{}", f.table, f.column))
                    .collect::<Vec<_>>()
                    .join("`, `"),
                declared.name
            )
        });
        releases.push(Release {
            name: declared.name,
            expand: migration.name.clone(),
            contract: declared.contract,
            fills,
            rule,
            backfilled,
            needs_new_app: declared.needs_new_app,
        });
    }
    Ok(releases)
}

/// The `CHECK (c IS NOT NULL) NOT VALID` constraints a script adds: (table, column, name).
fn not_null_checks(script: &str) -> Vec<(String, String, String)> {
    enforces::not_null_checks_added(script)
}

/// The release called `name`, or a usage error listing the declared ones.
pub fn find<'a>(releases: &'a [Release], name: &str) -> Result<&'a Release> {
    releases.iter().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<String> = releases.iter().map(|r| format!("`{}`", r.name)).collect();
        usage(format!(
            "no release `{name}` is declared in the migrations folder; declared: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// The release whose contract is `name`.
pub fn by_contract<'a>(releases: &'a [Release], name: &str) -> Option<&'a Release> {
    releases
        .iter()
        .find(|r| r.contract.as_deref() == Some(name))
}

/// The release whose expand is `name`.
pub fn by_expand<'a>(releases: &'a [Release], name: &str) -> Option<&'a Release> {
    releases
        .iter()
        .find(|r| r.expand == name && !r.fills.is_empty())
}

/// The release that fills `table`.`column`, if one does.
pub fn filling<'a>(releases: &'a [Release], table: &str, column: &str) -> Option<&'a Release> {
    releases.iter().find(|r| {
        r.fills
            .iter()
            .any(|f| f.table == table && f.column == column)
    })
}

//! `migrate status`: every migration with its state, a summary line, and what to do next.
//! Read-only: it never creates `_prisma_migrations`. A database with tables but no
//! `_prisma_migrations` is "not managed by Prisma Migrate" (deploy refuses it, as Prisma does),
//! and so is one with neither migrations nor the table.

use crate::db::Client;
use anyhow::Result;
use serde_json::json;

use super::baseline::{self, NotManaged};
use super::state::{self, Entry, State};
use super::{history, logs};
use crate::migrations::Migration;
use crate::report::{Report, Style, Table};

#[derive(Debug, Clone)]
pub struct StatusReport {
    pub entries: Vec<Entry>,
    /// The index each `CREATE INDEX CONCURRENTLY` migration builds, by migration name.
    indexes: Vec<(String, String)>,
    /// Why the database is not managed by Prisma Migrate, when it is not.
    pub not_managed: Option<NotManaged>,
    /// The advice for a database that is not managed (it names the first migration).
    not_managed_advice: Option<String>,
    /// Migrations that make existing rows obey a rule (NOT NULL, a validated constraint), by
    /// name: a plain deploy would stop before them while rows break it, so the advice for
    /// pending ones is the release, which backfills and gates first.
    enforcing: Vec<String>,
}

pub fn status(client: &mut Client, migrations: &[Migration]) -> Result<StatusReport> {
    let records = history::load(client)?;
    let not_managed = match records.is_empty() {
        true => baseline::not_managed(client, migrations)?,
        false => None,
    };
    Ok(StatusReport {
        entries: state::compute(migrations, &records),
        indexes: migrations
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.concurrent_index()?)))
            .collect(),
        not_managed_advice: not_managed.as_ref().map(|n| n.advice(migrations)),
        not_managed,
        enforcing: migrations
            .iter()
            .filter(|m| {
                // NOT NULL on a column, or VALIDATE of a constraint added NOT VALID earlier: rules
                // for rows that exist before the migration (a constraint added validated is, in
                // practice, on a table the same migrations create).
                super::enforces::enforcements(&m.script).iter().any(|e| {
                    matches!(
                        e,
                        super::enforces::Enforcement::NotNull { .. }
                            | super::enforces::Enforcement::Constraint {
                                check: None,
                                foreign_key: false,
                                ..
                            }
                    )
                })
            })
            .map(|m| m.name.clone())
            .collect(),
    })
}

impl StatusReport {
    pub fn is_up_to_date(&self) -> bool {
        self.not_managed.is_none() && self.entries.iter().all(|e| e.state == State::Applied)
    }

    fn index_of(&self, name: &str) -> Option<String> {
        self.indexes
            .iter()
            .find(|(migration, _)| migration == name)
            .map(|(_, index)| index.clone())
    }

    pub(crate) fn count(&self, state: &State) -> usize {
        self.entries.iter().filter(|e| &e.state == state).count()
    }

    pub fn pending(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.state.is_pending())
            .collect()
    }

    pub fn state_of(&self, name: &str) -> Option<&State> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.state)
    }

    pub(crate) fn table(&self) -> Table {
        let mut table = Table::new(&["migration", "state", "at (UTC)"]);
        for entry in &self.entries {
            table.push(vec![
                entry.name.clone(),
                entry.state.label().to_string(),
                entry.at.clone().unwrap_or_default(),
            ]);
        }
        table
    }

    /// `2 applied, 1 pending, 1 failed` (only the states that occur).
    pub(crate) fn summary(&self) -> String {
        if let Some(not_managed) = &self.not_managed {
            return not_managed.summary();
        }
        if self.is_up_to_date() {
            return format!(
                "Database schema is up to date! ({} migrations applied)",
                self.entries.len()
            );
        }
        let states = [
            State::Applied,
            State::Pending,
            State::RolledBack,
            State::Failed,
            State::Edited,
            State::MissingLocally,
        ];
        let parts: Vec<String> = states
            .iter()
            .map(|s| (s, self.count(s)))
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.label()))
            .collect();
        format!(
            "{} migrations: {}. The database is not up to date.",
            self.entries.len(),
            parts.join(", ")
        )
    }

    /// One line per problem, each with the command that fixes it.
    pub fn advice(&self) -> Vec<String> {
        if let Some(advice) = &self.not_managed_advice {
            return vec![advice.clone()];
        }
        let mut lines = Vec::new();
        for entry in &self.entries {
            let name = &entry.name;
            match entry.state {
                State::Failed => lines.push(failed_advice(entry, self.index_of(name))),
                State::Edited => lines.push(format!(
                    "migration `{name}` was changed after it was applied: restore it (`git checkout -- migrations/{name}/migration.sql`) and put the change in a new migration (`cargo xtask migrate new NAME`)"
                )),
                State::MissingLocally => lines.push(format!(
                    "migration `{name}` is applied in the database but missing from the migrations folder: restore it from version control or check out the branch that has it"
                )),
                _ => {}
            }
        }
        let pending = self.pending();
        let n_pending = pending.len();
        let enforcing = pending.iter().find(|e| self.enforcing.contains(&e.name));
        if n_pending > 0 && lines.is_empty() {
            lines.push(match enforcing {
                Some(entry) => format!(
                    "{n_pending} pending, among them `{}`, which makes existing rows obey NOT NULL or a constraint: run `cargo xtask release`, which backfills and checks before it (`migrate deploy` stops before it while rows would break it)",
                    entry.name
                ),
                None => format!("{n_pending} pending: run `cargo xtask migrate deploy`"),
            });
        }
        lines
    }
}

/// What to do about a failed row, true to what the row shows. With an error in its logs, the
/// tool that ran the script saw it fail: PostgreSQL rolled it back (an index build leaves an
/// INVALID index). Without one, that tool stopped before it could record an outcome (killed,
/// or its connection lost), and the server may have gone on and committed the script: only
/// the catalog can tell, which is what `recover` reads.
fn failed_advice(entry: &Entry, index: Option<String>) -> String {
    let name = &entry.name;
    let at = entry.at.as_deref().unwrap_or("?");
    let error = entry
        .logs
        .as_deref()
        .filter(|logs| !logs.trim().is_empty())
        .map(logs::database_error);
    match (error, index) {
        (None, _) => format!(
            "migration `{name}` started at {at} UTC and has no recorded outcome: the process that ran it stopped (killed, or its connection lost), and its backend may have gone on and applied the script. Run `cargo xtask recover`: it waits for a backend still running it, proves from the catalog whether it was applied, and resolves it either way (by hand: compare the database with the file, then `cargo xtask migrate resolve --applied {name}` or `--rolled-back {name}`)"
        ),
        (Some(error), Some(index)) => format!(
            "migration `{name}` failed (started {at} UTC): {error} — it may have left an INVALID index `{index}`. Run `cargo xtask recover`, which drops it and builds the index again (by hand: `DROP INDEX CONCURRENTLY \"{index}\"`, `cargo xtask migrate resolve --rolled-back {name}`, then `cargo xtask migrate deploy`)"
        ),
        (Some(error), None) => format!(
            "migration `{name}` failed (started {at} UTC): {error} — PostgreSQL rolled its script back. Fix the cause, then run `cargo xtask recover` (by hand: `cargo xtask migrate resolve --rolled-back {name}`, then `cargo xtask migrate deploy`)"
        ),
    }
}

impl Report for StatusReport {
    fn render_with(&self, _style: Style) -> String {
        let mut out = self.table().render();
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        for line in self.advice() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    fn to_json(&self) -> serde_json::Value {
        crate::report::document(
            "migrate_status",
            json!({
                "up_to_date": self.is_up_to_date(),
                "managed": self.not_managed.is_none(),
                "summary": self.summary(),
                "migrations": self.entries.iter().map(|e| json!({
                    "name": e.name,
                    "state": e.state.key(),
                    "at": e.at.as_deref().map(crate::report::utc_rfc3339),
                    "logs": e.logs,
                    "error": e.logs.as_deref().map(logs::database_error),
                })).collect::<Vec<_>>(),
                "advice": self.advice(),
            }),
        )
    }

    fn ok(&self) -> bool {
        self.is_up_to_date()
    }
}

//! `migrate status`: every migration with its state, a summary line, and what to do next.
//! Read-only: it never creates `_prisma_migrations`. A database with tables but no
//! `_prisma_migrations` is "not managed by Prisma Migrate" (deploy refuses it, as Prisma does),
//! and so is one with neither migrations nor the table.

use anyhow::Result;
use postgres::Client;
use serde_json::json;

use super::baseline::{self, NotManaged};
use super::state::{self, Entry, State};
use super::{history, logs};
use crate::migrations::Migration;
use crate::report::{Report, Style, Table};

#[derive(Debug, Clone)]
pub struct StatusReport {
    pub entries: Vec<Entry>,
    /// Why the database is not managed by Prisma Migrate, when it is not.
    pub not_managed: Option<NotManaged>,
    /// The advice for a database that is not managed (it names the first migration).
    not_managed_advice: Option<String>,
}

pub fn status(client: &mut Client, migrations: &[Migration]) -> Result<StatusReport> {
    let records = history::load(client)?;
    let not_managed = match records.is_empty() {
        true => baseline::not_managed(client, migrations)?,
        false => None,
    };
    Ok(StatusReport {
        entries: state::compute(migrations, &records),
        not_managed_advice: not_managed.as_ref().map(|n| n.advice(migrations)),
        not_managed,
    })
}

impl StatusReport {
    pub fn is_up_to_date(&self) -> bool {
        self.not_managed.is_none() && self.entries.iter().all(|e| e.state == State::Applied)
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
                State::Failed => lines.push(format!(
                    "migration `{name}` failed (started {} UTC): {} — fix the cause, then run `cargo xtask recover` (by hand: `cargo xtask migrate resolve --rolled-back {name}`, then `cargo xtask migrate deploy`)",
                    entry.at.as_deref().unwrap_or("?"),
                    entry.logs.as_deref().map(logs::database_error).unwrap_or_else(|| "no error recorded".into())
                )),
                State::Edited => lines.push(format!(
                    "migration `{name}` was changed after it was applied: restore it (`git checkout -- migrations/{name}/migration.sql`) and put the change in a new migration (`cargo xtask migrate new NAME`)"
                )),
                State::MissingLocally => lines.push(format!(
                    "migration `{name}` is applied in the database but missing from the migrations folder: restore it from version control or check out the branch that has it"
                )),
                _ => {}
            }
        }
        let n_pending = self.pending().len();
        if n_pending > 0 && lines.is_empty() {
            lines.push(format!(
                "{n_pending} pending: run `cargo xtask migrate deploy`"
            ));
        }
        lines
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
        json!({
            "upToDate": self.is_up_to_date(),
            "managed": self.not_managed.is_none(),
            "summary": self.summary(),
            "migrations": self.entries.iter().map(|e| json!({
                "name": e.name,
                "state": e.state.key(),
                "at": e.at,
                "logs": e.logs,
                "error": e.logs.as_deref().map(logs::database_error),
            })).collect::<Vec<_>>(),
            "advice": self.advice(),
        })
    }

    fn ok(&self) -> bool {
        self.is_up_to_date()
    }
}

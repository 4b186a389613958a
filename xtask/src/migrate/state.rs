//! The state of each migration, from the folder and the `_prisma_migrations` rows. Pure.
//!
//! Where Prisma is wrong we are right: after `resolve --rolled-back` a migration is pending
//! again (Prisma calls the database up to date), and an applied migration that was edited or
//! is missing from the folder is reported (Prisma says nothing).

use super::history::Record;
use crate::migrations::Migration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Applied,
    Pending,
    /// All rows rolled back: it will be applied again by the next deploy.
    RolledBack,
    /// Started and neither finished nor resolved.
    Failed,
    /// Applied, but `migration.sql` no longer has the checksum that was applied.
    Edited,
    /// Applied in the database, absent from the folder.
    MissingLocally,
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::RolledBack => "rolled back, pending",
            State::Failed => "failed",
            State::Edited => "edited since applied",
            State::MissingLocally => "missing locally",
        }
    }

    pub fn key(&self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::RolledBack => "rolled_back",
            State::Failed => "failed",
            State::Edited => "edited",
            State::MissingLocally => "missing_locally",
        }
    }

    /// Whether the next deploy would apply it.
    pub fn is_pending(&self) -> bool {
        matches!(self, State::Pending | State::RolledBack)
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub state: State,
    /// When it was applied, started (failed) or rolled back, in UTC.
    pub at: Option<String>,
    /// The failed row's logs.
    pub logs: Option<String>,
}

pub fn compute(local: &[Migration], records: &[Record]) -> Vec<Entry> {
    let mut names: Vec<&str> = local.iter().map(|m| m.name.as_str()).collect();
    for record in records {
        if !names.contains(&record.migration_name.as_str()) {
            names.push(&record.migration_name);
        }
    }
    names.sort_unstable();
    names
        .into_iter()
        .filter_map(|name| {
            let migration = local.iter().find(|m| m.name == name);
            let rows: Vec<&Record> = records
                .iter()
                .filter(|r| r.migration_name == name)
                .collect();
            entry(name, migration, &rows)
        })
        .collect()
}

fn entry(name: &str, migration: Option<&Migration>, rows: &[&Record]) -> Option<Entry> {
    let make = |state, at: Option<&String>, logs: Option<&String>| Entry {
        name: name.to_string(),
        state,
        at: at.cloned(),
        logs: logs.cloned(),
    };
    if let Some(failed) = rows.iter().rev().find(|r| r.is_failed()) {
        return Some(make(
            State::Failed,
            Some(&failed.started_at),
            failed.logs.as_ref(),
        ));
    }
    if let Some(finished) = rows.iter().rev().find(|r| r.is_finished()) {
        let state = match migration {
            None => State::MissingLocally,
            Some(m) if m.checksum != finished.checksum => State::Edited,
            Some(_) => State::Applied,
        };
        return Some(make(state, finished.finished_at.as_ref(), None));
    }
    match (migration, rows.last()) {
        // Only rolled-back rows, and the folder no longer has it: nothing to report.
        (None, _) => None,
        (Some(_), Some(last)) => Some(make(State::RolledBack, last.rolled_back_at.as_ref(), None)),
        (Some(_), None) => Some(make(State::Pending, None, None)),
    }
}

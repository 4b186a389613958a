//! The state of each migration, from the folder and the `_prisma_migrations` rows. Pure.
//!
//! Where Prisma is wrong we are right: after `resolve --rolled-back` a migration is pending
//! again (Prisma calls the database up to date), and an applied migration that was edited or
//! is missing from the folder is reported (Prisma says nothing). "Edited" is judged as Prisma
//! judges it (`checksum::matches`: line endings and the older checksum format are not edits),
//! against the row that applied it. Names are listed in Prisma's order.

use super::checksum;
use super::history::Record;
use crate::migrations::{prisma_order, Migration};

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
    pub(crate) fn label(&self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::RolledBack => "rolled back, pending",
            State::Failed => "failed",
            State::Edited => "edited since applied",
            State::MissingLocally => "missing locally",
        }
    }

    pub(crate) fn key(&self) -> &'static str {
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
    pub(crate) fn is_pending(&self) -> bool {
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

pub(crate) fn compute(local: &[Migration], records: &[Record]) -> Vec<Entry> {
    let mut names: Vec<&str> = local.iter().map(|m| m.name.as_str()).collect();
    for record in records {
        if !names.contains(&record.migration_name.as_str()) {
            names.push(&record.migration_name);
        }
    }
    names.sort_by(|a, b| prisma_order(a, b));
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
            Some(m) if !checksum::matches(&m.script, &finished.checksum) => State::Edited,
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A local migration whose script is `script`.
    fn local(name: &str, script: &str) -> Migration {
        Migration {
            name: name.into(),
            path: PathBuf::new(),
            script: script.into(),
            checksum: crate::migrations::checksum(script.as_bytes()),
            declaration: None,
        }
    }

    /// A row that recorded the script `script`.
    fn row(name: &str, script: &str, finished: bool, rolled_back: bool, at: &str) -> Record {
        Record {
            checksum: crate::migrations::checksum(script.as_bytes()),
            finished_at: finished.then(|| at.to_string()),
            migration_name: name.into(),
            logs: (!finished && !rolled_back).then(|| "ERROR: boom".to_string()),
            rolled_back_at: rolled_back.then(|| at.to_string()),
            started_at: at.into(),
        }
    }

    fn states(local: &[Migration], records: &[Record]) -> Vec<(String, State)> {
        compute(local, records)
            .into_iter()
            .map(|e| (e.name, e.state))
            .collect()
    }

    #[test]
    fn pending_applied_and_edited() {
        let folder = [local("1_a", "x"), local("2_b", "y"), local("3_c", "z")];
        let rows = [
            row("1_a", "x", true, false, "t1"),
            row("2_b", "OLD", true, false, "t2"),
        ];
        assert_eq!(
            states(&folder, &rows),
            vec![
                ("1_a".into(), State::Applied),
                ("2_b".into(), State::Edited),
                ("3_c".into(), State::Pending),
            ]
        );
    }

    #[test]
    fn failed_then_resolved_either_way() {
        let folder = [local("1_a", "x")];
        let failed = row("1_a", "x", false, false, "t1");
        let entries = compute(&folder, std::slice::from_ref(&failed));
        assert_eq!(entries[0].state, State::Failed);
        assert_eq!(entries[0].at.as_deref(), Some("t1"));
        assert_eq!(entries[0].logs.as_deref(), Some("ERROR: boom"));

        // --rolled-back: pending again (Prisma's status would call this up to date).
        let rolled_back = row("1_a", "x", false, true, "t2");
        assert_eq!(
            states(&folder, std::slice::from_ref(&rolled_back))[0].1,
            State::RolledBack
        );
        assert!(State::RolledBack.is_pending());

        // --applied: the failed row rolled back plus a finished row.
        let applied = row("1_a", "x", true, false, "t3");
        assert_eq!(
            states(&folder, &[rolled_back, applied])[0].1,
            State::Applied
        );
    }

    #[test]
    fn a_failed_row_wins_over_an_older_success() {
        let folder = [local("1_a", "x")];
        let rows = [
            row("1_a", "x", true, false, "t1"),
            row("1_a", "x", false, false, "t2"),
        ];
        assert_eq!(states(&folder, &rows)[0].1, State::Failed);
    }

    #[test]
    fn applied_but_gone_from_the_folder() {
        let rows = [
            row("9_gone", "x", true, false, "t1"),
            row("8_undone", "x", false, true, "t1"),
        ];
        // A migration only ever rolled back and no longer in the folder is not reported.
        assert_eq!(
            states(&[], &rows),
            vec![("9_gone".into(), State::MissingLocally)]
        );
    }
}

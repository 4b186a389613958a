//! What a failed migration really left behind, proved from the catalog. A row that says
//! "failed" tells only that the tool which ran the script did not see it finish: killed with
//! SIGKILL, or its connection lost, its backend may have gone on and committed. Each judgement
//! is made under the migration lock, after every backend still running a migration script has
//! finished (`migrate::running`), so it never reads a state that is still changing. Nothing
//! here knows a particular release: each proof is derived from a declaration or the script.
//!
//! - an index migration (`CREATE INDEX CONCURRENTLY`): the index VALID and defined as the file
//!   defines it → applied; INVALID (an interrupted build, which holds no data) → dropped and
//!   rolled back; absent → rolled back; VALID but defined otherwise → a person decides;
//! - a declared release's contract: every column it fills NOT NULL → applied; none → rolled
//!   back (it is one transaction); anything between → a person decides;
//! - a declared release's expand: every column it adds exists → applied; none → rolled back;
//!   some → a person decides;
//! - any other migration that is one transaction: what its statements create and drop
//!   (`migrate::effects`) all there → applied; none → rolled back; some → a person decides;
//!   without such effects, a recorded lock timeout or cancel means it was rolled back whole and
//!   a new try is the fix; any other recorded error needs its cause fixed.

use crate::db::Client;
use anyhow::Result;

use super::inspect::Inspection;
use crate::migrate::concurrent::{self, IndexState};
use crate::migrate::effects;
use crate::migrate::logs::database_error;
use crate::migrations::Migration;
use crate::releases::Column;

/// What the database shows about one failed migration.
#[derive(Debug, Clone)]
pub(crate) enum Judgement {
    /// Its script was rolled back and left nothing a new try would trip over (after the
    /// INVALID index, if any, is dropped): resolve it as rolled back and deploy it again.
    RolledBack {
        name: String,
        proof: String,
        drop_index: Option<String>,
    },
    /// Its script committed: resolve it as applied.
    Applied { name: String, proof: String },
    /// What was found, and what a person must decide.
    Unprovable { name: String, why: String },
}

/// SQLSTATEs after which PostgreSQL has rolled a script back and a new try is the fix: a lock
/// timeout, a cancel (a statement timeout, a signal), a deadlock, a serialization failure.
const TRANSIENT: [&str; 4] = ["55P03", "57014", "40P01", "40001"];

pub(crate) fn judge(
    client: &mut Client,
    inspection: &Inspection,
    migrations: &[Migration],
    name: &str,
) -> Result<Judgement> {
    let migration = migrations.iter().find(|m| m.name == name);
    if let Some(judgement) = declared(inspection, name) {
        return Ok(judgement);
    }
    let unprovable = |why: String| Judgement::Unprovable {
        name: name.to_string(),
        why,
    };
    let Some(migration) = migration else {
        return Ok(unprovable(format!(
            "`{name}` is not in the migrations folder, so recover cannot tell what its script changed: restore it from version control"
        )));
    };
    if let Some(index) = migration.concurrent_index() {
        return index_migration(client, migration, &index);
    }
    // What its statements create and drop, when they say: applied, or changed another way,
    // decide here; left nothing needs the recorded error to say whether a new try is the fix
    // (without a recorded error, the catalog is the proof).
    let mut left_nothing = None;
    if !has_transaction_control(&migration.script) {
        match by_effects(client, migration)? {
            Some(rolled_back @ Judgement::RolledBack { .. }) => left_nothing = Some(rolled_back),
            Some(judgement) => return Ok(judgement),
            None => {}
        }
    }
    let logs = inspection
        .status
        .entries
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.logs.clone())
        .filter(|logs| !logs.trim().is_empty());
    let by_hand = format!("by hand: compare the database with `migrations/{name}/migration.sql`, then `cargo xtask migrate resolve --applied {name}` or `--rolled-back {name}`");
    Ok(match logs {
        None if left_nothing.is_some() => left_nothing.unwrap_or_else(|| unreachable!()),
        None => unprovable(format!(
            "it has no recorded outcome (the process that ran it stopped before it could record one), and recover knows no proof for what this script changes; {by_hand}"
        )),
        Some(_) if left_nothing.is_some() && is_transient(logs.as_deref().unwrap_or_default()) => {
            left_nothing.unwrap_or_else(|| unreachable!())
        }
        Some(logs) if is_transient(&logs) && !has_transaction_control(&migration.script) => {
            Judgement::RolledBack {
                name: name.to_string(),
                proof: format!(
                    "its recorded failure is `{}`, after which PostgreSQL rolls the whole script (one transaction) back; a new try is the fix",
                    database_error(&logs)
                ),
                drop_index: None,
            }
        }
        Some(logs) => unprovable(format!(
            "it failed with `{}`; PostgreSQL rolled its script back, but running it again would fail the same way: fix the cause, then `cargo xtask migrate resolve --rolled-back {name}` and `cargo xtask recover` (or `cargo xtask migrate deploy`)",
            database_error(&logs)
        )),
    })
}

/// Messages of the same failures, for logs written without a SQLSTATE (Prisma's JS engine).
const TRANSIENT_MESSAGES: [&str; 4] = [
    "canceling statement due to lock timeout",
    "canceling statement due to statement timeout",
    "deadlock detected",
    "could not serialize access",
];

fn is_transient(logs: &str) -> bool {
    let coded = TRANSIENT.iter().any(|code| {
        logs.lines().any(|line| {
            line.trim() == format!("Database error code: {code}")
                || line.contains(&format!("SQLSTATE {code}"))
        })
    });
    coded
        || TRANSIENT_MESSAGES
            .iter()
            .any(|message| logs.contains(message))
}

/// Whether the script ends or starts transactions of its own, which would make a partial
/// commit possible.
fn has_transaction_control(script: &str) -> bool {
    script
        .lines()
        .map(|line| line.trim_start().to_ascii_uppercase())
        .filter(|line| !line.starts_with("--"))
        .any(|line| {
            [
                "BEGIN",
                "COMMIT",
                "END",
                "ROLLBACK",
                "START TRANSACTION",
                "SAVEPOINT",
            ]
            .iter()
            .any(|word| {
                line.starts_with(word)
                    && line[word.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == ';' || c.is_whitespace())
            })
        })
}

fn index_migration(client: &mut Client, migration: &Migration, index: &str) -> Result<Judgement> {
    let name = migration.name.clone();
    Ok(match concurrent::index_state(client, migration, index)? {
        IndexState::Absent => Judgement::RolledBack {
            name,
            proof: format!("the index `{index}` does not exist"),
            drop_index: None,
        },
        IndexState::Invalid => Judgement::RolledBack {
            name,
            proof: format!(
                "the index `{index}` is INVALID (an interrupted build, which holds no data): it is dropped, then built again"
            ),
            drop_index: Some(index.to_string()),
        },
        IndexState::Valid { definition, matches: true } => Judgement::Applied {
            name,
            proof: format!("the index `{index}` is VALID and defined as the file defines it ({definition})"),
        },
        IndexState::Valid { definition, matches: false } => Judgement::Unprovable {
            name: name.clone(),
            why: format!(
                "the index `{index}` is VALID but defined otherwise than the file: the database has `{definition}`. If that index is what you want, run `cargo xtask migrate resolve --applied {name}`; otherwise drop it (`DROP INDEX CONCURRENTLY \"{index}\"`) and run `cargo xtask recover` again"
            ),
        },
    })
}

/// A declared release's expand or contract, judged by the columns it fills: the expand adds
/// them (nullable), the contract sets them NOT NULL, each in one transaction.
fn declared(inspection: &Inspection, name: &str) -> Option<Judgement> {
    let (release, columns) = inspection.release_of(name)?;
    let name = name.to_string();
    let described = columns.describe();
    let fills = release.describe_fills();
    if release.contract.as_deref() == Some(name.as_str()) {
        return Some(if columns.all(Column::NotNull) {
            Judgement::Applied {
                proof: format!("{fills} NOT NULL: its script committed"),
                name,
            }
        } else if !columns.any(Column::NotNull) {
            Judgement::RolledBack {
                proof: format!(
                    "none of {fills} is NOT NULL, so its script (one transaction) left nothing"
                ),
                name,
                drop_index: None,
            }
        } else {
            Judgement::Unprovable {
                why: format!(
                    "its failure is recorded, but only part of what it does is there ({described}): it was changed another way. If every column is NOT NULL and that is intended, record it with `cargo xtask migrate resolve --applied {name}`; otherwise run `cargo xtask rollback --release {} --yes` first",
                    release.name
                ),
                name,
            }
        });
    }
    Some(if !columns.any(Column::Missing) {
        Judgement::Applied {
            proof: format!("{fills} exist: its script committed"),
            name,
        }
    } else if columns.all(Column::Missing) {
        Judgement::RolledBack {
            proof: format!("none of {fills} exists, so its script (one transaction) left nothing"),
            name,
            drop_index: None,
        }
    } else {
        Judgement::Unprovable {
            why: format!(
                "its failure is recorded, but part of what it creates exists ({described}): it was changed another way. Compare the database with `migrations/{name}/migration.sql`; if everything is there, run `cargo xtask migrate resolve --applied {name}`"
            ),
            name,
        }
    })
}

/// A one-transaction script judged by the objects it creates and drops.
fn by_effects(client: &mut Client, migration: &Migration) -> Result<Option<Judgement>> {
    let found = effects::effects(&migration.script);
    if found.is_empty() {
        return Ok(None);
    }
    let mut after = Vec::new();
    let mut before = Vec::new();
    for effect in &found {
        let exists = effect.object.exists(client)?;
        let what = format!(
            "{} {}",
            effect.object.describe(),
            if exists { "exists" } else { "does not exist" }
        );
        if exists == effect.exists_after {
            after.push(what);
        } else {
            before.push(what);
        }
    }
    let name = migration.name.clone();
    Ok(Some(if before.is_empty() {
        Judgement::Applied {
            proof: format!("{}: its script committed", after.join(", ")),
            name,
        }
    } else if after.is_empty() {
        Judgement::RolledBack {
            proof: format!(
                "{}: its script (one transaction) left nothing",
                before.join(", ")
            ),
            name,
            drop_index: None,
        }
    } else {
        Judgement::Unprovable {
            why: format!(
                "{}, but {}: neither before nor after the migration; compare the database with `migrations/{name}/migration.sql` and finish or undo it by hand",
                after.join(", "),
                before.join(", ")
            ),
            name,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_read_from_either_log_format() {
        assert!(is_transient(
            "Database error code: 55P03\n\nDatabase error:\nERROR: canceling statement due to lock timeout"
        ));
        assert!(is_transient("ERROR: canceling statement (SQLSTATE 57014)"));
        assert!(!is_transient(
            "Database error code: 23505\n\nERROR: duplicate key"
        ));
    }

    #[test]
    fn transaction_control_is_found_outside_comments() {
        assert!(has_transaction_control(
            "BEGIN;\nALTER TABLE a ADD b int;\nCOMMIT;"
        ));
        assert!(has_transaction_control(
            "ALTER TABLE a ADD b int;\ncommit;\n"
        ));
        assert!(!has_transaction_control(
            "-- BEGIN here\nALTER TABLE a ADD b int;\nCREATE TABLE ending (x int);"
        ));
    }
}

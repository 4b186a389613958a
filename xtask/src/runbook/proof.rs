//! What a failed migration really left behind, proved from the catalog. A row that says
//! "failed" tells only that the tool which ran the script did not see it finish: killed with
//! SIGKILL, or its connection lost, its backend may have gone on and committed. Each judgement
//! is made under the migration lock, after every backend still running a migration script has
//! finished (`migrate::running`), so it never reads a state that is still changing.
//!
//! - an index migration (`CREATE INDEX CONCURRENTLY`): the index VALID and defined as the file
//!   defines it → applied; INVALID (an interrupted build, which holds no data) → dropped and
//!   rolled back; absent → rolled back; VALID but defined otherwise → a person decides;
//! - the contract: NOT NULL on all four tables, its checks dropped, its foreign keys validated
//!   → applied; NOT NULL nowhere → rolled back (it is one transaction); anything between → a
//!   person decides;
//! - the expand: every column, foreign key, trigger, view and function → applied; none →
//!   rolled back; some → a person decides;
//! - any other migration: its script is one transaction, so a recorded lock timeout or cancel
//!   means it was rolled back whole and a new try is the fix; any other recorded error needs
//!   its cause fixed; no recorded outcome at all cannot be judged without knowing the script.

use anyhow::{Context, Result};
use postgres::Client;

use super::inspect::Inspection;
use crate::migrate::concurrent::{self, IndexState};
use crate::migrate::logs::database_error;
use crate::migrations::Migration;
use crate::tenancy::{self, Column, CONTRACT, DATAHUB_TABLES, EXPAND};

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
    if name == CONTRACT {
        return contract(client, inspection);
    }
    if name == EXPAND {
        return expand(client, inspection);
    }
    if name == tenancy::CONNECTION_KEY {
        return connection_key(client, name);
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
    let logs = inspection
        .status
        .entries
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.logs.clone())
        .filter(|logs| !logs.trim().is_empty());
    let by_hand = format!("by hand: compare the database with `migrations/{name}/migration.sql`, then `cargo xtask migrate resolve --applied {name}` or `--rolled-back {name}`");
    Ok(match logs {
        None => unprovable(format!(
            "it has no recorded outcome (the process that ran it stopped before it could record one), and recover knows no proof for what this script changes; {by_hand}"
        )),
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

/// The four `workspaceId` foreign keys and NOT NULL checks, as the catalog shows them.
const CONTRACT_CONSTRAINTS_SQL: &str = "
    SELECT count(*) FILTER (WHERE con.contype = 'c' AND con.conname = c.relname || '_workspaceId_not_null')::int,
           count(*) FILTER (WHERE con.contype = 'f' AND con.conname = c.relname || '_workspaceId_fkey' AND con.convalidated)::int
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
      AND c.relname::text = ANY($1)";

fn contract(client: &mut Client, inspection: &Inspection) -> Result<Judgement> {
    let name = CONTRACT.to_string();
    if inspection.all_columns(Column::Nullable) {
        return Ok(Judgement::RolledBack {
            name,
            proof:
                "no workspaceId column is NOT NULL, so its script (one transaction) left nothing"
                    .into(),
            drop_index: None,
        });
    }
    let row = client
        .query_one(CONTRACT_CONSTRAINTS_SQL, &[&tenancy::tables_param()])
        .context("cannot read the contract's constraints")?;
    let (checks, validated_keys): (i32, i32) = (row.get(0), row.get(1));
    let tables = DATAHUB_TABLES.len() as i32;
    if inspection.all_columns(Column::NotNull) && checks == 0 && validated_keys == tables {
        return Ok(Judgement::Applied {
            name,
            proof: format!(
                "workspaceId is NOT NULL on all {tables} tables, the NOT NULL checks are dropped and the {tables} foreign keys validated: its script committed"
            ),
        });
    }
    Ok(Judgement::Unprovable {
        name,
        why: format!(
            "its failure is recorded, but the database shows only part of what it does ({}; {checks} NOT NULL checks left, {validated_keys} of {tables} foreign keys validated): it was changed another way. If all four are NOT NULL and that is intended, record it with `cargo xtask migrate resolve --applied {CONTRACT}`; otherwise run `cargo xtask rollback --yes` first",
            inspection.describe_columns()
        ),
    })
}

/// The expand's foreign keys and triggers that exist.
const EXPAND_OBJECTS_SQL: &str = "
    SELECT (SELECT count(*) FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
            WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
              AND c.relname::text = ANY($1) AND con.conname = c.relname || '_workspaceId_fkey')::int,
           (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
              AND c.relname::text = ANY($1) AND t.tgname = c.relname || '_fill_workspaceId')::int";

fn expand(client: &mut Client, inspection: &Inspection) -> Result<Judgement> {
    let name = EXPAND.to_string();
    let helpers: i32 = client
        .query_one(
            tenancy::EXPAND_LEFTOVERS_SQL,
            &[
                &tenancy::HOME_VIEW,
                &tenancy::FILL_TRIGGER_FUNCTION,
                &tenancy::HOME_ID_FUNCTION,
            ],
        )
        .context("cannot look for the expand migration's view and functions")?
        .get(0);
    let row = client
        .query_one(EXPAND_OBJECTS_SQL, &[&tenancy::tables_param()])
        .context("cannot look for the expand migration's foreign keys and triggers")?;
    let (keys, triggers): (i32, i32) = (row.get(0), row.get(1));
    let tables = DATAHUB_TABLES.len() as i32;
    if inspection.all_columns(Column::Missing) && helpers == 0 && keys == 0 && triggers == 0 {
        return Ok(Judgement::RolledBack {
            name,
            proof: "none of its columns, foreign keys, triggers, view or functions exist".into(),
            drop_index: None,
        });
    }
    if !inspection.any_column(Column::Missing)
        && helpers == 3
        && keys == tables
        && triggers == tables
    {
        return Ok(Judgement::Applied {
            name,
            proof: format!(
                "all {tables} workspaceId columns, foreign keys and triggers and its view and two functions exist: its script committed"
            ),
        });
    }
    Ok(Judgement::Unprovable {
        name,
        why: format!(
            "its failure is recorded, but part of what it creates exists ({}; {keys} of {tables} foreign keys, {triggers} of {tables} triggers, {helpers} of 3 for its view and two functions): it was changed another way. Compare the database with `migrations/{EXPAND}/migration.sql`; if everything is there, run `cargo xtask migrate resolve --applied {EXPAND}`",
            inspection.describe_columns()
        ),
    })
}

/// The next release's key of `Connection`: the new unique constraint adopted and the old key
/// dropped → applied (one transaction); neither → rolled back; one of the two → by hand.
fn connection_key(client: &mut Client, name: &str) -> Result<Judgement> {
    let row = client
        .query_one(
            tenancy::CONNECTION_KEYS_SQL,
            &[&tenancy::CONNECTION_NEW_KEY, &tenancy::CONNECTION_OLD_KEY],
        )
        .context("cannot look up the keys of `Connection`")?;
    let (adopted, old_key): (bool, bool) = (row.get(0), row.get(1));
    let (new_key, old) = (tenancy::CONNECTION_NEW_KEY, tenancy::CONNECTION_OLD_KEY);
    let name = name.to_string();
    Ok(match (adopted, old_key) {
        (false, true) => Judgement::RolledBack {
            name,
            proof: format!("`{new_key}` is not a constraint and the old key `{old}` still exists"),
            drop_index: None,
        },
        (true, false) => Judgement::Applied {
            name,
            proof: format!("`{new_key}` is the key of `Connection` and the old key `{old}` is gone: its script committed"),
        },
        _ => Judgement::Unprovable {
            why: format!(
                "`{new_key}` is {}a constraint and the old key `{old}` {}: neither before nor after the migration; compare `Connection` with `migrations/{name}/migration.sql` and finish or undo it by hand",
                if adopted { "" } else { "not " },
                if old_key { "still exists" } else { "is gone" },
            ),
            name,
        },
    })
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

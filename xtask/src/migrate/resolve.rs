//! `migrate resolve --rolled-back NAME | --applied NAME`, with Prisma's semantics:
//! `--rolled-back` only on a failed migration, which the next deploy applies again (new row);
//! `--applied` marks a failed (or not yet applied) migration as applied without running it.

use std::time::Duration;

use anyhow::{bail, Result};
use postgres::Client;

use super::history;
use super::state::{self, State};
use crate::db;
use crate::migrations::{self, Migration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    RolledBack,
    Applied,
}

pub fn resolve(
    client: &mut Client,
    migrations: &[Migration],
    resolution: Resolution,
    name: &str,
    lock_wait: Duration,
) -> Result<String> {
    db::with_migration_lock(client, lock_wait, migrations, |client| {
        resolve_locked(client, migrations, resolution, name)
    })
}

fn resolve_locked(
    client: &mut Client,
    migrations: &[Migration],
    resolution: Resolution,
    name: &str,
) -> Result<String> {
    let records = history::load(client)?;
    let entries = state::compute(migrations, &records);
    let current = entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.state.clone());
    match resolution {
        Resolution::RolledBack => match current {
            Some(State::Failed) => {
                history::mark_failed_rolled_back(client, name)?;
                Ok(format!(
                    "Migration `{name}` marked as rolled back; it is pending again and the next `cargo xtask migrate deploy` applies it."
                ))
            }
            other => bail!(
                "migration `{name}` cannot be marked as rolled back: it is {}, and `--rolled-back` only applies to a failed migration (see `cargo xtask migrate status`)",
                describe(other.as_ref())
            ),
        },
        Resolution::Applied => {
            let migration = migrations::find(migrations, name)?;
            match current {
                Some(State::Failed) => {
                    history::mark_failed_rolled_back(client, name)?;
                }
                Some(State::Pending | State::RolledBack) => {}
                other => bail!(
                    "migration `{name}` cannot be marked as applied: it is {}, and `--applied` only applies to a failed or not yet applied migration (see `cargo xtask migrate status`)",
                    describe(other.as_ref())
                ),
            }
            history::create_table(client)?;
            history::insert_resolved_applied(client, name, &migration.checksum)?;
            Ok(format!(
                "Migration `{name}` marked as applied (its script was not run)."
            ))
        }
    }
}

fn describe(state: Option<&State>) -> String {
    match state {
        None => "unknown to both the migrations folder and the database".into(),
        Some(state) => format!("`{}`", state.label()),
    }
}

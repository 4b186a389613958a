//! `migrate resolve --rolled-back NAME | --applied NAME`, with Prisma's semantics:
//! `--rolled-back` only on a failed migration, which the next deploy applies again (new row),
//! and a no-op once it is marked; `--applied` marks a failed (or not yet applied) migration as
//! applied without running it, which is also how a database is baselined.

use std::time::Duration;

use crate::db::Client;
use anyhow::{bail, Result};

use super::history::{self, Record};
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
    let rows: Vec<&Record> = records
        .iter()
        .filter(|r| r.migration_name == name)
        .collect();
    match resolution {
        // Prisma's rule: no row → P3011; every row finished → P3012; otherwise each failed row
        // not yet rolled back is marked, and "none left to mark" is success too, so a second
        // call, or one after a later attempt succeeded, changes nothing and exits 0.
        Resolution::RolledBack => {
            if rows.is_empty() {
                bail!(
                    "migration `{name}` cannot be marked as rolled back: `_prisma_migrations` has no row of it, so it was never applied (Prisma: P3011); check the name with `cargo xtask migrate status`"
                );
            }
            if rows.iter().all(|r| r.finished_at.is_some()) {
                let state = state::compute(migrations, &records)
                    .into_iter()
                    .find(|e| e.name == name)
                    .map(|e| e.state);
                bail!(
                    "migration `{name}` cannot be marked as rolled back: it is {}, and `--rolled-back` only applies to a failed migration (Prisma: P3012; see `cargo xtask migrate status`)",
                    describe(state.as_ref())
                );
            }
            let marked = history::mark_failed_rolled_back(client, name)?;
            Ok(if marked > 0 {
                format!(
                    "Migration `{name}` marked as rolled back; it is pending again and the next `cargo xtask migrate deploy` applies it."
                )
            } else if rows.iter().any(|r| r.is_finished()) {
                format!(
                    "Migration `{name}` was already marked as rolled back, and a later attempt applied it; nothing changed."
                )
            } else {
                format!(
                    "Migration `{name}` was already marked as rolled back; nothing changed. The next `cargo xtask migrate deploy` applies it."
                )
            })
        }
        // Prisma's rule: not in the folder → P3017 (a usage error here); applied and not rolled
        // back → P3008; otherwise failed rows are marked rolled back and a new row records it
        // as applied, its script not run.
        Resolution::Applied => {
            let migration = migrations::find(migrations, name)?;
            if rows.iter().any(|r| r.is_finished()) {
                bail!(
                    "migration `{name}` cannot be marked as applied: it is already recorded as applied (Prisma: P3008; see `cargo xtask migrate status`)"
                );
            }
            if rows.iter().any(|r| r.is_failed()) {
                history::mark_failed_rolled_back(client, name)?;
            }
            // Baselining: `--applied` is the way in for a database with tables and no
            // bookkeeping, so it creates the table whatever the schema holds, as Prisma does.
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

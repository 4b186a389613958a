//! Prisma's bookkeeping table `_prisma_migrations`, read and written exactly as Prisma does, so
//! that Prisma and `cargo xtask` can take turns on one database. Each statement touches only
//! this table: row locks, never a lock on the app's tables.

use crate::db::{Client, Transaction};
use anyhow::{Context, Result};

/// Prisma's own definition of the table, in the URL's schema (the search_path).
const CREATE_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)"#;

/// Every row, oldest first. Timestamps come back as UTC text so no date crate is needed.
const SELECT_ALL: &str = r#"
SELECT "checksum",
       to_char("finished_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
       "migration_name", "logs",
       to_char("rolled_back_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
       to_char("started_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
FROM "_prisma_migrations"
ORDER BY "started_at", "id""#;

/// Prisma inserts the row before it runs the script: a crash mid-way leaves a failed row. The
/// id is a random UUID v4, as Prisma's, made by PostgreSQL.
const INSERT_STARTED: &str = r#"
INSERT INTO "_prisma_migrations" ("id", "checksum", "migration_name", "started_at", "applied_steps_count")
VALUES (gen_random_uuid()::text, $1, $2, now(), 0)
RETURNING "id""#;

const MARK_FINISHED: &str = r#"
UPDATE "_prisma_migrations" SET "finished_at" = now(), "applied_steps_count" = 1, "logs" = NULL
WHERE "id" = $1"#;

const MARK_FAILED: &str = r#"
UPDATE "_prisma_migrations" SET "logs" = $2, "applied_steps_count" = 0 WHERE "id" = $1"#;

/// An attempt that PostgreSQL rolled back as a whole (a lock budget spent, a signal): its row
/// goes, so the migration is pending again for us and for Prisma alike. Prisma's `status`
/// reads any row of a migration, rolled back or not, as "applied".
const FORGET_ATTEMPT: &str = r#"DELETE FROM "_prisma_migrations" WHERE "id" = $1"#;

const MARK_FAILED_ROLLED_BACK: &str = r#"
UPDATE "_prisma_migrations" SET "rolled_back_at" = now()
WHERE "migration_name" = $1 AND "finished_at" IS NULL AND "rolled_back_at" IS NULL"#;

const MARK_APPLIED_ROLLED_BACK: &str = r#"
UPDATE "_prisma_migrations" SET "rolled_back_at" = now()
WHERE "migration_name" = $1 AND "finished_at" IS NOT NULL AND "rolled_back_at" IS NULL"#;

/// `resolve --applied`: a new row that says the migration is applied, with no steps run and
/// `logs` the empty string, exactly as Prisma writes it.
const INSERT_RESOLVED_APPLIED: &str = r#"
INSERT INTO "_prisma_migrations" ("id", "checksum", "migration_name", "started_at", "finished_at", "logs", "applied_steps_count")
VALUES (gen_random_uuid()::text, $1, $2, now(), now(), '', 0)"#;

/// One row of `_prisma_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub checksum: String,
    pub finished_at: Option<String>,
    pub migration_name: String,
    pub logs: Option<String>,
    pub rolled_back_at: Option<String>,
    pub started_at: String,
}

impl Record {
    pub(crate) fn is_finished(&self) -> bool {
        self.finished_at.is_some() && self.rolled_back_at.is_none()
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.finished_at.is_none() && self.rolled_back_at.is_none()
    }
}

/// Whether the table exists in the search_path. `migrate status` must not create it.
pub(crate) fn table_exists(client: &mut Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('\"_prisma_migrations\"') IS NOT NULL",
            &[],
        )
        .context("cannot look up the `_prisma_migrations` table")?;
    Ok(row.get(0))
}

pub(crate) fn create_table(client: &mut Client) -> Result<()> {
    client
        .batch_execute(CREATE_TABLE)
        .context("cannot create the `_prisma_migrations` table")
}

/// All rows, or none when the table does not exist yet.
pub(crate) fn load(client: &mut Client) -> Result<Vec<Record>> {
    if !table_exists(client)? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(SELECT_ALL, &[])
        .context("cannot read the `_prisma_migrations` table")?;
    Ok(rows
        .iter()
        .map(|row| Record {
            checksum: row.get(0),
            finished_at: row.get(1),
            migration_name: row.get(2),
            logs: row.get(3),
            rolled_back_at: row.get(4),
            started_at: row.get(5),
        })
        .collect())
}

/// Records the start of `name`; returns the row's id.
pub fn insert_started(client: &mut Client, name: &str, checksum: &str) -> Result<String> {
    Ok(client
        .query_one(INSERT_STARTED, &[&checksum, &name])
        .with_context(|| format!("cannot record the start of migration `{name}`"))?
        .get(0))
}

pub(crate) fn mark_finished(client: &mut Client, id: &str) -> Result<()> {
    client
        .execute(MARK_FINISHED, &[&id])
        .context("cannot record a finished migration in `_prisma_migrations`")?;
    Ok(())
}

pub fn mark_failed(client: &mut Client, id: &str, logs: &str) -> Result<()> {
    client
        .execute(MARK_FAILED, &[&id, &logs])
        .context("cannot record a failed migration in `_prisma_migrations`")?;
    Ok(())
}

/// Removes the row of an attempt whose script PostgreSQL rolled back: nothing of it was
/// applied, and no row is what both tools read as "not applied".
pub(crate) fn forget_attempt(client: &mut Client, id: &str) -> Result<()> {
    client
        .execute(FORGET_ATTEMPT, &[&id])
        .context("cannot remove a rolled-back migration attempt from `_prisma_migrations`")?;
    Ok(())
}

/// `resolve --rolled-back`: sets `rolled_back_at` on the failed rows of `name`.
pub(crate) fn mark_failed_rolled_back(client: &mut Client, name: &str) -> Result<u64> {
    client
        .execute(MARK_FAILED_ROLLED_BACK, &[&name])
        .with_context(|| format!("cannot mark migration `{name}` as rolled back"))
}

/// `rollback`: sets `rolled_back_at` on the applied rows of `name` (inside the rollback's
/// transaction).
pub(crate) fn mark_applied_rolled_back(
    client: &mut Transaction<'_>,
    name: &str,
) -> Result<u64, postgres::Error> {
    client.execute(MARK_APPLIED_ROLLED_BACK, &[&name])
}

pub(crate) fn insert_resolved_applied(
    client: &mut Client,
    name: &str,
    checksum: &str,
) -> Result<()> {
    client
        .execute(INSERT_RESOLVED_APPLIED, &[&checksum, &name])
        .with_context(|| format!("cannot record migration `{name}` as applied"))?;
    Ok(())
}

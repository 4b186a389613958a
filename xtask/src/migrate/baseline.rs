//! A database that has tables but no `_prisma_migrations` is not managed by Prisma Migrate, and
//! is never taken over: Prisma refuses it (P3005, "The database schema is not empty") and so do
//! we, creating nothing, so that a wrong `DATABASE_URL` is never migrated. The way in is
//! Prisma's baseline: `migrate resolve --applied NAME` for each migration the database already
//! has (it creates the bookkeeping table), then `migrate deploy` applies the rest.

use crate::db::Client;
use anyhow::{Context, Result};

use super::history;
use crate::migrations::Migration;
use crate::report::backticked;

/// The tables of the URL's schema that make it "not empty" for Prisma: ordinary and partitioned
/// tables, except the two PostGIS creates by itself (Prisma ignores those too). Catalog read.
const SCHEMA_TABLES_SQL: &str = r#"
    SELECT c.relname::text FROM pg_class c
    WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
      AND c.relkind IN ('r', 'p')
      AND lower(c.relname) NOT IN ('spatial_ref_sys', 'geometry_columns')
    ORDER BY 1"#;

/// Why `migrate status` calls the database not managed by Prisma Migrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotManaged {
    /// Tables, but no `_prisma_migrations`: someone else's schema, or one made by hand.
    HasTables(Vec<String>),
    /// Neither migrations nor `_prisma_migrations`: nothing to manage yet.
    NoMigrations,
}

impl NotManaged {
    pub(crate) fn summary(&self) -> String {
        match self {
            NotManaged::HasTables(tables) => format!(
                "The current database is not managed by Prisma Migrate: its schema has {} table(s) ({}) but no `_prisma_migrations`.",
                tables.len(),
                first_tables(tables)
            ),
            NotManaged::NoMigrations => "The current database is not managed by Prisma Migrate: there are no migrations and no `_prisma_migrations` table.".into(),
        }
    }

    pub(crate) fn advice(&self, migrations: &[Migration]) -> String {
        match self {
            NotManaged::HasTables(_) => baseline_advice(migrations),
            NotManaged::NoMigrations => "create the first migration with `cargo xtask migrate new NAME`, then run `cargo xtask migrate deploy`".into(),
        }
    }
}

fn first_tables(tables: &[String]) -> String {
    let shown: Vec<String> = tables.iter().take(3).cloned().collect();
    let more = tables.len().saturating_sub(shown.len());
    let mut text = backticked(&shown);
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

fn baseline_advice(migrations: &[Migration]) -> String {
    let first = migrations
        .first()
        .map(|m| m.name.as_str())
        .unwrap_or("NAME");
    format!(
        "if this is the right database, baseline it: record each migration it already has with `cargo xtask migrate resolve --applied NAME`, in order (the first is `{first}`), then `cargo xtask migrate deploy` applies the rest; otherwise point `DATABASE_URL` at the right database"
    )
}

/// The tables of the URL's schema, by name.
pub(crate) fn schema_tables(client: &mut Client) -> Result<Vec<String>> {
    Ok(client
        .query(SCHEMA_TABLES_SQL, &[])
        .context("cannot list the tables of the schema")?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// What `migrate status` says about a database without `_prisma_migrations`: not managed when
/// its schema has tables, or when there are no migrations at all (Prisma says so too).
pub(crate) fn not_managed(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Option<NotManaged>> {
    if history::table_exists(client)? {
        return Ok(None);
    }
    let tables = schema_tables(client)?;
    Ok(if !tables.is_empty() {
        Some(NotManaged::HasTables(tables))
    } else if migrations.is_empty() {
        Some(NotManaged::NoMigrations)
    } else {
        None
    })
}

/// Deploy's refusal (Prisma's P3005): tables but no `_prisma_migrations`. Runs before deploy
/// creates anything.
pub(crate) fn refuse_takeover(client: &mut Client, migrations: &[Migration]) -> Result<()> {
    if history::table_exists(client)? {
        return Ok(());
    }
    let tables = schema_tables(client)?;
    if tables.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the database schema is not empty ({} table(s): {}) and has no `_prisma_migrations`, so it is not managed by Prisma Migrate and nothing was deployed (Prisma: P3005); {}",
        tables.len(),
        first_tables(&tables),
        baseline_advice(migrations)
    )
}

//! The workspace tenancy release as the tools around the engine know it (`seed`, `demo`,
//! `bench`, `smoke`, `verify`): its migrations by their exact names, the four Data Hub tables,
//! the helpers the expand migration creates, and the SQL the bench's naive baseline runs. The
//! engine (`releases`, `backfill`, `check`, `runbook`) never reads this file: it works from the
//! declaration in `migrations/20251219170000_add_workspace_to_datahub_models/release.toml`.

use crate::db::Client;
use anyhow::{Context, Result};

use crate::db::quote_ident;

/// The release's name in its declaration.
pub const RELEASE: &str = "workspace-tenancy";

/// The declared tenancy release, read from the migrations folder.
pub fn release(migrations: &[crate::migrations::Migration]) -> Result<crate::releases::Release> {
    let declared = crate::releases::load(migrations)?;
    Ok(crate::releases::find(&declared, RELEASE)?.clone())
}

/// Data Hub before tenancy.
pub const INIT: &str = "20251201000000_init";
/// Expand: nullable `workspaceId`, foreign keys and checks `NOT VALID`, the rule's helpers.
pub const EXPAND: &str = "20251219170000_add_workspace_to_datahub_models";
/// Contract: the guard, VALIDATE, SET NOT NULL.
pub const CONTRACT: &str = "20251219171000_datahub_workspace_not_null";

/// The migration just before the contract: the last of the expand's `workspaceId` indexes.
pub fn before_contract(migrations: &[crate::migrations::Migration]) -> Option<&str> {
    let contract = migrations.iter().position(|m| m.name == CONTRACT)?;
    contract.checked_sub(1).map(|i| migrations[i].name.as_str())
}

/// After the contract, `Connection`'s key moves from (`userId`, `provider`) to (`workspaceId`,
/// `userId`, `provider`), so a user can connect a provider in each workspace: first the unique
/// index, built CONCURRENTLY in a migration of its own ...
pub const CONNECTION_KEY_INDEX: &str = "20260112090000_connection_workspace_user_provider_index";
/// ... then the index adopted as the key and the pre-tenancy key dropped (brief locks).
pub const CONNECTION_KEY: &str = "20260112090100_connection_workspace_user_provider_key";

/// The four tables that move from `userId` to `workspaceId`, in the runbook's order.
pub(crate) const DATAHUB_TABLES: [&str; 4] =
    ["Connection", "MetricDaily", "Insight", "ChatMessage"];

/// The backfill rule as a view: `userId` → home `workspaceId` (expand creates it).
pub(crate) const HOME_VIEW: &str = "datahub_home_workspace";
/// Creates a user's personal workspace once, returns its id (expand creates it).
pub(crate) const ENSURE_PERSONAL_FUNCTION: &str = "datahub_ensure_personal_workspace";

/// The tables as a `text[]` parameter, e.g. for `array_position($1::text[], …)` orderings.
pub(crate) fn tables_param() -> Vec<String> {
    DATAHUB_TABLES.iter().map(|t| t.to_string()).collect()
}

/// The state of a table's `workspaceId` column: the expand adds it, the contract sets NOT NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Missing,
    Nullable,
    NotNull,
}

/// The `workspaceId` column of each table, from the catalog (visible to any role that can read
/// the tables, owner or not). ACCESS SHARE on nothing: catalog reads only.
const COLUMNS_SQL: &str = r#"
    SELECT c.relname::text, NOT a.attnotnull
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'workspaceId' AND NOT a.attisdropped
    WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
      AND c.relname::text = ANY($1)"#;

/// Each Data Hub table with its `workspaceId` column state, in `DATAHUB_TABLES` order.
pub(crate) fn columns(client: &mut Client) -> Result<Vec<(String, Column)>> {
    let rows = client
        .query(COLUMNS_SQL, &[&tables_param()])
        .context("cannot look up the `workspaceId` columns")?;
    Ok(DATAHUB_TABLES
        .iter()
        .map(|table| {
            let column = match rows.iter().find(|r| r.get::<_, String>(0) == *table) {
                None => Column::Missing,
                Some(row) if row.get::<_, bool>(1) => Column::Nullable,
                Some(_) => Column::NotNull,
            };
            (table.to_string(), column)
        })
        .collect())
}

/// `SELECT (count NULLs of table 1), (… of table 2), …`: one round trip, ACCESS SHARE. With
/// the `workspaceId` indexes and fresh statistics each count is an index scan over the NULL
/// entries; before the indexes exist (the release's gate runs before them) each is a table scan.
pub fn null_counts_sql() -> String {
    format!("SELECT {}", null_counts(", "))
}

/// `(SELECT count(*) … WHERE "workspaceId" IS NULL)` for each Data Hub table, in table order,
/// joined by `separator`.
pub(crate) fn null_counts(separator: &str) -> String {
    DATAHUB_TABLES
        .iter()
        .map(|table| {
            format!(
                r#"(SELECT count(*) FROM {} WHERE "workspaceId" IS NULL)"#,
                quote_ident(table)
            )
        })
        .collect::<Vec<_>>()
        .join(separator)
}

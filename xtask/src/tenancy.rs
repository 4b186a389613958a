//! The workspace tenancy release, and only it: its migrations by their exact names, the four
//! Data Hub tables, the helpers the expand migration creates, and the release's own SQL, each
//! statement with the lock it takes. `migrate/` and `migrations.rs` are generic Prisma code;
//! everything that knows this release is here or in the commands built on it.

use anyhow::{Context, Result};
use postgres::Client;

use crate::db::quote_ident;

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
/// Prisma's names for the two keys.
pub(crate) const CONNECTION_NEW_KEY: &str = "Connection_workspaceId_userId_provider_key";
pub(crate) const CONNECTION_OLD_KEY: &str = "Connection_userId_provider_key";

/// Whether the new key is a constraint of `Connection`, and whether the old key's index still
/// exists (catalog reads), for recover's proof about `CONNECTION_KEY`.
pub(crate) const CONNECTION_KEYS_SQL: &str = r#"
    SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass('"Connection"')),
           to_regclass(quote_ident($2)) IS NOT NULL"#;

/// The four tables that move from `userId` to `workspaceId`, in the runbook's order.
pub(crate) const DATAHUB_TABLES: [&str; 4] =
    ["Connection", "MetricDaily", "Insight", "ChatMessage"];

/// The backfill rule as a view: `userId` → home `workspaceId` (expand creates it).
pub(crate) const HOME_VIEW: &str = "datahub_home_workspace";
/// Creates a user's personal workspace once, returns its id (expand creates it).
pub(crate) const ENSURE_PERSONAL_FUNCTION: &str = "datahub_ensure_personal_workspace";
/// The rule for one user, creating the personal workspace when needed (expand creates it).
pub(crate) const HOME_ID_FUNCTION: &str = "datahub_home_workspace_id";
/// The trigger function that fills `workspaceId` on rows the old app writes.
pub(crate) const FILL_TRIGGER_FUNCTION: &str = "datahub_fill_workspace_id";

/// `"<Table>_workspaceId_not_null"`: the `CHECK … NOT VALID` that announces the NOT NULL.
pub(crate) fn not_null_check(table: &str) -> String {
    format!("{table}_workspaceId_not_null")
}

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

impl Column {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Column::Missing => "missing",
            Column::Nullable => "nullable",
            Column::NotNull => "NOT NULL",
        }
    }
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

/// Whether the expand migration's view and functions exist (catalog reads).
pub(crate) const HELPERS_EXIST_SQL: &str = r#"
    SELECT to_regclass(quote_ident($1)) IS NOT NULL AND to_regproc(quote_ident($2)) IS NOT NULL"#;

/// How many of the expand migration's view and functions exist (0 to 3), for recover's proof.
pub(crate) const EXPAND_LEFTOVERS_SQL: &str = r#"
    SELECT (to_regclass(quote_ident($1)) IS NOT NULL)::int
         + (to_regprocedure(quote_ident($2) || '()') IS NOT NULL)::int
         + (to_regprocedure(quote_ident($3) || '(text)') IS NOT NULL)::int"#;

/// Users who own rows with a NULL `workspaceId` and have no membership at all: they get a
/// personal workspace. Each EXISTS is an index probe on the table's `userId` index.
const NEEDS_PERSONAL_SQL: &str = r#"
    SELECT u."id" FROM "User" u
    WHERE NOT EXISTS (SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u."id")
      AND (EXISTS (SELECT 1 FROM "Connection" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL)
        OR EXISTS (SELECT 1 FROM "MetricDaily" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL)
        OR EXISTS (SELECT 1 FROM "Insight" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL)
        OR EXISTS (SELECT 1 FROM "ChatMessage" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL))"#;

/// How many personal workspaces a backfill would create (read only).
pub(crate) fn count_personal_sql() -> String {
    format!(
        r#"SELECT count(*) FROM ({NEEDS_PERSONAL_SQL}) needy
           WHERE NOT EXISTS (SELECT 1 FROM "Workspace" w WHERE w."id" = 'personal_' || needy."id")"#
    )
}

/// Creates the personal workspaces and counts the new ones, one statement (row locks on the new
/// `Workspace` and `WorkspaceMember` rows only). The EXISTS sees the statement's snapshot, taken
/// before the function inserts anything; the function inserts with ON CONFLICT DO NOTHING, so a
/// killed and repeated run creates each only once.
pub(crate) fn create_personal_sql() -> String {
    format!(
        r#"SELECT count(*) FILTER (WHERE NOT existed) FROM (
               SELECT EXISTS (SELECT 1 FROM "Workspace" w WHERE w."id" = 'personal_' || needy."id") AS existed,
                      {}(needy."id")
               FROM ({NEEDS_PERSONAL_SQL}) needy
           ) created"#,
        quote_ident(ENSURE_PERSONAL_FUNCTION)
    )
}

/// The rule, materialised once per connection and run: `userId` → home `workspaceId`, with a
/// primary key so each batch joins by hash or index. A temp table: no lock on shared tables
/// beyond reading the memberships.
pub(crate) fn load_home_mapping_sql() -> String {
    format!(
        r#"DROP TABLE IF EXISTS pg_temp.datahub_home;
           CREATE TEMP TABLE datahub_home AS SELECT "userId", "workspaceId" FROM {};
           ALTER TABLE pg_temp.datahub_home ADD PRIMARY KEY ("userId");
           ANALYZE pg_temp.datahub_home;"#,
        quote_ident(HOME_VIEW)
    )
}

pub(crate) const DROP_HOME_MAPPING_SQL: &str = "DROP TABLE IF EXISTS pg_temp.datahub_home";

/// The table's size in pages and its rows per page, to size batches (catalog reads).
pub(crate) const TABLE_PAGES_SQL: &str = r#"
    SELECT (pg_relation_size(c.oid) / current_setting('block_size')::bigint),
           (CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples::float8 / c.relpages ELSE 60 END)::float8
    FROM pg_class c WHERE c.oid = $1::text::regclass"#;

/// One backfill batch: the NULL rows of pages `$1` to `$2` (exclusive), through a TID range scan
/// so the heap is read in order. ROW EXCLUSIVE on the table (as any app UPDATE) and row locks
/// on the rows it fills, held until the batch commits: a batch is one short transaction.
pub(crate) fn backfill_batch_sql(table: &str) -> String {
    format!(
        r#"UPDATE {} AS t SET "workspaceId" = h."workspaceId"
           FROM pg_temp.datahub_home h
           WHERE t.ctid >= format('(%s,0)', $1::bigint)::tid AND t.ctid < format('(%s,0)', $2::bigint)::tid
             AND t."workspaceId" IS NULL AND h."userId" = t."userId""#,
        quote_ident(table)
    )
}

/// The same batch for a page range where another transaction holds a row (the plain batch hit
/// its `lock_timeout`): the rows are locked first with SKIP LOCKED, so the held ones are left
/// for later instead of waited for. Slower per row (each row is locked, then updated), so it is
/// only the fallback.
pub(crate) fn backfill_batch_skip_held_sql(table: &str) -> String {
    let table = quote_ident(table);
    format!(
        r#"UPDATE {table} AS t SET "workspaceId" = h."workspaceId"
           FROM (SELECT ctid AS row_id FROM {table}
                 WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
                   AND "workspaceId" IS NULL
                 FOR UPDATE SKIP LOCKED) free, pg_temp.datahub_home h
           WHERE t.ctid = free.row_id AND h."userId" = t."userId""#
    )
}

/// The NULL rows left in pages `$1` to `$2` (exclusive): rows another transaction still holds.
/// A TID range scan of those pages, ACCESS SHARE.
pub(crate) fn nulls_in_pages_sql(table: &str) -> String {
    format!(
        r#"SELECT count(*) FROM {} WHERE ctid >= format('(%s,0)', $1::bigint)::tid
             AND ctid < format('(%s,0)', $2::bigint)::tid AND "workspaceId" IS NULL"#,
        quote_ident(table)
    )
}

/// Rows the mapping did not cover (a user who joined a workspace mid-run, a row inserted before
/// the trigger existed), filled by the per-row rule function, at most `$1` rows at a time. Rows
/// another transaction holds are skipped (SKIP LOCKED), not waited for.
pub(crate) fn sweep_sql(table: &str) -> String {
    let table = quote_ident(table);
    format!(
        r#"UPDATE {table} SET "workspaceId" = {}("userId")
           WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE "workspaceId" IS NULL LIMIT $1 FOR UPDATE SKIP LOCKED))"#,
        quote_ident(HOME_ID_FUNCTION)
    )
}

/// Fresh statistics after a backfill, so the next `check` uses the index instead of a scan.
/// SHARE UPDATE EXCLUSIVE: reads and writes go on.
pub(crate) fn analyze_sql(table: &str) -> String {
    format!("ANALYZE {}", quote_ident(table))
}

/// The emergency rollback's DROP NOT NULL: ACCESS EXCLUSIVE, catalog only (no scan), so it is
/// held for milliseconds; the rollback runs under `lock_timeout` with retries.
pub(crate) fn drop_not_null_sql(table: &str) -> String {
    format!(
        r#"ALTER TABLE {} ALTER COLUMN "workspaceId" DROP NOT NULL"#,
        quote_ident(table)
    )
}

/// Re-adds the `CHECK … NOT VALID` the contract dropped, so the state is exactly post-expand
/// and a re-deploy of the contract stays online-safe. ACCESS EXCLUSIVE, no scan (NOT VALID).
pub(crate) fn add_not_null_check_sql(table: &str) -> String {
    format!(
        r#"ALTER TABLE {} ADD CONSTRAINT {} CHECK ("workspaceId" IS NOT NULL) NOT VALID"#,
        quote_ident(table),
        quote_ident(&not_null_check(table))
    )
}

/// How many of the four `"<Table>_workspaceId_not_null"` checks exist, validated or not, on
/// their tables in the current schema: catalog read.
const NOT_NULL_CHECKS_SQL: &str = r#"
    SELECT count(*) FROM pg_constraint k
    JOIN pg_class c ON c.oid = k.conrelid
    WHERE k.contype = 'c' AND k.conname = ANY($1)
      AND c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
      AND k.conname = c.relname || '_workspaceId_not_null'"#;

/// Whether all four NOT NULL checks exist: the expand adds them `NOT VALID`, so every row
/// written since refuses a NULL `workspaceId` (the contract drops them once the column is NOT
/// NULL; the emergency rollback adds them back).
pub(crate) fn not_null_checks_present(client: &mut Client) -> Result<bool> {
    let names: Vec<String> = DATAHUB_TABLES.iter().map(|t| not_null_check(t)).collect();
    let count: i64 = client
        .query_one(NOT_NULL_CHECKS_SQL, &[&names])
        .context("cannot look up the `workspaceId` NOT NULL checks")?
        .get(0);
    Ok(count == DATAHUB_TABLES.len() as i64)
}

/// Whether the check constraint `$1` exists on table `$2` (quoted name): catalog read.
pub(crate) const CHECK_EXISTS_SQL: &str =
    "SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)";

/// All rows of the four tables (for a plan before the columns exist): ACCESS SHARE, four scans.
pub(crate) fn row_count_sql() -> String {
    let counts = DATAHUB_TABLES
        .iter()
        .map(|table| format!("(SELECT count(*) FROM {})", quote_ident(table)))
        .collect::<Vec<_>>()
        .join(" + ");
    format!("SELECT {counts}")
}

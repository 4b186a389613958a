//! The four Data Hub tables that move from `userId` to `workspaceId` ownership, in the order
//! the runbook lists them. Table names here are our constants, safe to splice as identifiers.

use anyhow::{Context, Result};
use postgres::Client;

pub const DATAHUB_TABLES: [&str; 4] = ["Connection", "MetricDaily", "Insight", "ChatMessage"];

/// `ARRAY['Connection', ...]` ordering used by every verification query (the seeds' order).
pub const TABLE_ORDER_SQL: &str = "array_position(ARRAY['Connection','MetricDaily','Insight','ChatMessage']::text[], table_name::text)";

/// The state of a table's `workspaceId` column: the expand adds it, the contract sets NOT NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Missing,
    Nullable,
    NotNull,
}

/// Each Data Hub table with its `workspaceId` column state, in `DATAHUB_TABLES` order.
pub fn columns(client: &mut Client) -> Result<Vec<(String, Column)>> {
    let tables: Vec<String> = DATAHUB_TABLES.iter().map(|t| t.to_string()).collect();
    let rows = client
        .query(
            "SELECT table_name::text, is_nullable::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND column_name = 'workspaceId'
               AND table_name::text = ANY($1)",
            &[&tables],
        )
        .context("cannot look up the `workspaceId` columns")?;
    Ok(tables
        .into_iter()
        .map(|table| {
            let column = match rows.iter().find(|r| r.get::<_, String>(0) == table) {
                None => Column::Missing,
                Some(row) if row.get::<_, String>(1) == "YES" => Column::Nullable,
                Some(_) => Column::NotNull,
            };
            (table, column)
        })
        .collect())
}

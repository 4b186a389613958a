//! What the database shows, read before every runbook step: the migration states, and for each
//! Data Hub table whether `workspaceId` exists and whether it is nullable. The runbook decides
//! from this, never from what a previous run believed.

use anyhow::{Context, Result};
use postgres::Client;

use crate::migrate::{self, StatusReport};
use crate::migrations::Migration;
use crate::tables::DATAHUB_TABLES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Missing,
    Nullable,
    NotNull,
}

#[derive(Debug, Clone)]
pub struct Inspection {
    pub status: StatusReport,
    /// One per Data Hub table, in `DATAHUB_TABLES` order.
    pub columns: Vec<(String, Column)>,
}

pub fn inspect(client: &mut Client, migrations: &[Migration]) -> Result<Inspection> {
    let status = migrate::status(client, migrations)?;
    let columns = columns(client)?;
    Ok(Inspection { status, columns })
}

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

impl Inspection {
    pub fn all_columns(&self, column: Column) -> bool {
        self.columns.iter().all(|(_, c)| *c == column)
    }

    pub fn any_column(&self, column: Column) -> bool {
        self.columns.iter().any(|(_, c)| *c == column)
    }

    /// `Connection: nullable, MetricDaily: missing, …`
    pub fn describe_columns(&self) -> String {
        self.columns
            .iter()
            .map(|(table, column)| {
                let state = match column {
                    Column::Missing => "missing",
                    Column::Nullable => "nullable",
                    Column::NotNull => "NOT NULL",
                };
                format!("{table}: {state}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

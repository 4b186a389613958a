//! What the database shows, read before every runbook step: the migration states, and for each
//! Data Hub table whether `workspaceId` exists and whether it is nullable. The runbook decides
//! from this, never from what a previous run believed.

use anyhow::Result;
use postgres::Client;

use crate::migrate::{self, StatusReport};
use crate::migrations::Migration;
use crate::tenancy::{self, Column};

#[derive(Debug, Clone)]
pub(crate) struct Inspection {
    pub status: StatusReport,
    /// One per Data Hub table, in `DATAHUB_TABLES` order.
    pub columns: Vec<(String, Column)>,
}

pub(crate) fn inspect(client: &mut Client, migrations: &[Migration]) -> Result<Inspection> {
    let status = migrate::status(client, migrations)?;
    let columns = tenancy::columns(client)?;
    Ok(Inspection { status, columns })
}

impl Inspection {
    pub(crate) fn all_columns(&self, column: Column) -> bool {
        self.columns.iter().all(|(_, c)| *c == column)
    }

    pub(crate) fn any_column(&self, column: Column) -> bool {
        self.columns.iter().any(|(_, c)| *c == column)
    }

    /// `Connection: nullable, MetricDaily: missing, …`
    pub(crate) fn describe_columns(&self) -> String {
        self.columns
            .iter()
            .map(|(table, column)| format!("{table}: {}", column.label()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

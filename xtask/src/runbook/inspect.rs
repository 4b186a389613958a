//! What the database shows, read before every runbook step: the migration states, and for each
//! declared release the state of every column it fills. The runbook decides from this, never
//! from what a previous run believed.

use crate::db::Client;
use anyhow::Result;

use crate::migrate::{self, StatusReport};
use crate::migrations::Migration;
use crate::releases::{self, ColumnState, Release};

#[derive(Debug, Clone)]
pub(crate) struct Inspection {
    pub status: StatusReport,
    /// Each declared release with its columns' states, in the folder's order.
    pub releases: Vec<(Release, ColumnState)>,
}

pub(crate) fn inspect(client: &mut Client, migrations: &[Migration]) -> Result<Inspection> {
    let status = migrate::status(client, migrations)?;
    let mut found = Vec::new();
    for release in releases::load(migrations)? {
        let columns = release.columns(client)?;
        found.push((release, columns));
    }
    Ok(Inspection {
        status,
        releases: found,
    })
}

impl Inspection {
    /// The release (with its columns) whose expand or contract is `name`.
    pub(crate) fn release_of(&self, name: &str) -> Option<&(Release, ColumnState)> {
        self.releases.iter().find(|(r, _)| {
            !r.fills.is_empty() && (r.expand == name || r.contract.as_deref() == Some(name))
        })
    }

    /// `workspace-tenancy: Connection.workspaceId: nullable, …` for each release that fills.
    pub(crate) fn describe_columns(&self) -> String {
        self.releases
            .iter()
            .filter(|(r, _)| !r.fills.is_empty())
            .map(|(r, c)| format!("{}: {}", r.name, c.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

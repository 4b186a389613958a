//! The columns a release fills, as the catalog shows them now: missing (expand not applied),
//! nullable (expanded), NOT NULL (contracted); their NULL counts; and whether the expand's NOT
//! VALID checks are in place. Catalog reads, except the counts (ACCESS SHARE).

use crate::db::Client;
use anyhow::{Context, Result};

use super::{Fill, Release};
use crate::db::quote_ident;

/// The state of one filled column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Missing,
    Nullable,
    NotNull,
}

impl Column {
    pub fn label(self) -> &'static str {
        match self {
            Column::Missing => "missing",
            Column::Nullable => "nullable",
            Column::NotNull => "NOT NULL",
        }
    }
}

/// Each fill of a release with its column's state, in the release's order.
#[derive(Debug, Clone)]
pub struct ColumnState {
    pub fills: Vec<(Fill, Column)>,
}

impl ColumnState {
    pub fn all(&self, column: Column) -> bool {
        self.fills.iter().all(|(_, c)| *c == column)
    }

    pub fn any(&self, column: Column) -> bool {
        self.fills.iter().any(|(_, c)| *c == column)
    }

    pub fn of(&self, state: Column) -> Vec<&Fill> {
        self.fills
            .iter()
            .filter(|(_, c)| *c == state)
            .map(|(f, _)| f)
            .collect()
    }

    /// `Connection.workspaceId: nullable, MetricDaily.workspaceId: missing, …`
    pub fn describe(&self) -> String {
        self.fills
            .iter()
            .map(|(f, c)| format!("{}.{}: {}", f.table, f.column, c.label()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Each column's nullability in the current schema (catalog, visible to any role).
const COLUMNS_SQL: &str = r#"
    SELECT c.relname::text, a.attname::text, NOT a.attnotnull
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())
      AND c.relname::text = ANY($1) AND a.attname::text = ANY($2)"#;

impl Release {
    /// The state of each column the release fills.
    pub fn columns(&self, client: &mut Client) -> Result<ColumnState> {
        let tables: Vec<String> = self.fills.iter().map(|f| f.table.clone()).collect();
        let columns: Vec<String> = self.fills.iter().map(|f| f.column.clone()).collect();
        let rows = client
            .query(COLUMNS_SQL, &[&tables, &columns])
            .with_context(|| {
                format!("cannot look up the columns of the `{}` release", self.name)
            })?;
        Ok(ColumnState {
            fills: self
                .fills
                .iter()
                .map(|fill| {
                    let row = rows.iter().find(|r| {
                        r.get::<_, String>(0) == fill.table && r.get::<_, String>(1) == fill.column
                    });
                    let state = match row {
                        None => Column::Missing,
                        Some(row) if row.get::<_, bool>(2) => Column::Nullable,
                        Some(_) => Column::NotNull,
                    };
                    (fill.clone(), state)
                })
                .collect(),
        })
    }

    /// The NULL count of each nullable column (0 for NOT NULL ones, which cannot hold one; the
    /// missing ones are left out), in one round trip. With an index on the column and fresh
    /// statistics each count is an index scan over the NULL entries, a table scan otherwise.
    pub fn null_counts(
        &self,
        client: &mut Client,
        state: &ColumnState,
    ) -> Result<Vec<(Fill, i64)>> {
        let nullable = state.of(Column::Nullable);
        let mut counts: Vec<(Fill, i64)> = Vec::new();
        if !nullable.is_empty() {
            let sql = format!(
                "SELECT {}",
                nullable
                    .iter()
                    .map(|f| format!(
                        "(SELECT count(*) FROM {} WHERE {} IS NULL)",
                        quote_ident(&f.table),
                        quote_ident(&f.column)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let what = format!("the NULL count of the `{}` release", self.name);
            let row = client.long(&what, |client| client.query_one(sql.as_str(), &[]));
            let row = row.with_context(|| {
                format!("cannot count the NULLs of the `{}` release", self.name)
            })?;
            for (i, fill) in nullable.iter().enumerate() {
                counts.push(((*fill).clone(), row.get(i)));
            }
        }
        for fill in state.of(Column::NotNull) {
            counts.push((fill.clone(), 0));
        }
        counts.sort_by_key(|(f, _)| self.fills.iter().position(|g| g == f));
        Ok(counts)
    }

    /// Whether every fill has its expand's NOT VALID check in place (or is NOT NULL already),
    /// so no new NULL can be written: a backfill that found none left is then a proof.
    pub fn new_nulls_refused(&self, client: &mut Client, state: &ColumnState) -> Result<bool> {
        for (fill, column) in &state.fills {
            if *column == Column::NotNull {
                continue;
            }
            let Some(check) = &fill.not_null_check else {
                return Ok(false);
            };
            let present = client
                .query_opt(
                    super::rule::CHECK_EXISTS_SQL,
                    &[check, &quote_ident(&fill.table)],
                )
                .with_context(|| format!("cannot look up the check `{check}`"))?
                .is_some();
            if !present {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the migrations the release needs applied are applied, by name.
    pub fn phase(&self, status: &crate::migrate::StatusReport, state: &ColumnState) -> Phase {
        use crate::migrate::state::State;
        let applied = |name: &str| status.state_of(name) == Some(&State::Applied);
        if !applied(&self.expand) {
            return Phase::Pending;
        }
        match &self.contract {
            Some(contract) if applied(contract) && state.all(Column::NotNull) => Phase::Contracted,
            Some(_) => Phase::Expanded,
            None if self.needs_new_app.iter().all(|name| applied(name)) => Phase::Contracted,
            None => Phase::Expanded,
        }
    }
}

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its expand is not applied.
    Pending,
    /// Expanded, its contract (or its last migration) not yet applied.
    Expanded,
    /// Everything applied.
    Contracted,
}

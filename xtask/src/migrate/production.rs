//! Which tables count as existing when a migration is judged, and how big they are. With a
//! database URL, production's own catalog decides: a table it does not have yet is new (and
//! empty), one it has carries its size (rows as PostgreSQL estimates them, bytes with indexes
//! and TOAST) into each finding. With `--since NAME`, a table created by a migration after
//! `NAME` is new. Otherwise every table that existed before the migration counts.

use std::collections::{BTreeMap, BTreeSet};

use crate::db::Client;
use anyhow::{Context, Result};

/// Production's tables in the URL's schema, with their estimated rows and total bytes. Reads
/// `pg_class` and `pg_stat_user_tables` only (no table is scanned, no lock is taken beyond the
/// catalogs' ACCESS SHARE). A table never analyzed has `reltuples` -1: the live-tuple counter
/// stands in.
const TABLE_SIZES_SQL: &str = "
    SELECT c.relname::text,
           greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0), 0),
           pg_total_relation_size(c.oid)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
    ORDER BY c.relname";

/// A production table's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    pub rows: i64,
    pub bytes: i64,
}

impl TableSize {
    /// `5.0 M rows, 1.2 GB`.
    pub fn describe(&self) -> String {
        format!(
            "{} rows, {}",
            human(self.rows as f64, false),
            human(self.bytes as f64, true)
        )
    }
}

fn human(value: f64, bytes: bool) -> String {
    let (units, step): (&[&str], f64) = if bytes {
        (&["B", "kB", "MB", "GB", "TB"], 1024.0)
    } else {
        (&["", "k", "M", "G"], 1000.0)
    };
    let mut value = value;
    let mut unit = 0;
    while value >= step && unit + 1 < units.len() {
        value /= step;
        unit += 1;
    }
    match (unit, bytes) {
        (0, true) => format!("{value:.0} B"),
        (0, false) => format!("{value:.0}"),
        _ => format!("{value:.1} {}", units[unit]),
    }
}

/// What counts as an existing table.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// The shadow's tables (by oid) when the migrations after `--since` begin.
    pub since: Option<BTreeSet<u32>>,
    /// Production's tables by name, with their sizes.
    pub production: Option<BTreeMap<String, TableSize>>,
}

impl Baseline {
    /// Whether a table that exists before a migration counts as existing (and may hold
    /// production's rows), or as new and empty.
    pub fn is_old(&self, oid: u32, _schema: &str, name: &str) -> bool {
        self.since
            .as_ref()
            .is_none_or(|tables| tables.contains(&oid))
            && self
                .production
                .as_ref()
                .is_none_or(|tables| tables.contains_key(name))
    }

    pub fn size(&self, _schema: &str, name: &str) -> Option<TableSize> {
        self.production.as_ref()?.get(name).copied()
    }
}

/// Production's tables and sizes.
pub fn read(client: &mut Client) -> Result<BTreeMap<String, TableSize>> {
    Ok(client
        .query(TABLE_SIZES_SQL, &[])
        .context("cannot read the database's tables and sizes from `pg_class`")?
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                TableSize {
                    rows: row.get(1),
                    bytes: row.get(2),
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        let size = TableSize {
            rows: 5_000_000,
            bytes: 1_288_490_189,
        };
        assert_eq!(size.describe(), "5.0 M rows, 1.2 GB");
        assert_eq!(
            TableSize {
                rows: 20,
                bytes: 8192
            }
            .describe(),
            "20 rows, 8.0 kB"
        );
    }

    #[test]
    fn a_table_production_lacks_is_new() {
        let baseline = Baseline {
            since: None,
            production: Some(BTreeMap::from([(
                "Old".to_string(),
                TableSize { rows: 1, bytes: 1 },
            )])),
        };
        assert!(baseline.is_old(1, "public", "Old"));
        assert!(!baseline.is_old(2, "public", "New"));
        let since = Baseline {
            since: Some(BTreeSet::from([1])),
            production: None,
        };
        assert!(since.is_old(1, "public", "Old"));
        assert!(!since.is_old(2, "public", "Old"));
    }
}
